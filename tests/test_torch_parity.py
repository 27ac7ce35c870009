"""fastnorm against PyTorch 2.13 (CPU): functional ops and layers in training and eval mode, float32
and float64, odd shapes; a multi-step training loop compared step by step (outputs, running
statistics, num_batches_tracked); state_dict exchange in both directions; and which bad inputs
both libraries refuse. Every test takes the ``torch`` fixture, so the file skips without torch."""
import warnings

import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F
from fastnorm import reference as R

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-10}


def t_of(torch, a):
    return None if a is None else torch.from_numpy(np.array(a))  # a copy


def n_of(t):
    return None if t is None else t.detach().cpu().numpy()


def assert_close(got, want, dtype, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    tol = TOL[np.dtype(dtype).type]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol,
                               atol=tol, err_msg=what)


def rand(shape, dtype, seed=0, scale=2.0, offset=0.5):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + offset).astype(dtype)


# ------------------------------------------------------------------------------------------------
# functional

# (N, C, *spatial) with C = 6; odd sizes, size-1 axes
SHAPES = [(4, 6, 5, 7), (3, 6, 9), (5, 6), (2, 6, 3, 4, 5), (2, 6, 1, 1), (1, 6, 1, 8),
          (7, 6, 13), (2, 6, 129)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm_functional(torch, shape, dtype):
    import torch.nn.functional as TF
    x = rand(shape, dtype)
    w, b = rand(6, dtype, 1, 0.5, 1.0), rand(6, dtype, 2)
    rm, rv = rand(6, dtype, 3), np.abs(rand(6, dtype, 4)) + 0.5
    for training in (True, False):
        for momentum, eps in ((0.1, 1e-5), (0.7, 1e-3)):
            frm, frv, trm, trv = rm.copy(), rv.copy(), t_of(torch, rm), t_of(torch, rv)
            y = F.batch_norm(x, frm, frv, w, b, training, momentum, eps)
            ty = TF.batch_norm(t_of(torch, x), trm, trv, t_of(torch, w), t_of(torch, b),
                               training, momentum, eps)
            what = f"training={training} momentum={momentum}"
            assert y.dtype == dtype
            assert_close(y, n_of(ty), dtype, what)
            assert_close(frm, n_of(trm), dtype, what)
            assert_close(frv, n_of(trv), dtype, what)
    # training without running statistics, without affine
    y = F.batch_norm(x, None, None, training=True)
    assert_close(y, n_of(TF.batch_norm(t_of(torch, x), None, None, training=True)), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [s for s in SHAPES if np.prod(s[2:]) > 1], ids=str)
def test_instance_norm_functional(torch, shape, dtype):
    import torch.nn.functional as TF
    x = rand(shape, dtype, offset=3.0)
    w, b = rand(6, dtype, 1, 0.5, 1.0), rand(6, dtype, 2)
    rm, rv = rand(6, dtype, 3), np.abs(rand(6, dtype, 4)) + 0.5
    tx = t_of(torch, x)
    assert_close(F.instance_norm(x), n_of(TF.instance_norm(tx)), dtype)
    assert_close(F.instance_norm(x, weight=w, bias=b, eps=1e-3),
                 n_of(TF.instance_norm(tx, weight=t_of(torch, w), bias=t_of(torch, b),
                                       eps=1e-3)), dtype)
    for use_input_stats in (True, False):
        frm, frv, trm, trv = rm.copy(), rv.copy(), t_of(torch, rm), t_of(torch, rv)
        y = F.instance_norm(x, frm, frv, w, b, use_input_stats, 0.3)
        ty = TF.instance_norm(tx, trm, trv, t_of(torch, w), t_of(torch, b), use_input_stats, 0.3)
        assert_close(y, n_of(ty), dtype, f"use_input_stats={use_input_stats}")
        assert_close(frm, n_of(trm), dtype)
        assert_close(frv, n_of(trv), dtype)



@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["C", "channels_last", "strided_out"])
def test_instance_norm_eps_zero_constant_plane_gives_bias(torch, dtype, layout):
    """eps = 0: torch takes 1 / sqrt(var + eps) as 0 where var is 0 too, so constant planes give
    their bias (0 without one), the others normalize; native_instance_norm's invstd is 0 there,
    and the layer's backward gives 0 there, as autograd."""
    import torch.nn.functional as TF
    x = rand((3, 4, 5, 2), dtype, 7)
    x[0, 1], x[2, 3], x[1, 0] = 2.0, -1.0, 0.0
    x[2, 2, 0, 0] = np.nan  # a NaN plane stays NaN
    if layout == "channels_last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w, b = rand(4, dtype, 1, 0.5, 1.0), rand(4, dtype, 2)
    tx, tw, tb = t_of(torch, x), t_of(torch, w), t_of(torch, b)
    for bias, tbias in ((b, tb), (None, None)):
        want = n_of(TF.instance_norm(tx, weight=tw, bias=tbias, eps=0.0))
        if layout == "strided_out":
            out = np.empty((2, 5, 3, 4), dtype).transpose(2, 3, 1, 0)
            got = F.instance_norm(x, weight=w, bias=bias, eps=0.0, out=out)
            assert got is out
        else:
            got = F.instance_norm(x, weight=w, bias=bias, eps=0.0)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        assert_close(np.nan_to_num(got), np.nan_to_num(want), dtype)
        flat = got[0, 1] if bias is None else got[0, 1] - b[1]
        assert np.all(flat == 0)
        ref = R.instance_norm(x, weight=w, bias=bias, eps=0.0)
        assert_close(np.nan_to_num(ref), np.nan_to_num(want), dtype, "reference")
    # a constant whose two-pass variance rounds to about 1e-34 (torch gives noise there): bias
    xc = np.full((2, 4, 7), 0.1, dtype)
    for got in (F.instance_norm(xc, weight=w, bias=b, eps=0.0),
                R.instance_norm(xc, weight=w, bias=b, eps=0.0)):
        assert np.array_equal(got, np.broadcast_to(b[:, None], (2, 4, 7)).astype(got.dtype))
    xs = np.nan_to_num(x)
    _, _, invstd = F.native_instance_norm(xs, None, None, None, None, True, 0.1, 0.0)
    assert invstd[0, 1] == 0 and invstd[2, 3] == 0 and np.all(invstd[0, [0, 2, 3]] > 0)
    m = fastnorm.InstanceNorm2d(4, affine=True, eps=0.0).requires_grad_()
    txg = t_of(torch, xs).requires_grad_()
    tm = torch.nn.InstanceNorm2d(4, affine=True, eps=0.0, dtype=txg.dtype)
    g = rand(xs.shape, dtype, 9)
    m(xs)
    tm(txg).backward(t_of(torch, g))
    assert_close(m.backward(g), n_of(txg.grad), dtype)

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_layer_group_rms_norm_functional(torch, shape, dtype):
    import torch.nn.functional as TF
    x = rand(shape, dtype, offset=-2.0)
    tx = t_of(torch, x)
    for k in (1, 2):
        ns = shape[-k:]
        w, b = rand(ns, dtype, 1, 0.5, 1.0), rand(ns, dtype, 2)
        tw, tb = t_of(torch, w), t_of(torch, b)
        assert_close(F.layer_norm(x, ns), n_of(TF.layer_norm(tx, ns)), dtype, f"ln {ns}")
        assert_close(F.layer_norm(x, list(ns), w, b, 1e-3),
                     n_of(TF.layer_norm(tx, ns, tw, tb, 1e-3)), dtype, f"ln affine {ns}")
        assert_close(F.layer_norm(x, ns, w), n_of(TF.layer_norm(tx, ns, tw)), dtype)
        assert_close(F.layer_norm(x, ns, None, b), n_of(TF.layer_norm(tx, ns, None, tb)), dtype)
        assert_close(F.rms_norm(x, ns), n_of(TF.rms_norm(tx, ns)), dtype, f"rms {ns}")
        assert_close(F.rms_norm(x, ns, w, 1e-6), n_of(TF.rms_norm(tx, ns, tw, 1e-6)), dtype)
    w, b = rand(6, dtype, 1, 0.5, 1.0), rand(6, dtype, 2)
    for g in (1, 2, 3, 6):
        if shape[0] * np.prod(shape[2:]) * 6 // g == 1:
            continue
        assert_close(F.group_norm(x, g), n_of(TF.group_norm(tx, g)), dtype, f"gn {g}")
        assert_close(F.group_norm(x, g, w, b, 1e-2),
                     n_of(TF.group_norm(tx, g, t_of(torch, w), t_of(torch, b), 1e-2)), dtype)


