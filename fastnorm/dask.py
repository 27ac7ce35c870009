"""fastnorm on Dask arrays: the normalization functions and ``moments`` for data larger than
memory or spread over a cluster.

Optional: ``pip install "fastnorm-cpu[dask]"``; imported only when used (``import fastnorm``
does not import Dask). The functions have the signatures of ``fastnorm.functional`` (without
``out=`` and ``activation=``; float32 and float64) and ``fastnorm.moments``, take a Dask array (anything else goes through
``dask.array.asarray``) and return Dask arrays; the running statistics and parameters are
NumPy arrays. Dask is the engine: the same code runs on the threaded scheduler, a
``dask.distributed`` LocalCluster or any cluster given its scheduler address.

How it works:

* Statistics: ``dask.array.reduction`` with fastnorm's one-pass kernel as the chunk function,
  giving each chunk's ``(count, mean, M2)`` (:class:`fastnorm.Moments`), and Chan's merge as the
  combine and aggregate steps, in a fixed order (results do not depend on the scheduler).
* Normalization: ``map_blocks`` with fastnorm's kernels. When every chunk holds whole
  normalized groups (instance_norm and group_norm: the spatial axes unsplit; layer_norm and
  rms_norm: the normalized axes unsplit), each chunk is normalized on its own, lazily, in one
  pass. Otherwise the statistics are reduced across the chunks first (two phases, still lazy),
  so a split normalized axis is never normalized per chunk.
* Training-mode ``batch_norm`` (and ``instance_norm`` with running statistics) computes the
  batch statistics *when it is called* (one pass over the data) and updates the running
  statistics in place, as torch does; the normalized output stays lazy (a second pass when
  it is computed).

Chunk sizes must be known (not NaN): an array with unknown chunk sizes raises ValueError.
"""
import functools
import numbers

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"fastnorm.dask needs Dask ({exc}): pip install \"fastnorm-cpu[dask]\"") \
        from exc

from . import functional as F
from ._checks import (check_eps, check_flag, check_momentum,  # fastnorm's own checks
                      check_normalized_shape, rms_eps)
from ._moments import Moments, _check_axis, _check_ddof, _merge_stacked, _stats

__all__ = ["moments", "batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm"]


# --------------------------------------------------------------------------------------------
# checks

def _as_dask(input, fname, min_ndim=0):
    x = input if isinstance(input, da.Array) else da.asarray(input)
    if _native(x.dtype) not in (np.float32, np.float64):
        raise TypeError(f"{fname}: expected input of dtype float32 or float64, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{fname}: expected input of at least {min_ndim} dimensions (N, C, *), "
                         f"got {x.ndim}D input of shape {x.shape}")
    if any(np.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError(f"{fname}: the input's chunk sizes are unknown (NaN); call "
                         f"x.compute_chunk_sizes() first")
    return x


def _param(p, name, fname, dtype, shape, any_shape=False):
    """weight/bias as a NumPy array of the input's dtype and `shape` (None stays None); with
    any_shape, any shape with as many elements (torch's batch_norm)."""
    if p is None:
        return None
    a = np.asarray(p)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{fname}: {name} must be a real-valued array, got dtype {a.dtype}")
    if a.shape != shape and not (any_shape and a.size == int(np.prod(shape))):
        raise ValueError(f"{fname}: expected {name} of shape {shape}, got shape {a.shape}")
    return np.array(a, dtype=dtype).reshape(shape)  # a copy: later changes do not leak in


def _running(r, name, fname, C, write):
    if r is None:
        return None
    if write and not isinstance(r, np.ndarray):
        raise TypeError(f"{fname}: {name} must be a numpy.ndarray (it is updated in place), "
                        f"got {type(r).__name__}")
    a = r if isinstance(r, np.ndarray) else np.asarray(r)
    if a.dtype.kind != "f":
        raise TypeError(f"{fname}: {name} must have a floating dtype, got {a.dtype}")
    if a.shape != (C,):
        raise ValueError(f"{fname}: expected {name} of shape ({C},) (one value per channel), "
                         f"got shape {a.shape}")
    if write and not a.flags.writeable:
        raise ValueError(f"{fname}: {name} is read-only but must be updated in place")
    return a


def _pair(running_mean, running_var, fname, C, write):
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fname}: running_mean and running_var must be given together")
    return (_running(running_mean, "running_mean", fname, C, write),
            _running(running_var, "running_var", fname, C, write))


