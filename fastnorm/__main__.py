"""``python -m fastnorm``: run every layer on a few fixed shapes, check each result against
``fastnorm.reference`` (float64) and print a table of fastnorm vs plain NumPy time (and vs PyTorch
CPU when it is installed).

    python -m fastnorm [--quick] [--dtype float32|float64] [--threads N]

The NumPy column is ``fastnorm.reference`` evaluated in the input's dtype: the same plain formula a
NumPy user writes. All peers are timed in one process, interleaved, and each time is the median of
several rounds; ratios from one run are what to compare (absolute times vary with the machine).
Exits with status 1 if any result is off the reference.
"""
import argparse
import statistics
import sys
import time

import numpy as np

import fastnorm
from fastnorm import reference as ref

# (label, op, shape): the anchor shapes of ../shared/bench/anchors.py (the project's shared
# benchmark, beside the repository) and an RMSNorm case
CASES = [
    ("BatchNorm2d train", "bn_train", (32, 64, 56, 56)),
    ("BatchNorm2d train", "bn_train", (8, 256, 28, 28)),
    ("BatchNorm1d train", "bn_train", (256, 1024)),
    ("BatchNorm2d eval", "bn_eval", (1, 64, 112, 112)),
    ("BatchNorm2d eval", "bn_eval", (1, 32, 8, 8)),
    ("LayerNorm", "ln", (32, 128, 768)),
    ("LayerNorm", "ln", (4096, 4096)),
    ("LayerNorm", "ln", (1, 768)),
    ("GroupNorm(32)", "gn", (8, 256, 64, 64)),
    ("GroupNorm(32)", "gn", (1, 512, 64, 64)),
    ("InstanceNorm2d", "in", (8, 64, 128, 128)),
    ("InstanceNorm2d", "in", (1, 3, 512, 512)),
    ("RMSNorm", "rms", (32, 128, 768)),
]
QUICK = {1, 4, 5, 7, 9, 11, 12}  # indices kept by --quick


def median_time(fn, rounds=7, budget=0.15):
    """Median seconds per call over `rounds` rounds of about budget/rounds seconds each."""
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


def make_case(op, x, rng, torch):
    """(fast, slow, peer): fastnorm(**kw), reference(**kw) and torch (or None) callables."""
    dt = x.dtype
    C = x.shape[-1] if op in ("ln", "rms") else x.shape[1]
    w, b, rm = (rng.standard_normal(C).astype(dt) for _ in range(3))
    rv = (np.abs(rng.standard_normal(C)) + 0.5).astype(dt)
    F, TF = fastnorm.functional, torch.nn.functional if torch else None
    t = torch.from_numpy if torch else None
    if op in ("bn_train", "bn_eval"):
        tr = op == "bn_train"  # training output depends on the batch only, not on running stats
        frm, frv, nrm, nrv = rm.copy(), rv.copy(), rm.copy(), rv.copy()
        fast = lambda **k: F.batch_norm(x, frm, frv, w, b, tr, 0.1, 1e-5, **k)
        slow = lambda **k: ref.batch_norm(x, nrm, nrv, w, b, tr, 0.1, 1e-5, **k)
        args = (t(rm.copy()), t(rv.copy()), t(w), t(b), tr, 0.1, 1e-5) if torch else ()
        peer = lambda: TF.batch_norm(t(x), *args)
    elif op in ("ln", "rms"):
        fname = "layer_norm" if op == "ln" else "rms_norm"
        params = (w, b) if op == "ln" else (w,)
        fast = lambda **k: getattr(F, fname)(x, (C,), *params, **k)
        slow = lambda **k: getattr(ref, fname)(x, (C,), *params, **k)
        peer = lambda: getattr(TF, fname)(t(x), (C,), *map(t, params))
    elif op == "gn":
        fast = lambda **k: F.group_norm(x, 32, w, b, 1e-5, **k)
        slow = lambda **k: ref.group_norm(x, 32, w, b, 1e-5, **k)
        peer = lambda: TF.group_norm(t(x), 32, t(w), t(b), 1e-5)
    else:
        fast = lambda **k: F.instance_norm(x, eps=1e-5, **k)
        slow = lambda **k: ref.instance_norm(x, eps=1e-5, **k)
        peer = lambda: TF.instance_norm(t(x), eps=1e-5)
    return fast, slow, peer if torch else None


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastnorm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, smaller cases")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=None, help="fastnorm threads (default: all)")
    args = ap.parse_args(argv)
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch, torch_version = None, "not installed"
    if args.threads is not None:
        fastnorm.set_num_threads(args.threads)  # ValueError below 1
    cfg = fastnorm.get_config()
    dt = np.dtype(args.dtype)
    tol = 5e-5 if dt == np.float32 else 1e-9
    print(f"fastnorm {cfg['version']} (OpenMP {'on' if cfg['openmp'] else 'OFF'}, "
          f"{fastnorm.get_num_threads()} threads), NumPy {np.__version__}, torch {torch_version}; "
          f"{args.dtype}, out= given; times are medians, ratios > 1 mean fastnorm is faster")
    cols = ["numpy", "fastnorm"] + (["torch"] if torch else [])
    head = (f"{'layer':18s} {'shape':20s} {'max|err|':>9s} " + " ".join(f"{c + ' ms':>11s}" for c in cols)
            + f" {'vs numpy':>9s}" + (f" {'vs torch':>9s}" if torch else ""))
    print(head)
    print("-" * len(head))
    rng = np.random.default_rng(0)
    ok, speed_np, speed_t = True, [], []
    for i, (label, op, shape) in enumerate(CASES):
        if args.quick and i not in QUICK:
            continue
        x = (rng.standard_normal(shape) * 3 + 1).astype(dt)
        fast, slow, peer = make_case(op, x, rng, torch)
        got, want = fast(), slow()
        err = float(np.max(np.abs(got - want)))
        ok &= got.dtype == dt and err <= tol
        out = np.empty_like(x)
        fns = {"fastnorm": lambda: fast(out=out), "numpy": lambda: slow(dtype=dt), "torch": peer}
        ms = {k: median_time(fns[k]) * 1e3 for k in cols}
        speed_np.append(ms["numpy"] / ms["fastnorm"])
        line = (f"{label:18s} {str(shape):20s} {err:9.1e} " + " ".join(f"{ms[c]:11.4f}" for c in cols)
                + f" {speed_np[-1]:8.1f}x")
        if torch:
            speed_t.append(ms["torch"] / ms["fastnorm"])
            line += f" {speed_t[-1]:8.2f}x"
        print(line + ("" if err <= tol else "   <-- OFF THE REFERENCE"), flush=True)
    gm = lambda v: float(np.exp(np.mean(np.log(v))))
    print(f"geometric mean speedup: {gm(speed_np):.1f}x vs NumPy"
          + (f", {gm(speed_t):.2f}x vs torch (min {min(speed_t):.2f}x)" if torch else ""))
    print("all results match the float64 reference" if ok else
          f"SOME RESULTS DO NOT MATCH THE REFERENCE (tolerance {tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
