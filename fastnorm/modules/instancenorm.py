"""InstanceNorm1d/2d/3d, as in torch: unbatched input accepted, running statistics optional."""
import warnings

from .. import functional as F
from .batchnorm import _NormBase
from .module import ndim_of, shape_of, to_numpy

__all__ = ["InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]


class _InstanceNorm(_NormBase):
    _no_batch_dim = None  # ndim of an unbatched input (C, *spatial)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)

    def _get_no_batch_dim(self):
        return self._no_batch_dim

    def _check_input_dim(self, input):
        nd = ndim_of(input)
        if nd not in (self._no_batch_dim, self._no_batch_dim + 1):
            raise ValueError(f"expected {self._no_batch_dim}D or {self._no_batch_dim + 1}D input "
                             f"(got {nd}D input)")

    def _fix_state_dict(self, state_dict, version, error_msgs, prefix=""):
        super()._fix_state_dict(state_dict, version, error_msgs, prefix)
        if self.track_running_stats or version is not None:
            return
        # torch refuses running statistics for a layer that does not track them in a state
        # dict without version metadata (checkpoints from before torch 0.4 had them), and says
        # so even with strict=False
        keys = [k for k in ("running_mean", "running_var") if k in state_dict]
        if keys:
            klass = type(self).__name__
            error_msgs.append(
                "Unexpected running stats buffer(s) {names} for {klass} with "
                "track_running_stats=False. If state_dict is a checkpoint saved before 0.4.0, "
                "this may be expected because {klass} does not track running stats by default "
                "since 0.4.0. Please remove these keys from state_dict. If the running stats are "
                "actually needed, instead set track_running_stats=True in {klass} to enable "
                "them. See the documentation of {klass} for details.".format(
                    names=" and ".join(f'"{prefix}{k}"' for k in keys), klass=klass))
            for k in keys:
                del state_dict[k]

    def forward(self, input):
        """Normalize each (sample, channel) over its spatial axes (input statistics in training
        or without running statistics; the running statistics in eval mode when tracked)."""
        self._check_input_dim(input)
        shape = shape_of(input)
        feature_dim = len(shape) - self._no_batch_dim
        if shape[feature_dim] != self.num_features:
            # torch's words; the layer, and the input's shape, added
            msg = (f"{type(self).__name__}({self.num_features}): expected input's size at "
                   f"dim={feature_dim} to match num_features ({self.num_features}), but got: "
                   f"{shape[feature_dim]}. (input of shape {shape})")
            if self.affine:
                raise ValueError(msg)
            warnings.warn(f"input's size at dim={feature_dim} does not match num_features. You "
                          "can silence this warning by not passing in num_features, which is not "
                          "used because affine=False", stacklevel=2)
            if self.running_mean is not None or self.running_var is not None:
                raise ValueError(msg + " (num_features is the size of running_mean and "
                                       "running_var)")
        unbatched = len(shape) == self._no_batch_dim
        if unbatched:
            input = to_numpy(input)[None]
        use_input_stats = self.training or not self.track_running_stats
        momentum = self.momentum if self.momentum is not None else 0.0
        if self._grad_enabled:
            x = to_numpy(input)
            y, mean, invstd = F.native_instance_norm(x, self.weight, self.bias, self.running_mean,
                                                     self.running_var, use_input_stats, momentum,
                                                     self.eps)
            if not use_input_stats:  # eval: the running statistics of this forward
                mean, invstd = self.running_mean.copy(), self.running_var.copy()
            self._keep(y[0] if unbatched else y, x=x, mean=mean, invstd=invstd,
                       train=use_input_stats, unbatched=unbatched)
        else:
            y = F.instance_norm(input, self.running_mean, self.running_var, self.weight,
                                self.bias, use_input_stats, momentum, self.eps)
        return y[0] if unbatched else y

    def _backward(self, saved, gy):
        train = saved["train"]
        mean, invstd = saved["mean"], saved["invstd"]
        gx, gw, gb = F.native_instance_norm_backward(
            gy[None] if saved["unbatched"] else gy, saved["x"], self.weight,
            None if train else mean, None if train else invstd, mean if train else None,
            invstd if train else None, train, self.eps, [True] + self._mask("weight", "bias"))
        gx = gx[0] if saved["unbatched"] else gx
        return gx, {k: g for k, g in (("weight", gw), ("bias", gb)) if g is not None}


_DOC = r"""Instance normalization over a {nd}D (unbatched) or {nd1}D (batched) input {shape}, as
    ``torch.nn.{name}``.

    .. math:: y = \frac{{x - \mathrm{{E}}[x]}}{{\sqrt{{\mathrm{{Var}}[x] + \epsilon}}}} \gamma + \beta

    Mean and biased variance are per sample and channel over the spatial axes. With
    ``track_running_stats=True`` training updates ``running_mean``/``running_var`` with the batch
    average of the per-instance mean and unbiased variance, and eval mode normalizes with them.
    ``num_batches_tracked`` is kept for state_dict compatibility but, as in torch, never counts.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
    affine : bool, default False
        Learnable ``weight`` (1) and ``bias`` (0) of shape (C,).
    track_running_stats : bool, default False
    device : None or "cpu"
    dtype : numpy dtype, default float32
    bias : bool, default True (keyword-only)

    Shape
    -----
    Input {shape} or without N; output the same shape and dtype as the input.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.{name}(3)
    >>> x = np.random.default_rng(0).standard_normal({example}).astype(np.float32)
    >>> y = m(x)
    >>> y.shape == x.shape, bool(np.allclose(y.mean(axis={axes}), 0, atol=1e-5))
    (True, True)
    """


class InstanceNorm1d(_InstanceNorm):
    __doc__ = _DOC.format(nd=2, nd1=3, shape="(N, C, L)", name="InstanceNorm1d",
                          example="(4, 3, 16)", axes="-1")
    _no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm):
    __doc__ = _DOC.format(nd=3, nd1=4, shape="(N, C, H, W)", name="InstanceNorm2d",
                          example="(4, 3, 8, 8)", axes="(-2, -1)")
    _no_batch_dim = 3


class InstanceNorm3d(_InstanceNorm):
    __doc__ = _DOC.format(nd=4, nd1=5, shape="(N, C, D, H, W)", name="InstanceNorm3d",
                          example="(2, 3, 4, 4, 4)", axes="(-3, -2, -1)")
    _no_batch_dim = 4
