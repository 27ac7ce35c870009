# cython: language_level=3
"""Run-time state of fastnorm's kernels: how many threads they may use.

OpenMP is reached through src_c/fn_openmp.h only, so a build without OpenMP compiles this module
too (one thread).
"""
import numpy as np

cdef extern from "fn_openmp.h" nogil:
    int FN_HAVE_OPENMP
    int fn_omp_max_threads()

cdef int _num_threads = 0  # 0: follow omp_get_max_threads() (OMP_NUM_THREADS, threadpoolctl)


cdef int threads() noexcept:
    """Threads for the next kernel: set_num_threads' value, else OpenMP's limit (1 without
    OpenMP)."""
    if _num_threads > 0 and FN_HAVE_OPENMP:
        return _num_threads
    return fn_omp_max_threads()


def set_num_threads(n):
    """Set the number of threads fastnorm's kernels may use (n >= 1)."""
    global _num_threads
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: expected an int, got {type(n).__name__}")
    if n < 1 or n > 1024:  # more would ask libgomp for more threads than it may create
        raise ValueError(f"set_num_threads: expected a number of threads in [1, 1024], got {n}")
    _num_threads = int(n)


def get_num_threads():
    """Number of threads the kernels may use: set_num_threads' value, else OpenMP's limit (1 in
    a build without OpenMP)."""
    return threads()


def _reset_num_threads():
    """Forget set_num_threads(): follow OpenMP's limit again (used by tests)."""
    global _num_threads
    _num_threads = 0


def have_openmp():
    """Whether the kernels were built with OpenMP."""
    return bool(FN_HAVE_OPENMP)
