"""Threads: set_num_threads/get_num_threads, the OpenMP default (OMP_NUM_THREADS, threadpoolctl)
read at every call, bitwise-identical results for any thread count on every kernel path, and
concurrent calls from several Python threads."""
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastnorm
import fastnorm.functional as F
from fastnorm import _runtime, reference

THREADS = [1, 2, 3, 4, 7, 16, 64]
DTYPES = [np.float32, np.float64]
HAVE_OMP = _runtime.have_openmp()


def _runs(n):
    """The thread count kernels report after set_num_threads(n): 1 in a build without OpenMP."""
    return n if HAVE_OMP else 1


# --------------------------------------------------------------------------------------------
# set_num_threads / get_num_threads


def test_set_and_get_num_threads():
    for n in (1, 2, 3, 7, 64):
        fastnorm.set_num_threads(n)
        assert fastnorm.get_num_threads() == _runs(n)
    assert fastnorm.set_num_threads is _runtime.set_num_threads


@pytest.mark.parametrize("bad", [0, -1, -64, 2**40, 2**63])
def test_set_num_threads_rejects_out_of_range(bad):
    fastnorm.set_num_threads(3)
    with pytest.raises((ValueError, OverflowError)):
        fastnorm.set_num_threads(bad)
    assert fastnorm.get_num_threads() == _runs(3), "a rejected call changed the thread count"


@pytest.mark.parametrize("bad", ["2", 2.5, 3.0, [2], False])
def test_set_num_threads_rejects_non_integers(bad):
    """Not an int: TypeError, and the setting is left alone. A float is refused rather than
    truncated (torch.set_num_threads(2.5) raises too)."""
    fastnorm.set_num_threads(3)
    with pytest.raises(TypeError):
        fastnorm.set_num_threads(bad)
    assert fastnorm.get_num_threads() == _runs(3)


def test_default_follows_threadpoolctl_at_every_call():
    fastnorm.set_num_threads(None)
    base = fastnorm.get_num_threads()
    assert base >= 1
    for lim in (1, 3, 5):
        with threadpool_limits(limits=lim, user_api="openmp"):
            assert fastnorm.get_num_threads() == _runs(lim)
            fastnorm.set_num_threads(2)  # an explicit setting wins over the OpenMP limit
            assert fastnorm.get_num_threads() == _runs(2)
            fastnorm.set_num_threads(None)  # and None follows the limit again
            assert fastnorm.get_num_threads() == _runs(lim)
        assert fastnorm.get_num_threads() == base


def _python(code, **env):
    """Run code in a fresh interpreter with env overrides (None removes a variable)."""
    e = dict(os.environ)
    e.setdefault("OPENBLAS_NUM_THREADS", "1")
    for k, v in env.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=e, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"subprocess failed (rc={r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout.split()


@pytest.mark.skipif(not HAVE_OMP, reason="built without OpenMP")
@pytest.mark.parametrize("omp", ["1", "3", "7"])
def test_default_follows_omp_num_threads(omp):
    out = _python("import fastnorm; print(fastnorm.get_num_threads())", OMP_NUM_THREADS=omp)
    assert out == [omp]


@pytest.mark.skipif(not HAVE_OMP, reason="built without OpenMP")
def test_default_without_omp_num_threads_is_the_cpu_count():
    out = _python("import os, fastnorm; print(fastnorm.get_num_threads(), "
                  "len(os.sched_getaffinity(0)))", OMP_NUM_THREADS=None)
    assert out[0] == out[1]


@pytest.mark.skipif(not HAVE_OMP, reason="built without OpenMP")
def test_default_is_not_cached_at_import():
    """Imported under OMP_NUM_THREADS=4, then limited by threadpoolctl, then set and reset."""
    out = _python("""
        import fastnorm
        from threadpoolctl import threadpool_limits
        r = [fastnorm.get_num_threads()]
        with threadpool_limits(limits=2, user_api="openmp"):
            r.append(fastnorm.get_num_threads())
            fastnorm.set_num_threads(5)
            r.append(fastnorm.get_num_threads())
            fastnorm.set_num_threads(None)
            r.append(fastnorm.get_num_threads())
        r.append(fastnorm.get_num_threads())
        print(*r)
    """, OMP_NUM_THREADS="4")
    assert out == ["4", "2", "5", "2", "4"]


