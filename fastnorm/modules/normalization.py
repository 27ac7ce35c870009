"""LayerNorm, GroupNorm and RMSNorm, as in torch."""
import numpy as np

from .. import functional as F
from .. import _checks
from .module import (Module, check_channels, check_device, check_dtype, check_eps, check_size,
                     ndim_of, shape_of, to_numpy)

__all__ = ["LayerNorm", "GroupNorm", "RMSNorm"]


class _Affine(Module):
    """A layer whose only state is its optional ``weight`` (and ``bias``)."""

    def reset_parameters(self):
        """weight = 1 and bias = 0 (in place), where the layer has them."""
        self._reset_affine()

    def _check_trailing(self, input):
        """LayerNorm/RMSNorm: the input ends with normalized_shape (torch's words, the layer
        named); an empty normalized_shape is left to the function, which refuses it."""
        ns = self.normalized_shape
        shape = shape_of(input)
        if ns and tuple(shape[len(shape) - len(ns):]) != ns:
            raise ValueError(f"{type(self).__name__}({ns}): given normalized_shape={list(ns)}, "
                             f"expected input with shape [*, {', '.join(map(str, ns))}], but got "
                             f"input of size {list(shape)}")


class LayerNorm(_Affine):
    r"""Layer normalization over the trailing ``normalized_shape`` axes, as ``torch.nn.LayerNorm``.

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Mean and biased variance are taken per row over the last ``len(normalized_shape)`` axes, in
    training and eval mode alike; :math:`\gamma`, :math:`\beta` are elementwise, of shape
    ``normalized_shape``.

    Parameters
    ----------
    normalized_shape : int or sequence of int
    eps : float, default 1e-5
    elementwise_affine : bool, default True
        Learnable ``weight`` (1) and ``bias`` (0) of shape ``normalized_shape``.
    bias : bool, default True
        Without it ``bias`` is None.
    device : None or "cpu"
    dtype : numpy dtype, default float32

    Shape
    -----
    Input (*, *normalized_shape); output the same shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.LayerNorm(768)
    >>> x = np.random.default_rng(0).standard_normal((2, 5, 768)).astype(np.float32)
    >>> y = m(x)
    >>> m, bool(np.allclose(y.mean(axis=-1), 0, atol=1e-5))
    (LayerNorm((768,), eps=1e-05, elementwise_affine=True, bias=True), True)
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        check_device(device)
        dt = check_dtype(dtype)
        # torch builds a layer over () and fails at the first call: so do we
        self.normalized_shape = _checks.check_normalized_shape(
            normalized_shape, type(self).__name__, empty_ok=True)
        self.eps = check_eps(eps, type(self).__name__)
        self.elementwise_affine = bool(elementwise_affine)
        ns = self.normalized_shape
        self.register_parameter("weight", np.ones(ns, dt) if self.elementwise_affine else None)
        self.register_parameter("bias", np.zeros(ns, dt) if self.elementwise_affine and bias
                                else None)

    def forward(self, input):
        if not self._grad_enabled:
            try:
                return F.layer_norm(input, self.normalized_shape, self.weight, self.bias,
                                    self.eps)
            except ValueError:
                self._check_trailing(input)  # the layer-named message, when the shape is why
                raise
        self._check_trailing(input)
        x = to_numpy(input)
        y, mean, rstd = F.native_layer_norm(x, self.normalized_shape, self.weight, self.bias,
                                            self.eps)
        return self._keep(y, x=x, mean=mean, rstd=rstd)

    def _backward(self, saved, gy):
        gx, gw, gb = F.native_layer_norm_backward(gy, saved["x"], self.normalized_shape,
                                                  saved["mean"], saved["rstd"], self.weight,
                                                  self.bias, [True] + self._mask("weight", "bias"))
        return gx, {k: g for k, g in (("weight", gw), ("bias", gb)) if g is not None}

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class GroupNorm(_Affine):
    r"""Group normalization, as ``torch.nn.GroupNorm``.

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    The C channels are split into ``num_groups`` groups of consecutive channels; mean and biased
    variance are per sample and group, over the group's channels and the spatial axes.
    :math:`\gamma`, :math:`\beta` are per channel. Training and eval mode behave the same.

    Parameters
    ----------
    num_groups : int
        Must divide ``num_channels``.
    num_channels : int
    eps : float, default 1e-5
    affine : bool, default True
        Learnable ``weight`` (1) and ``bias`` (0) of shape (C,).
    device : None or "cpu"
    dtype : numpy dtype, default float32
    bias : bool, default True (keyword-only)

    Shape
    -----
    Input (N, C, *); output the same shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.GroupNorm(2, 6)
    >>> x = np.random.default_rng(0).standard_normal((4, 6, 5, 5)).astype(np.float32)
    >>> g = m(x).reshape(4, 2, -1)
    >>> bool(np.allclose(g.mean(axis=-1), 0, atol=1e-5))
    True
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None,
                 *, bias=True):
        super().__init__()
        check_device(device)
        dt = check_dtype(dtype)
        num_groups = check_size(num_groups, "num_groups")
        num_channels = check_size(num_channels, "num_channels")
        if num_groups == 0:
            raise ValueError("num_groups must be positive, got 0")
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = check_eps(eps, type(self).__name__)
        self.affine = bool(affine)
        C = num_channels
        self.register_parameter("weight", np.ones(C, dt) if self.affine else None)
        self.register_parameter("bias", np.zeros(C, dt) if self.affine and bias else None)

    def forward(self, input):
        label = f"GroupNorm({self.num_groups}, {self.num_channels})"
        nd = ndim_of(input)
        if nd < 2:
            raise ValueError(f"{label}: expected input of at least 2 dimensions (N, C, *), got "
                             f"{nd}D input of shape {shape_of(input)}")
        if self.weight is not None or self.bias is not None:  # per-channel state
            check_channels(label, input, self.num_channels)
        if not self._grad_enabled:
            return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)
        x = to_numpy(input)
        if x.ndim < 2:  # the op's own message
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        N, C, HxW = x.shape[0], x.shape[1], int(np.prod(x.shape[2:]))
        y, mean, rstd = F.native_group_norm(x, self.weight, self.bias, N, C, HxW,
                                            self.num_groups, self.eps)
        return self._keep(y, x=x, mean=mean, rstd=rstd)

    def _backward(self, saved, gy):
        x = saved["x"]
        N, C, HxW = x.shape[0], x.shape[1], int(np.prod(x.shape[2:]))
        gx, gw, gb = F.native_group_norm_backward(gy, x, saved["mean"], saved["rstd"],
                                                  self.weight, N, C, HxW, self.num_groups,
                                                  [True] + self._mask("weight", "bias"))
        return gx, {k: g for k, g in (("weight", gw), ("bias", gb))
                    if g is not None and self._parameters.get(k) is not None}

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class RMSNorm(_Affine):
    r"""Root-mean-square normalization over the trailing ``normalized_shape`` axes, as
    ``torch.nn.RMSNorm``.

    .. math:: y = \frac{x}{\sqrt{\frac{1}{n}\sum_i x_i^2 + \epsilon}} \gamma

    Parameters
    ----------
    normalized_shape : int or sequence of int
    eps : float or None, default None
        None means the machine epsilon of the type torch computes the input in: float64's for
        float64 input, float32's for float32, float16 and bfloat16 (``F.rms_norm``).
    elementwise_affine : bool, default True
        Learnable ``weight`` (1) of shape ``normalized_shape``.
    device : None or "cpu"
    dtype : numpy dtype, default float32

    Shape
    -----
    Input (*, *normalized_shape); output the same shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.RMSNorm(2)
    >>> m(np.array([[3.0, 4.0]], dtype=np.float32)).round(4)
    array([[0.8485, 1.1314]], dtype=float32)
    >>> m
    RMSNorm((2,), eps=None, elementwise_affine=True)
    """

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None,
                 dtype=None):
        super().__init__()
        check_device(device)
        dt = check_dtype(dtype)
        # torch builds a layer over () and fails at the first call: so do we
        self.normalized_shape = _checks.check_normalized_shape(
            normalized_shape, type(self).__name__, empty_ok=True)
        self.eps = check_eps(eps, type(self).__name__, allow_none=True)
        self.elementwise_affine = bool(elementwise_affine)
        self.register_parameter("weight", np.ones(self.normalized_shape, dt)
                                if self.elementwise_affine else None)

    def forward(self, input):
        if not self._grad_enabled:  # as LayerNorm.forward
            try:
                return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)
            except ValueError:
                self._check_trailing(input)
                raise
        self._check_trailing(input)
        x = to_numpy(input)
        y, rstd = F.native_rms_norm(x, self.normalized_shape, self.weight, self.eps)
        return self._keep(y, x=x, rstd=rstd)

    def _backward(self, saved, gy):
        gx, gw = F.native_rms_norm_backward(gy, saved["x"], self.normalized_shape, saved["rstd"],
                                            self.weight, [True] + self._mask("weight"))
        return gx, ({} if gw is None else {"weight": gw})

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")
