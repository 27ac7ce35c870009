"""Run time: children forked after parallel kernels (correct, full thread count, no hang),
Python threads calling at once (the thread count shared, results unchanged), and the output
cache (limit, release, show_config, reuse, thread safety, bounded memory)."""
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F
from fastnorm import _runtime

HAVE_OMP = _runtime.have_openmp()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 2**20
needs_fork = pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc/self/task"),
                                reason="needs fork and /proc/self/task (Linux)")


def _python(code, timeout=60):
    """Run code in a fresh interpreter importing this checkout's fastnorm; a hang fails the
    test (TimeoutExpired) instead of blocking the suite."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("OMP_NUM_THREADS", None)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=timeout, env=env, cwd=ROOT)
    assert r.returncode == 0, f"child failed (rc={r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


# --------------------------------------------------------------------------------------------
# fork

# The parent runs parallel kernels (2 threads, 8 MB: far above the size that goes parallel),
# then a fork Pool computes the same calls; each child reports its result, its thread count and
# how many OS threads it has after the kernel (libgomp's workers stay alive: >= 2 shows that a
# parallel region ran in the child).
FORK_SCRIPT = """
import json, multiprocessing as mp, os
import numpy as np
import fastnorm, fastnorm.functional as F
from fastnorm import _runtime
_runtime._pause_on_fork = {pause}
fastnorm.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((2048, 1024), dtype=np.float32)
xg = rng.standard_normal((4, 64, 32, 32))
want = [F.layer_norm(x, 1024), F.group_norm(xg, 8)]
parent_tasks = len(os.listdir("/proc/self/task"))

def child(i):
    got = [F.layer_norm(x, 1024), F.group_norm(xg, 8)]
    ok = all(np.array_equal(g, w) for g, w in zip(got, want))
    return ok, fastnorm.get_num_threads(), len(os.listdir("/proc/self/task")), _runtime.fork_state()

with mp.get_context("fork").Pool(2) as pool:
    res = pool.map(child, range(4))
