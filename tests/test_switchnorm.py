"""SwitchNorm1d/2d/3d: against fastnorm.reference.switch_norm over awkward inputs (train and eval,
float32/float64), the state_dict layout of the authors' module, multi-step running statistics,
bad inputs, and parity with an independent PyTorch port of the authors' module (Luo et al. 2018,
switchablenorms/Switchable-Normalization, devkit/ops/switchable_norm.py): the same state_dict
loads into both and gives the same outputs and running statistics."""
import io
import warnings

import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F
from fastnorm import reference as R

from awkward import TOL, assert_matches, awkward_inputs

DTYPES = [np.float32, np.float64]
CLASSES = {2: fastnorm.SwitchNorm1d, 4: fastnorm.SwitchNorm2d, 5: fastnorm.SwitchNorm3d}
# (N, C, *spatial) with more than one spatial element; (N, C) for SwitchNorm1d
SHAPES = [(4, 6, 5, 7), (1, 6, 3, 3), (3, 6, 1, 8), (2, 6, 3, 4, 5), (2, 96, 40, 40), (5, 6),
          (2, 6), (64, 3)]


def _randomize(m, seed=1, running=True):
    """Non-trivial mixing weights, affine parameters and (positive) running statistics."""
    rng = np.random.default_rng(seed)
    for name, p in m.state_dict().items():
        if name == "running_var":
            p[...] = np.abs(rng.standard_normal(p.shape)) + 0.5 if running else 0
        elif name == "running_mean":
            p[...] = rng.standard_normal(p.shape) if running else 0
        else:
            p[...] = rng.standard_normal(p.shape)
    return m


def _reference(m, x, running=None):
    """fastnorm.reference.switch_norm with m's parameters; running = (rm, rv) float64 copies that
    the call updates in place (by default copies of m's, None without BN)."""
    running = _running64(m) if running is None else running
    rm, rv = running if running is not None else (None, None)
    return R.switch_norm(x, rm, rv, m.weight, m.bias, m.mean_weight, m.var_weight, m.training,
                         m.momentum, m.eps, m.using_moving_average, m.using_bn)


def _running64(m):
    if not m.using_bn:
        return None
    return m.running_mean.astype(np.float64), m.running_var.astype(np.float64)


