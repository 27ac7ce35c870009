"""Speed assertions: on every anchor shape (fastnorm/_cases.py's ANCHORS, float32), fastnorm with
``out=`` must not be slower than torch CPU by more than ``--ratio-margin`` (default 10%). The
measurement (the ``check_ratio`` fixture of conftest.py, shared with bench_half.py,
bench_add_norm.py and bench_activation.py) works as follows.

Only with benchmarking enabled (``pytest benchmarks`` or ``pytest benchmarks -k ratios``). Under
``--benchmark-disable`` (CI's smoke run) each case still builds, checks and runs its two calls
once, then skips: no timing, no assertion. Under ``--benchmark-skip`` it skips outright; under
``--benchmark-only`` pytest-benchmark skips it (it times with its own loop, not the fixture).

Made for a noisy, shared 2-core machine, where another process's threads can stall a parallel
region for whole scheduler ticks (milliseconds):
* both peers are timed in the same process, interleaved round by round, the order alternating
  (drift and the cost of switching between the two thread pools hit both alike), each peer's
  turn opening with an untimed call;
* a sample is a loop of calls lasting about 2 ms (microsecond-sized calls are not timer noise);
  a sample during which the process was preempted (its involuntary context switches, from
  getrusage, went up) is unclean; each round keeps, per peer, the fastest of 3 samples, clean
  ones first (interference only ever adds time);
* the verdict is the median over the rounds of the per-round ratio torch/fastnorm, over the
  rounds where both peers had a clean sample when at least 5 of the 9 did (the measurement is
  clean), else over all rounds (the measurement is noisy);
* up to 3 measurements, until a clean one passes. The case passes on a clean pass; fails when
  every clean measurement is below 1 - margin; with no clean measurement at all it passes when a
  noisy one clears the bar (noted "noisy") and is skipped as inconclusive otherwise. A real
  regression fails on a quiet machine; load from other processes does not make it flake.
"""
import importlib.util

import pytest


@pytest.mark.cases("anchors")
def test_fastnorm_not_slower_than_torch(case, peer_fn, check_ratio, request):
    other = peer_fn(case, "torch")        # skips when torch is not importable
    fast = peer_fn(case, "fastnorm_out")  # built and checked against the reference
    check_ratio(case, fast, other, 1.0 - request.config.getoption("ratio_margin"),
                what="torch", note_margin=True)


def test_anchor_shapes_match_shared(request):
    """fastnorm._cases.SHARED is a copy of ../shared/bench/anchors.py's CASES (the project's
    shared benchmark, beside the repository, when present): keep them in step."""
    path = request.config.rootpath.parent / "shared" / "bench" / "anchors.py"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    spec = importlib.util.spec_from_file_location("_shared_bench_anchors", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ours = request.getfixturevalue("anchor_list")
    assert [(op, tuple(s)) for op, s in mod.CASES] == ours