_COUNT_THREADS = """
    import os
    import numpy as np
    import fastnorm, fastnorm.functional as F
    from threadpoolctl import threadpool_limits
    def tasks():
        return len(os.listdir("/proc/self/task"))
    x = np.random.default_rng(0).standard_normal((64, 64, 4096)).astype(np.float32)
    r = [tasks()]
    with threadpool_limits(limits=1, user_api="openmp"):
        F.group_norm(x, 8); F.layer_norm(x, 4096)
    r.append(tasks())
    F.group_norm(x, 8); F.layer_norm(x, 4096)  # OMP_NUM_THREADS again
    r.append(tasks())
    fastnorm.set_num_threads(6)
    F.group_norm(x, 8); F.layer_norm(x, 4096)
    r.append(tasks())
    print(*r)
"""


@pytest.mark.skipif(not HAVE_OMP, reason="built without OpenMP")
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_thread_settings_reach_the_kernels():
    """The limits are not only reported but used: OpenMP's pool grows to what is allowed (a fresh
    process; libgomp keeps its worker threads alive between parallel regions)."""
    base, limited, default, six = map(int, _python(_COUNT_THREADS, OMP_NUM_THREADS="3"))
    assert limited == base, "threadpool_limits(1) was ignored: worker threads were started"
    assert default >= base + 2, "OMP_NUM_THREADS=3 did not give 3 threads"
    assert six >= base + 5, "set_num_threads(6) did not give 6 threads"


# --------------------------------------------------------------------------------------------
# bitwise identity across thread counts


def _data(shape, dtype, seed, offset=3.0, layout=None):
    """Random data with an offset (so that rounding differences would show) in a layout:
    None (C order), 'channels_last' (N, C, *S stored as N, *S, C) or 'fortran'."""
    rng = np.random.default_rng(seed)
    if layout == "channels_last":
        nd = len(shape)
        perm = (0,) + tuple(range(2, nd)) + (1,)
        base = rng.standard_normal([shape[p] for p in perm]) * 2.5 + offset
        x = base.astype(dtype).transpose(np.argsort(perm))
        assert x.shape == tuple(shape) and x.strides[1] == x.itemsize
        return x
    x = (rng.standard_normal(shape) * 2.5 + offset).astype(dtype)
    if layout == "fortran":
        x = np.asfortranarray(x)
    return x


def _vec(n, dtype, seed, lo=0.5, hi=1.5):
    return np.random.default_rng(seed).uniform(lo, hi, n).astype(dtype)


def _bn_train(x):
    C = x.shape[1]
    rm, rv = _vec(C, x.dtype, 1, -1, 1), _vec(C, x.dtype, 2)
    y = F.batch_norm(x, rm, rv, _vec(C, x.dtype, 3), _vec(C, x.dtype, 4, -1, 1), True, 0.3)
    return y, rm, rv


def _bn_eval(x):
    C = x.shape[1]
    rm, rv = _vec(C, np.float64, 1, 2, 4), _vec(C, x.dtype, 2, 4, 9)
    return (F.batch_norm(x, rm, rv, _vec(C, x.dtype, 3), _vec(C, x.dtype, 4, -1, 1), False),)


def _in_train(x):
    C = x.shape[1]
    rm, rv = _vec(C, x.dtype, 1, -1, 1), _vec(C, x.dtype, 2)
    y = F.instance_norm(x, rm, rv, _vec(C, x.dtype, 3), _vec(C, x.dtype, 4, -1, 1), True, 0.2)
    return y, rm, rv


def _in_plain(x):
    return (F.instance_norm(x),)


def _gn(G):
    def f(x):
        C = x.shape[1]
        return (F.group_norm(x, G, _vec(C, x.dtype, 3), _vec(C, x.dtype, 4, -1, 1)),)
    f.__name__ = f"gn{G}"
    return f


