"""fastnorm.utils.SpectralNorm against torch.nn.utils.spectral_norm (same u and v: same weight, same
updated u and v; train and eval; dim 0 and 1), against fastnorm.reference.spectral_norm, loading
the weight_orig/weight_u/weight_v entries of torch's spectral-normed layers, and its checks."""
import numpy as np
import pytest

from fastnorm import reference as R
from fastnorm.utils import SpectralNorm


def _torch_layer(torch, kind, n_power_iterations=1):
    nn = torch.nn
    torch.manual_seed(0)
    if kind == "linear":
        layer = nn.Linear(7, 5)
    elif kind == "conv":
        layer = nn.Conv2d(3, 4, 3)
    else:  # transposed convolution: dim 1
        layer = nn.ConvTranspose2d(3, 4, 3)
    return nn.utils.spectral_norm(layer, n_power_iterations=n_power_iterations)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("kind,dim", [("linear", 0), ("conv", 0), ("convT", 1)])
def test_matches_torch_in_training_and_eval(torch, kind, dim, n):
    layer = _torch_layer(torch, kind, n)
    sd = layer.state_dict()
    sn = SpectralNorm(sd["weight_orig"].numpy(), n_power_iterations=n, dim=dim)
    sn.load_state_dict({k: sd[k] for k in ("weight_orig", "weight_u", "weight_v")})
    x = torch.randn(2, 7) if kind == "linear" else torch.randn(1, 3, 6, 6)
    for step in range(3):  # each training forward does the power iteration
        with torch.no_grad():
            layer(x)
        got = sn()
        np.testing.assert_allclose(got, layer.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sn.weight_u, layer.weight_u.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sn.weight_v, layer.weight_v.numpy(), rtol=1e-5, atol=1e-6)
        assert got.dtype == np.float32 and got.shape == tuple(layer.weight_orig.shape)
    layer.eval()
    sn.eval()
    u = sn.weight_u.copy()
    with torch.no_grad():
        layer(x)
    np.testing.assert_allclose(sn(), layer.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert np.array_equal(sn.weight_u, u)  # no power iteration in eval
    # strict=False takes the three entries of a whole layer's state_dict ("bias" is unexpected)
    sn2 = SpectralNorm(np.zeros(tuple(layer.weight_orig.shape), np.float32), n, dim=dim)
    result = sn2.load_state_dict(layer.state_dict(), strict=False)
    assert result.unexpected_keys == ["bias"] and result.missing_keys == []
    np.testing.assert_allclose(sn2.eval()(), sn(), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,dim", [((6, 4), 0), ((4, 3, 2, 2), 1), ((5,), 0), ((1, 1), 0),
                                       ((3, 2, 2), -1)])
def test_matches_reference(shape, dim, dtype):
    w = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    sn = SpectralNorm(w, n_power_iterations=2, dim=dim, rng=3)
    u, v = sn.weight_u.copy(), sn.weight_v.copy()
    want, wu, wv = R.spectral_norm(w, u, v, 2, 1e-12, dim % len(shape), True)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    got = sn()
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(sn.weight_u, wu, rtol=tol, atol=tol)
    np.testing.assert_allclose(sn.weight_v, wv, rtol=tol, atol=tol)
    assert np.array_equal(w, np.random.default_rng(1).standard_normal(shape).astype(dtype))


def test_converges_to_the_largest_singular_value():
    w = np.random.default_rng(2).standard_normal((8, 5))
    sn = SpectralNorm(w, n_power_iterations=50, rng=0)
    np.testing.assert_allclose(np.linalg.svd(sn(), compute_uv=False)[0], 1.0, rtol=1e-8)


def test_state_dict_round_trip_and_errors():
    w = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    sn = SpectralNorm(w, rng=0)
    sn2 = SpectralNorm(np.ones((3, 4), np.float32), rng=1)
    sn2.load_state_dict(sn.state_dict())
    assert np.array_equal(sn2(), sn())
    before = {k: v.copy() for k, v in sn2.state_dict().items()}
    with pytest.raises(RuntimeError, match="size mismatch for weight_u"):
        sn2.load_state_dict({"weight_orig": w, "weight_u": np.ones(4), "weight_v": np.ones(4)})
    for k, v in sn2.state_dict().items():
        assert np.array_equal(v, before[k])
    with pytest.raises(ValueError, match="n_power_iterations to be positive"):
        SpectralNorm(w, n_power_iterations=0)
    with pytest.raises(ValueError, match="dim must be an axis"):
        SpectralNorm(w, dim=2)
    with pytest.raises(TypeError, match="float32 or float64"):
        SpectralNorm(np.ones((2, 2), np.int64))
    with pytest.raises(ValueError, match="eps"):
        SpectralNorm(w, eps=-1.0)
    sn2.weight_u = np.ones(5, np.float32)
    with pytest.raises(ValueError, match="weight_u and weight_v must have shapes"):
        sn2()
    assert np.array_equal(sn2.weight_v, before["weight_v"])
