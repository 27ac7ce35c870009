# Type stubs of the compiled adapter fastnorm._kernels (see _kernels.pyx). The public API is
# fastnorm.functional; these are its building blocks.
from typing import Any, Dict, Literal, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

_Shape = Union[int, Sequence[int]]
_Act = Optional[Literal["relu", "silu", "gelu", "gelu_tanh"]]

def cpu_info() -> Dict[str, Any]: ...
def batch_norm(input: ArrayLike, running_mean: Optional[ArrayLike], running_var: Optional[ArrayLike],
               weight: Optional[ArrayLike] = ..., bias: Optional[ArrayLike] = ...,
               training: bool = ..., momentum: float = ..., eps: float = ..., *,
               out: Optional[np.ndarray] = ..., activation: _Act = ...) -> np.ndarray: ...
def instance_norm(input: ArrayLike, running_mean: Optional[ArrayLike] = ...,
                  running_var: Optional[ArrayLike] = ..., weight: Optional[ArrayLike] = ...,
                  bias: Optional[ArrayLike] = ..., use_input_stats: bool = ...,
                  momentum: float = ..., eps: float = ..., *,
                  out: Optional[np.ndarray] = ...) -> np.ndarray: ...
def layer_norm(input: ArrayLike, normalized_shape: _Shape, weight: Optional[ArrayLike] = ...,
               bias: Optional[ArrayLike] = ..., eps: float = ..., *,
               out: Optional[np.ndarray] = ..., activation: _Act = ...) -> np.ndarray: ...
def group_norm(input: ArrayLike, num_groups: int, weight: Optional[ArrayLike] = ...,
               bias: Optional[ArrayLike] = ..., eps: float = ..., *,
               out: Optional[np.ndarray] = ..., activation: _Act = ...) -> np.ndarray: ...
def rms_norm(input: ArrayLike, normalized_shape: _Shape, weight: Optional[ArrayLike] = ...,
             eps: Optional[float] = ..., *, out: Optional[np.ndarray] = ...,
             activation: _Act = ...) -> np.ndarray: ...
def add_layer_norm(input: ArrayLike, residual: ArrayLike, normalized_shape: _Shape,
                   weight: Optional[ArrayLike] = ..., bias: Optional[ArrayLike] = ...,
                   eps: float = ..., *, out: Optional[np.ndarray] = ...,
                   sum_out: Optional[np.ndarray] = ..., activation: _Act = ...
                   ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]: ...
def add_rms_norm(input: ArrayLike, residual: ArrayLike, normalized_shape: _Shape,
                 weight: Optional[ArrayLike] = ..., eps: Optional[float] = ...,
                 *, out: Optional[np.ndarray] = ..., sum_out: Optional[np.ndarray] = ...,
                 activation: _Act = ...) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]: ...
def batch_norm_sample_affine(input: ArrayLike, running_mean: Optional[np.ndarray],
                             running_var: Optional[np.ndarray], weight: ArrayLike, bias: ArrayLike,
                             training: bool = ..., momentum: float = ...,
                             eps: float = ...) -> np.ndarray: ...
def instance_moments(input: ArrayLike) -> Tuple[NDArray[np.float64], NDArray[np.float64]]: ...
def filter_response_norm(input: ArrayLike, weight: Optional[ArrayLike], bias: Optional[ArrayLike],
                         tau: Optional[ArrayLike], eps: float,
                         out: Optional[np.ndarray] = ...) -> np.ndarray: ...
def normalize_nc(input: ArrayLike, mean: ArrayLike, var: ArrayLike, weight: Optional[ArrayLike] = ...,
                 bias: Optional[ArrayLike] = ..., eps: float = ...,
                 out: Optional[np.ndarray] = ...) -> np.ndarray: ...