def _gn_stats(G):
    """GroupNorm's output and the statistics it keeps for a backward pass (float64 per group:
    differences there do not round away as the output's may)."""
    def f(x):
        N, C = x.shape[:2]
        HW = int(np.prod(x.shape[2:]))
        return F.native_group_norm(x, _vec(C, x.dtype, 3), None, N, C, HW, G, 1e-5)
    f.__name__ = f"gn{G}_stats"
    return f


def _ln(k, affine=True):
    def f(x):
        ns = x.shape[x.ndim - k:]
        if affine:
            n = int(np.prod(ns))
            w = _vec(n, x.dtype, 5).reshape(ns)
            b = _vec(n, x.dtype, 6, -1, 1).reshape(ns)
            return (F.layer_norm(x, ns, w, b),)
        return (F.layer_norm(x, ns),)
    return f


def _ln_inplace(x):
    x = x.copy(order="K")
    y = F.layer_norm(x, x.shape[-1], out=x)
    assert y is x
    return (y,)


def _rms(k):
    def f(x):
        ns = x.shape[x.ndim - k:]
        w = _vec(int(np.prod(ns)), x.dtype, 7).reshape(ns)
        return (F.rms_norm(x, ns, w), F.rms_norm(x, ns, eps=1e-6))
    return f


