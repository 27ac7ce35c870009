"""Utilities around normalization layers (``torch.nn.utils`` counterparts)."""
from .spectral_norm import SpectralNorm

__all__ = ["SpectralNorm"]
