"""fastnorm.utils.fusion: BatchNorm folding into the convolution / linear layer before it, against
torch.nn.utils.fusion (within 1e-6 relative) and against its meaning (the fused layer computes
what the layer followed by an eval-mode fastnorm.functional.batch_norm computes), with weights in
awkward layouts, None where torch allows it, and errors."""
import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F
from fastnorm.utils import (fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_linear_bn_eval,
                            fuse_linear_bn_weights)

from awkward import layouts

DTYPES = [np.float32, np.float64]


def _bn(C, dtype, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(C).astype(dtype), rng.uniform(0.2, 3.0, C).astype(dtype),
            rng.uniform(0.5, 2.0, C).astype(dtype), rng.standard_normal(C).astype(dtype))


def _close(got, want, label):
    """Within 1e-6 relative to the array's magnitude (elementwise relative error is meaningless
    where a bias cancels to ~0)."""
    want = np.asarray(want, np.float64)
    scale = max(np.abs(want).max(initial=0.0), np.finfo(np.float64).tiny)
    err = np.abs(got.astype(np.float64) - want).max(initial=0.0) / scale
    assert err <= 1e-6, f"{label}: relative error {err:.3g}"


@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("none", ["", "conv_b", "bn_w", "bn_b", "all"])
def test_conv_matches_torch(torch, none, dtype, transpose):
    fusion = torch.nn.utils.fusion
    C = 6
    shape = (4, C, 3, 3) if transpose else (C, 4, 3, 3)
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal(shape).astype(dtype)
    cb = rng.standard_normal(C).astype(dtype)
    rm, rv, bw, bb = _bn(C, dtype, 2)
    cb, bw, bb = (None if none in (k, "all") else v
                  for k, v in (("conv_b", cb), ("bn_w", bw), ("bn_b", bb)))
    t = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    tw, tb = fusion.fuse_conv_bn_weights(t(w0), t(cb), t(rm), t(rv), 1e-3, t(bw), t(bb), transpose)
    for label, w in layouts(w0):
        w_before = w.copy()
        fw, fb = fuse_conv_bn_weights(w, cb, rm, rv, 1e-3, bw, bb, transpose)
        assert fw.shape == shape and fw.dtype == dtype and fb.shape == (C,) and fb.dtype == dtype
        _close(fw, tw.detach().numpy(), f"{label} weight")
        _close(fb, tb.detach().numpy(), f"{label} bias")
        assert np.array_equal(w, w_before), f"{label}: conv_w modified"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("features", [5, 1], ids=["per_output", "single_feature"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_linear_matches_torch(torch, with_bias, features, dtype):
    fusion = torch.nn.utils.fusion
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((5, 7)).astype(dtype)
    lb = rng.standard_normal(5).astype(dtype) if with_bias else None
    rm, rv, bw, bb = _bn(features, dtype, 4)
    t = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    tw, tb = fusion.fuse_linear_bn_weights(t(w0), t(lb), t(rm), t(rv), 1e-5, t(bw), t(bb))
    for label, w in layouts(w0):
        fw, fb = fuse_linear_bn_weights(w, lb, rm, rv, 1e-5, bw, bb)
        assert fw.dtype == dtype and fb.shape == (5,) and fb.dtype == dtype
        _close(fw, tw.detach().numpy(), f"{label} weight")
        _close(fb, tb.detach().numpy(), f"{label} bias")


def test_result_dtypes_follow_the_weights_as_in_torch(torch):
    """The weight keeps conv_w's dtype and the bias conv_b's (conv_w's when there is none);
    the BatchNorm's arrays may have another dtype."""
    fusion = torch.nn.utils.fusion
    rng = np.random.default_rng(5)
    w = rng.standard_normal((3, 2, 1)).astype(np.float32)
    b = rng.standard_normal(3)  # float64
    rm, rv, bw, bb = _bn(3, np.float64, 6)
    fw, fb = fuse_conv_bn_weights(w, b, rm, rv, 1e-5, bw, bb)
    tw, tb = fusion.fuse_conv_bn_weights(*(torch.from_numpy(a) for a in (w, b, rm, rv)), 1e-5,
                                         torch.from_numpy(bw), torch.from_numpy(bb))
    assert (fw.dtype, fb.dtype) == (np.float32, np.float64)
    assert (tw.dtype, tb.dtype) == (torch.float32, torch.float64)
    fw, fb = fuse_conv_bn_weights(w, None, rm, rv, 1e-5, bw, bb)
    assert (fw.dtype, fb.dtype) == (np.float32, np.float32)
    # float16 weights: computed in float64, rounded once
    fw16, _ = fuse_conv_bn_weights(w.astype(np.float16), None, rm, rv, 1e-5, bw, bb)
    want = (w.astype(np.float16).astype(np.float64) * (bw / np.sqrt(rv + 1e-5))[:, None, None])
    assert fw16.dtype == np.float16 and np.array_equal(fw16, want.astype(np.float16))


def test_fused_linear_computes_linear_then_batch_norm():
    """The meaning, without torch: x @ W'.T + b' == batch_norm(x @ W.T + b) in eval mode."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 4))
    w, b = rng.standard_normal((6, 4)), rng.standard_normal(6)
    rm, rv, bw, bb = _bn(6, np.float64, 8)
    want = F.batch_norm(x @ w.T + b, rm, rv, bw, bb, eps=1e-3)
    fw, fb = fuse_linear_bn_weights(w, b, rm, rv, 1e-3, bw, bb)
    np.testing.assert_allclose(x @ fw.T + fb, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
def test_fused_pointwise_conv_computes_conv_then_batch_norm(transpose):
    """A 1x1 convolution is a per-pixel matrix product: check the fused one against an eval-mode
    BatchNorm2d after the unfused one (the convenience form, from the layer)."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 4, 5))
    w = rng.standard_normal((3, 6, 1, 1) if transpose else (6, 3, 1, 1))
    b = rng.standard_normal(6)
    conv = ((lambda w, b: np.einsum("io,nihw->nohw", w[:, :, 0, 0], x) + b.reshape(1, -1, 1, 1))
            if transpose else
            (lambda w, b: np.einsum("oi,nihw->nohw", w[:, :, 0, 0], x) + b.reshape(1, -1, 1, 1)))
    bn = fastnorm.BatchNorm2d(6, eps=1e-4, dtype=np.float64)
    for name, value in zip(("running_mean", "running_var", "weight", "bias"),
                           _bn(6, np.float64, 10)):
        getattr(bn, name)[...] = value
    bn.eval()
    want = bn(conv(w, b))
    fw, fb = fuse_conv_bn_eval(w, b, bn, transpose=transpose)
    np.testing.assert_allclose(conv(fw, fb), want, rtol=1e-12, atol=1e-12)


def test_eval_conveniences_match_torch_modules(torch):
    """fuse_conv_bn_eval / fuse_linear_bn_eval on fastnorm layers holding a torch BatchNorm's
    state give torch's fused modules' parameters (affine=False counts as 1 and 0 for linear,
    where torch's own function fails)."""
    nn = torch.nn
    torch.manual_seed(0)
    conv, tbn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    tbn.running_mean.normal_(), tbn.running_var.uniform_(0.5, 2), tbn.weight.data.normal_()
    conv.eval(), tbn.eval()
    fused = nn.utils.fusion.fuse_conv_bn_eval(conv, tbn)
    bn = fastnorm.BatchNorm2d(4)
    bn.load_state_dict(tbn.state_dict())
    bn.eval()
    fw, fb = fuse_conv_bn_eval(conv.weight.detach().numpy(), conv.bias.detach().numpy(), bn)
    _close(fw, fused.weight.detach().numpy(), "conv weight")
    _close(fb, fused.bias.detach().numpy(), "conv bias")
    # a torch BatchNorm works as the layer too (its tensors are converted)
    fw2, _ = fuse_conv_bn_eval(conv.weight, conv.bias, tbn)
    assert np.array_equal(fw2, fw)
    lin, tbn1 = nn.Linear(5, 3), nn.BatchNorm1d(3)
    tbn1.running_var.uniform_(0.5, 2)
    lin.eval(), tbn1.eval()
    fused = nn.utils.fusion.fuse_linear_bn_eval(lin, tbn1)
    bn1 = fastnorm.BatchNorm1d(3)
    bn1.load_state_dict(tbn1.state_dict())
    fw, fb = fuse_linear_bn_eval(lin.weight.detach().numpy(), lin.bias.detach().numpy(), bn1.eval())
    _close(fw, fused.weight.detach().numpy(), "linear weight")
    _close(fb, fused.bias.detach().numpy(), "linear bias")
    noaffine = fastnorm.BatchNorm1d(3, affine=False).eval()
    fw, fb = fuse_linear_bn_eval(np.eye(3), None, noaffine)
    np.testing.assert_allclose(fw, np.eye(3) / np.sqrt(1 + 1e-5), rtol=1e-15)
    assert np.array_equal(fb, np.zeros(3))


ERRORS = [
    (lambda: fuse_conv_bn_weights(np.ones((4, 2, 3)), None, np.zeros(3), np.ones(3), 1e-5, None,
                                  None),
     ValueError, r"expected bn_rm of shape \(4,\), got shape \(3,\)"),
    (lambda: fuse_conv_bn_weights(np.ones((4, 2, 3)), np.zeros(2), np.zeros(4), np.ones(4), 1e-5,
                                  None, None),
     ValueError, r"expected conv_b of shape \(4,\), got shape \(2,\)"),
    (lambda: fuse_conv_bn_weights(np.ones((4, 2, 3)), None, np.zeros(4), np.ones(4), 1e-5, None,
                                  None, transpose=True),
     ValueError, r"expected bn_rm of shape \(2,\), got shape \(4,\)"),
    (lambda: fuse_conv_bn_weights(np.ones(4), None, np.zeros(4), np.ones(4), 1e-5, None, None),
     ValueError, r"expected conv_w of at least 2 dimensions .* got shape \(4,\)"),
    (lambda: fuse_conv_bn_weights(np.ones((4, 2), np.int64), None, np.zeros(4), np.ones(4), 1e-5,
                                  None, None),
     TypeError, r"conv_w must be a floating-valued array, got dtype int64"),
    (lambda: fuse_conv_bn_weights(np.ones((4, 2)), None, None, np.ones(4), 1e-5, None, None),
     TypeError, r"bn_rm and bn_rv must be arrays"),
    (lambda: fuse_conv_bn_weights(np.ones((4, 2)), None, np.zeros(4), np.ones(4), -1.0, None,
                                  None),
     ValueError, r"eps must be finite and >= 0, got -1\.0"),
    (lambda: fuse_linear_bn_weights(np.ones((4, 2)), None, np.zeros(4), np.ones(4), 1e-5, None,
                                    np.zeros(4)),
     TypeError, r"bn_w and bn_b must be arrays \(as in torch\), got None and an array"),
    (lambda: fuse_linear_bn_weights(np.ones((4, 2, 1)), None, np.zeros(4), np.ones(4), 1e-5,
                                    np.ones(4), np.zeros(4)),
     ValueError, r"expected linear_w of shape \(out_features, in_features\), got shape"),
    (lambda: fuse_linear_bn_weights(np.ones((4, 2)), None, np.zeros(3), np.ones(3), 1e-5,
                                    np.ones(3), np.zeros(3)),
     ValueError, r"expected bn_rm of shape \(4,\), got shape \(3,\)"),
    (lambda: fuse_conv_bn_eval(np.ones((3, 2, 1)), None, fastnorm.BatchNorm1d(3)),
     ValueError, r"fusion only for eval"),
    (lambda: fuse_conv_bn_eval(np.ones((3, 2, 1)), None,
                               fastnorm.BatchNorm1d(3, track_running_stats=False).eval()),
     ValueError, r"bn.running_mean and bn.running_var must not be None"),
    (lambda: fuse_linear_bn_eval(np.ones((4, 2)), None, fastnorm.BatchNorm1d(3).eval()),
     ValueError, r"out_features=4 and bn.num_features=3"),
]


@pytest.mark.parametrize("call,exc,msg", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()