again = F.layer_norm(x, 1024)  # the parent rebuilds its pool
print(json.dumps([parent_tasks, res, bool(np.array_equal(again, want[0]))]))
"""


def _fork_pool(pause):
    return json.loads(_python(FORK_SCRIPT.format(pause=pause)))


@needs_fork
def test_fork_pool_after_parallel_kernels():
    parent_tasks, res, again = _fork_pool(pause=True)
    assert again
    if HAVE_OMP:
        assert parent_tasks >= 2, "the parent's kernel did not run in parallel: test is void"
    for ok, nt, tasks, (rc, serial) in res:
        assert ok, "a forked child computed a different result"
        assert (rc, serial) == (0, False)
        if HAVE_OMP:
            assert nt == 2
            assert tasks >= 2, "the child ran its kernels on one thread"


@needs_fork
@pytest.mark.skipif(not HAVE_OMP, reason="the fallback concerns OpenMP's thread pool")
def test_fork_fallback_runs_one_thread():
    """Where the pool cannot be freed before fork, the child runs one thread instead of hanging."""
    _, res, again = _fork_pool(pause=False)
    assert again
    for ok, nt, tasks, (rc, serial) in res:
        assert ok and nt == 1 and serial and rc == -1
        assert tasks == 1, "the child started OpenMP threads"


@needs_fork
def test_os_fork_while_other_threads_compute():
    """os.fork from one Python thread while others are inside kernels and allocating outputs:
    the child's count of calls in progress starts at 0, its kernels run and its outputs come
    from the cache."""
    out = _python("""
        import os, threading
        import numpy as np
        import fastnorm, fastnorm.functional as F
        from fastnorm import _runtime
        fastnorm.set_num_threads(2)
        x = np.random.default_rng(1).standard_normal((1024, 2048), dtype=np.float32)
        want = F.layer_norm(x, 2048)
        stop = threading.Event()
        def spin():
            while not stop.is_set():
                F.layer_norm(x, 2048)
        ts = [threading.Thread(target=spin) for _ in range(2)]
        for t in ts: t.start()
        codes = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                # 8 MiB outputs: through the output cache, which the parent's threads use too
                ok = (_runtime._active_calls() == 0
                      and all(np.array_equal(F.layer_norm(x, 2048), want) for _ in range(3)))
                os._exit(0 if ok else 3)
            codes.append(os.waitpid(pid, 0)[1])
        stop.set()
        for t in ts: t.join()
        print(codes, _runtime._active_calls())
    """)
    assert out.split() == ["[0,", "0,", "0]", "0"]


# --------------------------------------------------------------------------------------------
# Python threads calling at once


def test_concurrent_calls_share_the_thread_count():
    fastnorm.set_num_threads(4)
    full = 4 if HAVE_OMP else 1
    assert _runtime._call_threads() == full
    want = {1: 4, 2: 2, 3: 1, 4: 1, 5: 1}  # max(1, 4 // calls in progress)
    entered = 0
    try:
        for k in range(1, 6):
            _runtime._enter()
            entered += 1
            assert _runtime._call_threads() == (want[k] if HAVE_OMP else 1)
            assert fastnorm.get_num_threads() == full, "the setting changed"
    finally:
        for _ in range(entered):
            _runtime._leave()
    assert _runtime._active_calls() == 0
    assert _runtime._call_threads() == full


def test_calls_in_progress_return_to_zero():
    x = np.random.default_rng(2).standard_normal((64, 256, 8, 8)).astype(np.float32)
    want = F.group_norm(x, 32)
    fastnorm.set_num_threads(2)
    with ThreadPoolExecutor(4) as ex:
        res = list(ex.map(lambda _: F.group_norm(x, 32), range(16)))
    assert all(np.array_equal(r, want) for r in res), "results depend on concurrency"
    assert _runtime._active_calls() == 0
    with pytest.raises(TypeError):  # raised inside the skeleton (out's dtype)
        F.group_norm(x, 32, out=np.empty(x.shape, np.float64))
    from fastnorm import _kernels
    _kernels.instance_moments(x)
    assert _runtime._active_calls() == 0


def test_backward_calls_count_as_calls_in_progress():
    """A backward kernel takes its share of the threads as the forward ops do: while one runs
    in a Python thread, another thread sees it in progress (it was not counted)."""
    import threading
    rng = np.random.default_rng(3)
    x, dy = (rng.standard_normal((512, 2048)).astype(np.float32) for _ in range(2))
    _, mean, rstd = F.native_layer_norm(x, 2048, None, None, 1e-5)
    done, seen = threading.Event(), set()

    _, bmean, binvstd = F.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
    errors = []

    def work():
        try:
            for _ in range(100):
                F.native_layer_norm_backward(dy, x, 2048, mean, rstd, None, None, [True] * 3)
                F.native_batch_norm_backward(dy, x, None, None, None, bmean, binvstd, True,
                                             1e-5, [True] * 3)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.wait(0.0001):
        seen.add(_runtime._active_calls())
    t.join()
    assert not errors and 1 in seen and _runtime._active_calls() == 0


def _benchmark(name):
    """A script of benchmarks/ as a module."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_python_threads_benchmark_smoke():
    r = _benchmark("python_threads").measure(threads=4, calls=8, mb=0.5, reps=1)
    assert set(r) == {"single", "shared", "unshared"} and all(v > 0 for v in r.values())
    assert _runtime._active_calls() == 0


# --------------------------------------------------------------------------------------------
# the output cache


@pytest.fixture
def cache():
    """The output cache emptied, its limit restored after the test."""
    old = fastnorm.get_output_cache_limit()
    fastnorm.release_output_cache()
    yield fastnorm.output_cache_info
    fastnorm.set_output_cache_limit(old)
    fastnorm.release_output_cache()


U = fastnorm.output_cache_info()["min_output"]  # outputs from this size on use the cache


