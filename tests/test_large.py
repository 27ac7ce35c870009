"""Sizes and memory.

- (slow) Arrays of more than 2**31 elements (float32, ~8.6 GB, normalized in place): 64-bit
  sizes, offsets and strides in the row kernel (LayerNorm), the single-group kernel (GroupNorm
  with one group of 2**31 + 2**20 elements) and the column kernel (BatchNorm over (N, C) with
  reversed rows). The data is cheap to fill and its statistics are known exactly; a few groups
  are checked against the reference computed on just those groups.
- (not slow) No memory growth: thousands of calls of every op, also failing ones, while the
  resident set size is watched.
"""
import gc
import os

import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F
from fastnorm import reference as R
from fastnorm._cases import TOL

# --------------------------------------------------------------------------------------------
# more than 2**31 elements

ROW = 2**20
ROWS = 2049  # ROWS * ROW = 2**31 + 2**20 elements
SHIFT = 997  # row i holds B rolled by SHIFT * i, plus i
CHECK_ROWS = [0, 1, 1023, 2047, 2048]


def _mem_available():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@pytest.fixture(scope="module")
def big():
    """One float32 buffer of 2**31 + 2**20 elements and a function that (re)fills it."""
    need = ROWS * ROW * 4 + (1 << 30)
    avail = _mem_available()
    if avail is not None and avail < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of free memory, {avail / 2**30:.1f} available")
    rng = np.random.default_rng(2024)
    # multiples of 2**-8 in [-8, 8): B + i (i <= 2048) is exact in float32, and every sum the
    # truth needs is exact in float64
    block = (rng.integers(-2048, 2048, ROW) / 256.0).astype(np.float32)
    buf = np.empty(ROWS * ROW, np.float32)
    rows = buf.reshape(ROWS, ROW)

    def fill():
        for i in range(ROWS):
            rows[i] = np.roll(block, SHIFT * i)
            rows[i] += np.float32(i)

    yield buf, rows, block, fill
    del buf, rows


def _row_values(block, i):
    return (np.roll(block, SHIFT * i) + np.float32(i)).astype(np.float32)


def _merge(parts):
    """Exact (count, mean, m2) of the union of sets given as (count, mean, m2), in longdouble."""
    n = np.longdouble(0)
    s = np.longdouble(0)
    for c, m, _ in parts:
        n += c
        s += np.longdouble(c) * m
    mean = s / n
    m2 = np.longdouble(0)
    for c, m, q in parts:
        m2 += q + np.longdouble(c) * (m - mean) ** 2
    return n, mean, m2


def _residue_moments(block, k):
    """(count, mean, m2) of block[r::k] for each residue r, in longdouble."""
    out = []
    for r in range(k):
        b = block[r::k].astype(np.longdouble)
        m = b.mean()
        out.append((b.size, m, ((b - m) ** 2).sum()))
    return out


def _assert_close(got, want, label):
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    assert err <= TOL[np.dtype(np.float32)], f"{label}: max abs error {err:.3g}"


@pytest.mark.slow
def test_layer_norm_rows_beyond_2_31(big):
    buf, rows, block, fill = big
    fill()
    assert buf.size > 2**31
    saved = {i: rows[i].copy() for i in CHECK_ROWS}
    y = F.layer_norm(rows, ROW, out=rows)
    assert y is rows
    for i in CHECK_ROWS:
        assert np.array_equal(saved[i], _row_values(block, i))
        _assert_close(rows[i], R.layer_norm(saved[i], ROW), f"row {i}")


@pytest.mark.slow
def test_group_norm_one_group_beyond_2_31(big):
    buf, rows, block, fill = big
    fill()
    x = buf.reshape(1, 1, buf.size)
    saved = {i: rows[i].copy() for i in CHECK_ROWS}
    # the truth: row i holds all of B (rolled) plus i
    mb = block.astype(np.longdouble).mean()
    qb = ((block.astype(np.longdouble) - mb) ** 2).sum()
    n, mean, m2 = _merge([(ROW, mb + i, qb) for i in range(ROWS)])
    var = m2 / n
    eps = 1e-5
    y = F.group_norm(x, 1, eps=eps, out=x)
    assert y is x
    for i in CHECK_ROWS:
        want = ((saved[i].astype(np.longdouble) - mean) / np.sqrt(var + eps)).astype(np.float64)
        _assert_close(rows[i], want, f"row {i}")


