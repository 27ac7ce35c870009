"""Normalization functions on NumPy arrays, mirroring ``torch.nn.functional``.

Every function has torch's name, argument names, defaults and semantics, plus a keyword-only
``out=``: a writable array of the input's shape and dtype (it may be the input itself, for an
in-place call) that receives the result and is returned. Inputs are float16, bfloat16 (the
``ml_dtypes`` package's, optional), float32 or float64 arrays of any layout (C or Fortran order,
transposed, negative strides, byte-swapped, channels-last); outputs have the input's dtype
(native byte order). weight and bias may have any real dtype (they are used in float32 for the
16-bit types and the float32 input, in float64 for float64 input); running statistics any float
dtype. Running statistics passed in are updated in place, as torch does. Arguments are
validated before anything is written.

Statistics are computed in one pass in double precision (shifted sums over fixed-size blocks,
merged with Chan's formula in index order), so results do not depend on the thread count. The
16-bit types are normalized in float and rounded once, to nearest even, when stored.

Inference extras (not in torch.nn.functional): a keyword-only ``activation=`` (None, "relu",
"silu", "gelu" or "gelu_tanh") on batch_norm, group_norm, layer_norm, rms_norm and the add_*
functions applies the activation to each normalized value in the same pass, before it is
stored; ``add_layer_norm`` and ``add_rms_norm`` normalize ``input + residual`` in one pass over
memory, optionally keeping the sum (the residual stream of a transformer).
"""
from . import _kernels

__all__ = ["batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm",
           "add_layer_norm", "add_rms_norm"]




def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, out=None, activation=None):
    r"""Batch normalization over every axis but the channel axis 1.

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    With ``training=True`` the mean and biased variance are those of the batch, per channel over
    N and the spatial axes; when running statistics are given they are updated in place:
    ``running = (1 - momentum) * running + momentum * batch_stat``, with the unbiased variance.
    With ``training=False`` the running statistics are used.

    Parameters
    ----------
    input : ndarray, shape (N, C) or (N, C, *)
    running_mean, running_var : ndarray of shape (C,) or None
        Required when ``training=False``; updated in place when ``training=True``.
    weight, bias : array_like of shape (C,), optional
        :math:`\gamma` and :math:`\beta` (1 and 0 when omitted).
    training : bool
    momentum : float
    eps : float
        Added to the variance; finite and >= 0.
    out : ndarray, optional
        Where to write the result (may be ``input``).
    activation : {None, "relu", "silu", "gelu", "gelu_tanh"}, optional
        Applied to each output value in the normalize pass (fastnorm only; torch would call
        ``F.relu``, ``F.silu``, ``F.gelu(approximate="none" / "tanh")`` on the result).

    Returns
    -------
    ndarray of the input's shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.random.default_rng(0).standard_normal((20, 6, 10, 10), dtype=np.float32)
    >>> rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)
    >>> y = F.batch_norm(x, rm, rv, training=True)
    >>> bool(abs(y.mean()) < 1e-5), y.dtype
    (True, dtype('float32'))
    """
    return _kernels.batch_norm(input, running_mean, running_var, weight, bias, training,
                               momentum, eps, out, activation)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5, *, out=None):
    r"""Instance normalization: each (sample, channel) plane over its spatial axes.

    .. math:: y_{nc} = \frac{x_{nc} - \mathrm{E}[x_{nc}]}{\sqrt{\mathrm{Var}[x_{nc}] + \epsilon}}
              \gamma_c + \beta_c

    With ``use_input_stats=True`` each plane uses its own mean and biased variance; running
    statistics, when given, are updated in place with the batch average of the per-instance mean
    and unbiased variance. With ``use_input_stats=False`` the running statistics are used.

    Parameters
    ----------
    input : ndarray, shape (N, C, *)
    running_mean, running_var : ndarray of shape (C,), optional
    weight, bias : array_like of shape (C,), optional
    use_input_stats : bool
    momentum : float
    eps : float
    out : ndarray, optional

    Returns
    -------
    ndarray of the input's shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.arange(16, dtype=np.float64).reshape(1, 2, 8)
    >>> y = F.instance_norm(x)
    >>> np.allclose(y.mean(axis=2), 0), np.allclose(y.var(axis=2), 1, atol=1e-4)
    (True, True)
    """
    return _kernels.instance_norm(input, running_mean, running_var, weight, bias,
                                  use_input_stats, momentum, eps, out)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, out=None,
               activation=None):
    r"""Layer normalization over the trailing ``normalized_shape`` axes.

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Mean and biased variance are taken over the last ``len(normalized_shape)`` axes of each row;
    :math:`\gamma` and :math:`\beta` have the shape ``normalized_shape`` (elementwise affine).

    Parameters
    ----------
    input : ndarray, shape (*, *normalized_shape)
    normalized_shape : int or sequence of int
    weight, bias : array_like of shape ``normalized_shape``, optional
    eps : float
    out : ndarray, optional
    activation : {None, "relu", "silu", "gelu", "gelu_tanh"}, optional
        See ``batch_norm``.

    Returns
    -------
    ndarray of the input's shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.random.default_rng(0).standard_normal((4, 768)).astype(np.float32)
    >>> y = F.layer_norm(x, 768)
    >>> y.shape, bool(np.allclose(y.std(axis=1), 1, atol=1e-3))
    ((4, 768), True)
    """
    return _kernels.layer_norm(input, normalized_shape, weight, bias, eps, out, activation)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *, out=None,
               activation=None):
    r"""Group normalization: channels split into ``num_groups`` groups, each normalized per
    sample over its channels and the spatial axes.

    .. math:: y_{ng} = \frac{x_{ng} - \mathrm{E}[x_{ng}]}{\sqrt{\mathrm{Var}[x_{ng}] + \epsilon}}
              \gamma_c + \beta_c

    Parameters
    ----------
    input : ndarray, shape (N, C, *)
        C must be divisible by ``num_groups``.
    num_groups : int
    weight, bias : array_like of shape (C,), optional
        Per-channel affine.
    eps : float
    out : ndarray, optional
    activation : {None, "relu", "silu", "gelu", "gelu_tanh"}, optional
        See ``batch_norm``.

    Returns
    -------
    ndarray of the input's shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.random.default_rng(0).standard_normal((2, 8, 5, 5)).astype(np.float32)
    >>> y = F.group_norm(x, 4)
    >>> g = y.reshape(2, 4, -1)
    >>> bool(np.allclose(g.mean(axis=2), 0, atol=1e-5))
    True
    """
    return _kernels.group_norm(input, num_groups, weight, bias, eps, out, activation)


