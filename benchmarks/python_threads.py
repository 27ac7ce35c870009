"""Several Python threads calling fastnorm at once, against one caller making all the calls.

    python benchmarks/python_threads.py [--threads 4] [--calls 256] [--mb 4] [--reps 3]

Times `calls` layer_norm calls on a float32 input of `mb` MB (out= given: no allocation) made by
one Python thread, then the same calls split over `threads` Python threads, with the thread
count shared between concurrent calls (fastnorm's default) and, for comparison, without (every
call asks for the full count: libgomp keeps one pool per calling thread, so k callers run
k * get_num_threads() busy threads). Prints the aggregate throughput of the threads relative to
the single caller's (>= 1.0: no slowdown from oversubscription). Medians of `reps` runs.
"""
import argparse
import statistics
import threading
import time

import numpy as np

import fastnorm
import fastnorm.functional as F
from fastnorm import _runtime


def timed(n_threads, calls, x, outs):
    """Seconds for `calls` layer_norm calls spread over n_threads Python threads."""
    per = [calls // n_threads + (i < calls % n_threads) for i in range(n_threads)]
    start = threading.Barrier(n_threads + 1)

    def work(i):
        start.wait()
        for _ in range(per[i]):
            F.layer_norm(x, x.shape[-1:], out=outs[i])

    ts = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def measure(threads=4, calls=256, mb=4.0, reps=3):
    """{"single": s, "shared": s, "unshared": s}: medians of reps runs of each way."""
    x = np.random.default_rng(0).standard_normal((max(1, int(mb * 1e6 / 4096)), 1024),
                                                 dtype=np.float32)
    outs = [np.empty_like(x) for _ in range(threads)]
    F.layer_norm(x, (1024,), out=outs[0])  # warm: thread pool, pages of the outputs
    res = {"single": [], "shared": [], "unshared": []}
    old = _runtime._set_thread_sharing(True)
    try:
        for _ in range(reps):  # interleaved, so that a noisy neighbour hits all three alike
            res["single"].append(timed(1, calls, x, outs))
            res["shared"].append(timed(threads, calls, x, outs))
            _runtime._set_thread_sharing(False)
            res["unshared"].append(timed(threads, calls, x, outs))
            _runtime._set_thread_sharing(True)
    finally:
        _runtime._set_thread_sharing(old)
    return {k: statistics.median(v) for k, v in res.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--calls", type=int, default=256)
    ap.add_argument("--mb", type=float, default=4.0)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    r = measure(a.threads, a.calls, a.mb, a.reps)
    print(f"{a.calls} layer_norm calls of {a.mb:g} MB, get_num_threads() = "
          f"{fastnorm.get_num_threads()}")
    print(f"  one caller:                       {r['single']:.3f} s")
    for k, label in (("shared", "shared thread count (default)"), ("unshared", "full count per call")):
        print(f"  {a.threads} Python threads, {label:30s}: {r[k]:.3f} s   throughput vs one "
              f"caller {r['single'] / r[k]:.2f}x")


if __name__ == "__main__":
    main()
