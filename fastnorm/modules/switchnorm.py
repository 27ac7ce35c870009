"""SwitchNorm1d/2d/3d: Switchable Normalization (Luo et al. 2018, "Differentiable Learning-to-
Normalize via Switchable Normalization"), with the semantics, parameters and state_dict of the
authors' PyTorch module (``switchablenorms/Switchable-Normalization``,
``devkit/ops/switchable_norm.py``), so that its checkpoints load and give the same outputs.

The math is ``fastnorm.functional.switch_norm`` (``native_switch_norm`` and its backward when
gradients are on, ``requires_grad_()``); the layers hold the state and check the input in their
own terms.
"""
import numpy as np

from .. import functional as F
from .batchnorm import check_momentum
from .module import (Module, check_channels, check_dtype, check_eps, check_size, ndim_of,
                     to_numpy)

__all__ = ["SwitchNorm1d", "SwitchNorm2d", "SwitchNorm3d"]


class _SwitchNorm(Module):
    """State and checks shared by SwitchNorm1d/2d/3d."""

    _ndim = 4  # input dimensions

    def __init__(self, num_features, eps, momentum, using_moving_average, using_bn, last_gamma,
                 dtype):
        super().__init__()
        dt = check_dtype(dtype)
        self.num_features = check_size(num_features, "num_features")
        self.eps = check_eps(eps, type(self).__name__)
        self.momentum = check_momentum(momentum, type(self).__name__, allow_none=False)
        self.using_moving_average = bool(using_moving_average)
        self.using_bn = bool(using_bn)
        self.last_gamma = bool(last_gamma)
        C = self.num_features
        pshape = (1, C) + (1,) * (self._ndim - 2)
        nmix = 3 if self._mixes_three() else 2
        self.register_parameter("weight", np.ones(pshape, dt))
        self.register_parameter("bias", np.zeros(pshape, dt))
        self.register_parameter("mean_weight", np.ones(nmix, dt))
        self.register_parameter("var_weight", np.ones(nmix, dt))
        rshape = (1, C) if self._ndim == 2 else (1, C, 1)
        self.register_buffer("running_mean", np.zeros(rshape, dt) if self.using_bn else None)
        self.register_buffer("running_var", np.zeros(rshape, dt) if self.using_bn else None)
        # the shape every array must keep (checked at each call, before any state changes)
        self._shapes = {"weight": pshape, "bias": pshape, "mean_weight": (nmix,),
                        "var_weight": (nmix,)}
        if self.using_bn:
            self._shapes.update(running_mean=rshape, running_var=rshape)
        self.reset_parameters()

    def _mixes_three(self):
        return self.using_bn

    def reset_running_stats(self):
        """running_mean = running_var = 0 (in place), as the authors' module initializes them."""
        if self.using_bn:
            self.running_mean[...] = 0
            self.running_var[...] = 0

    def reset_parameters(self):
        """As the authors' ``reset_parameters``: zero the running statistics, weight = 0 with
        ``last_gamma`` else 1, bias = 0. ``mean_weight``/``var_weight`` are left as they are
        (the reference does not touch them; they start at ones)."""
        self.reset_running_stats()
        self.weight[...] = 0 if self.last_gamma else 1
        self.bias[...] = 0

    # -- checks -------------------------------------------------------------------------------

    def _check_input(self, input):
        """The input's dimensions and channels and the layer's arrays, in the layer's terms,
        before any state changes (F.switch_norm checks the rest)."""
        name = type(self).__name__
        nd = ndim_of(input)
        if nd != self._ndim:
            raise ValueError(f"{name}: expected {self._ndim}D input (got {nd}D input)")
        check_channels(f"{name}({self.num_features})", input, self.num_features)
        arrays = self._parameters.copy()
        arrays.update(self._buffers)
        for key, want in self._shapes.items():
            a = arrays.get(key)
            if a is None or a.shape != want:
                raise ValueError(f"{name}: {key} must be an array of shape {want}, got "
                                 f"{None if a is None else a.shape}")

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"using_moving_average={self.using_moving_average}, using_bn={self.using_bn}, "
                f"last_gamma={self.last_gamma}")

    # -- forward ------------------------------------------------------------------------------

    def forward(self, input):
        """Normalize ``input`` (N, C, *spatial), or (N, C) for SwitchNorm1d; in training mode
        also update the running statistics (when ``using_bn``)."""
        self._check_input(input)
        if not self._grad_enabled:
            return F.switch_norm(input, self.running_mean, self.running_var, self.weight,
                                 self.bias, self.mean_weight, self.var_weight, self.training,
                                 self.momentum, self.eps, self.using_moving_average,
                                 self.using_bn)
        # gradients on: the backward needs the running statistics as they were before this
        # forward's update
        x = to_numpy(input)
        rm, rv = self.running_mean, self.running_var
        kept = {"rm": None if rm is None else rm.copy(), "rv": None if rv is None else rv.copy()}
        y, mean, rstd = F.native_switch_norm(x, self.weight, self.bias, self.mean_weight,
                                             self.var_weight, rm, rv, self.training,
                                             self.momentum, self.eps, self.using_moving_average)
        return self._keep(y, x=x, mean=mean, rstd=rstd, train=self.training, **kept)

    def _backward(self, saved, gy):
        names = ("weight", "bias", "mean_weight", "var_weight")
        grads = F.native_switch_norm_backward(
            gy, saved["x"], self.weight, self.mean_weight, self.var_weight, saved["rm"],
            saved["rv"], saved["mean"], saved["rstd"], saved["train"], self.eps, [True] * 5)
        return grads[0], dict(zip(names, grads[1:]))


