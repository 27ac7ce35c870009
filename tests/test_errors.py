"""Every bad argument of every functional op, layer call and layer constructor: a ValueError or
TypeError whose message says what was expected and what arrived, raised before any state changes
(running statistics, out=, the input; a module's weight, bias, running stats and
num_batches_tracked stay bit-for-bit the same)."""
import re
import warnings

import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F

f32 = np.float32
X = (np.random.default_rng(0).standard_normal((4, 3, 5)) * 2 + 0.5).astype(f32)  # (N, C, L)


class S:
    """Fresh state for one functional call: running stats, an out= array, the input."""

    def __init__(self):
        self.rm = np.array([0.5, -0.25, 1.0], f32)
        self.rv = np.array([2.0, 0.5, 1.5], f32)
        self.out = np.full(X.shape, 7.0, f32)
        self.x = X.copy()

    def snapshot(self):
        return [a.tobytes() for a in (self.rm, self.rv, self.out, self.x)]


BAD_DTYPES = [np.int32, np.int64, np.uint8, np.complex64, np.complex128, np.bool_, np.longdouble,
              object]


def _as(dtype):
    return X.astype(dtype)


# (id, call(s), exception, regexes the message must match: what was expected, what arrived)
FUNCTIONAL = [
    # batch_norm ----------------------------------------------------------------------------
    ("bn-1d", lambda s: F.batch_norm(s.x[0, 0], s.rm, s.rv, training=True, out=s.out),
     ValueError, [r"at least 2 dimensions", r"1D input of shape \(5,\)"]),
    ("bn-0d", lambda s: F.batch_norm(np.float32(1.0), s.rm, s.rv, training=True),
     ValueError, [r"at least 2 dimensions", r"0D"]),
    ("bn-weight-size", lambda s: F.batch_norm(s.x, s.rm, s.rv, np.ones(4, f32), training=True,
                                              out=s.out),
     ValueError, [r"expected weight of shape \(3,\)", r"got shape \(4,\)"]),
    ("bn-bias-size", lambda s: F.batch_norm(s.x, s.rm, s.rv, None, np.ones((2, 2), f32),
                                            training=True, out=s.out),
     ValueError, [r"expected bias of shape \(3,\)", r"got shape \(2, 2\)"]),
    ("bn-running-mean-size", lambda s: F.batch_norm(s.x, np.zeros(4, f32), s.rv, training=True,
                                                    out=s.out),
     ValueError, [r"running_mean of shape \(3,\)", r"got shape \(4,\)"]),
    ("bn-running-var-size-eval", lambda s: F.batch_norm(s.x, s.rm, np.ones((1, 3), f32),
                                                        training=False, out=s.out),
     ValueError, [r"running_var of shape \(3,\)", r"got shape \(1, 3\)"]),
    ("bn-running-mean-alone", lambda s: F.batch_norm(s.x, s.rm, None, training=True, out=s.out),
     ValueError, [r"running_mean and running_var must be given together"]),
    ("bn-running-int", lambda s: F.batch_norm(s.x, np.zeros(3, np.int64), s.rv, training=True),
     TypeError, [r"running_mean must have a floating dtype", r"int64"]),
    ("bn-running-list", lambda s: F.batch_norm(s.x, [0.0, 0.0, 0.0], s.rv, training=True),
     TypeError, [r"running_mean must be a numpy.ndarray", r"list"]),
    ("bn-running-readonly", lambda s: F.batch_norm(s.x, s.rm, _ro(s.rv), training=True),
     ValueError, [r"running_var is read-only"]),
    ("bn-one-value-per-channel", lambda s: F.batch_norm(s.x[:1, :, :1], s.rm, s.rv,
                                                        training=True),
     ValueError, [r"Expected more than 1 value per channel when training",
                  r"got input size \(1, 3, 1\)"]),
    ("bn-one-value-per-channel-2d", lambda s: F.batch_norm(s.x[:1, :, 0], s.rm, s.rv,
                                                           training=True),
     ValueError, [r"Expected more than 1 value per channel when training", r"\(1, 3\)"]),
    ("bn-eps-negative", lambda s: F.batch_norm(s.x, s.rm, s.rv, training=True, eps=-1e-5,
                                               out=s.out),
     ValueError, [r"eps must be finite and >= 0", r"-1e-05"]),
    ("bn-eps-negative-eval", lambda s: F.batch_norm(s.x, s.rm, s.rv, eps=-1.0, out=s.out),
     ValueError, [r"eps must be finite and >= 0", r"-1\.0"]),
    ("bn-eps-nan", lambda s: F.batch_norm(s.x, s.rm, s.rv, training=True, eps=float("nan")),
     ValueError, [r"eps must be finite and >= 0", r"nan"]),
    ("bn-eps-inf", lambda s: F.batch_norm(s.x, s.rm, s.rv, training=True, eps=float("inf")),
     ValueError, [r"eps must be finite and >= 0", r"inf"]),
    ("bn-eps-zero-training", lambda s: F.batch_norm(s.x, s.rm, s.rv, training=True, eps=0.0,
                                                    out=s.out),
     ValueError, [r"batch_norm eps must be positive during training, but got 0"]),
    ("bn-eps-str", lambda s: F.batch_norm(s.x, s.rm, s.rv, training=True, eps="1e-5"),
     TypeError, [r"eps must be a real number", r"str"]),
    ("ln-eps-str", lambda s: F.layer_norm(s.x, 5, eps="1e-5", out=s.out),
     TypeError, [r"eps must be a real number", r"str"]),
    ("bn-momentum-str", lambda s: F.batch_norm(s.x, s.rm, s.rv, training=True, momentum="0.5"),
     TypeError, [r"momentum must be a real number", r"str"]),
    ("bn-momentum-none", lambda s: F.batch_norm(s.x, s.rm, s.rv, training=True, momentum=None),
     TypeError, [r"momentum must be a real number", r"None"]),
    ("bn-momentum-nan", lambda s: F.batch_norm(s.x, s.rm, s.rv, training=True,
                                               momentum=float("nan")),
     ValueError, [r"momentum must be finite", r"nan"]),
    ("bn-eval-without-running-stats", lambda s: F.batch_norm(s.x, None, None, training=False,
                                                             out=s.out),
     ValueError, [r"running_mean and running_var are required when training=False"]),
    ("bn-out-shape", lambda s: F.batch_norm(s.x, s.rm, s.rv, training=True, out=s.out[:2]),
     ValueError, [r"out must have the input's shape \(4, 3, 5\)", r"got \(2, 3, 5\)"]),
    ("bn-out-dtype", lambda s: F.batch_norm(s.x, s.rm, s.rv, training=True,
                                            out=np.zeros(X.shape)),
     TypeError, [r"out must have dtype float32", r"got float64"]),
    # instance_norm -------------------------------------------------------------------------
    ("in-1d", lambda s: F.instance_norm(s.x[0, 0], s.rm, s.rv, out=s.out),
     ValueError, [r"at least 2 dimensions", r"1D input of shape \(5,\)"]),
    ("in-weight-size", lambda s: F.instance_norm(s.x, s.rm, s.rv, np.ones(2, f32), out=s.out),
     ValueError, [r"expected weight of shape \(3,\)", r"got shape \(2,\)"]),
    ("in-bias-size", lambda s: F.instance_norm(s.x, s.rm, s.rv, None, np.ones(4, f32)),
     ValueError, [r"expected bias of shape \(3,\)", r"got shape \(4,\)"]),
    ("in-running-mean-size", lambda s: F.instance_norm(s.x, np.zeros(4, f32), s.rv, out=s.out),
     ValueError, [r"running_mean of shape \(3,\)", r"got shape \(4,\)"]),
    ("in-running-var-alone", lambda s: F.instance_norm(s.x, None, s.rv),
     ValueError, [r"must be given together"]),
    ("in-one-spatial-element", lambda s: F.instance_norm(s.x[:, :, :1], s.rm, s.rv),
     ValueError, [r"Expected more than 1 spatial element when training",
                  r"got input size \(4, 3, 1\)"]),
    ("in-no-spatial-axis", lambda s: F.instance_norm(s.x[:, :, 0], s.rm, s.rv),
     ValueError, [r"Expected more than 1 spatial element when training", r"\(4, 3\)"]),
    ("in-no-input-stats-no-running", lambda s: F.instance_norm(s.x, use_input_stats=False,
                                                               out=s.out),
     ValueError, [r"required when use_input_stats=False"]),
    ("in-eps-negative", lambda s: F.instance_norm(s.x, s.rm, s.rv, eps=-0.5, out=s.out),
     ValueError, [r"eps must be finite and >= 0", r"-0\.5"]),
    ("in-eps-inf", lambda s: F.instance_norm(s.x, s.rm, s.rv, eps=float("inf")),
     ValueError, [r"eps must be finite and >= 0", r"inf"]),
    ("in-running-readonly", lambda s: F.instance_norm(s.x, _ro(s.rm), s.rv),
     ValueError, [r"running_mean is read-only"]),
    # layer_norm ----------------------------------------------------------------------------
    ("ln-shape-mismatch", lambda s: F.layer_norm(s.x, (4,), out=s.out),
     ValueError, [r"normalized_shape=\[4\]", r"expected input with shape \[\*, 4\]",
                  r"input of size\s*\[4, 3, 5\]"]),
    ("ln-too-few-axes", lambda s: F.layer_norm(s.x, (2, 4, 3, 5), out=s.out),
     ValueError, [r"normalized_shape=\[2, 4, 3, 5\]", r"\[4, 3, 5\]"]),
    ("ln-weight-size", lambda s: F.layer_norm(s.x, 5, np.ones(4, f32), out=s.out),
     ValueError, [r"expected weight of shape \(5,\)", r"got shape \(4,\)"]),
    ("ln-bias-size", lambda s: F.layer_norm(s.x, (3, 5), None, np.ones(5, f32), out=s.out),
     ValueError, [r"expected bias of shape \(3, 5\)", r"got shape \(5,\)"]),
    ("ln-empty-shape", lambda s: F.layer_norm(s.x, (), out=s.out),
     ValueError, [r"at least 1-dimensional", r"\(\)"]),
    ("ln-negative-size", lambda s: F.layer_norm(s.x, (-5,), out=s.out),
     ValueError, [r"negative", r"-5"]),
    ("ln-float-size", lambda s: F.layer_norm(s.x, (5.0,), out=s.out),
     TypeError, [r"normalized_shape must be an int or a sequence of ints", r"5\.0", r"float"]),
    ("ln-str-shape", lambda s: F.layer_norm(s.x, "5", out=s.out),
     TypeError, [r"normalized_shape must be an int or a sequence of ints", r"str"]),
    ("ln-size-past-int64", lambda s: F.layer_norm(s.x, (3, 2 ** 63), out=s.out),
     ValueError, [r"normalized_shape sizes must be below 2\*\*63", r"9223372036854775808"]),
    ("rms-size-past-int64", lambda s: F.rms_norm(s.x, 2 ** 64, out=s.out),
     ValueError, [r"normalized_shape sizes must be below 2\*\*63"]),
    ("ln-eps-negative", lambda s: F.layer_norm(s.x, 5, eps=-1e-5, out=s.out),
     ValueError, [r"eps must be finite and >= 0", r"-1e-05"]),
    ("ln-eps-nan", lambda s: F.layer_norm(s.x, 5, eps=float("nan"), out=s.out),
     ValueError, [r"eps must be finite and >= 0", r"nan"]),
    # group_norm ----------------------------------------------------------------------------
    ("gn-1d", lambda s: F.group_norm(s.x[0, 0], 1, out=s.out),
     ValueError, [r"at least 2 dimensions", r"1D input of shape \(5,\)"]),
    ("gn-not-divisible", lambda s: F.group_norm(s.x, 2, out=s.out),
     ValueError, [r"divisible by num_groups", r"\(4, 3, 5\)", r"num_groups=2"]),
    ("gn-zero-groups", lambda s: F.group_norm(s.x, 0, out=s.out),
     ValueError, [r"num_groups must be positive", r"got 0"]),
    ("gn-negative-groups", lambda s: F.group_norm(s.x, -3, out=s.out),
     ValueError, [r"num_groups must be positive", r"got -3"]),
    ("gn-float-groups", lambda s: F.group_norm(s.x, 3.0, out=s.out),
     TypeError, [r"num_groups must be an int", r"float"]),
    ("gn-bool-groups", lambda s: F.group_norm(s.x, True, out=s.out),
     TypeError, [r"num_groups must be an int", r"bool"]),
    ("gn-weight-size", lambda s: F.group_norm(s.x, 3, np.ones(6, f32), out=s.out),
     ValueError, [r"expected weight of shape \(3,\)", r"got shape \(6,\)"]),
    ("gn-bias-size", lambda s: F.group_norm(s.x, 1, None, np.ones(1, f32), out=s.out),
     ValueError, [r"expected bias of shape \(3,\)", r"got shape \(1,\)"]),
    ("gn-one-value-per-group", lambda s: F.group_norm(s.x[:1, :, :1], 3),
     ValueError, [r"Expected more than 1 value per channel when training", r"\[?\(?1, 3, 1"]),
    ("gn-one-value-per-group-2d", lambda s: F.group_norm(s.x[:1, :, 0], 3),
     ValueError, [r"Expected more than 1 value per channel when training"]),
    ("gn-eps-negative", lambda s: F.group_norm(s.x, 3, eps=-2.0, out=s.out),
     ValueError, [r"eps must be finite and >= 0", r"-2\.0"]),
    # rms_norm ------------------------------------------------------------------------------
    ("rms-shape-mismatch", lambda s: F.rms_norm(s.x, (3,), out=s.out),
     ValueError, [r"normalized_shape=\[3\]", r"\[4, 3, 5\]"]),
    ("rms-weight-size", lambda s: F.rms_norm(s.x, (3, 5), np.ones((5, 3), f32), out=s.out),
     ValueError, [r"expected weight of shape \(3, 5\)", r"got shape \(5, 3\)"]),
    ("rms-eps-negative", lambda s: F.rms_norm(s.x, 5, eps=-1e-6, out=s.out),
     ValueError, [r"eps must be finite and >= 0", r"-1e-06"]),
    ("rms-eps-inf", lambda s: F.rms_norm(s.x, 5, eps=float("inf"), out=s.out),
     ValueError, [r"eps must be finite and >= 0", r"inf"]),
    ("rms-negative-size", lambda s: F.rms_norm(s.x, [5, -1], out=s.out),
     ValueError, [r"negative", r"-1"]),
    # switch_norm (mixing logits: 3 with BN, 2 without and for (N, C) input) ------------------
    ("sn-1d", lambda s: F.switch_norm(s.x[0, 0], s.rm, s.rv, None, None, M2, M2, True),
     ValueError, [r"^switch_norm: expected input of at least 2 dimensions", r"1D input"]),
    ("sn-mean-weight-size", lambda s: F.switch_norm(s.x, s.rm, s.rv, None, None, M2, M3, True,
                                                    out=s.out),
     ValueError, [r"expected mean_weight of shape \(3,\) \(IN, LN, BN\)", r"got shape \(2,\)"]),
    ("sn-var-weight-size-nobn", lambda s: F.switch_norm(s.x, None, None, None, None, M2, M3,
                                                        using_bn=False, out=s.out),
     ValueError, [r"expected var_weight of shape \(2,\) \(IN, LN: using_bn=False\)",
                  r"got shape \(3,\)"]),
    ("sn-2d-mix-size", lambda s: F.switch_norm(s.x[:, :, 0], s.rm, s.rv, None, None, M3, M3,
                                               True),
     ValueError, [r"expected mean_weight of shape \(2,\) \(LN, BN: input \(N, C\)\)"]),
    ("sn-mix-complex", lambda s: F.switch_norm(s.x, s.rm, s.rv, None, None,
                                               np.ones(3, complex), M3, True),
     TypeError, [r"mean_weight must be a real-valued array, got dtype complex128"]),
    ("sn-2d-nobn", lambda s: F.switch_norm(s.x[:, :, 0], None, None, None, None, M2, M2,
                                           using_bn=False),
     ValueError, [r"input \(N, C\) mixes LN and BN statistics: using_bn must be True"]),
    ("sn-running-missing", lambda s: F.switch_norm(s.x, s.rm, None, None, None, M3, M3, True,
                                                   out=s.out),
     ValueError, [r"running_mean and running_var are required with using_bn=True",
                  r"got an array and None"]),
    ("sn-running-given-nobn", lambda s: F.switch_norm(s.x, s.rm, s.rv, None, None, M2, M2,
                                                      using_bn=False, out=s.out),
     ValueError, [r"running_mean and running_var must be None with using_bn=False"]),
    ("sn-running-size", lambda s: F.switch_norm(s.x, np.zeros(4, f32), s.rv, None, None, M3, M3,
                                                True, out=s.out),
     ValueError, [r"expected running_mean with 3 elements \(one per channel\)",
                  r"got shape \(4,\)"]),
    ("sn-running-readonly", lambda s: F.switch_norm(s.x, s.rm, _ro(s.rv), None, None, M3, M3,
                                                    True, out=s.out),
     ValueError, [r"running_var is read-only but must be updated in place"]),
    ("sn-running-list", lambda s: F.switch_norm(s.x, s.rm.tolist(), s.rv, None, None, M3, M3,
                                                True, out=s.out),
     TypeError, [r"running_mean must be a numpy.ndarray \(it is updated in place\)",
                 r"got list"]),
    ("sn-running-int", lambda s: F.switch_norm(s.x, np.zeros(3, np.int64), s.rv, None, None,
                                               M3, M3),
     TypeError, [r"running_mean must have a floating dtype", r"int64"]),
    ("sn-weight-size", lambda s: F.switch_norm(s.x, s.rm, s.rv, np.ones((1, 4, 1), f32), None,
                                               M3, M3, True, out=s.out),
     ValueError, [r"expected weight with 3 elements", r"got shape \(1, 4, 1\)"]),
    ("sn-momentum-nan", lambda s: F.switch_norm(s.x, s.rm, s.rv, None, None, M3, M3, True,
                                                float("nan"), out=s.out),
     ValueError, [r"switch_norm: momentum must be finite", r"nan"]),
    ("sn-eps-negative", lambda s: F.switch_norm(s.x, s.rm, s.rv, None, None, M3, M3, True,
                                                eps=-1.0, out=s.out),
     ValueError, [r"switch_norm: eps must be finite and >= 0", r"-1\.0"]),
    ("sn-one-spatial", lambda s: F.switch_norm(s.x[:, :, :1], s.rm, s.rv, None, None, M3, M3,
                                               True),
     ValueError, [r"more than 1 spatial element per channel", r"\(4, 3, 1\)"]),
    ("sn-2d-one-channel", lambda s: F.switch_norm(s.x[:, :1, 0], s.rm[:1], s.rv[:1], None,
                                                  None, M2, M2, True),
     ValueError, [r"more than 1 channel", r"\(4, 1\)"]),
    ("sn-2d-one-sample", lambda s: F.switch_norm(s.x[:1, :, 0], s.rm, s.rv, None, None, M2, M2,
                                                 True),
     ValueError, [r"more than 1 sample when training", r"\(1, 3\)"]),
    ("sn-out-shape", lambda s: F.switch_norm(s.x, s.rm, s.rv, None, None, M3, M3, True,
                                             out=s.out[:2]),
     ValueError, [r"out must have the input's shape \(4, 3, 5\)", r"\(2, 3, 5\)"]),
    ("sn-out-is-running", lambda s: F.switch_norm(s.x, s.out[0, :, 0], s.rv, None, None, M3,
                                                  M3, True, out=s.out),
     ValueError, [r"running_mean and running_var are updated in place and must not share "
                  r"memory with out"]),
]


