"""MaskPowerNorm: Power Normalization (Shen et al. 2020, "PowerNorm: Rethinking Batch Normalization
in Transformers", arXiv:2003.07845), the forward of the authors' ``MaskPowerNorm``
(``sIncerass/powernorm``, ``fairseq/modules/norms/mask_powernorm.py``) with its arguments,
defaults, state_dict keys and buffer shapes, so that its checkpoints load.

Cost: one group-scaling pass (``rms_norm`` over each group of channels), one statistics pass over
the unpadded positions (training only) and one normalize pass in place.
"""
import numpy as np

from .. import _kernels
from .. import functional as F
from ._input import check_float_input
from .module import Module, check_dtype, check_eps, check_size, shape_of, to_numpy

__all__ = ["MaskPowerNorm"]

_GROUP_EPS = 1e-5  # the authors' GroupScaling1D is built with its default eps, not the layer's


class MaskPowerNorm(Module):
    r"""Power normalization of (T, B, C) or (B, C) input with an optional padding mask, as the
    authors' ``MaskPowerNorm`` (forward pass).

    First the group scaling: the C features of each position are split into ``group_num`` groups
    and each group is divided by its root mean square, :math:`z = x / \sqrt{\mathrm{mean}(x^2) +
    10^{-5}}`. Then

    .. math:: y = \gamma \frac{z}{\sqrt{\psi^2 + \epsilon}} + \beta

    per channel, where in training ``iters`` is incremented and
    :math:`\psi^2 = \mathrm{mean}(z^2)` over the unpadded positions while
    ``iters <= warmup_iters``, ``running_phi`` after that; ``running_phi`` is updated with the
    batch's :math:`\psi^2` (``phi = phi * (i - 1) / i + psi2 / i`` while ``i < warmup_iters``, then
    always ``phi = alpha_fwd * phi + (1 - alpha_fwd) * psi2``). In eval
    :math:`\psi^2` = ``running_phi``. Padded positions are normalized too; they only do not count
    in the statistics.

    Parameters
    ----------
    num_features : int
        C.
    eps : float, default 1e-5
    alpha_fwd : float, default 0.9
        Share of ``running_phi`` kept at each training step after warm-up.
    alpha_bkw : float, default 0.9
        The backward pass's average factor, kept for the repr and checkpoints (no backward here).
    affine : bool, default True
        Kept for the repr: as in the authors' module, ``weight`` and ``bias`` exist and apply
        either way.
    warmup_iters : int, default 10000
    group_num : int, default 1
        Must divide C.
    dtype : numpy dtype, default float32 (keyword-only)

    Attributes
    ----------
    weight : (C,), ones
    bias : (C,), zeros
    running_phi : (1, C, 1, 1), ones
    ema_gz : (1, C, 1, 1), zeros. Updated by the authors' backward pass only: kept so that their
        checkpoints load and round-trip, never changed here.
    iters : (1,) int64, zeros

    Shape
    -----
    Input (T, B, C) or (B, C), float32 or float64, any layout; ``pad_mask`` (B, T) bool, True at
    padding ((B, 1) for 2D input); output the input's shape and dtype.

    Notes
    -----
    Where the authors' module would divide by zero positions (a training batch whose positions
    are all padding, or empty) this raises ``ValueError`` and changes nothing.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m = fastnorm.MaskPowerNorm(8, group_num=2)
    >>> x = np.random.default_rng(0).standard_normal((5, 3, 8), dtype=np.float32)
    >>> pad = np.zeros((3, 5), bool); pad[0, 3:] = True  # sample 0 has 3 tokens
    >>> m(x, pad_mask=pad).shape, int(m.iters[0])
    ((5, 3, 8), 1)
    >>> list(m.state_dict())
    ['weight', 'bias', 'running_phi', 'ema_gz', 'iters']
    >>> m
    MaskPowerNorm(8, eps=1e-05, alpha_fwd=0.9, alpha_bkw=0.9, affine=True, warmup=10000, group_num=2)
    """

    def __init__(self, num_features, eps=1e-5, alpha_fwd=0.9, alpha_bkw=0.9, affine=True,
                 warmup_iters=10000, group_num=1, *, dtype=None):
        super().__init__()
        dt = check_dtype(dtype)
        C = self.num_features = check_size(num_features, "num_features")
        self.eps = check_eps(eps, "MaskPowerNorm")
        for name, a in (("alpha_fwd", alpha_fwd), ("alpha_bkw", alpha_bkw)):
            if isinstance(a, bool) or not isinstance(a, (int, float, np.number)) \
                    or not np.isfinite(a):
                raise ValueError(f"MaskPowerNorm: {name} must be a finite number, got {a!r}")
        self.afwd, self.abkw = float(alpha_fwd), float(alpha_bkw)
        self.affine = bool(affine)
        self.warmup_iters = check_size(warmup_iters, "warmup_iters")
        self.group_num = check_size(group_num, "group_num")
        if self.group_num == 0 or C % self.group_num:
            raise ValueError(f"MaskPowerNorm: group_num must divide num_features ({C}), got "
                             f"{self.group_num}")
        self.register_parameter("weight", np.ones(C, dt))
        self.register_parameter("bias", np.zeros(C, dt))
        self.register_buffer("running_phi", np.ones((1, C, 1, 1), dt))
        self.register_buffer("ema_gz", np.zeros((1, C, 1, 1), dt))
        self.register_buffer("iters", np.zeros(1, np.int64))

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, alpha_fwd={self.afwd}, "
                f"alpha_bkw={self.abkw}, affine={self.affine}, warmup={self.warmup_iters}, "
                f"group_num={self.group_num}")

    def _check(self, input, pad_mask):
        x = check_float_input(input, "MaskPowerNorm", (2, 3), self.num_features, -1)
        C = self.num_features
        for key, want in (("weight", (C,)), ("bias", (C,)), ("running_phi", (1, C, 1, 1)),
                          ("iters", (1,))):
            a = getattr(self, key)
            if a is None or a.shape != want:
                raise ValueError(f"MaskPowerNorm: {key} must be an array of shape {want}, got "
                                 f"{None if a is None else a.shape}")
        T, B = (1,) + x.shape[:1] if x.ndim == 2 else x.shape[:2]
        keep = None
        if pad_mask is not None:
            mask = to_numpy(pad_mask)
            if mask.dtype != np.bool_ or mask.shape != (B, T):
                raise ValueError(f"MaskPowerNorm: expected a bool pad_mask of shape (B, T) = "
                                 f"{(B, T)}, got {mask.dtype} of shape {shape_of(mask)}")
            keep = ~mask.T  # (T, B): True at the positions that count
        if self.training and (T * B == 0 or (keep is not None and not keep.any())):
            raise ValueError(f"MaskPowerNorm: no unpadded position to take statistics from in "
                             f"training (input of shape {x.shape})")
        return x, keep

    def requires_grad_(self, requires_grad=True):
        """``requires_grad=True`` raises: this layer has no backward pass (its forward follows
        the authors' code; their backward, which also updates ``ema_gz``, is not here)."""
        if requires_grad is True or (isinstance(requires_grad, np.bool_) and requires_grad):
            raise NotImplementedError("MaskPowerNorm has no backward pass in fastnorm: it "
                                      "cannot keep gradients (forward only)")
        return super().requires_grad_(requires_grad)

    def forward(self, input, pad_mask=None, is_encoder=False):
        """Normalize ``input`` (T, B, C) or (B, C); ``pad_mask`` (B, T) is True at padding.
        ``is_encoder`` is accepted and ignored, as in the authors' module."""
        x, keep = self._check(input, pad_mask)
        C, G = self.num_features, self.group_num
        shape = x.shape
        if x.size == 0:
            return np.empty(shape, x.dtype.newbyteorder("="))
        # group scaling, in the input's dtype as the authors': (T*B, C) rows, C order
        z = F.rms_norm(x.reshape(-1, G, C // G), C // G, eps=_GROUP_EPS).reshape(-1, C)
        if self.training:
            it = int(self.iters[0]) + 1
            rows = z if keep is None else z[keep.reshape(-1)]
            # mean of squares per channel over the kept rows: rows seen as one (1, C, L) sample
            psi2 = F._mean_squares(rows.T[np.newaxis])[0]
            phi = self.running_phi.reshape(C).astype(np.float64)
            var = psi2 if it <= self.warmup_iters else phi
        else:
            var = self.running_phi.reshape(C).astype(np.float64)
        zt = z.T[np.newaxis]  # (1, C, T*B) view: normalized in place
        _kernels.normalize_nc(zt, np.zeros((1, C)), var[np.newaxis], self.weight, self.bias,
                              self.eps, zt)
        if self.training:  # after the output exists: a failed call changes nothing
            if it < self.warmup_iters:
                phi = phi * (it - 1) / it + psi2 / it
            phi = self.afwd * phi + (1 - self.afwd) * psi2
            np.copyto(self.running_phi, phi.reshape(1, C, 1, 1), casting="unsafe")
            self.iters[...] = it
        return z.reshape(shape)
