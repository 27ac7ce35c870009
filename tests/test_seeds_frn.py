"""FilterResponseNorm1d/2d/3d and F.filter_response_norm: against fastnorm.reference over awkward
inputs, against a PyTorch port of timm's FilterResponseNormTlu2d (Singh & Krishnan 2019; timm
``timm/layers/filter_response_norm.py``) whose state_dict loads into ours, state_dict round trips
and the checks made before anything is written."""
import warnings

import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F
from fastnorm import reference as R

from awkward import assert_matches, awkward_inputs

DTYPES = [np.float32, np.float64]
CLASSES = {3: fastnorm.FilterResponseNorm1d, 4: fastnorm.FilterResponseNorm2d,
           5: fastnorm.FilterResponseNorm3d}
SHAPES = [(4, 6, 5, 7), (1, 6, 1, 1), (3, 6, 1, 8), (2, 6, 3, 4, 5), (5, 6, 9), (2, 6, 0, 3),
          (0, 6, 3, 3), (2, 16, 40, 40)]


def torch_frn_tlu(torch):
    """timm's FilterResponseNormTlu2d, ported to any (N, C, *) input: x * rsqrt(mean(x^2 over the
    spatial axes) + eps), per-channel weight and bias, then max with tau."""
    nn = torch.nn

    class FilterResponseNormTlu(nn.Module):
        def __init__(self, num_features, apply_act=True, eps=1e-5):
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
            self.tau = nn.Parameter(torch.zeros(num_features)) if apply_act else None

        def forward(self, x):
            dims = tuple(range(2, x.dim()))
            v_shape = (1, -1) + (1,) * (x.dim() - 2)
            inv = x.square().float().mean(dim=dims, keepdim=True).add(self.eps).rsqrt()
            x = x * inv.to(x.dtype).expand(x.shape)
            x = x * self.weight.view(v_shape).to(x.dtype) + self.bias.view(v_shape).to(x.dtype)
            if self.tau is None:
                return x
            return torch.maximum(x, self.tau.reshape(v_shape).to(x.dtype))

    return FilterResponseNormTlu


def _randomize(m, seed=1):
    rng = np.random.default_rng(seed)
    for p in m.state_dict().values():
        p[...] = rng.standard_normal(p.shape)
    return m


@pytest.mark.parametrize("apply_act", [True, False], ids=["tlu", "noact"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference_on_awkward_inputs(shape, dtype, apply_act):
    m = _randomize(CLASSES[len(shape)](shape[1], apply_act=apply_act, dtype=dtype))
    for label, x in awkward_inputs(shape, dtype):
        before = x.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the reference on NaN/inf data
            want = R.filter_response_norm(x, m.weight, m.bias, m.tau, m.eps)
        got = m(x)
        assert_matches(got, want, dtype, f"{shape} {label}", scale=4)
        assert np.array_equal(x, before, equal_nan=True), f"{label}: input modified"


def test_inf_plane_gives_bias_and_nan_like_timm():
    """An inf makes the plane's mean square inf: finite values give bias (then the bound), the
    inf gives NaN (inf * 0), as the reference and timm -- also with the inf first in the plane."""
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    x[1, 2, 0] = np.inf
    w, b, t = np.array([1.0, 2, 3]), np.array([0.5, -0.5, 0.25]), np.array([-9.0, -9, -9])
    y = F.filter_response_norm(x, w, b, t)
    assert np.isnan(y[1, 2, 0]) and np.array_equal(y[1, 2, 1:], [0.25] * 3)
    assert np.all(np.isfinite(y[0]))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(4, 6, 5, 7), (2, 6, 3, 4, 5), (5, 6, 9)], ids=str)
def test_matches_torch_port_and_loads_its_state_dict(torch, shape, dtype):
    C = shape[1]
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    port = torch_frn_tlu(torch)(C).to(tdtype)
    with torch.no_grad():
        for p in port.parameters():
            p.copy_(torch.randn(p.shape, dtype=tdtype))
    m = CLASSES[len(shape)](C, dtype=dtype)
    assert m.load_state_dict(port.state_dict()) is not None
    x = (np.random.default_rng(3).standard_normal(shape) * 3 + 1).astype(dtype)
    with torch.no_grad():
        want = port(torch.from_numpy(x)).numpy()
    # timm takes the mean of squares in float32 (.float()) whatever the input's dtype
    got = m(x)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    # and back: our state_dict loads into the port and gives the same output
    port2 = torch_frn_tlu(torch)(C).to(tdtype)
    port2.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in m.state_dict().items()})
    with torch.no_grad():
        assert torch.equal(port2(torch.from_numpy(x)), port(torch.from_numpy(x)))