def rms_norm(input, normalized_shape, weight=None, eps=None, *, out=None, activation=None):
    r"""Root-mean-square normalization over the trailing ``normalized_shape`` axes.

    .. math:: y = \frac{x}{\sqrt{\mathrm{E}[x^2] + \epsilon}} \gamma

    Parameters
    ----------
    input : ndarray, shape (*, *normalized_shape)
    normalized_shape : int or sequence of int
    weight : array_like of shape ``normalized_shape``, optional
        :math:`\gamma` (1 when omitted).
    eps : float, optional
        ``None`` (the default, as in torch) means ``np.finfo(input.dtype).eps``.
    out : ndarray, optional
    activation : {None, "relu", "silu", "gelu", "gelu_tanh"}, optional
        See ``batch_norm``.

    Returns
    -------
    ndarray of the input's shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.array([[3.0, 4.0]])
    >>> np.round(F.rms_norm(x, 2), 6)
    array([[0.848528, 1.131371]])
    """
    return _kernels.rms_norm(input, normalized_shape, weight, eps, out, activation)


def add_layer_norm(input, residual, normalized_shape, weight=None, bias=None, eps=1e-5, *,
                   out=None, sum_out=None, activation=None):
    r"""Layer normalization of ``input + residual``, in one pass over memory (fastnorm only).

    .. math:: s = x + r, \quad y = \frac{s - \mathrm{E}[s]}{\sqrt{\mathrm{Var}[s] + \epsilon}}
              \gamma + \beta

    The sum is rounded to the input's dtype before it is normalized, as ``x + r`` followed by
    ``layer_norm`` would store it: the result equals ``layer_norm(input + residual, ...)`` bit for
    bit. With ``sum_out`` the sum is also written there (the transformer's residual stream); it
    may be ``residual`` (or ``input``) itself, for the in-place update inference engines use.

    Parameters
    ----------
    input, residual : ndarray, shape (*, *normalized_shape)
        Same shape and dtype.
    normalized_shape : int or sequence of int
    weight, bias : array_like of shape ``normalized_shape``, optional
    eps : float
    out : ndarray, optional
        Where to write the normalized result (may be ``input`` or ``residual``; not ``sum_out``).
    sum_out : ndarray, optional
        Where to write ``input + residual`` (may be ``input`` or ``residual``).
    activation : {None, "relu", "silu", "gelu", "gelu_tanh"}, optional
        See ``batch_norm``.

    Returns
    -------
    ndarray, or ``(out, sum_out)`` when ``sum_out`` is given.

    Shape
    -----
    input, residual, output and sum: the same shape (*, *normalized_shape).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> rng = np.random.default_rng(0)
    >>> x, h = rng.standard_normal((2, 4, 768), dtype=np.float32), np.zeros((2, 4, 768), np.float32)
    >>> y, h2 = F.add_layer_norm(x, h, 768, sum_out=h)
    >>> h2 is h, bool(np.array_equal(h, x)), bool(np.array_equal(y, F.layer_norm(x, 768)))
    (True, True, True)
    """
    return _kernels.add_layer_norm(input, residual, normalized_shape, weight, bias, eps, out,
                                   sum_out, activation)


def add_rms_norm(input, residual, normalized_shape, weight=None, eps=None, *, out=None,
                 sum_out=None, activation=None):
    r"""RMS normalization of ``input + residual``, in one pass over memory (fastnorm only).

    .. math:: s = x + r, \quad y = \frac{s}{\sqrt{\mathrm{E}[s^2] + \epsilon}} \gamma

    As ``add_layer_norm`` (the sum rounded to the input's dtype, ``sum_out`` optional and allowed
    to be ``residual``), with ``rms_norm``'s normalization; ``eps=None`` means the machine
    epsilon of the input's dtype, as in torch.

    Parameters
    ----------
    input, residual : ndarray, shape (*, *normalized_shape)
    normalized_shape : int or sequence of int
    weight : array_like of shape ``normalized_shape``, optional
    eps : float, optional
    out, sum_out : ndarray, optional
    activation : {None, "relu", "silu", "gelu", "gelu_tanh"}, optional

    Returns
    -------
    ndarray, or ``(out, sum_out)`` when ``sum_out`` is given.

    Shape
    -----
    input, residual, output and sum: the same shape (*, *normalized_shape).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x, r = np.array([[1.0, 2.0]]), np.array([[2.0, 2.0]])
    >>> np.round(F.add_rms_norm(x, r, 2), 6)
    array([[0.848528, 1.131371]])
    """
    return _kernels.add_rms_norm(input, residual, normalized_shape, weight, eps, out, sum_out,
                                 activation)
