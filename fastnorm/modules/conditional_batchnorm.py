"""CategoricalConditionalBatchNorm2d and SandwichBatchNorm2d (Gong et al. 2021, "Sandwich Batch
Normalization: A Drop-In Replacement for Feature Distribution Heterogeneity", arXiv:2102.11382),
with the arguments, ``forward(x, y)``, initialisation and state_dict keys (``bn.*``,
``embed.weight``) of the authors' modules (``VITA-Group/Sandwich-Batch-Normalization``,
``GAN/models/modules.py``), so that their checkpoints load.

Cost: one statistics pass (per-(n, c) moments, merged per channel in float64) and one normalize
pass in which BN, its shared affine and the per-sample affine are one multiply-add per element.
"""

import numpy as np

from .. import _kernels
from ._input import (batch_factor, check_float_input, merge_moments, normalized,
                     normalized_input_grad, update_running)
from .batchnorm import BatchNorm2d
from .module import Module, check_dtype, check_size, to_numpy

__all__ = ["CategoricalConditionalBatchNorm2d", "SandwichBatchNorm2d"]


class _Embedding(Module):
    """The lookup table of ``torch.nn.Embedding(num_embeddings, embedding_dim)``: ``weight`` only
    (state_dict key and repr as torch's)."""

    def __init__(self, num_embeddings, embedding_dim, dtype):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_parameter("weight", np.zeros((num_embeddings, embedding_dim), dtype))

    def forward(self, labels):
        return self.weight[np.asarray(labels)]

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"


def merge_nc(a):
    """a (N, C, *) seen as (1, N*C, *) without a copy (each (n, c) plane a channel), or None when
    its strides do not allow it (channels-last memory, say)."""
    N, C = a.shape[:2]
    if N > 1 and C > 1 and a.strides[0] != C * a.strides[1]:
        return None
    step = a.strides[1] if C > 1 else a.strides[0]
    return np.lib.stride_tricks.as_strided(a, (1, N * C) + a.shape[2:],
                                           (0, step) + a.strides[2:])


