"""SwitchNorm (fastnorm.functional.switch_norm, the forward of the authors' Switchable
Normalization, SwitchNorm2d's math) in training mode (mixed IN/LN/BN statistics, running
statistics updated in place) and in eval mode (running statistics as the BN part), against plain
NumPy (``fastnorm.reference.switch_norm`` in the input's dtype). There is no torch peer: torch has
no SwitchNorm (tests/test_switchnorm.py holds a port of the authors' module, for parity, not for
timing).
"""
import numpy as np
import pytest

CASES = [
    {"op": "switch_norm", "shape": (8, 64, 56, 56), "mode": "train"},
    {"op": "switch_norm", "shape": (8, 64, 56, 56), "mode": "eval"},
    {"op": "switch_norm", "shape": (8, 64, 56, 56), "mode": "train", "layout": "channels_last"},
    {"op": "switch_norm", "shape": (8, 256, 28, 28), "dtype": "float64", "mode": "train"},
]
PEERS = ("fastnorm_out", "fastnorm", "numpy")


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


@pytest.mark.cases([c for c in CASES if c["mode"] == "train"], peers=PEERS)
def test_switch_norm_train(bench_op, case, peer):
    bench_op(case, peer, _kwargs)


@pytest.mark.cases([c for c in CASES if c["mode"] == "eval"], peers=PEERS)
def test_switch_norm_eval(bench_op, case, peer):
    bench_op(case, peer, _kwargs)
