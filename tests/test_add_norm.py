"""add_layer_norm / add_rms_norm: the norm of input + residual, the sum rounded to the input dtype
first. Bit for bit the unfused x + r then layer_norm / rms_norm, over the awkward inputs; the
sum written to sum_out (which may be the residual or the input itself); out= aliasing; errors
before anything is written; against torch (unfused) and ONNX Runtime's com.microsoft
SkipLayerNormalization / SkipSimplifiedLayerNormalization."""
import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F
from fastnorm import reference as R

from awkward import TOL, assert_matches, awkward_inputs
from test_half import assert_ulp

try:
    import ml_dtypes
    DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16]
except ImportError:
    DTYPES = [np.float32, np.float64, np.float16]
IDS = [np.dtype(d).name for d in DTYPES]

OPS = {"add_layer_norm": (F.add_layer_norm, F.layer_norm, R.add_layer_norm),
       "add_rms_norm": (F.add_rms_norm, F.rms_norm, R.add_rms_norm)}


def _same(a, b):
    """Equal bits, whatever the layouts; NaN where the other has NaN, of any sign and payload
    (which operand's NaN an operation passes on is the compiler's choice: clang's build and
    GCC's differ in the sign of some)."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    nan = np.isnan(np.asarray(a, np.float64))
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return (np.array_equal(nan, np.isnan(np.asarray(b, np.float64)))
            and np.array_equal(a.view(uint)[~nan], b.view(uint)[~nan]))


def _args(op, L, dtype, seed=3):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(L).astype(np.float32)
    if op == "add_rms_norm":
        return (w,), {"eps": 1e-5}
    return (w, rng.standard_normal(L).astype(dtype)), {"eps": 1e-5}


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("shape", [(3, 4, 7), (2, 33), (1, 5, 1)], ids=lambda s: "x".join(map(str, s)))
def test_awkward_inputs(op, dtype, shape):
    """Against the float64 reference of the same (rounded) sum: TOL for float32/float64, 1 ulp
    for the 16-bit types; the kept sum is x + r exactly; with C-order operands the result is the
    unfused pipeline's bit for bit (other layouts may sum the statistics in another order)."""
    fused, plain, ref = OPS[op]
    L = shape[-1]
    args, kw = _args(op, L, dtype)
    args64 = tuple(np.asarray(a, np.float64) for a in args)
    r = (np.random.default_rng(9).standard_normal(shape) * 0.5).astype(dtype)
    n = 0
    for label, x in awkward_inputs(shape, dtype):
        for rlabel, rr in [("C", r), ("F", np.asfortranarray(r)), ("neg", r[..., ::-1].copy()[..., ::-1])]:
            s = np.add(x, rr)  # in the input dtype, as an unfused pipeline stores it
            s64 = np.asarray(s, np.float64)
            want = ref(s64, np.zeros_like(s64), L, *args64, **kw)
            sum_out = np.empty(shape, dtype)
            y, s2 = fused(x, rr, L, *args, **kw, sum_out=sum_out)
            assert s2 is sum_out and _same(sum_out, s), f"{op} {label} {rlabel}: sum"
            got = fused(x, rr, L, *args, **kw)
            for g in (y, got):
                if np.dtype(dtype) in TOL:
                    assert_matches(g, want, dtype, f"{op} {label} {rlabel}")
                else:
                    assert_ulp(g, want, dtype, 1, f"{op} {label} {rlabel}")
            if label.endswith("-C") and rlabel == "C":
                assert _same(y, plain(s, L, *args, **kw)), f"{op} {label}: not the unfused bits"
                assert _same(got, y), f"{op} {label}: sum_out changed the bits"
            n += 1
    assert n > 30


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_sum_out_and_out_aliasing(op, dtype):
    fused, plain, _ = OPS[op]
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((6, 40)).astype(dtype)
    r0 = rng.standard_normal((6, 40)).astype(dtype)
    s, want = np.add(x0, r0), plain(np.add(x0, r0), 40)
    # sum_out is the residual itself: the in-place residual-stream update
    x, r = x0.copy(), r0.copy()
    y, s2 = fused(x, r, 40, sum_out=r)
    assert s2 is r and _same(r, s) and _same(y, want) and _same(x, x0)
    # sum_out is the input; out is the residual
    x, r = x0.copy(), r0.copy()
    y, s2 = fused(x, r, 40, sum_out=x, out=r)
    assert s2 is x and y is r and _same(x, s) and _same(r, want)
    # out is the input, no sum kept
    x, r = x0.copy(), r0.copy()
    assert fused(x, r, 40, out=x) is x and _same(x, want) and _same(r, r0)
    # sum_out a shifted view of the residual's memory: written through a temporary
    buf = np.zeros(6 * 40 + 1, dtype)
    buf[1:] = r0.ravel()
    r, so = buf[1:].reshape(6, 40), buf[:-1].reshape(6, 40)
    y, s2 = fused(x0, r, 40, sum_out=so)
    assert s2 is so and _same(so, s) and _same(y, want)
    # channels-last-like views and strided outputs
    big = np.zeros((6, 81), dtype)
    y, s2 = fused(x0, r0, 40, out=big[:, ::2][:, :40], sum_out=big[:, 1::2])
    # statistics of the strided sum (summed in another order than a contiguous one's)
    assert _same(s2, s) and _same(y, plain(big[:, 1::2], 40))