def test_functional_on_non_contiguous_input(torch):
    import torch.nn.functional as TF
    x = rand((5, 8, 6, 3), np.float32).transpose(0, 3, 2, 1)[:, :, ::-1, ::2]  # (5, 3, 6, 4)
    tx = torch.from_numpy(np.ascontiguousarray(x))
    assert_close(F.batch_norm(x, None, None, training=True),
                 n_of(TF.batch_norm(tx, None, None, training=True)), np.float32)
    assert_close(F.instance_norm(x), n_of(TF.instance_norm(tx)), np.float32)
    assert_close(F.group_norm(x, 3), n_of(TF.group_norm(tx, 3)), np.float32)
    assert_close(F.layer_norm(x, (6, 4)), n_of(TF.layer_norm(tx, (6, 4))), np.float32)
    assert_close(F.rms_norm(x, 4), n_of(TF.rms_norm(tx, (4,))), np.float32)


# ------------------------------------------------------------------------------------------------
# layers: a training loop step by step

STAT_CLASSES = {"BatchNorm1d": [(6, 3), (4, 3, 5)], "BatchNorm2d": [(4, 3, 5, 3)],
                "BatchNorm3d": [(2, 3, 3, 2, 3)], "InstanceNorm1d": [(4, 3, 7)],
                "InstanceNorm2d": [(3, 3, 4, 5)], "InstanceNorm3d": [(2, 3, 3, 2, 3)]}
