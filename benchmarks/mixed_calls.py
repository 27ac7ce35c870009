"""Calls of different sizes one after another, as a model makes them: the median time of each
call within a loop over all of them, and of a small call right after a large one.

    python benchmarks/mixed_calls.py [--threads N] [--iters 300]

Consecutive kernels ask OpenMP for different thread counts, which would make libgomp end and
create pool threads between them (src_c/fn_openmp.h, fn_team, says why fastnorm does not). On a
machine with many cores the loop shows that cost; the last lines show what a small call pays for
the larger team it then runs with (back to back, and after 2 ms of sleep, when the pool's
threads have gone to sleep). Allocating calls, float32.
"""
import argparse
import os
import statistics
import time

import numpy as np

import fastnorm
import fastnorm.functional as F
from fastnorm import _cases

SEQ = [("batch_norm", "eval", (1, 64, 112, 112)), ("batch_norm", "eval", (1, 256, 56, 56)),
       ("batch_norm", "eval", (1, 512, 28, 28)), ("batch_norm", "eval", (1, 2048, 7, 7)),
       ("batch_norm", "train", (256, 1024)), ("batch_norm", "train", (16, 256, 14, 14)),
       ("layer_norm", None, (1, 768)), ("layer_norm", None, (8, 4096)),
       ("layer_norm", None, (32, 128, 768)), ("group_norm", None, (1, 320, 32, 32)),
       ("rms_norm", None, (16, 4096)), ("layer_norm", None, (64, 768))]


def make_call(op, mode, shape):
    x = _cases.make_input(shape, np.float32, "contiguous")
    kw = _cases.op_kwargs(op, mode, x)
    fn = getattr(F, op)
    return lambda: fn(x, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="fastnorm's threads (default: all)")
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    if args.threads:
        fastnorm.set_num_threads(args.threads)
    calls = [make_call(*s) for s in SEQ]
    for c in calls:
        c()
    per, total = [[] for _ in SEQ], []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        for j, c in enumerate(calls):
            t = time.perf_counter()
            c()
            per[j].append(time.perf_counter() - t)
        total.append(time.perf_counter() - t0)
    print(f"{fastnorm.get_num_threads()} threads, cpu_count {os.cpu_count()}")
    print(f"loop of {len(SEQ)} calls: median {statistics.median(total) * 1e6:.0f} us, "
          f"min {min(total) * 1e6:.0f} us")
    for (op, mode, shape), p in zip(SEQ, per):
        print(f"  {op:10s} {mode or '':5s} {str(shape):20s} {statistics.median(p) * 1e6:8.1f} us")
    big, small = make_call("layer_norm", None, (32, 128, 768)), make_call("layer_norm", None,
                                                                           (64, 768))
    for gap in [0.0, 0.002]:
        big()
        ts = []
        for _ in range(args.iters):
            if gap:
                time.sleep(gap)
            t = time.perf_counter()
            small()
            ts.append(time.perf_counter() - t)
        ts.sort()
        print(f"layer_norm (64, 768) after a (32, 128, 768) call, {gap * 1e3:.0f} ms apart: "
              f"median {statistics.median(ts) * 1e6:.1f} us, p90 {ts[len(ts) * 9 // 10] * 1e6:.1f} us")


if __name__ == "__main__":
    main()
