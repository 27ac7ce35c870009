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
import math

import numpy as np

from . import _checks, _kernels

__all__ = ["batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm", "switch_norm",
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


def _softmax(w):
    """softmax of a short vector, as Python floats (the mixing weights of (N, C)-sized arrays:
    Python scalars keep NumPy's per-operation overhead low)."""
    w = [float(v) for v in w.tolist()]
    top = max(w)
    e = [math.exp(v - top) for v in w]
    total = math.fsum(e)
    return [v / total for v in e]


def _mean(a, axis):
    """a.mean(axis, keepdims=True) (the same sum and division) without np.mean's overhead."""
    return np.add.reduce(a, axis=axis, keepdims=True) / a.shape[axis]


def _per_channel(a, name, C, updated=False, fn="switch_norm"):
    """A per-channel array of op fn given with C elements in any shape (switch_norm's authors keep
    (1, C, 1...) arrays, timm's FRN (C,), other FRN ports (1, C, 1, 1)); running statistics that
    are updated in place must be writable float ndarrays."""
    if updated and not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray (it is updated in place), got "
                        f"{type(a).__name__}")
    arr = _checks.to_numpy(a)
    running = name.startswith("running")
    if arr.dtype.kind not in ("f" if running else "fiub"):
        raise TypeError(f"{fn}: {name} must have a {'floating' if running else 'real'} dtype, "
                        f"got {arr.dtype}")
    if arr.size != C:
        raise ValueError(f"{fn}: expected {name} with {C} elements (one per channel), got shape "
                         f"{arr.shape}")
    if updated and not arr.flags.writeable:
        raise ValueError(f"{fn}: {name} is read-only but must be updated in place")
    return arr


def _mixing(a, name, k, why):
    """mean_weight / var_weight: k real logits."""
    arr = _checks.to_numpy(a)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"switch_norm: {name} must be a real-valued array, got dtype {arr.dtype}")
    if arr.shape != (k,):
        raise ValueError(f"switch_norm: expected {name} of shape ({k},) ({why}), got shape "
                         f"{arr.shape}")
    return arr


def _update_switch(running, stat, momentum, using_moving_average, extra=0.0):
    """The authors' update of one running statistic, in float64, written back in place."""
    old = running.astype(np.float64).reshape(stat.shape)
    new = momentum * old + (1 - momentum) * stat if using_moving_average else old + (extra + stat)
    np.copyto(running, new.reshape(running.shape), casting="unsafe")


