"""Two kernel-level figures of the speed issue, printed side by side from one run:

* channels-last statistics throughput relative to the row kernel: per-(n, c) mean and variance
  (``fastnorm._kernels.instance_moments``) of the same data in NCHW and in NHWC memory, one
  thread, timings interleaved (> 0.8 is the goal; ratio = NCHW time / NHWC time);
* per-call time of decode-size calls (LayerNorm (1, 768), RMSNorm (1, 4096)): functional calls
  with and without ``out=``, a small-input call whose kernel work is negligible (the call's
  overhead), and the layer's call.

Usage::

    python benchmarks/kernel_checks.py
"""
import time

import numpy as np

import fastnorm
import fastnorm.functional as F
from fastnorm import _cases, _kernels


def _interleaved(fa, fb, rounds=30):
    """min seconds of fa and of fb over rounds of one call each, alternating."""
    fa()
    fb()
    ta, tb = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        fa()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t)
    return min(ta), min(tb)


def per_call(fn, n=20000, loops=5):
    """Best mean seconds per call over `loops` loops of n calls (also bench_decode.py's)."""
    for _ in range(1000):
        fn()
    best = float("inf")
    for _ in range(loops):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best


def channels_last_statistics():
    threads = fastnorm.get_num_threads()
    fastnorm.set_num_threads(1)
    try:
        print("channels-last statistics, one thread: NCHW time / NHWC time (goal >= 0.8)")
        for shape in [(1, 256, 32, 32), (8, 128, 56, 56), (8, 256, 56, 56), (32, 256, 56, 56),
                      (8, 1024, 14, 14), (2, 640, 32, 32)]:
            x = _cases.make_input(shape)
            xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
            a, b = _interleaved(lambda: _kernels.instance_moments(x),
                                lambda: _kernels.instance_moments(xl))
            print(f"  {str(shape):20s} {x.nbytes / 2**20:6.1f} MB  NCHW {a * 1e3:7.3f} ms  "
                  f"NHWC {b * 1e3:7.3f} ms  ratio {a / b:.2f}")
    finally:
        fastnorm.set_num_threads(threads)


def decode_calls():
    rng = np.random.default_rng(0)
    print(f"decode-size calls ({fastnorm.get_num_threads()} threads), microseconds per call")
    for op, L in (("layer_norm", 768), ("rms_norm", 4096)):
        x = rng.standard_normal((1, L), dtype=np.float32)
        tiny = rng.standard_normal((1, 16), dtype=np.float32)
        w, wt = np.ones(L, np.float32), np.ones(16, np.float32)
        o = np.empty_like(x)
        if op == "layer_norm":
            calls = {"allocating": lambda: F.layer_norm(x, (L,), w, w),
                     "out=": lambda: F.layer_norm(x, (L,), w, w, out=o),
                     "(1, 16) allocating": lambda: F.layer_norm(tiny, (16,), wt, wt)}
            layer = fastnorm.LayerNorm(L)
        else:
            calls = {"allocating": lambda: F.rms_norm(x, (L,), w),
                     "out=": lambda: F.rms_norm(x, (L,), w, out=o),
                     "(1, 16) allocating": lambda: F.rms_norm(tiny, (16,), wt)}
            layer = fastnorm.RMSNorm(L)
        calls["layer"] = lambda: layer(x)
        times = "  ".join(f"{k} {per_call(f) * 1e6:.2f}" for k, f in calls.items())
        print(f"  {op:10s} (1, {L}): {times}")


if __name__ == "__main__":
    channels_last_statistics()
    decode_calls()