VARIANTS = {
    "default": {},
    "momentum_none": dict(momentum=None),
    "momentum_0.5": dict(momentum=0.5, eps=1e-3),
    "no_tracking": dict(track_running_stats=False),
    "no_affine": dict(affine=False),
    "no_bias": dict(bias=False),
}
LOOP_CASES = [(name, shape) for name, shapes in STAT_CLASSES.items() for shape in shapes]


def twins(torch, name, dtype, **kw):
    """(fastnorm module, torch module) built alike, with torch's random parameters in both."""
    if name.startswith("InstanceNorm"):  # exercise the running statistics and the affine too
        kw.setdefault("affine", True)
        kw.setdefault("track_running_stats", True)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    args = kw.pop("args")
    tm = getattr(torch.nn, name)(*args, dtype=tdtype, **kw)
    fm = getattr(fastnorm, name)(*args, dtype=dtype, **kw)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in tm.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=tdtype) * 1.5 + 0.5)
    assert fm.load_state_dict(tm.state_dict()) == ([], [])
    return fm, tm


def compare_state(fm, tm, dtype, what):
    tsd, fsd = tm.state_dict(), fm.state_dict()
    assert list(fsd) == list(tsd), what
    for k in tsd:
        if k == "num_batches_tracked":
            assert fsd[k].dtype == np.int64 and int(fsd[k]) == int(tsd[k]), f"{what} {k}"
        else:
            assert_close(fsd[k], n_of(tsd[k]), dtype, f"{what} {k}")
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        assert (getattr(fm, k, None) is None) == (getattr(tm, k, None) is None), f"{what} {k}"


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,shape", LOOP_CASES, ids=lambda v: str(v))
def test_training_loop_matches_torch(torch, name, shape, dtype, variant):
    fm, tm = twins(torch, name, dtype, args=(3,), **VARIANTS[variant])
    compare_state(fm, tm, dtype, "initial")
    for step in range(5):
        x = rand(shape, dtype, seed=step, scale=1.0 + step, offset=2.0 * step - 3.0)
        if name.startswith("InstanceNorm") and step == 3:
            x = x[0]  # an unbatched input among the batches
        y, ty = fm(x), tm(t_of(torch, x))
        assert y.dtype == dtype
        assert_close(y, n_of(ty), dtype, f"step {step} output")
        compare_state(fm, tm, dtype, f"step {step}")
    assert fm.eval() is fm and tm.eval() is tm
    for step in range(2):
        x = rand(shape, dtype, seed=10 + step, offset=1.0)
        assert_close(fm(x), n_of(tm(t_of(torch, x))), dtype, "eval output")
        compare_state(fm, tm, dtype, "eval")
    fm.train()
    tm.train()
    x = rand(shape, dtype, seed=20)
    assert_close(fm(x), n_of(tm(t_of(torch, x))), dtype, "train again")
    compare_state(fm, tm, dtype, "train again")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,args,kw,shape", [
    ("LayerNorm", ((5,),), {}, (4, 5)),
    ("LayerNorm", ([3, 5],), dict(eps=1e-3), (2, 4, 3, 5)),
    ("LayerNorm", (7,), dict(bias=False), (3, 2, 7)),
    ("LayerNorm", ((2, 3),), dict(elementwise_affine=False), (2, 3)),
    ("GroupNorm", (3, 6), {}, (4, 6, 5)),
    ("GroupNorm", (2, 6), dict(eps=1e-2, affine=False), (3, 6, 2, 3)),
    ("GroupNorm", (1, 6), dict(bias=False), (2, 6)),
    ("GroupNorm", (6, 6), {}, (2, 6, 4, 1, 3)),
    ("RMSNorm", ((5,),), {}, (4, 5)),
    ("RMSNorm", ([2, 5],), dict(eps=1e-6), (3, 2, 5)),
    ("RMSNorm", (9,), dict(elementwise_affine=False), (9,)),
], ids=lambda v: str(v))
def test_stateless_layers_match_torch(torch, name, args, kw, shape, dtype):
    fm, tm = twins(torch, name, dtype, args=args, **kw)
    assert repr(fm) == repr(tm)
    for mode in (True, False):
        fm.train(mode)
        tm.train(mode)
        for seed in range(2):
            x = rand(shape, dtype, seed=seed, offset=seed * 5.0)
            y = fm(x)
            assert y.dtype == dtype
            assert_close(y, n_of(tm(t_of(torch, x))), dtype, f"training={mode}")
    compare_state(fm, tm, dtype, "after")