def _conditioning(x, dtype):
    """Tolerance factor for the authors' LN/BN variances, E[var + mean^2] - E[mean]^2: their
    float64 rounding error is about eps64 * mean^2 / var of the data (1e-8 relative for the
    1e4-offset variant), for fastnorm and the reference alike, beyond TOL in float64."""
    v = np.asarray(x, np.float64)
    v = v[np.isfinite(v)]
    var = v.var() if v.size else 0.0
    if var == 0:
        return 1.0
    err = 8 * np.finfo(np.float64).eps * (1 + v.mean() ** 2 / var)
    return max(1.0, err / TOL[np.dtype(dtype)])


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference_on_awkward_inputs(shape, dtype, training):
    cls = CLASSES[len(shape)]
    proto = _randomize(cls(shape[1], dtype=dtype))
    for label, x in awkward_inputs(shape, dtype):
        before = x.copy()
        m = cls(shape[1], dtype=dtype).train(training)
        m.load_state_dict(proto.state_dict())
        running = _running64(m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # reference on NaN/inf data
            want = _reference(m, x, running)
        got = m(x)
        # normalized outputs are O(10); eval mode on offset data is not (running stats ~ 1)
        big = np.abs(want[np.isfinite(want)]).max(initial=0.0)
        cond = _conditioning(x, dtype)
        assert_matches(got, want, dtype, f"{shape} {label}", max(1.0, big / 10) * cond)
        assert np.array_equal(x, before, equal_nan=True), f"{label}: input modified"
        if training:
            for got_r, want_r in zip((m.running_mean, m.running_var), running):
                # running stats are stored in the module's dtype; their scale is the data's
                scale = np.abs(want_r[np.isfinite(want_r)]).max(initial=1.0)
                # known kernel bug (test_inf_first_in_plane_gives_inf_running_mean): an inf that
                # is the first element of a statistics group gives a NaN mean, not inf
                got_r = np.where(np.isinf(want_r) & np.isnan(got_r), want_r, got_r).astype(dtype)
                assert_matches(got_r, want_r.astype(dtype).astype(np.float64), dtype,
                               f"{shape} {label} running", max(1.0, scale) * cond)
        else:
            assert np.array_equal(m.running_mean, proto.running_mean)


def test_inf_first_in_plane_gives_inf_running_mean():
    """LIBRARY BUG (kernels, not SwitchNorm): the mean of a group whose first element is +inf is
    NaN instead of +inf (NumPy and torch: inf), so running_mean gets NaN where the authors'
    module (and torch's BatchNorm) has inf. Same root cause as
    ``_kernels.instance_moments(np.array([[[np.inf, 1.0, 2.0]]]))[0] -> nan``."""
    x = np.arange(24, dtype=np.float64).reshape(3, 2, 2, 2)
    x[0, 0, 0, 0] = np.inf  # the first element of plane (0, 0)
    m = fastnorm.SwitchNorm2d(2, dtype=np.float64)
    running = _running64(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _reference(m, x, running)
    m(x)
    assert np.isposinf(running[0][0, 0, 0])
    assert np.isposinf(m.running_mean[0, 0, 0]), m.running_mean.ravel()
    # an inf elsewhere in the plane already gives inf
    x = np.arange(24, dtype=np.float64).reshape(3, 2, 2, 2)
    x[0, 0, 1, 1] = np.inf
    m = fastnorm.SwitchNorm2d(2, dtype=np.float64)
    m(x)
    assert np.isposinf(m.running_mean[0, 0, 0])


@pytest.mark.parametrize("using_moving_average", [True, False])
@pytest.mark.parametrize("cls", [fastnorm.SwitchNorm2d, fastnorm.SwitchNorm3d])
def test_without_bn_matches_reference(cls, using_moving_average):
    shape = (3, 5, 4, 6) if cls is fastnorm.SwitchNorm2d else (3, 5, 2, 3, 4)
    m = _randomize(cls(5, using_bn=False, using_moving_average=using_moving_average,
                       dtype=np.float64))
    x = np.random.default_rng(2).standard_normal(shape) * 3 + 1
    for mode in (True, False):
        m.train(mode)
        assert_matches(m(x), _reference(m, x), np.float64)
    assert m.running_mean is None and m.running_var is None


def _manual_bn_stats_2d(x):
    """BN statistics of the authors' SwitchNorm2d/3d, straight from the definition: derived from
    the per-(n, c) means and unbiased variances."""
    xs = x.reshape(x.shape[0], x.shape[1], -1).astype(np.float64)
    mu = xs.mean(axis=2)
    var = xs.var(axis=2, ddof=1)
    mean_bn = mu.mean(axis=0)
    return mean_bn, (var + mu ** 2).mean(axis=0) - mean_bn ** 2


@pytest.mark.parametrize("using_moving_average", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_training_loop_running_stats(dtype, using_moving_average):
    rng = np.random.default_rng(3)
    m = fastnorm.SwitchNorm2d(4, momentum=0.8, using_moving_average=using_moving_average,
                              dtype=dtype)
    rm, rv = np.zeros(4), np.zeros(4)
    for step in range(6):
        x = (rng.standard_normal((5, 4, 3, 6)) * (1 + step) + step).astype(dtype)
        m(x)
        mean_bn, var_bn = _manual_bn_stats_2d(x)
        if using_moving_average:  # momentum is the share kept
            rm, rv = 0.8 * rm + 0.2 * mean_bn, 0.8 * rv + 0.2 * var_bn
        else:  # sums of the mean and of the second moment
            rm, rv = rm + mean_bn, rv + mean_bn ** 2 + var_bn
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(m.running_mean.ravel(), rm, rtol=tol, atol=tol)
        np.testing.assert_allclose(m.running_var.ravel(), rv, rtol=tol, atol=tol)
        assert m.running_mean.dtype == dtype and m.running_mean.shape == (1, 4, 1)
    # eval: BN statistics are the running ones, which no longer change
    m.eval()
    x = rng.standard_normal((2, 4, 3, 6)).astype(dtype)
    before = m.running_mean.copy(), m.running_var.copy()
    y = m(x)
    assert np.array_equal(m.running_mean, before[0]) and np.array_equal(m.running_var, before[1])
    assert_matches(y, _reference(m, x), dtype)
    # with BN weight dominant, eval output is (x - running_mean) / sqrt(running_var + eps)
    m.mean_weight[...] = [-50, -50, 50]
    m.var_weight[...] = [-50, -50, 50]
    want = ((x - rm.reshape(1, 4, 1, 1)) / np.sqrt(rv.reshape(1, 4, 1, 1) + 1e-5))
    assert_matches(m(x), want, dtype, scale=10)


def test_training_loop_1d_running_stats():
    rng = np.random.default_rng(4)
    m = fastnorm.SwitchNorm1d(5, dtype=np.float64)
    rm, rv = np.zeros(5), np.zeros(5)
    for step in range(4):
        x = rng.standard_normal((7, 5)) * 2 + step
        y = m(x)
        rm = 0.997 * rm + 0.003 * x.mean(axis=0)
        rv = 0.997 * rv + 0.003 * x.var(axis=0, ddof=1)  # unbiased over N
        np.testing.assert_allclose(m.running_mean.ravel(), rm, rtol=1e-12)
        np.testing.assert_allclose(m.running_var.ravel(), rv, rtol=1e-12)
        # default mixing weights are equal: mean and var are the averages of LN's and BN's
        mean = (x.mean(axis=1, keepdims=True) + x.mean(axis=0)) / 2
        var = (x.var(axis=1, ddof=1, keepdims=True) + x.var(axis=0, ddof=1)) / 2
        np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-10, atol=1e-12)


def test_instance_statistics_are_unbiased():
    """With all the weight on IN, the output is (x - mu) / sqrt(unbiased var + eps)."""
    m = fastnorm.SwitchNorm2d(3, eps=0.0, dtype=np.float64)
    m.mean_weight[...] = [60, 0, 0]
    m.var_weight[...] = [60, 0, 0]
    x = np.random.default_rng(5).standard_normal((2, 3, 2, 2))
    y = m(x)
    mu = x.mean(axis=(2, 3), keepdims=True)
    sd = x.std(axis=(2, 3), ddof=1, keepdims=True)
    np.testing.assert_allclose(y, (x - mu) / sd, rtol=1e-10)
    assert not np.allclose(y, (x - mu) / x.std(axis=(2, 3), keepdims=True), rtol=1e-3)


# -- state, construction, repr ------------------------------------------------------------------

@pytest.mark.parametrize("cls,nd,kw,keys", [
    (fastnorm.SwitchNorm2d, 2, {}, ["weight", "bias", "mean_weight", "var_weight",
                                    "running_mean", "running_var"]),
    (fastnorm.SwitchNorm2d, 2, {"using_bn": False}, ["weight", "bias", "mean_weight",
                                                     "var_weight"]),
    (fastnorm.SwitchNorm3d, 3, {}, ["weight", "bias", "mean_weight", "var_weight",
                                    "running_mean", "running_var"]),
    (fastnorm.SwitchNorm3d, 3, {"using_bn": False}, ["weight", "bias", "mean_weight",
                                                     "var_weight"]),
    (fastnorm.SwitchNorm1d, 0, {}, ["weight", "bias", "mean_weight", "var_weight",
                                    "running_mean", "running_var"]),
])
def test_state_dict_layout_and_initial_values(cls, nd, kw, keys):
    m = cls(7, **kw)
    sd = m.state_dict()
    assert list(sd) == keys
    pshape = (1, 7) + (1,) * nd
    nmix = 3 if nd and kw.get("using_bn", True) else 2
    rshape = (1, 7) if nd == 0 else (1, 7, 1)
    want = {"weight": (pshape, 1), "bias": (pshape, 0), "mean_weight": ((nmix,), 1),
            "var_weight": ((nmix,), 1), "running_mean": (rshape, 0), "running_var": (rshape, 0)}
    for k, v in sd.items():
        assert v.shape == want[k][0], k
        assert v.dtype == np.float32, k
        assert np.all(v == want[k][1]), k
    m64 = cls(7, dtype=np.float64, **kw)
    assert all(v.dtype == np.float64 for v in m64.state_dict().values())


def test_defaults_repr_last_gamma_and_reset():
    m = fastnorm.SwitchNorm2d(64)
    assert repr(m) == ("SwitchNorm2d(64, eps=1e-05, momentum=0.9, using_moving_average=True, "
                       "using_bn=True, last_gamma=False)")
    assert repr(fastnorm.SwitchNorm3d(8, using_bn=False, last_gamma=True)) == (
        "SwitchNorm3d(8, eps=1e-05, momentum=0.997, using_moving_average=True, using_bn=False, "
        "last_gamma=True)")
    assert repr(fastnorm.SwitchNorm1d(8, eps=1e-3, using_moving_average=False)) == (
        "SwitchNorm1d(8, eps=0.001, momentum=0.997, using_moving_average=False)")
    g = fastnorm.SwitchNorm2d(3, last_gamma=True)
    assert np.all(g.weight == 0) and np.all(g.bias == 0)
    # reset_parameters as the authors': running stats 0, weight 1 (0 with last_gamma), bias 0;
    # the mixing weights are not touched
    for m in (fastnorm.SwitchNorm2d(3, last_gamma=True), fastnorm.SwitchNorm1d(3)):
        _randomize(m)
        mix = m.mean_weight.copy(), m.var_weight.copy()
        m.reset_parameters()
        assert np.all(m.weight == (0 if m.last_gamma else 1)) and np.all(m.bias == 0)
        assert np.all(m.running_mean == 0) and np.all(m.running_var == 0)
        assert np.array_equal(m.mean_weight, mix[0]) and np.array_equal(m.var_weight, mix[1])
    m = _randomize(fastnorm.SwitchNorm2d(3))
    m.reset_running_stats()
    assert np.all(m.running_mean == 0) and np.all(m.running_var == 0)
    assert not np.all(m.weight == 1)


def test_state_dict_round_trip_and_strict_loading():
    a = _randomize(fastnorm.SwitchNorm2d(4))
    b = fastnorm.SwitchNorm2d(4, dtype=np.float64)
    assert repr(b.load_state_dict(a.state_dict())) == "<All keys matched successfully>"
    for k, v in a.state_dict().items():
        assert np.array_equal(b.state_dict()[k], v.astype(np.float64))
    x = np.random.default_rng(6).standard_normal((2, 4, 3, 3)).astype(np.float32)
    a.eval(), b.eval()
    np.testing.assert_allclose(a(x), b(x.astype(np.float64)), rtol=1e-4, atol=1e-4)
    # a checkpoint without BN does not load into a module with BN, and vice versa
    nobn = fastnorm.SwitchNorm2d(4, using_bn=False)
    with pytest.raises(RuntimeError, match="Missing key"):
        a.load_state_dict(nobn.state_dict())
    with pytest.raises(RuntimeError, match="size mismatch for mean_weight"):
        nobn.load_state_dict(a.state_dict(), strict=False)
    with pytest.raises(RuntimeError, match="size mismatch for running_mean"):
        fastnorm.SwitchNorm2d(5).load_state_dict(
            {**fastnorm.SwitchNorm2d(5).state_dict(), "running_mean": np.zeros(5)})


@pytest.mark.parametrize("kw,exc", [
    ({"dtype": np.int32}, TypeError), ({"dtype": np.longdouble}, TypeError),
    ({"eps": -1.0}, ValueError), ({"eps": "1e-5"}, TypeError),
    ({"momentum": None}, TypeError), ({"momentum": float("nan")}, ValueError),
    ({"num_features": -1}, ValueError), ({"num_features": 2.0}, TypeError),
])
def test_bad_constructor_arguments(kw, exc):
    args = {"num_features": 3, **kw}
    with pytest.raises(exc):
        fastnorm.SwitchNorm2d(**args)


def test_torch_dtype_names_accepted():
    assert fastnorm.SwitchNorm1d(2, dtype="float64").weight.dtype == np.float64


# -- bad inputs: raise before any state changes -------------------------------------------------

def _bad_inputs_2d():
    rng = np.random.default_rng(7)
    return [
        (rng.standard_normal((2, 3, 4)), ValueError, "expected 4D input"),
        (rng.standard_normal((2, 3, 4, 4, 1)), ValueError, "expected 4D input"),
        (rng.standard_normal((2, 4, 3, 3)), ValueError, "3 channels"),
        (np.ones((2, 3, 3, 3), np.int64), TypeError, "float32 or float64"),
        (np.ones((2, 3, 3, 3), np.longdouble), TypeError, "float32 or float64"),
        (np.ones((2, 3, 3, 3), np.complex128), TypeError, "float32 or float64"),
        (rng.standard_normal((4, 3, 1, 1)), ValueError, "more than 1 spatial element"),
    ]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_bad_inputs_raise_before_state_changes(training):
    m = _randomize(fastnorm.SwitchNorm2d(3)).train(training)
    snap = {k: v.copy() for k, v in m.state_dict().items()}
    for x, exc, msg in _bad_inputs_2d():
        with pytest.raises(exc, match=msg):
            m(x)
        for k, v in m.state_dict().items():
            assert np.array_equal(v, snap[k]), f"{k} changed by a rejected {x.shape} {x.dtype}"
    # a parameter of the wrong shape (assigned by hand) is also caught before the update
    m.weight = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="weight must be an array of shape"):
        m(np.ones((2, 3, 2, 2), np.float32))
    assert np.array_equal(m.running_mean, snap["running_mean"])


def test_bad_inputs_1d():
    m = _randomize(fastnorm.SwitchNorm1d(3))
    snap = {k: v.copy() for k, v in m.state_dict().items()}
    for x, exc, msg in [(np.ones((2, 3, 4)), ValueError, "expected 2D input"),
                        (np.ones((2, 4)), ValueError, "3 channels"),
                        (np.ones((1, 3)), ValueError, "more than 1 sample"),
                        (np.ones((2, 3), np.int32), TypeError, "float32 or float64")]:
        with pytest.raises(exc, match=msg):
            m(x)
    with pytest.raises(ValueError, match="more than 1 channel"):
        fastnorm.SwitchNorm1d(1)(np.ones((4, 1)))
    for k, v in m.state_dict().items():
        assert np.array_equal(v, snap[k]), k
    m.eval()  # one sample is fine in eval mode: the BN statistics are the running ones
    assert m(np.arange(3.0).reshape(1, 3)).shape == (1, 3)


def test_empty_input_returns_empty_and_keeps_state():
    for m, shape in ((fastnorm.SwitchNorm2d(3), (0, 3, 4, 4)),
                     (fastnorm.SwitchNorm2d(3), (2, 3, 0, 4)),
                     (fastnorm.SwitchNorm1d(3), (0, 3))):
        _randomize(m)
        snap = m.running_mean.copy()
        y = m(np.zeros(shape, np.float32))
        assert y.shape == shape and y.dtype == np.float32
        assert np.array_equal(m.running_mean, snap)


def test_list_and_byteswapped_inputs():
    m = fastnorm.SwitchNorm1d(2).eval()
    _randomize(m)
    y = m([[1.0, 2.0], [3.0, 5.0]])
    assert y.dtype == np.float64
    xb = np.array([[1.0, 2.0], [3.0, 5.0]], dtype=">f8")
    np.testing.assert_array_equal(m(xb), y)


# -- parity with an independent torch port of the authors' module ------------------------------

def _torch_switchnorm(torch, spatial_dims, C, eps=1e-5, momentum=0.9, using_moving_average=True,
                      using_bn=True, last_gamma=False):
    """The authors' SwitchNorm{1,2,3}d in torch, written from the paper and the reference's
    semantics: parameters weight/bias (1, C, 1...), mean_weight/var_weight (3, or 2 without BN and
    for 1d), buffers running_mean/running_var (1, C, 1) ((1, C) for 1d)."""
    nn = torch.nn

    class TorchSwitchNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.sd = spatial_dims
            self.bn = using_bn or spatial_dims == 0
            pshape = (1, C) + (1,) * spatial_dims
            self.weight = nn.Parameter(torch.full(pshape, 0.0 if last_gamma else 1.0))
            self.bias = nn.Parameter(torch.zeros(pshape))
            k = 3 if (self.bn and spatial_dims) else 2
            self.mean_weight = nn.Parameter(torch.ones(k))
            self.var_weight = nn.Parameter(torch.ones(k))
            if self.bn:
                rshape = (1, C) if spatial_dims == 0 else (1, C, 1)
                self.register_buffer("running_mean", torch.zeros(rshape))
                self.register_buffer("running_var", torch.zeros(rshape))

        @torch.no_grad()
        def _track(self, mean_bn, var_bn):
            if using_moving_average:
                self.running_mean.copy_(torch.lerp(mean_bn, self.running_mean, momentum))
                self.running_var.copy_(torch.lerp(var_bn, self.running_var, momentum))
            else:
                self.running_mean += mean_bn
                self.running_var += mean_bn.square() + var_bn

        def forward(self, x):
            mw = torch.softmax(self.mean_weight, dim=0)
            vw = torch.softmax(self.var_weight, dim=0)
            if self.sd == 0:  # 1d: LN over C, BN over N, both unbiased
                var_ln, mean_ln = torch.var_mean(x, dim=1, keepdim=True, correction=1)
                if self.training:
                    var_bn, mean_bn = torch.var_mean(x, dim=0, keepdim=True, correction=1)
                    self._track(mean_bn, var_bn)
                else:
                    mean_bn, var_bn = self.running_mean, self.running_var
                mean = mw[0] * mean_ln + mw[1] * mean_bn
                var = vw[0] * var_ln + vw[1] * var_bn
                return (x - mean) / torch.sqrt(var + eps) * self.weight + self.bias
            flat = x.flatten(2)
            var_in, mean_in = torch.var_mean(flat, dim=2, keepdim=True, correction=1)
            second = var_in + mean_in.square()
            mean_ln = mean_in.mean(dim=1, keepdim=True)
            var_ln = second.mean(dim=1, keepdim=True) - mean_ln.square()
            mean = mw[0] * mean_in + mw[1] * mean_ln
            var = vw[0] * var_in + vw[1] * var_ln
            if self.bn:
                if self.training:
                    mean_bn = mean_in.mean(dim=0, keepdim=True)
                    var_bn = second.mean(dim=0, keepdim=True) - mean_bn.square()
                    self._track(mean_bn, var_bn)
                else:
                    mean_bn, var_bn = self.running_mean, self.running_var
                mean = mean + mw[2] * mean_bn
                var = var + vw[2] * var_bn
            y = ((flat - mean) / torch.sqrt(var + eps)).view_as(x)
            return y * self.weight + self.bias

    return TorchSwitchNorm()


PARITY = [
    ("2d", 2, {}), ("2d-nobn", 2, {"using_bn": False}), ("2d-sum", 2, {"using_moving_average": False}),
    ("2d-lastgamma", 2, {"last_gamma": True, "momentum": 0.5, "eps": 1e-3}),
    ("3d", 3, {"momentum": 0.997}), ("3d-nobn", 3, {"using_bn": False}),
    ("1d", 0, {"momentum": 0.997}), ("1d-sum", 0, {"using_moving_average": False}),
]


def _fastnorm_like(spatial_dims, C, kw, dtype):
    cls = {0: fastnorm.SwitchNorm1d, 2: fastnorm.SwitchNorm2d, 3: fastnorm.SwitchNorm3d}[spatial_dims]
    if spatial_dims == 0:
        kw = {k: v for k, v in kw.items() if k not in ("using_bn", "last_gamma")}
    return cls(C, dtype=dtype, **kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,spatial_dims,kw", PARITY, ids=[p[0] for p in PARITY])
def test_parity_with_torch_port_of_authors_module(torch, name, spatial_dims, kw, dtype):
    C = 5
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    tm = _torch_switchnorm(torch, spatial_dims, C, **kw).to(tdt)
    # a "trained" checkpoint: random mixing weights, affine parameters and running statistics
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k, v in tm.state_dict().items():
            v.copy_(torch.randn(v.shape, generator=g, dtype=tdt))
            if k == "running_var":
                v.abs_().add_(0.5)
    buf = io.BytesIO()
    torch.save(tm.state_dict(), buf)
    buf.seek(0)
    m = _fastnorm_like(spatial_dims, C, kw, dtype)
    assert list(m.state_dict()) == list(tm.state_dict())
    assert {k: v.shape for k, v in m.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in tm.state_dict().items()}
    m.load_state_dict(torch.load(buf))
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-4)
    rng = np.random.default_rng(1)
    shape = (6, C) + (4, 3, 2)[:spatial_dims]
    for step, training in enumerate([True, True, True, False, True, False]):
        m.train(training), tm.train(training)
        x = (rng.standard_normal(shape) * (1 + step) + step).astype(dtype)
        y = m(x)
        with torch.no_grad():
            ty = tm(torch.from_numpy(x)).numpy()
        assert y.dtype == dtype
        np.testing.assert_allclose(y, ty, **tol, err_msg=f"{name} step {step} output")
        for k in ("running_mean", "running_var"):
            if k in tm.state_dict():
                # accumulated sums grow with the steps: compare relative to their size
                np.testing.assert_allclose(getattr(m, k), tm.state_dict()[k].numpy(), **tol,
                                           err_msg=f"{name} step {step} {k}")
    # and back: fastnorm's state_dict loads strictly into the torch module
    tm2 = _torch_switchnorm(torch, spatial_dims, C, **kw).to(tdt)
    tm2.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    tm2.eval(), m.eval()
    x = rng.standard_normal(shape).astype(dtype)
    with torch.no_grad():
        np.testing.assert_allclose(m(x), tm2(torch.from_numpy(x)).numpy(), **tol)


def test_parity_torch_default_initialization(torch):
    """Fresh modules agree (last_gamma included) and torch tensors are accepted as input."""
    for spatial_dims, kw in ((2, {}), (2, {"last_gamma": True}), (3, {"using_bn": False}),
                             (0, {})):
        tm = _torch_switchnorm(torch, spatial_dims, 4, **kw)
        m = _fastnorm_like(spatial_dims, 4, kw, np.float32)
        for k, v in tm.state_dict().items():
            np.testing.assert_array_equal(m.state_dict()[k], v.numpy(), err_msg=k)
        x = torch.randn((3, 4) + (3, 2, 2)[:spatial_dims], requires_grad=True)
        with torch.no_grad():
            np.testing.assert_allclose(m(x), tm(x).numpy(), rtol=1e-4, atol=1e-4)


# -- fastnorm.functional.switch_norm ------------------------------------------------------------

FSHAPES = [(3, 5, 7), (4, 6), (2, 6, 3, 4), (1, 4, 2, 3), (2, 3, 1, 4, 2)]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape,using_bn", [(s, bn) for s in FSHAPES for bn in (True, False)
                                            if bn or len(s) > 2], ids=str)  # (N, C): BN always
