"""The keyword-only ``out=`` of every functional op: validation (before any state changes), the
returned object, in-place calls (``out=x``) in every layout, partial overlap with the input, and
outputs whose layout differs from the input's."""
import numpy as np
import pytest

import fastnorm.functional as F
from fastnorm import reference as R

from awkward import assert_matches

DTYPES = [np.float32, np.float64]
SHAPE = (4, 6, 9, 9)  # square spatial axes: a transposed view of the same memory has the shape


def _vec(n, dtype, seed, lo=0.5, hi=1.5):
    return np.random.default_rng(seed).uniform(lo, hi, n).astype(dtype)


class Op:
    """One functional op with fixed parameters; running statistics (when the op updates them)
    live on the object so that tests can check them."""

    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype = name, shape, dtype
        C, L = shape[1], shape[-1]
        self.w, self.b = _vec(C, dtype, 1), _vec(C, dtype, 2, -1, 1)
        self.lw, self.lb = _vec(L, dtype, 3), _vec(L, dtype, 4, -1, 1)
        ns2 = shape[-2:]
        self.lw2 = _vec(int(np.prod(ns2)), dtype, 5).reshape(ns2)
        self.lb2 = _vec(int(np.prod(ns2)), dtype, 6, -1, 1).reshape(ns2)
        self.erm, self.erv = _vec(C, dtype, 7, -1, 1), _vec(C, dtype, 8)
        self.mw, self.vw = _vec(3, dtype, 11, -1, 1), _vec(3, dtype, 12, -1, 1)  # switch_norm
        self.reset()

    def reset(self):
        C = self.shape[1]
        self.rm, self.rv = _vec(C, self.dtype, 9, -1, 1), _vec(C, self.dtype, 10)

    @property
    def stateful(self):
        return self.name in ("bn_train", "in_train", "sn_train")

    def __call__(self, x, **kw):
        n = self.name
        if n == "bn_train":
            return F.batch_norm(x, self.rm, self.rv, self.w, self.b, True, 0.2, **kw)
        if n == "bn_eval":
            return F.batch_norm(x, self.erm, self.erv, self.w, self.b, False, **kw)
        if n == "in_train":
            return F.instance_norm(x, self.rm, self.rv, self.w, self.b, True, 0.2, **kw)
        if n == "in_plain":
            return F.instance_norm(x, weight=self.w, bias=self.b, **kw)
        if n == "in_eval":
            return F.instance_norm(x, self.erm, self.erv, self.w, self.b, False, **kw)
        if n == "ln":
            return F.layer_norm(x, self.shape[-1], self.lw, self.lb, **kw)
        if n == "ln_multi":
            return F.layer_norm(x, self.shape[-2:], self.lw2, self.lb2, **kw)
        if n == "gn":
            return F.group_norm(x, 3, self.w, self.b, **kw)
        if n == "rms":
            return F.rms_norm(x, self.shape[-1], self.lw, **kw)
        if n == "rms_multi":
            return F.rms_norm(x, self.shape[-2:], self.lw2, eps=1e-6, **kw)
        if n == "sn_train":
            return F.switch_norm(x, self.rm, self.rv, self.w, self.b, self.mw, self.vw, True, 0.2,
                                 **kw)
        if n == "sn_eval":
            return F.switch_norm(x, self.erm, self.erv, self.w, self.b, self.mw, self.vw, **kw)
        if n == "sn_nobn":
            return F.switch_norm(x, None, None, self.w, self.b, self.mw[:2], self.vw[:2],
                                 using_bn=False, **kw)
        raise AssertionError(n)

    def reference(self, x):
        n = self.name
        if n == "bn_train":
            return R.batch_norm(x, None, None, self.w, self.b, True)
        if n in ("bn_eval", "in_eval"):
            return R.batch_norm(x, self.erm, self.erv, self.w, self.b, False)
        if n in ("in_train", "in_plain"):
            return R.instance_norm(x, weight=self.w, bias=self.b)
        if n == "ln":
            return R.layer_norm(x, self.shape[-1], self.lw, self.lb)
        if n == "ln_multi":
            return R.layer_norm(x, self.shape[-2:], self.lw2, self.lb2)
        if n == "gn":
            return R.group_norm(x, 3, self.w, self.b)
        if n == "rms":
            return R.rms_norm(x, self.shape[-1], self.lw)
        if n == "rms_multi":
            return R.rms_norm(x, self.shape[-2:], self.lw2, eps=1e-6)
        if n == "sn_train":  # copies: the reference updates the running statistics it is given
            return R.switch_norm(x, self.erm.astype(np.float64), self.erv.astype(np.float64),
                                 self.w, self.b, self.mw, self.vw, True, 0.2)
        if n == "sn_eval":
            return R.switch_norm(x, self.erm, self.erv, self.w, self.b, self.mw, self.vw)
        if n == "sn_nobn":
            return R.switch_norm(x, None, None, self.w, self.b, self.mw[:2], self.vw[:2],
                                 using_bn=False)
        raise AssertionError(n)


