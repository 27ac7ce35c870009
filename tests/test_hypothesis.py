"""Property tests with hypothesis.

1. Random shapes (size-1 and empty axes included), memory layouts (axis permutations, negative
   strides, step slicing), dtypes, offsets up to 1e4 and scales, affine or not, running
   statistics or not: every op matches fastnorm.reference (computed in np.longdouble), running
   statistics included; inputs that torch refuses raise ValueError.
2. Garbage arguments to every functional op and every layer constructor (and the layers' forward)
   end in a Python exception or a result that matches the reference; never a crash.

Moderate example counts by default (the file runs in well under a minute); ``--runslow`` adds the
same properties with many more examples.
"""
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st

import fastnorm
import fastnorm.functional as F
from fastnorm import reference as R
from fastnorm._cases import TOL

EXACT = np.longdouble
FAST = settings(max_examples=150, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LONG = settings(FAST, max_examples=2000)
FUZZ = settings(FAST, max_examples=400)  # garbage calls are cheap

# --------------------------------------------------------------------------------------------
# 1. valid calls against the reference


@st.composite
def arrays(draw, min_ndim=2, max_ndim=5, max_size=12000):
    """(x, values): x in a random layout holding `values` (a C-contiguous copy)."""
    ndim = draw(st.integers(min_ndim, max_ndim))
    small = st.sampled_from([0, 1, 1, 2, 3, 4, 5, 6, 7, 9, 16])
    shape = [draw(small) for _ in range(ndim)]
    if ndim and draw(st.integers(0, 5)) == 0:  # now and then one long axis (several blocks)
        shape[draw(st.integers(0, ndim - 1))] = draw(st.sampled_from([33, 257, 4097, 9001]))
    size = math.prod(shape)
    assume(size <= max_size)
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    offset = draw(st.sampled_from([0.0, 1.0, -3.0, 100.0, 1e3, -1e4, 1e4]) |
                  st.floats(-1e4, 1e4, allow_nan=False))
    scale = draw(st.sampled_from([1e-3, 0.1, 1.0, 7.0, 1e3]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = (offset + scale * rng.standard_normal(shape)).astype(dtype)
    # layout: memory order = a permutation of the axes, each axis maybe strided and reversed
    perm = draw(st.permutations(range(ndim)))
    steps = [draw(st.sampled_from([1, 1, 1, 2, 3])) for _ in range(ndim)]
    flips = [draw(st.booleans()) for _ in range(ndim)]
    mem_shape = [max(shape[p] * steps[p], 1) for p in perm]
    big = np.zeros(mem_shape, dtype).transpose(np.argsort(perm))
    x = big[tuple(slice(None, None, s) for s in steps)]
    x = x[tuple(slice(0, n) for n in shape)]
    x = x[tuple(slice(None, None, -1 if f else 1) for f in flips)]
    assert x.shape == tuple(shape)
    if draw(st.integers(0, 9)) == 0:
        x = x.astype(dtype.newbyteorder())
    x[...] = values
    note(f"shape={shape} dtype={dtype} offset={offset} scale={scale} perm={perm} "
         f"steps={steps} flips={flips} strides={x.strides}")
    return x, values


def _check(got, want, dtype, scale, label, cond=0.0):
    """got within TOL * scale of want, plus, elementwise, what the double rounding of a mean
    far from zero costs: a few double ulps of |x| times 1/sqrt(var + eps) (`cond`, which is
    below 1e5 in the issue's examples, where it adds nothing; random data can go far beyond)."""
    assert isinstance(got, np.ndarray), label
    assert got.dtype == np.dtype(dtype).newbyteorder("="), label
    assert got.shape == want.shape, label
    if got.size == 0:
        return
    want = np.asarray(want, EXACT)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{label}: NaN positions differ"
    fin = np.isfinite(want)
    tol = TOL[np.dtype(dtype).newbyteorder("=")] * scale + 8 * 2.0**-53 * np.asarray(cond)
    tol = np.broadcast_to(tol, want.shape)[fin]
    err = np.abs(got[fin].astype(EXACT) - want[fin])
    assert np.all(err <= tol), (
        f"{label}: max abs error {float(err.max()):.3g}, worst excess "
        f"{float((err - tol).max()):.3g} over the tolerance")


def _cond(v, axes, eps, w=None, mean=None, var=None):
    """max|x| / sqrt(var + eps) per group of the reduction over `axes` (times max|weight|),
    broadcast to v's shape; mean/var given for eval-mode statistics."""
    v = np.asarray(v, np.float64)
    if v.size == 0:
        return 0.0
    if var is None:
        var = v.var(axis=axes, keepdims=True)
    big = float(np.abs(v).max()) + (0.0 if mean is None else float(np.abs(mean).max()))
    wm = 1.0 if w is None else max(1.0, float(np.abs(w).max(initial=0.0)))
    return np.broadcast_to(big * wm / np.sqrt(var + eps), v.shape)


def _stats_close(got, want, dtype, label):
    """Running statistics: float32 storage rounding, or double arithmetic (statistics of data
    whose |mean| / std is up to 1e7 lose a few digits of the variance in double)."""
    want = np.asarray(want, EXACT)
    rtol = 1e-6 if np.dtype(dtype).newbyteorder("=") == np.float32 else 1e-8
    err = np.abs(got.astype(EXACT) - want)
    ok = err <= rtol * np.abs(want) + 1e-30
    assert ok.all(), f"{label}: {got} vs {want}"


@st.composite
def params(draw, n, dtype, lo=-2.0, hi=2.0):
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).uniform(lo, hi, n).astype(dtype)


@st.composite
def nc_case(draw):
    x, v = draw(arrays(2, 5))
    C = x.shape[1]
    affine = draw(st.booleans())
    w = draw(params(C, x.dtype)) if affine else None
    b = draw(params(C, x.dtype)) if affine and draw(st.booleans()) else None
    eps = draw(st.sampled_from([1e-5, 1e-3, 1e-8, 0.5]))
    return x, v, w, b, eps


def _magnitude(want_plain, w):
    """Size of the largest output, for the tolerance: outputs normalized to O(1) (or larger,
    for eval-mode statistics far from the data), times the weight."""
    m = np.abs(np.asarray(want_plain, EXACT))
    m = float(m[np.isfinite(m)].max(initial=0.0))
    wm = 1.0 if w is None else max(1.0, float(np.abs(w).max(initial=0.0)))
    return 2.0 * max(1.0, m) * wm + (0.0 if w is None else 2.0)


def _bn_like(data, training_op):
    x, v, w, b, eps = data.draw(nc_case())
    C = x.shape[1]
    dt = x.dtype.newbyteorder("=")
    spatial = math.prod(x.shape[2:])
    momentum = data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    track = data.draw(st.booleans())
    stat_dt = data.draw(st.sampled_from([dt, np.dtype(np.float64)]))
    rm = data.draw(params(C, stat_dt)) if track else None
    rv = data.draw(params(C, stat_dt, 0.1, 3.0)) if track else None
    rm0 = None if rm is None else rm.copy()
    rv0 = None if rv is None else rv.copy()
    if training_op == "bn":
        bad = x.shape[0] * spatial == 1
        call = lambda: F.batch_norm(x, rm, rv, w, b, True, momentum, eps)
        ref = lambda rm_, rv_, w_, b_: R.batch_norm(v, rm_, rv_, w_, b_, True, momentum, eps,
                                                    dtype=EXACT)
    else:
        bad = spatial == 1
        call = lambda: F.instance_norm(x, rm, rv, w, b, True, momentum, eps)
        ref = lambda rm_, rv_, w_, b_: R.instance_norm(v, rm_, rv_, w_, b_, True, momentum, eps,
                                                       dtype=EXACT)
    if bad:
        with pytest.raises(ValueError):
            call()
        if track:
            assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
        return
    y = call()
    if x.size == 0:
        assert y.shape == x.shape and y.dtype == dt
        if track:
            assert np.all(np.isfinite(rm)) and np.all(np.isfinite(rv))
        return
    erm = None if rm0 is None else rm0.astype(EXACT)
    erv = None if rv0 is None else rv0.astype(EXACT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = ref(erm, erv, w, b)
        plain = ref(None, None, None, None)
    axes = (0,) + tuple(range(2, x.ndim)) if training_op == "bn" else tuple(range(2, x.ndim))
    _check(y, want, dt, _magnitude(plain, w), training_op, _cond(v, axes, eps, w))
    if track:
        _stats_close(rm, erm, stat_dt, "running_mean")
        _stats_close(rv, erv, stat_dt, "running_var")


def _batch_norm_train(data):
    _bn_like(data, "bn")


def _instance_norm_train(data):
    _bn_like(data, "in")


def _eval(data, op):
    x, v, w, b, eps = data.draw(nc_case())
    C = x.shape[1]
    stat_dt = data.draw(st.sampled_from([x.dtype.newbyteorder("="), np.dtype(np.float64)]))
    # running statistics near the data's, or anywhere
    near = data.draw(st.booleans())
    loc = float(np.mean(v)) if (near and v.size) else 0.0
    sc = float(np.std(v)) ** 2 if (near and v.size) else 1.0
    rm = (loc + data.draw(params(C, np.float64))).astype(stat_dt)
    rv = (sc * data.draw(params(C, np.float64, 0.1, 3.0))).astype(stat_dt)
    if op == "bn":
        y = F.batch_norm(x, rm, rv, w, b, False, 0.1, eps)
    else:
        y = F.instance_norm(x, rm, rv, w, b, False, 0.1, eps)
    want = R.batch_norm(v, rm, rv, w, b, False, eps=eps, dtype=EXACT)
    plain = R.batch_norm(v, rm, rv, None, None, False, eps=eps, dtype=EXACT)
    bshape = (1, C) + (1,) * (x.ndim - 2)
    cond = _cond(v, None, eps, w, mean=rm, var=rv.astype(np.float64).reshape(bshape))
    _check(y, want, x.dtype, _magnitude(plain, w), f"{op}_eval", cond)


def _batch_norm_eval(data):
    _eval(data, "bn")


def _instance_norm_eval(data):
    _eval(data, "in")


def _group_norm(data):
    x, v, w, b, eps = data.draw(nc_case())
    C = x.shape[1]
    divisors = [g for g in range(1, C + 1) if C % g == 0] or [1, 2, 3]
    G = data.draw(st.sampled_from(divisors))
    spatial = math.prod(x.shape[2:])
    if (x.shape[0] * C // G) * spatial == 1:
        with pytest.raises(ValueError):
            F.group_norm(x, G, w, b, eps)
        return
    y = F.group_norm(x, G, w, b, eps)
    if x.size == 0:
        assert y.shape == x.shape
        return
    cond = np.reshape(_cond(v.reshape(x.shape[0], G, -1), (2,), eps, w), x.shape)
    _check(y, R.group_norm(v, G, w, b, eps, dtype=EXACT), x.dtype,
           _magnitude(R.group_norm(v, G, eps=eps, dtype=EXACT), w), "group_norm", cond)


def _row_case(data):
    x, v = data.draw(arrays(1, 4))
    k = data.draw(st.integers(1, x.ndim))
    ns = x.shape[x.ndim - k:]
    as_int = k == 1 and data.draw(st.booleans())
    n = math.prod(ns)
    w = data.draw(params(n, x.dtype)).reshape(ns) if data.draw(st.booleans()) else None
    b = data.draw(params(n, x.dtype)).reshape(ns) if data.draw(st.booleans()) else None
    return x, v, (ns[0] if as_int else list(ns) if data.draw(st.booleans()) else ns), w, b


def _layer_norm(data):
    x, v, ns, w, b = _row_case(data)
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 1e-8, 0.5]))
    y = F.layer_norm(x, ns, w, b, eps)
    if x.size == 0:
        assert y.shape == x.shape
        return
    k = 1 if np.ndim(ns) == 0 else len(ns)
    cond = _cond(v, tuple(range(x.ndim - k, x.ndim)), eps, w)
    _check(y, R.layer_norm(v, ns, w, b, eps, dtype=EXACT), x.dtype,
           _magnitude(R.layer_norm(v, ns, eps=eps, dtype=EXACT), w) + (0 if b is None else 2),
           "layer_norm", cond)


def _rms_norm(data):
    x, v, ns, w, _ = _row_case(data)
    eps = data.draw(st.sampled_from([None, 1e-5, 1e-8, 0.5]))
    y = F.rms_norm(x, ns, w, eps)
    if x.size == 0:
        assert y.shape == x.shape
        return
    e = np.finfo(x.dtype).eps if eps is None else eps
    _check(y, R.rms_norm(v, ns, w, e, dtype=EXACT), x.dtype,
           _magnitude(R.rms_norm(v, ns, eps=e, dtype=EXACT), w), "rms_norm")


PROPS = [_batch_norm_train, _batch_norm_eval, _instance_norm_train, _instance_norm_eval,
         _group_norm, _layer_norm, _rms_norm]


@pytest.mark.parametrize("prop", PROPS, ids=[p.__name__.strip("_") for p in PROPS])
@FAST
@given(data=st.data())
def test_matches_reference(prop, data):
    prop(data)


@pytest.mark.slow
@pytest.mark.parametrize("prop", PROPS, ids=[p.__name__.strip("_") for p in PROPS])
@LONG
@given(data=st.data())
def test_matches_reference_long(prop, data):
    prop(data)


# --------------------------------------------------------------------------------------------
# 2. garbage arguments: an exception or a correct result, never a crash

GARBAGE = st.one_of(
    st.none(),
    st.text(max_size=4),
    st.sampled_from(["1e-5", "0.1", "nan", "3", b"1"]),
    st.booleans(),
    st.integers(-2**70, 2**70),
    st.sampled_from([0, 1, -1, 2, 3, 2**31, 2**31 - 1, 2**62, 2**63, -2**63, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([np.nan, np.inf, -np.inf, -1e-5, -1.0, 0.0, 1e300, 5e-324]),
    st.complex_numbers(max_magnitude=10),
    st.just(object()),
    st.just([1.0, 2.0, 3.0, 4.0]),
    st.just([[1.0, 2.0], [3.0, 4.0]]),
    st.just([[1.0, 2.0], [3.0]]),
    st.just((4,)),
    st.just((2, 2)),
    st.just(()),
    st.just([]),
    st.just((-1,)),
    st.just((2**62, 2**62)),
    st.just(("a", 2)),
    st.just((2.0,)),
    st.just((True,)),
    st.just(slice(1)),
    st.just({"a": 1}),
    st.sampled_from([np.float32(1e-5), np.int64(4), np.bool_(True), np.float16(0.5),
                     np.complex64(1), np.longdouble(1e-5)]),
    st.sampled_from([np.array(2.0), np.array(4), np.array(np.nan), np.array("x"),
                     np.array(None, dtype=object), np.array([]), np.zeros((0, 4)),
                     np.ones(4, np.int32), np.ones(4, np.complex64), np.ones(4, bool),
                     np.ones(4, object), np.array(["a"] * 4), np.ones(4, np.float16),
                     np.ones(4, np.longdouble), np.ones((4, 1)), np.ones((2, 4, 3), np.int64),
                     np.ones((2, 4, 3), np.complex128), np.ones((2, 4, 3), bool),
                     np.ones((2, 4, 3), object), np.full((2, 4, 3), np.nan, np.float32),
                     np.ones((2, 4, 3), np.float16), np.ones((2, 4, 3), ">f8"),
                     np.ones((2, 4, 3), np.float32)[:, ::-1], np.ones(4, np.float32)[::-1],
                     np.zeros(3, [("a", "f4")]), np.ones((2, 4, 3, 1, 1), np.float32)]),
)



C_ = 4  # channels of the valid inputs


def _valid_inputs(dtype):
    x = np.random.default_rng(0).standard_normal((2, C_, 3)).astype(dtype) * 2 + 1
    return [x, np.asfortranarray(x), x[::-1, :, ::-1], x.astype(np.dtype(dtype).newbyteorder()),
            x.tolist(), x[:, :, :1], x[:1], np.zeros((0, C_, 3), dtype), x.reshape(2, C_, 3, 1)]


def _vecs(n):
    return [None, np.full(n, 1.5, np.float32), np.linspace(-1, 2, n), [0.5] * n,
            np.arange(n, dtype=np.int32), np.ones(n, bool), np.full(n, 2.0)[::-1]]


def _spec(op, dtype):
    """{argument: strategy of valid values}, in the function's positional order."""
    xs = st.sampled_from(_valid_inputs(dtype))
    eps = st.sampled_from([1e-5, 0.5, 1, np.float32(1e-3), np.float64(0.1), 1e-300])
    if op in ("batch_norm", "instance_norm"):
        return {"input": xs,
                "running_mean": st.sampled_from([np.zeros(C_, dtype), np.zeros(C_),
                                                 np.linspace(-1, 1, C_, dtype=np.float32)]),
                "running_var": st.sampled_from([np.ones(C_, dtype), np.full(C_, 2.0)]),
                "weight": st.sampled_from(_vecs(C_)), "bias": st.sampled_from(_vecs(C_)),
                "flag": st.sampled_from([True, False, 1, 0, np.bool_(True)]),
                "momentum": st.sampled_from([0.1, 0.0, 1, np.float32(0.5)]),
                "eps": eps}
    if op in ("layer_norm", "rms_norm"):
        spec = {"input": xs, "normalized_shape": st.sampled_from([3, (3,), [3], np.int64(3)]),
                "weight": st.sampled_from(_vecs(3))}
        if op == "layer_norm":
            spec["bias"] = st.sampled_from(_vecs(3))
        spec["eps"] = eps | st.none() if op == "rms_norm" else eps
        return spec
    return {"input": xs, "num_groups": st.sampled_from([1, 2, 4, np.int32(2)]),
            "weight": st.sampled_from(_vecs(C_)), "bias": st.sampled_from(_vecs(C_)), "eps": eps}


@st.composite
def calls(draw, op, dtype):
    """Arguments for op: valid values, with 0 to 3 of them replaced by garbage."""
    spec = _spec(op, dtype)
    names = list(spec) + ["out"]
    n_bad = draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3]))
    bad = draw(st.lists(st.sampled_from(names), min_size=n_bad, max_size=n_bad, unique=True))
    args = {}
    for name, valid in spec.items():
        args[name] = draw(GARBAGE) if name in bad else draw(valid)
    x = args["input"]
    if "out" in bad:
        args["out"] = draw(GARBAGE)
    else:
        xa, _ = _try(lambda: np.asarray(x))
        kinds = [None] + (["empty"] if xa is not None else []) + \
            (["same"] if isinstance(x, np.ndarray) else [])
        args["out"] = draw(st.sampled_from(kinds))
        if args["out"] == "empty":
            args["out"] = np.empty(xa.shape, xa.dtype.newbyteorder("=")) \
                if xa.dtype.kind == "f" else np.empty(xa.shape)
        elif args["out"] == "same":
            args["out"] = x
    note(f"{op} garbage={bad}")
    return args