class _ConditionalBatchNorm2d(Module):
    """A torch container of two children, ``bn`` (BatchNorm2d) and ``embed`` (Embedding of
    ``2 * num_features`` columns: the per-class scale, then the per-class shift)."""

    _bn_affine = False

    def __init__(self, num_features, num_classes, *, dtype=None, rng=None):
        super().__init__()
        dt = check_dtype(dtype)
        C = self.num_features = check_size(num_features, "num_features")
        self.num_classes = check_size(num_classes, "num_classes")
        self.bn = BatchNorm2d(C, affine=self._bn_affine, dtype=dt)  # children, as torch's
        self.embed = _Embedding(self.num_classes, 2 * C, dt)
        # the authors' init: scale ~ N(1, 0.02), shift 0
        rng = np.random.default_rng(rng)
        self.embed.weight[:, :C] = rng.normal(1.0, 0.02, (self.num_classes, C))
        self.embed.weight[:, C:] = 0

    def __setattr__(self, name, value):
        # the forward needs both children: a new one may take an old one's place, None may not
        if name in self.__dict__.get("_modules", ()) and not isinstance(value, Module):
            raise TypeError(f"cannot assign {type(value).__name__!r} as child module "
                            f"{name!r} (a fastnorm layer expected)")
        super().__setattr__(name, value)

    def __delattr__(self, name):
        if name in self.__dict__.get("_modules", ()):
            raise AttributeError(f"cannot delete child module {name!r}: the forward needs it "
                                 f"(assign a fastnorm layer in its place)")
        super().__delattr__(name)

    # -- forward ------------------------------------------------------------------------------

    def _check(self, input, y):
        """The input, the labels and the state (bn's weight, bias, running_mean, running_var,
        and the embedding's table), before anything changes."""
        name = type(self).__name__
        x = check_float_input(input, name, (4,), self.num_features)
        try:
            labels = to_numpy(y)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"{name}: y must be an array of integer class labels, got "
                            f"{type(y).__name__}") from exc
        if labels.dtype.kind not in "iu":
            raise TypeError(f"{name}: y must hold integer class labels, got dtype {labels.dtype}")
        N = x.shape[0]
        if labels.ndim != 1 or labels.shape[0] not in (N, 1):
            raise ValueError(f"{name}: expected y of shape ({N},) (one label per sample) or (1,), "
                             f"got shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = labels[(labels < 0) | (labels >= self.num_classes)][0]
            raise IndexError(f"{name}: class label {bad} out of range [0, {self.num_classes})")
        C, bn, table = self.num_features, self.bn, self.embed.weight
        if table is None or table.shape != (self.num_classes, 2 * C):
            raise ValueError(f"{name}: embed.weight must be an array of shape "
                             f"({self.num_classes}, {2 * C})")
        state = [getattr(bn, key) for key in ("weight", "bias", "running_mean", "running_var")]
        for key, a in zip(("weight", "bias", "running_mean", "running_var"), state):
            if a is not None and a.shape != (C,):
                raise ValueError(f"{name}: bn.{key} must be an array of shape ({C},), got "
                                 f"{a.shape}")
        S = x.size // max(N * C, 1)
        if bn.training and x.size and N * S == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input "
                             f"size {x.shape}")
        labels = labels if labels.shape[0] == N else np.broadcast_to(labels, (N,))
        return x, labels, table, state

    def forward(self, input, y):
        """``bn(input)``, then ``gamma[y] * out + beta[y]`` per sample (``y``: (N,) integer class
        labels)."""
        x, labels, table, (w, b, rm, rv) = self._check(input, y)
        bn = self.bn
        if x.size == 0:
            return self._keep(bn(x), x=x, labels=labels, batch=True)
        track = bn.training and bn.track_running_stats and bn.num_batches_tracked is not None
        use_batch = bn.training or (rm is None and rv is None)
        N, C = x.shape[:2]
        # the coefficients in the compute type (float64 for float64 input, else float32),
        # whatever the parameters' dtypes, as every layer casts its parameters
        ct = np.float64 if x.dtype.itemsize == 8 else np.float32
        e = table[labels].astype(ct, copy=False)  # (N, 2C)
        scale, shift = e[:, :C], e[:, C:]
        if w is not None:  # Sandwich BN: the shared affine inside the per-class one
            # one rounding per coefficient, as torch's chained affine has per step
            if b is not None:
                shift = scale * b.astype(ct, copy=False) + shift
            scale = scale * w.astype(ct, copy=False)
        if x.shape[2] * x.shape[3] > 1:  # one kernel: statistics, then the per-sample affine
            keep = track or not use_batch
            y = _kernels.batch_norm_sample_affine(x, rm if keep else None, rv if keep else None,
                                                  scale, shift, use_batch,
                                                  batch_factor(bn) if track else 0.0, bn.eps)
            if track:  # after the output exists: a failed call changes nothing
                bn.num_batches_tracked += 1
            return self._keep(y, x=x, labels=labels, batch=use_batch)
        if use_batch:
            mean, var = merge_moments(*_kernels.instance_moments(x), 0)  # one pass
        else:
            mean, var = rm.astype(np.float64), rv.astype(np.float64)
        y = np.empty_like(x, dtype=x.dtype.newbyteorder("="))
        xm, ym = merge_nc(x), merge_nc(y)
        if xm is not None and ym is not None:  # one call: each (n, c) plane a channel
            _kernels.normalize_nc(xm, np.tile(mean, N)[None], np.tile(var, N)[None],
                                  scale.ravel(), shift.ravel(), bn.eps, ym)
        else:
            for n in range(N):
                _kernels.normalize_nc(x[n:n + 1], mean[None], var[None], scale[n], shift[n],
                                      bn.eps, y[n:n + 1])
        if track:  # after the output exists: a failed call changes nothing
            if rm is not None:
                factor, count = batch_factor(bn), x.size // C
                update_running(rm, mean, factor)
                update_running(rv, var * count / (count - 1), factor)
            bn.num_batches_tracked += 1
        return self._keep(y, x=x, labels=labels, batch=use_batch)

    def _backward(self, saved, gy):
        """float64, gradients under the names of named_parameters(): the per-class rows of
        ``embed.weight`` (added up over the samples of each class), ``bn.weight`` and ``bn.bias``
        (Sandwich BN), then batch norm's input gradient (batch statistics recomputed from the
        saved input, or the running ones in eval mode)."""
        x = np.asarray(saved["x"], np.float64)
        labels, bn, C = saved["labels"], self.bn, self.num_features
        w, b = bn.weight, bn.bias
        red, sh = (0, 2, 3), (1, C, 1, 1)
        table = self.embed.weight
        grads = {"embed.weight": np.zeros(table.shape)}
        for key, p in (("bn.weight", w), ("bn.bias", b)):
            if p is not None:
                grads[key] = np.zeros(C)
        if x.size == 0:
            return np.zeros(x.shape, saved["dtype"]), grads
        running = None if saved["batch"] else (bn.running_mean, bn.running_var)
        xhat, invstd = normalized(x, red, running, bn.eps)
        g = np.asarray(gy, np.float64)
        e = table.astype(np.float64)[labels]
        gamma = e[:, :C, None, None]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            inner = xhat  # what the per-class affine scales: bn's output
            if w is not None:
                inner = xhat * w.astype(np.float64).reshape(sh)
            if b is not None:
                inner = inner + b.astype(np.float64).reshape(sh)
            np.add.at(grads["embed.weight"][:, :C], labels, (g * inner).sum(axis=(2, 3)))
            np.add.at(grads["embed.weight"][:, C:], labels, g.sum(axis=(2, 3)))
            g = g * gamma  # d loss / d (bn's output)
            if b is not None:
                grads["bn.bias"] = g.sum(axis=red)
            if w is not None:
                grads["bn.weight"] = (g * xhat).sum(axis=red)
                g = g * w.astype(np.float64).reshape(sh)
            gx = normalized_input_grad(g, xhat, invstd, red, saved["batch"])
        return gx.astype(saved["dtype"]), grads


