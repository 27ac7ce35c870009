"""Backward passes: fastnorm's ``native_*_backward`` against torch's aten backward ops called
directly (``torch.ops.aten.native_batch_norm_backward`` ...), on the anchor shapes of
``../shared/bench/anchors.py`` (float32, x = 3 N(0, 1) + 1, every gradient asked).

torch's peers: batch norm (train, eval) and instance norm (as torch runs it: batch norm on the
input seen as (1, N*C, *)) ``native_batch_norm_backward``; layer norm
``native_layer_norm_backward``; group norm ``native_group_norm_backward``; RMSNorm: torch has no
CPU kernel for ``_fused_rms_norm_backward``, so its peer is the autograd backward of
``torch.nn.functional.rms_norm`` (a graph of elementwise ops), timed as ``.backward()`` on a
prepared graph (retain_graph). Statistics come from each library's own forward, outside the
timing, and every fastnorm result is checked against torch's once before timing.

As a pytest-benchmark file (``--benchmark-disable`` in CI: a smoke test)::

    python -m pytest benchmarks/bench_backward.py --benchmark-only

As a script, one side-by-side run with ratios torch / fastnorm (> 1: fastnorm faster) and their
geometric mean::

    python benchmarks/bench_backward.py [--only SUBSTRING] [--cpu-time]

``--cpu-time``: both libraries on one thread, timed by the process's CPU time (time spent
descheduled on a busy machine is not counted; use it when other work shares the cores).
"""
import math
import sys
import time

import numpy as np
import pytest

import fastnorm.functional as F
from fastnorm import _cases

# the shared benchmark's cases (fastnorm._cases.SHARED: the anchors, RMSNorm and channels-last)
CASES = _cases.SHARED


def _inputs(op, shape):
    rng = np.random.default_rng(0)
    if op.endswith("_nhwc"):  # NHWC memory seen as NCHW
        s = (shape[0],) + shape[2:] + (shape[1],)
        x = np.moveaxis(rng.standard_normal(s, dtype=np.float32) * 3 + 1, -1, 1)
        dy = np.moveaxis(rng.standard_normal(s, dtype=np.float32), -1, 1)
    else:
        x = rng.standard_normal(shape, dtype=np.float32) * 3 + 1
        dy = rng.standard_normal(shape, dtype=np.float32)
    C = shape[-1] if op in ("ln", "rms") else shape[1]
    w, b = rng.standard_normal(C, dtype=np.float32), rng.standard_normal(C, dtype=np.float32)
    rm = rng.standard_normal(C, dtype=np.float32)
    rv = np.abs(rng.standard_normal(C, dtype=np.float32)) + 0.5
    return x, dy, w, b, rm, rv


def make_calls(op, shape, torch):
    """(fastnorm call, torch call or None): zero-argument callables returning the gradients."""
    x, dy, w, b, rm, rv = _inputs(op, shape)
    C = w.size
    all3 = [True, True, True]
    kind = op.replace("_nhwc", "")
    if kind in ("bn_train", "bn_eval"):
        tr = kind == "bn_train"
        _, m, r = F.native_batch_norm(x, w, b, rm.copy(), rv.copy(), tr, 0.1, 1e-5)
        ours = lambda: F.native_batch_norm_backward(dy, x, w, rm, rv, m, r, tr, 1e-5, all3)  # noqa: E731
    elif kind == "ln":
        _, m, r = F.native_layer_norm(x, (C,), w, b, 1e-5)
        ours = lambda: F.native_layer_norm_backward(dy, x, (C,), m, r, w, b, all3)  # noqa: E731
    elif kind == "rms":
        _, r = F.native_rms_norm(x, (C,), w, None)
        ours = lambda: F.native_rms_norm_backward(dy, x, (C,), r, w, [True, True])  # noqa: E731
    elif kind == "gn32":
        N, HxW = shape[0], int(np.prod(shape[2:]))
        _, m, r = F.native_group_norm(x, w, b, N, C, HxW, 32, 1e-5)
        ours = lambda: F.native_group_norm_backward(dy, x, m, r, w, N, C, HxW, 32, all3)  # noqa: E731
    else:  # in: no affine, no running statistics (as anchors.py)
        _, m, r = F.native_instance_norm(x, None, None, None, None, True, 0.1, 1e-5)
        ours = lambda: F.native_instance_norm_backward(dy, x, None, None, None, m, r, True, 1e-5,  # noqa: E731
                                                       [True, False, False])
    if torch is None:
        return ours, None
    A, t = torch.ops.aten, torch.from_numpy
    tx, tdy, tw, tb, trm, trv = t(x), t(dy), t(w), t(b), t(rm.copy()), t(rv.copy())
    if kind in ("bn_train", "bn_eval"):
        _, tm, tr_ = A.native_batch_norm(tx, tw, tb, trm, trv, tr, 0.1, 1e-5)
        theirs = lambda: A.native_batch_norm_backward(tdy, tx, tw, trm, trv, tm, tr_, tr, 1e-5, all3)  # noqa: E731
    elif kind == "ln":
        _, tm, tr_ = A.native_layer_norm(tx, [C], tw, tb, 1e-5)
        theirs = lambda: A.native_layer_norm_backward(tdy, tx, [C], tm, tr_, tw, tb, all3)  # noqa: E731
    elif kind == "rms":
        gx, gw = tx.clone().requires_grad_(), tw.clone().requires_grad_()
        y = torch.nn.functional.rms_norm(gx, [C], gw)

        def theirs():
            gx.grad = gw.grad = None
            y.backward(tdy, retain_graph=True)
            return gx.grad, gw.grad
    elif kind == "gn32":
        _, tm, tr_ = A.native_group_norm(tx, tw, tb, N, C, HxW, 32, 1e-5)
        theirs = lambda: A.native_group_norm_backward(tdy, tx, tm, tr_, tw, N, C, HxW, 32, all3)  # noqa: E731
    else:
        xs, dys = tx.reshape((1, -1) + shape[2:]), tdy.reshape((1, -1) + shape[2:])
        _, tm, tr_ = A.native_batch_norm(xs, None, None, None, None, True, 0.1, 1e-5)
        theirs = lambda: (A.native_batch_norm_backward(dys, xs, None, None, None, tm, tr_, True,  # noqa: E731
                                                       1e-5, [True, False, False])[0].reshape(shape),)
    return ours, theirs