@pytest.mark.parametrize("name", list(STAT_CLASSES))
def test_float64_module_float32_input(torch, name):
    # fastnorm casts its float64 parameters to the input's float32 (torch would raise "mixed
    # dtype": README, "Where fastnorm differs"); the result equals torch's float32 layer's
    fm = getattr(fastnorm, name)(3, affine=True, track_running_stats=True, dtype=np.float64)
    tm = getattr(torch.nn, name)(3, affine=True, track_running_stats=True)
    x = rand(STAT_CLASSES[name][-1], np.float32)
    y = fm(x)
    assert y.dtype == np.float32
    assert_close(y, n_of(tm(torch.from_numpy(x))), np.float32)
    assert_close(fm.running_var, n_of(tm.running_var), np.float32)
    assert fm.running_var.dtype == np.float64


# ------------------------------------------------------------------------------------------------
# state_dict exchange

EXCHANGE = [("BatchNorm1d", (3,), {}, (6, 3)), ("BatchNorm2d", (3,), dict(momentum=None),
                                                 (4, 3, 5, 3)),
            ("BatchNorm3d", (3,), dict(bias=False), (2, 3, 3, 2, 3)),
            ("InstanceNorm1d", (3,), {}, (4, 3, 7)),
            ("InstanceNorm2d", (3,), dict(affine=False, track_running_stats=False), (3, 3, 4, 5)),
            ("LayerNorm", ((3, 5),), {}, (2, 3, 5)), ("GroupNorm", (3, 6), {}, (2, 6, 5)),
            ("RMSNorm", (5,), {}, (4, 5))]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,args,kw,shape", EXCHANGE, ids=lambda v: str(v))
def test_state_dict_torch_to_fastnorm_to_torch(torch, name, args, kw, shape, dtype):
    fm, tm = twins(torch, name, dtype, args=args, **kw)
    for seed in range(3):  # torch trains; fastnorm only receives the state
        tm(t_of(torch, rand(shape, dtype, seed=seed, offset=seed)))
    tsd = tm.state_dict()
    fresh = getattr(fastnorm, name)(*args, dtype=dtype, **_inst(name, kw))
    assert fresh.load_state_dict(tsd) == ([], [])
    compare_state(fresh, tm, dtype, "torch -> fastnorm")
    for k, v in fresh.state_dict().items():  # exact copies
        np.testing.assert_array_equal(v, n_of(tsd[k]))
    back = getattr(torch.nn, name)(*args, dtype=_tdtype(torch, dtype), **_inst(name, kw))
    res = back.load_state_dict({k: torch.from_numpy(v) for k, v in fresh.state_dict().items()})
    assert not res.missing_keys and not res.unexpected_keys
    for m in (tm, back, fresh):
        m.eval()
    x = rand(shape, dtype, seed=9, offset=-1.0)
    ty, by, fy = tm(t_of(torch, x)), back(t_of(torch, x)), fresh(x)
    np.testing.assert_array_equal(n_of(ty), n_of(by))  # identical state: identical output
    assert_close(fy, n_of(ty), dtype)
    for k, v in tm.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,args,kw,shape", EXCHANGE, ids=lambda v: str(v))
def test_state_dict_fastnorm_to_torch(torch, name, args, kw, shape, dtype):
    fm = getattr(fastnorm, name)(*args, dtype=dtype, **_inst(name, kw))
    rng = np.random.default_rng(4)
    for k, v in fm.state_dict().items():
        if k != "num_batches_tracked":
            v[...] = rng.uniform(0.5, 2.0, v.shape)
    for seed in range(2):
        fm(rand(shape, dtype, seed=seed))
    tm = getattr(torch.nn, name)(*args, dtype=_tdtype(torch, dtype), **_inst(name, kw))
    res = tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in fm.state_dict().items()})
    assert not res.missing_keys and not res.unexpected_keys
    compare_state(fm, tm, dtype, "fastnorm -> torch")
    fm.eval()
    tm.eval()
    x = rand(shape, dtype, seed=7)
    assert_close(fm(x), n_of(tm(t_of(torch, x))), dtype)


