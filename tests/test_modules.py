"""Every layer class against hand-derived expectations: statistics and running statistics computed
with plain NumPy / ``fastnorm.reference``, modes, buffers, constructor arguments, repr strings,
``state_dict`` / ``load_state_dict`` semantics (torch 2.13's, read from its sources)."""
from collections import OrderedDict

import numpy as np
import pytest

import fastnorm
from fastnorm import reference as R

BN = [fastnorm.BatchNorm1d, fastnorm.BatchNorm2d, fastnorm.BatchNorm3d]
IN = [fastnorm.InstanceNorm1d, fastnorm.InstanceNorm2d, fastnorm.InstanceNorm3d]
# a batched input shape (N, C=3, *spatial) per class
BN_SHAPES = {fastnorm.BatchNorm1d: [(8, 3), (4, 3, 5)], fastnorm.BatchNorm2d: [(4, 3, 5, 6)],
             fastnorm.BatchNorm3d: [(2, 3, 4, 3, 2)]}
IN_SHAPE = {fastnorm.InstanceNorm1d: (4, 3, 7), fastnorm.InstanceNorm2d: (4, 3, 5, 6),
            fastnorm.InstanceNorm3d: (2, 3, 4, 3, 2)}
BN_CASES = [(cls, shape) for cls, shapes in BN_SHAPES.items() for shape in shapes]
ALL_CLASSES = BN + IN + [fastnorm.LayerNorm, fastnorm.GroupNorm, fastnorm.RMSNorm]


def data(shape, seed=0, dtype=np.float64, scale=2.0, offset=0.5):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + offset).astype(dtype)


def make(cls, **kw):
    """An instance of cls with 3 channels / normalized_shape (3,) (GroupNorm: 3 groups of 2)."""
    if cls is fastnorm.GroupNorm:
        return cls(3, 6, **kw)
    return cls(3, **kw)


def sample_input(cls, dtype=np.float64, seed=0):
    if cls in BN:
        return data(BN_SHAPES[cls][-1], seed, dtype)
    if cls in IN:
        return data(IN_SHAPE[cls], seed, dtype)
    if cls is fastnorm.GroupNorm:
        return data((2, 6, 5), seed, dtype)
    return data((4, 2, 3), seed, dtype)


def red_axes(x):
    """Axes batch norm reduces over for x (N, C, *)."""
    return (0,) + tuple(range(2, x.ndim))


def randomize(m, seed=5):
    """Non-trivial weight/bias (in place), so that the affine transform is exercised."""
    rng = np.random.default_rng(seed)
    if getattr(m, "weight", None) is not None:
        m.weight[...] = rng.uniform(0.5, 2.0, m.weight.shape)
    if getattr(m, "bias", None) is not None:
        m.bias[...] = rng.standard_normal(m.bias.shape)


def close(got, want, dtype=np.float64):
    tol = 1e-10 if np.dtype(dtype) == np.float64 else 5e-5
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------
# BatchNorm statistics

