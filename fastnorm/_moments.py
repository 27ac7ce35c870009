"""Mean and variance in one pass, and their mergeable form.

``moments(x, axis)`` is ``(np.mean(x, axis), np.var(x, axis))`` from one pass over memory;
``Moments`` holds the per-part ``(count, mean, M2)`` from which those come, and ``merge``
combines two parts with Chan's formula, so that statistics of pieces computed anywhere (chunks
of a Dask array, shards on other machines, batches of a stream) combine into those of the whole.
"""
import numbers
import warnings
from typing import NamedTuple, Union

import numpy as np

from . import _kernels

try:
    from numpy.lib.array_utils import normalize_axis_tuple
except ImportError:  # pragma: no cover - NumPy < 2.0
    from numpy.core.numeric import normalize_axis_tuple

__all__ = ["moments", "Moments"]


def _kernel_moments(x3):
    """The compiled statistics: x3 (N, C, *S), float32/float64, any layout -> float64 (mean,
    biased variance) of shape (N, C), per (n, c) over the trailing axes, in one pass.

    The only call of the kernel in this module (and in fastnorm.dask): swap it here."""
    return _kernels.instance_moments(x3)


def _check_input(x, fname):
    x = np.asarray(x)
    if x.dtype.newbyteorder("=") not in (np.float32, np.float64):
        raise TypeError(f"{fname}: expected input of dtype float32 or float64, got dtype {x.dtype}")
    return x


def _check_axis(axis, ndim, fname):
    """NumPy's axis conventions (None, an int or a tuple of ints, negative allowed) as a sorted
    tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (bool, np.bool_)) or not (
            isinstance(axis, (numbers.Integral, tuple, list))):
        raise TypeError(f"{fname}: axis must be None, an int or a tuple of ints, got "
                        f"{type(axis).__name__}")
    if isinstance(axis, (tuple, list)) and not all(
            isinstance(a, numbers.Integral) and not isinstance(a, (bool, np.bool_)) for a in axis):
        raise TypeError(f"{fname}: axis must be None, an int or a tuple of ints, got {axis!r}")
    return tuple(sorted(normalize_axis_tuple(axis, ndim, "axis")))


def _check_ddof(ddof, fname):
    if isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, numbers.Real):
        raise TypeError(f"{fname}: ddof must be a real number, got {type(ddof).__name__}")
    if not np.isfinite(ddof):
        raise ValueError(f"{fname}: ddof must be finite, got {ddof!r}")
    return ddof


def _stats(x, axes):
    """float64 (mean, biased var) of x over `axes` (sorted), with the kept axes' shape, and the
    number of values each is taken over. The kept axes go first (a free transpose), seen as at
    most two (a reshape, which copies only when they do not merge), then (N, C) for the kernel."""
    kept = [a for a in range(x.ndim) if a not in axes]
    xt = x.transpose(kept + list(axes))
    kshape, rshape = xt.shape[:len(kept)], xt.shape[len(kept):]
    count = int(np.prod(rshape, dtype=np.int64))
    if len(kept) > 2:
        xt = xt.reshape((kshape[0], int(np.prod(kshape[1:], dtype=np.int64))) + rshape)
    parts = _column_parts(xt) if len(kept) == 1 else None
    if parts is not None:
        mean, var = parts
    else:
        if len(kept) < 2:
            xt = _unit_front(xt, 2 - len(kept))
        mean, var = _kernel_moments(xt)
    mean, var = mean.reshape(kshape), var.reshape(kshape)
    if count == 0:
        mean[...] = np.nan  # as np.mean of an empty slice (the kernel gives 0)
    return mean, var, count


def _unit_front(xt, pad):
    """xt with `pad` unit axes in front, of a stride larger than any other: a unit channel axis
    with a small stride would make the kernel take the channels for the innermost axis."""
    span = max([abs(s) * n for s, n in zip(xt.strides, xt.shape)] + [0])
    big = (span // xt.itemsize + 1) * xt.itemsize
    return np.lib.stride_tricks.as_strided(xt, (1,) * pad + xt.shape, (big,) * pad + xt.strides,
                                           writeable=False)


_PARTS = 4  # blocks of rows a column reduction is cut into (see _column_parts)


def _column_parts(xt):
    """(mean, var) of xt (C, *R) over R when C is the innermost axis in memory (per-feature
    statistics of a C-order (samples, features) array): the kernel's column plan then runs as
    one slow block, so the outermost reduced axis is cut into _PARTS equal blocks given to the
    kernel as its N axis (the rows left over make one more part) and the parts are merged with
    Chan's formula. None for other layouts or fewer than 64 rows per block."""
    red = [(abs(s), i) for i, (s, n) in enumerate(zip(xt.strides, xt.shape)) if i and n > 1]
    if xt.size == 0 or not red or abs(xt.strides[0]) >= min(red)[0]:
        return None
    j = max(red)[1]
    L, b = xt.shape[j], xt.shape[j] // _PARTS
    if b < 64:
        return None
    head = [slice(None)] * xt.ndim
    head[j] = slice(0, _PARTS * b)
    blocks = xt[tuple(head)].reshape(xt.shape[:j] + (_PARTS, b) + xt.shape[j + 1:])
    mean, var = _kernel_moments(np.moveaxis(blocks, j, 0))
    per = xt.size // xt.shape[0] // L * b
    m = _merge_stacked(np.full(_PARTS, per), mean, var * per)
    if L > _PARTS * b:
        head[j] = slice(_PARTS * b, None)
        tail = xt[tuple(head)]
        tmean, tvar = _kernel_moments(_unit_front(tail, 1))
        n = tail.size // tail.shape[0]
        m = m.merge(Moments(n, tmean[0], tvar[0] * n))
    return np.asarray(m.mean), np.asarray(m.M2) / m.count


