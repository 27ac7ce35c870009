"""The layers of issue 14 (the rest of the seeds' family).

* ``filter_response_norm``: ``fastnorm.functional.filter_response_norm`` (with and without
  ``out=``) against plain NumPy (``fastnorm.reference``) and a torch port of timm's
  ``FilterResponseNormTlu2d`` forward (torch has no FRN), on the 4D anchor shapes.
* BN variants: ``CategoricalConditionalBatchNorm2d``, ``SandwichBatchNorm2d`` and
  ``BatchGroupNorm2d`` (training) next to fastnorm's own ``BatchNorm2d`` on the same input: one
  group per shape, so that pytest-benchmark's table shows each variant's time relative to
  BatchNorm2d (the issue's goal: within 1.2x). Each layer's output is checked once against
  ``fastnorm.reference`` before it is timed.
"""
import functools

import numpy as np
import pytest

import fastnorm
from fastnorm import _cases
from fastnorm import reference

# the shared anchors' 4-D shapes (the issue's yardstick: >= 3x the torch port), and one float64
FRN_CASES = ([{"op": "filter_response_norm", "shape": shape}
              for shape in sorted({s for _, s in _cases.SHARED if len(s) == 4})]
             + [{"op": "filter_response_norm", "shape": (8, 256, 28, 28), "dtype": "float64"}])


def _frn_kwargs(case, x):
    p = case.params(x.shape[1])
    return dict(weight=p.weight, bias=p.bias, tau=p.running_mean, eps=1e-5)


def _torch_frn(x, weight, bias, tau, eps):
    """timm's FilterResponseNormTlu2d forward on tensors (timm's ``.float()`` before the mean is
    left out: a no-op on float32, and float64 input keeps float64 so the result check holds)."""
    import torch
    v = (1, -1, 1, 1)
    inv = x.square().mean(dim=(2, 3), keepdim=True).add(eps).rsqrt()
    y = x * inv.expand(x.shape)
    y = y * weight.view(v) + bias.view(v)
    return torch.maximum(y, tau.reshape(v))


@pytest.mark.cases(FRN_CASES)
def test_filter_response_norm(bench_op, case, peer):
    bench_op(case, peer, _frn_kwargs, {"torch": _torch_frn})


BN_SHAPES = [(32, 64, 56, 56), (8, 256, 28, 28), (8, 256, 64, 64)]
VARIANTS = ["BatchNorm2d", "CategoricalConditionalBatchNorm2d", "SandwichBatchNorm2d",
            "BatchGroupNorm2d"]


@functools.lru_cache(maxsize=1)
def _input(shape):
    """3 * N(0, 1) + 1 float32 of shape (the benchmarks' input), the last one kept."""
    return _cases.make_input(shape)


def _layer_and_reference(name, x):
    """The layer (training mode) and a zero-argument float64 reference of its first call."""
    N, C = x.shape[:2]
    labels = np.arange(N) % 10
    if name == "BatchNorm2d":
        m = fastnorm.BatchNorm2d(C)
        return (lambda: m(x)), (lambda: reference.batch_norm(x, m.running_mean.copy(),
                                                             m.running_var.copy(), None, None,
                                                             True))
    if name == "BatchGroupNorm2d":
        m = fastnorm.BatchGroupNorm2d(C, 32)
        return (lambda: m(x)), (lambda: reference.batch_group_norm(
            x, 32, m.running_mean.copy(), m.running_var.copy(), m.weight, m.bias, True))
    m = getattr(fastnorm, name)(C, 10, rng=0)
    bn = m.bn
    return (lambda: m(x, labels)), (lambda: reference.conditional_batch_norm(
        x, labels, m.embed.weight, bn.running_mean.copy(), bn.running_var.copy(), bn.weight,
        bn.bias, True))


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bn_variants_train(benchmark, shape, name):
    x = _input(shape)
    call, ref = _layer_and_reference(name, x)
    want = ref()
    got = call()
    err = np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want))))
    assert got.dtype == np.float32 and err <= 1e-5, f"{name}: off the reference by {err:.3g}"
    benchmark.group = f"bn variants [train] {'x'.join(map(str, shape))} float32"
    benchmark.extra_info.update(layer=name, shape=list(shape))
    benchmark(call)
