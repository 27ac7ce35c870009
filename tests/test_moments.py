"""fastnorm.moments and fastnorm.Moments against fastnorm.reference.moments (and NumPy): every
axis form, the awkward inputs, empty reductions, accuracy, errors, and Chan's merge."""
import warnings

import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F
from fastnorm import Moments, reference
from fastnorm._moments import _merge_stacked

from awkward import awkward_inputs

# relative error accepted against the float64 reference: float32 results are rounded once
RTOL = {np.dtype(np.float32): 2e-7, np.dtype(np.float64): 1e-12}

SHAPES_AXES = [
    ((3, 4, 5), [None, 0, 1, 2, -1, (0, 2), (1, 2), (0, 1), (0, 1, 2), ()]),
    ((2, 3, 4, 5), [(0, 2, 3), (2, 3), (1,), (0, 3), (-3, -1)]),
    ((1, 7), [None, 0, 1]),
    ((4, 1, 3), [None, 1, (0, 2)]),
    ((0, 3), [None, 0, 1]),
    ((2, 0, 3), [None, 1, (0, 2)]),
    ((9,), [None, 0]),
    # the kept axis innermost, >= 64 rows per block: the column reduction cut into blocks
    ((259, 3), [0, None]),
    ((2, 300, 4), [(0, 1), 1]),
]


def _close(got, want, dtype, label):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == np.dtype(dtype).newbyteorder("="), f"{label}: dtype {got.dtype}"
    assert got.shape == want.shape, f"{label}: shape {got.shape}, expected {want.shape}"
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{label}: NaN positions differ"
    fin = np.isfinite(want)
    assert np.array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)]), \
        f"{label}: inf values differ"
    if fin.any():
        err = np.max(np.abs(got[fin] - want[fin]) / np.maximum(1.0, np.abs(want[fin])))
        assert err <= RTOL[np.dtype(dtype)], f"{label}: relative error {err:.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axes", SHAPES_AXES, ids=[str(s) for s, _ in SHAPES_AXES])
def test_matches_reference_on_awkward_inputs(shape, axes, dtype):
    for label, x in awkward_inputs(shape, dtype):
        before = x.copy()
        for axis in axes:
            for ddof, keepdims in ((0, False), (1, True)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # empty / ddof >= n
                    mean, var = fastnorm.moments(x, axis, ddof=ddof, keepdims=keepdims)
                    rmean, rvar = reference.moments(x, axis, ddof=ddof, keepdims=keepdims)
                tag = f"{label} axis={axis} ddof={ddof} keepdims={keepdims}"
                _close(mean, rmean, dtype, tag + " mean")
                _close(var, rvar, dtype, tag + " var")
        assert np.array_equal(x, before, equal_nan=True), f"{label}: input modified"


def test_numpy_conventions():
    x = np.random.default_rng(1).standard_normal((3, 4, 5))
    mean, var = fastnorm.moments(x)
    assert type(mean) is np.float64 and type(var) is np.float64  # a scalar, as np.var
    for axis in (None, 1, (0, 2), -1):
        for keepdims in (False, True):
            m, v = fastnorm.moments(x, axis, keepdims=keepdims)
            assert m.shape == np.mean(x, axis, keepdims=keepdims).shape
            assert v.shape == np.var(x, axis, keepdims=keepdims).shape
    m, v = fastnorm.moments(x.astype(np.float32), axis=[0, 1])  # a list, as NumPy takes
    assert m.dtype == v.dtype == np.float32 and m.shape == (5,)
    m, v = fastnorm.moments(x.tolist(), 0)  # array_like
    assert np.allclose(v, np.var(x, 0), rtol=1e-12)


def test_float64_within_1e12_of_np_var():
    rng = np.random.default_rng(2)
    for x in (rng.standard_normal((256, 300)), rng.standard_normal((64, 513)) * 1e-3 + 1e3,
              rng.uniform(-5, 5, (7, 11, 13))):
        for axis in (None, 0, -1):
            mean, var = fastnorm.moments(x, axis)
            assert np.max(np.abs(var - np.var(x, axis)) / np.var(x, axis)) <= 1e-12
            # the mean's error is relative to the data's scale (it may be near zero)
            assert np.max(np.abs(mean - np.mean(x, axis))) <= 1e-12 * np.max(np.abs(x))


@pytest.mark.parametrize("offset", [1e4, 1e6])
def test_float32_more_accurate_than_numpy_on_offset_data(offset):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((512, 2048)) * 10 + offset).astype(np.float32)
    exact_mean = x.astype(np.float64).mean(axis=1)
    exact = ((x.astype(np.float64) - exact_mean[:, None]) ** 2).mean(axis=1)
    mean, var = fastnorm.moments(x, axis=1)
    ours = np.max(np.abs(var - exact) / exact)
    theirs = np.max(np.abs(np.var(x, axis=1) - exact) / exact)
    print(f"\nfloat32 offset {offset:g}: max relative error of the variance: fastnorm {ours:.2e}, "
          f"np.var {theirs:.2e}")
    assert ours <= 2.0 ** -24 and ours < theirs  # one rounding of the double result
    assert np.max(np.abs(mean - exact_mean) / exact_mean) <= 2e-7
    _, var_all = fastnorm.moments(x)
    exact_all = np.var(x.astype(np.float64))
    assert abs(var_all - exact_all) <= min(2.0 ** -24 * exact_all, abs(np.var(x) - exact_all))


