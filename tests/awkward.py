"""The awkward-input generator every kernel and functional test draws from.

``awkward_inputs(shape, dtype)`` yields ``(label, array)`` pairs: each data variant (plain, a large
offset, constant, one NaN, one inf) in each memory layout (C, Fortran, transposed, channels-last,
negative strides, every-other-element views, byte-swapped, read-only, unaligned). Layouts hold the
same values as the plain array, so a layout bug shows up as a mismatch against the reference.
Shapes with size-1 and empty axes are the caller's to choose (see SHAPES in the tests).
"""
import numpy as np

from fastnorm._cases import TOL  # noqa: F401 - max |fastnorm - float64 reference|, order-1 outputs


def data_variants(shape, dtype, seed=0):
    """(label, C-contiguous array) for each kind of values."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(shape) * 2.0 - 0.5
    yield "plain", base.astype(dtype)
    yield "offset1e4", (base + 1e4).astype(dtype)
    yield "constant", np.full(shape, 1234.0, dtype)
    if base.size:
        for label, val in (("nan", np.nan), ("inf", np.inf)):
            a = base.astype(dtype)
            a.flat[a.size // 2] = val
            yield label, a


def _relayout(x, order):
    """Same values as x, stored with the axes in memory order `order` (a permutation)."""
    return np.ascontiguousarray(x.transpose(order)).transpose(np.argsort(order))


def layouts(x):
    """(label, array) with x's values in each memory layout."""
    nd = x.ndim
    yield "C", x
    yield "fortran", np.asfortranarray(x)
    if nd >= 2:
        yield "transposed01", _relayout(x, (1, 0) + tuple(range(2, nd)))
    if nd >= 3:
        yield "channels_last", _relayout(x, (0,) + tuple(range(2, nd)) + (1,))
    yield "negative", np.flip(np.flip(x).copy())
    big = np.zeros(tuple(2 * s + 1 for s in x.shape), x.dtype)
    view = big[tuple(slice(1, None, 2) for _ in x.shape)]
    view[...] = x
    yield "strided", view
    yield "byteswapped", x.astype(x.dtype.newbyteorder())
    ro = x.copy()
    ro.flags.writeable = False
    yield "readonly", ro
    buf = np.zeros(x.nbytes + 1, np.uint8)
    un = np.ndarray(x.shape, x.dtype, buffer=buf, offset=1)
    un[...] = x
    yield "unaligned", un


def awkward_inputs(shape, dtype, seed=0):
    """Every data variant in every layout: (label, array)."""
    for dlabel, data in data_variants(shape, dtype, seed):
        for llabel, arr in layouts(data):
            yield f"{dlabel}-{llabel}", arr


def assert_matches(got, want, dtype, label="", scale=1.0):
    """got (fastnorm, dtype) against want (float64 reference): same shape, dtype, NaN/inf
    positions, and max abs error within TOL[dtype] * scale elsewhere."""
    dtype = np.dtype(dtype)
    assert got.dtype == dtype.newbyteorder("="), f"{label}: dtype {got.dtype}, expected {dtype}"
    assert got.shape == want.shape, f"{label}: shape {got.shape}, expected {want.shape}"
    fin = np.isfinite(want)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{label}: NaN positions differ"
    assert np.array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)]), \
        f"{label}: inf values differ"
    if fin.any():
        err = np.max(np.abs(got[fin].astype(np.float64) - want[fin]))
        assert err <= TOL[dtype] * scale, f"{label}: max abs error {err:.3g} > {TOL[dtype] * scale:.3g}"