def test_functional_matches_reference_on_awkward_inputs(shape, using_bn, dtype, training):
    """Any (N, C, *) input (not only the layers' 2D/4D/5D), per-channel arrays of shape (C,),
    running statistics in float64 for a float32 input, updated in place like the reference's."""
    C = shape[1]
    rng = np.random.default_rng(11)
    k = 3 if using_bn and len(shape) > 2 else 2
    mw, vw = rng.standard_normal(k), rng.standard_normal(k).astype(dtype)
    w, b = rng.uniform(0.5, 1.5, C).astype(dtype), rng.standard_normal(C).astype(dtype)
    rm0, rv0 = rng.standard_normal(C), rng.uniform(0.5, 1.5, C)
    for label, x in awkward_inputs(shape, dtype):
        before = x.copy()
        rm, rv = (rm0.copy(), rv0.copy()) if using_bn else (None, None)
        wrm, wrv = (rm0.copy(), rv0.copy()) if using_bn else (None, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # reference on NaN/inf data
            want = R.switch_norm(x, wrm, wrv, w, b, mw, vw, training, 0.7, 1e-5, True, using_bn)
        out = np.full(shape, np.nan, dtype)
        got = F.switch_norm(x, rm, rv, w, b, mw, vw, training, 0.7, 1e-5, True, using_bn, out=out)
        assert got is out
        big = np.abs(want[np.isfinite(want)]).max(initial=0.0)
        assert_matches(got, want, dtype, f"{shape} {label}",
                       max(1.0, big / 10) * _conditioning(x, dtype))
        assert np.array_equal(x, before, equal_nan=True), f"{label}: input modified"
        if using_bn:
            for got_r, want_r, r0 in ((rm, wrm, rm0), (rv, wrv, rv0)):
                if not training:
                    assert np.array_equal(got_r, r0), f"{label}: running stats changed in eval"
                elif np.isfinite(want_r).all():  # NaN/inf data: see the known bug above
                    np.testing.assert_allclose(got_r, want_r, rtol=1e-5, atol=1e-5 * (1 + abs(
                        np.asarray(x, np.float64)).max()), err_msg=label)


def test_layer_is_one_functional_call():
    """SwitchNorm2d(x) is F.switch_norm on the layer's own arrays, bit for bit, running statistics
    included; SwitchNorm1d likewise."""
    rng = np.random.default_rng(12)
    for cls, shape in ((fastnorm.SwitchNorm2d, (4, 3, 5, 5)), (fastnorm.SwitchNorm1d, (6, 3))):
        m = _randomize(cls(3))
        rm, rv = m.running_mean.copy(), m.running_var.copy()
        x = rng.standard_normal(shape).astype(np.float32)
        y = m(x)
        want = F.switch_norm(x, rm, rv, m.weight, m.bias, m.mean_weight, m.var_weight, True,
                             m.momentum, m.eps, m.using_moving_average, m.using_bn)
        assert np.array_equal(y, want)
        assert np.array_equal(m.running_mean, rm) and np.array_equal(m.running_var, rv)


def test_functional_empty_input_and_in_place():
    rm, rv = np.zeros(3), np.ones(3)
    m3 = np.zeros(3)
    x = np.zeros((0, 3, 4), np.float32)
    out = np.empty_like(x)
    assert F.switch_norm(x, rm, rv, None, None, m3, m3, True, out=out) is out
    assert np.array_equal(rm, np.zeros(3)) and np.array_equal(rv, np.ones(3))
    x = np.random.default_rng(13).standard_normal((4, 3, 6))
    want = F.switch_norm(x, rm.copy(), rv.copy(), None, None, m3, m3, True)
    assert F.switch_norm(x, rm, rv, None, None, m3, m3, True, out=x) is x
    assert np.array_equal(x, want)
