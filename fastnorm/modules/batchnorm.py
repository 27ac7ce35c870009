"""BatchNorm1d/2d/3d and their common base ``_NormBase`` (shared with InstanceNorm), as in torch."""
import numpy as np

from .. import _checks
from .. import functional as F
from .module import (Module, check_channels, check_device, check_dtype, check_eps, check_size,
                     ndim_of, shape_of, to_numpy)

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


def check_momentum(momentum, owner, allow_none=True):
    """momentum as given (for torch's repr), after the functional ops' own check."""
    if momentum is None and allow_none:
        return None
    _checks.check_momentum(momentum, owner, allow_none)
    return momentum.item() if isinstance(momentum, np.generic) else momentum


class _NormBase(Module):
    """State shared by BatchNorm and InstanceNorm: ``weight``/``bias`` (when ``affine``) and
    ``running_mean``/``running_var``/``num_batches_tracked`` (when ``track_running_stats``)."""

    _version = 2  # as torch's: version 2 added num_batches_tracked

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        check_device(device)
        dt = check_dtype(dtype)
        self.num_features = check_size(num_features, "num_features")
        self.eps = check_eps(eps, type(self).__name__)
        self.momentum = check_momentum(momentum, type(self).__name__)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        C = self.num_features
        self.register_parameter("weight", np.ones(C, dt) if self.affine else None)
        self.register_parameter("bias", np.zeros(C, dt) if self.affine and bias else None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, dt))
            self.register_buffer("running_var", np.ones(C, dt))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        """running_mean = 0, running_var = 1, num_batches_tracked = 0 (in place)."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self):
        """Reset the running statistics, weight = 1 and bias = 0 (in place)."""
        self.reset_running_stats()
        self._reset_affine()

    def _check_input_dim(self, input):
        raise NotImplementedError

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    def _fix_state_dict(self, state_dict, version, error_msgs, prefix=""):
        # a state dict without version metadata, or from before num_batches_tracked existed,
        # may lack it: keep the module's own count, as torch does
        if ((version is None or version < 2) and self.track_running_stats
                and "num_batches_tracked" not in state_dict):
            nbt = self.num_batches_tracked  # None: turned off; then an unexpected key, as torch
            state_dict["num_batches_tracked"] = (np.array(0, np.int64) if nbt is None
                                                 else nbt.copy())


class _BatchNorm(_NormBase):
    def forward(self, input):
        """Normalize ``input`` with batch statistics (training, or eval without running stats)
        or with the running statistics (eval)."""
        self._check_input_dim(input)
        training, momentum = self.training, self.momentum
        w, b, rm, rv = self.weight, self.bias, self.running_mean, self.running_var
        track = training and self.track_running_stats and self.num_batches_tracked is not None
        factor = 0.0 if momentum is None else momentum
        if track and momentum is None:  # cumulative moving average over the batches
            factor = 1.0 / float(self.num_batches_tracked + 1)
        use_batch_stats = training or (rm is None and rv is None)
        if training and not self.track_running_stats:
            rm = rv = None
        if ((rm is not None or rv is not None or w is not None or b is not None)
                and shape_of(input)[1] != self.num_features):  # per-channel state
            check_channels(f"{type(self).__name__}({self.num_features})", input,
                           self.num_features)
        if self._grad_enabled:
            x = to_numpy(input)
            y, mean, invstd = F.native_batch_norm(x, w, b, rm, rv, use_batch_stats, factor,
                                                  self.eps)
            if not use_batch_stats:  # eval: the running statistics of this forward
                mean, invstd = rm.copy(), rv.copy()
            self._keep(y, x=x, mean=mean, invstd=invstd, train=use_batch_stats)
        else:
            y = F.batch_norm(input, rm, rv, w, b, use_batch_stats, factor, self.eps)
        if track:  # counted after the call succeeded: a rejected input changes nothing
            self.num_batches_tracked += 1
        return y

    def _backward(self, saved, gy):
        train = saved["train"]
        mean, invstd = saved["mean"], saved["invstd"]
        gx, gw, gb = F.native_batch_norm_backward(
            gy, saved["x"], self.weight, None if train else mean, None if train else invstd,
            mean if train else None, invstd if train else None, train, self.eps,
            [True] + self._mask("weight", "bias"))
        return gx, {k: g for k, g in (("weight", gw), ("bias", gb)) if g is not None}


class BatchNorm1d(_BatchNorm):
    r"""Batch normalization over a 2D (N, C) or 3D (N, C, L) input, as ``torch.nn.BatchNorm1d``.

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Mean and variance are per channel over N (and L). In training mode the batch's biased
    variance normalizes and the running estimates are updated with momentum (unbiased variance;
    ``momentum=None`` gives a cumulative average); in eval mode the running estimates are used.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
    affine : bool, default True
        Learnable ``weight`` (1) and ``bias`` (0) of shape (C,).
    track_running_stats : bool, default True
        Keep ``running_mean``, ``running_var`` and ``num_batches_tracked``; without them batch
        statistics are used in eval mode too.
    device : None or "cpu"
    dtype : numpy dtype, default float32
        dtype of the parameters and buffers.
    bias : bool, default True (keyword-only)
        Without it ``bias`` is None.

    Shape
    -----
    Input (N, C) or (N, C, L); output the same shape and dtype as the input.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.BatchNorm1d(4)
    >>> y = m(np.random.default_rng(0).standard_normal((8, 4), dtype=np.float32))
    >>> y.shape, int(m.num_batches_tracked)
    ((8, 4), 1)
    """

    def _check_input_dim(self, input):
        nd = ndim_of(input)
        if nd != 2 and nd != 3:
            raise ValueError(f"expected 2D or 3D input (got {nd}D input)")


class BatchNorm2d(_BatchNorm):
    r"""Batch normalization over a 4D (N, C, H, W) input, as ``torch.nn.BatchNorm2d``.

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Mean and variance are per channel over N, H and W. Parameters and modes are those of
    :class:`BatchNorm1d`.

    Shape
    -----
    Input (N, C, H, W), any memory layout (NCHW, channels-last, views); output the same shape and
    dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.BatchNorm2d(6)
    >>> x = np.random.default_rng(0).standard_normal((20, 6, 10, 10), dtype=np.float32)
    >>> y = m(x)
    >>> bool(np.allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5))
    True
    >>> m.eval()
    BatchNorm2d(6, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
    """

    def _check_input_dim(self, input):
        nd = ndim_of(input)
        if nd != 4:
            raise ValueError(f"expected 4D input (got {nd}D input)")


class BatchNorm3d(_BatchNorm):
    r"""Batch normalization over a 5D (N, C, D, H, W) input, as ``torch.nn.BatchNorm3d``.

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Mean and variance are per channel over N, D, H and W. Parameters and modes are those of
    :class:`BatchNorm1d`.

    Shape
    -----
    Input (N, C, D, H, W); output the same shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.BatchNorm3d(2).eval()
    >>> m(np.ones((1, 2, 2, 2, 2))).shape
    (1, 2, 2, 2, 2)
    """

    def _check_input_dim(self, input):
        nd = ndim_of(input)
        if nd != 5:
            raise ValueError(f"expected 5D input (got {nd}D input)")