def test_empty_reductions_follow_numpy():
    x = np.zeros((0, 3))
    with pytest.warns(RuntimeWarning) as rec:
        mean, var = fastnorm.moments(x, axis=0)
    assert {str(w.message) for w in rec} == {"Mean of empty slice.",
                                            "Degrees of freedom <= 0 for slice"}
    assert np.isnan(mean).all() and np.isnan(var).all() and mean.shape == (3,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is reduced over nothing: no warning
        mean, var = fastnorm.moments(x, axis=1)
    assert mean.shape == var.shape == (0,)
    with pytest.warns(RuntimeWarning, match="Degrees of freedom <= 0"):
        _, var = fastnorm.moments(np.array([2.0]), ddof=1)
    assert np.isnan(var)
    with pytest.warns(RuntimeWarning, match="Degrees of freedom <= 0"):
        _, var = fastnorm.moments(np.array([1.0, 2.0]), ddof=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert var == np.var([1.0, 2.0], ddof=3) == np.inf


def test_results_do_not_depend_on_the_thread_count():
    x = (np.random.default_rng(4).standard_normal((3, 333, 777)) + 1e3).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        fastnorm.set_num_threads(n)
        results.append([fastnorm.moments(x, axis) for axis in (None, 0, (0, 2), 2)])
    for other in results[1:]:
        for (m0, v0), (m1, v1) in zip(results[0], other):
            assert np.array_equal(m0, m1) and np.array_equal(v0, v1)


def test_errors():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="moments: expected input of dtype float32 or float64, "
                                        "got dtype int64"):
        fastnorm.moments(np.ones((2, 3), np.int64))
    with pytest.raises(TypeError, match="float16"):
        fastnorm.moments(np.ones(3, np.float16))
    with pytest.raises(np.exceptions.AxisError):
        fastnorm.moments(x, axis=2)
    with pytest.raises(ValueError, match="repeated axis"):
        fastnorm.moments(x, axis=(0, -2))
    with pytest.raises(TypeError, match="axis must be None, an int or a tuple of ints"):
        fastnorm.moments(x, axis=1.0)
    with pytest.raises(TypeError, match="axis must be None"):
        fastnorm.moments(x, axis=True)
    with pytest.raises(TypeError, match="ddof must be a real number, got str"):
        fastnorm.moments(x, ddof="1")
    with pytest.raises(ValueError, match="ddof must be finite"):
        fastnorm.moments(x, ddof=np.nan)
    with pytest.raises(TypeError):
        fastnorm.moments(x, 0, 1)  # ddof and keepdims are keyword-only


# --- Moments ---------------------------------------------------------------------------------

def _whole_vs_parts(x, cuts, axis):
    whole = Moments.from_array(x, axis)
    parts = [Moments.from_array(p, axis) for p in np.split(x, cuts, axis=axis)]
    merged = parts[0]
    for p in parts[1:]:
        merged = merged.merge(p)
    return whole, merged


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_merge_of_parts_equals_the_whole(dtype):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((40, 6)) * 3 + 1e3).astype(dtype)
    exact = np.var(x.astype(np.float64), axis=0)
    for cuts in ([1], [20], [3, 3, 17, 39], [0, 0, 40], list(range(1, 40))):  # incl. empty parts
        whole, merged = _whole_vs_parts(x, cuts, 0)
        assert merged.count == whole.count == 40
        assert np.allclose(merged.mean, whole.mean, rtol=1e-14, atol=0)
        assert np.allclose(merged.var(), exact, rtol=1e-12, atol=0)
        assert np.allclose(merged.var(ddof=1), np.var(x.astype(np.float64), 0, ddof=1), rtol=1e-12)


def test_moments_fields_and_keepdims():
    x = np.arange(24.0).reshape(2, 3, 4)
    m = Moments.from_array(x, axis=(0, 2), keepdims=True)
    assert m.count == 8 and isinstance(m.count, int)
    assert m.mean.shape == m.M2.shape == (1, 3, 1) and m.mean.dtype == np.float64
    assert np.allclose(m.M2, ((x - x.mean((0, 2), keepdims=True)) ** 2).sum((0, 2), keepdims=True))
    count, mean, M2 = Moments.from_array(x.astype(np.float32))  # a named tuple
    assert (count, float(mean), float(M2)) == (24, 11.5, float(((x - 11.5) ** 2).sum()))
    assert m._fields == ("count", "mean", "M2")