M2, M3 = np.array([0.5, -0.5], f32), np.array([0.25, 0.0, -0.25], f32)  # mixing logits


def _ro(a):
    a.flags.writeable = False
    return a


def _dtype_cases():
    """Non-float input to every op: TypeError naming float32/float64 and the dtype that came."""
    ops = {
        "batch_norm": lambda x, s: F.batch_norm(x, s.rm, s.rv, training=True),
        "batch_norm-eval": lambda x, s: F.batch_norm(x, s.rm, s.rv),
        "instance_norm": lambda x, s: F.instance_norm(x, s.rm, s.rv),
        "layer_norm": lambda x, s: F.layer_norm(x, 5),
        "group_norm": lambda x, s: F.group_norm(x, 3),
        "switch_norm": lambda x, s: F.switch_norm(x, s.rm, s.rv, None, None, M3, M3, True),
        "rms_norm": lambda x, s: F.rms_norm(x, 5),
    }
    for name, op in ops.items():
        for dt in BAD_DTYPES:
            dname = np.dtype(dt).name
            yield (f"{name}-{dname}", (lambda op, dt: lambda s: op(_as(dt), s))(op, dt), TypeError,
                   [r"float32 or float64", rf"got dtype {dname}"])


ALL_FUNCTIONAL = FUNCTIONAL + list(_dtype_cases())