class SwitchNorm2d(_SwitchNorm):
    r"""Switchable Normalization over a 4D (N, C, H, W) input, as the authors' ``SwitchNorm2d``.

    .. math::

        y = \frac{x - \sum_k w_k \mu_k}{\sqrt{\sum_k w'_k \sigma^2_k + \epsilon}} \gamma + \beta,
        \qquad k \in \{\mathrm{IN}, \mathrm{LN}, \mathrm{BN}\}

    with :math:`w = \mathrm{softmax}(\texttt{mean\_weight})` and
    :math:`w' = \mathrm{softmax}(\texttt{var\_weight})`. The statistics, per (n, c) over H, W:

    - IN: :math:`\mu_{in}` and the *unbiased* variance :math:`\sigma^2_{in}`;
    - LN (per n): :math:`\mu_{ln} = \mathrm{mean}_c\,\mu_{in}`,
      :math:`\sigma^2_{ln} = \mathrm{mean}_c(\sigma^2_{in} + \mu^2_{in}) - \mu^2_{ln}`;
    - BN (per c): in training :math:`\mu_{bn} = \mathrm{mean}_n\,\mu_{in}`,
      :math:`\sigma^2_{bn} = \mathrm{mean}_n(\sigma^2_{in} + \mu^2_{in}) - \mu^2_{bn}`; in eval
      ``running_mean`` and ``running_var``.

    In training the running statistics become ``momentum * running + (1 - momentum) * batch``
    (``momentum`` is the share *kept*, unlike torch's BatchNorm), or, with
    ``using_moving_average=False``, accumulate ``running_mean += mu_bn`` and
    ``running_var += mu_bn**2 + sigma2_bn`` (eval then uses these sums as they are, as in the
    reference).

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float, default 1e-5
    momentum : float, default 0.9
        Share of the old running value kept at each training step.
    using_moving_average : bool, default True
    using_bn : bool, default True
        Mix BN statistics too (3 mixing weights and the running buffers); without it IN and LN
        only, and no ``running_mean``/``running_var``.
    last_gamma : bool, default False
        Initialize ``weight`` to 0 instead of 1 (last layer of a residual block).
    dtype : numpy dtype, default float32
        dtype of the parameters and buffers.

    Attributes
    ----------
    weight, bias : (1, C, 1, 1)
    mean_weight, var_weight : (3,) ((2,) without BN), ones
    running_mean, running_var : (1, C, 1), zeros (None without BN)

    Shape
    -----
    Input (N, C, H, W) with H * W > 1, float16, bfloat16, float32 or float64, any memory layout; output the same
    shape and dtype. The input is never modified.

    Notes
    -----
    Where the reference would give NaN (a single spatial element: unbiased variance of one value)
    this raises ``ValueError``; an empty input returns an empty output and changes no state.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.SwitchNorm2d(4)
    >>> x = np.random.default_rng(0).standard_normal((8, 4, 5, 5), dtype=np.float32)
    >>> y = m(x)
    >>> y.shape, y.dtype, m.running_mean.shape
    ((8, 4, 5, 5), dtype('float32'), (1, 4, 1))
    >>> list(m.state_dict())
    ['weight', 'bias', 'mean_weight', 'var_weight', 'running_mean', 'running_var']
    >>> m.eval()
    SwitchNorm2d(4, eps=1e-05, momentum=0.9, using_moving_average=True, using_bn=True, last_gamma=False)
    """

    _ndim = 4

    def __init__(self, num_features, eps=1e-5, momentum=0.9, using_moving_average=True,
                 using_bn=True, last_gamma=False, dtype=None):
        super().__init__(num_features, eps, momentum, using_moving_average, using_bn, last_gamma,
                         dtype)


