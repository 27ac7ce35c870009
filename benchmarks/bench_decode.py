"""Per-call time of decode-size calls, as a transformer's token loop makes them: allocating
``F.layer_norm`` on (1, 768) and ``F.rms_norm`` on (1, 4096), float32, weight (and bias) given.
The target is 1.0 us a call (the fastest of 75 loops of 2,000 calls, so that a loop another
process slowed does not count). This is an absolute time, so it holds only for machines like the project's (a
2023 server core); the ratio benchmarks hold anywhere.

RMSNorm (1, 4096) is the tight one: its 48 KB (input, weight, output) overflow L1, so the
kernel alone takes about 0.5 us (the sum of squares in double about 0.17 us, the L2-bound
normalize about 0.3 us) and the call's fixed cost about 0.3 us. It met the target once its
output came from the pool of small outputs (fastnorm._alloc: no array made and destroyed per
call): 0.87-0.96 us, against 1.03-1.16 us before, on AMD Zen 4. Where the output buffer lands
matters: in about one process in five the pooled buffer made it 1.4 us while the out= call in
the same process took 0.92, and a fresh buffer at another address in that process 0.89 (the
allocations before the pool varied the same way, 1.07-1.59 us). So each of the three
measurements starts on a fresh output buffer at another address, and the best counts: the
cost of the call, not of one unlucky placement (the spread is in the README).
``python benchmarks/kernel_checks.py`` prints the same calls, out= and layer calls included.
Under --benchmark-disable each call runs once and the test skips."""
import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F

from kernel_checks import per_call

TARGET_US = 1.0


def _case(op, L):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, L), dtype=np.float32)
    w = rng.standard_normal(L, dtype=np.float32)
    if op == "layer_norm":
        return lambda: F.layer_norm(x, (L,), w, w)
    return lambda: F.rms_norm(x, (L,), w)


@pytest.mark.parametrize("op, L", [("layer_norm", 768), ("rms_norm", 4096)])
def test_decode_call_time(op, L, request):
    fn = _case(op, L)
    y = fn()
    assert y.shape == (1, L) and y.dtype == np.float32
    if request.config.getoption("benchmark_disable", False):
        pytest.skip("benchmarking disabled: per-call time not measured or asserted")
    best, shift = float("inf"), []
    for k in range(3):
        del y
        fastnorm.release_output_cache()  # the pooled output goes ...
        shift.append(np.empty(1024 * (k + 1), np.uint8))  # ... and the next lands elsewhere
        y = fn()
        best = min(best, per_call(fn, 2000, loops=25))
    us = best * 1e6
    assert us <= TARGET_US, f"{op} (1, {L}): {us:.2f} us a call, above {TARGET_US} us"