OPS = ["bn_train", "bn_eval", "in_train", "in_plain", "in_eval", "ln", "ln_multi", "gn", "rms",
       "rms_multi", "sn_train", "sn_eval", "sn_nobn"]


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 2 + 5).astype(dtype)


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(_bits(a), _bits(b))


# --------------------------------------------------------------------------------------------
# layouts: each builder makes a fresh array with x's values in that memory layout


def _relayout(x, order):
    return np.ascontiguousarray(x.transpose(order)).transpose(np.argsort(order))


def _strided(x):
    big = np.zeros(tuple(2 * s + 1 for s in x.shape), x.dtype)
    v = big[tuple(slice(1, None, 2) for _ in x.shape)]
    v[...] = x
    return v


def _unaligned(x):
    buf = np.zeros(x.nbytes + 1, np.uint8)
    u = np.ndarray(x.shape, x.dtype, buffer=buf, offset=1)
    u[...] = x
    return u


LAYOUTS = {
    "C": lambda x: x.copy(),
    "fortran": lambda x: np.asfortranarray(x),
    "channels_last": lambda x: _relayout(x, (0, 2, 3, 1)),
    "transposed01": lambda x: _relayout(x, (1, 0, 2, 3)),
    "spatial_swapped": lambda x: _relayout(x, (0, 1, 3, 2)),
    "negative": lambda x: np.flip(np.flip(x).copy()),
    "negative_channels_last": lambda x: np.flip(_relayout(np.flip(x), (0, 2, 3, 1))),
    "strided": _strided,
    "unaligned": _unaligned,
}


# --------------------------------------------------------------------------------------------
# validation