@pytest.mark.slow
def test_batch_norm_columns_beyond_2_31(big):
    """(N, C) = (2**28 + 2**17, 8), rows reversed (negative 64-bit strides), in place, with
    running statistics (momentum 1: the batch's own)."""
    buf, rows, block, fill = big
    fill()
    C = 8
    x = buf.reshape(-1, C)[::-1]
    assert x.strides[0] < 0 and x.shape[0] * C > 2**31
    saved = {i: rows[i].copy() for i in CHECK_ROWS}
    # channel c takes the residue (c - SHIFT * i) mod 8 of B in row i
    res = _residue_moments(block, C)
    stats = []
    for c in range(C):
        parts = []
        for i in range(ROWS):
            cnt, m, q = res[(c - SHIFT * i) % C]
            parts.append((cnt, m + i, q))
        stats.append(_merge(parts))
    mean = np.array([s[1] for s in stats], np.longdouble)
    var = np.array([s[2] / s[0] for s in stats], np.longdouble)
    unbiased = np.array([s[2] / (s[0] - 1) for s in stats], np.longdouble)
    rm, rv = np.zeros(C, np.float64), np.ones(C, np.float64)
    eps = 1e-5
    y = F.batch_norm(x, rm, rv, training=True, momentum=1.0, eps=eps, out=x)
    assert y is x
    assert np.all(np.abs(rm - mean) <= 1e-9 * np.abs(mean)), (rm, mean)
    assert np.all(np.abs(rv - unbiased) <= 1e-9 * unbiased), (rv, unbiased)
    for i in CHECK_ROWS:
        v = saved[i].astype(np.longdouble).reshape(-1, C)
        want = ((v - mean) / np.sqrt(var + eps)).astype(np.float64).reshape(-1)
        _assert_close(rows[i], want, f"row {i}")


# --------------------------------------------------------------------------------------------
# memory growth


def _rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sanitized():
    cflags = " ".join(fastnorm.get_config()["cflags"])
    return "-fsanitize" in cflags or "asan" in os.environ.get("LD_PRELOAD", "")


def _workload():
    """One round: every op on small arrays (in several layouts and paths, with out= and in
    place), the layers, and a handful of calls that raise."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 16, 16)).astype(np.float32)
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # channels-last
    xd = x.astype(np.float64)
    wide = rng.standard_normal((64, 96, 2, 2)).astype(np.float32)  # large N*C: big scratch
    long = rng.standard_normal((3, 9000)).astype(np.float32)  # long rows: blocks, chunks
    w, b = np.ones(8, np.float32), np.zeros(8, np.float32)
    rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
    rm96, rv96 = np.zeros(96, np.float32), np.ones(96, np.float32)
    out = np.empty_like(x)
    bad_out = np.empty_like(x, dtype=np.float64)
    layers = [(fastnorm.BatchNorm2d(8), x), (fastnorm.InstanceNorm2d(8, affine=True,
                                                                     track_running_stats=True), x),
              (fastnorm.GroupNorm(4, 8), xl), (fastnorm.LayerNorm((16, 16)), x),
              (fastnorm.RMSNorm(16), xd)]
    raising = [
        lambda: F.batch_norm(x, rm, rv, training=True, out=bad_out),
        lambda: F.batch_norm(x, rm, rv, training=True, eps=-1.0),
        lambda: F.batch_norm(x.astype(np.int32), rm, rv),
        lambda: F.instance_norm(x, rm, None),
        lambda: F.layer_norm(x, (15,)),
        lambda: F.layer_norm(x, "16"),
        lambda: F.group_norm(x, 3),
        lambda: F.group_norm(x, 4, weight=np.ones(7, np.float32)),
        lambda: F.rms_norm(x, 16, out=out[:, :, :, :8]),
        lambda: F.rms_norm([["a"]], 1),
        lambda: fastnorm.BatchNorm2d(8)(x[0]),
        lambda: fastnorm.GroupNorm(3, 8),
    ]

    def one_round():
        F.batch_norm(x, rm, rv, w, b, training=True)
        F.batch_norm(xl, rm, rv, w, b, training=True)
        F.batch_norm(x, rm, rv, w, b, training=False, out=out)
        F.batch_norm(xd, None, None, training=True)
        F.instance_norm(x, rm, rv, w, b)
        F.instance_norm(wide, rm96, rv96)
        F.instance_norm(xl)
        F.layer_norm(x, (16, 16), out=out)
        F.layer_norm(long, 9000)
        F.group_norm(x, 4, w, b)
        F.group_norm(xl, 2)
        F.group_norm(wide, 32)
        F.rms_norm(x, 16)
        F.rms_norm(long, 9000)
        y = x.copy()
        F.layer_norm(y, 16, out=y)
        F.group_norm(y[:, :, 1:], 2, out=y[:, :, :-1])  # overlapping: a temporary
        for m, inp in layers:
            m.train()
            m(inp)
            m.eval()
            m(inp)
        errors = 0
        for call in raising:
            try:
                call()
            except Exception:  # noqa: BLE001
                errors += 1
        assert errors == len(raising)

    return one_round


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_no_memory_growth():
    if _sanitized():
        pytest.skip("ASan's allocator keeps freed memory (quarantine): RSS says nothing here")
    one_round = _workload()
    for _ in range(200):  # warm up: allocator pools, OpenMP threads, caches
        one_round()
    gc.collect()
    before = _rss()
    rounds = 2000
    for _ in range(rounds):
        one_round()
    gc.collect()
    grown = _rss() - before
    # a leaked output of the smallest op here (32 KiB) per round would be 60 MiB
    assert grown < 4 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over {rounds} rounds"