# (id, shape, layout, [ops]): every kernel path. Group sizes in float32/float64 elements; the
# fused kernel takes groups up to max(512 KiB, L3 / (4 * threads)) when the groups share out
# evenly over the threads, so several of these switch between fused and unfused with the count.
CASES = [
    # BN over NCHW: rows kernel, channel = group of Q=N rows of L=H*W (short rows gathered)
    ("nchw", (16, 24, 31, 29), None, [_bn_train, _bn_eval, _in_train, _in_plain, _gn(6),
                                      _ln(1), _ln(2), _ln(3), _rms(1), _rms(2)]),
    # many small groups (fused for every count) vs few big groups (> 512 KiB, unfused for many
    # threads; 4.5 MB float32 groups are fused with one thread, 9 MB float64 ones never)
    ("many_groups", (8, 48, 37, 41), None, [_gn(12), _gn(48), _in_train]),
    ("big_groups", (2, 4, 701, 803), None, [_gn(2), _gn(1), _bn_train, _bn_eval, _in_train,
                                            _ln(2, False)]),
    # 3 groups: fused only where 3 divides the thread count's share
    ("three_rows", (3, 200003), None, [_ln(1), _rms(1), _bn_train]),
    # channels-last (NHWC seen as NCHW): column statistics kernel and column normalize kernel
    ("channels_last", (6, 37, 29, 33), "channels_last", [_bn_train, _bn_eval, _in_train,
                                                         _in_plain, _gn(37), _gn(1), _ln(1)]),
    ("channels_last_3d", (3, 300, 5, 7, 9), "channels_last", [_bn_train, _gn(30), _in_train]),
    # channels-last samples that a thread can take whole (group_cols per sample) while one call
    # over all samples would be cut into fewer, taller row blocks: the blocks must not change
    ("channels_last_samples", (4, 64, 32, 32), "channels_last", [_gn(64), _gn(8), _in_train]),
    # tall samples: past 8 pieces the column statistics' row blocks keep halving down to 512
    # rows (16 pieces here), for any thread count
    ("channels_last_tall", (2, 24, 64, 64), "channels_last", [_bn_train, _gn(6), _in_train]),
    # one channels-last sample of wide groups: units of whole groups (group_cols' single-sample
    # path; groups of 6-96 channels, 8 units or, for 6 and 12 groups, a group a unit)
    ("channels_last_one_sample", (1, 768, 12, 12), "channels_last",
     [_gn(32), _gn(8), _gn(6), _gn(12), _gn_stats(32), _gn_stats(6), _in_train]),
    # wide rows: several statistics tiles, coefficients applied in column chunks
    ("channels_last_wide", (3, 2601, 4, 5), "channels_last", [_bn_train, _bn_eval, _in_train,
                                                              _gn(3), _gn(1)]),
    # (N, C): channels innermost, many row blocks per column
    ("nc_tall", (70001, 12), None, [_bn_train, _bn_eval, _gn(4), _ln(1), _rms(1)]),
    # long rows (> 4096: several statistics blocks and normalize chunks per row)
    ("long_rows", (2, 3, 70001), None, [_ln(1), _rms(1), _in_train, _gn(3), _bn_train,
                                        _ln_inplace]),
    ("ln_multi_axis", (5, 7, 9, 1301), None, [_ln(2), _ln(3), _rms(2), _rms(3)]),
    # rows of 2-4 KB in cache: the fused kernel takes 4-7 of them at a time (float32), and the
    # last unit fewer
    ("mid_rows", (203, 520), None, [_ln(1), _ln(1, False), _rms(1)]),
    ("mid_rows_1000", (101, 1000), None, [_ln(1), _rms(1)]),
    # long rows with a per-element affine in cache: the fused kernel takes up to 4 at a time,
    # 1024 columns of each in turn (a short last chunk; 37 rows: a short last unit)
    ("long_affine_rows", (37, 2500), None, [_ln(1), _ln(1, False), _rms(1)]),
    # Fortran order: transposed strides (or the copy fallback)
    ("fortran", (9, 10, 11, 12), "fortran", [_bn_train, _in_train, _gn(5), _ln(1), _ln(2),
                                             _rms(1)]),
]


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bitwise_identical_for_any_thread_count(case, dtype):
    name, shape, layout, ops = case
    x = _data(shape, dtype, seed=len(name), layout=layout)
    x0 = x.copy(order="K")
    for op in ops:
        fastnorm.set_num_threads(1)
        want = [_bits(a) for a in op(x)]
        for n in THREADS[1:]:
            fastnorm.set_num_threads(n)
            got = op(x)
            assert len(got) == len(want)
            for i, (g, w) in enumerate(zip(got, want)):
                assert g.dtype == dtype or i > 0
                assert np.array_equal(_bits(g), w), (
                    f"{name} {op.__name__} result {i}: {n} threads differ from 1 thread "
                    f"({np.count_nonzero(_bits(g) != w)} of {w.size} values)")
    assert np.array_equal(_bits(x), _bits(x0)), "input modified"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_nan_statistics_identical_for_any_thread_count(dtype):
    """A group holding a NaN and both infinities: its statistics are NaN, and so its outputs
    and running mean, with the same bits (the sign of a NaN included) for any thread count.
    Which NaN an addition passes on (the data's or the negative one that inf - inf makes)
    follows its operands' order, which may differ between the serial and parallel copies of a
    loop: the statistics keep one NaN."""
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    dtype = np.dtype(dtype)
    utype = np.uint16 if dtype.itemsize == 2 else np.uint32
    for shape in [(2, 3, 128, 128), (5, 17, 33, 31)]:
        x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
        f = x.reshape(-1)
        f[100], f[5000], f[6000] = np.nan, np.inf, -np.inf
        calls = {"bn": lambda rm: F.batch_norm(x, rm, np.ones_like(rm), training=True),
                 "gn": lambda rm: F.group_norm(x, 1), "in": lambda rm: F.instance_norm(x)}
        for name, call in calls.items():
            got = []
            for n in THREADS:
                fastnorm.set_num_threads(n)
                rm = np.zeros(shape[1], np.float32)
                y = call(rm)
                got.append((y.view(utype).copy(), rm.view(np.uint32).copy()))
            assert np.isnan(np.asarray(got[0][0].view(dtype), np.float32)).any()
            for n, (y, rm) in zip(THREADS[1:], got[1:]):
                assert np.array_equal(y, got[0][0]) and np.array_equal(rm, got[0][1]), (
                    f"{dtype} {shape} {name}: {n} threads differ from 1 thread")


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_rows_taken_together_match_rows_alone(dtype, activation):
    """The fused kernel normalizes several long affine rows column chunk by column chunk; each
    row's bits are those of the row normalized on its own."""
    x = _data((23, 2 * 1024 + 77), dtype, seed=11)
    x[3, 100], x[4, 2000], x[5, :] = np.nan, np.inf, 7.0  # NaN, inf and a constant row
    L = x.shape[1]
    w, b = _vec(L, dtype, 5), _vec(L, dtype, 6, -1, 1)
    calls = {"ln": lambda a: F.layer_norm(a, L, w, b, activation=activation),
             "rms": lambda a: F.rms_norm(a, L, w, activation=activation)}
    for n in (1, 2, 3):
        fastnorm.set_num_threads(n)
        for name, f in calls.items():
            together = f(x)
            alone = np.concatenate([f(x[i:i + 1]) for i in range(len(x))])
            assert np.isnan(together[3]).all() and np.isfinite(together[6:]).all()
            assert np.array_equal(_bits(together), _bits(alone)), (
                f"{name} {activation} {n} threads: "
                f"{np.count_nonzero(_bits(together) != _bits(alone))} values differ")


