"""LayerNorm and RMSNorm over an axis that lies outside a contiguous batch axis
(x.transpose(0, 2, 1) normalized over its last axis, Fortran order): the column kernels take
them, statistics per batch element down the normalized axis, then the weight and bias per row.
Checked against fastnorm.reference (with the awkward data: offsets, constants, NaN, inf, where
RMSNorm goes back to strided rows), across thread counts, with out= in either layout, and beside
the path that stays on strided rows (statistics kept for backward); float16 and bfloat16 apply
the row's weight and bias before rounding, within one ulp of the float64 result."""
import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F
from fastnorm import reference as R

from awkward import assert_matches, data_variants

DTYPES = [np.float32, np.float64]
# the reference's NaN and inf data warn; the comparisons check those values
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _transposed(x):
    """x's values with its last two axes swapped in memory (a view whose last axis is strided)."""
    return np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)


def _params(L, dtype, seed=3):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2, L).astype(dtype), rng.uniform(-1, 1, L).astype(dtype)


def _calls(x, L, w, b):
    """(name, fastnorm's result, the reference's) of LayerNorm/RMSNorm forms on x over L."""
    return (("plain", F.layer_norm(x, L), R.layer_norm(x, L)),
            ("affine", F.layer_norm(x, L, w, b), R.layer_norm(x, L, w, b)),
            ("weight", F.layer_norm(x, L, w), R.layer_norm(x, L, w)),
            ("bias", F.layer_norm(x, L, None, b), R.layer_norm(x, L, None, b)),
            ("relu", F.layer_norm(x, L, w, b, activation="relu"),
             np.maximum(R.layer_norm(x, L, w, b), 0)),
            ("rms", F.rms_norm(x, L, w), R.rms_norm(x, L, w)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(3, 40, 70), (2, 3, 17, 300), (16, 5)], ids=str)
def test_transposed_layer_norm_matches_reference(shape, dtype):
    L = shape[-1]
    w, b = _params(L, dtype)
    for label, data in data_variants(shape, dtype):
        x = _transposed(data)
        for name, got, want in _calls(x, L, w, b):
            assert_matches(got, want, dtype, f"{label} {name}", scale=2.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_transposed_layer_norm_out_and_threads(dtype):
    rng = np.random.default_rng(5)
    x = _transposed((rng.standard_normal((4, 96, 130)) * 3 + 7).astype(dtype))
    w, b = _params(130, dtype)
    want = R.layer_norm(x, 130, w, b)
    threads = fastnorm.get_num_threads()
    try:
        fastnorm.set_num_threads(1)
        one = F.layer_norm(x, 130, w, b)
        for n in (2, 3, 8):
            fastnorm.set_num_threads(n)
            assert np.array_equal(F.layer_norm(x, 130, w, b), one), f"{n} threads differ"
    finally:
        fastnorm.set_num_threads(threads)
    assert_matches(one, want, dtype, "allocating")
    for label, out in (("same layout", np.empty_like(x)), ("C order", np.empty(x.shape, dtype))):
        y = F.layer_norm(x, 130, w, b, out=out)
        assert y is out
        assert_matches(y, want, dtype, label)
    before = x.copy()
    F.layer_norm(x, 130, w, b)
    assert np.array_equal(x, before), "input modified"


def _half(name):
    if name == "bfloat16":
        return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    return np.dtype(name)


def _within_one_ulp(got, want, dtype, label):
    """got (dtype) against the float64 want: NaN and inf where want has them, else within one
    ulp of the output dtype at want's magnitude."""
    g = got.astype(np.float64)
    assert got.dtype == dtype, label
    assert np.array_equal(np.isnan(g), np.isnan(want)), f"{label}: NaN positions differ"
    fin = np.isfinite(want)
    assert np.array_equal(g[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)]), label
    ulp = np.spacing(np.abs(want[fin]).astype(dtype)).astype(np.float64)
    err = np.abs(g[fin] - want[fin]) / ulp
    assert err.size == 0 or err.max() <= 1.0, f"{label}: {err.max():.2f} ulp"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_transposed_half_precision_rounded_once(dtype):
    """The 16-bit types by columns: t * w[r] + b[r] in float, rounded once (two passes through
    the 16-bit output were off by thousands of ulps where the bias cancels t)."""
    dt = _half(dtype)
    L = 48
    w, b = _params(L, np.float32)
    for label, data in data_variants((3, 40, L), np.float64):
        x = _transposed(data.astype(dt))
        for name, got, want in _calls(x, L, w, b):
            _within_one_ulp(got, want, dt, f"{dtype} {label} {name}")
    x = _transposed((np.random.default_rng(7).standard_normal((4, 96, 130)) * 3 + 7).astype(dt))
    w, b = _params(130, np.float32)
    threads = fastnorm.get_num_threads()
    try:
        fastnorm.set_num_threads(1)
        one = F.layer_norm(x, 130, w, b).view(np.uint16)
        for n in (2, 3, 8):
            fastnorm.set_num_threads(n)
            assert np.array_equal(F.layer_norm(x, 130, w, b).view(np.uint16), one), n
    finally:
        fastnorm.set_num_threads(threads)
    # out= in the input's layout, and in place (the statistics are taken before any write):
    # the same bits; a C-order out goes by strided rows (statistics summed in double rather
    # than in the column tiles' float loops): within 1 ulp of the columns' result
    for label, out in (("same layout", np.empty_like(x)), ("in place", x.copy(order="K"))):
        src = out if label == "in place" else x
        y = F.layer_norm(src, 130, w, b, out=out)
        assert y is out and np.array_equal(y.view(np.uint16), one), label
    out = np.empty(x.shape, dt)
    assert F.layer_norm(x, 130, w, b, out=out) is out
    ref = one.view(dt)
    ulp = np.spacing(np.abs(ref)).astype(np.float64)
    assert (np.abs(out.astype(np.float64) - ref.astype(np.float64)) <= ulp).all(), "C order"


def test_transposed_float16_and_backward_statistics():
    rng = np.random.default_rng(6)
    x64 = rng.standard_normal((2, 64, 48))
    x = _transposed(x64.astype(np.float16))
    w, b = _params(48, np.float32)
    want = R.layer_norm(x, 48, w, b).astype(np.float16)
    got = F.layer_norm(x, 48, w, b)
    assert got.dtype == np.float16
    # within one float16 ulp of the float64 result
    ulp = np.spacing(np.abs(want).astype(np.float16)).astype(np.float64)
    assert np.all(np.abs(got.astype(np.float64) - R.layer_norm(x, 48, w, b)) <= ulp)
    # the native form keeps statistics for a backward pass: same output, stats of each row
    x32 = _transposed(x64.astype(np.float32))
    y, mean, rstd = F.native_layer_norm(x32, (48,), w, b, 1e-5)
    assert_matches(y, R.layer_norm(x32, 48, w, b), np.float32, "native")
    assert np.allclose(np.squeeze(mean), x32.astype(np.float64).mean(-1), rtol=0, atol=1e-6)
