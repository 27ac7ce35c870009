"""fastnorm: fast CPU normalization layers for NumPy arrays with a torch.nn-compatible API.

Layers (``fastnorm.BatchNorm2d`` ...) mirror ``torch.nn``; functions (``fastnorm.functional``,
also ``fastnorm.F``) mirror ``torch.nn.functional``; ``fastnorm.reference`` holds the plain
float64 NumPy versions used as the oracle of the tests. ``fastnorm.moments`` and
``fastnorm.Moments`` give one-pass, mergeable mean and variance; ``fastnorm.dask`` (optional,
``pip install "fastnorm-cpu[dask]"``, imported only when used) runs the ops on Dask arrays.
"""
try:
    from . import _kernels  # noqa: F401
except ImportError as exc:  # pragma: no cover - a source tree that was never built
    raise ImportError(
        f"fastnorm's compiled extension could not be imported ({exc}). If this is a source "
        f"checkout, build it with `pip install -e .` (or `python setup.py build_ext --inplace`), "
        f"or run from another directory so that the installed fastnorm is imported.") from exc
from . import functional
from . import functional as F
from . import reference
from ._alloc import (get_output_cache_limit, output_cache_info, release_output_cache,
                     set_output_cache_limit)
from ._config import get_config, show_config
from ._moments import Moments, moments
from ._runtime import get_num_threads, set_num_threads
from .modules import *  # noqa: F401,F403
from .modules import __all__ as _modules_all
from . import utils  # fastnorm.utils.fusion / SpectralNorm after `import fastnorm`, as torch.nn.utils

__version__ = get_config()["version"]

__all__ = ["functional", "F", "reference", "moments", "Moments", "show_config", "get_config",
           "set_num_threads", "get_num_threads", "set_output_cache_limit",
           "get_output_cache_limit", "release_output_cache", "output_cache_info",
           "__version__"] + list(_modules_all)


def __getattr__(name):
    """``fastnorm.dask`` on first use (it imports the optional dask package)."""
    if name == "dask":
        import importlib

        return importlib.import_module(".dask", __name__)
    raise AttributeError(f"module 'fastnorm' has no attribute {name!r}")
