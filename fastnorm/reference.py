"""Plain NumPy versions of every fastnorm op: the oracle of the tests (in float64) and the baseline
of the benchmarks (in the input's dtype, as a NumPy user would write it).

Deliberately simple (the model is bottleneck's ``slow`` module): each function converts its
arguments to ``dtype`` (keyword-only, float64 by default), takes the mean and the *two-pass*
biased variance with NumPy over the axes the op reduces, and applies the textbook formula

    y = (x - mean) / sqrt(var + eps) * weight + bias

No blocking, no threads, no fused tricks, no validation beyond what NumPy does itself. Signatures
mirror ``fastnorm.functional`` (``dtype=`` instead of ``out=``); results have dtype ``dtype``.
Running statistics passed in are updated in place, as ``torch.nn.functional`` does.
"""
import math

import numpy as np

__all__ = ["moments", "batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm",
           "switch_norm", "filter_response_norm", "conditional_batch_norm", "batch_group_norm",
           "mask_power_norm", "spectral_norm", "add_layer_norm", "add_rms_norm", "activate"]


def _as(a, dtype):
    return None if a is None else np.asarray(a, dtype=dtype)


def _channel_shape(x):
    """Shape that broadcasts a per-channel vector against x (N, C, *)."""
    return (1, -1) + (1,) * (x.ndim - 2)


def _moments(x, axes):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return mean, var


def moments(input, axis=None, *, ddof=0, keepdims=False, dtype=np.float64):
    """Mean and variance over ``axis`` (NumPy's conventions): the two-pass
    ``sum((x - mean)**2) / max(n - ddof, 0)``, as ``np.var``."""
    x = _as(input, dtype)
    mean = x.mean(axis=axis, keepdims=True)
    n = x.size // max(mean.size, 1) if x.size else 0
    var = ((x - mean) ** 2).sum(axis=axis, keepdims=keepdims) / max(n - ddof, 0)
    return (mean if keepdims else np.squeeze(mean, axis=axis)), var


def _affine(y, weight, bias, shape):
    if weight is not None:
        y = y * _as(weight, y.dtype).reshape(shape)
    if bias is not None:
        y = y + _as(bias, y.dtype).reshape(shape)
    return y


def activate(y, activation):
    """The activation (None, "relu", "silu", "gelu", "gelu_tanh") by its textbook formula, in
    y's dtype (gelu's erf with math.erf, elementwise)."""
    if activation is None:
        return y
    if activation == "relu":
        return np.where(y < 0, 0, y).astype(y.dtype)
    if activation == "silu":
        return y / (1 + np.exp(-y))
    if activation == "gelu":
        erf = np.frompyfunc(math.erf, 1, 1)
        return (0.5 * y * (1 + erf(y / math.sqrt(2)).astype(y.dtype))).astype(y.dtype)
    if activation == "gelu_tanh":
        return 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))
    raise ValueError(f"unknown activation {activation!r}")


def _update(running, stat, momentum):
    running[...] = (1.0 - momentum) * running.astype(np.float64) + momentum * stat


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, dtype=np.float64, activation=None):
    """Batch norm of ``input`` (N, C, *): per channel over N and the spatial axes."""
    x = _as(input, dtype)
    axes = (0,) + tuple(range(2, x.ndim))
    if training:
        mean, var = _moments(x, axes)
        if running_mean is not None and x.size:  # an empty batch leaves them (torch)
            n = x.size // x.shape[1]
            _update(running_mean, mean.ravel(), momentum)
            _update(running_var, var.ravel() * n / (n - 1), momentum)
    else:
        mean = _as(running_mean, dtype).reshape(_channel_shape(x))
        var = _as(running_var, dtype).reshape(_channel_shape(x))
    y = (x - mean) / np.sqrt(var + eps)
    return activate(_affine(y, weight, bias, _channel_shape(x)), activation)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5, *, dtype=np.float64):
    """Instance norm of ``input`` (N, C, *): per (sample, channel) over the spatial axes."""
    x = _as(input, dtype)
    if not use_input_stats:
        return batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps,
                          dtype=dtype)
    axes = tuple(range(2, x.ndim))
    mean, var = _moments(x, axes)
    if running_mean is not None and x.size:
        n = x.size // (x.shape[0] * x.shape[1])
        # batch average of the per-instance mean and unbiased variance
        _update(running_mean, mean.reshape(x.shape[:2]).mean(axis=0), momentum)
        _update(running_var, (var.reshape(x.shape[:2]) * n / (n - 1)).mean(axis=0), momentum)
    # eps = 0: 1 / sqrt(var + eps) is taken as 0 on constant planes (their variance exactly 0,
    # which the two-pass var above may miss by rounding: a plane of 0.1s), so they give the bias
    flat = (np.ptp(x, axis=axes, keepdims=True) == 0) if eps == 0 and x.size else False
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(flat, 0.0, (x - mean) / np.sqrt(var + eps))
    return _affine(y, weight, bias, _channel_shape(x))