def _expand(a, axes, keepdims):
    return np.expand_dims(a, axes) if keepdims else a


class Moments(NamedTuple):
    r"""The mergeable statistics of one part of the data: ``count`` values, their ``mean`` and
    ``M2``, the sum of squared deviations from that mean.

    .. math:: M_2 = \sum_i (x_i - \bar x)^2, \qquad \mathrm{Var}[x] = \frac{M_2}{n - \mathrm{ddof}}

    ``mean`` and ``M2`` are float64 (scalars or arrays, one value per position of the kept axes);
    ``count`` is an int or an integer array broadcastable against them. A part with ``count ==
    0`` (mean NaN, ``M2 == 0``) is the identity of :meth:`merge`.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.arange(10.0)
    >>> a, b = fastnorm.Moments.from_array(x[:3]), fastnorm.Moments.from_array(x[3:])
    >>> m = a.merge(b)
    >>> m.count, float(m.mean), float(m.var()), float(np.var(x))
    (10, 4.5, 8.25, 8.25)
    """
    count: Union[int, np.ndarray]
    mean: Union[float, np.ndarray]
    M2: Union[float, np.ndarray]

    @classmethod
    def from_array(cls, x, axis=None, *, keepdims=False):
        """Moments of ``x`` over ``axis`` (NumPy's conventions), in one pass over memory.

        Parameters
        ----------
        x : array_like of float32 or float64, any layout
        axis : None, int or tuple of ints
            The axes reduced (None: all).
        keepdims : bool
            Keep the reduced axes with length 1.

        Returns
        -------
        Moments
            ``count`` an int; ``mean`` and ``M2`` float64 of the kept axes' shape.

        Examples
        --------
        >>> import numpy as np, fastnorm
        >>> m = fastnorm.Moments.from_array(np.array([[1.0, 2.0], [3.0, 6.0]]), axis=0)
        >>> m.count, m.mean, m.M2
        (2, array([2., 4.]), array([2., 8.]))
        """
        x = _check_input(x, "Moments.from_array")
        axes = _check_axis(axis, x.ndim, "Moments.from_array")
        mean, var, count = _stats(x, axes)
        m2 = var * count
        mean, m2 = _expand(mean, axes, keepdims), _expand(m2, axes, keepdims)
        return cls(count, mean[()], m2[()])

    def merge(self, other):
        r"""The moments of the union of two parts (Chan, Golub and LeVeque's formula).

        .. math:: n = n_a + n_b,\quad \delta = \bar x_b - \bar x_a,\quad
                  \bar x = \bar x_a + \delta \frac{n_b}{n},\quad
                  M_2 = M_{2,a} + M_{2,b} + \delta^2 \frac{n_a n_b}{n}

        Exact in real arithmetic and stable in floating point (no cancellation between large
        sums). Merging with an empty part (``count == 0``) returns the other part's values.

        Parameters
        ----------
        other : Moments
            With mean and M2 broadcastable against this one's.

        Returns
        -------
        Moments

        Examples
        --------
        >>> import numpy as np, fastnorm
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal(1000) + 1e6
        >>> m = fastnorm.Moments.from_array(x[:400]).merge(fastnorm.Moments.from_array(x[400:]))
        >>> bool(abs(m.var() - np.var(x)) < 1e-10 * np.var(x))
        True
        """
        if not isinstance(other, tuple) or len(other) != 3:
            raise TypeError(f"Moments.merge: expected a Moments (count, mean, M2), got "
                            f"{type(other).__name__}")
        other = Moments(*other)
        na, nb = np.asarray(self.count), np.asarray(other.count)
        if na.dtype.kind not in "iu" or nb.dtype.kind not in "iu":
            raise TypeError(f"Moments.merge: counts must be integers, got dtypes {na.dtype} and "
                            f"{nb.dtype}")
        ma, mb = np.asarray(self.mean, np.float64), np.asarray(other.mean, np.float64)
        qa, qb = np.asarray(self.M2, np.float64), np.asarray(other.M2, np.float64)
        n = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            fb = nb / n  # the share of b; NaN where both are empty
            delta = mb - ma
            mean = ma + delta * fb
            m2 = qa + qb + delta * delta * (na * fb)
            # an infinite mean: inf - inf in delta would give NaN where NumPy's sum gives inf
            mean = np.where(np.isfinite(ma) & np.isfinite(mb), mean, (na * ma + nb * mb) / n)
        # an empty part is the identity (its mean is NaN and must not leak in)
        mean = np.where(nb == 0, ma, np.where(na == 0, mb, mean))
        m2 = np.where(nb == 0, qa, np.where(na == 0, qb, m2))
        count = int(n) if n.ndim == 0 and np.ndim(self.count) == np.ndim(other.count) == 0 else n
        return Moments(count, mean[()], m2[()])

    def var(self, ddof=0):
        """``M2 / (count - ddof)`` as float64: NaN (or inf) where ``count - ddof <= 0``, as
        ``np.var`` (without its warning)."""
        _check_ddof(ddof, "Moments.var")
        with np.errstate(invalid="ignore", divide="ignore"):
            return (np.asarray(self.M2, np.float64)
                    / np.maximum(np.asarray(self.count) - ddof, 0))[()]


