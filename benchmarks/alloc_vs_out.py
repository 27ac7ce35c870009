"""Allocating calls against out= calls, in a steady loop, for large outputs.

    python benchmarks/alloc_vs_out.py [--modes cache,nocache,mallopt] [--sizes 3,13,67]
                                      [--reps 7] [--calls 20] [--threads N]

For each op (layer_norm, group_norm, batch_norm in eval mode) and output size (MB, float32),
prints min(time of ``y = op(x)``) / min(time of ``op(x, out=out)``) over interleaved blocks of
calls: 1.0 means allocating costs nothing. Minima, because on a shared 2-core machine a block
that lost a core to a neighbour measures the neighbour. Each mode runs in a fresh process:

* ``cache``: fastnorm's output cache (the default, see fastnorm.set_output_cache_limit);
* ``nocache``: the cache off (limit 0): NumPy's allocator, i.e. glibc malloc, which maps blocks
  above its mmap threshold afresh and unmaps them on free, so every call faults its output in;
* ``mallopt``: the cache off, glibc told to keep large blocks in its heap instead
  (mallopt(M_MMAP_THRESHOLD, 32 MiB), the most glibc accepts, and M_TRIM_THRESHOLD 1 GiB):
  process-wide, and blocks over 32 MiB are still mapped afresh.

A loop ``y = op(x)`` writes two outputs in turn (the old result lives until the new one is
returned), so where one output and the input fit in the last-level cache and two outputs do not
(13 MB on a 32 MiB L3), it is slower than reusing one ``out=`` for reasons that have nothing to do
with allocating. The ``out2`` column times ``out=`` alternating between two outputs, the same
memory footprint: alloc/out2 is the cost of allocating itself. Each block of ``--calls`` starts
on buffers that the other kinds of block pushed out of the cache, so short blocks overstate the
ratios (5 calls: eval BatchNorm at 13 MB 1.3x out2, against 1.1x at 20 calls).
"""
import argparse
import ctypes
import os
import subprocess
import sys
import time

import numpy as np

OPS = ("layer_norm", "group_norm", "batch_norm")


def shape_for(mb):
    """An (N, 256, 32, 32) float32 shape of about mb megabytes (10**6 bytes)."""
    return (max(1, round(mb * 1e6 / (4 * 256 * 32 * 32))), 256, 32, 32)


def make_call(op, x):
    """The op on x as f(out=None)."""
    import fastnorm.functional as F

    C = x.shape[1]
    w = np.linspace(0.5, 1.5, C, dtype=x.dtype)
    b = np.linspace(-1, 1, C, dtype=x.dtype)
    if op == "layer_norm":
        rows = x.reshape(-1, 1024)
        wl, bl = np.ones(1024, x.dtype), np.zeros(1024, x.dtype)
        return lambda out=None: F.layer_norm(rows, (1024,), wl, bl, out=None if out is None
                                             else out.reshape(-1, 1024))
    if op == "group_norm":
        return lambda out=None: F.group_norm(x, 32, w, b, out=out)
    rm, rv = np.zeros(C, x.dtype), np.ones(C, x.dtype)
    return lambda out=None: F.batch_norm(x, rm, rv, w, b, training=False, out=out)


def ratio(f, out, out2, reps, calls):
    """(min per-call time allocating / with one out=, the same / with out= alternating between
    out and out2, min time with one out=), from interleaved blocks of calls."""
    y = f()  # warm: the first allocation of each size is fresh in every mode
    f(out=out)
    f(out=out2)
    ta, to, t2 = [], [], []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(calls):
            y = f()  # the previous result dies here, after the new one is allocated
        ta.append((time.perf_counter() - t) / calls)
        t = time.perf_counter()
        for _ in range(calls):
            f(out=out)
        to.append((time.perf_counter() - t) / calls)
        t = time.perf_counter()
        for i in range(calls):
            f(out=out2 if i % 2 else out)
        t2.append((time.perf_counter() - t) / calls)
    del y
    return min(ta) / min(to), min(ta) / min(t2), min(to)


def run_mode(mode, sizes, reps, calls, threads):
    import fastnorm

    if threads:
        fastnorm.set_num_threads(threads)
    if mode != "cache":
        fastnorm.set_output_cache_limit(0)
    if mode == "mallopt":
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        ok = libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
        if not ok:
            print("  mallopt refused the thresholds")
    rng = np.random.default_rng(0)
    rows = []
    for mb in sizes:
        x = rng.standard_normal(shape_for(mb), dtype=np.float32)
        out, out2 = np.empty_like(x), np.empty_like(x)
        for op in OPS:
            rows.append((op, mb) + ratio(make_call(op, x), out, out2, reps, calls))
        del x, out, out2
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="cache,nocache,mallopt")
    ap.add_argument("--sizes", default="3,13,67", help="output sizes in MB")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="set_num_threads (0: the default)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # run one mode in this process
    a = ap.parse_args()
    sizes = [float(s) for s in a.sizes.split(",")]
    if a.one:
        for op, mb, r, r2, t_out in run_mode(a.one, sizes, a.reps, a.calls, a.threads):
            print(f"  {op:11s} {mb:5.0f} MB  alloc/out= {r:5.2f}  alloc/out2= {r2:5.2f}"
                  f"   (out= {t_out * 1e3:7.2f} ms)")
        return
    for mode in a.modes.split(","):
        print(f"mode {mode}:", flush=True)
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
        subprocess.run([sys.executable, os.path.abspath(__file__), "--one", mode, "--sizes", a.sizes,
                        "--reps", str(a.reps), "--calls", str(a.calls), "--threads", str(a.threads)],
                       check=True, env=env)


if __name__ == "__main__":
    main()