@pytest.mark.parametrize("case", ALL_FUNCTIONAL, ids=[c[0] for c in ALL_FUNCTIONAL])
def test_functional_errors(case):
    _, call, exc, patterns = case
    s = S()
    before = s.snapshot()
    with pytest.raises(exc) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a clean error, not a warning on the way
            call(s)
    assert type(info.value) is exc  # not a subclass in disguise (e.g. a numpy AxisError)
    msg = str(info.value)
    for p in patterns:
        assert re.search(p, msg), f"{p!r} not in {msg!r}"
    s.rm.flags.writeable = True
    s.rv.flags.writeable = True
    assert s.snapshot() == before, "state changed before the error"


def test_functional_non_real_weight_or_bias():
    # weight that np.asarray cannot make real-valued
    with pytest.raises(TypeError, match=r"weight must be a real-valued array, got dtype complex"):
        F.layer_norm(X, 5, np.ones(5, np.complex64))
    with pytest.raises(TypeError, match=r"bias must be a real-valued array, got dtype <U"):
        F.group_norm(X, 3, None, np.array(["a", "b", "c"]))


# ------------------------------------------------------------------------------------------------
# modules: errors and untouched state

def state(m):
    """Everything a rejected call must leave alone, bit for bit (None buffers included)."""
    out = {"training": m.training}
    for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        v = getattr(m, k, None)
        out[k] = None if v is None else (v.dtype, v.shape, v.tobytes())
    return out


