"""Shared pieces of the pytest-benchmark suite (see benchmarks/README.md).

Conventions, so that a new ``bench_<op>.py`` needs no imports from here (fixtures and a marker
only, which work under every pytest import mode):

* ``@pytest.mark.cases(key_or_list, op=None, peers=PEERS)`` parametrizes a test's ``case`` (and
  ``peer``, when the test takes it) argument, case-major so every peer of one case runs back to
  back on the same cached input. ``key_or_list`` is a key of ``CASES`` (e.g. ``"layer_norm"``,
  ``"batch_norm[train]"``, ``"anchors"``) or a list of dicts of ``Case`` fields; ``op=`` reuses
  a key's shapes for another op (``cases("batch_norm[train]", op="switch_norm")``).
* ``bench_op(case, peer, kwargs_fn=None, functions=None)`` builds the peer's call outside the
  timed region, checks its result once against ``fastnorm.reference`` in float64, sets the
  pytest-benchmark group to ``case.group`` and times the call. ``kwargs_fn(case, x)`` returns the
  functional's keyword arguments after the input (default: ``fastnorm._cases.op_kwargs``); every
  ndarray among them is copied per peer (running statistics are updated in place) and becomes a
  tensor for torch. ``functions`` ({"fastnorm": f, "numpy": g, "torch": h}, any subset) gives
  the functions to call for ops that are not ``fastnorm.functional.<op>`` /
  ``fastnorm.reference.<op>`` / ``torch.nn.functional.<op>``; "numpy" is also the float64
  reference. A peer whose function does not exist (torch has no such op) is skipped.
* Peers: ``fastnorm_out`` (``out=`` preallocated), ``fastnorm`` (allocating), ``numpy`` (the
  plain NumPy baseline: ``fastnorm.reference.<op>(..., dtype=x.dtype)``) and ``torch``
  (``torch.nn.functional.<op>`` on CPU; skipped when torch is not importable).
"""
import dataclasses
import gc
import math
import statistics
import time

import numpy as np
import pytest

try:
    import resource
except ImportError:  # Windows has no getrusage: every sample counts as clean
    resource = None

import fastnorm
import fastnorm.functional
from fastnorm import _cases, reference

PEERS = ("fastnorm_out", "fastnorm", "numpy", "torch")

# shapes, inputs, parameters, calls and tolerances live in fastnorm/_cases.py (shared with
# `python -m fastnorm`, thread_scaling.py and the tests)
ANCHORS = _cases.ANCHORS


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark input: the op (a ``fastnorm.functional`` name), a mode that changes the call
    (``"train"``/``"eval"`` for batch_norm), the input's shape, dtype and memory layout."""
    op: str
    shape: tuple
    dtype: str = "float32"
    mode: str = ""
    layout: str = "contiguous"  # or "channels_last": NHWC memory seen as an NCHW array
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def label(self):
        return self.op + (f"[{self.mode}]" if self.mode else "")

    @property
    def id(self):
        """Test id: shape-dtype[-layout] (the op is in the test's name)."""
        return "-".join([_fmt(self.shape), self.dtype]
                        + ([self.layout] if self.layout != "contiguous" else []))

    @property
    def group(self):
        """pytest-benchmark group: one table per op/mode, shape, dtype and layout."""
        return " ".join([self.label, _fmt(self.shape), self.dtype]
                        + ([self.layout] if self.layout != "contiguous" else []))

    def info(self):
        return {"op": self.op, "mode": self.mode, "shape": list(self.shape), "dtype": self.dtype,
                "layout": self.layout}

    def input(self):
        """The input array (``_cases.make_input``: 3 * N(0, 1) + 1 in the case's dtype and
        layout), cached: the peers of one case share it."""
        key = (self.shape, self.dtype, self.layout, self.seed)
        if _input_cache.get("key") != key:
            _input_cache.clear()  # one entry only: some inputs are tens of MB
            _input_cache.update(key=key, x=_cases.make_input(self.shape, self.dtype, self.layout,
                                                             self.seed))
        return _input_cache["x"]

    def params(self, n):
        """``_cases.params(n, dtype)``: weight, bias, running_mean, running_var of length n."""
        return _cases.params(n, self.dtype)


_input_cache = {}
_expected_cache = {}


def _fmt(shape):
    return "x".join(map(str, shape))


def _anchor_cases(op=None, anchors=ANCHORS):
    out = []
    for name, shape in anchors:
        aop, mode = _cases.OPS[name]
        if op is None or op == (aop, mode):
            out.append(Case(aop, shape, mode=mode))
    return out


