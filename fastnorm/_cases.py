"""Benchmark and test data written once: the shapes fastnorm is measured on, how each op is called
on them, the timing helper and the accuracy tolerances. Used by ``python -m fastnorm``,
``benchmarks/`` (conftest.py, thread_scaling.py, bench_*.py) and ``tests/``. Private: no API
promise; numpy only (torch is the callers' business).
"""
import dataclasses
import statistics
import time

import numpy as np

# max |fastnorm - float64 reference| accepted for outputs of order 1 (the accuracy promise)
TOL = {np.dtype(np.float32): 5e-5, np.dtype(np.float64): 1e-9}

# benchmarks/: max |got - want| / max(1, max |want|) against the float64 reference, for
# fastnorm and, looser, for the baselines it is compared with (they must compute the same thing)
BENCH_TOL = {("fastnorm", "float32"): 1e-5, ("fastnorm", "float64"): 1e-12,
             ("peer", "float32"): 1e-4, ("peer", "float64"): 1e-10}

# case name -> (fastnorm.functional op, mode); the names of the project's shared benchmark
OPS = {"bn_train": ("batch_norm", "train"), "bn_eval": ("batch_norm", "eval"),
       "ln": ("layer_norm", ""), "gn32": ("group_norm", ""), "in": ("instance_norm", ""),
       "rms": ("rms_norm", "")}

# The anchor shapes by which performance is judged (float32, contiguous): the CASES of the shared
# benchmark beside the repository (benchmarks/bench_ratios.py checks they agree when it is there)
ANCHORS = [
    ("bn_train", (32, 64, 56, 56)),
    ("bn_train", (8, 256, 28, 28)),
    ("bn_train", (256, 1024)),
    ("bn_eval", (1, 64, 112, 112)),
    ("bn_eval", (1, 32, 8, 8)),
    ("ln", (32, 128, 768)),
    ("ln", (4096, 4096)),
    ("ln", (1, 768)),
    ("gn32", (8, 256, 64, 64)),
    ("gn32", (1, 512, 64, 64)),
    ("in", (8, 64, 128, 128)),
    ("in", (1, 3, 512, 512)),
]
# RMSNorm has no anchor of its own: the layer-norm anchor shapes (rows of a transformer)
RMS = [("rms", shape) for name, shape in ANCHORS if name == "ln"]
# The shared benchmark's full case list (its CASES, in order): the anchors, then RMSNorm and
# channels-last cases (an "_nhwc" name: NHWC memory seen as NCHW)
SHARED = ANCHORS + [("rms", (32, 128, 768)), ("rms", (1, 4096)), ("gn32_nhwc", (8, 256, 64, 64)),
                    ("bn_eval_nhwc", (8, 128, 56, 56))]
# 1 GiB-class tensors (thread_scaling.py --large)
LARGE = [("bn_train", (64, 64, 256, 256)), ("bn_eval", (64, 64, 256, 256)),
         ("ln", (65536, 4096)), ("gn32", (16, 256, 256, 256)), ("in", (64, 64, 256, 256))]

# The shape families real models use (issue 10), float32 unless a dtype is given: (name, shape,
# layout) with name a key of OPS (plus "_nhwc" for channels-last memory). Speed is judged on
# these as well as on the anchors; benchmarks/families.py times them against torch and ONNX
# Runtime, allocating call against allocating call.
_RESNET50 = [(64, 112), (64, 56), (256, 56), (128, 28), (512, 28), (256, 14), (1024, 14),
             (512, 7), (2048, 7)]