@pytest.mark.parametrize("cls,shape", BN_CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_batchnorm_normalizes_with_biased_variance_and_stores_unbiased(cls, shape):
    m = cls(3, dtype=np.float64)
    randomize(m)
    x = data(shape)
    y = m(x)
    axes = red_axes(x)
    mean, var_b, var_u = x.mean(axes), x.var(axes), x.var(axes, ddof=1)
    assert np.all(var_u - var_b > 1e-3 * var_b)  # the two differ far beyond the tolerance
    bshape = (1, 3) + (1,) * (x.ndim - 2)
    want = ((x - mean.reshape(bshape)) / np.sqrt(var_b.reshape(bshape) + 1e-5)
            * m.weight.reshape(bshape) + m.bias.reshape(bshape))
    close(y, want)
    close(m.running_mean, 0.9 * 0.0 + 0.1 * mean)
    close(m.running_var, 0.9 * 1.0 + 0.1 * var_u)
    assert int(m.num_batches_tracked) == 1


@pytest.mark.parametrize("cls", BN)
def test_batchnorm_exponential_moving_average(cls):
    m = cls(3, momentum=0.3, dtype=np.float64)
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(3):
        x = data(BN_SHAPES[cls][-1], seed=step, scale=1.0 + step, offset=step)
        m(x)
        rm = 0.7 * rm + 0.3 * x.mean(red_axes(x))
        rv = 0.7 * rv + 0.3 * x.var(red_axes(x), ddof=1)
        close(m.running_mean, rm)
        close(m.running_var, rv)
    assert int(m.num_batches_tracked) == 3


@pytest.mark.parametrize("cls", BN)
def test_momentum_none_is_cumulative_average(cls):
    m = cls(3, momentum=None, dtype=np.float64)
    means, variances = [], []
    for step in range(3):
        x = data(BN_SHAPES[cls][-1], seed=10 + step, scale=1.0 + step, offset=3.0 * step)
        m(x)
        means.append(x.mean(red_axes(x)))
        variances.append(x.var(red_axes(x), ddof=1))
    # the initial running_mean=0 / running_var=1 carry no weight after the first batch
    close(m.running_mean, np.mean(means, axis=0))
    close(m.running_var, np.mean(variances, axis=0))
    assert int(m.num_batches_tracked) == 3
    assert m.momentum is None


@pytest.mark.parametrize("cls", BN)
def test_num_batches_tracked_counts_training_calls_only(cls):
    m = cls(3)
    x = sample_input(cls, np.float32)
    assert isinstance(m.num_batches_tracked, np.ndarray)
    assert m.num_batches_tracked.shape == () and m.num_batches_tracked.dtype == np.int64
    for k in range(1, 4):
        m(x)
        assert int(m.num_batches_tracked) == k
    m.eval()
    rm, rv = m.running_mean.copy(), m.running_var.copy()
    m(x)
    m(x)
    assert int(m.num_batches_tracked) == 3
    assert np.array_equal(m.running_mean, rm) and np.array_equal(m.running_var, rv)
    m.train()
    m(x)
    assert int(m.num_batches_tracked) == 4


@pytest.mark.parametrize("cls", IN)
def test_instancenorm_never_counts_batches(cls):
    m = cls(3, track_running_stats=True)
    x = sample_input(cls, np.float32)
    m(x)
    m(x[0])  # unbatched
    assert int(m.num_batches_tracked) == 0
    assert not np.array_equal(m.running_mean, np.zeros(3))  # the stats did move
    assert cls(3).num_batches_tracked is None


@pytest.mark.parametrize("cls,shape", BN_CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_batchnorm_eval_uses_running_stats(cls, shape):
    m = cls(3, dtype=np.float64)
    randomize(m)
    m.running_mean[...] = [0.5, -1.0, 2.0]
    m.running_var[...] = [0.25, 4.0, 1.5]
    assert m.eval() is m and m.training is False
    x = data(shape)
    y = m(x)
    close(y, R.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False))
    bshape = (1, 3) + (1,) * (x.ndim - 2)
    close(y, (x - m.running_mean.reshape(bshape)) / np.sqrt(m.running_var.reshape(bshape) + 1e-5)
          * m.weight.reshape(bshape) + m.bias.reshape(bshape))
    assert list(m.running_mean) == [0.5, -1.0, 2.0] and int(m.num_batches_tracked) == 0


@pytest.mark.parametrize("cls", BN)
def test_track_running_stats_false_uses_batch_stats_in_eval_too(cls):
    m = cls(3, track_running_stats=False, dtype=np.float64)
    randomize(m)
    assert m.running_mean is None and m.running_var is None and m.num_batches_tracked is None
    assert list(m.state_dict()) == ["weight", "bias"]
    x = data(BN_SHAPES[cls][-1], offset=4.0)
    want = R.batch_norm(x, None, None, m.weight, m.bias, True)
    close(m(x), want)
    m.eval()
    close(m(x), want)
    assert m.running_mean is None and m.num_batches_tracked is None


def test_batchnorm_eval_with_both_running_stats_removed_uses_batch_stats():
    # torch: buffers that are None in eval mode mean batch statistics
    m = fastnorm.BatchNorm2d(3, dtype=np.float64).eval()
    m.running_mean = None
    m.running_var = None
    x = data((2, 3, 4, 4))
    close(m(x), R.batch_norm(x, None, None, m.weight, m.bias, True))
    assert int(m.num_batches_tracked) == 0


@pytest.mark.parametrize("shape", [(8, 3), (5, 3, 7)])
def test_batchnorm1d_accepts_2d_and_3d(shape):
    m = fastnorm.BatchNorm1d(3, affine=False, dtype=np.float64)
    x = data(shape)
    y = m(x)
    assert y.shape == shape
    close(y, R.batch_norm(x, None, None, training=True))
    close(y.mean(red_axes(x)), np.zeros(3))


def test_affine_false_and_bias_false():
    x = data((4, 3, 5))
    m = fastnorm.BatchNorm1d(3, affine=False, dtype=np.float64)
    assert m.weight is None and m.bias is None
    close(m(x), R.batch_norm(x, None, None, training=True))
    m = fastnorm.BatchNorm1d(3, bias=False, dtype=np.float64)
    randomize(m)
    assert m.bias is None and m.weight is not None
    close(m(x), R.batch_norm(x, None, None, m.weight, None, training=True))
    assert list(m.state_dict()) == ["weight", "running_mean", "running_var", "num_batches_tracked"]


# ------------------------------------------------------------------------------------------------
# InstanceNorm

@pytest.mark.parametrize("cls", IN)
def test_instancenorm_batched_matches_per_instance_statistics(cls):
    m = cls(3, affine=True, dtype=np.float64)
    randomize(m)
    x = data(IN_SHAPE[cls])
    axes = tuple(range(2, x.ndim))
    mean, var = x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
    bshape = (1, 3) + (1,) * (x.ndim - 2)
    want = (x - mean) / np.sqrt(var + 1e-5) * m.weight.reshape(bshape) + m.bias.reshape(bshape)
    close(m(x), want)
    m.eval()  # no running stats: instance statistics in eval mode too
    close(m(x), want)


@pytest.mark.parametrize("cls", IN)
def test_instancenorm_unbatched_input(cls):
    m = cls(3, affine=True, dtype=np.float64)
    randomize(m)
    x = data(IN_SHAPE[cls])[1]  # (C, *spatial)
    y = m(x)
    assert y.shape == x.shape
    close(y, R.instance_norm(x[None], weight=m.weight, bias=m.bias)[0])


@pytest.mark.parametrize("cls", IN)
def test_instancenorm_running_stats_are_batch_averaged_instance_stats(cls):
    m = cls(3, track_running_stats=True, momentum=0.25, dtype=np.float64)
    x = data(IN_SHAPE[cls], offset=1.5)
    axes = tuple(range(2, x.ndim))
    y = m(x)
    close(y, R.instance_norm(x))  # training: instance statistics
    inst_mean = x.mean(axes).mean(0)
    inst_var_u = x.var(axes, ddof=1).mean(0)
    close(m.running_mean, 0.75 * 0.0 + 0.25 * inst_mean)
    close(m.running_var, 0.75 * 1.0 + 0.25 * inst_var_u)
    # unbatched input updates them too, with the one instance's statistics
    x1 = data(IN_SHAPE[cls][1:], seed=3)
    rm, rv = m.running_mean.copy(), m.running_var.copy()
    m(x1)
    a1 = tuple(range(1, x1.ndim))
    close(m.running_mean, 0.75 * rm + 0.25 * x1.mean(a1))
    close(m.running_var, 0.75 * rv + 0.25 * x1.var(a1, ddof=1))
    # eval: normalized with the running statistics, which stay put
    m.eval()
    rm, rv = m.running_mean.copy(), m.running_var.copy()
    close(m(x), R.batch_norm(x, rm, rv, training=False))
    close(m(x1), R.batch_norm(x1[None], rm, rv, training=False)[0])
    assert np.array_equal(m.running_mean, rm) and np.array_equal(m.running_var, rv)


def test_instancenorm_momentum_none_leaves_running_stats():
    # torch passes momentum 0.0 to F.instance_norm when momentum is None
    m = fastnorm.InstanceNorm1d(3, momentum=None, track_running_stats=True)
    m(data((4, 3, 6), dtype=np.float32))
    assert np.array_equal(m.running_mean, np.zeros(3)) and np.array_equal(m.running_var, np.ones(3))


@pytest.mark.parametrize("cls", IN)
def test_instancenorm_channel_mismatch_raises_with_affine(cls):
    m = cls(4, affine=True)
    x = data(IN_SHAPE[cls], dtype=np.float32)  # 3 channels
    with pytest.raises(ValueError, match=r"expected input's size at dim=1 to match num_features "
                                         r"\(4\), but got: 3\."):
        m(x)
    with pytest.raises(ValueError, match=r"at dim=0 to match num_features \(4\), but got: 3"):
        m(x[0])


@pytest.mark.parametrize("cls", IN)
def test_instancenorm_channel_mismatch_warns_without_affine(cls):
    m = cls(4)
    x = data(IN_SHAPE[cls])  # 3 channels
    with pytest.warns(UserWarning, match=r"input's size at dim=1 does not match num_features"):
        y = m(x)
    close(y, R.instance_norm(x))
    with pytest.warns(UserWarning, match=r"at dim=0 does not match num_features"):
        y = m(x[0])
    close(y, R.instance_norm(x[:1])[0])


# ------------------------------------------------------------------------------------------------
# LayerNorm, GroupNorm, RMSNorm

@pytest.mark.parametrize("ns", [4, np.int64(4), [4], (4,), [3, 4], (3, 4), (2, 3, 4)],
                         ids=repr)
def test_layernorm_normalized_shape_int_list_tuple(ns):
    m = fastnorm.LayerNorm(ns, dtype=np.float64)
    want_ns = (ns,) if np.ndim(ns) == 0 else tuple(ns)
    assert m.normalized_shape == want_ns and type(m.normalized_shape) is tuple
    assert all(type(d) is int for d in m.normalized_shape)
    assert m.weight.shape == want_ns and m.bias.shape == want_ns
    randomize(m)
    x = data((2, 2, 3, 4))
    axes = tuple(range(4 - len(want_ns), 4))
    want = ((x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + 1e-5)
            * m.weight + m.bias)
    close(m(x), want)
    m.eval()  # no mode dependence
    close(m(x), want)


def test_layernorm_without_affine_or_bias():
    x = data((3, 5))
    m = fastnorm.LayerNorm(5, elementwise_affine=False, dtype=np.float64)
    assert m.weight is None and m.bias is None and list(m.state_dict()) == []
    close(m(x), R.layer_norm(x, 5))
    m = fastnorm.LayerNorm(5, bias=False, dtype=np.float64)
    randomize(m)
    assert m.bias is None and list(m.state_dict()) == ["weight"]
    close(m(x), R.layer_norm(x, 5, m.weight))


@pytest.mark.parametrize("shape", [(2, 6), (2, 6, 5), (3, 6, 2, 3)])
def test_groupnorm_per_sample_and_group(shape):
    m = fastnorm.GroupNorm(3, 6, dtype=np.float64)
    randomize(m)
    x = data(shape)
    g = x.reshape(shape[0], 3, -1)
    yg = (g - g.mean(2, keepdims=True)) / np.sqrt(g.var(2, keepdims=True) + 1e-5)
    bshape = (1, 6) + (1,) * (x.ndim - 2)
    want = yg.reshape(shape) * m.weight.reshape(bshape) + m.bias.reshape(bshape)
    close(m(x), want)
    m.eval()
    close(m(x), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmsnorm_default_eps_is_machine_eps_of_the_input(dtype):
    m = fastnorm.RMSNorm((2, 3))
    randomize(m)
    x = data((4, 2, 3), dtype=dtype, scale=1e-4, offset=0.0)  # mean(x^2) ~ 1e-8: eps matters
    eps = np.finfo(dtype).eps
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt((x64 ** 2).mean((1, 2), keepdims=True) + eps) * m.weight
    y = m(x)
    assert y.dtype == dtype
    close(y, want, dtype)
    if dtype == np.float32:  # a different eps would be visible at this scale
        other = x64 / np.sqrt((x64 ** 2).mean((1, 2), keepdims=True) + 1e-5) * m.weight
        assert np.abs(y - other).max() > 1e-2
    m2 = fastnorm.RMSNorm(3, eps=1e-6, elementwise_affine=False)
    close(m2(x), x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-6), dtype)


# ------------------------------------------------------------------------------------------------
# modes, resets, dtype, device

@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_train_eval_return_self_and_reject_non_bool(cls):
    m = make(cls)
    assert m.training is True
    assert m.eval() is m and m.training is False
    assert m.train() is m and m.training is True
    assert m.train(False) is m and m.training is False
    assert m.train(True) is m and m.training is True
    for bad in ["yes", 1, 0, None, 1.0]:
        with pytest.raises(ValueError, match="training mode is expected to be boolean"):
            m.train(bad)
        assert m.training is True


@pytest.mark.parametrize("cls", BN + IN)
def test_reset_running_stats_and_reset_parameters(cls):
    m = make(cls, affine=True, track_running_stats=True)
    x = sample_input(cls, np.float32)
    m(x)
    m(x)
    randomize(m)
    arrays = {k: v for k, v in m.state_dict().items()}
    w = m.weight.copy()
    assert m.reset_running_stats() is None
    assert np.array_equal(m.running_mean, np.zeros(3)) and np.array_equal(m.running_var, np.ones(3))
    assert int(m.num_batches_tracked) == 0
    assert np.array_equal(m.weight, w)  # parameters untouched
    m(x)
    m.reset_parameters()
    assert np.array_equal(m.weight, np.ones(3)) and np.array_equal(m.bias, np.zeros(3))
    assert np.array_equal(m.running_mean, np.zeros(3)) and int(m.num_batches_tracked) == 0
    for k, v in m.state_dict().items():  # in place: the same arrays
        assert v is arrays[k]
    # without running stats, reset_running_stats is a no-op
    m = make(cls, track_running_stats=False)
    m.reset_running_stats()
    assert m.running_mean is None


@pytest.mark.parametrize("cls", [fastnorm.LayerNorm, fastnorm.GroupNorm, fastnorm.RMSNorm])
def test_reset_parameters_of_layer_group_rms(cls):
    m = make(cls)
    randomize(m)
    w = m.weight
    m.reset_parameters()
    assert m.weight is w and np.array_equal(w, np.ones_like(w))
    if cls is not fastnorm.RMSNorm:
        assert np.array_equal(m.bias, np.zeros_like(m.bias))


@pytest.mark.parametrize("cls", ALL_CLASSES)
@pytest.mark.parametrize("dtype,want", [(None, np.float32), (np.float32, np.float32),
                                        (np.float64, np.float64), ("float64", np.float64)])
def test_parameter_dtype(cls, dtype, want):
    m = make(cls, dtype=dtype) if cls not in IN else make(cls, dtype=dtype, affine=True,
                                                          track_running_stats=True)
    sd = m.state_dict()
    assert sd, "every configuration here has state"
    for k, v in sd.items():
        assert v.dtype == (np.int64 if k == "num_batches_tracked" else want), k


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_device_none_or_cpu_only(cls):
    for dev in (None, "cpu"):
        assert make(cls, device=dev).training is True
    for dev in ("cuda", "cuda:0", "mps"):
        with pytest.raises(ValueError, match=r"CPU only.*" + dev):
            make(cls, device=dev)


@pytest.mark.parametrize("cls", ALL_CLASSES)
@pytest.mark.parametrize("mod_dtype,in_dtype", [(np.float64, np.float32), (np.float32, np.float64),
                                                (np.float32, np.float32), (np.float64, np.float64)])
def test_output_dtype_is_input_dtype(cls, mod_dtype, in_dtype):
    kw = dict(affine=True, track_running_stats=True) if cls in IN else {}
    m = make(cls, dtype=mod_dtype, **kw)
    randomize(m)
    twin = make(cls, dtype=np.float64, **kw)  # the same layer in float64, fed float64
    twin.load_state_dict(m.state_dict())
    x = sample_input(cls, in_dtype)
    y = m(x)
    assert y.dtype == in_dtype and y.shape == x.shape
    close(y, twin(x.astype(np.float64)), in_dtype)
    if getattr(m, "running_var", None) is not None:
        close(m.running_var, twin.running_var, mod_dtype if in_dtype == np.float64 else in_dtype)
    for k, v in m.state_dict().items():  # the module's arrays keep their own dtype
        assert v.dtype == (np.int64 if k == "num_batches_tracked" else mod_dtype)
    m.eval()
    assert m(x).dtype == in_dtype


# ------------------------------------------------------------------------------------------------
# repr

REPRS = [
    (lambda: fastnorm.BatchNorm1d(3),
     "BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)"),
    (lambda: fastnorm.BatchNorm2d(6),
     "BatchNorm2d(6, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)"),
    (lambda: fastnorm.BatchNorm3d(2, eps=1e-3, momentum=None, affine=False,
                                  track_running_stats=False),
     "BatchNorm3d(2, eps=0.001, momentum=None, affine=False, bias=False, "
     "track_running_stats=False)"),
    (lambda: fastnorm.BatchNorm2d(4, bias=False, momentum=0.5),
     "BatchNorm2d(4, eps=1e-05, momentum=0.5, affine=True, bias=False, track_running_stats=True)"),
    (lambda: fastnorm.InstanceNorm1d(4),
     "InstanceNorm1d(4, eps=1e-05, momentum=0.1, affine=False, bias=False, "
     "track_running_stats=False)"),
    (lambda: fastnorm.InstanceNorm2d(4, affine=True, track_running_stats=True),
     "InstanceNorm2d(4, eps=1e-05, momentum=0.1, affine=True, bias=True, "
     "track_running_stats=True)"),
    (lambda: fastnorm.InstanceNorm3d(5, eps=0.01, affine=True, bias=False),
     "InstanceNorm3d(5, eps=0.01, momentum=0.1, affine=True, bias=False, "
     "track_running_stats=False)"),
    (lambda: fastnorm.LayerNorm(10),
     "LayerNorm((10,), eps=1e-05, elementwise_affine=True, bias=True)"),
    (lambda: fastnorm.LayerNorm([2, 3], eps=1e-6, elementwise_affine=False),
     "LayerNorm((2, 3), eps=1e-06, elementwise_affine=False, bias=False)"),
    (lambda: fastnorm.LayerNorm((4,), bias=False),
     "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=False)"),
    (lambda: fastnorm.GroupNorm(2, 6), "GroupNorm(2, 6, eps=1e-05, affine=True, bias=True)"),
    (lambda: fastnorm.GroupNorm(3, 6, eps=0.1, affine=False),
     "GroupNorm(3, 6, eps=0.1, affine=False, bias=False)"),
    (lambda: fastnorm.RMSNorm(5), "RMSNorm((5,), eps=None, elementwise_affine=True)"),
    (lambda: fastnorm.RMSNorm([2, 3], eps=1e-6, elementwise_affine=False),
     "RMSNorm((2, 3), eps=1e-06, elementwise_affine=False)"),
]


@pytest.mark.parametrize("factory,want", REPRS, ids=[w.split("(")[0] + str(i)
                                                     for i, (_, w) in enumerate(REPRS)])
def test_repr_is_torch_2_13s(factory, want):
    m = factory()
    assert repr(m) == want
    assert str(m) == want


def _torch_twin(torch, m):
    """The torch module built with the same constructor arguments as fastnorm's m."""
    name = type(m).__name__
    T = getattr(torch.nn, name)
    if name.startswith(("BatchNorm", "InstanceNorm")):
        return T(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                 track_running_stats=m.track_running_stats,
                 bias=(m.bias is not None) or not m.affine)
    if name == "LayerNorm":
        return T(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine,
                 bias=m.bias is not None or not m.elementwise_affine)
    if name == "GroupNorm":
        return T(m.num_groups, m.num_channels, eps=m.eps, affine=m.affine,
                 bias=m.bias is not None or not m.affine)
    return T(list(m.normalized_shape), eps=m.eps, elementwise_affine=m.elementwise_affine)


@pytest.mark.parametrize("factory,want", REPRS, ids=[w.split("(")[0] + str(i)
                                                     for i, (_, w) in enumerate(REPRS)])
def test_repr_matches_torch(torch, factory, want):
    m = factory()
    assert repr(_torch_twin(torch, m)) == want == repr(m)


# ------------------------------------------------------------------------------------------------
# state_dict

SD_CASES = [
    (lambda: fastnorm.BatchNorm2d(4), {"weight": (4,), "bias": (4,), "running_mean": (4,),
                                       "running_var": (4,), "num_batches_tracked": ()}),
    (lambda: fastnorm.BatchNorm1d(4, affine=False),
     {"running_mean": (4,), "running_var": (4,), "num_batches_tracked": ()}),
    (lambda: fastnorm.BatchNorm3d(4, bias=False, track_running_stats=False), {"weight": (4,)}),
    (lambda: fastnorm.InstanceNorm2d(4), {}),
    (lambda: fastnorm.InstanceNorm1d(4, affine=True), {"weight": (4,), "bias": (4,)}),
    (lambda: fastnorm.InstanceNorm3d(4, track_running_stats=True),
     {"running_mean": (4,), "running_var": (4,), "num_batches_tracked": ()}),
    (lambda: fastnorm.LayerNorm((2, 3)), {"weight": (2, 3), "bias": (2, 3)}),
    (lambda: fastnorm.GroupNorm(2, 4), {"weight": (4,), "bias": (4,)}),
    (lambda: fastnorm.GroupNorm(2, 4, affine=False), {}),
    (lambda: fastnorm.RMSNorm([3]), {"weight": (3,)}),
]


@pytest.mark.parametrize("factory,want", SD_CASES, ids=range(len(SD_CASES)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_keys_order_shapes_dtypes(factory, want, dtype):
    m = _rebuild(factory, dtype)
    sd = m.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == list(want)  # parameters first, then buffers, in torch's order
    for k, v in sd.items():
        assert isinstance(v, np.ndarray) and v.shape == want[k], k
        assert v.dtype == (np.int64 if k == "num_batches_tracked" else dtype), k
    # the module's own arrays, as torch's state_dict shares storage
    for k, v in sd.items():
        assert v is getattr(m, k)


def _rebuild(factory, dtype):
    """factory() with dtype=dtype: the factories take no arguments, so patch the default."""
    m = factory()
    cls = type(m)
    if isinstance(m, fastnorm.LayerNorm):
        return cls(m.normalized_shape, elementwise_affine=m.elementwise_affine,
                   bias=m.bias is not None, dtype=dtype)
    if isinstance(m, fastnorm.GroupNorm):
        return cls(m.num_groups, m.num_channels, affine=m.affine, bias=m.bias is not None,
                   dtype=dtype)
    if isinstance(m, fastnorm.RMSNorm):
        return cls(m.normalized_shape, dtype=dtype)
    return cls(m.num_features, affine=m.affine, bias=m.bias is not None or not m.affine,
               track_running_stats=m.track_running_stats, dtype=dtype)


def test_state_dict_prefix_and_destination():
    m = fastnorm.BatchNorm1d(2)
    dest = OrderedDict(first=1)
    out = m.state_dict(destination=dest, prefix="bn.")
    assert out is dest
    assert list(out) == ["first", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                         "bn.num_batches_tracked"]


# ------------------------------------------------------------------------------------------------
# load_state_dict

def trained_bn(seed=0, dtype=np.float32, **kw):
    m = fastnorm.BatchNorm2d(3, dtype=dtype, **kw)
    randomize(m, seed)
    for s in range(2):
        m(data((2, 3, 4, 4), seed=seed + s, dtype=np.float32))
    return m


def snapshot(m):
    return {k: (v.dtype, v.shape, v.tobytes()) for k, v in m.state_dict().items()}


def test_load_state_dict_round_trip_copies_and_casts():
    src = trained_bn(seed=1, dtype=np.float64)
    dst = fastnorm.BatchNorm2d(3)  # float32
    arrays = dict(dst.state_dict())
    res = dst.load_state_dict(src.state_dict())
    assert res == ([], []) and res.missing_keys == [] and res.unexpected_keys == []
    assert repr(res) == "<All keys matched successfully>"
    for k, v in dst.state_dict().items():
        assert v is arrays[k]  # copied into the existing arrays, dtype kept
        assert v.dtype == (np.int64 if k == "num_batches_tracked" else np.float32)
        np.testing.assert_array_equal(v, src.state_dict()[k].astype(v.dtype))
    assert int(dst.num_batches_tracked) == 2
    # a copy, not an alias of the source
    src.running_mean[...] = 99
    assert not np.any(dst.running_mean == 99)


def test_load_state_dict_accepts_lists_and_scalars():
    m = fastnorm.BatchNorm1d(2)
    m.load_state_dict({"weight": [1.5, 2.5], "bias": [0.0, 1.0], "running_mean": [3, 4],
                       "running_var": [5.0, 6.0], "num_batches_tracked": 7})
    assert list(m.weight) == [1.5, 2.5] and list(m.running_mean) == [3, 4]
    assert int(m.num_batches_tracked) == 7 and m.num_batches_tracked.shape == ()
    # torch 0.3 checkpoints stored num_batches_tracked-like scalars with shape (1,)
    m.load_state_dict({**m.state_dict(), "num_batches_tracked": np.array([9])})
    assert int(m.num_batches_tracked) == 9 and m.num_batches_tracked.shape == ()


def test_load_state_dict_missing_keys():
    src = trained_bn(seed=1)
    m = trained_bn(seed=7)
    before = snapshot(m)
    sd = OrderedDict((k, v) for k, v in src.state_dict().items()
                     if k not in ("bias", "running_var"))
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd)
    assert str(info.value) == ('Error(s) in loading state_dict for BatchNorm2d:\n\t'
                               'Missing key(s) in state_dict: "bias", "running_var". ')
    assert snapshot(m) == before  # nothing changed
    res = m.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["bias", "running_var"] and res.unexpected_keys == []
    assert tuple(res) == (["bias", "running_var"], [])
    np.testing.assert_array_equal(m.weight, src.weight)
    np.testing.assert_array_equal(m.running_mean, src.running_mean)
    after = snapshot(m)
    assert after["bias"] == before["bias"] and after["running_var"] == before["running_var"]


def test_load_state_dict_unexpected_keys():
    src = trained_bn(seed=1)
    m = trained_bn(seed=7)
    before = snapshot(m)
    sd = OrderedDict(src.state_dict())
    sd["foo"] = np.zeros(3)
    sd["bar.weight"] = np.ones(1)
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd)
    assert str(info.value) == ('Error(s) in loading state_dict for BatchNorm2d:\n\t'
                               'Unexpected key(s) in state_dict: "foo", "bar.weight". ')
    assert snapshot(m) == before
    res = m.load_state_dict(sd, strict=False)
    assert res == ([], ["foo", "bar.weight"])
    np.testing.assert_array_equal(m.running_var, src.running_var)


def test_load_state_dict_missing_and_unexpected_together():
    m = trained_bn(seed=7)
    before = snapshot(m)
    sd = {k: v for k, v in trained_bn(seed=1).state_dict().items() if k != "weight"}
    sd["extra"] = np.zeros(1)
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd)
    assert str(info.value) == ('Error(s) in loading state_dict for BatchNorm2d:\n\t'
                               'Missing key(s) in state_dict: "weight". \n\t'
                               'Unexpected key(s) in state_dict: "extra". ')
    assert snapshot(m) == before