@pytest.mark.parametrize("activation", [None, "gelu"])
@pytest.mark.parametrize("past", ["cache", "streaming"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_affine_rows_past_the_cache_match_rows_alone(dtype, past, activation):
    """Where input and output take more than half the last-level cache, LayerNorm rows whose
    weight and bias take 16 KB and more go through the fused kernel four at a time, 1024 columns
    of each in turn (streaming their stores further out); each row keeps the bits it has
    normalized on its own (one row at a time, in cache), on one thread and on two, and agrees
    with the reference. float32 rows of exactly 16 KB of weight and bias (2048 columns: two
    whole chunks), float64 rows of 2125 (a short last chunk); with an activation (applied in
    the same pass, never streamed) too."""
    info = fastnorm._kernels.cpu_info()
    if info["l3_bytes"] <= 0:
        pytest.skip("the last-level cache's size is unknown: rows go one at a time")
    if past == "streaming" and info["stream_bytes"] <= 0:
        pytest.skip("no streaming stores in this build or on this CPU")
    L = 2048 if dtype == np.float32 else 2125
    row = L * np.dtype(dtype).itemsize
    nbytes = info["l3_bytes"] // 4 if past == "cache" else info["stream_bytes"]
    x = _data((nbytes // row + 5, L), dtype, seed=21)
    x[2, 100], x[3, :] = np.nan, -4.0  # a NaN row and a constant row
    w, b = _vec(L, dtype, 7), _vec(L, dtype, 8, -1, 1)
    call = lambda a: F.layer_norm(a, L, w, b, activation=activation)  # noqa: E731
    alone = np.concatenate([call(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(alone[4:], reference.layer_norm(x[4:], L, w, b,
                                                               activation=activation),
                               rtol=0, atol=1e-4 if dtype == np.float32 else 1e-10)
    for n in (1, 2):
        fastnorm.set_num_threads(n)
        together = call(x)
        assert np.isnan(together[2]).all() and np.isfinite(together[3:]).all()
        assert np.array_equal(_bits(together), _bits(alone)), (
            f"{n} threads: {np.count_nonzero(_bits(together) != _bits(alone))} values differ")


def test_channels_last_statistics_past_the_cache_identical_for_any_thread_count():
    """Samples that each fit in cache but together do not (float32 sums them from x itself only
    in cache): the saved statistics have the same bits on one thread and on two. Run without
    AVX-512, where no streaming threshold keeps such a batch off the sample-per-thread path."""
    l3 = fastnorm._kernels.cpu_info()["l3_bytes"]
    if not HAVE_OMP or not 0 < l3 <= 64 << 20:
        pytest.skip("needs OpenMP and a last-level cache of at most 64 MiB")
    code = f"""
import numpy as np, fastnorm, fastnorm.functional as F
S = max(8, int(np.ceil({l3} * 1.5 / (256 * 64 * 64 * 4))))
x = (np.random.default_rng(0).standard_normal((S, 64, 64, 256), dtype=np.float32) + 0.5)
x = x.transpose(0, 3, 1, 2)
w = np.ones(256, np.float32)
res = []
for n in (1, 2):
    fastnorm.set_num_threads(n)
    y, m, r = F.native_group_norm(x, w, w, S, 256, 4096, 32, 1e-5)
    res.append((y.tobytes(), m.tobytes(), r.tobytes()))
assert res[0] == res[1], "1 and 2 threads differ"
"""
    env = dict(os.environ, FN_SIMD_LEVEL="1", OMP_NUM_THREADS="2")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_eval_batch_norm_spans_match_rows_alone(dtype):
    """Eval BatchNorm's back-to-back planes of 16 to 511 elements go as one span whose vectors
    blend two planes' coefficients where they meet (AVX-512); planes at stride 2 go one call
    each. The same bits, for plane sizes around every vector boundary, data near zero and far
    from it (shifted coefficients), batch 3 and 1, and 7x7 planes whose spans are cut where a
    thread's unit of rows ends."""
    rng = np.random.default_rng(4)
    for n in (1, 2):
        fastnorm.set_num_threads(n)
        for L in list(range(15, 42)) + [49, 196, 511, 512]:
            for offset, N in ((0.5, 3), (60.0, 1)):
                C = 5 if L < 100 else 3
                x = (rng.standard_normal((N, C, L)) + offset).astype(dtype)
                xs = np.zeros((N, C, 2 * L), dtype)[:, :, ::2]
                xs[...] = x
                rm = (rng.standard_normal(C) + offset).astype(dtype)
                rv, w, b = (rng.uniform(0.5, 2, C).astype(dtype) for _ in range(3))
                got, want = F.batch_norm(x, rm, rv, w, b), F.batch_norm(xs, rm, rv, w, b)
                assert np.array_equal(_raw(got), _raw(want)), (L, offset, n)
        x = rng.standard_normal((2, 700, 7, 7)).astype(dtype)
        xs = np.zeros((2, 700, 7, 14), dtype)[..., ::2]
        xs[...] = x
        rm, rv = rng.standard_normal(700).astype(dtype), rng.uniform(0.5, 2, 700).astype(dtype)
        assert np.array_equal(_raw(F.batch_norm(x, rm, rv)), _raw(F.batch_norm(xs, rm, rv)))
        # (N, H, C, W) memory: rows of W, the channels' rows of one (n, h) back to back
        x = rng.standard_normal((3, 5, 40, 23)).astype(dtype).transpose(0, 2, 1, 3)
        xs = np.zeros((3, 5, 40, 46), dtype)[..., ::2].transpose(0, 2, 1, 3)
        xs[...] = x
        rm, rv = rng.standard_normal(40).astype(dtype), rng.uniform(0.5, 2, 40).astype(dtype)
        assert np.array_equal(_raw(F.batch_norm(x, rm, rv)), _raw(F.batch_norm(xs, rm, rv)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_channels_last_eval_whole_rows_match_column_chunks(dtype):
    """Channels-last eval BatchNorm with wide rows (coefficients over 16 KB) goes down a unit's
    rows in column chunks while input and output fit in half the last-level cache, and row by
    row beyond it: the same bits. A 24 MB call (whole rows) against its own slices of 10 rows of
    the image (in cache: chunks), data near zero and far from it (shifted coefficients)."""
    rng = np.random.default_rng(5)
    C = 2304 if dtype == np.float32 else 1152
    H = 24 * 2 ** 20 // (C * 64 * np.dtype(dtype).itemsize)
    for offset in (0.5, 80.0):
        x = (rng.standard_normal((1, H, 64, C), dtype=np.float32) + offset).astype(dtype)
        x = x.transpose(0, 3, 1, 2)  # NHWC memory
        rm = (rng.standard_normal(C) + offset).astype(dtype)
        rv, w, b = (rng.uniform(0.5, 2, C).astype(dtype) for _ in range(3))
        for n in (1, 2):
            fastnorm.set_num_threads(n)
            whole = F.batch_norm(x, rm, rv, w, b)
            for h0 in (0, H - 10):
                part = F.batch_norm(x[:, :, h0:h0 + 10], rm, rv, w, b)
                assert np.array_equal(_raw(whole[:, :, h0:h0 + 10]), _raw(part)), (offset, n, h0)


def _raw(a):
    """a's bytes in C order (any dtype, any layout)"""
    return np.ascontiguousarray(a).view(np.uint8)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_channels_last_sample_per_thread_matches_all_samples_at_once(dtype):
    """Channels-last GroupNorm / InstanceNorm take a sample per thread where the samples split
    evenly over several threads (6 samples on 2 or 3 threads), and each step over all samples
    otherwise (one thread; 3 samples on 2 threads): the same bits either way, statistics
    included."""
    dtype = np.dtype(dtype)
    x = _data((6, 320, 13, 11), dtype, seed=5, layout="channels_last")
    x[1, 7, 2, 3], x[4, 100, 0, 0] = np.nan, np.inf  # NaN and inf statistics in some groups
    C, HW = x.shape[1], x.shape[2] * x.shape[3]
    pt = np.float32 if dtype.itemsize == 2 else dtype
    w, b = _vec(C, pt, 5), _vec(C, pt, 6, -1, 1)
    calls = {"gn": lambda a: F.group_norm(a, 32, w, b, activation="silu"),
             "gn4": lambda a: F.group_norm(a, 4, w, b),  # 4 groups: a scalar merge per sample
             "gn1": lambda a: F.group_norm(a, 1, w, b),
             "in": lambda a: F.instance_norm(a, weight=w, bias=b),
             # the statistics kept for a backward pass, per (sample, group)
             "stats": lambda a: F.native_group_norm(a, w, b, a.shape[0], C, HW, 32, 1e-5)[1:]}
    for name, f in calls.items():
        for k in (6, 3):
            fastnorm.set_num_threads(1)
            want = f(x[:k])
            for n in (2, 3):
                fastnorm.set_num_threads(n)
                got = f(x[:k])
                if name != "stats":
                    assert np.isnan(got[1]).any() and np.isfinite(got[2]).all()
                assert all(np.array_equal(_raw(g), _raw(v)) for g, v in zip(got, want)), (
                    f"{name} {dtype} {k} samples: {n} threads differ from 1 thread")


@pytest.mark.skipif(not HAVE_OMP or not os.path.isdir("/proc/self/task"),
                    reason="needs OpenMP and Linux's /proc/self/task")
def test_regions_of_different_sizes_keep_the_pool():
    """BatchNorm (256, 1024) training runs its statistics on 4 threads and its normalize on 8:
    with GNU libgomp (which ends the threads a smaller team leaves out) repeated calls start no
    thread, because a calling thread's team keeps its last size (src_c/fn_openmp.h, fn_team).
    A lower set_num_threads still bounds the team: the pool then shrinks to it."""
    code = textwrap.dedent("""
        import os, sys, time
        import numpy as np
        import fastnorm, fastnorm.functional as F
        tasks = lambda: set(os.listdir("/proc/self/task"))
        start = len(tasks())  # numpy's BLAS threads and the like, before fastnorm's pool
        fastnorm.set_num_threads(8)
        x = np.random.default_rng(0).standard_normal((256, 1024), dtype=np.float32)
        small = x[:64, :768].copy()
        rm, rv = np.zeros(1024, np.float32), np.ones(1024, np.float32)
        F.batch_norm(x, rm, rv, training=True)
        if "libgomp" not in open("/proc/self/maps").read():
            print("no libgomp")  # LLVM's libomp keeps surplus threads in its pool
            sys.exit(0)
        before, seen = tasks(), set()
        for _ in range(10):
            F.batch_norm(x, rm, rv, training=True)
            seen |= tasks()
            F.layer_norm(small, (768,))  # a region of 3 threads between them
            seen |= tasks()
        print(len(before) - start, len(seen - before))
        fastnorm.set_num_threads(2)
        F.batch_norm(x, rm, rv, training=True)
        for _ in range(500):  # libgomp's surplus threads exit after the region
            if len(tasks()) - start <= 1:
                break
            time.sleep(0.01)
        print(len(tasks()) - start)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "8"})
    assert res.returncode == 0, res.stderr
    if res.stdout.startswith("no libgomp"):
        pytest.skip("the OpenMP runtime is not GNU libgomp")
    (n_pool, n_new), (n_after,) = [list(map(int, ln.split())) for ln in res.stdout.split("\n")[:2]]
    assert n_pool >= 7, f"expected a pool of 7 threads beside the caller, fastnorm added {n_pool}"
    assert n_new == 0, f"repeated calls started {n_new} threads; expected none"
    assert n_after <= 1, (
        f"after set_num_threads(2) fastnorm's pool kept {n_after} threads beside the caller; "
        "expected 1")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_bitwise_identical_with_threadpoolctl_and_omp_default(dtype):
    """The default (OpenMP's limit) gives the same bits as explicit counts."""
    x = _data((4, 8, 301, 257), dtype, seed=11)
    fastnorm.set_num_threads(1)
    want = [_bits(F.group_norm(x, 4)), _bits(F.batch_norm(x, None, None, training=True))]
    fastnorm.set_num_threads(None)
    for lim in (1, 2, 5):
        with threadpool_limits(limits=lim, user_api="openmp"):
            got = [_bits(F.group_norm(x, 4)), _bits(F.batch_norm(x, None, None, training=True))]
        assert all(np.array_equal(g, w) for g, w in zip(got, want)), f"limit {lim}"


# --------------------------------------------------------------------------------------------
# concurrency: the kernels release the GIL; concurrent calls must not interfere


def _tasks(dtype):
    """(callable, input) pairs: every op, different inputs and sizes."""
    t = []
    for i, (name, shape, layout, ops) in enumerate(CASES):
        if np.prod(shape) > 1_500_000:
            continue
        x = _data(shape, dtype, seed=100 + i, layout=layout)
        for op in ops:
            t.append((op, x))
    return t


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_concurrent_calls_match_serial(dtype, nthreads):
    fastnorm.set_num_threads(nthreads)
    tasks = _tasks(dtype)
    serial = [[_bits(a) for a in op(x)] for op, x in tasks]
    n_workers = 4
    barrier = threading.Barrier(n_workers)

    def worker(w):
        barrier.wait()
        res = {}
        for rep in range(2):  # each worker walks the tasks in its own order
            order = np.random.default_rng(w * 10 + rep).permutation(len(tasks))
            for j in order:
                op, x = tasks[j]
                res.setdefault(j, []).append([_bits(a) for a in op(x)])
        return res

    with ThreadPoolExecutor(n_workers) as ex:
        results = list(ex.map(worker, range(n_workers)))
    for w, res in enumerate(results):
        for j, outs in res.items():
            for got in outs:
                for g, s in zip(got, serial[j]):
                    assert np.array_equal(g, s), (
                        f"worker {w}: task {j} ({tasks[j][0].__name__}) differs from serial")


def test_concurrent_in_place_and_running_stats():
    """Threads updating their own running statistics and normalizing their own arrays in place
    while others do the same."""
    rng = np.random.default_rng(5)
    xs = [(rng.standard_normal((8, 16, 40, 40)) + i).astype(np.float32) for i in range(6)]

    def job(i):
        x = xs[i].copy()
        rm, rv = np.zeros(16, np.float32), np.ones(16, np.float32)
        for _ in range(5):
            F.batch_norm(x.copy(), rm, rv, training=True)
        y = F.group_norm(x, 4, out=x)
        return _bits(y), _bits(rm), _bits(rv)

    serial = [job(i) for i in range(len(xs))]
    with ThreadPoolExecutor(3) as ex:
        for _ in range(3):
            par = list(ex.map(job, range(len(xs))))
            for i, (p, s) in enumerate(zip(par, serial)):
                assert all(np.array_equal(a, b) for a, b in zip(p, s)), f"job {i}"
