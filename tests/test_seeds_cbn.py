"""CategoricalConditionalBatchNorm2d and SandwichBatchNorm2d: against fastnorm.reference over
awkward inputs (train and eval), against a PyTorch port of the authors' modules (Gong et al. 2021,
VITA-Group/Sandwich-Batch-Normalization, GAN/models/modules.py) whose state_dict loads into ours,
the authors' initialisation and keys, and labels checked before anything changes."""
import warnings
from collections import OrderedDict

import numpy as np
import pytest

import fastnorm
from fastnorm import reference as R

from awkward import assert_matches, awkward_inputs

DTYPES = [np.float32, np.float64]
CLASSES = [fastnorm.CategoricalConditionalBatchNorm2d, fastnorm.SandwichBatchNorm2d]
IDS = ["ccbn", "sabn"]
SHAPES = [(4, 6, 5, 7), (1, 6, 3, 3), (3, 6, 1, 1), (2, 6, 0, 3), (0, 6, 3, 3), (8, 16, 12, 12)]


def torch_ports(torch):
    """The authors' two modules, written again: BatchNorm2d (without / with its affine), then
    gamma, beta = embed(y).chunk(2, 1) as a per-sample affine; scales N(1, 0.02), shifts 0."""
    nn = torch.nn

    class _Cond(nn.Module):
        affine = False

        def __init__(self, num_features, num_classes):
            super().__init__()
            self.num_features = num_features
            self.bn = nn.BatchNorm2d(num_features, affine=self.affine)
            self.embed = nn.Embedding(num_classes, num_features * 2)
            self.embed.weight.data[:, :num_features].normal_(1, 0.02)
            self.embed.weight.data[:, num_features:].zero_()

        def forward(self, x, y):
            out = self.bn(x)
            gamma, beta = self.embed(y).chunk(2, 1)
            C = self.num_features
            return gamma.view(-1, C, 1, 1) * out + beta.view(-1, C, 1, 1)

    class CategoricalConditionalBatchNorm2d(_Cond):
        affine = False

    class SandwichBatchNorm2d(_Cond):
        affine = True

    return {fastnorm.CategoricalConditionalBatchNorm2d: CategoricalConditionalBatchNorm2d,
            fastnorm.SandwichBatchNorm2d: SandwichBatchNorm2d}


def _randomize(m, seed=1):
    rng = np.random.default_rng(seed)
    for k, p in m.state_dict().items():
        if k.endswith("running_var"):
            p[...] = np.abs(rng.standard_normal(p.shape)) + 0.5
        elif not k.endswith("num_batches_tracked"):
            p[...] = rng.standard_normal(p.shape)
    return m