def _data(shape, dtype=f32, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 2 + 0.5).astype(dtype)


def prepared(factory, good_shape):
    """The module from factory with random parameters, after two training steps."""
    m = factory()
    rng = np.random.default_rng(3)
    for k in ("weight", "bias"):
        if getattr(m, k, None) is not None:
            getattr(m, k)[...] = rng.uniform(0.5, 2.0, getattr(m, k).shape)
    if good_shape is not None:
        m(_data(good_shape, seed=1))
        m(_data(good_shape, seed=2))
    return m


def _set(**attrs):
    def prep(m):
        for k, v in attrs.items():
            setattr(m, k, v)
    return prep


BN1 = lambda **kw: fastnorm.BatchNorm1d(3, **kw)  # noqa: E731
BN2 = lambda **kw: fastnorm.BatchNorm2d(3, **kw)  # noqa: E731
BN3 = lambda **kw: fastnorm.BatchNorm3d(3, **kw)  # noqa: E731
DT_MSG = [r"float32 or float64", r"got dtype"]

# (id, factory, good input shape, prep(m) or None, bad input, exception, message regexes)
MODULE_CASES = [
    ("bn1-1d", BN1, (4, 3), None, _data((3,)), ValueError,
     [r"expected 2D or 3D input \(got 1D input\)"]),
    ("bn1-4d", BN1, (4, 3, 5), None, _data((2, 3, 2, 2)), ValueError,
     [r"expected 2D or 3D input \(got 4D input\)"]),
    ("bn1-channels", BN1, (4, 3), None, _data((4, 4)), ValueError,
     [r"^BatchNorm1d\(3\): expected input with 3 channels \(dim 1\), "
      r"got input of shape \(4, 4\)$"]),
    ("bn1-channels-noaffine", lambda: BN1(affine=False), (4, 3), None, _data((4, 5, 2)),
     ValueError, [r"^BatchNorm1d\(3\): expected input with 3 channels \(dim 1\), "
                  r"got input of shape \(4, 5, 2\)$"]),
    ("bn1-channels-noaffine-eval", lambda: BN1(affine=False), (4, 3), lambda m: m.eval(),
     _data((4, 5)), ValueError, [r"^BatchNorm1d\(3\): expected input with 3 channels"]),
    ("bn1-one-value", BN1, (4, 3), None, _data((1, 3)), ValueError,
     [r"Expected more than 1 value per channel when training", r"\(1, 3\)"]),
    ("bn1-one-value-3d", lambda: BN1(momentum=None), (4, 3, 2), None, _data((1, 3, 1)),
     ValueError, [r"Expected more than 1 value per channel when training", r"\(1, 3, 1\)"]),
    ("bn1-notrack-one-value", lambda: BN1(track_running_stats=False), (4, 3), None,
     _data((1, 3)), ValueError, [r"Expected more than 1 value per channel when training"]),
    ("bn1-eps-zero-training", lambda: BN1(eps=0), None, None, _data((4, 3)), ValueError,
     [r"eps must be positive during training, but got 0"]),
    ("bn1-eps-set-negative", BN1, (4, 3), _set(eps=-1.0), _data((4, 3)), ValueError,
     [r"eps must be finite and >= 0", r"-1\.0"]),
    ("bn1-momentum-set-nan", BN1, (4, 3), _set(momentum=float("nan")), _data((4, 3)),
     ValueError, [r"momentum must be finite", r"nan"]),
    ("bn1-eval-running-var-missing", BN1, (4, 3), lambda m: (m.eval(), _set(running_var=None)(m)),
     _data((4, 3)), ValueError, [r"running_mean and running_var must be given together"]),
    ("bn1-train-running-mean-missing", BN1, (4, 3), _set(running_mean=None),
     _data((4, 3)), ValueError, [r"running_mean and running_var must be given together"]),
    ("bn2-3d", BN2, (2, 3, 2, 2), None, _data((2, 3, 4)), ValueError,
     [r"expected 4D input \(got 3D input\)"]),
    ("bn2-5d", BN2, (2, 3, 2, 2), None, _data((2, 3, 2, 2, 2)), ValueError,
     [r"expected 4D input \(got 5D input\)"]),
    ("bn2-channels", BN2, (2, 3, 2, 2), None, _data((2, 4, 2, 2)), ValueError,
     [r"^BatchNorm2d\(3\): expected input with 3 channels \(dim 1\), "
      r"got input of shape \(2, 4, 2, 2\)$"]),
    ("bn2-channels-eval", BN2, (2, 3, 2, 2), lambda m: m.eval(), _data((2, 2, 2, 2)), ValueError,
     [r"^BatchNorm2d\(3\): expected input with 3 channels \(dim 1\), "
      r"got input of shape \(2, 2, 2, 2\)$"]),
    ("bn2-channels-bias-only", lambda: BN2(affine=False, track_running_stats=False),
     (2, 3, 2, 2), _set(bias=np.zeros(3, f32)), _data((2, 4, 2, 2)), ValueError,
     [r"^BatchNorm2d\(3\): expected input with 3 channels \(dim 1\)"]),
    ("bn2-one-value", lambda: BN2(momentum=None), (2, 3, 2, 2), None, _data((1, 3, 1, 1)),
     ValueError, [r"Expected more than 1 value per channel when training", r"\(1, 3, 1, 1\)"]),
    ("bn3-4d", BN3, (2, 3, 2, 2, 2), None, _data((2, 3, 2, 2)), ValueError,
     [r"expected 5D input \(got 4D input\)"]),
    ("bn3-channels", BN3, (2, 3, 2, 2, 2), None, _data((2, 6, 2, 2, 2)), ValueError,
     [r"^BatchNorm3d\(3\): expected input with 3 channels \(dim 1\), "
      r"got input of shape \(2, 6, 2, 2, 2\)$"]),
    ("bn3-one-value", BN3, (2, 3, 2, 2, 2), None, _data((1, 3, 1, 1, 1)), ValueError,
     [r"Expected more than 1 value per channel when training"]),
    # instance norm
    ("in1-1d", lambda: fastnorm.InstanceNorm1d(3, affine=True, track_running_stats=True),
     (2, 3, 5), None, _data((5,)), ValueError, [r"expected 2D or 3D input \(got 1D input\)"]),
    ("in1-4d", lambda: fastnorm.InstanceNorm1d(3, affine=True, track_running_stats=True),
     (2, 3, 5), None, _data((2, 3, 5, 5)), ValueError, [r"expected 2D or 3D input \(got 4D"]),
    ("in1-channels-affine", lambda: fastnorm.InstanceNorm1d(3, affine=True,
                                                            track_running_stats=True),
     (2, 3, 5), None, _data((2, 4, 5)), ValueError,
     [r"^InstanceNorm1d\(3\): expected input's size at dim=1 to match num_features \(3\), "
      r"but got: 4\. \(input of shape \(2, 4, 5\)\)$"]),
    ("in1-channels-affine-unbatched", lambda: fastnorm.InstanceNorm1d(3, affine=True),
     (2, 3, 5), None, _data((2, 5)), ValueError,
     [r"^InstanceNorm1d\(3\): expected input's size at dim=0 to match num_features \(3\), "
      r"but got: 2\. \(input of shape \(2, 5\)\)$"]),
    ("in1-one-spatial", lambda: fastnorm.InstanceNorm1d(3, affine=True, track_running_stats=True),
     (2, 3, 5), None, _data((2, 3, 1)), ValueError,
     [r"Expected more than 1 spatial element when training", r"\(2, 3, 1\)"]),
    ("in1-one-spatial-unbatched", lambda: fastnorm.InstanceNorm1d(3, track_running_stats=True),
     (2, 3, 5), None, _data((3, 1)), ValueError,
     [r"Expected more than 1 spatial element when training", r"\(1, 3, 1\)"]),
    ("in1-eval-running-missing", lambda: fastnorm.InstanceNorm1d(3, track_running_stats=True),
     (2, 3, 5), lambda m: (m.eval(), _set(running_mean=None, running_var=None)(m)),
     _data((2, 3, 5)), ValueError, [r"running_mean and running_var are required"]),
    ("in2-2d", lambda: fastnorm.InstanceNorm2d(3, affine=True), (2, 3, 2, 2), None,
     _data((3, 4)), ValueError, [r"expected 3D or 4D input \(got 2D input\)"]),
    ("in2-one-spatial", lambda: fastnorm.InstanceNorm2d(3, affine=True, track_running_stats=True),
     (2, 3, 2, 2), None, _data((2, 3, 1, 1)), ValueError,
     [r"Expected more than 1 spatial element when training"]),
    ("in3-6d", lambda: fastnorm.InstanceNorm3d(3, affine=True, track_running_stats=True),
     (2, 3, 2, 2, 2), None, _data((1, 2, 3, 2, 2, 2)), ValueError,
     [r"expected 4D or 5D input \(got 6D input\)"]),
    ("in3-channels-affine", lambda: fastnorm.InstanceNorm3d(3, affine=True), (2, 3, 2, 2, 2),
     None, _data((2, 5, 2, 2, 2)), ValueError,
     [r"^InstanceNorm3d\(3\): expected input's size at dim=1 to match num_features \(3\), "
      r"but got: 5"]),
    ("in2-channels-tracking", lambda: fastnorm.InstanceNorm2d(3, track_running_stats=True),
     (2, 3, 2, 2), lambda m: m.eval(), _data((2, 4, 2, 2)), ValueError,
     [r"^InstanceNorm2d\(3\): expected input's size at dim=1 to match num_features \(3\), "
      r"but got: 4\. .*size of running_mean and running_var"]),
    # layer / group / rms
    ("ln-shape", lambda: fastnorm.LayerNorm((4, 5)), (2, 4, 5), None, _data((2, 4, 6)),
     ValueError, [r"^LayerNorm\(\(4, 5\)\): given normalized_shape=\[4, 5\], expected input "
                  r"with shape \[\*, 4, 5\], but got input of size \[2, 4, 6\]$"]),
    ("ln-too-few-axes", lambda: fastnorm.LayerNorm((4, 5)), (2, 4, 5), None, _data((5,)),
     ValueError, [r"^LayerNorm\(\(4, 5\)\): given normalized_shape=\[4, 5\]", r"\[5\]$"]),
    ("ln-noaffine-shape", lambda: fastnorm.LayerNorm(5, elementwise_affine=False), (2, 5), None,
     _data((2, 4)), ValueError, [r"^LayerNorm\(\(5,\)\): given normalized_shape=\[5\]",
                                 r"\[2, 4\]$"]),
    ("ln-eps-set-nan", lambda: fastnorm.LayerNorm(5), (2, 5), _set(eps=float("nan")),
     _data((2, 5)), ValueError, [r"eps must be finite and >= 0", r"nan"]),
    # without affine, as in torch, GroupNorm takes any channel count that num_groups divides
    ("gn-not-divisible", lambda: fastnorm.GroupNorm(3, 6, affine=False), (2, 6, 4), None,
     _data((2, 4, 4)), ValueError, [r"divisible by num_groups", r"\(2, 4, 4\)", r"num_groups=3"]),
    ("gn-channels-not-divisible", lambda: fastnorm.GroupNorm(3, 6), (2, 6, 4), None,
     _data((2, 4, 4)), ValueError,
     [r"^GroupNorm\(3, 6\): expected input with 6 channels \(dim 1\), "
      r"got input of shape \(2, 4, 4\)$"]),
    ("gn-channels", lambda: fastnorm.GroupNorm(3, 6), (2, 6, 4), None, _data((2, 9, 4)),
     ValueError, [r"^GroupNorm\(3, 6\): expected input with 6 channels \(dim 1\), "
                  r"got input of shape \(2, 9, 4\)$"]),
    ("gn-1d", lambda: fastnorm.GroupNorm(3, 6), (2, 6, 4), None, _data((6,)),
     ValueError, [r"^GroupNorm\(3, 6\): expected input of at least 2 dimensions",
                  r"1D input of shape \(6,\)"]),
    ("gn-one-value-per-group", lambda: fastnorm.GroupNorm(6, 6), (2, 6), None, _data((1, 6)),
     ValueError, [r"Expected more than 1 value per channel when training"]),
    ("gn-one-value-per-group-eval", lambda: fastnorm.GroupNorm(6, 6), (2, 6),
     lambda m: m.eval(), _data((1, 6, 1)), ValueError,
     [r"Expected more than 1 value per channel when training"]),
    ("rms-shape", lambda: fastnorm.RMSNorm(5), (2, 5), None, _data((2, 4)),
     ValueError, [r"^RMSNorm\(\(5,\)\): given normalized_shape=\[5\], expected input with "
                  r"shape \[\*, 5\], but got input of size \[2, 4\]$"]),
    # switchable normalization
    ("sn2-channels", lambda: fastnorm.SwitchNorm2d(3), (2, 3, 2, 2), None, _data((2, 4, 2, 2)),
     ValueError, [r"^SwitchNorm2d\(3\): expected input with 3 channels \(dim 1\), "
                  r"got input of shape \(2, 4, 2, 2\)$"]),
    ("sn3-channels-nobn-eval", lambda: fastnorm.SwitchNorm3d(3, using_bn=False),
     (2, 3, 2, 2, 2), lambda m: m.eval(), _data((2, 2, 2, 2, 2)), ValueError,
     [r"^SwitchNorm3d\(3\): expected input with 3 channels \(dim 1\)"]),
    ("sn1-channels", lambda: fastnorm.SwitchNorm1d(3), (4, 3), None, _data((4, 5)),
     ValueError, [r"^SwitchNorm1d\(3\): expected input with 3 channels \(dim 1\), "
                  r"got input of shape \(4, 5\)$"]),
    ("sn2-3d", lambda: fastnorm.SwitchNorm2d(3), (2, 3, 2, 2), None, _data((2, 3, 4)),
     ValueError, [r"^SwitchNorm2d: expected 4D input \(got 3D input\)$"]),
]