@pytest.mark.parametrize("strict", [True, False])
def test_load_state_dict_size_mismatch(strict):
    m = trained_bn(seed=7)
    before = snapshot(m)
    sd = dict(trained_bn(seed=1).state_dict())
    sd["running_var"] = np.ones(4, np.float32)
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd, strict=strict)
    msg = str(info.value)
    assert msg.startswith("Error(s) in loading state_dict for BatchNorm2d:\n\t"
                          "size mismatch for running_var: copying a param with shape ")
    assert "(4,)" in msg and "(3,)" in msg and "the shape in current model is" in msg
    assert "weight" not in msg  # only the bad key is reported
    assert snapshot(m) == before  # the good keys were not loaded either


def test_load_state_dict_non_numeric_value():
    m = trained_bn(seed=7)
    before = snapshot(m)
    sd = dict(m.state_dict())
    sd["weight"] = np.array(["a", "b", "c"])
    with pytest.raises(RuntimeError, match='While copying the parameter named "weight"'):
        m.load_state_dict(sd)
    assert snapshot(m) == before
    with pytest.raises(TypeError, match="dict-like"):
        m.load_state_dict([("weight", np.ones(3))])
    assert snapshot(m) == before


def test_load_state_dict_legacy_checkpoint_without_num_batches_tracked():
    # a checkpoint from before num_batches_tracked existed (a plain dict: no version metadata).
    # torch 2.13 (_NormBase._load_from_state_dict) fills the key in with the module's *current*
    # num_batches_tracked, so loading such a checkpoint neither fails nor changes the count.
    src = trained_bn(seed=1)
    legacy = {k: v.copy() for k, v in src.state_dict().items() if k != "num_batches_tracked"}
    m = fastnorm.BatchNorm2d(3)
    assert m.load_state_dict(legacy) == ([], [])  # strict, and still no missing key
    np.testing.assert_array_equal(m.running_var, src.running_var)
    assert int(m.num_batches_tracked) == 0
    m = trained_bn(seed=3)  # counted 2 batches
    res = m.load_state_dict(legacy)
    assert res == ([], [])
    np.testing.assert_array_equal(m.running_mean, src.running_mean)
    assert int(m.num_batches_tracked) == 2, "torch keeps the module's own count"


