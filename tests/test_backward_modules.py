"""Layers' opt-in gradients: float64 finite-difference checks for every layer (SwitchNorm's four
parameter kinds included), torch.nn parity, accumulation into m.grad, zero_grad, and errors that
change nothing."""
import numpy as np
import pytest

import fastnorm

rng = np.random.default_rng(0)


def _layers():
    """(name, layer factory, input shape): float64 layers with non-trivial parameters."""
    return [
        ("bn2d_train", lambda: fastnorm.BatchNorm2d(3, dtype=np.float64), (4, 3, 3, 2)),
        ("bn1d_eval", lambda: fastnorm.BatchNorm1d(3, dtype=np.float64).eval(), (5, 3)),
        ("in2d", lambda: fastnorm.InstanceNorm2d(3, affine=True, dtype=np.float64), (2, 3, 3, 3)),
        ("in1d_unbatched", lambda: fastnorm.InstanceNorm1d(3, affine=True, dtype=np.float64),
         (3, 6)),
        ("in2d_eval", lambda: fastnorm.InstanceNorm2d(3, affine=True, track_running_stats=True,
                                                      dtype=np.float64).eval(), (2, 3, 3, 3)),
        ("ln", lambda: fastnorm.LayerNorm((3, 4), dtype=np.float64), (2, 3, 4)),
        ("gn", lambda: fastnorm.GroupNorm(2, 4, dtype=np.float64), (3, 4, 5)),
        ("rms", lambda: fastnorm.RMSNorm(6, dtype=np.float64), (4, 6)),
        ("switch2d", lambda: fastnorm.SwitchNorm2d(3, dtype=np.float64), (4, 3, 3, 2)),
        ("switch2d_eval", lambda: fastnorm.SwitchNorm2d(3, dtype=np.float64).eval(),
         (4, 3, 3, 2)),
        ("switch3d_nobn", lambda: fastnorm.SwitchNorm3d(2, using_bn=False, dtype=np.float64),
         (2, 2, 2, 2, 3)),
        ("switch1d", lambda: fastnorm.SwitchNorm1d(4, dtype=np.float64), (5, 4)),
        ("switch1d_eval", lambda: fastnorm.SwitchNorm1d(4, dtype=np.float64).eval(), (5, 4)),
    ]


def _randomize(m):
    r = np.random.default_rng(1)
    for name, p in m.named_parameters():
        p[...] = r.standard_normal(p.shape) * 0.5 + (1.0 if name == "weight" else 0.0)
    for name, b in m.named_buffers():
        if name == "running_var":
            b[...] = r.random(b.shape) + 0.5
        elif name == "running_mean":
            b[...] = r.standard_normal(b.shape)


def _loss(m, x, dy):
    """sum(m(x) * dy) with m's running statistics left as they were."""
    saved = {k: v.copy() for k, v in m.named_buffers()}
    grad_on = m._grad_enabled
    m.requires_grad_(False)
    out = float(np.sum(m(x) * dy))
    m.requires_grad_(grad_on)
    for k, v in saved.items():
        getattr(m, k)[...] = v
    return out


