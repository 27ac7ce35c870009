"""Thread scaling of fastnorm's ops: time each case with 1, 2, ... threads, interleaved in one
process, and print the speedup of each thread count over one thread.

    python benchmarks/thread_scaling.py [--threads 1,2] [--json FILE] [--large]

The cases are those of ../shared/bench/anchors.py (float32, out= given so that allocation does
not blur the kernels' scaling). A speedup below 1.0 means threading costs more than it saves for
that size; the kernels gate the thread count by size (FN_MIN_WORK_PER_THREAD in src_c/) to avoid
that.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np

import fastnorm
import fastnorm.functional as F

CASES = [
    ("bn_train", (32, 64, 56, 56)), ("bn_train", (8, 256, 28, 28)), ("bn_train", (256, 1024)),
    ("bn_eval", (1, 64, 112, 112)), ("bn_eval", (1, 32, 8, 8)),
    ("ln", (32, 128, 768)), ("ln", (4096, 4096)), ("ln", (1, 768)),
    ("gn32", (8, 256, 64, 64)), ("gn32", (1, 512, 64, 64)),
    ("in", (8, 64, 128, 128)), ("in", (1, 3, 512, 512)),
    ("rms", (32, 128, 768)), ("bn_train_nhwc", (32, 64, 56, 56)),
]
LARGE = [("bn_train", (64, 64, 256, 256)), ("bn_eval", (64, 64, 256, 256)), ("ln", (65536, 4096)),
         ("gn32", (16, 256, 256, 256)), ("in", (64, 64, 256, 256))]


def make_call(op, x, rng):
    C = x.shape[-1] if op in ("ln", "rms") else x.shape[1]
    w = rng.standard_normal(C).astype(x.dtype)
    b = rng.standard_normal(C).astype(x.dtype)
    rm, rv = np.zeros(C, x.dtype), np.ones(C, x.dtype)
    out = np.empty_like(x)
    if op.startswith("bn_train"):
        return lambda: F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5, out=out)
    if op == "bn_eval":
        return lambda: F.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5, out=out)
    if op == "ln":
        return lambda: F.layer_norm(x, (C,), w, b, 1e-5, out=out)
    if op == "rms":
        return lambda: F.rms_norm(x, (C,), w, out=out)
    if op == "gn32":
        return lambda: F.group_norm(x, 32, w, b, 1e-5, out=out)
    return lambda: F.instance_norm(x, eps=1e-5, out=out)


def median_time(fn, budget=0.05):
    fn()
    t0, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - t0 < 0.01:
        fn()
        n += 1
    inner = max(1, int(budget / ((time.perf_counter() - t0) / n)))
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}")
    ap.add_argument("--json")
    ap.add_argument("--large", action="store_true")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    rng = np.random.default_rng(0)
    print(f"fastnorm thread scaling; cpu_count={os.cpu_count()}; threads {counts}")
    print(f"{'case':14s} {'shape':22s} " + " ".join(f"{f'{n}T ms':>9s}" for n in counts)
          + " " + " ".join(f"{f'x{n}T':>6s}" for n in counts[1:]))
    rows = []
    for op, shape in CASES + (LARGE if args.large else []):
        x = rng.standard_normal(shape, dtype=np.float32) * 3 + 1
        if op == "bn_train_nhwc":
            x = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
        call = make_call(op, x, rng)
        samples = {n: [] for n in counts}
        for _ in range(args.rounds):  # interleave thread counts so drift hits all alike
            for n in counts:
                fastnorm.set_num_threads(n)
                samples[n].append(median_time(call))
        ms = {n: statistics.median(v) * 1e3 for n, v in samples.items()}
        speed = {n: ms[counts[0]] / ms[n] for n in counts[1:]}
        rows.append({"op": op, "shape": list(shape), "ms": ms, "speedup": speed})
        print(f"{op:14s} {str(shape):22s} " + " ".join(f"{ms[n]:9.4f}" for n in counts) + " "
              + " ".join(f"{speed[n]:6.2f}" for n in counts[1:]), flush=True)
        del x, call
    fastnorm.set_num_threads(counts[-1])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