@pytest.mark.parametrize("strict", [True, False])
def test_instancenorm_rejects_unexpected_running_stats_even_non_strict(strict):
    m = fastnorm.InstanceNorm2d(3, affine=True)
    randomize(m)
    before = snapshot(m)
    sd = {"weight": np.full(3, 2.0), "bias": np.ones(3), "running_mean": np.zeros(3),
          "running_var": np.ones(3)}
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd, strict=strict)
    assert str(info.value) == (
        'Error(s) in loading state_dict for InstanceNorm2d:\n\tUnexpected running stats '
        'buffer(s) "running_mean" and "running_var" for InstanceNorm2d with '
        'track_running_stats=False. If state_dict is a checkpoint saved before 0.4.0, this may '
        'be expected because InstanceNorm2d does not track running stats by default since '
        '0.4.0. Please remove these keys from state_dict. If the running stats are actually '
        'needed, instead set track_running_stats=True in InstanceNorm2d to enable them. See the '
        'documentation of InstanceNorm2d for details.')
    assert snapshot(m) == before
    assert "running_mean" in sd  # the caller's dict is not modified
    # with the running stats removed it loads
    del sd["running_mean"], sd["running_var"]
    assert m.load_state_dict(sd, strict=strict) == ([], [])
    assert list(m.weight) == [2.0, 2.0, 2.0]