class SwitchNorm3d(_SwitchNorm):
    r"""Switchable Normalization over a 5D (N, C, D, H, W) input, as the authors'
    ``SwitchNorm3d``.

    The math, parameters and modes are those of :class:`SwitchNorm2d` with statistics over
    D, H, W; the default ``momentum`` is 0.997. ``weight``/``bias`` are (1, C, 1, 1, 1);
    ``running_mean``/``running_var`` are (1, C, 1), as in the reference.

    Shape
    -----
    Input (N, C, D, H, W) with D * H * W > 1; output the same shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.SwitchNorm3d(2, using_bn=False)
    >>> m(np.ones((1, 2, 2, 2, 2))).shape
    (1, 2, 2, 2, 2)
    >>> [(k, v.shape) for k, v in m.state_dict().items()]
    [('weight', (1, 2, 1, 1, 1)), ('bias', (1, 2, 1, 1, 1)), ('mean_weight', (2,)), ('var_weight', (2,))]
    """

    _ndim = 5

    def __init__(self, num_features, eps=1e-5, momentum=0.997, using_moving_average=True,
                 using_bn=True, last_gamma=False, dtype=None):
        super().__init__(num_features, eps, momentum, using_moving_average, using_bn, last_gamma,
                         dtype)


class SwitchNorm1d(_SwitchNorm):
    r"""Switchable Normalization over a 2D (N, C) input, as the authors' ``SwitchNorm1d``:
    LN and BN only.

    .. math::

        y = \frac{x - (w_0 \mu_{ln} + w_1 \mu_{bn})}
                 {\sqrt{w'_0 \sigma^2_{ln} + w'_1 \sigma^2_{bn} + \epsilon}} \gamma + \beta

    with :math:`w = \mathrm{softmax}(\texttt{mean\_weight})`,
    :math:`w' = \mathrm{softmax}(\texttt{var\_weight})`; LN: mean and *unbiased* variance of each
    row over C; BN: in training the mean and *unbiased* variance of each channel over N, in eval
    ``running_mean`` and ``running_var``. The running statistics are updated as in
    :class:`SwitchNorm2d` (``momentum`` is the share kept; with ``using_moving_average=False``
    sums are accumulated).

    Parameters
    ----------
    num_features : int
    eps : float, default 1e-5
    momentum : float, default 0.997
    using_moving_average : bool, default True
    dtype : numpy dtype, default float32

    Attributes
    ----------
    weight, bias : (1, C)
    mean_weight, var_weight : (2,), ones
    running_mean, running_var : (1, C), zeros

    Shape
    -----
    Input (N, C) with C > 1 (and N > 1 in training: unbiased variances); output the same shape
    and dtype.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.SwitchNorm1d(3)
    >>> y = m(np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    >>> y.round(4)
    array([[-0.8165,  0.    ,  0.8165],
           [ 0.8165,  0.    , -0.8165]])
    >>> m
    SwitchNorm1d(3, eps=1e-05, momentum=0.997, using_moving_average=True)
    """

    _ndim = 2

    def __init__(self, num_features, eps=1e-5, momentum=0.997, using_moving_average=True,
                 dtype=None):
        super().__init__(num_features, eps, momentum, using_moving_average, True, False, dtype)

    def _mixes_three(self):
        return False

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"using_moving_average={self.using_moving_average}")