def _update(running, stat, momentum):
    """torch's update, in place: running = (1 - momentum) * running + momentum * stat."""
    running[...] = (1.0 - momentum) * running.astype(np.float64) + momentum * stat


def _whole(x, axes):
    """True when every chunk spans the whole of each axis in `axes`."""
    return all(len(x.chunks[a]) == 1 for a in axes)


# --------------------------------------------------------------------------------------------
# statistics: a dask reduction of Moments

def _chunk_moments(x, axis, keepdims, computing_meta=False):
    """Chunk step: the chunk's Moments over `axis` (kept with length 1), as a dict (dask
    treats tuples in its graphs as tasks)."""
    if computing_meta:
        return x
    mean, var, count = _stats(x, tuple(sorted(axis)))
    mean, var = np.expand_dims(mean, axis), np.expand_dims(var, axis)
    return {"count": count, "mean": mean, "M2": var * count}


def _flatten(parts):
    if isinstance(parts, dict):
        return [parts]
    return [p for sub in parts for p in _flatten(sub)]


def _combine_moments(parts, axis, keepdims, computing_meta=False):
    """Combine step: Chan's merge of the parts (a nested list, one level per reduced axis, in
    index order)."""
    parts = _flatten(parts)
    m = _merge_stacked(np.array([p["count"] for p in parts], np.int64),
                       np.stack([p["mean"] for p in parts]), np.stack([p["M2"] for p in parts]))
    return {"count": m.count, "mean": np.asarray(m.mean), "M2": np.asarray(m.M2)}