def test_instancenorm_tracking_loads_running_stats():
    m = fastnorm.InstanceNorm1d(2, track_running_stats=True)
    res = m.load_state_dict({"running_mean": np.array([1.0, 2.0]),
                             "running_var": np.array([3.0, 4.0]), "num_batches_tracked": 5})
    assert res == ([], [])
    assert list(m.running_var) == [3.0, 4.0] and int(m.num_batches_tracked) == 5


def test_load_state_dict_torch_tensors(torch):
    t = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        t.weight.uniform_(0.5, 2)
        t.bias.normal_()
    t(torch.randn(4, 3, 2, 2))
    assert t.weight.requires_grad
    m = fastnorm.BatchNorm2d(3)
    # the state dict itself (detached tensors) and one holding Parameters that require grad
    for sd in (t.state_dict(), dict(t.named_parameters(), **dict(t.named_buffers()))):
        m.reset_parameters()
        assert m.load_state_dict(sd) == ([], [])
        for k, v in t.state_dict().items():
            np.testing.assert_array_equal(getattr(m, k), v.detach().numpy())
        assert int(m.num_batches_tracked) == 1
    ml = fastnorm.LayerNorm((2, 3), dtype=np.float64)
    ml.load_state_dict({"weight": torch.nn.Parameter(torch.full((2, 3), 3.0)),
                        "bias": torch.ones(2, 3, dtype=torch.float64, requires_grad=True)})
    assert np.all(ml.weight == 3.0) and np.all(ml.bias == 1.0) and ml.weight.dtype == np.float64