def check(ours, theirs):
    """fastnorm's gradients against torch's (float32: within 1e-3 of the largest value)."""
    for g, t in zip(ours(), theirs()):
        if g is None or t is None:
            continue
        t = t.detach().numpy()
        assert g.shape == t.shape and g.dtype == t.dtype
        err = np.max(np.abs(g.astype(np.float64) - t)) / max(1.0, float(np.max(np.abs(t))))
        assert err < 1e-3, f"gradient off torch's by {err:.3g}"


@pytest.fixture
def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


@pytest.mark.parametrize("peer", ["fastnorm", "torch"])
@pytest.mark.parametrize("op,shape", CASES, ids=[f"{o}-{'x'.join(map(str, s))}" for o, s in CASES])
def test_backward(benchmark, torch_or_none, op, shape, peer):
    if peer == "torch" and torch_or_none is None:
        pytest.skip("torch not importable")
    ours, theirs = make_calls(op, shape, torch_or_none)
    if theirs is not None:
        check(ours, theirs)
    benchmark.group = f"backward {op} {'x'.join(map(str, shape))}"
    benchmark(ours if peer == "fastnorm" else theirs)


def cpu_time(fn, budget=0.3):
    """CPU seconds of the process per call (one thread: wall time without preemption)."""
    fn()
    t0, n = time.process_time(), 0
    while n < 3 or time.process_time() - t0 < budget:
        fn()
        n += 1
    return (time.process_time() - t0) / n


def main(argv):
    import torch
    import fastnorm
    only = argv[argv.index("--only") + 1] if "--only" in argv else ""
    cpu = "--cpu-time" in argv
    if cpu:
        torch.set_num_threads(1)
        fastnorm.set_num_threads(1)
    ratios = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fastnorm "
          f"{fastnorm.get_num_threads()} threads, {'CPU' if cpu else 'wall'} time")
    print(f"{'case':14s} {'shape':18s} {'fastnorm':>11s} {'torch':>11s} {'ratio':>7s}")
    for op, shape in CASES:
        if only not in op:
            continue
        ours, theirs = make_calls(op, shape, torch)
        check(ours, theirs)
        if cpu:
            tf, tt = cpu_time(ours), cpu_time(theirs)
        else:
            time.sleep(0.03)  # torch's threads stop spinning before fastnorm is timed
            tf = _cases.median_time(ours, budget=0.3)
            time.sleep(0.03)
            tt = _cases.median_time(theirs, budget=0.3)
        ratios.append(tt / tf)
        print(f"{op:14s} {'x'.join(map(str, shape)):18s} {tf * 1e6:9.1f}us {tt * 1e6:9.1f}us "
              f"{tt / tf:7.2f}", flush=True)
    gm = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(f"geometric mean of torch/fastnorm over {len(ratios)} cases: {gm:.2f} "
          f"(min {min(ratios):.2f})")


if __name__ == "__main__":
    main(sys.argv[1:])
