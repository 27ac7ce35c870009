"""What freeing OpenMP's thread pool before fork costs (fastnorm._runtime's before-fork hook).

    python benchmarks/fork_pause.py [--reps 20]

Prints, medians of `reps` forks: the hook itself (omp_pause_resource_all), the parent's first
parallel call after a fork (its pool is rebuilt) against a steady call, and the forked child's
first call (it builds its own pool) against the parent's steady call.
"""
import argparse
import os
import statistics
import time

import numpy as np

import fastnorm
import fastnorm.functional as F
from fastnorm import _runtime


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    fastnorm.set_num_threads(2)
    x = np.random.default_rng(0).standard_normal((512, 1024), dtype=np.float32)  # 2 MB: parallel
    out = np.empty_like(x)

    def call():
        t = time.perf_counter()
        F.layer_norm(x, 1024, out=out)
        return time.perf_counter() - t

    hook, first, steady, child = [], [], [], []
    for _ in range(a.reps):
        for _ in range(5):
            call()
        steady.append(min(call() for _ in range(5)))
        t = time.perf_counter()
        _runtime._before_fork()  # what os.fork runs first
        hook.append(time.perf_counter() - t)
        r, w = os.pipe()
        pid = os.fork()  # runs the hook again: the pool is already freed
        if pid == 0:
            os.close(r)
            os.write(w, repr(call()).encode())
            os._exit(0)
        os.close(w)
        first.append(call())
        child.append(float(os.read(r, 100)))
        os.close(r)
        os.waitpid(pid, 0)
    med = statistics.median
    print(f"layer_norm 2 MB, 2 threads, medians of {a.reps} forks:")
    print(f"  before-fork hook (omp_pause_resource_all): {med(hook) * 1e6:8.1f} us")
    print(f"  steady call:                               {med(steady) * 1e6:8.1f} us")
    print(f"  parent's first call after fork:            {med(first) * 1e6:8.1f} us")
    print(f"  child's first call:                        {med(child) * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
