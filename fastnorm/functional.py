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

Statistics are computed in one pass in double precision (sums over fixed-size blocks, shifted
where the data sits far from zero, merged with Chan's formula in index order), so results do not
depend on the thread count. The 16-bit types are normalized in float and rounded once, to
nearest even, when stored.

Inference extras (not in torch.nn.functional): a keyword-only ``activation=`` (None, "relu",
"silu", "gelu" or "gelu_tanh") on batch_norm, group_norm, layer_norm, rms_norm and the add_*
functions applies the activation to each normalized value in the same pass, before it is
stored; ``add_layer_norm`` and ``add_rms_norm`` normalize ``input + residual`` in one pass over
memory, optionally keeping the sum (the residual stream of a transformer).

Training: the ``native_*`` functions mirror ``torch.ops.aten``'s forward/backward pairs
(``native_batch_norm`` / ``native_batch_norm_backward`` ...): the forward also returns the
statistics that its backward takes, and the backward returns the gradients of the input and of
the parameters that ``output_mask`` asks for (None in the others' place). Names, arguments, output
shapes and semantics are torch's; one difference: the saved statistics (``save_mean``,
``save_invstd``, ``mean``, ``rstd``) are float64 for every input dtype (torch: the input's dtype),
because they are computed in double and a float32-rounded mean of data far from zero would spoil
the gradient. Gradients have the input's dtype (parameter gradients: the parameter's).
"""
import inspect

import numpy as np

from . import _backward, _checks, _kernels, _switch


def _compiled(impl):
    """Decorator: the op is ``impl``, the Cython function of the same signature, which takes the
    decorated function's name and documentation. A call then runs no Python frame of ours: on a
    decode-size call (RMSNorm (1, 4096): about 1.2 us) a wrapper's frame cost 0.1 us. The
    decorated function only declares the signature (checked here) and carries the docstring."""
    def use(declared):
        if inspect.signature(impl) != inspect.signature(declared):
            raise AssertionError(f"{declared.__name__}: the compiled signature "
                                 f"{inspect.signature(impl)} differs from the declared one")
        for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
            setattr(impl, attr, getattr(declared, attr))
        return impl
    return use


__all__ = ["batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm", "switch_norm",
           "filter_response_norm", "add_layer_norm", "add_rms_norm",
           "native_batch_norm", "native_batch_norm_backward", "native_instance_norm",
           "native_instance_norm_backward", "native_layer_norm", "native_layer_norm_backward",
           "native_group_norm", "native_group_norm_backward", "native_rms_norm",
           "native_rms_norm_backward", "native_switch_norm", "native_switch_norm_backward"]


@_compiled(_kernels.batch_norm)
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


@_compiled(_kernels.instance_norm)
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


@_compiled(_kernels.layer_norm)
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


@_compiled(_kernels.group_norm)
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


@_compiled(_kernels.rms_norm)
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
        ``None`` (the default) means the machine epsilon of the type torch computes in:
        ``np.finfo(np.float64).eps`` for float64 input, ``np.finfo(np.float32).eps`` for float32,
        float16 and bfloat16 (torch 2.13's CPU ``rms_norm``; its documentation names the input's
        own epsilon, which for the 16-bit types is 8 to 64 times larger).
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


@_compiled(_kernels.add_layer_norm)
def add_layer_norm(input, residual, normalized_shape, weight=None, bias=None, eps=1e-5, *,
                   out=None, sum_out=None, activation=None):
    r"""Layer normalization of ``input + residual``, in one pass over memory (fastnorm only).

    .. math:: s = x + r, \quad y = \frac{s - \mathrm{E}[s]}{\sqrt{\mathrm{Var}[s] + \epsilon}}
              \gamma + \beta

    The sum is rounded to the input's dtype before it is normalized, as ``x + r`` followed by
    ``layer_norm`` would store it: the result equals ``layer_norm`` of the sum stored in C
    order, bit for bit, for any layout of the operands and of ``out`` and any thread count
    (with a strided ``sum_out``, ``layer_norm`` of that ``sum_out``: strided float64 rows may
    move the last bit or two). With ``sum_out`` the sum is also written there (the
    transformer's residual stream); it may be ``residual`` (or ``input``) itself, for the
    in-place update inference engines use.

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


@_compiled(_kernels.add_rms_norm)
def add_rms_norm(input, residual, normalized_shape, weight=None, eps=None, *, out=None,
                 sum_out=None, activation=None):
    r"""RMS normalization of ``input + residual``, in one pass over memory (fastnorm only).

    .. math:: s = x + r, \quad y = \frac{s}{\sqrt{\mathrm{E}[s^2] + \epsilon}} \gamma

    As ``add_layer_norm`` (the sum rounded to the input's dtype, ``sum_out`` optional and allowed
    to be ``residual``), with ``rms_norm``'s normalization and its ``eps=None``.

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



def _per_channel(a, name, C, updated=False, fn="switch_norm"):
    """A per-channel array of op fn given with C elements in any shape (switch_norm's authors keep
    (1, C, 1...) arrays, timm's FRN (C,), other FRN ports (1, C, 1, 1)); running statistics that
    are updated in place must be writable float ndarrays."""
    if updated and not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray (it is updated in place), got "
                        f"{type(a).__name__}")
    arr = _checks.to_numpy(a)
    running = name.startswith("running")
    if not (_checks.is_float_dtype(arr.dtype) if running else _checks.is_real_dtype(arr.dtype)):
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
    if not _checks.is_real_dtype(arr.dtype):
        raise TypeError(f"switch_norm: {name} must be a real-valued array, got dtype {arr.dtype}")
    if arr.shape != (k,):
        raise ValueError(f"switch_norm: expected {name} of shape ({k},) ({why}), got shape "
                         f"{arr.shape}")
    return arr


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
    if not _checks.is_float_dtype(x.dtype):  # any byte order
        raise TypeError(f"{fn}: expected input of dtype {_checks.ACCEPTED_DTYPES}, got dtype "
                        f"{x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{fn}: expected input of at least 2 dimensions (N, C, *), got "
                         f"{x.ndim}D input of shape {x.shape}")
    N, C = x.shape[0], x.shape[1]
    training = _checks.check_flag(training, "training", fn)
    using_bn = _checks.check_flag(using_bn, "using_bn", fn)
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
    else:
        rm = rv = None
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
    mean, var, p = _switch.stats(x, mean_weight, var_weight, rm, rv, training)
    y = _kernels.normalize_nc(x, mean, var, w, b, e, out)
    if update:  # after the output exists: a failed call changes nothing
        _switch.update_running(rm, rv, p["mean_bn"], p["var_bn"], m, using_moving_average)
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
    # one pass per (n, c) plane: the mean of squares, then the affine and the TLU in cache
    return _kernels.filter_response_norm(x, w, b, t, eps, out)


# ------------------------------------------------------------------------------------------------
# forward/backward pairs (torch.ops.aten's native_* functions)

def native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps):
    r"""Batch norm that also returns the statistics its backward needs, as
    ``torch.ops.aten.native_batch_norm``.

    Returns ``(output, save_mean, save_invstd)``: in training the batch mean and
    :math:`1/\sqrt{\mathrm{Var}[x] + \epsilon}` per channel, shape (C,), float64 (torch: the
    input's dtype); in eval mode two empty arrays, as torch. Running statistics are updated as by
    :func:`batch_norm`.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.random.default_rng(0).standard_normal((8, 3, 4, 4)).astype(np.float32)
    >>> y, save_mean, save_invstd = F.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
    >>> y.dtype, save_mean.shape, save_invstd.dtype
    (dtype('float32'), (3,), dtype('float64'))
    """
    return _backward.native_batch_norm(input, weight, bias, running_mean, running_var, training,
                                       momentum, eps)


def native_batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean,
                               save_invstd, train, eps, output_mask):
    r"""Gradients of :func:`native_batch_norm`, as ``torch.ops.aten.native_batch_norm_backward``.

    With :math:`\hat x = (x - \mu) r` per channel over the M elements of the channel,
    :math:`g = \gamma\, dy`:

    .. math:: dx = r \left(g - \tfrac{1}{M}\textstyle\sum g
              - \hat x \tfrac{1}{M}\sum g \hat x\right), \quad
              d\gamma = \textstyle\sum dy\,\hat x, \quad d\beta = \sum dy

    ``train=True`` uses ``save_mean`` / ``save_invstd`` (from :func:`native_batch_norm`);
    ``train=False`` uses the running statistics (:math:`r = 1/\sqrt{\text{running\_var} +
    \epsilon}`) as constants: :math:`dx = r g`, as torch's eval-mode backward.

    Parameters
    ----------
    grad_out : ndarray of the input's shape and dtype
    input : ndarray (N, C, *)
    weight : array_like (C,) or None
    running_mean, running_var : array_like (C,) or None (needed when ``train=False``)
    save_mean, save_invstd : array_like (C,) or None (needed when ``train=True``)
    train : bool
    eps : float
    output_mask : three bools: which of (grad_input, grad_weight, grad_bias) to compute

    Returns
    -------
    (grad_input, grad_weight, grad_bias), each None where ``output_mask`` is False.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> rng = np.random.default_rng(0)
    >>> x, dy = rng.standard_normal((2, 8, 3, 3)), rng.standard_normal((8, 3, 3))
    >>> y, m, r = F.native_batch_norm(x[0], None, None, None, None, True, 0.1, 1e-5)
    >>> gx, gw, gb = F.native_batch_norm_backward(dy, x[0], None, None, None, m, r, True, 1e-5,
    ...                                           [True, True, True])
    >>> gx.shape, bool(np.allclose(gb, dy.sum(axis=(0, 2))))
    ((8, 3, 3), True)
    """
    return _backward.native_batch_norm_backward(grad_out, input, weight, running_mean,
                                                running_var, save_mean, save_invstd, train, eps,
                                                output_mask)


def native_instance_norm(input, weight, bias, running_mean, running_var, use_input_stats,
                         momentum, eps):
    r"""Instance norm that also returns its statistics: ``(output, save_mean, save_invstd)``,
    per (n, c) of shape (N, C), float64 (empty arrays when ``use_input_stats=False``). Arguments
    as :func:`instance_norm`, in the order of :func:`native_batch_norm` (torch has no separate
    aten op: it runs batch norm on the input seen as (1, N*C, *)).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 16))
    >>> y, m, r = F.native_instance_norm(x, None, None, None, None, True, 0.1, 1e-5)
    >>> m.shape, bool(np.allclose(m, x.mean(axis=2)))
    ((2, 3), True)
    """
    return _backward.native_instance_norm(input, weight, bias, running_mean, running_var,
                                          use_input_stats, momentum, eps)


def native_instance_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean,
                                  save_invstd, use_input_stats, eps, output_mask):
    r"""Gradients of :func:`native_instance_norm`: the formula of
    :func:`native_batch_norm_backward` per (n, c) over the spatial axes (``save_mean`` /
    ``save_invstd`` of shape (N, C)); with ``use_input_stats=False`` the running statistics are
    constants. Returns ``(grad_input, grad_weight, grad_bias)`` as ``output_mask`` asks.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 16))
    >>> y, m, r = F.native_instance_norm(x, None, None, None, None, True, 0.1, 1e-5)
    >>> gx, _, _ = F.native_instance_norm_backward(np.ones_like(x), x, None, None, None, m, r,
    ...                                            True, 1e-5, [True, False, False])
    >>> bool(np.allclose(gx, 0))  # a constant gradient of a normalized output vanishes
    True
    """
    return _backward.native_instance_norm_backward(grad_out, input, weight, running_mean,
                                                   running_var, save_mean, save_invstd,
                                                   use_input_stats, eps, output_mask)


def native_layer_norm(input, normalized_shape, weight, bias, eps):
    r"""Layer norm that also returns ``(output, mean, rstd)``, as
    ``torch.ops.aten.native_layer_norm``: mean and :math:`1/\sqrt{\mathrm{Var}+\epsilon}` keep
    the normalized axes as size 1 (shape ``(*, 1, ..., 1)``), float64.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.random.default_rng(0).standard_normal((4, 5, 6)).astype(np.float32)
    >>> y, mean, rstd = F.native_layer_norm(x, (5, 6), None, None, 1e-5)
    >>> mean.shape, rstd.dtype
    ((4, 1, 1), dtype('float64'))
    """
    return _backward.native_layer_norm(input, normalized_shape, weight, bias, eps)


def native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias,
                               output_mask):
    r"""Gradients of :func:`native_layer_norm`, as ``torch.ops.aten.native_layer_norm_backward``:
    per row, with :math:`g = \gamma \odot dy`,
    :math:`dx = r (g - \overline{g} - \hat x\, \overline{g \hat x})`;
    :math:`d\gamma = \sum_{rows} dy\, \hat x`, :math:`d\beta = \sum_{rows} dy`.
    grad_weight (grad_bias) is None when ``weight`` (``bias``) is None.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> rng = np.random.default_rng(0)
    >>> x, w, b = rng.standard_normal((4, 6)), np.ones(6), np.zeros(6)
    >>> y, m, r = F.native_layer_norm(x, 6, w, b, 1e-5)
    >>> gx, gw, gb = F.native_layer_norm_backward(y, x, 6, m, r, w, b, [True, True, True])
    >>> gw.shape, bool(np.allclose(gb, y.sum(axis=0)))
    ((6,), True)
    """
    return _backward.native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd,
                                                weight, bias, output_mask)


def native_group_norm(input, weight, bias, N, C, HxW, group, eps):
    r"""Group norm that also returns ``(output, mean, rstd)`` of shape (N, group), float64, as
    ``torch.ops.aten.native_group_norm``; ``input`` is (N, C, *) with ``HxW`` spatial elements.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.random.default_rng(0).standard_normal((2, 6, 4, 4))
    >>> y, mean, rstd = F.native_group_norm(x, None, None, 2, 6, 16, 3, 1e-5)
    >>> mean.shape
    (2, 3)
    """
    return _backward.native_group_norm(input, weight, bias, N, C, HxW, group, eps)


def native_group_norm_backward(grad_out, input, mean, rstd, weight, N, C, HxW, group,
                               output_mask):
    r"""Gradients of :func:`native_group_norm`, as ``torch.ops.aten.native_group_norm_backward``:
    the formula of :func:`native_batch_norm_backward` per (n, group) with per-channel
    :math:`\gamma`. grad_weight and grad_bias are None without ``weight``.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.standard_normal((2, 6, 4, 4)), np.ones(6)
    >>> y, m, r = F.native_group_norm(x, w, None, 2, 6, 16, 3, 1e-5)
    >>> gx, gw, gb = F.native_group_norm_backward(np.ones_like(x), x, m, r, w, 2, 6, 16, 3,
    ...                                           [True, True, True])
    >>> bool(np.allclose(gx, 0)), gb.tolist()
    (True, [32.0, 32.0, 32.0, 32.0, 32.0, 32.0])
    """
    return _backward.native_group_norm_backward(grad_out, input, mean, rstd, weight, N, C, HxW,
                                                group, output_mask)


def native_rms_norm(input, normalized_shape, weight, eps):
    r"""RMS norm that also returns ``rstd`` = :math:`1/\sqrt{\mathrm{E}[x^2] + \epsilon}` per
    row (shape ``(*, 1, ..., 1)``, float64): ``(output, rstd)``, with the semantics of
    ``torch.ops.aten._fused_rms_norm`` (``eps=None``: as ``rms_norm``).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> y, rstd = F.native_rms_norm(np.array([[3.0, 4.0]]), [2], None, 0.0)
    >>> rstd.round(6).tolist()
    [[0.282843]]
    """
    return _backward.native_rms_norm(input, normalized_shape, weight, eps)


def native_rms_norm_backward(grad_out, input, normalized_shape, rstd, weight, output_mask):
    r"""Gradients of :func:`native_rms_norm`, ``(grad_input, grad_weight)`` as ``output_mask``
    (two bools) asks, with the semantics of ``torch.ops.aten._fused_rms_norm_backward``:
    :math:`dx = r (g - \hat x\, \overline{g \hat x})`, :math:`\hat x = x r`,
    :math:`g = \gamma \odot dy`; :math:`d\gamma = \sum_{rows} dy\, \hat x` (None without
    ``weight``).

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x, w = np.array([[3.0, 4.0]]), np.ones(2)
    >>> y, r = F.native_rms_norm(x, [2], w, 0.0)
    >>> gx, gw = F.native_rms_norm_backward(y, x, [2], r, w, [True, True])
    >>> bool(np.allclose(gx, 0)), gw.round(6).tolist()  # y is scale-invariant in x
    (True, [0.72, 1.28])
    """
    return _backward.native_rms_norm_backward(grad_out, input, normalized_shape, rstd, weight,
                                              output_mask)


def _switch_input(input, fn, mean_weight, running_mean, training):
    x = input if isinstance(input, np.ndarray) else np.asarray(input)
    if not _checks.is_float_dtype(x.dtype) or x.ndim < 2:
        raise TypeError(f"{fn}: expected an input of dtype {_checks.ACCEPTED_DTYPES} and shape "
                        f"(N, C, *), got "
                        f"dtype {x.dtype} and shape {x.shape}")
    if not x.dtype.isnative or not x.flags.aligned:
        x = x.astype(x.dtype.newbyteorder("="))
    N, C = x.shape[:2]
    k = np.size(mean_weight)
    if x.ndim == 2:
        if k != 2 or running_mean is None:
            raise ValueError(f"{fn}: (N, C) input mixes LN and BN: expected 2 mixing weights "
                             f"and running statistics, got {k} weights")
        if C < 2 or (training and N < 2):
            raise ValueError(f"{fn}: the variances are unbiased: expected C > 1 (and N > 1 in "
                             f"training), got input of shape {x.shape}")
    else:
        if k not in (2, 3) or (k == 3) != (running_mean is not None):
            raise ValueError(f"{fn}: expected 3 mixing weights with running statistics (IN, LN, "
                             f"BN) or 2 without (IN, LN), got {k}")
        if x.size // max(N * C, 1) < 2:
            raise ValueError(f"{fn}: expected more than 1 spatial element per channel (the "
                             f"instance variance is unbiased), got input of shape {x.shape}")
    return x


def native_switch_norm(input, weight, bias, mean_weight, var_weight, running_mean, running_var,
                       training, momentum, eps, using_moving_average=True):
    r"""Switchable Normalization (see :class:`fastnorm.SwitchNorm2d` for the statistics and
    their mixing with ``softmax(mean_weight)``, ``softmax(var_weight)``) that also returns the
    mixed statistics: ``(output, save_mean, save_invstd)``, per (n, c) of shape (N, C), float64.
    In training the running statistics (when given) are updated in place as the layers do
    (``momentum`` is the share kept). There is no torch op: named after the aten pattern.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> x = np.random.default_rng(0).standard_normal((4, 3, 5, 5))
    >>> rm, rv = np.zeros((1, 3, 1)), np.zeros((1, 3, 1))
    >>> y, m, r = F.native_switch_norm(x, None, None, np.ones(3), np.ones(3), rm, rv, True,
    ...                                0.9, 1e-5)
    >>> y.shape, m.shape, bool(rm.any())
    ((4, 3, 5, 5), (4, 3), True)
    """
    fn = "native_switch_norm"
    x = _switch_input(input, fn, mean_weight, running_mean, training)
    N, C = x.shape[:2]
    if x.size == 0:
        return np.empty_like(x), np.zeros((N, C)), np.zeros((N, C))
    mean, var, p = _switch.stats(x, mean_weight, var_weight, running_mean, running_var, training)
    mean, var = np.broadcast_to(mean, (N, C)), np.broadcast_to(var, (N, C))
    w = None if weight is None else np.asarray(weight).reshape(C)
    b = None if bias is None else np.asarray(bias).reshape(C)
    y = _kernels.normalize_nc(x, mean, var, w, b, eps)
    if training and running_mean is not None:  # after the output exists
        _switch.update_running(running_mean, running_var, p["mean_bn"], p["var_bn"], momentum,
                               using_moving_average)
    return y, np.ascontiguousarray(mean), 1.0 / np.sqrt(var + eps)


def native_switch_norm_backward(grad_out, input, weight, mean_weight, var_weight, running_mean,
                                running_var, save_mean, save_invstd, training, eps, output_mask):
    r"""Gradients of :func:`native_switch_norm`: ``(grad_input, grad_weight, grad_bias,
    grad_mean_weight, grad_var_weight)`` as ``output_mask`` (five bools) asks, through the
    mixing of the IN, LN and BN statistics and the softmax of the mixing weights (in eval mode
    the BN statistics are the running ones, constants). grad_weight has ``weight``'s shape.

    Examples
    --------
    >>> import numpy as np, fastnorm.functional as F
    >>> rng = np.random.default_rng(0)
    >>> x, dy = rng.standard_normal((4, 3, 5, 5)), rng.standard_normal((4, 3, 5, 5))
    >>> mw, vw, w = np.ones(2), np.ones(2), np.ones(3)
    >>> y, m, r = F.native_switch_norm(x, w, None, mw, vw, None, None, True, 0.9, 1e-5)
    >>> g = F.native_switch_norm_backward(dy, x, w, mw, vw, None, None, m, r, True, 1e-5,
    ...                                   [True] * 5)
    >>> [a.shape for a in g]
    [(4, 3, 5, 5), (3,), (3,), (2,), (2,)]
    """
    fn = "native_switch_norm_backward"
    mask = _backward.check_mask(output_mask, 5, fn)
    x = _switch_input(input, fn, mean_weight, running_mean, training)
    dy = np.asarray(grad_out)
    if dy.shape != x.shape or dy.dtype != x.dtype:
        raise ValueError(f"{fn}: expected grad_out of the input's shape {x.shape} and dtype "
                         f"{x.dtype}, got {dy.shape} {dy.dtype}")
    if not dy.dtype.isnative or not dy.flags.aligned:
        dy = dy.astype(dy.dtype.newbyteorder("="))
    N, C = x.shape[:2]
    mean = _backward.stat(save_mean, "save_mean", fn, (N, C))
    rstd = _backward.stat(save_invstd, "save_invstd", fn, (N, C))
    _, _, p = _switch.stats(x, mean_weight, var_weight, running_mean, running_var, training)
    gx, gw, gb, gmw, gvw = _switch.backward(dy, x, weight, mean, rstd, p, training, mask)

    def cast(g, like):
        if g is None:
            return None
        like = np.asarray(like) if like is not None else x
        return g.reshape(np.shape(like) if like is not x else g.shape).astype(like.dtype)
    return (gx, cast(gw, weight), cast(gb, weight), cast(gmw, mean_weight),
            cast(gvw, var_weight))
