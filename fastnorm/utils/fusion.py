r"""Folding an eval-mode BatchNorm into the convolution or linear layer before it, as
``torch.nn.utils.fusion`` does, on NumPy arrays.

In eval mode BatchNorm is the per-channel affine map
:math:`y = (z - \mu) / \sqrt{\sigma^2 + \epsilon} \, \gamma + \beta` of the layer's output
:math:`z = W x + b`, so the two collapse into one layer with

.. math::

    s = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}}, \qquad
    W' = s \odot W \ \text{(per output channel)}, \qquad b' = (b - \mu)\, s + \beta

and inference skips the normalization pass. The functions take and return plain arrays (torch
tensors are accepted as input and converted), compute in float64 and return the weight in the
weight's dtype and the bias in the bias's dtype (the weight's when there is no bias), as torch
does; the inputs are never modified.
"""
import numpy as np

from .. import _checks

__all__ = ["fuse_conv_bn_weights", "fuse_linear_bn_weights", "fuse_conv_bn_eval",
           "fuse_linear_bn_eval"]


def _native(dtype):
    """A result dtype: the argument's, in native byte order."""
    return dtype.newbyteorder("=")


def _array(a, name, fn, float_only=True):
    arr = _checks.to_numpy(a)
    # is_float_dtype: bfloat16 too (ml_dtypes' kind is "V")
    floating = arr.dtype.kind == "f" or _checks.is_float_dtype(arr.dtype)
    if not (floating or (not float_only and arr.dtype.kind in "iu")):
        raise TypeError(f"{fn}: {name} must be a {'floating' if float_only else 'real'}-valued "
                        f"array, got dtype {arr.dtype}")
    return arr


def _channel_vector(a, name, fn, C, fill):
    """A per-channel array of C float64 values (``fill`` where a is None); size 1 broadcasts
    where ``C`` is None (fuse_linear_bn_weights' single-feature BatchNorm)."""
    if a is None:
        return None if fill is None else np.full(C, fill, np.float64)
    arr = _array(a, name, fn, float_only=False)
    if arr.ndim != 1 or arr.shape[0] != C:
        raise ValueError(f"{fn}: expected {name} of shape ({C},), got shape {arr.shape}")
    return arr.astype(np.float64)


def _scaled(w, s):
    """w * s computed in float64 and rounded once into w's dtype (in blocks by the ufunc: no
    float64 copy of the whole weight)."""
    out = np.empty(w.shape, _native(w.dtype))
    np.multiply(w, s, out=out, dtype=np.float64, casting="same_kind")
    return out


def _scale_shift(fn, C, bn_rm, bn_rv, bn_eps, bn_w, bn_b, bias):
    """(s, b'): the per-channel scale and the fused bias, in float64."""
    eps = _checks.check_eps(bn_eps, fn)
    rm = _channel_vector(bn_rm, "bn_rm", fn, C, None)
    rv = _channel_vector(bn_rv, "bn_rv", fn, C, None)
    if rm is None or rv is None:
        raise TypeError(f"{fn}: bn_rm and bn_rv must be arrays (the BatchNorm's running "
                        f"statistics), got None")
    w = _channel_vector(bn_w, "bn_w", fn, C, 1.0)
    b = _channel_vector(bn_b, "bn_b", fn, C, 0.0)
    s = w / np.sqrt(rv + eps)
    return s, (bias - rm) * s + b


