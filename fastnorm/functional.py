"""Normalization functions on NumPy arrays, mirroring ``torch.nn.functional``.

Every function has torch's name, argument names, defaults and semantics, plus a keyword-only
``out=``: a writable array of the input's shape and dtype (it may be the input itself, for an
in-place call) that receives the result and is returned. Inputs are float32 or float64 arrays of
any layout (C or Fortran order, transposed, negative strides, byte-swapped, channels-last);
outputs have the input's dtype (native byte order). Running statistics passed in are updated in
place, as torch does. Arguments are validated before anything is written.

Statistics are computed in one pass in double precision (shifted sums over fixed-size blocks,
merged with Chan's formula in index order), so results do not depend on the thread count.
"""
import numpy as np

from . import _kernels

__all__ = ["batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm",
           "filter_response_norm"]


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, out=None):
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
                               momentum, eps, out)


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


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, out=None):
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
    return _kernels.layer_norm(input, normalized_shape, weight, bias, eps, out)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *, out=None):
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
    return _kernels.group_norm(input, num_groups, weight, bias, eps, out)


def rms_norm(input, normalized_shape, weight=None, eps=None, *, out=None):
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
    return _kernels.rms_norm(input, normalized_shape, weight, eps, out)


def _to_numpy(a):
    """np.asarray that also takes torch tensors (the layers' own conversion)."""
    from .modules.module import to_numpy  # here: fastnorm.modules imports this module
    return to_numpy(a)


def _mean_squares(x):
    """mean(x**2) over the spatial axes of x (N, C, *), per (n, c), as float64 (N, C): one
    statistics pass (mean and variance, ``var + mean**2``). A plane whose statistics are not
    finite (inf or NaN in it, or squares beyond float64) is summed again plainly, so that it
    gives what mean(x**2) gives (inf for an inf in it, not the NaN of ``inf - inf``)."""
    mean, var = _kernels.instance_moments(x)
    ms = var + mean * mean
    bad = ~np.isfinite(ms)
    if bad.any():
        a = _to_numpy(x)
        with np.errstate(over="ignore", invalid="ignore"):
            for n, c in zip(*np.nonzero(bad)):
                plane = np.asarray(a[n, c], np.float64)
                ms[n, c] = np.mean(plane * plane)
    return ms


def _per_channel(p, name, C, fname):
    """A per-channel parameter given with C elements in any shape (timm's (C,), or (1, C, 1, 1))
    as a (C,) array, or None."""
    if p is None:
        return None
    a = _to_numpy(p)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{fname}: {name} must be a real-valued array, got dtype {a.dtype}")
    if a.size != C:
        raise ValueError(f"{fname}: expected {name} with {C} elements (one per channel), got "
                         f"shape {a.shape}")
    return a.reshape(C)


def filter_response_norm(input, weight=None, bias=None, tau=None, eps=1e-5, *, out=None):
    r"""Filter Response Normalization with its thresholded linear unit (Singh & Krishnan 2019),
    as timm's ``FilterResponseNormTlu2d``.

    .. math:: y = \max\left(\gamma \frac{x}{\sqrt{\nu^2 + \epsilon}} + \beta,\ \tau\right),
              \qquad \nu^2_{nc} = \mathrm{mean}_{spatial}(x_{nc}^2)

    A per-(sample, channel) root mean square over the spatial axes (no centring), a per-channel
    affine, then the TLU: a per-channel learned lower bound (no bound when ``tau`` is None).
    Statistics in double precision; NaN propagates through the bound, as ``torch.maximum``.

    Parameters
    ----------
    input : ndarray, shape (N, C, *)
    weight, bias, tau : array_like with C elements, optional
        :math:`\gamma` (1 when omitted), :math:`\beta` (0) and :math:`\tau` (no bound).
    eps : float
        Added to :math:`\nu^2`; finite and >= 0.
    out : ndarray, optional
        Where to write the result (may be ``input``).

    Returns
    -------
    ndarray of the input's shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.array([[[[3.0, -4.0]]]])  # mean square 12.5
    >>> F.filter_response_norm(x, eps=0.0).round(4)
    array([[[[ 0.8485, -1.1314]]]])
    >>> F.filter_response_norm(x, tau=[0.0], eps=0.0).round(4)
    array([[[[0.8485, 0.    ]]]])
    """
    fn = "filter_response_norm"
    x = _to_numpy(input)
    if x.ndim < 2:
        _kernels.instance_moments(x)  # raises the ops' own message for a bad input
    C = x.shape[1]
    w = _per_channel(weight, "weight", C, fn)
    b = _per_channel(bias, "bias", C, fn)
    t = _per_channel(tau, "tau", C, fn)
    ms = _mean_squares(x)  # checks the input: (N, C, *), float32/float64
    if t is not None:
        t = t.astype(x.dtype.newbyteorder("="))
    y = _kernels.normalize_nc(x, np.zeros_like(ms), ms, w, b, eps, out)
    if t is not None:  # the TLU: a second pass (the normalize kernel has no lower bound)
        np.maximum(y, t.reshape((1, C) + (1,) * (y.ndim - 2)), out=y)
    return y