def test_merge_identity_and_symmetry():
    a = Moments.from_array(np.array([1.0, 2.0, 4.0]))
    empty = Moments.from_array(np.array([]))
    assert empty.count == 0 and np.isnan(empty.mean) and empty.M2 == 0
    for m in (a.merge(empty), empty.merge(a)):
        assert m.count == 3 and m.mean == a.mean and m.M2 == a.M2
    e2 = empty.merge(empty)
    assert e2.count == 0 and e2.M2 == 0
    b = Moments.from_array(np.array([10.0, -3.0]))
    ab, ba = a.merge(b), b.merge(a)
    assert ab.count == ba.count == 5
    assert np.isclose(ab.mean, ba.mean, rtol=1e-15) and np.isclose(ab.M2, ba.M2, rtol=1e-14)
    assert np.isclose(ab.var(), np.var([1.0, 2.0, 4.0, 10.0, -3.0]), rtol=1e-14)
    t = a.merge((2, 5.0, 2.0))  # any (count, mean, M2) triple, from anywhere
    assert t.count == 5 and np.isclose(t.var(), np.var([1.0, 2.0, 4.0, 4.0, 6.0]))


def test_merge_with_count_arrays():
    """Parts whose counts differ per position (say, per-channel counts after masking)."""
    rng = np.random.default_rng(6)
    cols = [rng.standard_normal(n) for n in (5, 9, 1)]
    pieces = [Moments.from_array(c[:2]) for c in cols], [Moments.from_array(c[2:]) for c in cols]
    stack = [Moments(np.array([p.count for p in ps]), np.array([p.mean for p in ps]),
                     np.array([p.M2 for p in ps])) for ps in pieces]
    m = stack[0].merge(stack[1])
    assert np.array_equal(m.count, [5, 9, 1])
    assert np.allclose(m.var(), [np.var(c) for c in cols], rtol=1e-13)
    assert np.allclose(m.var(ddof=1)[:2], [np.var(c, ddof=1) for c in cols[:2]], rtol=1e-13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Moments.var is quiet, like a ufunc under errstate
        assert np.isnan(m.var(ddof=1)[2])


def test_merge_stacked_is_the_pairwise_fold():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((7, 10, 3)) + 50
    parts = [Moments.from_array(p, axis=0) for p in x]
    m = _merge_stacked(np.array([p.count for p in parts]), np.stack([p.mean for p in parts]),
                       np.stack([p.M2 for p in parts]))
    assert m.count == 70
    assert np.allclose(m.var(), np.var(x.reshape(70, 3), axis=0), rtol=1e-13)


def test_merge_errors():
    a = Moments.from_array(np.ones(3))
    with pytest.raises(TypeError, match="expected a Moments"):
        a.merge(np.ones(3))
    with pytest.raises(TypeError, match="counts must be integers"):
        a.merge((2.0, 1.0, 0.0))
    with pytest.raises(TypeError, match="ddof must be a real number"):
        a.var(ddof=None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_of_every_length(dtype):
    """Per-channel moments over (N, L) rows, L = 1 to 70: every remainder of the AVX-512 rows
    loop (steps of 32, 16, 8, then one masked vector; BatchNorm training on NCHW planes takes
    it), centred (sums of x itself) and 1e4 from zero (shifted sums, the masked lanes shifted
    under the mask), against the float64 reference; and RMSNorm over (rows, L) groups whose
    rows are not back to back (its sum of squares through the same loop)."""
    rng = np.random.default_rng(70)
    for L in range(1, 71):
        for offset in (0.0, 1e4):
            x = (rng.standard_normal((3, 5, L)) + offset).astype(dtype)
            mean, var = fastnorm.moments(x, (0, 2))
            rmean, rvar = reference.moments(x, (0, 2))
            _close(mean, rmean, dtype, f"L={L} offset={offset} mean")
            _close(var, rvar, dtype, f"L={L} offset={offset} var")
        base = rng.standard_normal((4, 3, L + 5)).astype(dtype)
        x = base[:, :, :L]  # rows L + 5 apart
        got = F.rms_norm(x, (3, L))
        want = reference.rms_norm(x, (3, L))
        tol = 1e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=f"rms L={L}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_short_rows_far_apart_give_one_channel_bits(dtype):
    """Training BatchNorm on NCHW planes of a few hundred bytes with rows 4 KB and more apart
    takes its channels up to 16 at a time, row q of each before row q + 1 (fused_groups,
    rows_outer; outer_moments where a channel is several statistics blocks):
    each channel's statistics and output must have the bits it gets alone (a one-channel slice,
    the same rows), for any thread count, centred, far from zero (shifted sums) and with NaN."""
    rng = np.random.default_rng(11)
    C = 192  # rows C * H * W elements apart: 4.6 KB and more for 2x3 planes
    # N * H * W > 4096 (the last two): float32 channels of two statistics blocks
    # (outer_moments; float64's exceed 512 KB sixteen at a time and go one at a time)
    for N, H, W in ((6, 5, 7), (6, 7, 7), (6, 2, 3), (6, 16, 16), (12, 18, 20), (40, 8, 16)):
        for offset in (0.0, 1e4):
            x = (rng.standard_normal((N, C, H, W)) * 2 + offset).astype(dtype)
            x[1, 3, 0, 0] = np.nan
            w = rng.standard_normal(C).astype(dtype)
            b = rng.standard_normal(C).astype(dtype)
            threads = fastnorm.get_num_threads()
            try:
                outs, runs = [], []
                for nt in (1, 2):
                    fastnorm.set_num_threads(nt)
                    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
                    outs.append(F.batch_norm(x, rm, rv, w, b, training=True))
                    runs.append((rm, rv))
            finally:
                fastnorm.set_num_threads(threads)
            assert np.array_equal(outs[0], outs[1], equal_nan=True), (N, H, W, offset)
            silu = F.batch_norm(x, None, None, w, b, training=True, activation="silu")
            _, mean, invstd = F.native_batch_norm(x, w, b, None, None, True, 0.1, 1e-5)
            for c in (0, 3, 17, C - 1):
                sl = slice(c, c + 1)
                _, m1, i1 = F.native_batch_norm(x[:, sl], w[sl], b[sl], None, None, True, 0.1,
                                                1e-5)  # the float64 statistics themselves
                assert np.array_equal(mean[sl], m1, equal_nan=True), (N, H, W, offset, c)
                assert np.array_equal(invstd[sl], i1, equal_nan=True), (N, H, W, offset, c)
                rm, rv = np.zeros(1, dtype), np.ones(1, dtype)
                one = F.batch_norm(x[:, sl], rm, rv, w[sl], b[sl], training=True)
                assert np.array_equal(outs[0][:, sl], one, equal_nan=True), (N, H, W, offset, c)
                assert np.array_equal(runs[0][0][sl], rm, equal_nan=True), "running mean"
                assert np.array_equal(runs[0][1][sl], rv, equal_nan=True), "running var"
                one = F.batch_norm(x[:, sl], None, None, w[sl], b[sl], training=True,
                                   activation="silu")
                assert np.array_equal(silu[:, sl], one, equal_nan=True), (N, H, W, offset, c)
            want = reference.batch_norm(x, None, None, w, b, training=True)
            tol = 2e-5 if dtype == np.float32 else 1e-10  # |x| ~ 1e4: ~1e-12 absolute
            fin = np.isfinite(want)
            np.testing.assert_allclose(outs[0][fin], want[fin], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padded_planes_give_one_plane_bits(dtype):
    """InstanceNorm and FilterResponseNorm (a sum of squares) on planes of rows 4 KB apart
    (a padded image, base[..., :W]) take the planes rows outer, float32's in two or three
    statistics blocks (outer_moments): each plane's output must have the bits it gets alone,
    with blocks that start at 0 (no shift), with inf and NaN, centred and far from zero."""
    rng = np.random.default_rng(12)
    for shape, W in (((2, 16, 50, 1024), 100), ((3, 8, 27, 1100), 300)):
        for offset in (0.0, 1e4):
            base = (rng.standard_normal(shape) + offset).astype(dtype)
            x = base[..., :W]
            x[0, 1, 0, 0] = 0.0       # a block whose first value is 0
            x[0, 2, 4096 // W, 0] = 0.0  # float32: the second block's first value
            x[1, 3, 5, 7] = np.inf
            x[1, 4, 0, 0] = np.nan
            ins = F.instance_norm(x)
            frn = F.filter_response_norm(x)
            for n, c in ((0, 0), (0, 1), (0, 2), (1, 3), (1, 4), (1, 7)):
                one = x[n:n + 1, c:c + 1]
                assert np.array_equal(ins[n:n + 1, c:c + 1], F.instance_norm(one),
                                      equal_nan=True), (shape, offset, n, c)
                assert np.array_equal(frn[n:n + 1, c:c + 1], F.filter_response_norm(one),
                                      equal_nan=True), (shape, offset, n, c)
            with np.errstate(invalid="ignore"):  # inf - inf in the reference
                want = reference.instance_norm(x)
            fin = np.isfinite(want) & np.isfinite(ins)
            tol = 2e-5 if dtype == np.float32 else 1e-10
            np.testing.assert_allclose(ins[fin], want[fin], rtol=tol, atol=tol)
