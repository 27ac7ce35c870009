"""fastnorm.dask against in-memory fastnorm, on dask's threaded scheduler and on a
dask.distributed LocalCluster of 2 worker processes (loopback only; started once for this
module, closed at its end). Several chunkings, uneven ones included, split normalized axes
included; the float32 offset-1e6 accuracy next to dask's own mean/var; laziness (how many times
the input's chunks are read); argument checks before any state changes."""
import subprocess
import warnings
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastnorm  # noqa: E402
import fastnorm.dask as fd  # noqa: E402
from fastnorm import functional as F, reference  # noqa: E402

SHAPE = (6, 8, 10, 12)
# (chunks, label): whole, even, uneven, spatial split, channel split across groups, 1-element
CHUNKINGS = [
    (SHAPE, "whole"),
    ((3, 4, 5, 6), "even"),
    (((1, 5), (3, 5), (4, 4, 2), (7, 5)), "uneven"),
    ((6, 8, 3, 12), "spatial-split"),
    (((2, 4), (2, 6), 10, 12), "channels-split"),
    ((1, 1, 10, 12), "per-plane"),
]
TOL = {np.float32: 1e-6, np.float64: 1e-12}


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 worker processes on 127.0.0.1 and a Client (not the default one:
    each test picks its scheduler)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  worker_dashboard_address=None) as c:
        with distributed.Client(c, set_as_default=False) as client:
            yield client


@pytest.fixture(params=["threads", "distributed"])
def scheduler(request):
    if request.param == "threads":
        with dask.config.set(scheduler="threads"):
            yield "threads"
    else:
        client = request.getfixturevalue("cluster")
        with dask.config.set(scheduler=client.get):
            yield client


def _data(dtype, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(SHAPE) * 2 + 0.5 + offset).astype(dtype)


def _params(dtype, n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)