def _bad_outs(x):
    """(label, out, expected exception)."""
    s = x.shape
    ro = np.empty_like(x)
    ro.flags.writeable = False
    other = np.float64 if x.dtype == np.float32 else np.float32
    return [
        ("shape_longer", np.empty(s[:-1] + (s[-1] + 1,), x.dtype), ValueError),
        ("shape_fewer_axes", np.empty(s[1:], x.dtype), ValueError),
        ("shape_transposed", np.empty(s[::-1], x.dtype), ValueError),
        ("shape_flat", np.empty(x.size, x.dtype), ValueError),
        ("shape_0d", np.empty((), x.dtype), ValueError),
        ("dtype_other_float", np.empty(s, other), TypeError),
        ("dtype_float16", np.empty(s, np.float16), TypeError),
        ("dtype_int", np.empty(s, np.int32), TypeError),
        ("dtype_complex", np.empty(s, np.complex128), TypeError),
        ("dtype_object", np.empty(s, object), TypeError),
        ("readonly", ro, ValueError),
        ("list", np.zeros(s, x.dtype).tolist(), TypeError),
        ("tuple", (), TypeError),
        ("memoryview", memoryview(np.zeros(s, x.dtype)), TypeError),
        ("string", "out", TypeError),
        ("int", 0, TypeError),
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", OPS)
def test_bad_out_raises_before_anything_changes(name, dtype):
    op = Op(name, SHAPE, dtype)
    x = _data(SHAPE, dtype)
    x0 = x.copy()
    rm0, rv0 = op.rm.copy(), op.rv.copy()
    for label, out, exc in _bad_outs(x):
        snapshot = out.copy() if isinstance(out, np.ndarray) else None
        with pytest.raises(exc):
            op(x, out=out)
        assert _same(op.rm, rm0) and _same(op.rv, rv0), f"{label}: running stats changed"
        assert _same(x, x0), f"{label}: input changed"
        if snapshot is not None and snapshot.dtype.kind == "f":
            assert np.array_equal(out, snapshot, equal_nan=True), f"{label}: out was written"
    # in place on a read-only input: refused, nothing written
    xr = x.copy()
    xr.flags.writeable = False
    with pytest.raises(ValueError):
        op(xr, out=xr)
    assert _same(op.rm, rm0) and _same(op.rv, rv0) and _same(xr, x0)


@pytest.mark.parametrize("name", ["bn_train", "in_train"])
def test_bad_out_with_otherwise_bad_call_changes_no_stats(name):
    """Several problems at once: whichever is reported, nothing is updated."""
    op = Op(name, SHAPE, np.float32)
    x = _data(SHAPE, np.float32)
    rm0, rv0 = op.rm.copy(), op.rv.copy()
    with pytest.raises((TypeError, ValueError)):
        op(x, out=np.empty(SHAPE, np.float64), eps=-1.0)
    with pytest.raises((TypeError, ValueError)):
        op(x, out=np.empty(SHAPE[:-1], np.float32), momentum="a")
    assert _same(op.rm, rm0) and _same(op.rv, rv0)


# --------------------------------------------------------------------------------------------
# results


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", OPS)
def test_out_is_returned_and_holds_the_result(name, dtype):
    op = Op(name, SHAPE, dtype)
    x = _data(SHAPE, dtype)
    want = op(x)
    rm1, rv1 = op.rm.copy(), op.rv.copy()
    op.reset()
    out = np.full(SHAPE, np.nan, dtype)
    y = op(x, out=out)
    assert y is out
    assert _same(y, want)
    assert _same(op.rm, rm1) and _same(op.rv, rv1), "running stats differ from the call without out"
    assert_matches(y, op.reference(x), dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", OPS)
def test_in_place_matches_out_of_place(name, layout, dtype):
    op = Op(name, SHAPE, dtype)
    base = _data(SHAPE, dtype, seed=1)
    make = LAYOUTS[layout]
    x = make(base)
    want = op(x)  # out of place, same input layout
    rm1, rv1 = op.rm.copy(), op.rv.copy()
    assert _same(x, base), "input modified by the out-of-place call"
    op.reset()
    xi = make(base)
    assert xi.strides == x.strides
    y = op(xi, out=xi)
    assert y is xi
    assert_matches(y, op.reference(base), dtype, f"{name} {layout} in place")
    assert _same(y, want), f"{name} {layout}: in place differs from out of place"
    assert _same(op.rm, rm1) and _same(op.rv, rv1)


def _overlapping(shape, dtype, shift):
    """(x, out): views of one buffer, out shifted by `shift` elements (either direction)."""
    n = int(np.prod(shape))
    buf = np.zeros(n + abs(shift), dtype)
    x = buf[max(0, -shift):][:n].reshape(shape)
    out = buf[max(0, shift):][:n].reshape(shape)
    return x, out


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shift", [1, -1, 7, -81, 1000])
@pytest.mark.parametrize("name", OPS)
def test_out_partially_overlapping_input(name, shift, dtype):
    op = Op(name, SHAPE, dtype)
    base = _data(SHAPE, dtype, seed=2)
    want = op(base)
    x, out = _overlapping(SHAPE, dtype, shift)
    x[...] = base
    assert np.shares_memory(x, out)
    y = op(x, out=out)
    assert y is out
    assert _same(y, want), f"{name}: out shifted by {shift} elements gives a different result"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", OPS)
def test_out_same_memory_other_strides(name, dtype):
    """out is the input's own memory seen with other strides (spatial axes swapped, or reversed):
    every element is both read and written at different positions."""
    op = Op(name, SHAPE, dtype)
    base = _data(SHAPE, dtype, seed=3)
    want = op(base)
    for label, view in (("swapped", lambda a: a.swapaxes(2, 3)),
                        ("reversed", lambda a: a[:, :, ::-1, ::-1]),
                        ("batch_reversed", lambda a: a[::-1])):
        x = base.copy()
        out = view(x)
        y = op(x, out=out)
        assert y is out
        assert _same(y, want), f"{name} {label}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", OPS)
def test_out_interleaved_with_input(name, dtype):
    """x and out take alternate elements of one buffer: their bounds overlap, their elements
    do not."""
    op = Op(name, SHAPE, dtype)
    base = _data(SHAPE, dtype, seed=4)

    def views():
        buf = np.zeros(SHAPE[:-1] + (2 * SHAPE[-1],), dtype)
        buf[..., 0::2] = base
        return buf[..., 0::2], buf[..., 1::2]

    want = op(views()[0])  # out of place, the same input layout
    x, out = views()
    y = op(x, out=out)
    assert y is out and _same(x, base)
    assert _same(y, want), f"{name}: interleaved out differs from out=None"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("out_layout", list(LAYOUTS))
@pytest.mark.parametrize("in_layout", ["C", "fortran", "channels_last", "negative"])
@pytest.mark.parametrize("name", OPS)
def test_out_with_another_layout(name, in_layout, out_layout, dtype):
    op = Op(name, SHAPE, dtype)
    base = _data(SHAPE, dtype, seed=5)
    x = LAYOUTS[in_layout](base)
    want = op(x)
    out = LAYOUTS[out_layout](np.full(SHAPE, np.nan, dtype))
    strides = out.strides
    y = op(x, out=out)
    assert y is out and y.strides == strides
    assert _same(x, base)
    assert_matches(y, op.reference(base), dtype, f"{name} {in_layout}->{out_layout}")
    # the output's layout may change how the kernels walk the data (and so the last bits of
    # the statistics), never more than that
    assert_matches(y, want.astype(np.float64), dtype, f"{name} {in_layout}->{out_layout} vs out=None")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_out_of_empty_input(dtype):
    for shape in [(0, 6, 4), (3, 6, 0)]:
        x = np.zeros(shape, dtype)
        for name in ("bn_eval", "gn", "ln", "rms"):
            out = np.empty(shape, dtype)
            assert Op(name, shape, dtype)(x, out=out) is out
        with pytest.raises(ValueError):
            F.layer_norm(x, shape[-1], out=np.empty((1,) + shape[1:], dtype))


def test_out_overlapping_weight_bias_or_running_stats():
    """Parameters that share memory with `out` are read as they were before the call (as NumPy
    does for overlapping ufunc operands), for every op that takes them."""
    rng = np.random.default_rng(6)
    dtype = np.float32
    # layer norm: weight / bias are rows of out
    x = rng.standard_normal((3, 5)).astype(dtype)
    for arg in ("weight", "bias"):
        for row in (0, 1, 2):
            buf = np.zeros((3, 5), dtype)
            p = buf[row]
            p[...] = rng.uniform(0.5, 1.5, 5)
            kw = {arg: p}
            want = F.layer_norm(x, 5, **{arg: p.copy()})
            y = F.layer_norm(x, 5, out=buf, **kw)
            assert _same(y, want), f"layer_norm {arg} = out[{row}]"
    # rms norm: weight is a row of out
    buf = np.zeros((3, 5), dtype)
    buf[0] = rng.uniform(0.5, 1.5, 5)
    want = F.rms_norm(x, 5, buf[0].copy())
    assert _same(F.rms_norm(x, 5, buf[0], out=buf), want), "rms_norm weight = out[0]"
    # per-channel ops: weight / bias / running stats are a column of out
    x = rng.standard_normal((4, 3, 2, 2)).astype(dtype)
    for name in ("bn_train", "bn_eval", "in_plain", "gn", "in_eval", "sn_train", "sn_eval"):
        for arg in ("w", "b", "erm", "erv"):
            op = Op(name, x.shape, dtype)
            buf = np.zeros(x.shape, dtype)
            p = buf[0, :, 0, 0]
            p[...] = getattr(op, arg)
            want = op(x)
            setattr(op, arg, p)
            y = op(x, out=buf)
            assert _same(y, want), f"{name}: {arg} is out[0, :, 0, 0]"


@pytest.mark.parametrize("which", ["running_mean", "running_var"])
def test_updated_running_stats_sharing_out_are_refused(which):
    """Running statistics updated in place are written after out, so they may not share its
    memory: a ValueError, raised before anything is written."""
    x = np.random.default_rng(7).standard_normal((4, 3)).astype(np.float32)
    out = np.full((4, 3), 7.0, np.float32)
    stats = {"running_mean": np.zeros(3, np.float32), "running_var": np.ones(3, np.float32)}
    stats[which] = out[0]
    for call in (lambda: F.batch_norm(x, stats["running_mean"], stats["running_var"],
                                      training=True, out=out),
                 lambda: F.instance_norm(x.T[None], stats["running_mean"], stats["running_var"],
                                         out=out.T[None]),
                 lambda: F.switch_norm(x, stats["running_mean"], stats["running_var"], None, None,
                                       np.ones(2), np.ones(2), training=True, out=out)):
        with pytest.raises(ValueError, match="must not share memory with out"):
            call()
        assert np.all(out == 7.0)
    # only read (eval): allowed, and read as they were before the call
    stats["running_mean"][...] = [0.5, -1.0, 2.0]
    stats["running_var"][...] = [1.0, 4.0, 0.25]
    want = F.batch_norm(x, stats["running_mean"].copy(), stats["running_var"].copy())
    got = F.batch_norm(x, stats["running_mean"], stats["running_var"], out=out)
    assert got is out and np.allclose(got, want, atol=1e-6)