def _module_dtype_cases():
    mods = [("bn1", BN1, (4, 3)), ("bn2-momentum-none", lambda: BN2(momentum=None), (2, 3, 2, 2)),
            ("in1-track", lambda: fastnorm.InstanceNorm1d(3, affine=True,
                                                          track_running_stats=True), (2, 3, 5)),
            ("ln", lambda: fastnorm.LayerNorm(5), (2, 5)),
            ("gn", lambda: fastnorm.GroupNorm(3, 6), (2, 6, 4)),
            ("rms", lambda: fastnorm.RMSNorm(5), (2, 5))]
    for name, factory, shape in mods:
        for dt in BAD_DTYPES:
            bad = _data(shape).astype(dt)
            yield (f"{name}-{np.dtype(dt).name}", factory, shape, None, bad, TypeError,
                   [r"float32 or float64", rf"got dtype {np.dtype(dt).name}"])


ALL_MODULE = MODULE_CASES + list(_module_dtype_cases())


@pytest.mark.parametrize("case", ALL_MODULE, ids=[c[0] for c in ALL_MODULE])
def test_module_errors_leave_state_untouched(case):
    _, factory, good_shape, prep, bad, exc, patterns = case
    m = prepared(factory, good_shape)
    if prep is not None:
        prep(m)
    before = state(m)
    bad_before = bad.tobytes() if bad.dtype != object else None
    with pytest.raises(exc) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # InstanceNorm's mismatch warning
            m(bad)
    msg = str(info.value)
    for p in patterns:
        assert re.search(p, msg), f"{p!r} not in {msg!r}"
    assert state(m) == before, "module state changed by a rejected call"
    if bad_before is not None:
        assert bad.tobytes() == bad_before


