"""Switchable Normalization's statistics, running-statistics update and backward pass, shared by
``fastnorm.functional.native_switch_norm(_backward)`` and the SwitchNorm layers.

Cost: one statistics pass over the input (``_kernels.instance_moments``: per-(n, c) mean and
variance in double precision), the cheap (N, C)-sized mixing in NumPy float64, and one normalize
pass (``_kernels.normalize_nc``) in the input's dtype. The backward pass adds one sums pass and
one elementwise pass (``_backward.nc_sums`` / ``nc_apply``); the (N, C)-sized chain rule through
the mixing is NumPy float64.
"""
import math

import numpy as np

from . import _backward, _kernels


def softmax(w):
    """softmax of a short vector, as Python floats (the mixing weights of (N, C)-sized arrays:
    Python scalars keep NumPy's per-operation overhead low)."""
    w = [float(v) for v in np.asarray(w).reshape(-1).tolist()]
    top = max(w)
    e = [math.exp(v - top) for v in w]
    total = math.fsum(e)
    return [v / total for v in e]


def mean(a, axis):
    """a.mean(axis, keepdims=True) (the same sum and division) without np.mean's overhead."""
    return np.add.reduce(a, axis=axis, keepdims=True) / a.shape[axis]


def stats(x, mean_weight, var_weight, running_mean, running_var, training):
    """The mixed mean and variance, (N, C) float64 (broadcastable), and a dict of the parts.

    ``x`` (N, C, *S): IN statistics per (n, c) (unbiased variance), LN and BN derived from them;
    BN when ``mean_weight`` has 3 entries (the batch's in training, else the running ones).
    ``x`` (N, C): LN per row and BN per channel, unbiased variances, 2 weights."""
    mw, vw = softmax(mean_weight), softmax(var_weight)
    p = {"mw": mw, "vw": vw}
    if x.ndim == 2:
        N, C = x.shape
        # LN: per row over C, as per-(0, n) "instance" statistics of x seen as (1, N, C)
        mean_ln, var_ln = _kernels.instance_moments(x[np.newaxis])
        p["mean_ln"] = mean_ln.reshape(N, 1)
        p["var_ln"] = var_ln.reshape(N, 1) * (C / (C - 1))
        if training:  # BN: per channel over N, x seen as (1, C, N)
            mean_bn, var_bn = _kernels.instance_moments(x.T[np.newaxis])
            p["mean_bn"] = mean_bn.reshape(C)
            p["var_bn"] = var_bn.reshape(C) * (N / (N - 1))
        else:
            p["mean_bn"] = np.asarray(running_mean).astype(np.float64).reshape(C)
            p["var_bn"] = np.asarray(running_var).astype(np.float64).reshape(C)
        mean_ = mw[0] * p["mean_ln"] + mw[1] * p["mean_bn"]
        var_ = vw[0] * p["var_ln"] + vw[1] * p["var_bn"]
        return mean_, var_, p
    S = x.size // (x.shape[0] * x.shape[1])
    mean_in, var_in = _kernels.instance_moments(x)  # (N, C) float64, biased variance
    var_in *= S / (S - 1)  # unbiased, as torch's Tensor.var in the reference
    mean_ln = mean(mean_in, 1)  # (N, 1)
    temp = var_in + mean_in ** 2  # the reference's second moment per (n, c)
    var_ln = mean(temp, 1) - mean_ln ** 2
    p.update(mean_in=mean_in, var_in=var_in, mean_ln=mean_ln, S=S)
    mean_ = mw[0] * mean_in + mw[1] * mean_ln
    var_ = vw[0] * var_in + vw[1] * var_ln
    if len(mw) == 3:
        if training:
            mean_bn = mean(mean_in, 0)  # (1, C)
            var_bn = mean(temp, 0) - mean_bn ** 2
        else:
            mean_bn = np.asarray(running_mean).reshape(1, -1).astype(np.float64)
            var_bn = np.asarray(running_var).reshape(1, -1).astype(np.float64)
        p.update(mean_bn=mean_bn, var_bn=var_bn)
        mean_ += mw[2] * mean_bn
        var_ += vw[2] * var_bn
    p["var_ln"] = var_ln
    return mean_, var_, p