def test_state_dict_round_trip_and_four_d_parameters():
    m = _randomize(fastnorm.FilterResponseNorm2d(4))
    m2 = fastnorm.FilterResponseNorm2d(4)
    m2.load_state_dict(m.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32)
    assert np.array_equal(m(x), m2(x))
    # a checkpoint of a port that keeps (1, C, 1, 1) parameters loads as (C,)
    sd = {k: v.reshape(1, 4, 1, 1) for k, v in m.state_dict().items()}
    m3 = fastnorm.FilterResponseNorm2d(4)
    m3.load_state_dict(sd)
    assert m3.weight.shape == (4,) and np.array_equal(m3(x), m(x))
    # without the TLU there is no tau
    m4 = fastnorm.FilterResponseNorm2d(4, apply_act=False)
    assert list(m4.state_dict()) == ["weight", "bias"] and m4.tau is None
    with pytest.raises(RuntimeError, match='Unexpected key.*"tau"'):
        m4.load_state_dict(m.state_dict())
    m.reset_parameters()
    assert (m.weight == 1).all() and (m.bias == 0).all() and (m.tau == 0).all()


def test_apply_act_false_is_plain_rms_affine():
    x = np.random.default_rng(1).standard_normal((3, 2, 10))
    m = fastnorm.FilterResponseNorm1d(2, apply_act=False, dtype=np.float64)
    m.weight[...] = [2.0, -1.0]
    m.bias[...] = [0.5, 0.0]
    ms = (x ** 2).mean(axis=2, keepdims=True)
    want = x / np.sqrt(ms + 1e-5) * np.array([2.0, -1.0])[:, None] + np.array([0.5, 0])[:, None]
    np.testing.assert_allclose(m(x), want, rtol=1e-12, atol=1e-12)
    assert (m(x) < 0).any()


def test_functional_out_and_in_place():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    w, b, t = (rng.standard_normal(3).astype(np.float32) for _ in range(3))
    want = F.filter_response_norm(x, w, b, t)
    out = np.empty_like(x)
    assert F.filter_response_norm(x, w, b, t, out=out) is out
    assert np.array_equal(out, want)
    y = x.copy()
    F.filter_response_norm(y, w, b, t, out=y)
    assert np.array_equal(y, want)


def test_errors_leave_everything_unchanged():
    m = _randomize(fastnorm.FilterResponseNorm2d(3))
    before = {k: v.copy() for k, v in m.state_dict().items()}
    x = np.ones((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="expected 4D input"):
        m(np.ones((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="3 channels"):
        m(np.ones((2, 4, 4, 4), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        m(np.ones((2, 3, 4, 4), np.int32))
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        m.load_state_dict({"weight": np.ones(5), "bias": np.ones(3), "tau": np.ones(3)})
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k]), k
    out = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match="tau with 3 elements"):
        F.filter_response_norm(x, tau=np.ones(4), out=out)
    with pytest.raises(ValueError, match="eps"):
        F.filter_response_norm(x, eps=-1.0, out=out)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        F.filter_response_norm(np.ones(3))
    assert (out == 7).all()
    y = x.copy()  # in place with the TLU
    with pytest.raises(ValueError, match="eps"):
        F.filter_response_norm(y, tau=np.zeros(3), eps=float("inf"), out=y)
    assert (y == 1).all()
    with pytest.raises(ValueError):
        fastnorm.FilterResponseNorm2d(3, eps=float("nan"))



def test_tlu_thresholds_nan_and_inf_and_layouts_like_the_reference():
    """The fused kernel's TLU: a NaN tau gives NaN, -inf leaves the values, NaN/inf in the data
    propagate as in np.maximum; channels-last input (planned on a C-order copy) the same."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    x[0, 1, 2, 2], x[1, 2, 0, 0] = np.nan, np.inf
    w, b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    tau = np.array([0.1, np.nan, -np.inf], np.float32)
    with np.errstate(invalid="ignore"):
        want = R.filter_response_norm(x, w, b, tau, 1e-5)
    for a in (x, np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)):
        got = F.filter_response_norm(a, w, b, tau, 1e-5)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=1e-5)
        assert np.isnan(got[:, 1]).all()  # tau NaN: the whole channel