def fuse_conv_bn_weights(conv_w, conv_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, transpose=False):
    r"""Fold an eval-mode BatchNorm into the convolution before it: the weight and bias of the one
    convolution that computes ``bn(conv(x))``, as ``torch.nn.utils.fusion.fuse_conv_bn_weights``.

    .. math::

        s = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}}, \quad
        W'_{o\ldots} = s_o W_{o\ldots}, \quad b' = (b - \mu) s + \beta

    Parameters
    ----------
    conv_w : ndarray, shape (C_out, C_in / groups, *kernel)
        With ``transpose=True`` a transposed convolution's weight, (C_in, C_out, *kernel): the
        output channels are axis 1 (one group).
    conv_b : ndarray of shape (C_out,) or None
        None: a convolution without bias (the fused one has a bias).
    bn_rm, bn_rv : ndarray of shape (C_out,)
        The BatchNorm's ``running_mean`` and ``running_var``.
    bn_eps : float
    bn_w, bn_b : ndarray of shape (C_out,) or None
        The BatchNorm's ``weight`` and ``bias`` (1 and 0 when None, as for ``affine=False``).
    transpose : bool, default False

    Returns
    -------
    (fused_w, fused_b) : new ndarrays, computed in float64; ``fused_w`` has ``conv_w``'s shape and
    dtype, ``fused_b`` shape (C_out,) and ``conv_b``'s dtype (``conv_w``'s when it is None).

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm.utils import fuse_conv_bn_weights
    >>> w = np.ones((2, 1, 3, 3), np.float32)
    >>> fw, fb = fuse_conv_bn_weights(w, None, np.array([1.0, -1.0]), np.array([4.0, 0.25]),
    ...                               0.0, None, np.array([0.5, 0.0]))
    >>> fw[:, 0, 0, 0], fb
    (array([0.5, 2. ], dtype=float32), array([0., 2.], dtype=float32))
    """
    fn = "fuse_conv_bn_weights"
    w = _array(conv_w, "conv_w", fn)
    axis = 1 if transpose else 0
    if w.ndim < 2:
        raise ValueError(f"{fn}: expected conv_w of at least 2 dimensions (output channels on "
                         f"axis {axis}), got shape {w.shape}")
    C = w.shape[axis]
    b_dtype = _native(w.dtype if conv_b is None else _array(conv_b, "conv_b", fn).dtype)
    b = _channel_vector(conv_b, "conv_b", fn, C, 0.0)
    s, fused_b = _scale_shift(fn, C, bn_rm, bn_rv, bn_eps, bn_w, bn_b, b)
    shape = [1] * w.ndim
    shape[axis] = C
    return _scaled(w, s.reshape(shape)), fused_b.astype(b_dtype)


def fuse_linear_bn_weights(linear_w, linear_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b):
    r"""Fold an eval-mode BatchNorm1d into the linear layer before it, as
    ``torch.nn.utils.fusion.fuse_linear_bn_weights``: :math:`s = \gamma / \sqrt{\sigma^2 +
    \epsilon}`, :math:`W' = s \odot W` (row o scaled by :math:`s_o`), :math:`b' = (b - \mu) s +
    \beta`.

    Parameters
    ----------
    linear_w : ndarray, shape (out_features, in_features)
    linear_b : ndarray of shape (out_features,) or None
    bn_rm, bn_rv : ndarray of shape (out_features,) or (1,)
        A BatchNorm over one feature applies to every output (broadcast), as in torch.
    bn_eps : float
    bn_w, bn_b : ndarray of the BatchNorm's shape
        Required, as in torch (for a BatchNorm without affine parameters pass ones and zeros, or
        use :func:`fuse_linear_bn_eval`).

    Returns
    -------
    (fused_w, fused_b) : new ndarrays, computed in float64; ``fused_w`` has ``linear_w``'s shape
    and dtype, ``fused_b`` shape (out_features,) and ``linear_b``'s dtype (``linear_w``'s when it
    is None).

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm.utils import fuse_linear_bn_weights
    >>> fw, fb = fuse_linear_bn_weights(np.eye(2), np.array([1.0, 2.0]), np.zeros(2),
    ...                                 np.array([4.0, 1.0]), 0.0, np.ones(2), np.zeros(2))
    >>> fw, fb
    (array([[0.5, 0. ],
           [0. , 1. ]]), array([0.5, 2. ]))
    """
    fn = "fuse_linear_bn_weights"
    w = _array(linear_w, "linear_w", fn)
    if w.ndim != 2:
        raise ValueError(f"{fn}: expected linear_w of shape (out_features, in_features), got "
                         f"shape {w.shape}")
    if bn_w is None or bn_b is None:
        raise TypeError(f"{fn}: bn_w and bn_b must be arrays (as in torch), got "
                        f"{'None' if bn_w is None else 'an array'} and "
                        f"{'None' if bn_b is None else 'an array'}")
    out = w.shape[0]
    # as torch: a BatchNorm over one feature broadcasts over every output
    C = 1 if _checks.to_numpy(bn_rm).size == 1 and out != 1 else out
    b_dtype = _native(w.dtype if linear_b is None else _array(linear_b, "linear_b", fn).dtype)
    b = _channel_vector(linear_b, "linear_b", fn, out, 0.0)
    s, fused_b = _scale_shift(fn, C, bn_rm, bn_rv, bn_eps, bn_w, bn_b, b)
    return _scaled(w, s[:, np.newaxis]), fused_b.astype(b_dtype)