def _inst(name, kw):
    kw = dict(kw)
    if name.startswith("InstanceNorm"):
        kw.setdefault("affine", True)
        kw.setdefault("track_running_stats", True)
    return kw


def _tdtype(torch, dtype):
    return torch.float32 if dtype == np.float32 else torch.float64


KEY_CASES = [("BatchNorm2d", (4,), {}), ("BatchNorm1d", (4,), dict(affine=False)),
             ("BatchNorm3d", (4,), dict(bias=False, track_running_stats=False)),
             ("InstanceNorm1d", (4,), {}), ("InstanceNorm2d", (4,), dict(affine=True)),
             ("InstanceNorm3d", (4,), dict(track_running_stats=True, bias=False, affine=True)),
             ("LayerNorm", ((2, 3),), {}), ("LayerNorm", (3,), dict(bias=False)),
             ("LayerNorm", (3,), dict(elementwise_affine=False)), ("GroupNorm", (2, 4), {}),
             ("GroupNorm", (2, 4), dict(affine=False)), ("GroupNorm", (2, 4), dict(bias=False)),
             ("RMSNorm", (3,), {}), ("RMSNorm", ([2, 3],), dict(elementwise_affine=False))]


@pytest.mark.parametrize("name,args,kw", KEY_CASES, ids=lambda v: str(v))
def test_state_dict_keys_shapes_dtypes_match_torch(torch, name, args, kw):
    tm = getattr(torch.nn, name)(*args, **kw)
    fm = getattr(fastnorm, name)(*args, **kw)
    tsd, fsd = tm.state_dict(), fm.state_dict()
    assert list(fsd) == list(tsd)
    for k in tsd:
        assert fsd[k].shape == tuple(tsd[k].shape), k
        assert str(fsd[k].dtype) == str(tsd[k].dtype).replace("torch.", ""), k
        np.testing.assert_array_equal(fsd[k], n_of(tsd[k]))
    assert repr(fm) == repr(tm)


def test_torch_dtype_objects_accepted(torch):
    m = fastnorm.BatchNorm2d(3, dtype=torch.float64, device=torch.device("cpu"))
    assert m.weight.dtype == np.float64 and m.running_var.dtype == np.float64
    assert fastnorm.LayerNorm(3, dtype=torch.float32).weight.dtype == np.float32
    assert fastnorm.GroupNorm(1, 3, dtype=torch.float16).weight.dtype == np.float16
    assert fastnorm.GroupNorm(1, 3, dtype=torch.bfloat16).weight.dtype.name == "bfloat16"
    with pytest.raises(TypeError):
        fastnorm.GroupNorm(1, 3, dtype=torch.complex64)


def test_legacy_checkpoint_without_num_batches_tracked_matches_torch(torch):
    tm, fm = torch.nn.BatchNorm1d(3), fastnorm.BatchNorm1d(3)
    for seed in range(3):
        x = rand((5, 3), np.float32, seed)
        tm(torch.from_numpy(x))
        fm(x)
    src = torch.nn.BatchNorm1d(3)
    src(torch.randn(4, 3))
    legacy = {k: v for k, v in src.state_dict().items() if k != "num_batches_tracked"}
    assert list(tm.load_state_dict(legacy)) == list(fm.load_state_dict(legacy)) == [[], []]
    compare_state(fm, tm, np.float32, "legacy load")  # torch keeps its count of 3


def test_torch_state_dict_metadata_is_honoured(torch):
    # torch's own state_dict() carries _metadata (the module version). With it, torch does not
    # treat the state dict as a legacy checkpoint: a missing num_batches_tracked is a missing
    # key, and an InstanceNorm's extra running stats are ordinary unexpected keys.
    sd = torch.nn.BatchNorm1d(3).state_dict()
    del sd["num_batches_tracked"]
    assert sd._metadata[""]["version"] == 2
    with pytest.raises(RuntimeError, match='Missing key.*"num_batches_tracked"'):
        torch.nn.BatchNorm1d(3).load_state_dict(sd)
    with pytest.raises(RuntimeError, match='Missing key.*"num_batches_tracked"'):
        fastnorm.BatchNorm1d(3).load_state_dict(sd)