def _trailing(normalized_shape):
    return (normalized_shape,) if np.ndim(normalized_shape) == 0 else tuple(normalized_shape)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, dtype=np.float64,
               activation=None):
    """Layer norm over the trailing ``normalized_shape`` axes, elementwise affine."""
    x = _as(input, dtype)
    ns = _trailing(normalized_shape)
    axes = tuple(range(x.ndim - len(ns), x.ndim))
    mean, var = _moments(x, axes)
    y = (x - mean) / np.sqrt(var + eps)
    return activate(_affine(y, weight, bias, ns), activation)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *, dtype=np.float64,
               activation=None):
    """Group norm of ``input`` (N, C, *): per (sample, group of C // num_groups channels)."""
    x = _as(input, dtype)
    if x.size == 0:  # (reshape cannot infer -1 from no elements)
        return activate(_affine(x.copy(), weight, bias, _channel_shape(x)), activation)
    xg = x.reshape((x.shape[0], num_groups, -1))
    mean, var = _moments(xg, (2,))
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return activate(_affine(y, weight, bias, _channel_shape(x)), activation)


def rms_norm(input, normalized_shape, weight=None, eps=None, *, dtype=np.float64, activation=None):
    """RMS norm over the trailing ``normalized_shape`` axes: x / sqrt(mean(x^2) + eps) * weight.
    ``eps=None`` is the machine epsilon of the type torch computes the input in: float64's for
    float64 (and any input that is not float32, float16 or bfloat16), float32's for those."""
    if eps is None:
        in_dtype = np.asarray(input).dtype.newbyteorder("=")  # byte-swapped float32 too
        low = in_dtype.name == "bfloat16" or in_dtype in (np.float16, np.float32)
        eps = np.finfo(np.float32 if low else np.float64).eps
    x = _as(input, dtype)
    ns = _trailing(normalized_shape)
    axes = tuple(range(x.ndim - len(ns), x.ndim))
    y = x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    return activate(_affine(y, weight, None, ns), activation)


def add_layer_norm(input, residual, normalized_shape, weight=None, bias=None, eps=1e-5, *,
                   dtype=np.float64, activation=None):
    """layer_norm of ``input + residual``, the sum taken in the input's dtype (as NumPy stores
    it) and normalized in ``dtype``."""
    s = np.add(np.asarray(input), np.asarray(residual))
    return layer_norm(s, normalized_shape, weight, bias, eps, dtype=dtype, activation=activation)


def add_rms_norm(input, residual, normalized_shape, weight=None, eps=None, *, dtype=np.float64,
                 activation=None):
    """rms_norm of ``input + residual``, the sum taken in the input's dtype."""
    s = np.add(np.asarray(input), np.asarray(residual))
    return rms_norm(s, normalized_shape, weight, eps, dtype=dtype, activation=activation)


def _unbiased_moments(x, axes):
    """Mean and two-pass *unbiased* variance (torch's ``Tensor.var`` default)."""
    mean = x.mean(axis=axes, keepdims=True)
    n = int(np.prod([x.shape[a] for a in axes]))
    var = ((x - mean) ** 2).sum(axis=axes, keepdims=True) / (n - 1)
    return mean, var


def _softmax(w, dtype):
    w = np.asarray(w, dtype=dtype)
    e = np.exp(w - w.max())
    return e / e.sum()


def _update_switch(running, stat, momentum, using_moving_average, sum_extra=0.0):
    """Switchable Normalization's update: ``momentum`` is the share of the old value kept; or,
    without moving average, a plain sum ``running += sum_extra + stat`` (the authors' running
    variance adds ``mean**2 + var``)."""
    old = running.astype(np.float64)
    stat = np.asarray(stat, np.float64).reshape(running.shape)
    if using_moving_average:
        running[...] = momentum * old + (1.0 - momentum) * stat
    else:
        extra = np.asarray(sum_extra, np.float64)
        running[...] = old + ((extra.reshape(running.shape) if extra.ndim else extra) + stat)


