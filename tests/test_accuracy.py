"""Numerical accuracy against the exact normalization of the same input.

fastnorm's float32 output is compared with the normalization of the same float32 values computed
in np.longdouble (x87 80-bit on x86-64; at least float64 elsewhere), for data whose |mean|/std
reaches 1e5: max abs error <= 5e-5 in float32 and <= 1e-9 in float64 (fastnorm._cases.TOL), for
every op and layout.
Also: constant input normalizes to exactly 0 (exactly the bias with an affine step), one long row
of 2**22 + 3 values with an offset stays accurate (no float32 accumulation), and the running
statistics written by a training step are the correctly rounded truth.
"""
import numpy as np
import pytest

import fastnorm.functional as F
from fastnorm import _kernels
from fastnorm import reference as R
from fastnorm._cases import TOL

EXACT = np.longdouble
TOL32 = TOL[np.dtype(np.float32)]
DTYPES = [np.float32, np.float64]
# (mean, std): |mean| / std up to 1e5
DATA = [(1e5, 1.0), (100.0, 1e-3), (-1e4, 0.1), (0.0, 1.0)]
LAYOUTS = ["C", "channels_last", "fortran"]


def _data(shape, dtype, mean, std, layout="C", seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(shape)
    x = (mean + std * z).astype(dtype)
    if layout == "channels_last":
        perm = (0,) + tuple(range(2, len(shape))) + (1,)
        x = np.ascontiguousarray(x.transpose(perm)).transpose(np.argsort(perm))
    elif layout == "fortran":
        x = np.asfortranarray(x)
    return x


def _err(got, want):
    assert got.shape == want.shape
    assert np.all(np.isfinite(got)), "non-finite output"
    return float(np.max(np.abs(got.astype(EXACT) - want))) if got.size else 0.0


def _true_channel_stats(x):
    """Exact per-channel mean and biased variance of x (N, C, *)."""
    axes = (0,) + tuple(range(2, x.ndim))
    xl = x.astype(EXACT)
    m = xl.mean(axis=axes)
    v = ((xl - m.reshape((1, -1) + (1,) * (x.ndim - 2))) ** 2).mean(axis=axes)
    return m, v


def _ops(x, eps):
    """{name: (fastnorm result, exact result)}; no affine: outputs are O(1)."""
    nd = x.ndim
    tm, tv = _true_channel_stats(x)
    rm64, rv64 = tm.astype(np.float64), tv.astype(np.float64)
    rm, rv = tm.astype(x.dtype), tv.astype(x.dtype)
    out = {
        "bn_train": (F.batch_norm(x, None, None, training=True, eps=eps),
                     R.batch_norm(x, None, None, training=True, eps=eps, dtype=EXACT)),
        # eval with the true statistics, given in float64 and in the input's dtype: the exact
        # result is the normalization by the values given
        "bn_eval_f64_stats": (F.batch_norm(x, rm64, rv64, eps=eps),
                              R.batch_norm(x, rm64, rv64, eps=eps, dtype=EXACT)),
        "bn_eval_own_dtype_stats": (F.batch_norm(x, rm, rv, eps=eps),
                                    R.batch_norm(x, rm, rv, eps=eps, dtype=EXACT)),
        "in": (F.instance_norm(x, eps=eps), R.instance_norm(x, eps=eps, dtype=EXACT)),
        "gn": (F.group_norm(x, 3, eps=eps), R.group_norm(x, 3, eps=eps, dtype=EXACT)),
        "gn1": (F.group_norm(x, 1, eps=eps), R.group_norm(x, 1, eps=eps, dtype=EXACT)),
        "ln": (F.layer_norm(x, x.shape[-1], eps=eps),
               R.layer_norm(x, x.shape[-1], eps=eps, dtype=EXACT)),
        "ln_multi": (F.layer_norm(x, x.shape[1:], eps=eps),
                     R.layer_norm(x, x.shape[1:], eps=eps, dtype=EXACT)),
        "rms": (F.rms_norm(x, x.shape[-1]), R.rms_norm(x, x.shape[-1], dtype=EXACT)),
        "rms_multi": (F.rms_norm(x, x.shape[nd - 2:], eps=eps),
                      R.rms_norm(x, x.shape[nd - 2:], eps=eps, dtype=EXACT)),
    }
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mean,std", DATA, ids=[f"mean{m:g}-std{s:g}" for m, s in DATA])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(6, 12, 33, 35), (2, 3, 9001), (2, 3, 29, 520)], ids=str)
def test_max_error_far_from_zero(shape, dtype, mean, std, layout):
    x = _data(shape, dtype, mean, std, layout, seed=len(shape))
    eps = 1e-5 * std * std  # the same relative eps for every scale: outputs are O(1)
    ops = _ops(x, eps)
    for name, (got, _) in ops.items():
        assert got.dtype == dtype, name
    errs = {name: _err(got, want) for name, (got, want) in ops.items()}
    bad = {k: v for k, v in errs.items() if not v <= TOL[np.dtype(dtype)]}
    assert not bad, f"max abs error above {TOL[np.dtype(dtype)]:g}: {bad}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_affine_outputs_accurate(dtype):
    """With weight and bias: the error stays within the tolerance scaled by |weight|."""
    shape = (5, 6, 17, 19)
    x = _data(shape, dtype, 1e5, 1.0, seed=3)
    rng = np.random.default_rng(4)
    w, b = rng.uniform(0.5, 2, 6).astype(dtype), rng.uniform(-1, 1, 6).astype(dtype)
    lw, lb = rng.uniform(0.5, 2, 19).astype(dtype), rng.uniform(-1, 1, 19).astype(dtype)
    tm, tv = _true_channel_stats(x)
    rm, rv = tm.astype(np.float64), tv.astype(np.float64)
    pairs = {
        "bn_train": (F.batch_norm(x, None, None, w, b, True),
                     R.batch_norm(x, None, None, w, b, True, dtype=EXACT)),
        "bn_eval": (F.batch_norm(x, rm, rv, w, b), R.batch_norm(x, rm, rv, w, b, dtype=EXACT)),
        "in": (F.instance_norm(x, weight=w, bias=b),
               R.instance_norm(x, weight=w, bias=b, dtype=EXACT)),
        "gn": (F.group_norm(x, 2, w, b), R.group_norm(x, 2, w, b, dtype=EXACT)),
        "ln": (F.layer_norm(x, 19, lw, lb), R.layer_norm(x, 19, lw, lb, dtype=EXACT)),
        "rms": (F.rms_norm(x, 19, lw), R.rms_norm(x, 19, lw, dtype=EXACT)),
    }
    for name, (got, want) in pairs.items():
        assert _err(got, want) <= 2 * TOL[np.dtype(dtype)], name


# --------------------------------------------------------------------------------------------
# centred and far-from-zero channels side by side: a channel within 4 std of zero is normalized
# as x * a + c (no shift), one far from zero as (x - m) * a + c; channels-last calls whose
# shifts are all 0 take the loop that reads two coefficients per element, the others three


def _offsets(C, pattern):
    """Per-channel means, in stds: 1e4 for the channels `pattern` names, else 0."""
    far = np.zeros(C, bool)
    if pattern == "alternate_blocks":
        far[(np.arange(C) // 128) % 2 == 1] = True
    elif pattern == "first":
        far[0] = True
    elif pattern == "middle":
        far[C // 2] = True
    elif pattern == "last":
        far[-1] = True
    elif pattern == "all_but_one":
        far[:] = True
        far[C // 3] = False
    return np.where(far, 1e4, 0.0)


PATTERNS = ["alternate_blocks", "first", "middle", "last", "all_but_one"]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("C", [300, 512])
def test_centred_and_far_channels_together(C, dtype, pattern):
    rng = np.random.default_rng(C)
    shape = (2, C, 7, 9)
    x64 = _offsets(C, pattern).reshape(1, C, 1, 1) + rng.standard_normal(shape)
    w, b = rng.uniform(0.5, 2, C).astype(dtype), rng.uniform(-1, 1, C).astype(dtype)
    xc = x64.astype(dtype)
    xl = np.ascontiguousarray(xc.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    tm, tv = _true_channel_stats(xc)
    rm, rv = tm.astype(np.float64), tv.astype(np.float64)
    tol = TOL[np.dtype(dtype)]
    for label, x in (("nchw", xc), ("channels_last", xl)):
        pairs = {
            "bn_train": (F.batch_norm(x, None, None, w, b, True),
                         R.batch_norm(x, None, None, w, b, True, dtype=EXACT)),
            "bn_eval": (F.batch_norm(x, rm, rv, w, b), R.batch_norm(x, rm, rv, w, b, dtype=EXACT)),
            "bn_eval_relu": (F.batch_norm(x, rm, rv, w, b, activation="relu"),
                             np.maximum(R.batch_norm(x, rm, rv, w, b, dtype=EXACT), 0)),
            "in": (F.instance_norm(x), R.instance_norm(x, dtype=EXACT)),
            "gn": (F.group_norm(x, C // 4, w, b), R.group_norm(x, C // 4, w, b, dtype=EXACT)),
        }
        errs = {k: _err(got, want) for k, (got, want) in pairs.items()}
        bad = {k: v for k, v in errs.items() if not v <= 2 * tol}
        assert not bad, f"{label}: max abs error above {2 * tol:g}: {bad}"
    # eval BatchNorm has the same coefficients in both layouts: the same bits
    for act in (None, "relu"):
        a = F.batch_norm(xc, rm, rv, w, b, activation=act)
        c = F.batch_norm(xl, rm, rv, w, b, activation=act)
        assert np.array_equal(a, c), f"eval BatchNorm ({act}): the layouts' bits differ"


@pytest.mark.parametrize("layout", ["C", "channels_last"])
@pytest.mark.parametrize("ratio", [0.0, 1.0, 3.9, 4.1, 30.0])
def test_unshifted_normalization_costs_little(ratio, layout):
    """Within 4 std of zero a channel is normalized as x * a + c, without the shift: about 8
    units in the last place of the output's scale more at most, so float32 outputs of O(1)
    stay within 2e-6 of exact at |mean| / std up to 4 (and beyond, shifted)."""
    x = _data((4, 64, 24, 24), np.float32, ratio, 1.0, layout, seed=11)
    tm, tv = _true_channel_stats(x)
    rm, rv = tm.astype(np.float64), tv.astype(np.float64)
    pairs = {"bn_train": (F.batch_norm(x, None, None, training=True),
                          R.batch_norm(x, None, None, training=True, dtype=EXACT)),
             "bn_eval": (F.batch_norm(x, rm, rv), R.batch_norm(x, rm, rv, dtype=EXACT)),
             "in": (F.instance_norm(x), R.instance_norm(x, dtype=EXACT)),
             "gn": (F.group_norm(x, 8), R.group_norm(x, 8, dtype=EXACT)),
             "ln": (F.layer_norm(x, (64, 24, 24)), R.layer_norm(x, (64, 24, 24), dtype=EXACT))}
    errs = {k: _err(got, want) for k, (got, want) in pairs.items()}
    assert max(errs.values()) <= 2e-6, errs


# --------------------------------------------------------------------------------------------
# constant input


def _constant_layouts(shape, dtype, value):
    x = np.full(shape, value, dtype)
    yield "C", x
    yield "fortran", np.asfortranarray(x)
    perm = (0,) + tuple(range(2, len(shape))) + (1,)
    yield "channels_last", np.ascontiguousarray(x.transpose(perm)).transpose(np.argsort(perm))
    yield "negative", x[::-1, :, ::-1]


@pytest.mark.parametrize("value", [0.0, 1234.0, 40000.0, 1e7, -3.5e5, 0.1])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(3, 6, 7, 9), (2, 6, 5000), (4, 6, 70, 80)], ids=str)
def test_constant_input_is_exactly_zero(shape, dtype, value):
    C, L = shape[1], shape[-1]
    rng = np.random.default_rng(0)
    w, b = rng.uniform(0.5, 2, C).astype(dtype), rng.uniform(-2, 2, C).astype(dtype)
    lw, lb = rng.uniform(0.5, 2, L).astype(dtype), rng.uniform(-2, 2, L).astype(dtype)
    v = dtype(value)
    for label, x in _constant_layouts(shape, dtype, value):
        plain = {
            "bn_train": F.batch_norm(x, None, None, training=True),
            "bn_eval": F.batch_norm(x, np.full(C, v), np.ones(C, dtype)),
            "in": F.instance_norm(x),
            "gn": F.group_norm(x, 3),
            "gn1": F.group_norm(x, 1),
            "ln": F.layer_norm(x, L),
            "ln_multi": F.layer_norm(x, shape[1:]),
        }
        for name, y in plain.items():
            assert y.dtype == dtype and np.all(y == 0), \
                f"{name} {label}: max |y| = {np.abs(y).max()}"
        # with the affine step: exactly the bias
        bshape = (1, C) + (1,) * (len(shape) - 2)
        affine = {
            "bn_train": F.batch_norm(x, None, None, w, b, training=True),
            "bn_eval": F.batch_norm(x, np.full(C, v), np.ones(C, dtype), w, b),
            "in": F.instance_norm(x, weight=w, bias=b),
            "gn": F.group_norm(x, 3, w, b),
        }
        for name, y in affine.items():
            assert np.array_equal(y, np.broadcast_to(b.reshape(bshape), shape)), \
                f"{name} {label}: not exactly the bias"
        y = F.layer_norm(x, L, lw, lb)
        assert np.array_equal(y, np.broadcast_to(lb, shape)), f"ln {label}: not exactly the bias"


@pytest.mark.parametrize("eps", [1e-300, 1e-100, 1e-80])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_constant_input_with_tiny_eps_is_zero(dtype, eps):
    """1 / sqrt(var + eps) of a constant group can exceed float32's range (eps < ~1e-77), but
    x - mean is exactly 0, so the exact result is exactly 0 (not 0 * inf = NaN)."""
    x = np.full((2, 6, 3, 4), 1234.0, dtype)
    ys = {"in": F.instance_norm(x, eps=eps), "gn": F.group_norm(x, 3, eps=eps),
          "ln": F.layer_norm(x, 4, eps=eps), "ln_multi": F.layer_norm(x, (6, 3, 4), eps=eps),
          "bn_train": F.batch_norm(x, None, None, training=True, eps=eps),
          "bn_eval": F.batch_norm(x, np.full(6, 1234.0), np.zeros(6), eps=eps)}
    for name, y in ys.items():
        assert np.all(y == 0), f"{name}: {np.unique(y)}"


# --------------------------------------------------------------------------------------------
# one long row: no float32 accumulation

LONG = 2**22 + 3


@pytest.mark.parametrize("offset", [1e3, 1e4])
def test_long_row_float32(offset):
    rng = np.random.default_rng(7)
    x = (offset + rng.standard_normal(LONG)).astype(np.float32)
    x1 = x.reshape(1, LONG)
    want = R.layer_norm(x1, LONG)  # float64 is exact enough for float32 data here
    assert _err(F.layer_norm(x1, LONG), want) <= TOL32
    assert _err(F.rms_norm(x1, LONG), R.rms_norm(x1, LONG)) <= TOL32
    x3 = x.reshape(1, 1, LONG)
    assert _err(F.instance_norm(x3), want.reshape(1, 1, LONG)) <= TOL32
    assert _err(F.group_norm(x3, 1), want.reshape(1, 1, LONG)) <= TOL32
    rm, rv = np.zeros(1, np.float32), np.ones(1, np.float32)
    assert _err(F.batch_norm(x3, rm, rv, training=True, momentum=1.0),
                want.reshape(1, 1, LONG)) <= TOL32
    # the running statistics of that row (momentum 1: the batch's own)
    t = x.astype(EXACT)
    m = t.mean()
    v = ((t - m) ** 2).sum() / (LONG - 1)
    assert abs(rm[0] - m) <= np.spacing(np.float32(m)), (rm[0], m)
    assert abs(rv[0] - v) <= np.spacing(np.float32(v)), (rv[0], v)
    # one long column per channel (channels innermost: the column kernel)
    xc = np.stack([x, x[::-1] * np.float32(0.5)], axis=1)  # (LONG, 2)
    assert _err(F.batch_norm(xc, None, None, training=True),
                R.batch_norm(xc, None, None, training=True)) <= TOL32


def test_long_row_float64():
    rng = np.random.default_rng(8)
    x = (1e4 + rng.standard_normal(LONG)).reshape(1, 1, LONG)
    want = R.layer_norm(x, LONG, dtype=EXACT)
    tol = TOL[np.dtype(np.float64)]
    assert _err(F.layer_norm(x, LONG), want) <= tol
    assert _err(F.group_norm(x, 1), want) <= tol
    assert _err(F.batch_norm(x, None, None, training=True), want) <= tol


# --------------------------------------------------------------------------------------------
# running statistics


def _ulps_ok(got, truth, dtype):
    """|got - truth| within one unit in the last place of dtype (correct rounding of a value
    computed in double gives at most half of one, plus double's own error)."""
    truth = np.asarray(truth)
    if np.dtype(dtype) == np.float32:
        tol = np.spacing(np.abs(truth.astype(np.float32))).astype(EXACT)
    else:  # float64 running stats: double arithmetic throughout, a few ulps of rounding
        tol = 1e-12 * np.abs(truth) + 1e-300
    return np.abs(got.astype(EXACT) - truth) <= tol


@pytest.mark.parametrize("stat_dtype", DTYPES, ids=["stats_f32", "stats_f64"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("momentum", [0.1, 1.0])
@pytest.mark.parametrize("mean,std", [(1e5, 1.0), (100.0, 1e-3)], ids=["1e5", "100"])
@pytest.mark.parametrize("layout", ["C", "channels_last"])
def test_running_stats_accuracy(layout, mean, std, momentum, dtype, stat_dtype):
    shape = (7, 5, 23, 31)
    x = _data(shape, dtype, mean, std, layout, seed=9)
    xl = x.astype(EXACT)
    C = shape[1]
    rm0 = np.linspace(-1, 1, C).astype(stat_dtype) * mean
    rv0 = np.linspace(0.5, 2, C).astype(stat_dtype) * std * std

    # batch norm: per channel over N, H, W; unbiased variance
    rm, rv = rm0.copy(), rv0.copy()
    F.batch_norm(x, rm, rv, training=True, momentum=momentum)
    n = x.size // C
    m = xl.mean(axis=(0, 2, 3))
    v = ((xl - m.reshape(1, -1, 1, 1)) ** 2).sum(axis=(0, 2, 3)) / (n - 1)
    tm = (1 - EXACT(momentum)) * rm0.astype(EXACT) + EXACT(momentum) * m
    tv = (1 - EXACT(momentum)) * rv0.astype(EXACT) + EXACT(momentum) * v
    assert rm.dtype == stat_dtype and rv.dtype == stat_dtype
    assert _ulps_ok(rm, tm, stat_dtype).all(), f"bn running_mean {rm} vs {tm}"
    # float64 variance: relative error of the statistics themselves, not just of the storage
    vt = 1e-10 if stat_dtype == np.float64 else None
    if vt is None:
        assert _ulps_ok(rv, tv, stat_dtype).all(), f"bn running_var {rv} vs {tv}"
    else:
        assert np.all(np.abs(rv.astype(EXACT) - tv) <= vt * tv), f"bn running_var {rv} vs {tv}"

    # instance norm: batch average of the per-instance mean and unbiased variance
    rm, rv = rm0.copy(), rv0.copy()
    F.instance_norm(x, rm, rv, use_input_stats=True, momentum=momentum)
    s = shape[2] * shape[3]
    mi = xl.mean(axis=(2, 3))
    vi = ((xl - mi[:, :, None, None]) ** 2).sum(axis=(2, 3)) / (s - 1)
    tm = (1 - EXACT(momentum)) * rm0.astype(EXACT) + EXACT(momentum) * mi.mean(axis=0)
    tv = (1 - EXACT(momentum)) * rv0.astype(EXACT) + EXACT(momentum) * vi.mean(axis=0)
    assert _ulps_ok(rm, tm, stat_dtype).all(), f"in running_mean {rm} vs {tm}"
    if vt is None:
        assert _ulps_ok(rv, tv, stat_dtype).all(), f"in running_var {rv} vs {tv}"
    else:
        assert np.all(np.abs(rv.astype(EXACT) - tv) <= vt * tv), f"in running_var {rv} vs {tv}"


def test_float64_running_stats_beyond_float32_range():
    """A float32 input normalized with float64 running statistics that float32 cannot hold:
    the mean is centred in float32 at the largest float32 value plus a double remainder, not at
    inf (which gave NaN)."""
    x = np.zeros((2, 2, 3), np.float32)
    rm, rv = np.array([1e39, 0.0]), np.array([1e78, 1.0])
    y = F.batch_norm(x, rm, rv)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[:, 0], -1.0, rtol=1e-5)
    np.testing.assert_allclose(y[:, 1], 0.0, atol=1e-6)


@pytest.mark.parametrize("layout", ["C", "channels_last"])
@pytest.mark.parametrize("ratio", [0.0, 1.0, 6.0, 15.0, 17.0, 1e3, 1e5, "mixed"])
def test_float32_statistics_keep_double_accuracy(layout, ratio):
    """float32 statistics are summed without a shift (a subtraction less per element) where a
    block's first values look centred (|mean| below about 7 std), and that is kept when the
    block's |mean| <= 16 std, else it is summed again with one; data far from zero is summed
    shifted at once. Centred, near those cuts (6, 15, 17), far from them, and with both kinds of
    channel in one tile ("mixed"): the float64 mean and variance stay within 1e-10 (relative)
    of the exact ones, far inside float32's 6e-8."""
    shape = (2, 64, 48, 48)  # 2304 elements per (n, c): rows of the kernels' blocks
    if ratio == "mixed":
        x = _data(shape, np.float32, 0.0, 1.0, layout)
        x[:, ::2] += np.float32(1e5)  # every other channel far from zero
    else:
        x = _data(shape, np.float32, ratio, 1.0, layout)
    mean, var = _kernels.instance_moments(x)
    xe = x.astype(EXACT)
    tm = xe.mean(axis=(2, 3))
    tv = ((xe - tm[..., None, None]) ** 2).mean(axis=(2, 3))
    assert np.max(np.abs(var - tv) / tv) <= 1e-10
    assert np.max(np.abs(mean - tm) / np.sqrt(tv)) <= 1e-10
