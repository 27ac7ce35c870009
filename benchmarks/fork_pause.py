"""What freeing OpenMP's thread pool before fork costs (fastnorm._runtime's before-fork hook).

    python benchmarks/fork_pause.py [--reps 20]

Forks `reps` times with the hook freeing the pool (the default) and `reps` times without it (the
fallback: children run one thread), interleaved, and prints medians and minima of: the fork itself (the
hook included), the parent's first parallel call after the fork (it rebuilds its pool, and
copies the pages it writes that the child shares), the child's first call, and a steady call.
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

    res = {p: {"fork": [], "first": [], "child": [], "steady": []} for p in (True, False)}
    for _ in range(a.reps):
        for pause in (True, False):
            r = res[pause]
            _runtime._pause_on_fork = pause
            for _ in range(5):
                call()
            r["steady"].append(min(call() for _ in range(5)))
            rd, wr = os.pipe()
            t = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                os.close(rd)
                os.write(wr, repr(call()).encode())
                os._exit(0)
            r["fork"].append(time.perf_counter() - t)
            os.close(wr)
            r["first"].append(call())
            r["child"].append(float(os.read(rd, 100)))
            os.close(rd)
            os.waitpid(pid, 0)
    _runtime._pause_on_fork = True
    med = statistics.median
    print(f"layer_norm 2 MB, 2 threads, {a.reps} forks each way, in us (median / min):")
    print(f"  {'':27s} {'pool freed':>17s} {'not freed':>17s}")
    for k, label in (("fork", "os.fork (hook included)"), ("first", "parent's first call after"),
                     ("child", "child's first call"), ("steady", "steady call")):
        cells = [f"{med(res[p][k]) * 1e6:8.0f} /{min(res[p][k]) * 1e6:7.0f}" for p in (True, False)]
        print(f"  {label:27s} {cells[0]:>17s} {cells[1]:>17s}")


if __name__ == "__main__":
    main()
