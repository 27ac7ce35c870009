"""RMSNorm (fastnorm.RMSNorm, fastnorm.functional.rms_norm): against fastnorm.reference.rms_norm
over awkward inputs, against torch 2.13's F.rms_norm / nn.RMSNorm (eps=None = machine epsilon of
the input's dtype, multi-axis normalized_shape, no affine), state_dict, repr and bad inputs."""
import warnings

import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F
from fastnorm import reference as R

from awkward import assert_matches, awkward_inputs

DTYPES = [np.float32, np.float64]
# (input shape, normalized_shape)
CASES = [((4, 6, 5, 7), (7,)), ((4, 6, 5, 7), (5, 7)), ((3, 6, 9), (6, 9)), ((5, 6), (6,)),
         ((2, 3, 4100), (4100,)), ((1, 3, 2), (3, 2)), ((7,), (7,)), ((2, 1, 3), (1, 3)),
         ((3, 4, 1), (1,))]


def _weight(ns, dtype, seed=1):
    return np.random.default_rng(seed).standard_normal(ns).astype(dtype)


@pytest.mark.parametrize("eps", [None, 1e-6], ids=["eps_none", "eps_1e-6"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape,ns", CASES, ids=str)
def test_module_matches_reference_on_awkward_inputs(shape, ns, dtype, eps):
    m = fastnorm.RMSNorm(ns, eps=eps, dtype=dtype)
    m.weight[...] = _weight(ns, dtype)
    plain = fastnorm.RMSNorm(ns, eps=eps, elementwise_affine=False)
    for label, x in awkward_inputs(shape, dtype):
        before = x.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # reference on NaN/inf data
            want = R.rms_norm(x, ns, m.weight, eps)
            want_plain = R.rms_norm(x, ns, None, eps)
        # outputs are |x| / rms <= sqrt(n) times |weight|
        scale = max(1.0, np.abs(want[np.isfinite(want)]).max(initial=0.0) / 10)
        assert_matches(m(x), want, dtype, f"{shape} {ns} {label}", scale)
        assert_matches(plain(x), want_plain, dtype, f"{shape} {ns} {label} plain", scale)
        assert_matches(F.rms_norm(x, ns, m.weight, eps), want, dtype, f"{label} functional", scale)
        assert np.array_equal(x, before, equal_nan=True), f"{label}: input modified"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_eps_none_is_machine_epsilon_of_the_input_dtype(dtype):
    # mean(x^2) = 1e-8 is below float32's epsilon (1.2e-7) and far above float64's (2.2e-16)
    x = np.full((2, 3), 1e-4, dtype)
    y = fastnorm.RMSNorm(3)(x)  # float32 module; eps follows the input, not the weight
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(y, x / np.sqrt(1e-8 + eps), rtol=1e-6)
    assert y.dtype == dtype
    if dtype == np.float32:
        assert np.all(y < 0.3)  # eps dominates
    else:
        assert np.all(np.abs(y - 1) < 1e-7)  # eps negligible
    np.testing.assert_array_equal(F.rms_norm(x, 3), y)
    # an explicit eps is used as given
    np.testing.assert_allclose(fastnorm.RMSNorm(3, eps=1e-8)(x), x / np.sqrt(2e-8), rtol=1e-6)
    z = F.rms_norm(np.zeros((2, 3), dtype), 3)  # 0 / sqrt(0 + eps) = 0, not NaN
    assert np.all(z == 0)
    # byte order does not change the epsilon, in fastnorm or in the reference
    xs = x.astype(x.dtype.newbyteorder())
    np.testing.assert_array_equal(F.rms_norm(xs, 3), y)
    np.testing.assert_allclose(R.rms_norm(xs, 3), x / np.sqrt(1e-8 + eps), rtol=1e-6)


def test_zero_rows_with_zero_eps_give_nan_like_torch(torch):
    want = torch.nn.functional.rms_norm(torch.zeros(1, 3, dtype=torch.float64), [3], eps=0.0)
    y = F.rms_norm(np.zeros((1, 3)), 3, eps=0.0)
    assert np.isnan(y).all() and torch.isnan(want).all()


# -- torch parity -------------------------------------------------------------------------------

@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("eps", [None, 1e-5, 0.1])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape,ns", CASES, ids=str)
def test_functional_matches_torch(torch, shape, ns, dtype, eps, affine):
    x = (np.random.default_rng(2).standard_normal(shape) * 3 + 0.5).astype(dtype)
    w = _weight(ns, dtype) if affine else None
    want = torch.nn.functional.rms_norm(torch.from_numpy(x), list(ns),
                                        None if w is None else torch.from_numpy(w), eps).numpy()
    got = F.rms_norm(x, ns, w, eps)
    assert got.dtype == want.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("kw", [{}, {"eps": 1e-6}, {"elementwise_affine": False},
                                {"eps": 0.5, "elementwise_affine": False}], ids=str)
@pytest.mark.parametrize("ns", [8, (8,), (4, 8), [2, 4, 8]], ids=str)
def test_module_matches_torch(torch, ns, kw):
    tm = torch.nn.RMSNorm(ns, **kw)
    m = fastnorm.RMSNorm(ns, **kw)
    assert repr(m) == repr(tm)
    assert list(m.state_dict()) == list(tm.state_dict())
    assert {k: v.shape for k, v in m.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in tm.state_dict().items()}
    if "weight" in tm.state_dict():
        with torch.no_grad():
            tm.weight.copy_(torch.randn(tm.weight.shape, generator=torch.Generator().manual_seed(0)))
    assert repr(m.load_state_dict(tm.state_dict())) == "<All keys matched successfully>"
    shape = (3, 5, 2, 4, 8)
    for dtype in DTYPES:
        x = (np.random.default_rng(3).standard_normal(shape) * 2).astype(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch: float64 input, float32 weight
            want = tm(torch.from_numpy(x)).detach().numpy()
        got = m(x)
        assert got.dtype == want.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # float64 on both sides: tight
    tm64 = torch.nn.RMSNorm(ns, dtype=torch.float64, **kw)
    tm64.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in
                          m.state_dict().items()})
    m64 = fastnorm.RMSNorm(ns, dtype=torch.float64, **kw)  # torch dtype names accepted
    m64.load_state_dict(tm64.state_dict())
    x = np.random.default_rng(4).standard_normal(shape)
    np.testing.assert_allclose(m64(x), tm64(torch.from_numpy(x)).detach().numpy(), rtol=1e-12,
                               atol=1e-12)
    # torch tensors (requiring grad) are accepted as input
    tx = torch.randn(2, *(tm.normalized_shape), requires_grad=True)
    np.testing.assert_allclose(m(tx), tm(tx).detach().numpy(), rtol=1e-5, atol=1e-5)


# -- state, repr, construction ------------------------------------------------------------------

def test_state_dict_repr_and_reset():
    m = fastnorm.RMSNorm((4, 5))
    assert repr(m) == "RMSNorm((4, 5), eps=None, elementwise_affine=True)"
    assert repr(fastnorm.RMSNorm(3, eps=1e-6, elementwise_affine=False)) == \
        "RMSNorm((3,), eps=1e-06, elementwise_affine=False)"
    sd = m.state_dict()
    assert list(sd) == ["weight"] and sd["weight"].shape == (4, 5)
    assert sd["weight"].dtype == np.float32 and np.all(sd["weight"] == 1)
    assert fastnorm.RMSNorm(3, dtype=np.float64).weight.dtype == np.float64
    p = fastnorm.RMSNorm(3, elementwise_affine=False)
    assert p.weight is None and list(p.state_dict()) == []
    p.reset_parameters()
    m.weight[...] = 7
    m.reset_parameters()
    assert np.all(m.weight == 1)
    # state_dict holds the module's own array (as torch): later changes show through
    m.load_state_dict({"weight": np.full((4, 5), 2.0)})
    assert np.all(sd["weight"] == 2) and sd["weight"].dtype == np.float32
    x = np.random.default_rng(5).standard_normal((3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(m(x), 2 * fastnorm.RMSNorm((4, 5))(x), rtol=1e-6)


def test_empty_inputs():
    for shape, ns in [((0, 3), 3), ((2, 0), 0), ((0, 2, 3), (2, 3))]:
        y = fastnorm.RMSNorm(ns)(np.zeros(shape, np.float32))
        assert y.shape == shape and y.dtype == np.float32


def test_bad_constructor_arguments():
    for kw, exc in [({"normalized_shape": "a"}, TypeError), ({"normalized_shape": [2.0]}, TypeError),
                    ({"normalized_shape": -1}, ValueError), ({"normalized_shape": 3, "eps": -1.0},
                                                             ValueError),
                    ({"normalized_shape": 3, "eps": float("inf")}, ValueError),
                    ({"normalized_shape": 3, "eps": "1e-5"}, TypeError),
                    ({"normalized_shape": 3, "dtype": np.int32}, TypeError),
                    ({"normalized_shape": 3, "device": "cuda"}, ValueError)]:
        with pytest.raises(exc):
            fastnorm.RMSNorm(**kw)


def test_bad_inputs():
    m = fastnorm.RMSNorm((2, 3))
    x = np.ones((4, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected input with shape \[\*, 2, 3\]"):
        m(np.ones((4, 3, 2), np.float32))
    with pytest.raises(ValueError, match="expected input with shape"):
        m(np.ones(3, np.float32))
    for dt in (np.int64, np.longdouble, np.complex64, np.bool_):
        with pytest.raises(TypeError, match="float32 or float64"):
            m(x.astype(dt))
    with pytest.raises(ValueError, match="at least 1-dimensional"):
        fastnorm.RMSNorm(())(x)
    with pytest.raises(ValueError, match="expected weight of shape"):
        F.rms_norm(x, (2, 3), np.ones(3))
    with pytest.raises(ValueError, match="eps must be finite"):
        F.rms_norm(x, (2, 3), eps=-1e-5)
    with pytest.raises(TypeError, match="normalized_shape"):
        F.rms_norm(x, "3")
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        m.load_state_dict({"weight": np.ones(6)})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        m.load_state_dict({"weight": np.ones((2, 3)), "bias": np.zeros((2, 3))})
    assert np.all(m.weight == 1)  # nothing was loaded by the rejected calls
    # a weight assigned by hand with the wrong shape is caught at call time
    m.weight = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="expected weight of shape"):
        m(x)
