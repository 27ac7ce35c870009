"""Opt-in gradients of the seeds' layers (FRN, conditional and Sandwich BN, Batch Group Norm,
SpectralNorm): float64 central differences for every parameter element and some input
elements, torch autograd through the authors' forward written in torch, the containers'
parameters under their children's names, and MaskPowerNorm (no backward) refusing to keep
gradients."""
import numpy as np
import pytest

import fastnorm
from fastnorm.utils import SpectralNorm

rng = np.random.default_rng(14)
LABELS = np.array([2, 0, 2, 1])


def _cases():
    """(id, layer factory, input shape or None (SpectralNorm), forward(m, x))."""
    f64 = dict(dtype=np.float64)
    plain = lambda m, x: m(x)  # noqa: E731
    cond = lambda m, x: m(x, LABELS)  # noqa: E731
    return [
        ("frn2d", lambda: fastnorm.FilterResponseNorm2d(3, **f64), (2, 3, 4, 3), plain),
        ("frn1d_noact", lambda: fastnorm.FilterResponseNorm1d(3, apply_act=False, **f64),
         (2, 3, 5), plain),
        ("frn3d", lambda: fastnorm.FilterResponseNorm3d(2, eps=1e-3, **f64), (2, 2, 2, 3, 2),
         plain),
        ("bgn_train", lambda: fastnorm.BatchGroupNorm2d(4, 2, **f64), (3, 4, 2, 3), plain),
        ("bgn_eval", lambda: fastnorm.BatchGroupNorm2d(4, 2, **f64).eval(), (3, 4, 2, 3), plain),
        ("bgn_split_channels", lambda: fastnorm.BatchGroupNorm2d(4, 3, **f64), (2, 4, 3, 3),
         plain),
        ("ccbn_train", lambda: fastnorm.CategoricalConditionalBatchNorm2d(3, 4, **f64, rng=0),
         (4, 3, 2, 3), cond),
        ("ccbn_eval", lambda: fastnorm.CategoricalConditionalBatchNorm2d(3, 4, **f64,
                                                                         rng=0).eval(),
         (4, 3, 2, 3), cond),
        ("sandwich_train", lambda: fastnorm.SandwichBatchNorm2d(3, 4, **f64, rng=0),
         (4, 3, 3, 2), cond),
        ("sandwich_1x1", lambda: fastnorm.SandwichBatchNorm2d(3, 4, **f64, rng=0),
         (4, 3, 1, 1), cond),
        ("sandwich_eval", lambda: fastnorm.SandwichBatchNorm2d(3, 4, **f64, rng=0).eval(),
         (4, 3, 3, 2), cond),
        ("spectral_eval", lambda: SpectralNorm(rng.standard_normal((3, 2, 2)), rng=0).eval(),
         None, lambda m, x: m()),
        ("spectral_dim1_eval", lambda: SpectralNorm(rng.standard_normal((2, 4, 3)), dim=1,
                                                    rng=0).eval(), None, lambda m, x: m()),
    ]


def _randomize(m):
    r = np.random.default_rng(1)
    for name, p in m.named_parameters():
        p[...] = r.standard_normal(p.shape) * 0.5 + (1.0 if name.endswith("weight") else 0.0)
    for name, b in m.named_buffers():
        if name.endswith("running_var"):
            b[...] = r.random(b.shape) + 0.5
        elif name.endswith("running_mean"):
            b[...] = r.standard_normal(b.shape)


def _loss(m, fwd, x, dy):
    """sum(m(x) * dy) with m's buffers (running statistics, u and v) left as they were."""
    buffers = dict(m.named_buffers())
    saved = {k: v.copy() for k, v in buffers.items()}
    m.requires_grad_(False)
    out = float(np.sum(fwd(m, x) * dy))
    m.requires_grad_(True)
    for k, v in saved.items():
        buffers[k][...] = v
    return out