def update_running(rm, rv, mean_bn, var_bn, momentum, using_moving_average):
    """The authors' update: keep ``momentum`` of the old value (the opposite of torch's
    BatchNorm), or accumulate sums when ``using_moving_average=False``."""
    mean_bn, var_bn = mean_bn.reshape(rm.shape), var_bn.reshape(rv.shape)
    old_m, old_v = rm.astype(np.float64), rv.astype(np.float64)
    if using_moving_average:
        new_m = momentum * old_m + (1 - momentum) * mean_bn
        new_v = momentum * old_v + (1 - momentum) * var_bn
    else:
        new_m = old_m + mean_bn
        new_v = old_v + (mean_bn ** 2 + var_bn)
    np.copyto(rm, new_m, casting="unsafe")
    np.copyto(rv, new_v, casting="unsafe")


def _softmax_grad(w, g):
    """d loss / d logits of softmax weights w, given d loss / d w."""
    w = np.asarray(w)
    return w * (g - np.dot(w, g))


def backward(dy, x, gamma, mean_, rstd, p, training, mask):
    """(dx, dgamma (C,), dbeta (C,), dmean_weight, dvar_weight) with the parts p of stats();
    mean_, rstd (N, C) float64. Entries not asked in mask (5 bools) are None."""
    N, C = x.shape[:2]
    g = np.ones(C) if gamma is None else np.asarray(gamma, np.float64).reshape(C)
    mw, vw = p["mw"], p["vw"]
    k = len(mw)
    if x.ndim == 2:
        d = dy.astype(np.float64)
        xm = x.astype(np.float64) - mean_
        s1, s2 = d, d * xm  # every element is its own group
    else:
        s1, s2 = _backward.nc_sums(x, dy, np.broadcast_to(mean_, (N, C)))
    dmu = -rstd * g * s1  # d loss / d mixed mean, per (n, c)
    dvar = -0.5 * rstd ** 3 * g * s2  # ... / d mixed variance
    if x.ndim == 2:
        parts_m, parts_v = [p["mean_ln"], p["mean_bn"]], [p["var_ln"], p["var_bn"]]
    else:
        parts_m = [p["mean_in"], p["mean_ln"]] + ([p["mean_bn"]] if k == 3 else [])
        parts_v = [p["var_in"], p["var_ln"]] + ([p["var_bn"]] if k == 3 else [])
    dmw = _softmax_grad(mw, np.array([np.sum(dmu * m) for m in parts_m])) if mask[3] else None
    dvw = _softmax_grad(vw, np.array([np.sum(dvar * v) for v in parts_v])) if mask[4] else None
    dgamma = np.sum(rstd * s2, axis=0).reshape(C) if mask[1] else None
    dbeta = np.sum(s1, axis=0).reshape(C) if mask[2] else None
    dx = None
    if mask[0]:
        xd = np.float64
        if x.ndim == 2:
            dx = rstd * g * dy.astype(xd)
            xf = x.astype(xd)
            # LN over C: mean and unbiased variance per row
            dx += mw[0] * dmu.sum(1, keepdims=True) / C
            dx += vw[0] * dvar.sum(1, keepdims=True) * 2 * (xf - p["mean_ln"]) / (C - 1)
            if training:  # BN over N
                dx += mw[1] * dmu.sum(0) / N
                dx += vw[1] * dvar.sum(0) * 2 * (xf - p["mean_bn"]) / (N - 1)
            dx = dx.astype(x.dtype)
        else:
            S, mi = p["S"], p["mean_in"]
            dmi = mw[0] * dmu
            dvi = vw[0] * dvar
            # LN: mean_ln = mean_c(mean_in), var_ln = mean_c(var_in + mean_in^2) - mean_ln^2
            dml = mw[1] * dmu.sum(1, keepdims=True)
            dvl = vw[1] * dvar.sum(1, keepdims=True)
            dvi = dvi + dvl / C
            dmi = dmi + (dml - 2 * p["mean_ln"] * dvl) / C + 2 * mi * dvl / C
            if k == 3 and training:  # BN: the same over n
                dmb = mw[2] * dmu.sum(0, keepdims=True)
                dvb = vw[2] * dvar.sum(0, keepdims=True)
                dvi = dvi + dvb / N
                dmi = dmi + (dmb - 2 * p["mean_bn"] * dvb) / N + 2 * mi * dvb / N
            # dx = r g dy + dmi / S + dvi * 2 (x - mean_in) / (S - 1), centred on mean_
            b = 2 * dvi / (S - 1)
            dx = _backward.nc_apply(x, dy, np.broadcast_to(mean_, (N, C)), rstd * g,
                                    b, dmi / S + b * (mean_ - mi))
    return dx, dgamma, dbeta, dmw, dvw