def test_load_state_dict_assign_takes_the_incoming_arrays():
    """As torch: assign=True makes the checkpoint's arrays the module's own (their dtype too);
    the default copies into the module's arrays, cast to their dtype."""
    m = fastnorm.BatchNorm1d(2)
    own = m.weight
    new = np.array([4.0, 5.0])
    m.load_state_dict({**m.state_dict(), "weight": new})
    assert m.weight is own and m.weight.dtype == np.float32 and list(m.weight) == [4.0, 5.0]
    m.load_state_dict({**m.state_dict(), "weight": new}, assign=True)
    assert m.weight is new and m.weight.dtype == np.float64
    y = m(np.ones((3, 2), np.float32))  # parameters of another float dtype are cast per call
    assert y.dtype == np.float32 and np.all(y == 0)  # constant input: exactly the bias, 0


# ------------------------------------------------------------------------------------------------
# inputs np.asarray would take

@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_modules_accept_lists(cls):
    m = make(cls, dtype=np.float64)
    x = sample_input(cls)
    y = m(x.tolist())
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    np.testing.assert_array_equal(y, make(cls, dtype=np.float64)(x))
    if cls in IN:  # unbatched, as a nested list
        np.testing.assert_array_equal(m(x[0].tolist()), make(cls, dtype=np.float64)(x[0]))


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_modules_accept_torch_tensors(torch, cls):
    m = make(cls)
    x = sample_input(cls, np.float32)
    want = make(cls)(x)
    for t in (torch.from_numpy(x.copy()), torch.from_numpy(x.copy()).requires_grad_()):
        y = make(cls)(t)
        assert isinstance(y, np.ndarray) and y.dtype == np.float32
        np.testing.assert_array_equal(y, want)
    if cls in IN:  # unbatched tensor input
        y = m(torch.from_numpy(x[0].copy()))
        np.testing.assert_array_equal(y, make(cls)(x[0]))