def switch_norm(input, running_mean, running_var, weight, bias, mean_weight, var_weight,
                training=False, momentum=0.9, eps=1e-5, using_moving_average=True,
                using_bn=True, *, out=None):
    r"""Switchable Normalization (Luo et al. 2018): a learned mix of instance, layer and batch
    statistics, with the semantics of the authors' SwitchNorm1d/2d/3d (``fastnorm.SwitchNorm2d``
    is this function on the layer's own arrays).

    .. math::

        y = \frac{x - \sum_k w_k \mu_k}{\sqrt{\sum_k w'_k \sigma^2_k + \epsilon}} \gamma + \beta,
        \qquad w = \mathrm{softmax}(\texttt{mean\_weight}),\;
        w' = \mathrm{softmax}(\texttt{var\_weight})

    Input (N, C, *spatial), k in (IN, LN, BN) (IN and LN only with ``using_bn=False``): IN is the
    mean and *unbiased* variance of each (n, c) plane; LN (per n) and BN (per c) derive from them,
    :math:`\mu_{ln} = \mathrm{mean}_c\,\mu_{in}`,
    :math:`\sigma^2_{ln} = \mathrm{mean}_c(\sigma^2_{in} + \mu^2_{in}) - \mu^2_{ln}`, and the
    same over n for BN. Input (N, C) (the authors' SwitchNorm1d), k in (LN, BN): the mean and
    unbiased variance of each row over C and of each channel over N.

    In training the BN statistics are the batch's, and the running statistics are updated in place:
    ``running = momentum * running + (1 - momentum) * batch_stat`` (``momentum`` is the share
    *kept*, unlike torch's batch_norm) or, with ``using_moving_average=False``, the sums
    ``running_mean += mu_bn`` and ``running_var += mu_bn**2 + sigma2_bn``. In eval the running
    statistics are the BN statistics, as they are.

    Cost: one statistics pass over the input (per-(n, c) moments in double precision), the
    (N, C)-sized mixing in float64, and one normalize pass in the input's dtype.

    Parameters
    ----------
    input : ndarray, shape (N, C, *spatial) with more than one spatial element, or (N, C)
    running_mean, running_var : ndarray with C elements (e.g. (1, C, 1)), or None
        Required with ``using_bn`` (updated in place when ``training``); None without.
    weight, bias : array_like with C elements, or None
        :math:`\gamma` and :math:`\beta` (1 and 0 when None).
    mean_weight, var_weight : array_like of shape (3,), or (2,) without BN and for (N, C) input
        The mixing logits, in the order IN, LN, BN (LN, BN for (N, C) input).
    training : bool, default False
    momentum : float, default 0.9
        The share of the old running value kept.
    eps : float, default 1e-5
    using_moving_average : bool, default True
    using_bn : bool, default True
        Mix the BN statistics; must be True for (N, C) input.
    out : ndarray, optional
        Where to write the result (may be ``input``; must not share memory with the running
        statistics, which are written after it).

    Returns
    -------
    ndarray of the input's shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.random.default_rng(0).standard_normal((8, 4, 5, 5))
    >>> rm, rv = np.zeros((1, 4, 1)), np.zeros((1, 4, 1))
    >>> y = F.switch_norm(x, rm, rv, None, None, np.ones(3), np.ones(3), training=True)
    >>> y.shape, bool(np.abs(rm).max() > 0)
    ((8, 4, 5, 5), True)
    >>> y = F.switch_norm(x, None, None, None, None, [0., 0.], [0., 0.], using_bn=False)
    """
    fn = "switch_norm"
    x = input if isinstance(input, np.ndarray) else _checks.to_numpy(input)
    if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):  # any byte order
        raise TypeError(f"{fn}: expected input of dtype float32 or float64, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{fn}: expected input of at least 2 dimensions (N, C, *), got "
                         f"{x.ndim}D input of shape {x.shape}")
    N, C = x.shape[0], x.shape[1]
    training, using_bn = bool(training), bool(using_bn)
    e = _checks.check_eps(eps, fn)
    if x.ndim == 2 and not using_bn:
        raise ValueError(f"{fn}: input (N, C) mixes LN and BN statistics: using_bn must be True, "
                         f"got using_bn=False")
    nmix = 3 if using_bn and x.ndim > 2 else 2
    why = ("IN, LN, BN" if nmix == 3 else "IN, LN: using_bn=False" if x.ndim > 2
           else "LN, BN: input (N, C)")
    mean_weight = _mixing(mean_weight, "mean_weight", nmix, why)
    var_weight = _mixing(var_weight, "var_weight", nmix, why)
    w = None if weight is None else _per_channel(weight, "weight", C, False).reshape(C)
    b = None if bias is None else _per_channel(bias, "bias", C, False).reshape(C)
    if using_bn:
        if running_mean is None or running_var is None:
            raise ValueError(f"{fn}: running_mean and running_var are required with using_bn=True "
                             f"(the BN statistics), got "
                             f"{'None' if running_mean is None else 'an array'} and "
                             f"{'None' if running_var is None else 'an array'}")
        rm = _per_channel(running_mean, "running_mean", C, training)
        rv = _per_channel(running_var, "running_var", C, training)
    elif running_mean is not None or running_var is not None:
        raise ValueError(f"{fn}: running_mean and running_var must be None with using_bn=False "
                         f"(no BN statistics)")
    update = using_bn and training
    if update:
        m = _checks.check_momentum(momentum, fn)
        if out is not None and (np.may_share_memory(out, rm) or np.may_share_memory(out, rv)):
            raise ValueError(f"{fn}: running_mean and running_var are updated in place and must "
                             f"not share memory with out")
    if x.size == 0:  # nothing to normalize; statistics of nothing would be NaN: no update
        return _kernels.normalize_nc(x, np.zeros((N, C)), np.zeros((N, C)), w, b, e, out)
    if x.ndim == 2:
        if C < 2:
            raise ValueError(f"{fn}: expected more than 1 channel (the LN variance over C is "
                             f"unbiased), got input of shape {x.shape}")
        if training and N < 2:
            raise ValueError(f"{fn}: expected more than 1 sample when training (the BN variance "
                             f"over N is unbiased), got input of shape {x.shape}")
    elif x.size // (N * C) < 2:
        raise ValueError(f"{fn}: expected more than 1 spatial element per channel (the IN "
                         f"variance is unbiased), got input of shape {x.shape}")
    mw, vw = _softmax(mean_weight), _softmax(var_weight)
    if x.ndim == 2:
        # LN: per row over C, as per-(0, n) "instance" statistics of x seen as (1, N, C)
        mean_ln, var_ln = _kernels.instance_moments(x[np.newaxis])
        mean_ln = mean_ln.reshape(N, 1)
        var_ln = var_ln.reshape(N, 1) * (C / (C - 1))
        if training:  # BN: per channel over N, x seen as (1, C, N)
            mean_bn, var_bn = _kernels.instance_moments(x.T[np.newaxis])
            mean_bn = mean_bn.reshape(1, C)
            var_bn = var_bn.reshape(1, C) * (N / (N - 1))
        else:
            mean_bn = rm.astype(np.float64).reshape(1, C)
            var_bn = rv.astype(np.float64).reshape(1, C)
        mean = mw[0] * mean_ln + mw[1] * mean_bn
        var = vw[0] * var_ln + vw[1] * var_bn
    else:
        S = x.size // (N * C)
        mean_in, var_in = _kernels.instance_moments(x)  # (N, C) float64, biased variance
        var_in *= S / (S - 1)  # unbiased, as the authors' Tensor.var
        mean_ln = _mean(mean_in, 1)  # (N, 1)
        temp = var_in + mean_in ** 2  # the authors' second moment per (n, c)
        var_ln = _mean(temp, 1) - mean_ln ** 2
        mean = mw[0] * mean_in + mw[1] * mean_ln
        var = vw[0] * var_in + vw[1] * var_ln
        if using_bn:
            if training:
                mean_bn = _mean(mean_in, 0)  # (1, C)
                var_bn = _mean(temp, 0) - mean_bn ** 2
            else:
                mean_bn = rm.astype(np.float64).reshape(1, C)
                var_bn = rv.astype(np.float64).reshape(1, C)
            mean += mw[2] * mean_bn
            var += vw[2] * var_bn
    y = _kernels.normalize_nc(x, mean, var, w, b, e, out)
    if update:  # after the output exists: a failed call changes nothing
        _update_switch(rm, mean_bn, m, using_moving_average)
        _update_switch(rv, var_bn, m, using_moving_average, mean_bn ** 2)
    return y