def _eval_bn(bn, fn):
    """The running statistics and affine parameters of an eval-mode BatchNorm layer (fastnorm's,
    or anything with the same attributes: a torch BatchNorm too)."""
    if getattr(bn, "training", False):
        raise ValueError(f"{fn}: fusion only for eval: call bn.eval() first (a training-mode "
                         f"BatchNorm normalizes with batch statistics, which no weights can hold)")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{fn}: bn.running_mean and bn.running_var must not be None "
                         f"(track_running_stats=True)")
    return bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias


def fuse_conv_bn_eval(conv_w, conv_b, bn, transpose=False):
    """:func:`fuse_conv_bn_weights` with the statistics and parameters of an eval-mode
    BatchNorm layer ``bn`` (e.g. ``fastnorm.BatchNorm2d``). Unlike torch's function of the same
    name, which takes and returns a Conv module, this one takes the convolution's weight and bias
    and returns the fused ``(weight, bias)`` arrays.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> from fastnorm.utils import fuse_conv_bn_eval
    >>> bn = fastnorm.BatchNorm2d(2, dtype=np.float64).eval()
    >>> bn.running_var[...] = [4.0, 1.0]
    >>> fw, fb = fuse_conv_bn_eval(np.ones((2, 1, 1, 1)), np.array([2.0, 3.0]), bn)
    >>> fw.ravel().round(4), fb.round(4)
    (array([0.5, 1. ]), array([1., 3.]))
    """
    rm, rv, eps, w, b = _eval_bn(bn, "fuse_conv_bn_eval")
    return fuse_conv_bn_weights(conv_w, conv_b, rm, rv, eps, w, b, transpose)


def fuse_linear_bn_eval(linear_w, linear_b, bn):
    """:func:`fuse_linear_bn_weights` with the statistics and parameters of an eval-mode
    BatchNorm layer ``bn`` (``fastnorm.BatchNorm1d``); a BatchNorm without affine parameters
    counts as weight 1 and bias 0. Takes and returns arrays (torch's takes a Linear module).

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> from fastnorm.utils import fuse_linear_bn_eval
    >>> bn = fastnorm.BatchNorm1d(2, affine=False).eval()
    >>> fw, fb = fuse_linear_bn_eval(np.eye(2, dtype=np.float32), None, bn)
    >>> fw.dtype, fb.shape
    (dtype('float32'), (2,))
    """
    fn = "fuse_linear_bn_eval"
    rm, rv, eps, w, b = _eval_bn(bn, fn)
    n = _checks.to_numpy(rm).size
    lw = _checks.to_numpy(linear_w)
    out = lw.shape[0] if lw.ndim else 0
    if n != out and n != 1:
        raise ValueError(f"{fn}: to fuse, linear_w.shape[0] (out_features) must equal "
                         f"bn.num_features, or bn.num_features must be 1; got out_features={out} "
                         f"and bn.num_features={n}")
    return fuse_linear_bn_weights(lw, linear_b, rm, rv, eps,
                                  np.ones(n) if w is None else w, np.zeros(n) if b is None else b)
