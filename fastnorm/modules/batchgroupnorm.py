"""BatchGroupNorm2d: Batch Group Normalization (Zhou et al. 2020, "Batch Group Normalization",
arXiv:2012.02782).

The paper's definition: the channel, height and width dimensions of each sample are merged into
one feature dimension of C * H * W entries and divided into G groups; mean and variance are taken
per group over the batch and the group's features (N * C * H * W / G values), each value is
normalized by its group's statistics, and a per-channel affine follows. A public PyTorch
implementation (``BatchGroupNorm``: ``x.view(N, G, -1)`` through ``nn.BatchNorm1d(G,
affine=False)``, then per-channel ``weight``/``bias``) computes exactly this, with per-group
running statistics from torch's BatchNorm; that is what this layer does (its running statistics
are torch's: momentum, unbiased running variance, ``num_batches_tracked``), with the
``torch.nn.BatchNorm2d``-style arguments of the issue and weight = 1 at init (that code draws it
from U(0, 1)). Its checkpoints load: their ``inner_bn.*`` statistics become ``running_mean``,
``running_var`` and ``num_batches_tracked``.

Cost: one statistics pass and one normalize pass when G divides C (groups of whole channels);
otherwise the per-channel affine is a further NumPy pass.
"""
import numpy as np

from .. import _kernels
from ._input import (batch_factor, check_float_input, empty_output, merge_moments, normalized,
                     normalized_input_grad, update_running)
from .batchnorm import _NormBase
from .module import check_size

__all__ = ["BatchGroupNorm2d"]