@pytest.mark.parametrize("name,make,shape,fwd", _cases(), ids=[c[0] for c in _cases()])
def test_finite_differences(name, make, shape, fwd):
    m = make()
    _randomize(m)
    x = None if shape is None else rng.standard_normal(shape) * 1.5 + 0.5
    if name.startswith("frn"):  # some negative outputs, so that the TLU's max takes tau
        m.bias[...] -= 0.5
    y = fwd(m, x)
    dy = rng.standard_normal(y.shape)
    buffers = {k: v.copy() for k, v in m.named_buffers()}
    m.requires_grad_()
    fwd(m, x)
    for k, v in dict(m.named_buffers()).items():  # this forward's statistics, as in the loss
        v[...] = buffers[k]
    gx = m.backward(dy)
    assert (gx is None) == (shape is None)
    assert sorted(m.grad) == sorted(k for k, _ in m.named_parameters())
    h = 1e-6
    check = [] if x is None else [(x, gx, i) for i in list(np.ndindex(shape))[::x.size // 10]]
    for pname, p in m.named_parameters():
        assert m.grad[pname].shape == p.shape and m.grad[pname].dtype == p.dtype
        check += [(p, m.grad[pname], i) for i in np.ndindex(p.shape)]
    for arr, g, i in check:
        old = arr[i]
        arr[i] = old + h
        up = _loss(m, fwd, x, dy)
        arr[i] = old - h
        down = _loss(m, fwd, x, dy)
        arr[i] = old
        num = (up - down) / (2 * h)
        assert abs(num - g[i]) <= 1e-6 * max(1.0, abs(num)), \
            f"{name}: d/d{i} numeric {num:.10g} against {g[i]:.10g}"


# --- torch autograd through the authors' forward ----------------------------------------------

def _torch_frn(torch, x, w, b, tau, eps):
    """timm's FilterResponseNormTlu2d.forward."""
    sh = (1, -1) + (1,) * (x.ndim - 2)
    nu2 = x.pow(2).mean(dim=tuple(range(2, x.ndim)), keepdim=True)
    y = x * torch.rsqrt(nu2 + eps) * w.reshape(sh) + b.reshape(sh)
    return y if tau is None else torch.maximum(y, tau.reshape(sh))


def _check_grads(ours, theirs, gx, tx, rtol=1e-5):
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=rtol, atol=rtol)
    for k, p in theirs.items():
        np.testing.assert_allclose(ours.grad[k], p.grad.numpy(), rtol=rtol, atol=rtol,
                                   err_msg=k)


@pytest.mark.parametrize("apply_act", [True, False])
@pytest.mark.parametrize("layout", ["C", "channels_last"])
def test_frn_matches_torch(torch, apply_act, layout):
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    x[0, 1] = 0.0  # a zero plane: z = bias there, equal to tau below (the TLU's tie)
    if layout == "channels_last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    m = fastnorm.FilterResponseNorm2d(4, apply_act=apply_act)
    _randomize(m)
    if apply_act:
        m.tau[1] = m.bias[1]
    dy = rng.standard_normal(x.shape).astype(np.float32)
    tp = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in m.named_parameters()}
    tx = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    _torch_frn(torch, tx, tp["weight"], tp["bias"], tp.get("tau"), m.eps).backward(
        torch.from_numpy(dy))
    m.requires_grad_()
    m(x)
    gx = m.backward(dy)
    assert gx.dtype == np.float32
    _check_grads(m, tp, gx, tx, rtol=2e-4)


class _TorchConditional:
    """The authors' CategoricalConditionalBatchNorm2d / SandwichBatchNorm2d forward (VITA-Group,
    GAN/models/modules.py): bn (affine for Sandwich), then gamma * out + beta per sample."""

    def __init__(self, torch, m):
        self.torch = torch
        sd = m.state_dict()
        self.params = {k: torch.from_numpy(v.copy()).requires_grad_()
                       for k, v in m.named_parameters()}
        self.rm = torch.from_numpy(sd["bn.running_mean"].copy())
        self.rv = torch.from_numpy(sd["bn.running_var"].copy())

    def __call__(self, x, y, training):
        F, p, C = self.torch.nn.functional, self.params, self.rm.shape[0]
        out = F.batch_norm(x, self.rm, self.rv, p.get("bn.weight"), p.get("bn.bias"), training)
        gamma, beta = p["embed.weight"][y].chunk(2, 1)
        return gamma.view(-1, C, 1, 1) * out + beta.view(-1, C, 1, 1)


@pytest.mark.parametrize("cls", ["CategoricalConditionalBatchNorm2d", "SandwichBatchNorm2d"])
@pytest.mark.parametrize("training", [True, False])
def test_conditional_bn_matches_torch(torch, cls, training):
    m = getattr(fastnorm, cls)(5, num_classes=3, rng=0).train(training)
    _randomize(m)
    x = (rng.standard_normal((4, 5, 3, 4)) * 2 + 1).astype(np.float32)
    labels = np.array([1, 1, 0, 2])
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ref = _TorchConditional(torch, m)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ref(tx, torch.from_numpy(labels), training).backward(torch.from_numpy(dy))
    m.requires_grad_()
    m(x, labels)
    gx = m.backward(dy)
    _check_grads(m, ref.params, gx, tx, rtol=2e-4)


