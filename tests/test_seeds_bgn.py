"""BatchGroupNorm2d (Zhou et al. 2020, arXiv:2012.02782): against fastnorm.reference over awkward
inputs (train and eval, groups of whole channels and groups that split channels), against a
PyTorch port of the public implementation (x.view(N, G, -1) through BatchNorm1d(G, affine=False),
per-channel affine) whose state_dict loads into ours, running statistics over steps, and the
checks made before anything changes."""
import warnings

import numpy as np
import pytest

import fastnorm
from fastnorm import reference as R

from awkward import assert_matches, awkward_inputs

DTYPES = [np.float32, np.float64]
# (shape, num_groups): G divides C; G divides C*H*W only; one group; empty axes
CASES = [((4, 6, 5, 7), 3), ((4, 6, 5, 7), 6), ((3, 6, 2, 2), 4), ((2, 6, 3, 3), 1),
         ((1, 6, 1, 1), 2), ((2, 6, 0, 3), 3), ((0, 6, 3, 3), 3), ((8, 32, 16, 16), 8)]


def torch_batch_group_norm(torch):
    nn = torch.nn

    class BatchGroupNorm(nn.Module):
        def __init__(self, num_features, num_groups, eps=1e-5, momentum=0.1):
            super().__init__()
            self.num_features, self.num_groups = num_features, num_groups
            self.inner_bn = nn.BatchNorm1d(num_groups, eps=eps, momentum=momentum, affine=False)
            self.weight = nn.Parameter(torch.rand(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))

        def forward(self, x):
            y = self.inner_bn(x.reshape(x.size(0), self.num_groups, -1)).view_as(x)
            shape = (1, self.num_features, 1, 1)
            return y * self.weight.view(shape) + self.bias.view(shape)

    return BatchGroupNorm


def _randomize(m, seed=1):
    rng = np.random.default_rng(seed)
    for k, p in m.state_dict().items():
        if k == "running_var":
            p[...] = np.abs(rng.standard_normal(p.shape)) + 0.5
        elif k != "num_batches_tracked":
            p[...] = rng.standard_normal(p.shape)
    return m


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape,G", CASES, ids=str)
def test_matches_reference_on_awkward_inputs(shape, G, dtype, training):
    N, C, H, W = shape
    if training and N * C * H * W == G:
        pytest.skip("one value per group: refused in training (test_errors)")
    proto = _randomize(fastnorm.BatchGroupNorm2d(C, G, dtype=dtype))
    for label, x in awkward_inputs(shape, dtype):
        m = fastnorm.BatchGroupNorm2d(C, G, dtype=dtype).train(training)
        m.load_state_dict(proto.state_dict())
        before = x.copy()
        rm, rv = m.running_mean.astype(np.float64), m.running_var.astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # (no statistics of an empty batch: nothing to update)
            keep = x.size or not training
            want = R.batch_group_norm(x, G, rm if keep else None, rv if keep else None,
                                      m.weight, m.bias, training, m.momentum, m.eps)
        got = m(x)
        big = np.abs(want[np.isfinite(want)]).max(initial=1.0)
        assert_matches(got, want, dtype, f"{shape} G={G} {label}", 4 * big)
        assert np.array_equal(x, before, equal_nan=True), f"{label}: input modified"
        if training and x.size:
            for got_r, want_r in ((m.running_mean, rm), (m.running_var, rv)):
                scale = np.abs(want_r[np.isfinite(want_r)]).max(initial=1.0)
                assert_matches(got_r, want_r.astype(dtype).astype(np.float64), dtype,
                               f"{label} running", 4 * scale)
        if not training:
            assert np.array_equal(m.running_var, proto.running_var)
        assert int(m.num_batches_tracked) == int(training)


@pytest.mark.parametrize("G", [4, 3])
def test_matches_torch_port_and_loads_its_state_dict(torch, G):
    port = torch_batch_group_norm(torch)(8, G)
    with torch.no_grad():
        port.bias.copy_(torch.randn(8))
    m = fastnorm.BatchGroupNorm2d(8, G)
    m.load_state_dict(port.state_dict())  # inner_bn.* become running_mean, ...
    rng = np.random.default_rng(8)
    for step in range(3):
        x = (rng.standard_normal((5, 8, 3, 4)) * (1 + step) + step).astype(np.float32)
        with torch.no_grad():
            want = port(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(m(x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.running_mean, port.inner_bn.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(m.running_var, port.inner_bn.running_var.numpy(), rtol=1e-5)
    assert int(m.num_batches_tracked) == port.inner_bn.num_batches_tracked.item() == 3
    port.eval()
    m.eval()
    x = rng.standard_normal((2, 8, 3, 4)).astype(np.float32)
    with torch.no_grad():
        want = port(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(m(x), want, rtol=1e-5, atol=1e-5)


def test_state_dict_defaults_and_momentum_none():
    m = fastnorm.BatchGroupNorm2d(4, 2, momentum=None, dtype=np.float64)
    assert [(k, v.shape) for k, v in m.state_dict().items()] == [
        ("weight", (4,)), ("bias", (4,)), ("running_mean", (2,)), ("running_var", (2,)),
        ("num_batches_tracked", ())]
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal((3, 4, 2, 2)) + i for i in range(3)]
    for x in xs:
        m(x)
    # cumulative average of the per-group batch means
    want = np.mean([x.reshape(3, 2, -1).mean(axis=(0, 2)) for x in xs], axis=0)
    np.testing.assert_allclose(m.running_mean, want, rtol=1e-12)
    m2 = fastnorm.BatchGroupNorm2d(4, 2, dtype=np.float64)
    m2.load_state_dict(m.state_dict())
    assert np.array_equal(m2.running_var, m.running_var)
    m3 = fastnorm.BatchGroupNorm2d(4, 2, affine=False, track_running_stats=False)
    assert list(m3.state_dict()) == []
    y = m3.eval()(xs[0].astype(np.float32))  # batch statistics in eval too
    assert abs(float(y.mean())) < 1e-5


def test_errors_leave_everything_unchanged():
    m = _randomize(fastnorm.BatchGroupNorm2d(6, 4))
    before = {k: v.copy() for k, v in m.state_dict().items()}
    cases = [
        (ValueError, "must divide C \\* H \\* W", np.ones((2, 6, 1, 1), np.float32)),
        (ValueError, "expected 4D input", np.ones((2, 6, 4), np.float32)),
        (ValueError, "6 channels", np.ones((2, 5, 2, 2), np.float32)),
        (TypeError, "float32 or float64", np.ones((2, 6, 2, 2), np.int16)),
    ]
    for exc, match, x in cases:
        with pytest.raises(exc, match=match):
            m(x)
    with pytest.raises(ValueError, match="more than 1 value per group"):
        fastnorm.BatchGroupNorm2d(2, 2)(np.ones((1, 2, 1, 1), np.float32))
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k]), k
    with pytest.raises(ValueError, match="num_groups"):
        fastnorm.BatchGroupNorm2d(6, 0)