def _merge_stacked(count, mean, m2):
    """Merge the parts stacked along axis 0 (count: (P,) ints; mean, M2: (P, ...)), pairwise in
    a fixed tree (Chan's formula at each node) -> Moments of the whole."""
    parts = [Moments(int(c), mu, q) for c, mu, q in zip(count, mean, m2)]
    while len(parts) > 1:
        nxt = [a.merge(b) for a, b in zip(parts[0::2], parts[1::2])]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return parts[0]


def moments(x, axis=None, *, ddof=0, keepdims=False):
    r"""Mean and variance of ``x`` over ``axis``, in one pass over memory.

    .. math:: \bar x = \frac{1}{n}\sum_i x_i, \qquad
              \mathrm{Var}[x] = \frac{1}{n - \mathrm{ddof}} \sum_i (x_i - \bar x)^2

    The same as ``(np.mean(x, axis), np.var(x, axis, ddof=ddof))``, computed in double
    precision from one read of ``x`` (sums over fixed-size blocks, shifted where the data sits
    far from zero, merged with Chan's formula, so results do not depend on the thread count).
    float32 results are rounded once from double, so they are more accurate than NumPy's on
    data far from zero.

    Empty reductions follow NumPy: the mean of no values is NaN and the variance with
    ``n - ddof <= 0`` is NaN (inf when the values differ), each with a ``RuntimeWarning``.

    Parameters
    ----------
    x : array_like of float32 or float64, any layout
    axis : None, int or tuple of ints
        The axes reduced, NumPy's conventions (negative allowed; None: all).
    ddof : real, keyword-only
        Delta degrees of freedom of the variance (0: biased, 1: unbiased).
    keepdims : bool, keyword-only
        Keep the reduced axes with length 1.

    Returns
    -------
    mean, var : ndarray (or scalar) of the input's dtype
        Shape: ``x``'s shape without the reduced axes (with them as 1 under ``keepdims``).

    See Also
    --------
    Moments : the mergeable form ``(count, mean, M2)``.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.array([[1.0, 2.0, 3.0], [4.0, 6.0, 8.0]], dtype=np.float32)
    >>> mean, var = fastnorm.moments(x, axis=1)
    >>> mean, var
    (array([2., 6.], dtype=float32), array([0.6666667, 2.6666667], dtype=float32))
    >>> fastnorm.moments(x, axis=1, ddof=1)[1]
    array([1., 4.], dtype=float32)
    """
    x = _check_input(x, "moments")
    axes = _check_axis(axis, x.ndim, "moments")
    _check_ddof(ddof, "moments")
    mean, var, count = _stats(x, axes)
    if count == 0 and mean.size:
        warnings.warn("Mean of empty slice.", RuntimeWarning, stacklevel=2)
    if count - ddof <= 0 and mean.size:
        warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.asarray(var * count / max(count - ddof, 0) if ddof else var)
        if count == 0:
            var = np.full_like(var, np.nan)
    mean, var = _expand(mean, axes, keepdims), _expand(var, axes, keepdims)
    dtype = x.dtype.newbyteorder("=")  # native byte order, as every fastnorm output
    return mean.astype(dtype)[()], var.astype(dtype)[()]