def _reference(m, x, labels, running):
    bn = m.bn
    rm, rv = running
    return R.conditional_batch_norm(x, labels, m.embed.weight, rm, rv, bn.weight, bn.bias,
                                    bn.training, bn.momentum, bn.eps)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_matches_reference_on_awkward_inputs(cls, shape, dtype, training):
    if training and shape[0] * shape[2] * shape[3] == 1:
        pytest.skip("one value per channel: refused in training (test_errors)")
    proto = _randomize(cls(shape[1], 5, dtype=dtype))
    labels = np.random.default_rng(0).integers(0, 5, shape[0])
    for label, x in awkward_inputs(shape, dtype):
        m = cls(shape[1], 5, dtype=dtype).train(training)
        m.load_state_dict(proto.state_dict())
        before = x.copy()
        running = tuple(a.astype(np.float64) for a in (m.bn.running_mean, m.bn.running_var))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = _reference(m, x, labels, running)
        got = m(x, labels)
        big = np.abs(want[np.isfinite(want)]).max(initial=1.0)
        assert_matches(got, want, dtype, f"{shape} {label}", 4 * big)
        assert np.array_equal(x, before, equal_nan=True), f"{label}: input modified"
        if training and x.size:
            for got_r, want_r in zip((m.bn.running_mean, m.bn.running_var), running):
                scale = np.abs(want_r[np.isfinite(want_r)]).max(initial=1.0)
                assert_matches(got_r, want_r.astype(dtype).astype(np.float64), dtype,
                               f"{label} running", 4 * scale)
            assert int(m.bn.num_batches_tracked) == 1
        elif not training:
            assert np.array_equal(m.bn.running_mean, proto.bn.running_mean)
            assert int(m.bn.num_batches_tracked) == 0


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_matches_torch_port_over_a_training_loop(torch, cls):
    port = torch_ports(torch)[cls](8, 10)
    with torch.no_grad():
        for name, p in port.named_parameters():
            p.copy_(torch.randn(p.shape))
    m = cls(8, 10)
    m.load_state_dict(port.state_dict())
    rng = np.random.default_rng(4)
    for step in range(3):
        x = (rng.standard_normal((6, 8, 5, 5)) * (1 + step) + step).astype(np.float32)
        y = rng.integers(0, 10, 6)
        with torch.no_grad():
            want = port(torch.from_numpy(x), torch.from_numpy(y)).numpy()
        np.testing.assert_allclose(m(x, y), want, rtol=1e-5, atol=1e-5)
    for k, v in port.state_dict().items():
        np.testing.assert_allclose(m.state_dict()[k], v.numpy(), rtol=1e-6, atol=1e-6,
                                   err_msg=k)
    port.eval()
    m.eval()
    x = rng.standard_normal((3, 8, 4, 4)).astype(np.float32)
    y = np.array([9, 0, 9])
    with torch.no_grad():
        want = port(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(m(x, y), want, rtol=1e-5, atol=1e-5)
    # torch tensors are accepted as input and labels
    np.testing.assert_allclose(m(torch.from_numpy(x), torch.from_numpy(y)), want, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_keys_init_repr_and_round_trip(cls):
    m = cls(64, 10, rng=0)
    keys = ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked", "embed.weight"]
    if cls is fastnorm.SandwichBatchNorm2d:
        keys = ["bn.weight", "bn.bias"] + keys
    assert list(m.state_dict()) == keys
    scale, shift = m.embed.weight[:, :64], m.embed.weight[:, 64:]
    assert abs(scale.mean() - 1) < 0.01 and 0.015 < scale.std() < 0.025
    assert (shift == 0).all() and m.embed.weight.dtype == np.float32
    assert "(bn): BatchNorm2d(64" in repr(m) and "(embed): Embedding(10, 128)" in repr(m)
    _randomize(m, 3)
    m2 = cls(64, 10)
    assert repr(m2.load_state_dict(m.state_dict())) == "<All keys matched successfully>"
    for k, v in m.state_dict().items():
        assert np.array_equal(m2.state_dict()[k], v)
    # train()/eval() reach the child BatchNorm2d
    assert not m2.eval().bn.training and m2.train().bn.training
    # assign=True takes the arrays themselves
    sd = OrderedDict((k, v.copy()) for k, v in m.state_dict().items())
    m3 = cls(64, 10)
    m3.load_state_dict(sd, assign=True)
    assert m3.embed.weight is sd["embed.weight"] and m3.bn.running_var is sd["bn.running_var"]


def test_labels_of_length_one_apply_to_every_sample():
    m = _randomize(fastnorm.SandwichBatchNorm2d(3, 4, dtype=np.float64))
    x = np.random.default_rng(5).standard_normal((4, 3, 2, 2))
    m2 = fastnorm.SandwichBatchNorm2d(3, 4, dtype=np.float64)
    m2.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(m(x, [2]), m2(x, [2, 2, 2, 2]))


def test_errors_leave_everything_unchanged():
    m = _randomize(fastnorm.SandwichBatchNorm2d(3, 4))
    before = {k: v.copy() for k, v in m.state_dict().items()}
    x = np.ones((2, 3, 2, 2), np.float32)
    cases = [
        (TypeError, "integer class labels", (x, np.array([0.0, 1.0]))),
        (TypeError, "integer class labels", (x, np.array([True, False]))),
        (IndexError, "label 4 out of range", (x, np.array([0, 4]))),
        (IndexError, "label -1 out of range", (x, np.array([-1, 0]))),
        (ValueError, r"y of shape \(2,\)", (x, np.array([0, 1, 2]))),
        (ValueError, r"y of shape \(2,\)", (x, np.array([[0], [1]]))),
        (ValueError, "expected 4D input", (x[0], np.array([0, 1]))),
        (ValueError, "3 channels", (np.ones((2, 4, 2, 2), np.float32), np.array([0, 1]))),
        (TypeError, "float32 or float64", (x.astype(np.int64), np.array([0, 1]))),
        (ValueError, "more than 1 value per channel", (x[:1, :, :1, :1], np.array([0]))),
    ]
    for exc, match, args in cases:
        with pytest.raises(exc, match=match):
            m(*args)
    keep = m.bn.running_var
    m.bn.running_var = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"bn.running_var must be an array of shape \(3,\)"):
        m(x, np.array([0, 1]))
    m.bn.running_var = keep
    sd = m.state_dict()
    bad = OrderedDict((k, v.copy() + 1) for k, v in sd.items())
    bad["embed.weight"] = np.ones((5, 6))
    with pytest.raises(RuntimeError, match="size mismatch for embed.weight"):
        m.load_state_dict(bad)
    del bad["bn.weight"]
    with pytest.raises(RuntimeError, match='Missing key.*"bn.weight"'):
        m.load_state_dict(bad)
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k]), k