FAMILIES = {
    # CNN inference: eval BatchNorm at every ResNet-50 stage, batch 1 and 8, both layouts
    "cnn_eval": [("bn_eval", (n, c, s, s), lay) for n in (1, 8) for c, s in _RESNET50
                 for lay in ("contiguous", "channels_last")],
    # CNN training: BatchNorm at batch 16-64, both layouts
    "cnn_train": [("bn_train", shape, lay)
                  for shape in ((16, 64, 112, 112), (32, 64, 56, 56), (32, 256, 56, 56),
                                (64, 128, 28, 28), (32, 512, 28, 28), (64, 1024, 14, 14),
                                (64, 2048, 7, 7))
                  for lay in ("contiguous", "channels_last")],
    # transformers: decode (1-16 rows of 768-8192) and prefill (up to 64 MB)
    "decode": [(op, (n, d), "contiguous") for op in ("ln", "rms") for n, d in
               ((1, 768), (1, 4096), (4, 1024), (8, 2048), (16, 4096), (1, 8192), (16, 8192))],
    "prefill": [(op, shape, "contiguous") for op in ("ln", "rms") for shape in
                ((512, 768), (4, 512, 1024), (2048, 2048), (2048, 4096), (1024, 8192),
                 (4096, 4096))],
    # diffusion: GroupNorm(32), C 128-1280, spatial 8-256, both layouts
    "diffusion": [("gn32", shape, lay)
                  for shape in ((1, 128, 256, 256), (2, 128, 128, 128), (2, 320, 64, 64),
                                (2, 640, 32, 32), (2, 1280, 16, 16), (2, 1280, 8, 8),
                                (1, 512, 64, 64))
                  for lay in ("contiguous", "channels_last")],
    # style transfer: InstanceNorm
    "style": [("in", shape, "contiguous")
              for shape in ((1, 32, 256, 256), (1, 64, 128, 128), (1, 128, 64, 64),
                            (4, 64, 128, 128), (1, 3, 512, 512))],
    # vision transformers and ConvNeXt: LayerNorm over 32-384 channels of every position
    # (Swin/ConvNeXt stages at 56x56-7x7, SegFormer/PVT at 128x128-32x32), many short rows
    "vision_ln": [("ln", shape, "contiguous")
                  for shape in ((8, 3136, 96), (1, 3136, 96), (8, 784, 192), (8, 196, 384),
                                (1, 16384, 32), (2, 4096, 64), (8, 49, 768))],
}
# Further real-model shapes outside the families (`benchmarks/families.py --extra`), each a
# call a user would type: MobileNet/EfficientNet BatchNorm (C 16-1280), BatchNorm1d and 3-D
# inputs, CIFAR-size training, ViT/BERT/CLIP/GPT-2/LLaMA LayerNorm and RMSNorm rows, SD-VAE and
# UNet GroupNorm, InstanceNorm planes; both layouts where the op has them.
EXTRA = [
    ("bn_eval", (1, 96, 56, 56), "contiguous"), ("bn_eval", (4, 24, 112, 112), "contiguous"),
    ("bn_eval", (4, 24, 112, 112), "channels_last"), ("bn_eval", (16, 32, 150, 150), "contiguous"),
    ("bn_eval", (1, 1280, 7, 7), "contiguous"), ("bn_eval", (1, 1280, 7, 7), "channels_last"),
    ("bn_eval", (2, 64, 16, 56, 56), "contiguous"), ("bn_eval", (32, 512), "contiguous"),
    ("bn_eval", (32, 128, 100), "contiguous"), ("bn_eval", (1, 144, 28, 28), "channels_last"),
    ("bn_train", (128, 64, 32, 32), "contiguous"), ("bn_train", (128, 64, 32, 32), "channels_last"),
    ("bn_train", (256, 512), "contiguous"), ("bn_train", (8, 32, 224, 224), "contiguous"),
    ("bn_train", (16, 128, 64), "contiguous"),
    ("bn_train", (2, 2048, 7, 7), "contiguous"), ("bn_train", (2, 2048, 7, 7), "channels_last"),
    ("in", (1, 512, 16, 16), "channels_last"),
    ("ln", (1, 197, 768), "contiguous"), ("ln", (8, 197, 384), "contiguous"),
    ("ln", (8, 128, 768), "contiguous"), ("ln", (32, 50, 512), "contiguous"),
    ("ln", (1, 1024, 1600), "contiguous"), ("ln", (1, 5120), "contiguous"),
    ("ln", (3, 77, 768), "contiguous"), ("ln", (64, 100), "contiguous"),
    ("ln", (2, 64, 64, 320), "contiguous"), ("ln", (1, 4, 14336), "contiguous"),
    ("rms", (1, 5120), "contiguous"), ("rms", (4, 3072), "contiguous"),
    ("rms", (512, 4096), "contiguous"), ("rms", (1, 14336), "contiguous"),
    ("rms", (7, 4096), "contiguous"), ("rms", (300, 5120), "contiguous"),
    ("gn32", (1, 512, 128, 128), "contiguous"), ("gn32", (1, 512, 128, 128), "channels_last"),
    ("gn32", (4, 320, 96, 96), "contiguous"), ("gn32", (4, 320, 96, 96), "channels_last"),
    ("gn32", (1, 960, 32, 32), "contiguous"), ("gn32", (1, 960, 32, 32), "channels_last"),
    ("gn32", (2, 1920, 16, 16), "channels_last"), ("gn32", (1, 64, 64, 64), "channels_last"),
    ("gn32", (2, 128, 32, 32), "channels_last"),
    ("in", (1, 3, 256, 256), "contiguous"), ("in", (16, 64, 64, 64), "contiguous"),
    ("in", (1, 256, 32, 32), "contiguous"), ("in", (1, 128, 128, 128), "contiguous"),
]
# float64 versions: a few of each family
FAMILIES_F64 = [("bn_eval", (8, 256, 56, 56), "contiguous"), ("bn_eval", (1, 512, 28, 28),
                 "channels_last"), ("bn_train", (32, 64, 56, 56), "contiguous"),
                ("ln", (1, 4096), "contiguous"), ("ln", (2048, 2048), "contiguous"),
                ("rms", (16, 4096), "contiguous"), ("gn32", (2, 320, 64, 64), "contiguous"),
                ("gn32", (2, 320, 64, 64), "channels_last"), ("in", (1, 64, 128, 128),
                                                              "contiguous")]


