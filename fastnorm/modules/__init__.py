"""Layer classes mirroring ``torch.nn``: state (parameters, running statistics, mode) only; the
math lives in ``fastnorm.functional``."""
from .batchgroupnorm import BatchGroupNorm2d
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .conditional_batchnorm import CategoricalConditionalBatchNorm2d, SandwichBatchNorm2d
from .filter_response_norm import FilterResponseNorm1d, FilterResponseNorm2d, FilterResponseNorm3d
from .instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .module import Module
from .normalization import GroupNorm, LayerNorm, RMSNorm
from .powernorm import MaskPowerNorm
from .switchnorm import SwitchNorm1d, SwitchNorm2d, SwitchNorm3d

__all__ = ["Module", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d",
           "InstanceNorm2d", "InstanceNorm3d", "LayerNorm", "GroupNorm", "RMSNorm", "SwitchNorm1d",
           "SwitchNorm2d", "SwitchNorm3d", "FilterResponseNorm1d", "FilterResponseNorm2d",
           "FilterResponseNorm3d", "CategoricalConditionalBatchNorm2d", "SandwichBatchNorm2d",
           "MaskPowerNorm", "BatchGroupNorm2d"]
