"""Utilities around the layers, mirroring ``torch.nn.utils``: BatchNorm folding and spectral
normalization."""
from .fusion import (fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_linear_bn_eval,
                     fuse_linear_bn_weights)
from .spectral_norm import SpectralNorm

__all__ = ["fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval",
           "fuse_linear_bn_weights", "SpectralNorm"]