class BatchGroupNorm2d(_NormBase):
    r"""Batch Group Normalization over a 4D (N, C, H, W) input.

    .. math:: y = \frac{x - \mathrm{E}[x_g]}{\sqrt{\mathrm{Var}[x_g] + \epsilon}} \gamma_c
              + \beta_c

    where :math:`x_g` is the group of the value: each sample's C * H * W values (in C order) are
    split into ``num_groups`` equal groups and the statistics of group g are over the batch and
    the group's values. In training the batch's biased variance normalizes and the per-group
    running estimates are updated as BatchNorm's (``momentum``, unbiased variance,
    ``momentum=None`` for a cumulative average); in eval they are used.

    Parameters
    ----------
    num_features : int
        C.
    num_groups : int
        G; must divide C * H * W of the input (G dividing C: groups of C / G whole channels).
    eps : float, default 1e-5
    momentum : float or None, default 0.1
    affine : bool, default True
        Per-channel ``weight`` (1) and ``bias`` (0) of shape (C,).
    track_running_stats : bool, default True
    device : None or "cpu"
    dtype : numpy dtype, default float32

    Attributes
    ----------
    weight, bias : (C,)
    running_mean, running_var : (G,), zeros and ones
    num_batches_tracked : () int64

    Shape
    -----
    Input (N, C, H, W), float32 or float64, any memory layout; output the same shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.BatchGroupNorm2d(4, num_groups=2)
    >>> x = np.random.default_rng(0).standard_normal((8, 4, 3, 3), dtype=np.float32)
    >>> y = m(x)
    >>> bool(np.allclose(y.reshape(8, 2, -1).mean(axis=(0, 2)), 0, atol=1e-5))
    True
    >>> [(k, v.shape) for k, v in m.state_dict().items()][2:4]
    [('running_mean', (2,)), ('running_var', (2,))]
    >>> m
    BatchGroupNorm2d(4, 2, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    """

    def __init__(self, num_features, num_groups, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None):
        G = check_size(num_groups, "num_groups")
        if G == 0:
            raise ValueError("BatchGroupNorm2d: num_groups must be positive, got 0")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.num_groups = G
        if self.track_running_stats:  # per group, not per channel
            dt = self.running_mean.dtype
            self.register_buffer("running_mean", np.zeros(G, dt))
            self.register_buffer("running_var", np.ones(G, dt))

    def extra_repr(self):
        return (f"{self.num_features}, {self.num_groups}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def _fix_state_dict(self, state_dict, version, error_msgs, prefix=""):
        # the public implementation keeps its statistics in a child BatchNorm1d, "inner_bn"
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            if f"inner_bn.{key}" in state_dict and key not in state_dict:
                state_dict[key] = state_dict.pop(f"inner_bn.{key}")
        super()._fix_state_dict(state_dict, version, error_msgs, prefix)

    def _check(self, input):
        name = "BatchGroupNorm2d"
        x = check_float_input(input, name, (4,), self.num_features)
        N, C, H, W = x.shape
        G = self.num_groups
        if (C * H * W) % G:
            raise ValueError(f"{name}: num_groups ({G}) must divide C * H * W of the input, got "
                             f"input of shape {x.shape}")
        for key, want in (("weight", (C,)), ("bias", (C,)), ("running_mean", (G,)),
                          ("running_var", (G,))):
            a = getattr(self, key)
            if a is not None and a.shape != want:
                raise ValueError(f"{name}: {key} must be an array of shape {want}, got {a.shape}")
        if self.training and x.size and N * C * H * W // G == 1:
            raise ValueError(f"Expected more than 1 value per group when training, got input "
                             f"size {x.shape}")
        return x

    def forward(self, input):
        """Normalize ``input`` with the batch's per-group statistics (training, or eval without
        running statistics) or the running ones (eval)."""
        x = self._check(input)
        N, C = x.shape[:2]
        G = self.num_groups
        track = self.training and self.track_running_stats and self.num_batches_tracked is not None
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        whole = C % G == 0  # groups of whole channels: per-channel coefficients, two passes
        if x.size == 0:
            y = empty_output(x)
        else:
            xg = x.reshape(N, G, -1)
            if use_batch:
                if whole:  # (1, G, N, L): each group's N x L values in one kernel call
                    mean, var = _kernels.instance_moments(xg.transpose(1, 0, 2)[None])
                    mean, var = mean[0], var[0]
                else:  # per-(n, g) moments over equal-sized parts, merged per group in float64
                    m, v = _kernels.instance_moments(xg)
                    mean, var = merge_moments(m, v, (0,))
            else:
                mean = self.running_mean.astype(np.float64)
                var = self.running_var.astype(np.float64)
            if whole:  # eval BatchNorm's pass, each channel taking its group's statistics
                rep = C // G
                y = _kernels.batch_norm(x, np.repeat(mean, rep), np.repeat(var, rep),
                                        self.weight, self.bias, False, 0.0, self.eps)
            else:
                y = _kernels.normalize_nc(xg, np.tile(mean, (N, 1)), np.tile(var, (N, 1)),
                                          None, None, self.eps).reshape(x.shape)
                shape = (1, C, 1, 1)
                if self.weight is not None:
                    y *= self.weight.reshape(shape)
                if self.bias is not None:
                    y += self.bias.reshape(shape)
        if track:  # after the output exists: a failed call changes nothing
            if use_batch and x.size and self.running_mean is not None:
                factor, count = batch_factor(self), x.size // G
                update_running(self.running_mean, mean, factor)
                update_running(self.running_var, var * count / (count - 1), factor)
            self.num_batches_tracked += 1
        return self._keep(y, x=x, batch=use_batch)

    def _backward(self, saved, gy):
        """float64: the per-channel affine's gradients, then batch norm's over each group's N x
        (C * H * W / G) values (batch statistics recomputed from the saved input, or the running
        ones in eval mode)."""
        x = np.asarray(saved["x"], np.float64)
        N, C = x.shape[:2]
        G = self.num_groups
        if x.size == 0:
            return np.zeros(x.shape, saved["dtype"]), {
                k: np.zeros(C) for k in ("weight", "bias") if self._parameters.get(k) is not None}
        running = None if saved["batch"] else (self.running_mean, self.running_var)
        xhat, invstd = normalized(x.reshape(N, G, -1), (0, 2), running, self.eps)
        g = np.asarray(gy, np.float64)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            grads = {}
            red, sh = (0, 2, 3), (1, C, 1, 1)
            if self.weight is not None:
                grads["weight"] = (g * xhat.reshape(x.shape)).sum(axis=red)
                g = g * self.weight.astype(np.float64).reshape(sh)
            if self.bias is not None:
                grads["bias"] = np.asarray(gy, np.float64).sum(axis=red)
            gx = normalized_input_grad(g.reshape(N, G, -1), xhat, invstd, (0, 2), saved["batch"])
        return gx.reshape(x.shape).astype(saved["dtype"]), grads