def _aggregate_moments(parts, axis, keepdims, ddof=0, computing_meta=False):
    """Aggregate step: the merged Moments as float64 mean and var (divisor count - ddof)."""
    m = _combine_moments(parts, axis, keepdims)
    count = m["count"]
    mean = m["mean"] if count else np.full_like(m["mean"], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = m["M2"] / max(count - ddof, 0) if count else np.full_like(m["M2"], np.nan)
    if not keepdims:
        mean, var = np.squeeze(mean, axis), np.squeeze(var, axis)
    return {"mean": mean, "var": var}


def _pick(stats, key, dtype):
    return stats[key].astype(dtype, copy=False)


def _stats_dask(x, axes, ddof=0, keepdims=False, dtype=np.float64):
    """Lazy (mean, var) of dask array x over `axes`, in `dtype`, from one pass over x."""
    meta = np.empty((0,) * (x.ndim if keepdims else x.ndim - len(axes)), dtype)
    stats = da.reduction(x, _chunk_moments, functools.partial(_aggregate_moments, ddof=ddof),
                         axis=axes, keepdims=keepdims, dtype=dtype, combine=_combine_moments,
                         concatenate=False, meta=meta, name="fastnorm-moments")
    return tuple(stats.map_blocks(_pick, key, dtype, dtype=dtype, meta=meta,
                                  token=f"fastnorm-moments-{key}") for key in ("mean", "var"))


def moments(x, axis=None, *, ddof=0, keepdims=False):
    r"""Mean and variance of a Dask array over ``axis``: :func:`fastnorm.moments`, lazily.

    .. math:: \bar x = \frac{1}{n}\sum_i x_i, \qquad
              \mathrm{Var}[x] = \frac{1}{n - \mathrm{ddof}} \sum_i (x_i - \bar x)^2

    One pass over the data: each chunk's ``(count, mean, M2)`` from fastnorm's kernel, merged
    across chunks with Chan's formula (``dask.array.reduction``), in double precision; results
    in the input's dtype. Empty reductions give NaN (without NumPy's warning).

    Parameters
    ----------
    x : dask.array.Array of float32 or float64
    axis : None, int or tuple of ints
    ddof : real, keyword-only
    keepdims : bool, keyword-only

    Returns
    -------
    mean, var : dask.array.Array of the input's dtype

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastnorm.dask as fd
    >>> x = da.from_array(np.arange(12.0).reshape(3, 4), chunks=(2, 3))
    >>> mean, var = fd.moments(x, axis=0)
    >>> mean.compute(), var.compute()
    (array([4., 5., 6., 7.]), array([10.66666667, 10.66666667, 10.66666667, 10.66666667]))
    """
    x = _as_dask(x, "moments")
    axes = _check_axis(axis, x.ndim, "moments")
    _check_ddof(ddof, "moments")
    return _stats_dask(x, axes, ddof, keepdims, _native(x.dtype))


# --------------------------------------------------------------------------------------------
# normalization blocks (run on the workers)

def _loc(block_info, axis):
    start, stop = block_info[0]["array-location"][axis]
    return slice(start, stop)


def _normalize_rows(x, lead, mean, var, eps, weight=None, bias=None):
    """(x - mean) / sqrt(var + eps) * weight + bias with one float64 mean/var (and weight/bias,
    when given) per position of x's first `lead` axes: fastnorm's eval-mode batch_norm on x
    seen as (1, rows, *rest)."""
    rows = int(np.prod(x.shape[:lead], dtype=np.int64))
    x3 = x.reshape((1, rows) + x.shape[lead:])
    y = F.batch_norm(x3, np.ravel(mean), np.ravel(var), weight, bias, False, 0.0, eps)
    return y.reshape(x.shape)


def _bn_block(x, mean, var, weight, bias, eps, block_info=None):
    """batch_norm of a chunk with given per-channel float64 statistics."""
    c = _loc(block_info, 1)
    w = None if weight is None else weight[c]
    b = None if bias is None else bias[c]
    return F.batch_norm(x, mean[c], var[c], w, b, False, 0.0, eps)


def _nc_block(x, mean, var, weight, bias, eps, block_info=None):
    """Normalization of a chunk (n, c, *S) with given per-(n, c) statistics (float64 arrays
    (n, c, 1, ...) aligned with the chunk) and per-channel weight/bias (repeated per sample:
    one kernel pass)."""
    c = _loc(block_info, 1)
    w = None if weight is None else np.tile(weight[c], x.shape[0])
    b = None if bias is None else np.tile(bias[c], x.shape[0])
    return _normalize_rows(x, 2, mean, var, eps, w, b)


def _affine(y, weight, bias, sl, shape):
    """y * weight[sl] + bias[sl], in place, the slices seen as `shape`."""
    if weight is not None:
        y *= weight[sl].reshape(shape)
    if bias is not None:
        y += bias[sl].reshape(shape)
    return y


def _trailing_block(x, mean, var, weight, bias, eps, k, block_info=None):
    """Normalization over the trailing k axes of a chunk with given per-row statistics (float64
    arrays with the trailing k axes of length 1) and an elementwise weight/bias."""
    y = _normalize_rows(x, x.ndim - k, mean, var, eps)
    if weight is None and bias is None:
        return y
    sl = tuple(_loc(block_info, a) for a in range(x.ndim - k, x.ndim))
    return _affine(y, weight, bias, sl, y.shape[x.ndim - k:])


def _ms_block(x, ms, weight, eps, k, block_info=None):
    """rms_norm of a chunk with given per-row means of squares."""
    return _trailing_block(x, np.zeros_like(ms), ms, weight, None, eps, k, block_info)


def _chunk_ms(x, axis, keepdims, computing_meta=False):
    """Chunk step of the mean of squares over `axis` (kept): the chunk's count and its E[x^2]
    from fastnorm's moments (var + mean^2), summed plainly where that is not finite (inf or NaN
    in the row: inf - inf would turn a row with an inf into NaN), as functional._mean_squares."""
    if computing_meta:
        return x
    ax = tuple(sorted(axis))
    mean, var, count = _stats(x, ax)
    with np.errstate(over="ignore", invalid="ignore"):
        ms = var + mean * mean
        bad = ~np.isfinite(ms)
        if bad.any() and count:  # (a chunk of no elements adds nothing: _combine_ms)
            ms = np.where(bad, np.mean(np.square(np.asarray(x, np.float64)), axis=ax), ms)
    return {"count": count, "ms": np.expand_dims(ms, axis)}


def _combine_ms(parts, axis, keepdims, computing_meta=False):
    """Combine step: the count-weighted mean of the parts' E[x^2] (no cancellation: a sum of
    non-negative terms); parts of no elements add nothing."""
    parts = _flatten(parts)
    total = sum(p["count"] for p in parts)
    ms = sum(p["ms"] * (p["count"] / total) for p in parts if p["count"]) if total else \
        np.full_like(parts[0]["ms"], np.nan)
    return {"count": total, "ms": np.asarray(ms, np.float64)}


def _aggregate_ms(parts, axis, keepdims, computing_meta=False):
    return _combine_ms(parts, axis, keepdims)["ms"]


def _mean_squares_dask(x, axes):
    """Lazy float64 E[x^2] of dask array x over `axes` (kept, length 1), one pass over x."""
    meta = np.empty((0,) * x.ndim, np.float64)
    return da.reduction(x, _chunk_ms, _aggregate_ms, axis=axes, keepdims=True, dtype=np.float64,
                        combine=_combine_ms, concatenate=False, meta=meta,
                        name="fastnorm-mean-squares")


def _native(dtype):
    return np.dtype(dtype).newbyteorder("=")  # fastnorm's outputs are in native byte order


def _map(fn, x, *args, **kwargs):
    dtype = _native(x.dtype)
    return da.map_blocks(fn, x, *args, dtype=dtype, meta=np.empty((0,) * x.ndim, dtype),
                         **kwargs)


# --------------------------------------------------------------------------------------------
# the functions

def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    r"""Batch normalization of a Dask array: :func:`fastnorm.functional.batch_norm`.

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    With ``training=True`` the per-channel mean and biased variance over N and the spatial axes
    are computed **when this is called** (one pass over the data, a ``dask.array.reduction``
    merging each chunk's moments with Chan's formula) and the running statistics, when given,
    are updated in place (unbiased variance, ``running = (1 - momentum) * running + momentum
    * batch_stat``). The returned array is lazy: computing it is a second pass. With
    ``training=False`` the running statistics (copied at the call) are used and nothing is
    computed until the result is.

    Parameters
    ----------
    input : dask.array.Array, shape (N, C) or (N, C, *), float32 or float64
        Any chunking.
    running_mean, running_var : numpy.ndarray of shape (C,) or None
    weight, bias : array_like of shape (C,), optional
    training : bool
    momentum : float
    eps : float

    Returns
    -------
    dask.array.Array of the input's shape, dtype and chunks.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastnorm.dask as fd
    >>> x = da.random.default_rng(0).standard_normal((64, 3, 8, 8), chunks=(16, 3, 8, 8))
    >>> rm, rv = np.zeros(3), np.ones(3)
    >>> y = fd.batch_norm(x, rm, rv, training=True)   # rm, rv updated now; y is lazy
    >>> bool(abs(y.mean().compute()) < 1e-6), y.chunks == x.chunks
    (True, True)
    """
    fn = "batch_norm"
    x = _as_dask(input, fn, 2)
    C, tr = x.shape[1], check_flag(training, "training", fn)
    w = _param(weight, "weight", fn, x.dtype, (C,), True)
    b = _param(bias, "bias", fn, x.dtype, (C,), True)
    rm, rv = _pair(running_mean, running_var, fn, C, tr)
    if not tr and rm is None:
        raise ValueError(f"{fn}: running_mean and running_var are required when training=False")
    m = check_momentum(momentum, fn) if tr and rm is not None else 0.0
    e = check_eps(eps, fn)
    count = x.size // C if C else 0
    if tr:
        if count == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input "
                             f"size {x.shape}")
        if e == 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if x.size == 0:
        return x.copy()
    if tr:
        axes = (0,) + tuple(range(2, x.ndim))
        mean, var = dask.compute(*_stats_dask(x, axes))
        if rm is not None:
            _update(rm, mean, m)
            _update(rv, var * count / (count - 1), m)
    else:
        mean, var = rm.astype(np.float64), rv.astype(np.float64)
    return _map(_bn_block, x, mean, var, w, b, e, token="fastnorm-batch_norm")


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    r"""Instance normalization of a Dask array: :func:`fastnorm.functional.instance_norm`.

    .. math:: y_{nc} = \frac{x_{nc} - \mathrm{E}[x_{nc}]}{\sqrt{\mathrm{Var}[x_{nc}] + \epsilon}}
              \gamma_c + \beta_c

    Lazy. Chunks spanning the whole spatial axes are normalized each on its own (one pass);
    with the spatial axes split, the per-(n, c) statistics are reduced across chunks first.
    With running statistics (and ``use_input_stats=True``) the statistics are computed when
    this is called and the running statistics updated in place (batch average of the
    per-instance mean and unbiased variance); ``use_input_stats=False`` uses them instead.

    Parameters
    ----------
    input : dask.array.Array, shape (N, C, *)
    running_mean, running_var : numpy.ndarray of shape (C,), optional
    weight, bias : array_like of shape (C,), optional
    use_input_stats : bool
    momentum : float
    eps : float

    Returns
    -------
    dask.array.Array of the input's shape, dtype and chunks.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastnorm.dask as fd
    >>> x = da.from_array(np.arange(32.0).reshape(2, 2, 8), chunks=(1, 2, 4))  # spatial split
    >>> y = fd.instance_norm(x).compute()
    >>> np.allclose(y.mean(axis=2), 0), np.allclose(y.var(axis=2), 1, atol=1e-4)
    (True, True)
    """
    fn = "instance_norm"
    x = _as_dask(input, fn, 2)
    C, stats = x.shape[1], check_flag(use_input_stats, "use_input_stats", fn)
    w = _param(weight, "weight", fn, x.dtype, (C,))
    b = _param(bias, "bias", fn, x.dtype, (C,))
    rm, rv = _pair(running_mean, running_var, fn, C, stats)
    if not stats and rm is None:
        raise ValueError(f"{fn}: running_mean and running_var are required when "
                         f"use_input_stats=False")
    m = check_momentum(momentum, fn) if stats and rm is not None else 0.0
    e = check_eps(eps, fn)
    S = int(np.prod(x.shape[2:], dtype=np.int64))
    if stats and S == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size "
                         f"{x.shape}")
    if x.size == 0:
        return x.copy()
    if not stats:
        return _map(_bn_block, x, rm.astype(np.float64), rv.astype(np.float64), w, b, e,
                    token="fastnorm-instance_norm")
    spatial = tuple(range(2, x.ndim))
    if rm is None and _whole(x, spatial):
        return _map(_in_block, x, w, b, e, token="fastnorm-instance_norm")
    mean, var = _stats_dask(x, spatial, keepdims=True)
    if rm is not None:
        mean, var = dask.compute(mean, var)
        _update(rm, mean.reshape(-1, C).mean(axis=0), m)
        _update(rv, (var.reshape(-1, C) * (S / (S - 1))).mean(axis=0), m)
        mean, var = (da.from_array(a, chunks=x.chunks[:2] + (1,) * len(spatial))
                     for a in (mean, var))
    return _map(_nc_block, x, mean, var, w, b, e, token="fastnorm-instance_norm")