def test_torch_instancenorm_state_dict_with_metadata_non_strict(torch):
    sd = torch.nn.InstanceNorm1d(3, track_running_stats=True).state_dict()
    want = torch.nn.InstanceNorm1d(3).load_state_dict(sd, strict=False)
    got = fastnorm.InstanceNorm1d(3).load_state_dict(sd, strict=False)
    assert (got.missing_keys, got.unexpected_keys) == (want.missing_keys, want.unexpected_keys)


# ------------------------------------------------------------------------------------------------
# bad inputs: both libraries refuse them (ours with ValueError/TypeError)

X = rand((4, 3, 5), np.float32)


class Lib:
    """What an error case needs from one library: functional ops, layers, an array maker."""

    def __init__(self, torch=None):
        self.is_torch = torch is not None
        self.F = torch.nn.functional if torch is not None else F
        self.nn = torch.nn if torch is not None else fastnorm
        self.torch = torch

    def a(self, x):
        x = np.array(x)
        return self.torch.from_numpy(x) if self.is_torch else x


BOTH_REFUSE = [
    ("bn-1d", lambda L: L.F.batch_norm(L.a(X[0, 0]), None, None, training=True)),
    ("bn-weight-size", lambda L: L.F.batch_norm(L.a(X), None, None, L.a(np.ones(4, "f4")),
                                                training=True)),
    ("bn-running-size", lambda L: L.F.batch_norm(L.a(X), L.a(np.zeros(4, "f4")),
                                                 L.a(np.ones(4, "f4")), training=True)),
    ("bn-one-value", lambda L: L.F.batch_norm(L.a(X[:1, :, :1]), None, None, training=True)),
    ("bn-eps-zero-training", lambda L: L.F.batch_norm(L.a(X), None, None, training=True, eps=0.0)),
    ("bn-eps-negative-training", lambda L: L.F.batch_norm(L.a(X), None, None, training=True,
                                                          eps=-1.0)),
    ("bn-eps-negative-eval", lambda L: L.F.batch_norm(L.a(X), L.a(np.zeros(3, "f4")),
                                                      L.a(np.ones(3, "f4")), eps=-1e-6)),
    ("bn-eval-no-running", lambda L: L.F.batch_norm(L.a(X), None, None, training=False)),
    ("bn-int", lambda L: L.F.batch_norm(L.a(X.astype("i4")), None, None, training=True)),
    ("bn-bool", lambda L: L.F.batch_norm(L.a(X > 0), None, None, training=True)),
    ("bn-complex", lambda L: L.F.batch_norm(L.a(X.astype("c8")), None, None, training=True)),
    ("in-weight-size", lambda L: L.F.instance_norm(L.a(X), weight=L.a(np.ones(4, "f4")))),
    ("in-running-size", lambda L: L.F.instance_norm(L.a(X), L.a(np.zeros(2, "f4")),
                                                    L.a(np.ones(2, "f4")))),
    ("in-one-spatial", lambda L: L.F.instance_norm(L.a(X[:, :, :1]))),
    ("in-no-spatial-axis", lambda L: L.F.instance_norm(L.a(X[:, :, 0]))),
    ("in-int", lambda L: L.F.instance_norm(L.a(X.astype("i8")))),
    ("ln-shape", lambda L: L.F.layer_norm(L.a(X), (4,))),
    ("ln-weight-size", lambda L: L.F.layer_norm(L.a(X), (5,), L.a(np.ones(4, "f4")))),
    ("ln-int", lambda L: L.F.layer_norm(L.a(X.astype("i4")), (5,))),
    ("gn-not-divisible", lambda L: L.F.group_norm(L.a(X), 2)),
    ("gn-zero-groups", lambda L: L.F.group_norm(L.a(X), 0)),
    ("gn-negative-groups", lambda L: L.F.group_norm(L.a(X), -3)),
    ("gn-one-value-per-group", lambda L: L.F.group_norm(L.a(X[:1, :, :1]), 3)),
    ("gn-weight-size", lambda L: L.F.group_norm(L.a(X), 3, L.a(np.ones(6, "f4")))),
    ("gn-1d", lambda L: L.F.group_norm(L.a(X[0, 0]), 1)),
    ("gn-complex", lambda L: L.F.group_norm(L.a(X.astype("c8")), 3)),
    ("rms-shape", lambda L: L.F.rms_norm(L.a(X), (4,))),
    ("rms-weight-size", lambda L: L.F.rms_norm(L.a(X), (5,), L.a(np.ones(3, "f4")))),
    ("rms-bool", lambda L: L.F.rms_norm(L.a(X > 0), (5,))),
    # layers
    ("BatchNorm2d-3d", lambda L: L.nn.BatchNorm2d(3)(L.a(X))),
    ("BatchNorm1d-4d", lambda L: L.nn.BatchNorm1d(3)(L.a(X[None]))),
    ("BatchNorm1d-channels", lambda L: L.nn.BatchNorm1d(4)(L.a(X))),
    ("BatchNorm1d-one-value", lambda L: L.nn.BatchNorm1d(3)(L.a(X[:1, :, 0]))),
    ("BatchNorm3d-eps-zero", lambda L: L.nn.BatchNorm3d(3, eps=0)(L.a(X[..., None, None]))),
    ("InstanceNorm1d-affine-channels", lambda L: L.nn.InstanceNorm1d(4, affine=True)(L.a(X))),
    ("InstanceNorm1d-tracking-channels",
     lambda L: L.nn.InstanceNorm1d(4, track_running_stats=True)(L.a(X))),
    ("InstanceNorm2d-ndim", lambda L: L.nn.InstanceNorm2d(3)(L.a(X[0, 0]))),
    ("InstanceNorm1d-one-spatial", lambda L: L.nn.InstanceNorm1d(3)(L.a(X[:, :, :1]))),
    ("LayerNorm-shape", lambda L: L.nn.LayerNorm(4)(L.a(X))),
    ("GroupNorm-channels", lambda L: L.nn.GroupNorm(3, 6)(L.a(X))),
    ("GroupNorm-one-value", lambda L: L.nn.GroupNorm(3, 3)(L.a(X[:1, :, 0]))),
    ("RMSNorm-shape", lambda L: L.nn.RMSNorm([3, 4])(L.a(X))),
    ("train-non-bool", lambda L: L.nn.BatchNorm1d(3).train("yes")),
    # a flag that is not a bool (a string or None is not taken for its truth value)
    ("bn-training-str", lambda L: L.F.batch_norm(L.a(X), None, None, training="no")),
    ("bn-training-none", lambda L: L.F.batch_norm(L.a(X), L.a(np.zeros(3, "f4")),
                                                  L.a(np.ones(3, "f4")), training=None)),
    ("bn-training-int", lambda L: L.F.batch_norm(L.a(X), None, None, training=1)),
    ("in-use-input-stats-str", lambda L: L.F.instance_norm(L.a(X), use_input_stats="yes")),
    # constructors
    ("BatchNorm2d-negative", lambda L: L.nn.BatchNorm2d(-1)),
    ("BatchNorm1d-float-size", lambda L: L.nn.BatchNorm1d(3.0)),
    ("LayerNorm-negative", lambda L: L.nn.LayerNorm(-2)),
    ("GroupNorm-not-divisible", lambda L: L.nn.GroupNorm(4, 6)),
    ("GroupNorm-zero-groups", lambda L: L.nn.GroupNorm(0, 4)),
    ("RMSNorm-negative", lambda L: L.nn.RMSNorm((3, -1))),
]