class CategoricalConditionalBatchNorm2d(_ConditionalBatchNorm2d):
    r"""Categorical conditional batch normalization over a 4D (N, C, H, W) input, as the authors'
    ``CategoricalConditionalBatchNorm2d``: batch norm without affine, then a per-sample scale and
    shift looked up by the sample's class label.

    .. math:: y_n = \gamma_{y_n} \frac{x_n - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}
              + \beta_{y_n}

    with :math:`[\gamma_k, \beta_k]` = ``embed.weight[k]`` (C scales, then C shifts). The BN part
    is ``bn``, a :class:`BatchNorm2d` (``affine=False``; eps 1e-5, momentum 0.1, running
    statistics updated in training and used in eval, exactly as BatchNorm2d).

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    num_classes : int
        Rows of the embedding.
    dtype : numpy dtype, default float32 (keyword-only)
    rng : seed or numpy.random.Generator, optional (keyword-only)
        For the initial scales, N(1, 0.02) as the authors' (shifts start at 0).

    Attributes
    ----------
    bn : BatchNorm2d(C, affine=False)
    embed : the embedding; ``embed.weight`` (num_classes, 2C)

    Shape
    -----
    Input (N, C, H, W), float32 or float64, any memory layout, and ``y`` (N,) integer labels in
    [0, num_classes) (or (1,): one label for all); output the input's shape and dtype.

    Notes
    -----
    Labels that are not integers, not in range, or not one per sample raise before anything
    changes (``TypeError``, ``IndexError``, ``ValueError``). The three affine steps are one
    multiply-add per element here (torch rounds after each step).

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.CategoricalConditionalBatchNorm2d(3, num_classes=10, rng=0)
    >>> x = np.random.default_rng(0).standard_normal((4, 3, 5, 5), dtype=np.float32)
    >>> m(x, np.array([0, 1, 9, 1])).shape
    (4, 3, 5, 5)
    >>> list(m.state_dict())
    ['bn.running_mean', 'bn.running_var', 'bn.num_batches_tracked', 'embed.weight']
    >>> m  # doctest: +NORMALIZE_WHITESPACE
    CategoricalConditionalBatchNorm2d(
      (bn): BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=False, bias=False, track_running_stats=True)
      (embed): Embedding(10, 6)
    )
    """


class SandwichBatchNorm2d(_ConditionalBatchNorm2d):
    r"""Sandwich batch normalization over a 4D (N, C, H, W) input, as the authors'
    ``SandwichBatchNorm2d``: batch norm with its shared affine, then the per-class affine.

    .. math:: y_n = \gamma_{y_n} \left(w \frac{x_n - \mathrm{E}[x]}
              {\sqrt{\mathrm{Var}[x] + \epsilon}} + b\right) + \beta_{y_n}

    with ``bn.weight`` (w) and ``bn.bias`` (b), and :math:`[\gamma_k, \beta_k]` =
    ``embed.weight[k]``. Parameters, modes, shapes and checks are those of
    :class:`CategoricalConditionalBatchNorm2d`; ``bn`` is ``BatchNorm2d(C)`` (affine).

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.SandwichBatchNorm2d(2, num_classes=3, rng=0)
    >>> list(m.state_dict())
    ['bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var', 'bn.num_batches_tracked', 'embed.weight']
    >>> y = m.eval()(np.ones((2, 2, 3, 3)), [2, 0])
    >>> y.shape, int(m.bn.num_batches_tracked)
    ((2, 2, 3, 3), 0)
    """

    _bn_affine = True