def _err(got, want):
    """max |got - want| relative to max(1, |want|)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)))) if want.size else 0.0


def _all_ops(x, xn, dtype):
    """(name, dask result, in-memory result, running stats pairs) for every op."""
    C = SHAPE[1]
    w, b = _params(dtype, C)
    W, B = _params(dtype, SHAPE[-1] * SHAPE[-2], seed=2)
    W, B = W.reshape(SHAPE[-2:]), B.reshape(SHAPE[-2:])
    out = []
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    rm2, rv2 = rm.copy(), rv.copy()
    out.append(("batch_norm[train]", fd.batch_norm(x, rm, rv, w, b, True, 0.3),
                F.batch_norm(xn, rm2, rv2, w, b, True, 0.3), [(rm, rm2), (rv, rv2)]))
    out.append(("batch_norm[eval]", fd.batch_norm(x, rm, rv, w, b),
                F.batch_norm(xn, rm2, rv2, w, b), []))
    out.append(("instance_norm", fd.instance_norm(x, weight=w, bias=b),
                F.instance_norm(xn, weight=w, bias=b), []))
    im, iv = np.zeros(C, dtype), np.ones(C, dtype)
    im2, iv2 = im.copy(), iv.copy()
    out.append(("instance_norm[running]", fd.instance_norm(x, im, iv, w, b, momentum=0.5),
                F.instance_norm(xn, im2, iv2, w, b, momentum=0.5), [(im, im2), (iv, iv2)]))
    out.append(("instance_norm[eval]", fd.instance_norm(x, im, iv, use_input_stats=False),
                F.instance_norm(xn, im2, iv2, use_input_stats=False), []))
    out.append(("layer_norm", fd.layer_norm(x, SHAPE[-2:], W, B),
                F.layer_norm(xn, SHAPE[-2:], W, B), []))
    out.append(("layer_norm[1]", fd.layer_norm(x, SHAPE[-1], eps=1e-3),
                F.layer_norm(xn, SHAPE[-1], eps=1e-3), []))
    out.append(("rms_norm", fd.rms_norm(x, SHAPE[-2:], W), F.rms_norm(xn, SHAPE[-2:], W), []))
    out.append(("group_norm", fd.group_norm(x, 4, w, b), F.group_norm(xn, 4, w, b), []))
    out.append(("group_norm[1]", fd.group_norm(x, 1), F.group_norm(xn, 1), []))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunks,label", CHUNKINGS, ids=[c[1] for c in CHUNKINGS])
def test_ops_match_in_memory_fastnorm(chunks, label, dtype, scheduler):
    if scheduler != "threads" and (label != "uneven" or dtype != np.float32):
        # uneven splits N, C (across groups) and the spatial axes: every code path
        pytest.skip("on the cluster: the uneven chunking, float32")
    xn = _data(dtype)
    x = da.from_array(xn, chunks=chunks)
    ops = _all_ops(x, xn, dtype)
    results = dask.compute(*[y for _, y, _, _ in ops])  # one graph: less scheduler overhead
    for (name, y, want, running), got in zip(ops, results):
        assert isinstance(y, da.Array) and y.dtype == dtype and y.chunks == x.chunks, name
        assert got.dtype == dtype
        err = _err(got, want)
        assert err <= TOL[dtype], f"{name} {label}: {err:.3g}"
        for r, r2 in running:
            assert r.dtype == dtype and _err(r, r2) <= TOL[dtype], f"{name} {label}: running"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunks,label", CHUNKINGS, ids=[c[1] for c in CHUNKINGS])
def test_moments_match_in_memory(chunks, label, dtype, scheduler):
    if scheduler != "threads" and (label != "uneven" or dtype != np.float64):
        pytest.skip("on the cluster: the uneven chunking, float64")
    xn = _data(dtype, offset=100.0)
    x = da.from_array(xn, chunks=chunks)
    cases = [(axis, ddof, keepdims) for axis in (None, 0, (0, 2, 3), (2, 3), -1, (1, 3))
             for ddof, keepdims in ((0, False), (1, True))]
    lazy = [fd.moments(x, axis, ddof=ddof, keepdims=keepdims) for axis, ddof, keepdims in cases]
    assert all(m.dtype == v.dtype == dtype for m, v in lazy)
    for (axis, ddof, keepdims), (mean, var) in zip(cases, dask.compute(*lazy)):
        m2, v2 = fastnorm.moments(xn, axis, ddof=ddof, keepdims=keepdims)
        assert np.shape(mean) == np.shape(m2) and np.shape(var) == np.shape(v2)
        assert _err(mean, m2) <= TOL[dtype] and _err(var, v2) <= TOL[dtype], (label, axis)


def test_nan_and_inf_chunks_match_in_memory():
    xn = _data(np.float64)
    xn[0, 0, 0, 0] = np.inf   # one chunk's mean is inf, merged with finite ones
    xn[4, 1, 9, 11] = np.nan
    xn[5, 2, :, :] = -np.inf  # a whole plane
    x = da.from_array(xn, chunks=(2, 3, 4, 5))
    for axis in (None, 0, (0, 2, 3), (2, 3)):
        with np.errstate(invalid="ignore"):
            got = dask.compute(*fd.moments(x, axis))
            want = fastnorm.moments(xn, axis)
        for g, w in zip(got, want):
            assert np.allclose(g, w, rtol=1e-12, atol=0, equal_nan=True), axis  # inf: equal
    y = fd.layer_norm(x, (10, 12)).compute()
    assert np.array_equal(np.isnan(y), np.isnan(F.layer_norm(xn, (10, 12))))
    # rows split across chunks: a row with an inf has mean square inf (0 beside the inf, as
    # in memory and torch), not the NaN of var + mean^2 = inf - inf
    with np.errstate(invalid="ignore"):
        want = F.rms_norm(xn, (10, 12))
    y = fd.rms_norm(x, (10, 12)).compute()
    assert not np.isnan(want[0, 0]).all() and np.array_equal(np.isnan(y), np.isnan(want))
    assert np.allclose(y, want, rtol=1e-12, atol=1e-15, equal_nan=True)


def test_float32_offset_1e6_next_to_dask(scheduler, capsys):
    """float32 data around 1e6: fastnorm.dask within 5e-5 of the float64-exact result (relative
    for the statistics, absolute for the normalized output); dask's own x.mean()/x.var()
    printed beside."""
    rng = np.random.default_rng(9)
    xn = (rng.standard_normal((64, 4, 32, 32)) * 3 + 1e6).astype(np.float32)
    x = da.from_array(xn, chunks=((10, 30, 24), (1, 3), 32, (20, 12)))
    x64 = xn.astype(np.float64)
    exact_mean, exact_var = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
    mean, var = dask.compute(*fd.moments(x, axis=(0, 2, 3)))
    dmean, dvar = dask.compute(x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)))
    rel = lambda a, e: float(np.max(np.abs(np.asarray(a, np.float64) - e) / np.abs(e)))  # noqa
    ours = rel(mean, exact_mean), rel(var, exact_var)
    theirs = rel(dmean, exact_mean), rel(dvar, exact_var)
    y = fd.batch_norm(x, None, None, training=True).compute()
    yerr = float(np.max(np.abs(y - reference.batch_norm(x64, None, None, training=True))))
    with capsys.disabled():
        print(f"\n[{'threads' if scheduler == 'threads' else 'distributed'}] float32 at 1e6, "
              f"max relative error of mean / var: fastnorm.dask {ours[0]:.1e} / {ours[1]:.1e}, "
              f"dask x.mean()/x.var() {theirs[0]:.1e} / {theirs[1]:.1e}; batch_norm output "
              f"max abs error {yerr:.1e}")
    assert ours[0] <= 5e-5 and ours[1] <= 5e-5 and yerr <= 5e-5


class _Reads:
    """Counts the chunks of an input read (a map_blocks identity), across threads."""

    def __init__(self):
        self.n = 0

    def __call__(self, block):
        self.n += 1
        return block


def test_laziness_and_passes():
    """Training batch_norm reads the data once when called (running stats already updated),
    the output once more when computed; the other ops read nothing until computed."""
    xn = _data(np.float64)
    reads = _Reads()
    with dask.config.set(scheduler="sync"):
        x = da.from_array(xn, chunks=(3, 4, 5, 6)).map_blocks(reads, dtype=xn.dtype,
                                                              meta=np.empty((0,) * 4))
        nb = x.npartitions
        rm, rv = np.zeros(8), np.ones(8)
        y = fd.batch_norm(x, rm, rv, training=True)
        assert reads.n == nb and not np.array_equal(rm, np.zeros(8))
        saved = rm.copy()
        ys = [fd.batch_norm(x, rm, rv), fd.instance_norm(x), fd.layer_norm(x, SHAPE[-2:]),
              fd.rms_norm(x, SHAPE[-1]), fd.group_norm(x, 2), *fd.moments(x, (0, 2))]
        assert reads.n == nb, "an op read the data before its result was computed"
        rm[...] = 123.0  # the eval-mode result uses the running stats as they were at the call
        got = ys[0].compute()
        assert np.allclose(got, F.batch_norm(xn, saved, rv), atol=1e-12)
        y.compute()
        assert reads.n == 3 * nb


def test_normalized_axes_split_are_not_normalized_per_chunk():
    """A chunk holding part of a layer-norm row must not be normalized on its own: each chunk's
    half of a row has its own mean, which a per-chunk normalization would remove."""
    xn = np.concatenate([np.zeros((4, 8)), np.full((4, 8), 10.0)], axis=1)
    xn += np.random.default_rng(3).standard_normal(xn.shape) * 0.1
    for chunks in ((4, 8), (1, 3), (2, 16)):
        got = fd.layer_norm(da.from_array(xn, chunks=chunks), 16).compute()
        assert np.allclose(got, F.layer_norm(xn, 16), atol=1e-12)
        assert np.allclose(got[:, :8], -1.0, atol=0.1)  # not 0: the row's mean is 5


def test_unknown_chunk_sizes_raise():
    x = da.from_array(np.arange(24.0).reshape(4, 6), chunks=(2, 3))
    y = x[x[:, 0] > 5]  # chunk sizes along axis 0 unknown
    for call in (lambda: fd.layer_norm(y, 6), lambda: fd.moments(y),
                 lambda: fd.batch_norm(y, None, None, training=True)):
        with pytest.raises(ValueError, match="chunk sizes are unknown"):
            call()
    y.compute_chunk_sizes()
    assert np.allclose(fd.layer_norm(y, 6).compute(), F.layer_norm(y.compute(), 6))


def test_checks_before_any_state_changes():
    xn = _data(np.float32)
    x = da.from_array(xn, chunks=(3, 4, 5, 6))
    rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
    bad = [
        (lambda: fd.batch_norm(x, rm, rv, np.ones(7), training=True), ValueError,
         r"batch_norm: expected weight of shape \(8,\), got shape \(7,\)"),
        (lambda: fd.batch_norm(x, rm, rv, training=True, momentum=np.inf), ValueError,
         "momentum must be finite"),
        (lambda: fd.batch_norm(x, rm, rv, training=True, eps=0.0), ValueError,
         "eps must be positive during training"),
        (lambda: fd.batch_norm(x, rm, None, training=True), ValueError, "given together"),
        (lambda: fd.batch_norm(x, rm, rv.tolist(), training=True), TypeError,
         "running_var must be a numpy.ndarray"),
        (lambda: fd.batch_norm(x, None, None), ValueError, "required when training=False"),
        (lambda: fd.batch_norm(x, rm, rv, training="no"), TypeError, "training must be a bool"),
        (lambda: fd.instance_norm(x, rm, rv, use_input_stats=None), TypeError,
         "use_input_stats must be a bool"),
        (lambda: fd.batch_norm(x[:1, :, :1, :1], rm, rv, training=True), ValueError,
         "more than 1 value per channel"),
        (lambda: fd.instance_norm(x, rm, rv, eps=-1.0), ValueError, "eps must be finite and >= 0"),
        (lambda: fd.instance_norm(x[..., :1, :1], rm, rv), ValueError,
         "more than 1 spatial element"),
        (lambda: fd.group_norm(x, 3), ValueError, "divisible by num_groups"),
        (lambda: fd.group_norm(x, 2.0), TypeError, "num_groups must be an int"),
        (lambda: fd.layer_norm(x, (10,)), ValueError, r"expected input with shape \[\*, 10\]"),
        (lambda: fd.rms_norm(x, 12, np.ones(11)), ValueError, "expected weight of shape"),
        (lambda: fd.layer_norm(x.astype(np.int32), 12), TypeError, "got dtype int32"),
        (lambda: fd.batch_norm(x[0, 0, 0], rm, rv), ValueError, "at least 2 dimensions"),
        (lambda: fd.moments(x, axis=4), np.exceptions.AxisError, "axis 4"),
        (lambda: fd.moments(x, ddof="0"), TypeError, "ddof must be a real number"),
    ]
    for call, exc, match in bad:
        with pytest.raises(exc, match=match):
            call()
        assert np.array_equal(rm, np.zeros(8)) and np.array_equal(rv, np.ones(8))


def test_numpy_input_and_empty_arrays():
    xn = _data(np.float64)
    assert np.allclose(fd.layer_norm(xn, 12).compute(), F.layer_norm(xn, 12))  # da.asarray
    e = da.zeros((0, 3, 4), chunks=(1, 3, 4))
    assert fd.batch_norm(e, np.zeros(3), np.ones(3)).compute().shape == (0, 3, 4)
    assert fd.layer_norm(e, 4).compute().shape == (0, 3, 4)
    mean, var = dask.compute(*fd.moments(e, axis=0))
    assert np.isnan(mean).all() and np.isnan(var).all() and mean.shape == (3, 4)
    # chunks of no channels among whole spatial axes (group_norm's per-chunk path)
    x = da.from_array(xn[:, :6], chunks=(2, (3, 0, 3), 10, 12))
    for op in (lambda a: fd.group_norm(a, 2), lambda a: fd.instance_norm(a)):
        got = op(x).compute()
        assert np.allclose(got, op(xn[:, :6]).compute(), rtol=1e-12, atol=1e-12)
    # rows split into chunks, one of no elements: no warning, the in-memory result
    x = da.from_array(xn[:2, :6], chunks=(2, 6, 10, (5, 0, 7)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fd.rms_norm(x, (10, 12)).compute()
    assert np.allclose(got, F.rms_norm(xn[:2, :6], (10, 12)), rtol=1e-12, atol=1e-12)


def test_import_fastnorm_does_not_import_dask():
    code = "import sys, fastnorm; print('dask' in sys.modules, 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]