# Shape lists per op (key: Case.label). Anchors first, then a channels-last case and float64 ones.
CASES = {
    "batch_norm[train]": _anchor_cases(("batch_norm", "train")) + [
        Case("batch_norm", (32, 64, 56, 56), mode="train", layout="channels_last"),
        Case("batch_norm", (8, 256, 28, 28), "float64", mode="train"),
    ],
    "batch_norm[eval]": _anchor_cases(("batch_norm", "eval")) + [
        Case("batch_norm", (1, 64, 112, 112), mode="eval", layout="channels_last"),
    ],
    "layer_norm": _anchor_cases(("layer_norm", "")) + [
        Case("layer_norm", (32, 128, 768), "float64"),
    ],
    "group_norm": _anchor_cases(("group_norm", "")),
    "instance_norm": _anchor_cases(("instance_norm", "")),
    "rms_norm": _anchor_cases(anchors=_cases.RMS) + [
        Case("rms_norm", (32, 128, 768), "float64"),
    ],
    "anchors": _anchor_cases(),
}


def _default_kwargs(case, x):
    """How each op is called in the benchmarks: keyword arguments after the input."""
    return _cases.op_kwargs(case.op, case.mode, x)


def pytest_addoption(parser):
    group = parser.getgroup("fastnorm benchmarks")
    group.addoption("--ratio-margin", type=float, default=0.10,
                    help="bench_ratios.py: fail when fastnorm's median time exceeds torch's by "
                         "more than this fraction on an anchor shape (default 0.10)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "cases(key_or_list, op=None, peers=PEERS): parametrize `case` (and `peer`) "
                   "from benchmarks/conftest.py's CASES")


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("cases")
    if marker is None:
        return
    spec = marker.args[0] if marker.args else marker.kwargs["key"]
    op = marker.kwargs.get("op")
    peers = marker.kwargs.get("peers", PEERS)
    if isinstance(spec, str):
        cases = CASES[spec]
    else:
        cases = [s if isinstance(s, Case) else Case(**s) for s in spec]
    if op is not None:
        cases = [dataclasses.replace(c, op=op) for c in cases]
    if "peer" in metafunc.fixturenames:
        metafunc.parametrize(("case", "peer"), [
            pytest.param(c, p, id=f"{c.id}-{p}") for c in cases for p in peers])
    else:
        # no op in the test's name: put it in the id (batch_norm-train-8x256x28x28-float32)
        metafunc.parametrize("case", [
            pytest.param(c, id="-".join(filter(None, [c.op, c.mode, c.id]))) for c in cases])


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what was measured in saved runs (--benchmark-autosave / --benchmark-json)."""
    cfg = fastnorm.get_config()
    info = {"version": cfg.get("version"), "openmp": cfg.get("openmp"),
            "num_threads": fastnorm.get_num_threads(), "numpy": np.__version__}
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    machine_info["fastnorm"] = info


@pytest.fixture
def anchor_list():
    """The shared benchmark's cases as (its op name, shape): fastnorm._cases.SHARED."""
    return [(op, tuple(shape)) for op, shape in _cases.SHARED]


@pytest.fixture
def torch():
    """PyTorch (the CPU peer), or skip when it is not importable (absent or broken)."""
    try:
        import torch
    except ImportError as e:
        pytest.skip(f"torch not importable: {e}")
    return torch


def _lookup(peer, op, functions, torch_mod):
    """The function a peer calls. ``functions`` keys: "fastnorm" (both fastnorm peers), "numpy"
    (the baseline, also the float64 reference) and "torch"."""
    functions = functions or {}
    if peer.startswith("fastnorm"):
        return functions.get("fastnorm", getattr(fastnorm.functional, op, None))
    if peer in ("numpy", "reference"):
        return functions.get("numpy", getattr(reference, op, None))
    if peer == "torch":
        return functions.get("torch", getattr(torch_mod.nn.functional, op, None))
    raise ValueError(f"unknown peer {peer!r}")


def _copy_kwargs(kwargs):
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def _max_err(got, want):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return math.inf
    if want.size == 0:
        return 0.0
    return float(np.max(np.abs(got.astype(np.float64) - want))
                 / max(1.0, float(np.max(np.abs(want)))))


def _expected(case, kwargs_fn, functions):
    """float64 reference result and the arrays among its kwargs after the call (cached, one
    entry: all peers of a case share it)."""
    key = (case, kwargs_fn, tuple(sorted((functions or {}).items(), key=lambda kv: kv[0])))
    if _expected_cache.get("key") != key:
        _expected_cache.clear()
        x = case.input()
        kw = _copy_kwargs(kwargs_fn(case, x))
        y = _lookup("reference", case.op, functions, None)(x, **kw, dtype=np.float64)
        _expected_cache.update(key=key, y=y, kw=kw)
    return _expected_cache["y"], _expected_cache["kw"]


