"""SpectralNorm: spectral normalization of a weight (Miyato et al. 2018, "Spectral Normalization for
Generative Adversarial Networks", arXiv:1802.05957) with the numerics, state (``weight_orig``,
``weight_u``, ``weight_v``) and train/eval behaviour of ``torch.nn.utils.spectral_norm``."""
import numpy as np

from ..modules.module import Module, check_eps, check_size, to_numpy

__all__ = ["SpectralNorm"]


def _normalize(a, eps):
    """a / max(||a||, eps): torch.nn.functional.normalize of a vector."""
    return a / max(float(np.sqrt(np.dot(a, a))), eps)


class SpectralNorm(Module):
    r"""A weight divided by its largest singular value, estimated by power iteration, as
    ``torch.nn.utils.spectral_norm`` computes a layer's weight before each forward.

    .. math:: W_{SN} = \frac{W}{\sigma}, \qquad \sigma = u^\top W_{mat} v

    :math:`W_{mat}` is the weight with axis ``dim`` moved first, flattened to
    ``(W.shape[dim], -1)``. Calling the object in training mode first runs
    ``n_power_iterations`` steps :math:`v \leftarrow \mathrm{normalize}(W_{mat}^\top u)`,
    :math:`u \leftarrow \mathrm{normalize}(W_{mat} v)` (``normalize(a) = a / max(||a||, eps)``),
    storing u and v; in eval mode the stored u and v are used as they are.

    Parameters
    ----------
    weight : array_like, float32 or float64, at least 1D
        Kept (a copy) as ``weight_orig``.
    n_power_iterations : int, default 1
        Positive, as torch requires.
    eps : float, default 1e-12
    dim : int, default 0
        The output axis: 0 for linear and convolution weights, 1 for transposed convolutions.
    rng : seed or numpy.random.Generator, optional (keyword-only)
        For the initial u and v: normalized standard normal vectors, as torch draws them.

    Attributes
    ----------
    weight_orig : the weight's shape and dtype (the one parameter)
    weight_u : (W.shape[dim],)
    weight_v : (W.size // W.shape[dim],)

    Notes
    -----
    ``load_state_dict`` takes the ``weight_orig``/``weight_u``/``weight_v`` entries of a torch
    layer after ``spectral_norm`` (its other entries, such as ``bias``, are unexpected keys: pass
    ``strict=False`` or only these three). The pre-1.0 torch checkpoints without ``weight_v``
    (torch solves for v on load) are not converted. The result is computed in double precision
    and returned in the weight's dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm.utils import SpectralNorm
    >>> w = np.diag([3.0, 1.0]).astype(np.float32)
    >>> sn = SpectralNorm(w, n_power_iterations=20, rng=0)
    >>> sn().round(4)
    array([[1.    , 0.    ],
           [0.    , 0.3333]], dtype=float32)
    >>> list(sn.state_dict())
    ['weight_orig', 'weight_u', 'weight_v']
    >>> sn
    SpectralNorm((2, 2), n_power_iterations=20, eps=1e-12, dim=0)
    """

    def __init__(self, weight, n_power_iterations=1, eps=1e-12, dim=0, *, rng=None):
        super().__init__()
        w = np.array(to_numpy(weight), copy=True)
        if w.dtype.kind != "f" or w.dtype.itemsize not in (4, 8):
            raise TypeError(f"SpectralNorm: expected a float32 or float64 weight, got dtype "
                            f"{w.dtype}")
        w = w.astype(w.dtype.newbyteorder("="), copy=False)
        if w.ndim == 0:
            raise ValueError("SpectralNorm: expected a weight of at least 1 dimension, got a "
                             "scalar")
        n = check_size(n_power_iterations, "n_power_iterations")
        if n <= 0:
            raise ValueError(f"Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) \
                or not -w.ndim <= dim < w.ndim:
            raise ValueError(f"SpectralNorm: dim must be an axis of the {w.ndim}D weight, got "
                             f"{dim!r}")
        self.n_power_iterations = n
        self.eps = check_eps(eps, "SpectralNorm")
        self.dim = int(dim) % w.ndim
        h = w.shape[self.dim]
        rng = np.random.default_rng(rng)
        self.register_parameter("weight_orig", w)
        self.register_buffer("weight_u", _normalize(rng.standard_normal(h), self.eps)
                             .astype(w.dtype))
        self.register_buffer("weight_v", _normalize(rng.standard_normal(w.size // max(h, 1)),
                                                    self.eps).astype(w.dtype))

    def _matrix(self):
        w = self.weight_orig
        return np.moveaxis(w, self.dim, 0).reshape(w.shape[self.dim], -1)

    def forward(self):
        """The normalized weight (in training mode after the power iteration, which updates
        ``weight_u`` and ``weight_v`` in place)."""
        w, u, v = self.weight_orig, self.weight_u, self.weight_v
        if w is None or w.ndim <= self.dim:
            raise ValueError(f"SpectralNorm: weight_orig must be an array with axis {self.dim}, "
                             f"got {None if w is None else w.shape}")
        h = w.shape[self.dim]
        want = ((h,), (w.size // max(h, 1),))
        if u is None or v is None or (u.shape, v.shape) != want:
            raise ValueError(f"SpectralNorm: weight_u and weight_v must have shapes {want[0]} and "
                             f"{want[1]} for weight_orig of shape {w.shape}")
        mat = self._matrix().astype(np.float64)
        u64, v64 = u.astype(np.float64), v.astype(np.float64)
        if self.training:
            for _ in range(self.n_power_iterations):
                v64 = _normalize(mat.T @ u64, self.eps)
                u64 = _normalize(mat @ v64, self.eps)
        sigma = np.dot(u64, mat @ v64)
        out = (w / sigma).astype(w.dtype)
        if self.training:  # after the result exists
            np.copyto(v, v64, casting="unsafe")
            np.copyto(u, u64, casting="unsafe")
        return self._keep(out, sigma=sigma, u=u64, v=v64)

    def _backward(self, saved, gy):
        """The gradient of ``weight_orig`` (no input: ``backward`` returns None). As torch's,
        u and v are constants (the power iteration runs without gradients), so with W_SN =
        W / sigma and sigma = u^T W_mat v: dW = G / sigma - sum(G * W) / sigma^2 * u v^T."""
        sigma, u, v = saved["sigma"], saved["u"], saved["v"]
        g = np.asarray(gy, np.float64)
        w = self.weight_orig.astype(np.float64)
        uv = np.moveaxis(np.outer(u, v).reshape(np.moveaxis(w, self.dim, 0).shape), 0, self.dim)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            gw = g / sigma - (np.sum(g * w) / sigma ** 2) * uv
        return None, {"weight_orig": gw}

    def extra_repr(self):
        return (f"{self.weight_orig.shape}, n_power_iterations={self.n_power_iterations}, "
                f"eps={self.eps}, dim={self.dim}")