def _in_block(x, weight, bias, eps, block_info=None):
    c = _loc(block_info, 1)
    return F.instance_norm(x, None, None, None if weight is None else weight[c],
                           None if bias is None else bias[c], True, 0.0, eps)


def _trailing_check(x, normalized_shape, fn):
    ns = check_normalized_shape(normalized_shape, fn)
    k = len(ns)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != ns:
        raise ValueError(f"Given normalized_shape={list(ns)}, expected input with shape "
                         f"[*, {', '.join(map(str, ns))}], but got input of size {x.shape}")
    return ns, k


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    r"""Layer normalization of a Dask array: :func:`fastnorm.functional.layer_norm`.

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Lazy. Chunks spanning the whole normalized axes are normalized each on its own (one pass);
    with a normalized axis split, the per-row statistics are reduced across chunks first.

    Parameters
    ----------
    input : dask.array.Array, shape (*, *normalized_shape)
    normalized_shape : int or sequence of int
    weight, bias : array_like of shape ``normalized_shape``, optional
    eps : float

    Returns
    -------
    dask.array.Array of the input's shape, dtype and chunks.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastnorm.dask as fd
    >>> x = da.random.default_rng(0).standard_normal((6, 768), chunks=(3, 256))
    >>> y = fd.layer_norm(x, 768).compute()
    >>> bool(np.allclose(y.std(axis=1), 1, atol=1e-4))
    True
    """
    fn = "layer_norm"
    x = _as_dask(input, fn)
    ns, k = _trailing_check(x, normalized_shape, fn)
    w = _param(weight, "weight", fn, x.dtype, ns)
    b = _param(bias, "bias", fn, x.dtype, ns)
    e = check_eps(eps, fn)
    if x.size == 0:
        return x.copy()
    axes = tuple(range(x.ndim - k, x.ndim))
    if _whole(x, axes):
        return _map(F.layer_norm, x, ns, w, b, e, token="fastnorm-layer_norm")
    mean, var = _stats_dask(x, axes, keepdims=True)
    return _map(_trailing_block, x, mean, var, w, b, e, k, token="fastnorm-layer_norm")


