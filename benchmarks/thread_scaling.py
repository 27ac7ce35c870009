"""Thread scaling of fastnorm's ops: time each case with 1, 2, ... threads, interleaved in one
process, and print the speedup of each thread count over one thread.

    python benchmarks/thread_scaling.py [--threads 1,2] [--json FILE] [--large]

The cases are the anchor shapes of fastnorm/_cases.py, an RMSNorm case and a channels-last
batch-norm case (float32, out= given so that allocation does not blur the kernels' scaling),
called as the benchmarks call them. A speedup below 1.0 means threading costs more than it saves
for that size; the kernels gate the thread count by size (FN_MIN_WORK_PER_THREAD in src_c/) to
avoid that.
"""
import argparse
import json
import os
import statistics

import numpy as np

import fastnorm
import fastnorm.functional as F
from fastnorm import _cases

# (case name, shape, layout)
CASES = ([(name, shape, "contiguous") for name, shape in _cases.ANCHORS + _cases.RMS[:1]]
         + [("bn_train", (32, 64, 56, 56), "channels_last")])
LARGE = [(name, shape, "contiguous") for name, shape in _cases.LARGE]


def make_call(name, x):
    op, mode = _cases.OPS[name]
    kw = _cases.op_kwargs(op, mode, x)
    out = np.empty_like(x)
    fn = getattr(F, op)
    return lambda: fn(x, **kw, out=out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}")
    ap.add_argument("--json")
    ap.add_argument("--large", action="store_true")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    print(f"fastnorm thread scaling; cpu_count={os.cpu_count()}; threads {counts}")
    print(f"{'case':14s} {'shape':22s} " + " ".join(f"{f'{n}T ms':>9s}" for n in counts)
          + " " + " ".join(f"{f'x{n}T':>6s}" for n in counts[1:]))
    rows = []
    for name, shape, layout in CASES + (LARGE if args.large else []):
        x = _cases.make_input(shape, np.float32, layout)
        call = make_call(name, x)
        samples = {n: [] for n in counts}
        for _ in range(args.rounds):  # interleave thread counts so drift hits all alike
            for n in counts:
                fastnorm.set_num_threads(n)
                samples[n].append(_cases.median_time(call, rounds=1, budget=0.05))
        ms = {n: statistics.median(v) * 1e3 for n, v in samples.items()}
        speed = {n: ms[counts[0]] / ms[n] for n in counts[1:]}
        case = name + ("_nhwc" if layout == "channels_last" else "")
        rows.append({"op": case, "shape": list(shape), "ms": ms, "speedup": speed})
        print(f"{case:14s} {str(shape):22s} " + " ".join(f"{ms[n]:9.4f}" for n in counts) + " "
              + " ".join(f"{speed[n]:6.2f}" for n in counts[1:]), flush=True)
        del x, call
    fastnorm.set_num_threads(counts[-1])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