@pytest.mark.parametrize("name,make,shape", _layers(), ids=[c[0] for c in _layers()])
def test_finite_differences(name, make, shape):
    """Central differences in float64 for a few input elements and every parameter element."""
    m = make()
    _randomize(m)
    x = rng.standard_normal(shape) * 1.5 + 0.5
    dy = rng.standard_normal(shape)
    buffers = {k: v.copy() for k, v in m.named_buffers()}
    m.requires_grad_()
    y = m(x)
    for k, v in buffers.items():  # the gradient is that of this forward: same statistics
        getattr(m, k)[...] = v
    gx = m.backward(dy)
    assert gx.shape == x.shape and y.shape == x.shape
    h = 1e-6
    check = [(x, gx, idx) for idx in list(np.ndindex(shape))[::max(1, x.size // 12)]]
    for pname, p in m.named_parameters():
        check += [(p, m.grad[pname], idx) for idx in np.ndindex(p.shape)]
    for arr, g, idx in check:
        old = arr[idx]
        arr[idx] = old + h
        up = _loss(m, x, dy)
        arr[idx] = old - h
        down = _loss(m, x, dy)
        arr[idx] = old
        num = (up - down) / (2 * h)
        assert abs(num - g[idx]) <= 1e-6 * max(1.0, abs(num)), \
            f"{name}: d/d{idx} numeric {num:.8g} vs {g[idx]:.8g}"


@pytest.mark.parametrize("train", [True, False])
def test_layers_match_torch_nn(torch, train):
    """Input and parameter gradients of float32 layers equal torch.nn's."""
    x = rng.standard_normal((4, 6, 5, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    pairs = [(fastnorm.BatchNorm2d(6), torch.nn.BatchNorm2d(6)),
             (fastnorm.GroupNorm(3, 6), torch.nn.GroupNorm(3, 6)),
             (fastnorm.LayerNorm([5, 5]), torch.nn.LayerNorm([5, 5])),
             (fastnorm.InstanceNorm2d(6, affine=True, track_running_stats=True),
              torch.nn.InstanceNorm2d(6, affine=True, track_running_stats=True)),
             (fastnorm.RMSNorm(5), torch.nn.RMSNorm(5))]
    for ours, theirs in pairs:
        _randomize(ours)
        theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in
                                ours.state_dict().items()})
        ours.train(train).requires_grad_()
        theirs.train(train)
        tx = torch.from_numpy(x.copy()).requires_grad_()
        y = ours(x)
        theirs(tx).backward(torch.from_numpy(dy))
        gx = ours.backward(dy)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
        for k, p in theirs.named_parameters():
            assert ours.grad[k].dtype == np.float32 and ours.grad[k].shape == tuple(p.shape)
            np.testing.assert_allclose(ours.grad[k], p.grad.numpy(), rtol=1e-4, atol=2e-4)
        assert y.dtype == np.float32


def test_gradients_accumulate_and_zero_grad_clears():
    m = fastnorm.LayerNorm(8, dtype=np.float64).requires_grad_()
    x, dy = rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    m(x)
    m.backward(dy)
    once = {k: v.copy() for k, v in m.grad.items()}
    assert set(once) == {"weight", "bias"}
    m(x)
    m.backward(dy)
    for k in once:
        np.testing.assert_allclose(m.grad[k], 2 * once[k])
    m.zero_grad()
    assert m.grad == {}


def test_inference_keeps_nothing_and_backward_needs_a_forward():
    m = fastnorm.BatchNorm1d(3)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    m(x)
    assert m._saved is None
    with pytest.raises(RuntimeError, match="call requires_grad_"):
        m.backward(np.ones_like(x))
    m.requires_grad_()
    m(x)
    assert m._saved is not None
    m.requires_grad_(False)
    assert m._saved is None
    m.requires_grad_()
    y = m(x)
    m.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="no forward since the last backward"):
        m.backward(np.ones_like(y))


@pytest.mark.parametrize("bad,exc,words", [
    (np.ones((4, 2), np.float32), ValueError, r"output's shape \(4, 3\), got \(4, 2\)"),
    (np.ones((4, 3), np.float64), TypeError, "output's dtype float32, got float64"),
])
def test_wrong_gradient_raises_and_changes_nothing(bad, exc, words):
    m = fastnorm.BatchNorm1d(3).requires_grad_()
    x = rng.standard_normal((4, 3)).astype(np.float32)
    m(x)
    m.backward(np.ones((4, 3), np.float32))
    before = {k: v.copy() for k, v in m.grad.items()}
    m(x)
    with pytest.raises(exc, match=words):
        m.backward(bad)
    assert all(np.array_equal(before[k], m.grad[k]) for k in before) and set(before) == set(m.grad)
    m.backward(np.ones((4, 3), np.float32))  # the forward is still there to differentiate
    with pytest.raises(TypeError, match="requires_grad must be a bool"):
        m.requires_grad_("yes")
