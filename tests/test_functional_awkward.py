"""Every functional op against fastnorm.reference over the awkward-input generator: each data variant
(plain, offset 1e4, constant, NaN, inf) in each layout (C, Fortran, transposed, channels-last,
negative strides, strided views, byte-swapped, read-only, unaligned), float32 and float64, on shapes
with size-1 axes, odd sizes, long rows and both fused and unfused kernel paths."""
import warnings

import numpy as np
import pytest

import fastnorm.functional as F
from fastnorm import reference as R

from awkward import assert_matches, awkward_inputs

DTYPES = [np.float32, np.float64]
# (N, C, *spatial): C divisible by 3 for GroupNorm(3)
SHAPES = [(4, 6, 5, 7), (3, 6, 9), (5, 6), (2, 6, 3, 4, 5), (2, 6, 1, 1), (4, 6, 1, 8),
          (2, 3, 4100), (1, 3, 4097), (2, 96, 40, 40), (3, 6, 20000), (1, 3, 2),
          # channels-last rows whose coefficients normalize_cols takes in column chunks, and
          # several column tiles of statistics
          (2, 2601, 3, 5),
          # one channels-last sample of wide groups (GroupNorm(8)): group_cols in units of whole
          # groups
          (1, 768, 5, 7)]


def _params(C, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)


def _ops(shape, dtype):
    """{name: (fastnorm call, reference call)} for x of `shape`, affine where the op has one."""
    C, L = shape[1], shape[-1]
    w, b = _params(C, dtype)
    lw, lb = _params(shape[-2:], dtype, seed=2)
    rm, rv = _params(C, dtype, seed=3)
    rv = np.abs(rv) + 0.5
    ops = {
        "batch_norm_train": (lambda x: F.batch_norm(x, None, None, w, b, True),
                             lambda x: R.batch_norm(x, None, None, w, b, True)),
        "batch_norm_eval": (lambda x: F.batch_norm(x, rm, rv, w, b, False),
                            lambda x: R.batch_norm(x, rm, rv, w, b, False)),
        "layer_norm": (lambda x: F.layer_norm(x, (L,), lw[-1], lb[-1]),
                       lambda x: R.layer_norm(x, (L,), lw[-1], lb[-1])),
        "layer_norm_2d": (lambda x: F.layer_norm(x, shape[-2:], lw, lb),
                          lambda x: R.layer_norm(x, shape[-2:], lw, lb)),
        "group_norm": (lambda x: F.group_norm(x, 3, w, b), lambda x: R.group_norm(x, 3, w, b)),
        "group_norm_1": (lambda x: F.group_norm(x, 1), lambda x: R.group_norm(x, 1)),
        "rms_norm": (lambda x: F.rms_norm(x, (L,), lw[-1]), lambda x: R.rms_norm(x, (L,), lw[-1])),
    }
    if C % 8 == 0:
        ops["group_norm_8"] = (lambda x: F.group_norm(x, 8, w, b),
                               lambda x: R.group_norm(x, 8, w, b))
    if np.prod(shape[2:]) > 1:
        ops["instance_norm"] = (lambda x: F.instance_norm(x, weight=w, bias=b),
                                lambda x: R.instance_norm(x, weight=w, bias=b))
    if shape[0] * np.prod(shape[2:]) == 1:  # torch: no batch statistics from one value
        del ops["batch_norm_train"]
    return ops


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_ops_match_reference_on_awkward_inputs(shape, dtype):
    ops = _ops(shape, dtype)
    for label, x in awkward_inputs(shape, dtype):
        before = x.copy()
        for name, (fast, slow) in ops.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # reference on NaN/inf data
                want = slow(x)
            # outputs normalized by their own statistics are O(10) at most; eval-mode batch norm
            # of offset data is not, and float rounding scales with the magnitude
            big = np.abs(want[np.isfinite(want)]).max(initial=0.0)
            assert_matches(fast(x), want, dtype, f"{name} {shape} {label}", max(1.0, big / 10))
        assert np.array_equal(x, before, equal_nan=True), f"{label}: input modified"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_nan_stays_in_its_group(dtype):
    """One NaN poisons exactly the normalization group that holds it, for every op."""
    x = np.random.default_rng(0).standard_normal((2, 6, 4, 5)).astype(dtype)
    x[1, 4, 2, 3] = np.nan
    nan = lambda y: np.isnan(y)
    y = F.batch_norm(x, None, None, training=True)
    assert nan(y[:, 4]).all() and not nan(np.delete(y, 4, axis=1)).any()
    y = F.instance_norm(x)
    assert nan(y[1, 4]).all() and nan(y).sum() == 20
    y = F.group_norm(x, 3)  # channels 4, 5 form group 2
    assert nan(y[1, 4:6]).all() and nan(y).sum() == 40
    y = F.layer_norm(x, (5,))
    assert nan(y[1, 4, 2]).all() and nan(y).sum() == 5
    y = F.rms_norm(x, (4, 5))
    assert nan(y[1, 4]).all() and nan(y).sum() == 20


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("value", [0.0, 1234.0, 40000.0, 1e7, -3.5e5])
def test_constant_input_normalizes_to_exact_zero(dtype, value):
    x = np.full((3, 6, 7, 9), value, dtype)
    for y in (F.batch_norm(x, None, None, training=True), F.instance_norm(x),
              F.group_norm(x, 3), F.layer_norm(x, (7, 9)), F.layer_norm(x, 9)):
        assert y.dtype == dtype and np.all(y == 0), f"max |y| = {np.abs(y).max()}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_empty_inputs_return_empty_arrays(dtype):
    rm, rv = np.zeros(6, dtype), np.ones(6, dtype)
    for shape in [(0, 6), (0, 6, 4), (3, 6, 0), (2, 6, 0, 5)]:
        x = np.zeros(shape, dtype)
        for y in (F.batch_norm(x, rm, rv, training=True), F.batch_norm(x, rm, rv),
                  F.group_norm(x, 3), F.layer_norm(x, shape[-1]), F.rms_norm(x, shape[-1])):
            assert y.shape == shape and y.dtype == dtype
    assert np.all(rm == 0) and np.all(rv == 1)
    y = F.instance_norm(np.zeros((0, 6, 4), dtype), rm, rv)
    assert y.shape == (0, 6, 4) and np.all(np.isfinite(rm)) and np.all(np.isfinite(rv))


def test_batch_norm_takes_weight_and_bias_of_any_shape_with_c_elements():
    """As torch's batch_norm (and only it): (1, C) or (C, 1) parameters are read as (C,)."""
    x = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(np.float32)
    w, b = np.array([0.5, 2.0, -1.0], np.float32), np.array([1.0, 0.0, 3.0], np.float32)
    want = R.batch_norm(x, None, None, w, b, True)
    got = F.batch_norm(x, None, None, w.reshape(1, 3), b.reshape(3, 1), True)
    assert_matches(got, want, np.float32, "batch_norm (1, C) weight, (C, 1) bias")
    with pytest.raises(ValueError, match=r"expected weight of shape \(3,\)"):
        F.batch_norm(x, None, None, np.ones((2, 2), np.float32), None, True)
    with pytest.raises(ValueError, match=r"expected weight of shape \(5,\)"):
        F.layer_norm(x, 5, np.ones((1, 5), np.float32))  # torch refuses it here too
