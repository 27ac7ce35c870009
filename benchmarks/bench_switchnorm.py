"""SwitchNorm (fastnorm.SwitchNorm2d, the authors' Switchable Normalization) in training mode
(mixed IN/LN/BN statistics, running statistics updated in place) and in eval mode (running
statistics as the BN part), against plain NumPy (``fastnorm.reference.switch_norm`` in the input's
dtype). There is no torch peer: torch has no SwitchNorm (tests/test_switchnorm.py holds a port of
the authors' module, for parity, not for timing).

fastnorm has no functional ``switch_norm``: the "fastnorm" peer calls a SwitchNorm2d/3d layer that
holds the case's arrays (built once per set of arrays, outside the timed loop; the running
statistics it updates are the case's own, so the suite's check against the float64 reference
covers them too). The ``out=`` peer does not apply (layers allocate their output).
"""
import numpy as np
import pytest

import fastnorm

CASES = [
    {"op": "switch_norm", "shape": (8, 64, 56, 56), "mode": "train"},
    {"op": "switch_norm", "shape": (8, 64, 56, 56), "mode": "eval"},
    {"op": "switch_norm", "shape": (8, 64, 56, 56), "mode": "train", "layout": "channels_last"},
    {"op": "switch_norm", "shape": (8, 256, 28, 28), "dtype": "float64", "mode": "train"},
]
PEERS = ("fastnorm", "numpy")


def _kwargs(case, x):
    """The keyword arguments of fastnorm.reference.switch_norm after the input, with the
    authors' parameter shapes: weight/bias (1, C, 1, 1), running stats (1, C, 1)."""
    C = x.shape[1]
    p = case.params(C)
    ones = (1,) * (x.ndim - 2)
    mix = np.random.default_rng(7).standard_normal(6).astype(x.dtype)
    return dict(running_mean=p.running_mean.reshape(1, C, 1),
                running_var=p.running_var.reshape(1, C, 1),
                weight=p.weight.reshape((1, C) + ones), bias=p.bias.reshape((1, C) + ones),
                mean_weight=mix[:3], var_weight=mix[3:], training=case.mode == "train",
                momentum=0.9, eps=1e-5, using_moving_average=True)


_layer = {}


def _fastnorm_switch_norm(x, running_mean, running_var, weight, bias, mean_weight, var_weight,
                          training, momentum, eps, using_moving_average):
    """SwitchNorm2d/3d holding exactly these arrays (one cached layer: built on the first call)."""
    key = (x.ndim, id(running_mean), id(running_var), id(weight), id(bias), id(mean_weight),
           id(var_weight), training, momentum, eps, using_moving_average)
    if _layer.get("key") != key:
        cls = fastnorm.SwitchNorm2d if x.ndim == 4 else fastnorm.SwitchNorm3d
        m = cls(x.shape[1], eps, momentum, using_moving_average, dtype=weight.dtype)
        m.weight, m.bias = weight, bias
        m.mean_weight, m.var_weight = mean_weight, var_weight
        m.running_mean, m.running_var = running_mean, running_var
        m.train(training)
        _layer.clear()
        _layer.update(key=key, m=m, keep=(running_mean, running_var, weight, bias, mean_weight,
                                          var_weight))  # keep the ids valid
    return _layer["m"](x)


FUNCTIONS = {"fastnorm": _fastnorm_switch_norm, "numpy": fastnorm.reference.switch_norm}


@pytest.mark.cases([c for c in CASES if c["mode"] == "train"], peers=PEERS)
def test_switch_norm_train(bench_op, case, peer):
    bench_op(case, peer, _kwargs, FUNCTIONS)


@pytest.mark.cases([c for c in CASES if c["mode"] == "eval"], peers=PEERS)
def test_switch_norm_eval(bench_op, case, peer):
    bench_op(case, peer, _kwargs, FUNCTIONS)
