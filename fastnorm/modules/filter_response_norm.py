"""FilterResponseNorm1d/2d/3d: Filter Response Normalization with a thresholded linear unit (Singh &
Krishnan 2019, "Filter Response Normalization Layer", arXiv:1911.09737), with the arguments,
parameters (``weight``, ``bias``, ``tau`` of shape (C,)) and math of timm's
``FilterResponseNormTlu2d`` (``timm/layers/filter_response_norm.py``), so that its checkpoints load.

Cost: one pass over memory (``fastnorm.functional.filter_response_norm``): each (n, c) plane's
mean of squares, then its normalization, affine and TLU while the plane is in cache
(channels-last input is first copied to C order).
"""
import numpy as np

from .. import functional as F
from ._input import check_float_input
from .module import Module, check_device, check_dtype, check_eps, check_size, to_numpy

__all__ = ["FilterResponseNorm1d", "FilterResponseNorm2d", "FilterResponseNorm3d"]


class _FilterResponseNorm(Module):
    _ndim = 4

    def __init__(self, num_features, apply_act=True, eps=1e-5, rms=True, device=None,
                 dtype=None):
        super().__init__()
        check_device(device)
        dt = check_dtype(dtype)
        self.num_features = check_size(num_features, "num_features")
        self.apply_act = bool(apply_act)
        self.eps = check_eps(eps, type(self).__name__)
        self.rms = bool(rms)  # kept as timm keeps it; it changes nothing there either
        C = self.num_features
        self.register_parameter("weight", np.ones(C, dt))
        self.register_parameter("bias", np.zeros(C, dt))
        self.register_parameter("tau", np.zeros(C, dt) if self.apply_act else None)

    def reset_parameters(self):
        """weight = 1, bias = 0, tau = 0 (in place), as timm."""
        self._reset_affine()
        if self.tau is not None:
            self.tau[...] = 0

    def _fix_state_dict(self, state_dict, version, error_msgs, prefix=""):
        # checkpoints of FRN ports that keep (1, C, 1, 1) parameters (the paper's TF code and
        # others) load too: C elements in any shape become (C,)
        C = self.num_features
        for key in ("weight", "bias", "tau"):
            if key in state_dict and self._parameters.get(key) is not None:
                try:
                    value = to_numpy(state_dict[key])
                except Exception:  # noqa: BLE001 - load_state_dict reports it
                    continue
                if value.shape != (C,) and value.size == C and value.ndim > 1:
                    state_dict[key] = value.reshape(C)

    def forward(self, input):
        """max(weight * x / sqrt(mean(x^2, spatial) + eps) + bias, tau); no max without
        ``apply_act``."""
        name = type(self).__name__
        x = check_float_input(input, name, (self._ndim,), self.num_features)
        for key in ("weight", "bias", "tau"):
            p = self._parameters[key]
            if (p is None) != (key == "tau" and not self.apply_act) or (
                    p is not None and p.shape != (self.num_features,)):
                raise ValueError(f"{name}: {key} must be an array of shape "
                                 f"({self.num_features},), got {None if p is None else p.shape}")
        return self._keep(F.filter_response_norm(x, self.weight, self.bias, self.tau, self.eps),
                          x=x)

    def _backward(self, saved, gy):
        """float64: with z = weight * x / sqrt(nu2 + eps) + bias, the TLU's gradient goes to z
        where z > tau and to tau where z < tau, half to each where they are equal (and all to both
        at NaN), as torch.maximum's; then through the mean of squares per (n, c)."""
        x = np.asarray(saved["x"], np.float64)
        C, ax = self.num_features, tuple(range(2, x.ndim))
        sh = (1, C) + (1,) * len(ax)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            r = 1.0 / np.sqrt(np.mean(x * x, axis=ax, keepdims=True) + self.eps)
            xhat = x * r
            w = self.weight.astype(np.float64).reshape(sh)
            g = np.asarray(gy, np.float64)
            grads = {}
            if self.tau is not None:
                z = w * xhat + self.bias.astype(np.float64).reshape(sh)
                t = self.tau.astype(np.float64).reshape(sh)
                share = np.where(z == t, 0.5 * g, g)
                gz, gt = np.where(z < t, 0.0, share), np.where(z > t, 0.0, share)
                grads["tau"] = gt.sum(axis=(0,) + ax)
            else:
                gz = g
            red = (0,) + ax
            grads["weight"], grads["bias"] = (gz * xhat).sum(axis=red), gz.sum(axis=red)
            gh = gz * w  # d loss / d xhat; xhat = x * r with r = (mean(x^2) + eps)^-1/2
            gx = r * (gh - xhat * np.mean(gh * xhat, axis=ax, keepdims=True))
        return gx.astype(saved["dtype"]), grads

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, apply_act={self.apply_act}"


class FilterResponseNorm2d(_FilterResponseNorm):
    r"""Filter Response Normalization + TLU over a 4D (N, C, H, W) input, as timm's
    ``FilterResponseNormTlu2d``.

    .. math::

        y = \max\left(\gamma \frac{x}{\sqrt{\nu^2 + \epsilon}} + \beta,\ \tau\right),
        \qquad \nu^2_{nc} = \frac{1}{HW} \sum_{h,w} x_{nchw}^2

    No mean is subtracted and no batch statistics are kept: the same in training and eval.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    apply_act : bool, default True
        Apply the TLU (learned per-channel lower bound ``tau``); without it there is no ``tau``.
    eps : float, default 1e-5
    rms : bool, default True
        Accepted and kept, as timm does (it has no effect there either).
    device : None or "cpu"
    dtype : numpy dtype, default float32

    Attributes
    ----------
    weight : (C,), ones
    bias : (C,), zeros
    tau : (C,), zeros (None without ``apply_act``)

    Shape
    -----
    Input (N, C, H, W), float32 or float64, any memory layout; output the same shape and dtype.

    Notes
    -----
    timm stores (C,) parameters, as here; checkpoints of ports that store (1, C, 1, 1) load too
    (reshaped to (C,)).

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.FilterResponseNorm2d(3)
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 4, 4), dtype=np.float32)
    >>> y = m(x)
    >>> y.shape, y.dtype, bool((y >= 0).all())
    ((2, 3, 4, 4), dtype('float32'), True)
    >>> list(m.state_dict())
    ['weight', 'bias', 'tau']
    >>> m
    FilterResponseNorm2d(3, eps=1e-05, apply_act=True)
    """

    _ndim = 4


class FilterResponseNorm1d(_FilterResponseNorm):
    r"""Filter Response Normalization + TLU over a 3D (N, C, L) input: :class:`FilterResponseNorm2d`
    with the mean of squares over L.

    Shape
    -----
    Input (N, C, L); output the same shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.FilterResponseNorm1d(1, apply_act=False, eps=0.0)
    >>> m(np.array([[[3.0, -4.0]]])).round(4)
    array([[[ 0.8485, -1.1314]]])
    """

    _ndim = 3


class FilterResponseNorm3d(_FilterResponseNorm):
    r"""Filter Response Normalization + TLU over a 5D (N, C, D, H, W) input:
    :class:`FilterResponseNorm2d` with the mean of squares over D, H and W.

    Shape
    -----
    Input (N, C, D, H, W); output the same shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> fastnorm.FilterResponseNorm3d(2)(np.ones((1, 2, 2, 2, 2))).shape
    (1, 2, 2, 2, 2)
    """

    _ndim = 5