def switch_norm(input, running_mean, running_var, weight, bias, mean_weight, var_weight,
                training=False, momentum=0.9, eps=1e-5, using_moving_average=True,
                using_bn=True, *, dtype=np.float64):
    """Switchable Normalization (Luo et al. 2018), as the authors' SwitchNorm1d/2d/3d.

    ``input`` (N, C, *spatial): IN statistics per (n, c) (mean, unbiased variance), LN and BN
    statistics derived from them, mixed with ``softmax(mean_weight)`` / ``softmax(var_weight)``
    (3 weights: IN, LN, BN; 2 with ``using_bn=False``: IN, LN and no running statistics).
    ``input`` (N, C): the 1d variant, LN (per row over C) and BN (per channel over N) with
    unbiased variances, 2 weights.
    In training the BN statistics update the running ones in place (``momentum`` kept, or summed
    without moving average); in eval the running ones are the BN statistics.
    """
    # C order: the LN/BN variances cancel (E[v + m^2] - E[m]^2), so keep the summation order
    # independent of the input's memory layout
    x = np.ascontiguousarray(_as(input, dtype))
    mw, vw = _softmax(mean_weight, dtype), _softmax(var_weight, dtype)
    shape = _channel_shape(x)
    if x.ndim == 2:
        mean_ln, var_ln = _unbiased_moments(x, (1,))
        if training:
            mean_bn, var_bn = _unbiased_moments(x, (0,))
            _update_switch(running_mean, mean_bn, momentum, using_moving_average)
            _update_switch(running_var, var_bn, momentum, using_moving_average, sum_extra=mean_bn ** 2)
        else:
            mean_bn = _as(running_mean, dtype).reshape(shape)
            var_bn = _as(running_var, dtype).reshape(shape)
        mean = mw[0] * mean_ln + mw[1] * mean_bn
        var = vw[0] * var_ln + vw[1] * var_bn
        y = (x - mean) / np.sqrt(var + eps)
        return _affine(y, weight, bias, shape)
    xs = x.reshape(x.shape[0], x.shape[1], -1)
    mean_in, var_in = _unbiased_moments(xs, (2,))
    mean_ln = mean_in.mean(axis=1, keepdims=True)
    temp = var_in + mean_in ** 2
    var_ln = temp.mean(axis=1, keepdims=True) - mean_ln ** 2
    mean = mw[0] * mean_in + mw[1] * mean_ln
    var = vw[0] * var_in + vw[1] * var_ln
    if using_bn:
        if training:
            mean_bn = mean_in.mean(axis=0, keepdims=True)
            var_bn = temp.mean(axis=0, keepdims=True) - mean_bn ** 2
            _update_switch(running_mean, mean_bn, momentum, using_moving_average)
            _update_switch(running_var, var_bn, momentum, using_moving_average, sum_extra=mean_bn ** 2)
        else:
            mean_bn = _as(running_mean, dtype).reshape(1, -1, 1)
            var_bn = _as(running_var, dtype).reshape(1, -1, 1)
        mean = mean + mw[2] * mean_bn
        var = var + vw[2] * var_bn
    y = ((xs - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return _affine(y, weight, bias, shape)


def filter_response_norm(input, weight=None, bias=None, tau=None, eps=1e-5, *, dtype=np.float64):
    """Filter Response Normalization + TLU (timm's FilterResponseNormTlu2d) of ``input``
    (N, C, *): max(weight * x / sqrt(mean(x^2 over the spatial axes) + eps) + bias, tau)."""
    x = _as(input, dtype)
    shape = _channel_shape(x)
    nu2 = (x * x).mean(axis=tuple(range(2, x.ndim)), keepdims=True)
    y = _affine(x / np.sqrt(nu2 + eps), weight, bias, shape)
    return y if tau is None else np.maximum(y, _as(tau, dtype).reshape(shape))


def conditional_batch_norm(input, labels, embed_weight, running_mean, running_var, weight=None,
                           bias=None, training=False, momentum=0.1, eps=1e-5, *,
                           dtype=np.float64):
    """Batch norm (with its own weight/bias when given: Sandwich BN), then the per-sample affine
    ``gamma * y + beta`` with ``[gamma, beta] = embed_weight[labels]`` (the first C columns are
    gamma): the authors' CategoricalConditionalBatchNorm2d and SandwichBatchNorm2d."""
    y = batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps,
                   dtype=dtype)
    C = y.shape[1]
    e = _as(embed_weight, dtype)[np.asarray(labels)]
    shape = (-1, C) + (1,) * (y.ndim - 2)
    return e[:, :C].reshape(shape) * y + e[:, C:].reshape(shape)


def batch_group_norm(input, num_groups, running_mean, running_var, weight=None, bias=None,
                     training=False, momentum=0.1, eps=1e-5, *, dtype=np.float64):
    """Batch Group Normalization (Zhou et al. 2020): each sample's C * H * W features split into
    ``num_groups`` groups, batch norm of the (N, G, C*H*W/G) view (statistics per group over the
    batch and the group's features, running statistics per group), per-channel affine."""
    x = _as(input, dtype)
    xg = x.reshape(x.shape[0], num_groups, int(np.prod(x.shape[1:])) // num_groups)
    y = batch_norm(xg, running_mean, running_var, None, None, training, momentum, eps,
                   dtype=dtype).reshape(x.shape)
    return _affine(y, weight, bias, _channel_shape(x))


def mask_power_norm(input, running_phi, iters, weight, bias, pad_mask=None, training=False,
                    alpha_fwd=0.9, warmup_iters=10000, group_num=1, eps=1e-5, *,
                    dtype=np.float64):
    """PowerNorm's forward (Shen et al. 2020, the authors' MaskPowerNorm) of ``input`` (T, B, C)
    or (B, C); ``pad_mask`` (B, T) is True at padding. Group scaling (each group of C/group_num
    features divided by its root mean square, eps 1e-5), then, in training, ``iters`` += 1 and
    z / sqrt(phi + eps) with phi the mean of z^2 per channel over the unpadded positions (during
    warm-up) or ``running_phi`` (after it), ``running_phi`` updated in place (a running average
    during warm-up, then ``alpha_fwd`` kept); in eval ``running_phi``. Then weight * z + bias."""
    x = _as(input, dtype)
    if x.ndim == 2:
        x = x[np.newaxis]
    T, B, C = x.shape
    g = x.reshape(T, B, group_num, C // group_num)
    z = (g / np.sqrt((g * g).mean(axis=3, keepdims=True) + 1e-5)).reshape(T, B, C)
    phi = running_phi.reshape(C).astype(np.float64)
    if training:
        iters += 1
        it = int(iters.reshape(-1)[0])
        rows = z.reshape(-1, C) if pad_mask is None else z[~np.asarray(pad_mask, bool).T]
        var = (rows * rows).mean(axis=0)
        y = z / np.sqrt((var if it <= warmup_iters else phi) + eps)
        if it < warmup_iters:
            phi = phi * (it - 1) / it + var / it
        running_phi[...] = (alpha_fwd * phi + (1 - alpha_fwd) * var).reshape(running_phi.shape)
    else:
        y = z / np.sqrt(phi + eps)
    y = y * _as(weight, dtype).reshape(C) + _as(bias, dtype).reshape(C)
    return y.reshape(np.shape(input))


def spectral_norm(weight, u, v, n_power_iterations=1, eps=1e-12, dim=0, training=True, *,
                  dtype=np.float64):
    """torch.nn.utils.spectral_norm's weight: W / sigma with sigma = u . (W_mat v), W_mat the
    weight with axis ``dim`` first, flattened to (W.shape[dim], -1); in training the power
    iteration (v = normalize(W_mat^T u), u = normalize(W_mat v), ``n_power_iterations`` times,
    normalize(a) = a / max(||a||, eps)) runs first. Returns (weight / sigma, u, v)."""
    w = _as(weight, dtype)
    mat = np.moveaxis(w, dim, 0).reshape(w.shape[dim], -1)
    u, v = _as(u, dtype), _as(v, dtype)
    if training:
        for _ in range(n_power_iterations):
            v = mat.T @ u
            v = v / max(np.sqrt(np.sum(v * v)), eps)
            u = mat @ v
            u = u / max(np.sqrt(np.sum(u * u)), eps)
    return w / np.dot(u, mat @ v), u, v
