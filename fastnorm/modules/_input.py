"""Input checks and gradient steps shared by the layers of issue 14 (FRN, conditional BN,
PowerNorm, BGN)."""
import numpy as np

from .._checks import ACCEPTED_DTYPES, is_float_dtype
from .module import ndim_of
from .module import to_numpy


def check_float_input(input, name, ndims, C, channel_axis=1):
    """``input`` as an ndarray after checking its dimensions (one of ``ndims``), its channel count
    ``C`` on ``channel_axis`` and its dtype (float32/float64, any byte order): the checks every
    layer makes before any state changes."""
    nd = ndim_of(input)
    if nd not in ndims:
        want = " or ".join(f"{d}D" for d in ndims)
        raise ValueError(f"{name}: expected {want} input (got {nd}D input)")
    x = input if isinstance(input, np.ndarray) else to_numpy(input)
    if x.shape[channel_axis] != C:
        raise ValueError(f"{name}: expected input with {C} channels (axis {channel_axis % nd}), "
                         f"got input of shape {x.shape}")
    if not is_float_dtype(x.dtype):
        raise TypeError(f"{name}: expected input of dtype {ACCEPTED_DTYPES}, got dtype {x.dtype}")
    return x


def empty_output(x):
    """The output of an empty input: an empty array of its shape and (native) dtype."""
    return np.empty(x.shape, x.dtype.newbyteorder("="))


def update_running(running, stat, factor):
    """torch's running-statistics update in float64, ``(1 - factor) * running + factor * stat``,
    written back in the buffer's dtype."""
    new = (1.0 - factor) * running.astype(np.float64) + factor * np.reshape(stat, running.shape)
    np.copyto(running, new, casting="unsafe")


def batch_factor(bn):
    """The momentum factor of a torch-style batch norm ``bn`` in training (``momentum=None``:
    cumulative average), as _BatchNorm.forward computes it."""
    if bn.momentum is None:
        return 1.0 / float(bn.num_batches_tracked + 1)
    return bn.momentum


def merge_moments(mean, var, axes):
    """Mean and biased variance of the union of equal-sized parts, from each part's (float64
    arrays): the mean of the means, and the mean of ``var + (mean - total mean)**2`` (exact for
    equal counts). NaN/inf propagate silently, as in the data."""
    with np.errstate(invalid="ignore", over="ignore"):
        total = mean.mean(axis=axes, keepdims=True)
        merged = (var + (mean - total) ** 2).mean(axis=axes)
    return total.reshape(merged.shape), merged


def normalized(x, axes, running, eps):
    """(x̂, invstd), float64, for a backward pass: x̂ = (x - mean) * invstd with the batch's mean
    and biased variance over ``axes`` (kept, length 1) recomputed from its forward's input, or
    with ``running`` = (mean, var) in their place (eval mode)."""
    x = np.asarray(x, np.float64)
    if running is None:
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    else:
        shape = [1 if a in axes else n for a, n in enumerate(x.shape)]
        mean, var = (np.asarray(r, np.float64).reshape(shape) for r in running)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        invstd = 1.0 / np.sqrt(var + eps)
        return (x - mean) * invstd, invstd


def normalized_input_grad(g, xhat, invstd, axes, batch):
    r"""d loss / d x for :math:`\hat x = (x - \mathrm{E}[x]) \cdot \mathrm{invstd}` given
    g = d loss / d :math:`\hat x` (float64, broadcasting invstd): with batch statistics over
    ``axes`` (``batch``), :math:`\mathrm{invstd}\,(g - \overline{g} - \hat x\,
    \overline{g \hat x})`; with fixed (running) statistics, ``g * invstd``."""
    if not batch:
        return g * invstd
    return invstd * (g - g.mean(axis=axes, keepdims=True)
                     - xhat * (g * xhat).mean(axis=axes, keepdims=True))