def _deep(v):
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, list):
        return [_deep(e) for e in v]
    return v


# fresh copies: a garbage array may be written to (as out=, or as running statistics)
GARBAGE = GARBAGE.map(_deep)


def _reference_or_none(fn, args):
    """The reference's result for the same arguments, or None where it cannot compute one."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            r = np.asarray(fn(*args))
        return r if r.dtype.kind == "f" else None
    except Exception:  # noqa: BLE001
        return None


def _sane(y, x):
    assert isinstance(y, np.ndarray)
    assert y.dtype in (np.float16, np.float32, np.float64)  # garbage holds float16 arrays too
    assert y.shape == np.shape(x)


def _try(call):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # garbage may warn (overflow in casts, dtype aliases)
            return call(), None
    except Exception as e:  # noqa: BLE001 - any Python exception is an acceptable outcome
        return None, e


def _compare(y, want, label):
    if want is None or want.shape != y.shape or y.size == 0:
        return
    assert np.array_equal(np.isnan(y), np.isnan(want)), f"{label}: NaN positions differ"
    fin = np.isfinite(want)
    if not fin.any():
        return
    scale = max(1.0, float(np.abs(want[fin]).max()))
    err = float(np.max(np.abs(y[fin].astype(np.float64) - want[fin])))
    assert err <= 1e-4 * scale, f"{label}: accepted, but off by {err:.3g}"


OPS = ["batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm"]


def _garbage_functional(data, dtype):
    op = data.draw(st.sampled_from(OPS))
    args = data.draw(calls(op, dtype))
    out = args.pop("out")
    pos = list(args.values())
    want = _reference_or_none(getattr(R, op), [_deep(a) for a in pos])
    snap = [_deep(a) for a in pos]
    y, exc = _try(lambda: getattr(F, op)(*pos, out=out))
    note(f"{op}: {exc!r}")
    event(f"{op}: {type(exc).__name__ if exc else 'result'}")
    if exc is not None:
        if op in ("batch_norm", "instance_norm"):  # refused: running statistics untouched
            for i in (1, 2):
                if isinstance(pos[i], np.ndarray) and pos[i].dtype.kind == "f":
                    assert np.array_equal(pos[i], snap[i], equal_nan=True), "stats changed"
        return
    if out is not None:
        assert y is out
    _sane(y, snap[0])
    _compare(y, want, op)


@FUZZ
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_garbage_functional(data, dtype):
    _garbage_functional(data, dtype)


@pytest.mark.slow
@LONG
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_garbage_functional_long(data, dtype):
    _garbage_functional(data, dtype)


CONSTRUCTORS = {
    "BatchNorm1d": (fastnorm.BatchNorm1d, ["num_features", "eps", "momentum", "affine",
                                           "track_running_stats", "device", "dtype"]),
    "BatchNorm2d": (fastnorm.BatchNorm2d, ["num_features", "eps", "momentum", "affine",
                                           "track_running_stats", "device", "dtype"]),
    "BatchNorm3d": (fastnorm.BatchNorm3d, ["num_features", "eps", "momentum", "affine",
                                           "track_running_stats", "device", "dtype"]),
    "InstanceNorm1d": (fastnorm.InstanceNorm1d, ["num_features", "eps", "momentum", "affine",
                                                 "track_running_stats", "device", "dtype"]),
    "InstanceNorm2d": (fastnorm.InstanceNorm2d, ["num_features", "eps", "momentum", "affine",
                                                 "track_running_stats", "device", "dtype"]),
    "InstanceNorm3d": (fastnorm.InstanceNorm3d, ["num_features", "eps", "momentum", "affine",
                                                 "track_running_stats", "device", "dtype"]),
    "LayerNorm": (fastnorm.LayerNorm, ["normalized_shape", "eps", "elementwise_affine", "bias",
                                       "device", "dtype"]),
    "GroupNorm": (fastnorm.GroupNorm, ["num_groups", "num_channels", "eps", "affine", "device",
                                       "dtype"]),
    "RMSNorm": (fastnorm.RMSNorm, ["normalized_shape", "eps", "elementwise_affine", "device",
                                   "dtype"]),
}
VALID = {"num_features": st.sampled_from([4, np.int64(4)]),
         "normalized_shape": st.sampled_from([3, (3,), [3], (4, 3)]),
         "num_groups": st.sampled_from([1, 2, 4]), "num_channels": st.just(4),
         "eps": st.sampled_from([1e-5, 0.1, 0, None]), "momentum": st.sampled_from([0.1, None, 1]),
         "affine": st.booleans(), "track_running_stats": st.booleans(),
         "elementwise_affine": st.booleans(), "bias": st.booleans(),
         "device": st.sampled_from([None, "cpu"]),
         "dtype": st.sampled_from([None, np.float32, np.float64, "float64"])}
INPUTS = {"BatchNorm1d": (2, 4, 3), "BatchNorm2d": (2, 4, 3, 3), "BatchNorm3d": (2, 4, 2, 2, 3),
          "InstanceNorm1d": (2, 4, 3), "InstanceNorm2d": (2, 4, 3, 3),
          "InstanceNorm3d": (2, 4, 2, 2, 3), "LayerNorm": (2, 4, 3), "GroupNorm": (2, 4, 3),
          "RMSNorm": (2, 4, 3)}
SIZES = st.sampled_from([0, 1, 2, 3, -1, -2**63, 2**50, 2**62, 2**63, 10**30, 4.0, "4", None,
                         True, (2**30, 2**30), (3, -1), (0,), [3], (2, 3), (2**50,)])
BAD = {"dtype": st.sampled_from([np.int32, np.float16, "torch.float64", complex, "nope", object,
                                 np.longdouble]),
       "device": st.sampled_from(["cuda", "meta", "cpu:0", 0])}


def _elements(v):
    """How many elements a layer would allocate for size argument v (None: not a size)."""
    if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iu":
        v = int(v)
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return abs(int(v))
    if isinstance(v, (tuple, list)):
        sizes = [_elements(e) for e in v]
        return math.prod(sizes) if sizes and None not in sizes else None
    return None


def _no_big_allocation(v):
    """Sizes whose parameters could really be allocated, but slowly and with gigabytes of memory
    (up to all of it: 2**31 elements fill 8 GB; under ASan even terabyte requests are tried),
    are left out; small ones and impossible ones (petabytes and more: MemoryError, or NumPy's
    "array is too big") stay."""
    n = _elements(v)
    return n is None or n <= 2**20 or n >= 2**50


def _garbage_layers(data, name):
    cls, argnames = CONSTRUCTORS[name]
    n_bad = data.draw(st.sampled_from([0, 0, 1, 1, 1, 2]))
    bad = data.draw(st.lists(st.sampled_from(argnames), min_size=n_bad, max_size=n_bad,
                             unique=True))
    kw = {}
    for a in argnames:
        if a in bad:
            sizes = a in ("num_features", "normalized_shape", "num_groups", "num_channels")
            kw[a] = data.draw(st.one_of(SIZES if sizes else BAD.get(a, GARBAGE), GARBAGE)
                              .filter(_no_big_allocation))
        elif data.draw(st.booleans()):
            kw[a] = data.draw(VALID[a])
    m, exc = _try(lambda: cls(**kw))
    note(f"{name}({kw}) -> {exc!r}")
    event(f"constructor: {type(exc).__name__ if exc else 'built'}")
    if exc is not None:
        return
    repr(m)
    assert all(isinstance(v, np.ndarray) for v in m.state_dict().values())
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    shape = INPUTS[name]
    if (name in ("LayerNorm", "RMSNorm") and math.prod(m.normalized_shape) <= 10000
            and data.draw(st.booleans())):
        shape = (2,) + tuple(m.normalized_shape)  # the layer's own shape, whatever it is
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    if data.draw(st.integers(0, 3)) == 0:
        x = data.draw(GARBAGE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # InstanceNorm's num_features mismatch warning
        for mode in ("train", "eval", "train"):
            getattr(m, mode)()
            before = {k: v.copy() for k, v in m.state_dict().items()}
            y, exc = _try(lambda: m(x))
            note(f"{mode}: {exc!r}")
            event(f"forward: {type(exc).__name__ if exc else 'result'}")
            if exc is None:
                _sane(y, x)
            else:  # a rejected call leaves the state as it was
                after = m.state_dict()
                for k, v in before.items():
                    assert np.array_equal(after[k], v, equal_nan=True), f"{name}.{k} changed"
    m.load_state_dict(m.state_dict())


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(CONSTRUCTORS)))
def test_garbage_layers(data, name):
    _garbage_layers(data, name)


@pytest.mark.slow
@LONG
@given(data=st.data(), name=st.sampled_from(sorted(CONSTRUCTORS)))
def test_garbage_layers_long(data, name):
    _garbage_layers(data, name)


# --------------------------------------------------------------------------------------------
# explicit cases that the properties above only reach by luck


@pytest.mark.parametrize("op", ["batch_norm", "instance_norm", "layer_norm", "group_norm",
                                "rms_norm"])
@pytest.mark.parametrize("eps", ["1e-5", "0.1", b"1", "1"])
def test_numbers_as_strings_are_refused(op, eps):
    """eps (and momentum) must be real numbers: torch raises TypeError for strings, and so do
    fastnorm's layer constructors; float("1e-5") working is no reason to accept one."""
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    calls = {
        "batch_norm": lambda **k: F.batch_norm(x, rm, rv, training=True, **k),
        "instance_norm": lambda **k: F.instance_norm(x, rm, rv, **k),
        "layer_norm": lambda **k: F.layer_norm(x, 3, **k),
        "group_norm": lambda **k: F.group_norm(x, 2, **k),
        "rms_norm": lambda **k: F.rms_norm(x, 3, **k),
    }
    with pytest.raises(TypeError):
        calls[op](eps=eps)
    if op in ("batch_norm", "instance_norm"):
        with pytest.raises(TypeError):
            calls[op](momentum=eps)
    assert np.all(rm == 0) and np.all(rv == 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_d_and_one_d_inputs(dtype):
    for x in (np.array(1.0, dtype), np.ones(4, dtype), dtype(3.0)):
        for call in (lambda: F.batch_norm(x, None, None, training=True),
                     lambda: F.instance_norm(x), lambda: F.group_norm(x, 1),
                     lambda: F.layer_norm(x, ()), lambda: F.rms_norm(x, ())):
            with pytest.raises((ValueError, TypeError)):
                call()
    y = F.layer_norm(np.arange(4, dtype=dtype), 4)
    _check(y, R.layer_norm(np.arange(4.0), 4, dtype=EXACT), dtype, 2, "1-d layer_norm")