@pytest.mark.parametrize("op", list(OPS))
def test_errors_before_anything_is_written(op):
    fused = OPS[op][0]
    x = np.ones((2, 5), np.float32)
    r = np.ones((2, 5), np.float32)
    so = np.full((2, 5), 7.0, np.float32)
    out = np.full((2, 5), 7.0, np.float32)
    bad = [
        (lambda: fused(x, np.ones((2, 4), np.float32), 5, sum_out=so, out=out), ValueError,
         "residual must have the input's shape"),
        (lambda: fused(x, np.ones((2, 5)), 5, sum_out=so, out=out), TypeError,
         "residual must have the input's dtype float32, got float64"),
        (lambda: fused(x, r, 5, sum_out=np.ones((2, 5)), out=out), TypeError,
         "sum_out must have dtype float32"),
        (lambda: fused(x, r, 5, sum_out=out, out=out), ValueError, "must not share memory"),
        (lambda: fused(x, r, 5, sum_out=[[0.0] * 5] * 2, out=out), TypeError,
         "sum_out must be a numpy.ndarray"),
        (lambda: fused(x, r, 4, sum_out=so, out=out), ValueError, "normalized_shape"),
        (lambda: fused(x, r, 5, sum_out=so, out=out, activation="tanh"), ValueError,
         "activation must be None"),
        (lambda: fused(x.astype(np.int32), r, 5, sum_out=so, out=out), TypeError,
         "float16, bfloat16"),
    ]
    for call, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            call()
        assert (so == 7).all() and (out == 7).all()


def test_large_rows_and_threads():
    """Rows larger than the fused path takes (the sum first, then normalize_rows), one row, and
    many short rows: the same bits for 1 and 2 threads, and the unfused pipeline's bits."""
    rng = np.random.default_rng(0)
    for shape in [(2, 300000), (1, 70000), (512, 96)]:
        x = rng.standard_normal(shape).astype(np.float32)
        r = rng.standard_normal(shape).astype(np.float32)
        want = F.layer_norm(x + r, shape[-1])
        for nt in (1, 2):
            fastnorm.set_num_threads(nt)
            so = np.empty_like(x)
            y, _ = F.add_layer_norm(x, r, shape[-1], sum_out=so)
            assert _same(y, want) and _same(so, x + r), (shape, nt)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_strided_rows_same_bits_for_any_thread_count_and_output(dtype):
    """Rows with an element stride (transposed views), no sum_out: the statistics are those of
    the sum's rows stored densely, whatever the path (the thread count picks fused or not) and
    the output (C or transposed, in place): layer_norm of the C-order sum, bit for bit. The
    fused path had summed into a dense scratch where one thread summed into the strided
    output (other bits), and vice versa for in-place calls after a first fix."""
    rng = np.random.default_rng(3)
    R, L = 5, 8192
    x, r = (np.ascontiguousarray(rng.standard_normal((L, R)).astype(dtype)).T for _ in range(2))
    t = np.ascontiguousarray(x + r)
    want = F.layer_norm(t, L), F.rms_norm(t, L)
    for nt in (1, 2, 3):
        fastnorm.set_num_threads(nt)
        for order in ("C", "A", "in place"):
            def out():
                return x.copy(order="A") if order == "in place" else np.empty_like(x, order=order)
            o1, o2 = out(), out()
            xa, xb = (o1, o2) if order == "in place" else (x, x)
            got = F.add_layer_norm(xa, r, L, out=o1), F.add_rms_norm(xb, r, L, out=o2)
            for g, w in zip(got, want):
                assert _same(g, w), (nt, order)


def test_activation_and_torch(torch):
    TF = torch.nn.functional
    rng = np.random.default_rng(1)
    x, r = (rng.standard_normal((4, 9, 64)).astype(np.float32) for _ in range(2))
    w, b = (rng.standard_normal(64).astype(np.float32) for _ in range(2))
    tx, tr, tw, tb = map(torch.from_numpy, (x, r, w, b))
    got = F.add_layer_norm(x, r, 64, w, b, activation="gelu")
    want = TF.gelu(TF.layer_norm(tx + tr, (64,), tw, tb)).numpy()
    assert np.abs(got - want).max() <= 2e-6
    got = F.add_rms_norm(x, r, 64, w, 1e-6, activation="silu")
    want = TF.silu(TF.rms_norm(tx + tr, (64,), tw, 1e-6)).numpy()
    assert np.abs(got - want).max() <= 2e-6


@pytest.mark.parametrize("rms", [False, True], ids=["SkipLayerNormalization",
                                                     "SkipSimplifiedLayerNormalization"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
def test_onnxruntime_skip_norms(rms, dtype):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from ort_skip import skip_norm_session

    rng = np.random.default_rng(2)
    shape = (2, 7, 96)
    x, r = ((rng.standard_normal(shape) * 2 + 1).astype(dtype) for _ in range(2))
    w, b = (rng.standard_normal(96).astype(dtype) for _ in range(2))
    ort_y, ort_s = skip_norm_session(rms, shape, w, None if rms else b)(x, r)
    so = np.empty_like(x)
    if rms:
        y, s = F.add_rms_norm(x, r, 96, w, 1e-5, sum_out=so)
    else:
        y, s = F.add_layer_norm(x, r, 96, w, b, 1e-5, sum_out=so)
    assert np.array_equal(s, ort_s)
    tol = 1e-5 if dtype == np.float32 else 4e-3  # float16: ~2 ulp at the outputs' scale (~4)
    assert np.abs(y.astype(np.float64) - ort_y).max() <= tol