def rms_norm(input, normalized_shape, weight=None, eps=None):
    r"""RMS normalization of a Dask array: :func:`fastnorm.functional.rms_norm`.

    .. math:: y = \frac{x}{\sqrt{\mathrm{E}[x^2] + \epsilon}} \gamma

    Lazy. Chunks spanning the whole normalized axes are normalized each on its own; with a
    normalized axis split, the per-row moments are reduced across chunks first
    (:math:`\mathrm{E}[x^2] = \mathrm{Var}[x] + \mathrm{E}[x]^2`).

    Parameters
    ----------
    input : dask.array.Array, shape (*, *normalized_shape)
    normalized_shape : int or sequence of int
    weight : array_like of shape ``normalized_shape``, optional
    eps : float, optional
        None: as ``fastnorm.functional.rms_norm`` (float32's machine epsilon, float64's for
        float64 input), as torch.

    Returns
    -------
    dask.array.Array of the input's shape, dtype and chunks.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastnorm.dask as fd
    >>> x = da.from_array(np.array([[3.0, 4.0]]), chunks=(1, 1))
    >>> np.round(fd.rms_norm(x, 2).compute(), 6)
    array([[0.848528, 1.131371]])
    """
    fn = "rms_norm"
    x = _as_dask(input, fn)
    ns, k = _trailing_check(x, normalized_shape, fn)
    w = _param(weight, "weight", fn, x.dtype, ns)
    e = rms_eps(x.dtype) if eps is None else check_eps(eps, fn)
    if x.size == 0:
        return x.copy()
    axes = tuple(range(x.ndim - k, x.ndim))
    if _whole(x, axes):
        return _map(F.rms_norm, x, ns, w, e, token="fastnorm-rms_norm")
    return _map(_ms_block, x, _mean_squares_dask(x, axes), w, e, k, token="fastnorm-rms_norm")


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    r"""Group normalization of a Dask array: :func:`fastnorm.functional.group_norm`.

    .. math:: y_{ng} = \frac{x_{ng} - \mathrm{E}[x_{ng}]}{\sqrt{\mathrm{Var}[x_{ng}] + \epsilon}}
              \gamma_c + \beta_c

    Lazy. Chunks spanning the whole spatial axes and whole groups of channels are normalized
    each on its own (one pass); otherwise the per-(n, c) moments are reduced across chunks and
    merged per group with Chan's formula first.

    Parameters
    ----------
    input : dask.array.Array, shape (N, C, *)
        C divisible by ``num_groups``.
    num_groups : int
    weight, bias : array_like of shape (C,), optional
    eps : float

    Returns
    -------
    dask.array.Array of the input's shape, dtype and chunks.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastnorm.dask as fd
    >>> x = da.random.default_rng(0).standard_normal((2, 8, 5, 5), chunks=(1, 3, 5, 5))
    >>> y = fd.group_norm(x, 4).compute()
    >>> bool(np.allclose(y.reshape(2, 4, -1).mean(axis=2), 0, atol=1e-12))
    True
    """
    fn = "group_norm"
    x = _as_dask(input, fn, 2)
    if isinstance(num_groups, (bool, np.bool_)) or not isinstance(num_groups, numbers.Integral):
        raise TypeError(f"{fn}: num_groups must be an int, got {type(num_groups).__name__}")
    C = x.shape[1]
    if num_groups <= 0:
        raise ValueError(f"{fn}: num_groups must be positive, got {num_groups}")
    if C % num_groups != 0:
        raise ValueError(f"Expected number of channels in input to be divisible by num_groups, "
                         f"but got input of shape {x.shape} and num_groups={num_groups}")
    S = int(np.prod(x.shape[2:], dtype=np.int64))
    if x.shape[0] * C // num_groups * S == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{(x.shape[0] * C // num_groups, num_groups) + x.shape[2:]}")
    w = _param(weight, "weight", fn, x.dtype, (C,))
    b = _param(bias, "bias", fn, x.dtype, (C,))
    e = check_eps(eps, fn)
    if x.size == 0:
        return x.copy()
    spatial, cpg = tuple(range(2, x.ndim)), C // num_groups
    if _whole(x, spatial) and all(c % cpg == 0 for c in x.chunks[1]):
        return _map(_gn_block, x, cpg, w, b, e, token="fastnorm-group_norm")
    # per-(n, c) moments, merged per group (each channel holds S values), back per channel
    mean, var = _stats_dask(x, spatial)
    st = da.stack([mean, var]).rechunk({0: 2, 1: x.chunks[0], 2: -1})
    st = st.map_blocks(_group_stats, num_groups, S, dtype=np.float64, meta=np.empty((0, 0, 0)),
                       token="fastnorm-group-stats")
    ones = (None,) * len(spatial)
    mean, var = (st[i][(slice(None), slice(None)) + ones].rechunk(x.chunks[:2] + (1,) * len(ones))
                 for i in (0, 1))
    return _map(_nc_block, x, mean, var, w, b, e, token="fastnorm-group_norm")


def _group_stats(st, num_groups, S):
    """Per-(n, c) float64 mean and biased var (stacked, (2, n, C), S values each) -> those of
    each channel's group, merged with Chan's formula, still per (n, c)."""
    n, C = st.shape[1:]
    cpg = C // num_groups
    mean = st[0].reshape(n, num_groups, cpg).transpose(2, 0, 1)
    m2 = st[1].reshape(n, num_groups, cpg).transpose(2, 0, 1) * S
    g = _merge_stacked(np.full(cpg, S, np.int64), mean, m2)
    out = np.empty_like(st)
    out[0] = np.repeat(g.mean, cpg, axis=1)
    out[1] = np.repeat(g.M2 / (S * cpg), cpg, axis=1)
    return out


def _gn_block(x, cpg, weight, bias, eps, block_info=None):
    if x.shape[1] == 0:  # a chunk of no channels (dask allows them): no groups
        return np.empty(x.shape, _native(x.dtype))
    c = _loc(block_info, 1)
    return F.group_norm(x, x.shape[1] // cpg, None if weight is None else weight[c],
                        None if bias is None else bias[c], eps)