def _rows(units, seed=0):
    """A float32 (rows, 1024) array of units * U bytes."""
    return np.random.default_rng(seed).standard_normal((int(units * U) // 4096, 1024),
                                                       dtype=np.float32)


def test_cache_limit_set_get_and_errors(cache):
    limit = cache()["limit"]
    assert fastnorm.set_output_cache_limit(3 * MiB) == limit
    assert fastnorm.get_output_cache_limit() == 3 * MiB == cache()["limit"]
    assert fastnorm.set_output_cache_limit(np.int64(5 * MiB)) == 3 * MiB
    for bad in (1.5, "1", None, True):
        with pytest.raises(TypeError, match="set_output_cache_limit"):
            fastnorm.set_output_cache_limit(bad)
    with pytest.raises(ValueError, match="got -1"):
        fastnorm.set_output_cache_limit(-1)
    assert fastnorm.get_output_cache_limit() == 5 * MiB, "a rejected call changed the limit"


def test_cache_reuses_freed_outputs(cache):
    x = _rows(1.5)
    out = np.empty_like(x)
    F.layer_norm(x, 1024, out=out)
    before = cache()
    for _ in range(5):
        y = F.layer_norm(x, 1024)
        assert np.array_equal(y, out) and y.flags.owndata and y.flags.c_contiguous
        # 16 bytes into a page, as glibc's mmapped blocks (most large inputs): another offset
        # makes loads of such an input alias stores to the output modulo 4 KiB
        assert y.ctypes.data % 4096 == 16
        del y
    after = cache()
    assert after["misses"] - before["misses"] <= 1 and after["hits"] - before["hits"] >= 4
    assert after["blocks"] == 1 and x.nbytes < after["held"] <= x.nbytes + 4096
    assert fastnorm.release_output_cache() == after["held"]
    assert cache()["held"] == 0 and cache()["blocks"] == 0


def test_small_outputs_bypass_the_cache(cache):
    x = _rows(0.9)
    before = cache()
    for _ in range(3):
        F.layer_norm(x, 1024)
    after = cache()
    assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])


def _small(seed=0):
    """A float32 (1, 768) decode-size input, its LayerNorm, and the float64 reference of it."""
    import fastnorm.reference as R
    x = np.random.default_rng(seed).standard_normal((1, 768), dtype=np.float32)
    return x, R.layer_norm(x, 768).astype(np.float32)


def test_small_outputs_come_back_when_nobody_holds_them(cache):
    x, want = _small()
    before = cache()
    y = F.layer_norm(x, 768)
    data = y.ctypes.data
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-6)
    del y  # only the pool holds it now
    y = F.layer_norm(x, 768)
    assert y.ctypes.data == data, "a dead small output was not handed out again"
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-6)
    assert y.flags.owndata and y.flags.writeable and y.flags.c_contiguous and y.base is None
    after = cache()
    assert after["small_hits"] - before["small_hits"] >= 1
    assert after["small_held"] == 0  # the only pooled output is y, which we hold
    del y
    assert cache()["small_held"] == x.nbytes
    assert fastnorm.release_output_cache() == x.nbytes
    assert cache()["small_held"] == 0


