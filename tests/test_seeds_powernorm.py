"""MaskPowerNorm: against fastnorm.reference.mask_power_norm over awkward inputs (training with and
without a padding mask, eval), against a PyTorch port of the authors' forward (Shen et al. 2020,
sIncerass/powernorm, fairseq/modules/norms/mask_powernorm.py) across the warm-up boundary, with
its state_dict loaded into ours, and the checks made before anything changes."""
import warnings

import numpy as np
import pytest

import fastnorm
from fastnorm import reference as R

from awkward import assert_matches, awkward_inputs

DTYPES = [np.float32, np.float64]
SHAPES = [(5, 3, 8), (1, 4, 8), (7, 1, 8), (6, 8), (0, 3, 8), (16, 24, 64)]


def torch_mask_power_norm(torch):
    """The authors' MaskPowerNorm forward, written again (no autograd Function: the backward and
    its ema_gz update are not ported)."""
    nn = torch.nn

    class MaskPowerNorm(nn.Module):
        def __init__(self, num_features, eps=1e-5, alpha_fwd=0.9, alpha_bkw=0.9, affine=True,
                     warmup_iters=10000, group_num=1):
            super().__init__()
            self.num_features, self.eps, self.afwd = num_features, eps, alpha_fwd
            self.warmup_iters, self.group_num = warmup_iters, group_num
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
            self.register_buffer("running_phi", torch.ones(1, num_features, 1, 1))
            self.register_buffer("ema_gz", torch.zeros(1, num_features, 1, 1))
            self.register_buffer("iters", torch.zeros(1).type(torch.LongTensor))

        def _group_scaling(self, x):  # GroupScaling1D with its default eps 1e-5
            T, B, C = x.shape
            Cg = C // self.group_num
            g = x.contiguous().reshape(T, B, self.group_num, Cg)
            moment2 = torch.repeat_interleave(torch.mean(g * g, dim=3, keepdim=True),
                                              repeats=Cg, dim=-1).reshape(T, B, C)
            return x / torch.sqrt(moment2 + 1e-5)

        def forward(self, input, pad_mask=None):
            squeeze = input.dim() == 2
            if squeeze:
                input = input.unsqueeze(0)
            T, B, C = input.shape
            input = self._group_scaling(input)
            if pad_mask is None:
                mask_input = input.clone()
            else:
                mask_input = input[(~pad_mask).transpose(0, 1), :]
            mask_input = mask_input.reshape(-1, C)
            x = input.permute(1, 2, 0).contiguous()
            shape = x.size()
            x = x.reshape(x.size(0), C, -1).unsqueeze(-1)
            if self.training:
                self.iters.copy_(self.iters + 1)
                it = self.iters.item()
                var = (mask_input * mask_input).mean(dim=0).reshape(1, C, 1, 1)
                if it <= self.warmup_iters:
                    z = x / (var + self.eps).sqrt()
                else:
                    z = x / (self.running_phi + self.eps).sqrt()
                if it < self.warmup_iters:
                    self.running_phi.copy_(self.running_phi * (it - 1) / it + var / it)
                self.running_phi.copy_(self.afwd * self.running_phi + (1 - self.afwd) * var)
                out = self.weight.reshape(1, C, 1, 1) * z + self.bias.reshape(1, C, 1, 1)
            else:
                out = x / (self.running_phi + self.eps).sqrt()
                out = self.weight.reshape(1, C, 1, 1) * out + self.bias.reshape(1, C, 1, 1)
            out = out.reshape(shape).permute(2, 0, 1).contiguous()
            return out.squeeze(0) if squeeze else out

    return MaskPowerNorm


def _randomize(m, seed=1):
    rng = np.random.default_rng(seed)
    m.weight[...] = rng.standard_normal(m.weight.shape)
    m.bias[...] = rng.standard_normal(m.bias.shape)
    m.running_phi[...] = np.abs(rng.standard_normal(m.running_phi.shape)) + 0.5
    return m


def _pad(shape, seed=0):
    """A (B, T) padding mask with a few padded positions, or None for 2D input."""
    if len(shape) == 2:
        return np.array([[False], [True]] + [[False]] * (shape[0] - 2))
    T, B = shape[:2]
    rng = np.random.default_rng(seed)
    mask = rng.random((B, T)) < 0.3
    mask[:, 0] = False  # every sample keeps a token
    return mask


