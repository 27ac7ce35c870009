"""Build and run-time configuration: fastnorm.show_config()."""
import platform
import sys

import numpy as np

from . import _alloc, _kernels, _runtime

try:
    from . import _build_config as _bc
except ImportError:  # pragma: no cover - only when the package was not built by setup.py
    _bc = None


def get_config():
    """Return a dict describing how fastnorm was built and how it will run."""
    return {
        "version": getattr(_bc, "version", "unknown"),
        "compiler": getattr(_bc, "compiler", "unknown"),
        "cflags": list(getattr(_bc, "cflags", [])),
        "openmp": _runtime.have_openmp(),
        "openmp_probe": getattr(_bc, "openmp_probe", "unknown"),
        "num_threads": _runtime.get_num_threads(),
        "output_cache": _alloc.output_cache_info(),
        "cpu": _kernels.cpu_info(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
    }


def show_config():
    """Print version, compiler, flags, OpenMP on/off, the thread count, the output cache and what
    the kernels found on this CPU (SIMD level, cache, streaming stores)."""
    cfg = get_config()
    print("fastnorm configuration")
    for key in ("version", "compiler", "cflags", "openmp", "openmp_probe", "num_threads",
                "python", "numpy", "machine"):
        val = cfg[key]
        if key == "cflags":
            val = " ".join(val)
        print(f"  {key:13s}: {val}")
    oc = cfg["output_cache"]
    mib = 2.0 ** 20
    print(f"  {'output_cache':13s}: limit {oc['limit'] / mib:.1f} MiB, holds {oc['held'] / mib:.1f} MiB "
          f"in {oc['blocks']} blocks (outputs >= {oc['min_output'] / mib:g} MiB; "
          f"{oc['hits']} reused, {oc['misses']} fresh); small outputs <= {oc['small_max'] // 1024} KiB "
          f"from a pool of {oc['small_slots']} ({oc['small_held'] // 1024} KiB held, "
          f"{oc['small_hits']} reused, {oc['small_misses']} fresh)")
    cpu = cfg["cpu"]
    stream = (f"streaming stores for outputs >= {cpu['stream_bytes'] / mib:g} MiB "
              f"({cpu['stream_bytes_wb'] / mib:g} MiB: float32 with elementwise weight and bias; "
              f"{cpu['stream_bytes_cols'] / mib:g} MiB: channels-last; outputs fastnorm "
              f"allocates in calls that compute statistics over rows: from two thirds of "
              f"these)"
              if cpu["stream_bytes"] else "no streaming stores")
    pairs = " (float32 statistics as 256-bit pairs)" if cpu["pairs"] else ""
    print(f"  {'cpu':13s}: {cpu['simd']} loops{pairs}, last-level cache {cpu['l3_bytes'] / mib:g} MiB, "
          f"{stream}")
    if not cfg["openmp"]:
        print("  WARNING: built without OpenMP; kernels run single-threaded.")