def _mean_squares(x):
    """mean(x**2) over the spatial axes of x (N, C, *), per (n, c), as float64 (N, C): one
    statistics pass (mean and variance, ``var + mean**2``). A plane whose statistics are not
    finite (inf or NaN in it, or squares beyond float64) is summed again plainly, so that it
    gives what mean(x**2) gives (inf for an inf in it, not the NaN of ``inf - inf``)."""
    mean, var = _kernels.instance_moments(x)
    ms = var + mean * mean
    bad = ~np.isfinite(ms)
    if bad.any():
        a = _checks.to_numpy(x)
        with np.errstate(over="ignore", invalid="ignore"):
            for n, c in zip(*np.nonzero(bad)):
                plane = np.asarray(a[n, c], np.float64)
                ms[n, c] = np.mean(plane * plane)
    return ms


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
    x = _checks.to_numpy(input)
    if x.ndim < 2:
        _kernels.instance_moments(x)  # raises the ops' own message for a bad input
    C = x.shape[1]
    w, b, t = (None if p is None else _per_channel(p, name, C, fn=fn).reshape(C)
               for p, name in ((weight, "weight"), (bias, "bias"), (tau, "tau")))
    ms = _mean_squares(x)  # checks the input: (N, C, *), float32/float64
    if t is not None:
        t = t.astype(x.dtype.newbyteorder("="))
    y = _kernels.normalize_nc(x, np.zeros_like(ms), ms, w, b, eps, out)
    if t is not None:  # the TLU: a second pass (the normalize kernel has no lower bound)
        np.maximum(y, t.reshape((1, C) + (1,) * (y.ndim - 2)), out=y)
    return y