@pytest.mark.parametrize("iters", [0, 5, 9], ids=["warm", "last-warm", "after"])
@pytest.mark.parametrize("mode", ["train", "train-mask", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference_on_awkward_inputs(shape, dtype, mode, iters):
    training = mode != "eval"
    if training and 0 in shape:
        pytest.skip("no positions: refused in training (test_errors)")
    proto = _randomize(fastnorm.MaskPowerNorm(shape[-1], warmup_iters=6, group_num=2,
                                              dtype=dtype))
    proto.iters[...] = iters
    pad = _pad(shape) if mode == "train-mask" else None
    for label, x in awkward_inputs(shape, dtype):
        m = fastnorm.MaskPowerNorm(shape[-1], warmup_iters=6, group_num=2, dtype=dtype)
        m.load_state_dict(proto.state_dict())
        m.train(training)
        before = x.copy()
        phi, it = m.running_phi.astype(np.float64), m.iters.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = R.mask_power_norm(x, phi, it, m.weight, m.bias, pad, training, m.afwd,
                                     m.warmup_iters, m.group_num, m.eps)
        got = m(x, pad_mask=pad)
        big = np.abs(want[np.isfinite(want)]).max(initial=1.0)
        assert_matches(got, want, dtype, f"{shape} {label}", 4 * big)
        assert np.array_equal(x, before, equal_nan=True), f"{label}: input modified"
        assert np.array_equal(m.iters, it) and m.iters[0] == iters + training
        scale = np.abs(phi[np.isfinite(phi)]).max(initial=1.0)
        assert_matches(m.running_phi, phi.astype(dtype).astype(np.float64), dtype,
                       f"{label} running_phi", 4 * scale)
        assert (m.ema_gz == 0).all()


@pytest.mark.parametrize("group_num", [1, 4])
def test_matches_torch_port_across_warmup(torch, group_num):
    port = torch_mask_power_norm(torch)(16, warmup_iters=3, group_num=group_num)
    with torch.no_grad():
        port.weight.copy_(torch.randn(16))
        port.bias.copy_(torch.randn(16))
        port.running_phi.copy_(torch.rand(1, 16, 1, 1) + 0.5)
    m = fastnorm.MaskPowerNorm(16, warmup_iters=3, group_num=group_num)
    sd = port.state_dict()
    m.load_state_dict(sd)
    rng = np.random.default_rng(6)
    for step in range(6):  # iters 1..6: warm-up average, boundary, then running_phi
        x = (rng.standard_normal((7, 4, 16)) * (1 + step)).astype(np.float32)
        pad = rng.random((4, 7)) < 0.25 if step % 2 else None
        with torch.no_grad():
            want = port(torch.from_numpy(x),
                        None if pad is None else torch.from_numpy(pad)).numpy()
        np.testing.assert_allclose(m(x, pad_mask=pad), want, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(m.running_phi, port.running_phi.numpy(), rtol=2e-5)
        assert m.iters[0] == port.iters.item() == step + 1
    port.eval()
    m.eval()
    x = rng.standard_normal((4, 16)).astype(np.float32)  # (B, C)
    with torch.no_grad():
        want = port(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(m(x), want, rtol=2e-5, atol=2e-5)
    assert list(m.state_dict()) == list(sd) == ["weight", "bias", "running_phi", "ema_gz",
                                                "iters"]


def test_padded_positions_do_not_count():
    """With a mask, the statistics are those of the unpadded positions only: the padded ones can
    hold anything."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 2, 4))
    pad = np.zeros((2, 5), bool)
    pad[1, 3:] = True
    x2 = x.copy()
    x2[3:, 1] = 1e6 * rng.standard_normal((2, 4))
    a = fastnorm.MaskPowerNorm(4, dtype=np.float64)
    b = fastnorm.MaskPowerNorm(4, dtype=np.float64)
    ya, yb = a(x, pad_mask=pad), b(x2, pad_mask=pad)
    np.testing.assert_allclose(ya[:3], yb[:3], rtol=1e-12)
    np.testing.assert_allclose(ya[:, 0], yb[:, 0], rtol=1e-12)
    np.testing.assert_allclose(a.running_phi, b.running_phi, rtol=1e-12)


def test_errors_leave_everything_unchanged():
    m = _randomize(fastnorm.MaskPowerNorm(8, group_num=2))
    m.iters[...] = 3
    before = {k: v.copy() for k, v in m.state_dict().items()}
    x = np.ones((4, 2, 8), np.float32)
    cases = [
        (ValueError, "bool pad_mask", (x, np.zeros((4, 2), bool))),
        (ValueError, "bool pad_mask", (x, np.zeros((2, 4), np.int64))),
        (ValueError, "no unpadded position", (x, np.ones((2, 4), bool))),
        (ValueError, "no unpadded position", (np.ones((0, 2, 8), np.float32), None)),
        (ValueError, "2D or 3D input", (np.ones((1, 4, 2, 8), np.float32), None)),
        (ValueError, "8 channels", (np.ones((4, 2, 6), np.float32), None)),
        (TypeError, "float32 or float64", (x.astype(np.int32), None)),
    ]
    for exc, match, (inp, pad) in cases:
        with pytest.raises(exc, match=match):
            m(inp, pad_mask=pad)
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k]), k
    with pytest.raises(ValueError, match="group_num must divide"):
        fastnorm.MaskPowerNorm(8, group_num=3)
    with pytest.raises(ValueError, match="alpha_fwd"):
        fastnorm.MaskPowerNorm(8, alpha_fwd=float("nan"))