def test_instancenorm_tracking_channel_mismatch_warns_then_raises():
    m = prepared(lambda: fastnorm.InstanceNorm1d(3, track_running_stats=True), (2, 3, 5))
    before = state(m)
    with pytest.warns(UserWarning, match=r"does not match num_features"):
        with pytest.raises(ValueError, match=r"^InstanceNorm1d\(3\): expected input's size at "
                                             r"dim=1 to match num_features \(3\), but got: 4\. "
                                             r"\(input of shape \(2, 4, 5\)\) \(num_features "
                                             r"is the size of running_mean and running_var\)$"):
            m(_data((2, 4, 5)))
    assert state(m) == before


def test_batchnorm_eps_zero_is_fine_in_eval():
    # torch checks eps > 0 only in training
    m = fastnorm.BatchNorm1d(3, eps=0.0).eval()
    x = _data((4, 3))
    np.testing.assert_array_equal(m(x), x)  # running stats 0 / 1, weight 1, bias 0
    assert int(m.num_batches_tracked) == 0


# ------------------------------------------------------------------------------------------------
# constructors

CTOR = [
    ("bn-negative", lambda: fastnorm.BatchNorm1d(-1), ValueError,
     [r"num_features must be >= 0", r"-1"]),
    ("bn2-negative", lambda: fastnorm.BatchNorm2d(-4), ValueError, [r"num_features", r"-4"]),
    ("bn3-float", lambda: fastnorm.BatchNorm3d(3.0), TypeError,
     [r"num_features must be an int", r"float"]),
    ("bn-bool", lambda: fastnorm.BatchNorm2d(True), TypeError, [r"must be an int", r"bool"]),
    ("in-negative", lambda: fastnorm.InstanceNorm2d(-3), ValueError, [r"num_features", r"-3"]),
    ("in-str", lambda: fastnorm.InstanceNorm1d("3"), TypeError, [r"must be an int", r"str"]),
    ("ln-negative", lambda: fastnorm.LayerNorm(-1), ValueError, [r"normalized_shape", r"-1"]),
    ("ln-negative-tuple", lambda: fastnorm.LayerNorm((3, -2)), ValueError,
     [r"normalized_shape", r"-2"]),
    ("ln-float", lambda: fastnorm.LayerNorm(3.5), TypeError,
     [r"normalized_shape must be an int or a sequence of ints", r"float"]),
    ("ln-float-in-list", lambda: fastnorm.LayerNorm([3, 2.0]), TypeError,
     [r"normalized_shape must be an int", r"float"]),
    ("rms-negative", lambda: fastnorm.RMSNorm(-3), ValueError, [r"normalized_shape", r"-3"]),
    ("gn-negative-channels", lambda: fastnorm.GroupNorm(2, -4), ValueError,
     [r"num_channels must be >= 0", r"-4"]),
    ("gn-negative-groups", lambda: fastnorm.GroupNorm(-2, 4), ValueError,
     [r"num_groups", r"-2"]),
    ("gn-zero-groups", lambda: fastnorm.GroupNorm(0, 4), ValueError,
     [r"num_groups must be positive", r"0"]),
    ("gn-not-divisible", lambda: fastnorm.GroupNorm(4, 6), ValueError,
     [r"num_channels \(6\) must be divisible by num_groups \(4\)"]),
    ("gn-float-groups", lambda: fastnorm.GroupNorm(2.0, 4), TypeError,
     [r"num_groups must be an int", r"float"]),
]
for _name, _factory in [("bn", lambda **kw: fastnorm.BatchNorm2d(3, **kw)),
                        ("in", lambda **kw: fastnorm.InstanceNorm1d(3, **kw)),
                        ("ln", lambda **kw: fastnorm.LayerNorm(3, **kw)),
                        ("gn", lambda **kw: fastnorm.GroupNorm(1, 3, **kw)),
                        ("rms", lambda **kw: fastnorm.RMSNorm(3, **kw))]:
    CTOR += [
        (f"{_name}-eps-negative", (lambda f: lambda: f(eps=-1e-5))(_factory), ValueError,
         [r"eps must be finite and >= 0", r"-1e-05"]),
        (f"{_name}-eps-nan", (lambda f: lambda: f(eps=float("nan")))(_factory), ValueError,
         [r"eps must be finite and >= 0", r"nan"]),
        (f"{_name}-eps-inf", (lambda f: lambda: f(eps=float("inf")))(_factory), ValueError,
         [r"eps must be finite and >= 0", r"inf"]),
        (f"{_name}-eps-str", (lambda f: lambda: f(eps="1e-5"))(_factory), TypeError,
         [r"eps must be a real number", r"str"]),
        (f"{_name}-device-cuda", (lambda f: lambda: f(device="cuda"))(_factory), ValueError,
         [r"CPU only", r"'cuda'"]),
    ]
    for _dt in [np.int32, np.longdouble, "complex64", "bogus", np.bool_]:
        CTOR.append((f"{_name}-dtype-{getattr(_dt, '__name__', _dt)}",
                     (lambda f, d: lambda: f(dtype=d))(_factory, _dt), TypeError,
                     [r"dtype must be float16, bfloat16, float32 or float64",
                      str(getattr(_dt, "__name__", _dt)).replace("bool_", "bool")]))