def test_layers_are_callables_with_signatures():
    """A layer is called like torch's (the arguments go to forward, by position or by name),
    and tools that inspect callables read forward's signature."""
    import inspect
    m = fastnorm.LayerNorm(8)
    assert str(inspect.signature(m)) == "(input)"
    assert "normalized_shape" in inspect.signature(fastnorm.LayerNorm).parameters  # the class
    assert m(np.ones((2, 8))).shape == (2, 8)
    np.testing.assert_array_equal(m(input=np.ones((2, 8))), m.forward(np.ones((2, 8))))

    class Doubled(fastnorm.LayerNorm):  # a subclass's own forward is what its call runs
        def forward(self, input):
            return 2 * super().forward(input)
    x = np.arange(16.0).reshape(2, 8)
    np.testing.assert_array_equal(Doubled(8)(x), 2 * m(x))

    class Logged(fastnorm.LayerNorm):  # a user's __call__ in between runs too
        calls = 0

        def __call__(self, *args, **kwargs):
            Logged.calls += 1
            return super().__call__(*args, **kwargs)

    class Tripled(Logged):
        def forward(self, input):
            return 3 * super().forward(input)
    np.testing.assert_array_equal(Tripled(8)(x), 3 * m(x))
    assert Logged.calls == 1
    # read from the class, __call__ is a function of the layer, as torch's Module.__call__
    np.testing.assert_array_equal(fastnorm.LayerNorm.__call__(m, x), m(x))
    np.testing.assert_array_equal(fastnorm.modules.module.Module.__call__(m, input=x), m(x))
    # forward is looked up at each call: an instance's own, or the class's patched one
    m.forward = lambda input: "instance"
    assert m(x) == "instance"
    del m.forward
    from unittest import mock
    with mock.patch.object(fastnorm.LayerNorm, "forward", lambda self, input: "patched"):
        assert m(x) == "patched" and Doubled(8)(x) == 2 * "patched"
    assert m(x).shape == (2, 8)


def test_layers_unpickle_in_a_fresh_process():
    """A layer unpickled where no layer of its class was built yet still finds its parameters
    and buffers (the class gets their lookups on unpickling)."""
    import pickle
    import subprocess
    import sys
    layers = [fastnorm.LayerNorm(8), fastnorm.BatchNorm2d(3), fastnorm.GroupNorm(2, 4)]
    code = ("import pickle, sys, numpy as np\n"
            "for m in pickle.loads(sys.stdin.buffer.read()):\n"
            "    C = m.weight.size\n"
            "    x = np.ones((2, 8) if hasattr(m, 'normalized_shape') else (2, C, 5, 5))\n"
            "    print(type(m).__name__, m.weight.shape, m.bias.shape, m(x).shape)\n")
    got = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(layers),
                         capture_output=True, timeout=120)
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout.decode().split("\n")[:3] == [
        "LayerNorm (8,) (8,) (2, 8)", "BatchNorm2d (3,) (3,) (2, 3, 5, 5)",
        "GroupNorm (4,) (4,) (2, 4, 5, 5)"]