@pytest.mark.parametrize("G", [2, 3])
@pytest.mark.parametrize("training", [True, False])
def test_batch_group_norm_matches_torch(torch, G, training):
    """The public BatchGroupNorm: x.view(N, G, -1) through BatchNorm1d(G, affine=False), then the
    per-channel weight and bias."""
    m = fastnorm.BatchGroupNorm2d(6, G).train(training)
    _randomize(m)
    x = (rng.standard_normal((3, 6, 4, 5)) * 2 - 1).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    tp = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in m.named_parameters()}
    rm, rv = (torch.from_numpy(m.state_dict()[k].copy()) for k in ("running_mean", "running_var"))
    tx = torch.from_numpy(x.copy()).requires_grad_()
    z = torch.nn.functional.batch_norm(tx.view(3, G, -1), rm, rv, None, None,
                                       training).view(tx.shape)
    (z * tp["weight"].view(1, -1, 1, 1) + tp["bias"].view(1, -1, 1, 1)).backward(
        torch.from_numpy(dy))
    m.requires_grad_()
    m(x)
    gx = m.backward(dy)
    _check_grads(m, tp, gx, tx, rtol=2e-4)


@pytest.mark.parametrize("training", [True, False])
def test_spectral_norm_matches_torch(torch, training):
    """weight_orig's gradient as torch.nn.utils.spectral_norm's (u and v constants), on a
    ConvTranspose2d weight normalized over dim 1."""
    conv = torch.nn.utils.spectral_norm(torch.nn.ConvTranspose2d(3, 4, 2).double(),
                                        n_power_iterations=2, dim=1)
    sd = {k: v.detach().numpy().copy() for k, v in conv.state_dict().items()
          if k.startswith("weight_")}
    sn = SpectralNorm(sd["weight_orig"], n_power_iterations=2, dim=1)
    sn.load_state_dict(sd)
    conv.train(training)
    sn.train(training).requires_grad_()
    dy = rng.standard_normal(sd["weight_orig"].shape)
    conv(torch.zeros(1, 3, 2, 2, dtype=torch.float64))  # computes conv.weight (pre-hook)
    conv.weight.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(sn(), conv.weight.detach().numpy(), rtol=1e-12)
    assert sn.backward(dy) is None
    np.testing.assert_allclose(sn.grad["weight_orig"], conv.weight_orig.grad.numpy(),
                               rtol=1e-10, atol=1e-12)


def test_float32_layers_give_float32_gradients_and_accumulate():
    m = fastnorm.SandwichBatchNorm2d(3, num_classes=2, rng=0).requires_grad_()
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    m(x, [0, 0])
    gx = m.backward(dy)
    once = {k: v.copy() for k, v in m.grad.items()}
    assert gx.dtype == np.float32 and all(v.dtype == np.float32 for v in once.values())
    assert not once["embed.weight"][1].any()  # class 1 had no sample
    m(x, [0, 0])
    m.backward(dy)
    for k in once:
        np.testing.assert_allclose(m.grad[k], 2 * once[k], rtol=1e-6)


def test_containers_list_their_childrens_parameters_and_buffers():
    m = fastnorm.SandwichBatchNorm2d(3, num_classes=4, rng=0)
    assert [k for k, _ in m.named_parameters()] == ["bn.weight", "bn.bias", "embed.weight"]
    assert [k for k, _ in m.named_buffers()] == ["bn.running_mean", "bn.running_var",
                                                 "bn.num_batches_tracked"]
    assert [p is m.bn.weight for p in m.parameters()] == [True, False, False]
    c = fastnorm.CategoricalConditionalBatchNorm2d(3, num_classes=4)
    assert [k for k, _ in c.named_parameters()] == ["embed.weight"]
    assert len(list(c.buffers())) == 3


def test_mask_power_norm_refuses_to_keep_gradients():
    m = fastnorm.MaskPowerNorm(4)
    with pytest.raises(NotImplementedError, match="MaskPowerNorm has no backward"):
        m.requires_grad_()
    assert m.requires_grad_(False) is m
    m(rng.standard_normal((3, 2, 4)).astype(np.float32))
    with pytest.raises(RuntimeError, match="call requires_grad_"):
        m.backward(np.ones((3, 2, 4), np.float32))