def random_cases(n, seed=0, itemsize=4):
    """``n`` (name, shape, layout) cases drawn at random from the ranges real models use, as
    ``benchmarks/families.py --random`` times them: shapes drawn without regard to the lists
    above (odd channel counts and spatial sizes, transformer widths from 256 to 16384, batch
    1-64), each under 128 MB at ``itemsize`` bytes an element. The same seed gives the same
    cases."""
    rng = np.random.default_rng(seed)
    pick = lambda v: v[int(rng.integers(len(v)))]  # noqa: E731
    chans = [16, 24, 32, 40, 48, 64, 72, 80, 96, 112, 120, 144, 160, 192, 240, 256, 320, 384,
             480, 512, 576, 640, 672, 768, 960, 1024, 1152, 1280, 1536, 2048]
    widths = [256, 320, 384, 512, 640, 768, 960, 1024, 1280, 1536, 1600, 2048, 2560, 3072,
              3200, 4096, 5120, 6144, 8192, 11008, 14336, 16384]
    cases = []
    while len(cases) < n:
        name = pick(["bn_eval", "bn_train", "ln", "rms", "gn32", "in"])
        layout = "contiguous"
        if name in ("ln", "rms"):
            rows, d = pick([1, 1, 2, 4, 7, 16, 32, 77, 128, 197, 256, 512, 1024, 2048]), \
                pick(widths)
            shape = (rows, d) if rng.random() < 0.5 else (2, max(1, rows // 2), d)
        elif name == "in":
            s = pick([16, 32, 56, 64, 100, 128, 256, 512])
            shape = (pick([1, 2, 4, 8]), pick([3, 16, 32, 64, 128, 256]), s, s)
        else:
            layout = pick(["contiguous", "channels_last"])
            if name == "gn32":
                s = pick([8, 12, 16, 24, 32, 48, 64, 96, 128, 256])
                shape = (pick([1, 2, 4]), 32 * int(rng.integers(2, 61)), s, s)
            else:
                s = pick([7, 10, 14, 17, 19, 28, 35, 56, 64, 75, 112, 150])
                nb = pick([1, 2, 4, 8]) if name == "bn_eval" else pick([8, 16, 32, 64])
                shape = (nb, pick(chans), s, s)
        if itemsize * int(np.prod(shape)) <= 128 * 2**20:
            cases.append((name, shape, layout))
    return cases



def make_input(shape, dtype="float32", layout="contiguous", seed=0):
    """x = 3 * N(0, 1) + 1 of ``shape`` in ``dtype``; ``layout="channels_last"``: NHWC memory
    seen as an (N, C, *spatial) array."""
    if layout not in ("contiguous", "channels_last"):
        raise ValueError(f"unknown layout {layout!r}")
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    if layout == "channels_last":
        shape = (shape[0],) + shape[2:] + (shape[1],)
    x = rng.standard_normal(shape, dtype=np.dtype(dtype))
    x *= 3
    x += 1
    return np.moveaxis(x, -1, 1) if layout == "channels_last" else x


Params = dataclasses.make_dataclass("Params", ["weight", "bias", "running_mean", "running_var"])


def params(n, dtype):
    """Per-channel (or per-feature) arrays of length n in ``dtype``: weight, bias,
    running_mean ~ N(0, 1) and running_var ~ |N(0, 1)| + 0.5 (the same for every call)."""
    rng = np.random.default_rng(1000 + n)
    dt = np.dtype(dtype)
    w, b, rm = (rng.standard_normal(n).astype(dt) for _ in range(3))
    rv = (np.abs(rng.standard_normal(n)) + 0.5).astype(dt)
    return Params(w, b, rm, rv)


def op_kwargs(op, mode, x):
    """The keyword arguments after the input with which the benchmarks call ``op`` (a
    ``fastnorm.functional`` name, also ``fastnorm.reference``'s and ``torch.nn.functional``'s)
    on x; fresh arrays at each call (running statistics are updated in place)."""
    if op == "batch_norm":
        p = params(x.shape[1], x.dtype)
        return dict(running_mean=p.running_mean, running_var=p.running_var, weight=p.weight,
                    bias=p.bias, training=mode == "train", momentum=0.1, eps=1e-5)
    if op == "layer_norm":
        p = params(x.shape[-1], x.dtype)
        return dict(normalized_shape=(x.shape[-1],), weight=p.weight, bias=p.bias, eps=1e-5)
    if op == "group_norm":
        p = params(x.shape[1], x.dtype)
        return dict(num_groups=32, weight=p.weight, bias=p.bias, eps=1e-5)
    if op == "instance_norm":
        return dict(eps=1e-5)  # as the shared benchmark: no affine, no running statistics
    if op == "rms_norm":
        p = params(x.shape[-1], x.dtype)
        return dict(normalized_shape=(x.shape[-1],), weight=p.weight)  # eps=None: torch's default
    raise KeyError(f"no benchmark call for op {op!r}")


def median_time(fn, rounds=7, budget=0.15):
    """Median seconds per call of ``fn`` over ``rounds`` timed loops of about budget/rounds
    seconds each (after a warm-up call and a short calibration)."""
    fn()
    t0, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - t0 < 0.02:
        fn()
        n += 1
    inner = max(1, int(budget / rounds / ((time.perf_counter() - t0) / n)))
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t) / inner)
    return statistics.median(samples)