def test_flags_take_numpy_bools_and_refuse_the_rest():
    x = rand((4, 3, 5), np.float32)
    assert np.array_equal(F.batch_norm(x, None, None, training=np.True_),
                          F.batch_norm(x, None, None, training=True))
    assert np.array_equal(F.instance_norm(x, use_input_stats=np.bool_(True)), F.instance_norm(x))
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    for call in (lambda: F.batch_norm(x, rm, rv, training="no"),
                 lambda: F.instance_norm(x, rm, rv, use_input_stats=None),
                 lambda: F.native_batch_norm(x, None, None, rm, rv, 1.0, 0.1, 1e-5),
                 lambda: F.native_instance_norm(x, None, None, rm, rv, "", 0.1, 1e-5),
                 lambda: F.switch_norm(x, None, None, None, None, [0., 0.], [0., 0.],
                                       training="yes")):
        with pytest.raises(TypeError, match="must be a bool, got"):
            call()
        assert np.all(rm == 0) and np.all(rv == 1)  # refused before any state changed


@pytest.mark.parametrize("case", BOTH_REFUSE, ids=[c[0] for c in BOTH_REFUSE])
def test_both_libraries_refuse(torch, case):
    _, call = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(Exception):
            call(Lib(torch))
        with pytest.raises((ValueError, TypeError)):
            call(Lib())


