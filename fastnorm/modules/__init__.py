"""Layer classes mirroring ``torch.nn``: state (parameters, running statistics, mode) only; the
math lives in ``fastnorm.functional``."""
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .module import Module
from .normalization import GroupNorm, LayerNorm, RMSNorm
from .switchnorm import SwitchNorm1d, SwitchNorm2d, SwitchNorm3d

__all__ = ["Module", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d",
           "InstanceNorm2d", "InstanceNorm3d", "LayerNorm", "GroupNorm", "RMSNorm", "SwitchNorm1d",
           "SwitchNorm2d", "SwitchNorm3d"]