for _name, _factory in [("bn", lambda **kw: fastnorm.BatchNorm1d(3, **kw)),
                        ("in", lambda **kw: fastnorm.InstanceNorm3d(3, **kw))]:
    CTOR += [
        (f"{_name}-momentum-nan", (lambda f: lambda: f(momentum=float("nan")))(_factory),
         ValueError, [r"momentum must be finite", r"nan"]),
        (f"{_name}-momentum-str", (lambda f: lambda: f(momentum="0.1"))(_factory), TypeError,
         [r"momentum must be a real number or None", r"str"]),
    ]


@pytest.mark.parametrize("case", CTOR, ids=[c[0] for c in CTOR])
def test_constructor_errors(case):
    _, factory, exc, patterns = case
    with pytest.raises(exc) as info:
        factory()
    msg = str(info.value)
    for p in patterns:
        assert re.search(p, msg), f"{p!r} not in {msg!r}"


def test_constructor_accepts_edge_values():
    # eps=0 and momentum=0/1/None, size 0: accepted at construction, as in torch
    assert fastnorm.BatchNorm2d(3, eps=0).eps == 0
    assert fastnorm.BatchNorm2d(3, momentum=None).momentum is None
    assert fastnorm.BatchNorm2d(0).weight.shape == (0,)
    assert fastnorm.GroupNorm(1, 0).weight.shape == (0,)
    assert fastnorm.LayerNorm([]).normalized_shape == ()
    assert fastnorm.BatchNorm1d(np.int64(3)).num_features == 3