def test_small_outputs_someone_holds_are_never_handed_out(cache):
    """Results kept in a list, through a view or a memoryview keep their values while more calls
    run than the pool has slots; a dead result that was made read-only, reshaped or weakly
    referenced is not handed out again."""
    import warnings
    import weakref
    x, want = _small(1)
    slots = cache()["small_slots"]

    def read_only(y):
        y.flags.writeable = False

    def reshaped(y):
        y.shape = (768, 1)

    def restrided(y):  # deprecated in NumPy 2 but allowed: only a size-1 axis may take it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            y.strides = (0, 4)

    for alter in (read_only, reshaped, restrided, weakref.ref):
        fastnorm.release_output_cache()  # an empty pool
        y = F.layer_norm(x, 768)
        keep = alter(y)
        del y  # dead
        z = F.layer_norm(x, 768)  # not y: a fresh output
        for _ in range(slots):  # z's slot serves these calls
            del z
            z = F.layer_norm(x, 768)
        # y can never be handed out again, and the pool lets go of it within these calls;
        # reshaped, it may serve a call of its new shape and stays (small_held: dead outputs;
        # z lives)
        n = 1 if alter is reshaped else 0
        assert cache()["small_held"] == n * x.nbytes, f"result {alter.__name__}: pool state"
        assert alter is not weakref.ref or keep() is None, "a weakly referenced result lives on"
        assert z.flags.writeable and z.shape == (1, 768) and z.strides == (3072, 4)
        del z, keep
    kept = [F.layer_norm(x, 768) for _ in range(slots + 2)]
    view = F.layer_norm(x, 768)[0, 5:]
    mv = memoryview(F.layer_norm(x, 768))
    held = {a.ctypes.data for a in kept} | {view.base.ctypes.data, np.asarray(mv).ctypes.data}
    assert len(held) == len(kept) + 2, "two results alive at once share memory"
    other = np.random.default_rng(2).standard_normal((1, 768), dtype=np.float32)
    hits = cache()["small_hits"]
    for _ in range(3 * slots):
        a = F.layer_norm(other, 768)
        assert a.ctypes.data not in held
        del a
    assert cache()["small_hits"] > hits  # the loop's own dead results did come back
    for a in kept:
        np.testing.assert_array_equal(a, kept[0])
    np.testing.assert_allclose(kept[0], want, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(view, kept[0][0, 5:])
    np.testing.assert_array_equal(np.asarray(mv), kept[0])


def test_small_output_pool_survives_callbacks_that_call_fastnorm(cache):
    """An output dropped from the pool dies there, and its weakref callbacks run at that moment:
    one that calls fastnorm again must leave every reference count right."""
    import weakref
    x, want = _small(4)
    slots = cache()["small_slots"]
    made = []

    def again():
        made.append(F.layer_norm(x, 768))

    y = F.layer_norm(x, 768)
    weakref.finalize(y, again)
    del y  # pooled and weakly referenced: kept until the pool lets go of it
    assert not made
    hold = [F.layer_norm(x, 768) for _ in range(slots)]  # the first call lets go of it
    assert len(made) == 1
    np.testing.assert_allclose(made[0], want, rtol=0, atol=2e-6)
    watch = [weakref.ref(a) for a in hold + made]
    del hold, made
    fastnorm.release_output_cache()
    assert all(w() is None for w in watch), "an output outlived every reference to it"


def test_small_output_pool_lets_go_of_spent_outputs_within_its_slots_calls(cache):
    """A dropped output that can never be handed out again (weakly referenced, resized in
    place) is let go within the pool's slot count of small outputs, also in a steady loop that
    reuses other slots: its callbacks run then and the pool holds no more than its outputs as
    made."""
    import weakref
    x, want = _small(7)
    slots = cache()["small_slots"]
    fastnorm.release_output_cache()  # an empty pool, filled from slot 0
    fired = []
    z = F.layer_norm(x, 768)  # slot 0
    y = F.layer_norm(x, 768)  # slot 1, after the slot that a steady loop keeps reusing
    weakref.finalize(y, lambda: fired.append(1))
    del y, z
    for _ in range(slots):  # slot 0 serves each of these calls
        z = F.layer_norm(x, 768)
        del z
    assert fired == [1]
    for _ in range(4):
        y = F.layer_norm(x, 768)
        y.resize((1 << 20,), refcheck=False)  # 4 MiB, as NumPy allows
        del y
        for _ in range(slots):
            z = F.layer_norm(x, 768)
            del z
        assert cache()["small_held"] <= slots * x.nbytes
    z = F.layer_norm(x, 768)
    np.testing.assert_allclose(z, want, rtol=0, atol=2e-6)


def test_small_outputs_keep_their_dtype_and_shape(cache):
    """Dead pooled outputs of another dtype or shape are never handed out; outputs of one call
    are distinct arrays."""
    x, want = _small(5)
    dtypes = [np.float32, np.float64, np.float16]
    try:
        import ml_dtypes
        dtypes.append(ml_dtypes.bfloat16)
    except ImportError:
        pass
    for dt in dtypes:  # each call leaves a dead pooled output of the dtype before it
        y = F.layer_norm(x.astype(dt), 768)
        assert y.dtype == dt and y.shape == (1, 768)
        np.testing.assert_allclose(y.astype(np.float64), want, rtol=0, atol=0.02)
        del y
    for shape in ((2, 768), (768,), (1, 1, 768)):
        y = F.layer_norm(np.broadcast_to(x[0], shape).copy(), 768)
        assert y.shape == shape
        np.testing.assert_allclose(y.reshape(-1, 768), np.broadcast_to(want, (y.size // 768, 768)),
                                   rtol=0, atol=2e-6)
        del y
    c = np.random.default_rng(6).standard_normal((8, 16), dtype=np.float32)
    w = np.ones(16, np.float32)
    for _ in range(3):  # outputs of the same dtype and shape from one call
        outs = F.native_batch_norm(c, w, w, None, None, True, 0.1, 1e-5)[1:]
        outs += F.native_layer_norm(c.T.copy(), (8,), None, None, 1e-5)[1:]
        assert len({a.ctypes.data for a in outs}) == len(outs)
        del outs


def test_small_output_pool_off_with_the_cache(cache):
    x, want = _small(3)
    F.layer_norm(x, 768)  # dead at once: only the pool holds it
    assert cache()["small_held"] == x.nbytes
    fastnorm.set_output_cache_limit(0)  # lets go of it
    before = cache()
    assert before["small_held"] == 0
    for _ in range(4):
        y = F.layer_norm(x, 768)
        np.testing.assert_allclose(y, want, rtol=0, atol=2e-6)
        del y
    after = cache()
    assert (after["small_hits"], after["small_misses"], after["small_held"]) == (
        before["small_hits"], before["small_misses"], 0)


def test_cache_off_and_limit_bound(cache):
    fastnorm.set_output_cache_limit(0)
    x = _rows(1)
    before = cache()
    F.layer_norm(x, 1024)
    assert (cache()["hits"], cache()["misses"]) == (before["hits"], before["misses"])
    fastnorm.set_output_cache_limit(3 * U)
    ys = [F.layer_norm(_rows(k), 1024) for k in (1, 1.25, 1.5, 1.75, 2)]
    del ys  # 7.5 U freed into a 3 U cache
    assert 0 < cache()["held"] <= 3 * U
    fastnorm.set_output_cache_limit(U + 8192)  # lowering the limit evicts at once
    assert cache()["held"] <= U + 8192


def test_cached_output_resize_and_calloc(cache):
    x = _rows(1)
    y = F.layer_norm(x, 1024)
    want = y[:4].copy()
    y.resize((4, 1024), refcheck=False)  # realloc through the handler that allocated y
    assert np.array_equal(y, want)
    y.resize((x.shape[0] * 2, 1024), refcheck=False)  # grows: NumPy zero-fills the new part
    assert np.array_equal(y[:4], want) and not y[4:].any()
    del y
    assert cache()["held"] <= fastnorm.get_output_cache_limit()


def test_alloc_vs_out_benchmark_smoke(cache):
    rows = _benchmark("alloc_vs_out").run_mode("cache", [1.5], reps=1, calls=1, threads=0)
    assert [r[0] for r in rows] == ["layer_norm", "group_norm", "batch_norm"]
    assert all(r[2] > 0 and r[3] > 0 for r in rows)
    assert cache()["hits"] > 0, "the allocating calls did not use the cache"


def test_show_config_shows_the_cache(cache, capsys):
    fastnorm.set_output_cache_limit(7 * MiB)
    fastnorm.show_config()
    line = [ln for ln in capsys.readouterr().out.splitlines() if "output_cache" in ln]
    assert line and "limit 7.0 MiB" in line[0]
    assert fastnorm.get_config()["output_cache"]["limit"] == 7 * MiB


def test_cache_thread_safety(cache):
    fastnorm.set_output_cache_limit(3 * U)
    xs = [_rows(k, seed=i) for i, k in enumerate((1, 1.25, 1.5, 2))]
    wants = [F.layer_norm(x, 1024) for x in xs]

    def work(i):
        for k in range(8):
            j = (i + k) % len(xs)
            if not np.array_equal(F.layer_norm(xs[j], 1024), wants[j]):
                return False
            if k == 4 and i == 0:
                fastnorm.release_output_cache()
        return True

    with ThreadPoolExecutor(4) as ex:
        assert all(ex.map(work, range(4)))
    del wants
    assert cache()["held"] <= 3 * U and cache()["blocks"] <= cache()["max_blocks"]


def _rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_cache_no_memory_growth(cache):
    """Many allocating calls of varied large sizes: memory stays within the limit, and
    release_output_cache gives it back."""
    fastnorm.set_output_cache_limit(4 * U)
    xs = [_rows(k, seed=i) for i, k in enumerate((1, 1.25, 1.5, 2))]
    for x in xs:
        F.layer_norm(x, 1024)
    gc.collect()
    before = _rss()
    for k in range(60):
        y = F.layer_norm(xs[k % len(xs)], 1024)
        z = F.group_norm(xs[(k * 3) % len(xs)].reshape(-1, 64, 16, 1), 8)
        del y, z
    gc.collect()
    grown = _rss() - before
    assert grown < 5 * U, f"RSS grew by {grown / MiB:.1f} MiB with a {4 * U / MiB:g} MiB cache"
    held = cache()["held"]
    assert 0 < held <= 4 * U
    after = _rss()
    fastnorm.release_output_cache()
    assert _rss() <= after - held + MiB, "release_output_cache did not unmap"