def _check(case, peer, got, kw, want, want_kw):
    """Fail when a peer's output (or the arrays it updated in place) is off the reference."""
    if peer == "torch":
        got = got.numpy()
        kw = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in kw.items()}
    tol = _cases.BENCH_TOL[("fastnorm" if peer.startswith("fastnorm") else "peer", case.dtype)]
    assert got.shape == case.shape and got.dtype == np.dtype(case.dtype), \
        f"{peer}: got {got.dtype}{got.shape}, want {case.dtype}{case.shape}"
    err = _max_err(got, want)
    assert err <= tol, f"{peer} {case.group}: output off the reference by {err:.3g} > {tol:g}"
    for k, v in want_kw.items():
        if isinstance(v, np.ndarray):
            err = _max_err(kw[k], v)
            assert err <= tol, f"{peer} {case.group}: {k} off the reference by {err:.3g} > {tol:g}"


@pytest.fixture
def peer_fn(request):
    """peer_fn(case, peer, kwargs_fn=None, functions=None) -> zero-argument callable running the
    peer's op on the case's input. Everything is built here, outside any timed region, and the
    callable's first call is checked against the float64 reference (a broken op fails here)."""
    def make(case, peer, kwargs_fn=None, functions=None):
        kwargs_fn = kwargs_fn or _default_kwargs
        torch_mod = request.getfixturevalue("torch") if peer == "torch" else None
        fn = _lookup(peer, case.op, functions, torch_mod)
        if fn is None:
            pytest.skip(f"{peer} has no {case.op}")
        want, want_kw = _expected(case, kwargs_fn, functions)
        x = case.input()
        kw = _copy_kwargs(kwargs_fn(case, x))  # own running statistics per peer
        if peer == "fastnorm_out":
            out = np.empty_like(x)  # same layout as x (channels-last stays channels-last)
            call = lambda: fn(x, **kw, out=out)  # noqa: E731
        elif peer == "fastnorm":
            call = lambda: fn(x, **kw)  # noqa: E731
        elif peer == "numpy":
            call = lambda: fn(x, **kw, dtype=x.dtype)  # noqa: E731
        else:
            t = torch_mod.from_numpy
            tx = t(x)  # shares memory and strides: channels-last stays channels-last
            kw = {k: t(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
            call = lambda: fn(tx, **kw)  # noqa: E731
        got = call()
        if peer == "fastnorm_out":
            assert got is out, "fastnorm with out= did not return out"
        _check(case, peer, got, kw, want, want_kw)
        return call
    return make


@pytest.fixture
def bench_op(benchmark, peer_fn):
    """bench_op(case, peer, kwargs_fn=None, functions=None): build and check the peer's call
    (see peer_fn), then time it with pytest-benchmark in the group ``case.group``."""
    def run(case, peer, kwargs_fn=None, functions=None):
        benchmark.group = case.group
        benchmark.extra_info.update(case.info(), peer=peer)
        call = peer_fn(case, peer, kwargs_fn, functions)
        benchmark(call)
    return run


# --- fastnorm/torch ratios (bench_ratios.py) -----------------------------------------------------

_ratio_rows = []


@pytest.fixture
def record_ratio():
    """record_ratio(case, median, tries, note): one line of the terminal summary; ``median`` is
    the deciding ratio, ``tries`` the (median, clean) of every measurement."""
    return lambda case, median, tries, note="": _ratio_rows.append((case, median, tries, note))


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _ratio_rows:
        return
    tr = terminalreporter
    tr.section("fastnorm vs its peers: median time ratio peer/fastnorm (> 1: fastnorm faster)")
    for case, median, tries, note in _ratio_rows:
        line = f"{case.label:18s} {_fmt(case.shape):16s} {case.dtype:8s} {median:6.2f}"
        if len(tries) > 1:
            line += "  measurements: " + ", ".join(
                f"{m:.2f}" + ("" if ok else " (noisy)") for m, ok in tries)
        tr.write_line(line + (f"  {note}" if note else ""))


# --- timing of two callables, for the ratio assertions -------------------------------------------


ROUNDS = 9         # interleaved rounds per measurement
MIN_CLEAN = 5      # rounds with a clean sample of both peers for a clean measurement
SAMPLES = 3        # samples per peer per round; the fastest (clean first) counts
SAMPLE_S = 2e-3    # target duration of one sample (a loop of calls)
ATTEMPTS = 3       # measurements before a case is declared slower


def _preemptions():
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw if resource else 0


def _calibrate(fn, target):
    """Calls per sample so that a sample lasts about `target` seconds (at least 1); the
    per-call time is the fastest of a few timings, so a stall does not shrink the loop."""
    fn()
    per = float("inf")
    for _ in range(5):
        n, t0 = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - t0 < target / 10:
            fn()
            n += 1
        per = min(per, (time.perf_counter() - t0) / n)
    return max(1, round(target / per))


def _best(fn, inner, samples):
    """(seconds per call, clean): the fastest clean sample, else the fastest sample."""
    fn()  # untimed: absorbs the switch from the other peer (its threads, the caches)
    found = []
    for _ in range(samples):
        p = _preemptions()
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        dt = (time.perf_counter() - t) / inner
        found.append((_preemptions() == p, dt))
    clean = [dt for ok, dt in found if ok]
    return (min(clean), True) if clean else (min(dt for _, dt in found), False)


def measure(fast, other, rounds=ROUNDS, samples=SAMPLES, target=SAMPLE_S):
    """Interleaved timing of two callables: one (ratio other/fast, both samples clean) per
    round. target=None: one call per sample, no calibration (a smoke run)."""
    inner_fast, inner_other = ((1, 1) if target is None else
                               (_calibrate(fast, target), _calibrate(other, target)))
    out = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            if r % 2 == 0:
                tf, cf = _best(fast, inner_fast, samples)
                to, co = _best(other, inner_other, samples)
            else:
                to, co = _best(other, inner_other, samples)
                tf, cf = _best(fast, inner_fast, samples)
            out.append((to / tf, cf and co))
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


def verdict(rounds, min_clean=MIN_CLEAN):
    """(median ratio, clean): over the clean rounds when there are enough, else all rounds."""
    clean = [ratio for ratio, ok in rounds if ok]
    if len(clean) >= min(min_clean, len(rounds)):
        return statistics.median(clean), True
    return statistics.median(ratio for ratio, _ in rounds), False


def _benchmarking_disabled(config):
    session = getattr(config, "_benchmarksession", None)  # also disabled under xdist
    if session is not None:
        return bool(session.disabled)
    return bool(config.getoption("benchmark_disable", False))


@pytest.fixture
def check_ratio(record_ratio, request):
    """check_ratio(case, fast, other, floor, what="torch"): the median time ratio other/fast
    (bench_ratios.py's method: interleaved rounds, clean samples, up to ATTEMPTS
    measurements) must reach ``floor`` (None: one measurement, recorded, then a skip saying
    so); recorded in the terminal summary. Under
    --benchmark-disable both calls run once untimed and the test skips; under
    --benchmark-skip it skips."""
    config = request.config

    def run(case, fast, other, floor, what="torch", note_margin=False):
        """floor None: measure once and record, then skip (reported, not asserted)."""
        if config.getoption("benchmark_skip", False):
            pytest.skip("--benchmark-skip")
        if _benchmarking_disabled(config):
            verdict(measure(fast, other, rounds=2, samples=1, target=None))  # keep it alive
            pytest.skip("benchmarking disabled: ratio not measured or asserted")
        if floor is None:
            median, clean = verdict(measure(fast, other))
            record_ratio(case, median, [(median, clean)],
                         f"{what}/fastnorm, not asserted{'' if clean else ' (noisy)'}")
            pytest.skip(f"ratio {what}/fastnorm {median:.2f} recorded, not asserted")
        tries = []  # (median, clean) per measurement
        for _ in range(ATTEMPTS):
            median, clean = verdict(measure(fast, other))
            tries.append((median, clean))
            if clean and median >= floor:
                break  # a clean pass decides; anything else is measured again
        clean = [m for m, ok in tries if ok]
        noisy = [m for m, ok in tries if not ok]
        median, note = (max(clean), "") if clean else (max(noisy), "noisy")
        passed = median >= floor
        if not passed and not clean:
            note = "inconclusive (noisy)"
        record_ratio(case, median, tries, f"{what}/fastnorm, floor {floor:.2f} {note}".strip())
        detail = (f"median time ratio {what}/fastnorm "
                  f"{', '.join(f'{m:.2f}' + ('' if ok else ' (noisy)') for m, ok in tries)} "
                  f"in {len(tries)} measurements, below {floor:.2f}"
                  + (f" (--ratio-margin {1 - floor:g})" if note_margin else ""))
        if not passed and not clean:
            pytest.skip(f"inconclusive, machine too noisy: {detail}")
        assert passed, f"fastnorm slower than required against {what} on {case.group}: {detail}"
    return run