# torch 2.13 accepts these; fastnorm refuses them on purpose
TORCH_ACCEPTS = [
    # README: negative or non-finite eps is rejected by every op (torch checks it in batch_norm
    # training only)
    ("ln-eps-negative", lambda L: L.F.layer_norm(L.a(X), (5,), eps=-1e-5)),
    ("gn-eps-negative", lambda L: L.F.group_norm(L.a(X), 3, eps=-1e-5)),
    ("in-eps-negative", lambda L: L.F.instance_norm(L.a(X), eps=-1e-5)),
    ("rms-eps-negative", lambda L: L.F.rms_norm(L.a(X), (5,), eps=-1e-9)),
    ("bn-eps-nan", lambda L: L.F.batch_norm(L.a(X), None, None, training=True,
                                            eps=float("nan"))),
    ("LayerNorm-eps-negative", lambda L: L.nn.LayerNorm(5, eps=-1.0)),
    ("BatchNorm2d-eps-inf", lambda L: L.nn.BatchNorm2d(3, eps=float("inf"))),
    # README: the input must be float16, bfloat16, float32 or float64 (torch's rms_norm takes
    # complex input)
    ("rms-complex", lambda L: L.F.rms_norm(L.a(X.astype("c8")), (5,))),
    # not in the README: torch checks num_channels % num_groups == 0 only, which a negative
    # num_groups passes (-2 divides 4); forward then fails. fastnorm refuses it up front.
    ("GroupNorm-negative-groups", lambda L: L.nn.GroupNorm(-2, 4)),
    # not in the README: torch stores any momentum; a NaN one poisons the running statistics
    ("BatchNorm1d-momentum-nan", lambda L: L.nn.BatchNorm1d(3, momentum=float("nan"))),
]


@pytest.mark.parametrize("case", TORCH_ACCEPTS, ids=[c[0] for c in TORCH_ACCEPTS])
def test_torch_accepts_what_fastnorm_refuses(torch, case):
    _, call = case
    call(Lib(torch))  # no error in torch 2.13
    with pytest.raises((ValueError, TypeError)):
        call(Lib())


def test_mixed_dtype_parameters_accepted_unlike_torch(torch):
    # README: weight/bias/running stats of another float dtype are cast to the input's dtype;
    # torch raises for the same call
    import torch.nn.functional as TF
    x, w = X.astype(np.float64), np.linspace(0.5, 2.0, 5, dtype=np.float32)
    with pytest.raises(RuntimeError):
        TF.layer_norm(torch.from_numpy(x), (5,), torch.from_numpy(w))
    y = F.layer_norm(x, (5,), w)
    want = n_of(TF.layer_norm(torch.from_numpy(x), (5,), torch.from_numpy(w.astype(np.float64))))
    assert y.dtype == np.float64
    assert_close(y, want, np.float64)


@pytest.mark.parametrize("name", ["batch_norm", "instance_norm", "layer_norm", "group_norm",
                                  "rms_norm"])
def test_functional_signatures_are_torchs(torch, name):
    """The compiled ops keep torch's positional parameters (names, order, defaults) and add
    only keyword-only ones (out=, activation=)."""
    import inspect
    ours = inspect.signature(getattr(F, name)).parameters
    theirs = inspect.signature(getattr(torch.nn.functional, name)).parameters
    positional = [(p.name, p.default) for p in ours.values() if p.kind != p.KEYWORD_ONLY]
    assert positional == [(p.name, p.default) for p in theirs.values()]
    assert all(p.kind == p.KEYWORD_ONLY for p in ours.values() if p.name in ("out", "activation"))


def test_reference_on_empty_batches_as_torch(torch):
    """The oracle itself: an empty training batch leaves the running statistics as torch does
    (the reference had set them to NaN), and group_norm of no samples is an empty array (the
    reference had raised)."""
    TF = torch.nn.functional
    for shape in ((0, 2, 4), (3, 2, 0)):
        rm, rv = np.full(2, 0.5), np.full(2, 2.0)
        trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            R.batch_norm(np.zeros(shape), rm, rv, training=True)
        TF.batch_norm(torch.zeros(shape, dtype=torch.float64), trm, trv, training=True)
        np.testing.assert_array_equal(rm, trm.numpy())
        np.testing.assert_array_equal(rv, trv.numpy())
        frm, frv = np.full(2, 0.5), np.full(2, 2.0)
        F.batch_norm(np.zeros(shape), frm, frv, training=True)
        np.testing.assert_array_equal(frm, rm)
        np.testing.assert_array_equal(frv, rv)
    x = np.zeros((0, 4, 3))
    want = TF.group_norm(torch.from_numpy(x), 2).numpy()
    assert R.group_norm(x, 2).shape == want.shape == F.group_norm(x, 2).shape
