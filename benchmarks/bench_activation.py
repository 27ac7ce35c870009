"""The activation epilogue (activation=): the fused call against fastnorm's normalization
followed by torch's activation on its output (what a NumPy/torch pipeline does today: one more
pass over memory), on the shapes where the pairs occur (GroupNorm + SiLU in diffusion U-Nets,
eval BatchNorm + ReLU in CNNs, LayerNorm + GELU in MLP blocks). The fused call must not be
slower where the pass it saves decides: relu everywhere, every activation from 16 MB of input
(beyond the cache). On cache-resident inputs silu and gelu are bound by the arithmetic, where
torch's activation kernels are faster than fastnorm's portable ones: those ratios are recorded
and the test skips saying so. Speed assertions by conftest.py's ``check_ratio``; under
--benchmark-disable each case is built, checked and skipped."""
import dataclasses

import numpy as np
import pytest

import fastnorm.functional as F

CASES = [{"op": "group_norm", "shape": (8, 256, 64, 64)},
         {"op": "batch_norm", "shape": (1, 64, 112, 112), "mode": "eval"},
         {"op": "layer_norm", "shape": (32, 128, 768)}]
ACTS = ["relu", "silu", "gelu", "gelu_tanh"]
MIN_MB = 16  # every activation is asserted from this many MB of input


def _norm(case, x, out):
    C = x.shape[-1] if case.op == "layer_norm" else x.shape[1]
    rng = np.random.default_rng(C)
    w, b, rm = (rng.standard_normal(C).astype(np.float32) for _ in range(3))
    rv = (np.abs(rng.standard_normal(C)) + 0.5).astype(np.float32)
    if case.op == "group_norm":
        return lambda **k: F.group_norm(x, 32, w, b, out=out, **k)
    if case.op == "batch_norm":
        return lambda **k: F.batch_norm(x, rm, rv, w, b, out=out, **k)
    return lambda **k: F.layer_norm(x, C, w, b, out=out, **k)


@pytest.mark.cases(CASES)
@pytest.mark.parametrize("act", ACTS)
def test_fused_activation_vs_separate_pass(case, act, torch, check_ratio):
    TF = torch.nn.functional
    tact = {"relu": TF.relu, "silu": TF.silu, "gelu": TF.gelu,
            "gelu_tanh": lambda t: TF.gelu(t, approximate="tanh")}[act]
    x = case.input()
    out = np.empty_like(x)
    norm = _norm(case, x, out)
    fast = lambda: norm(activation=act)  # noqa: E731
    other = lambda: tact(torch.from_numpy(norm()))  # noqa: E731
    want = tact(torch.from_numpy(norm().copy())).numpy()
    got = fast()
    assert np.abs(got - want).max() <= 1e-6 * max(1.0, float(np.abs(want).max()))
    floor = 1.0 if act == "relu" or x.nbytes >= MIN_MB * 1e6 else None
    check_ratio(dataclasses.replace(case, op=f"{case.op}+{act}"), fast, other, floor,
                what="norm then torch activation")
