# cython: language_level=3
"""fastnorm's output cache: large outputs allocated through a NumPy memory handler (NEP 49)
that keeps up to a settable number of bytes of freed outputs mapped for the next ones, so that
an allocating call in a steady loop costs what an out= call costs (no page faults on a fresh
mapping). The C side is fastnorm/fn_alloc.h; see README "Threads, fork and memory"."""
import operator
import os

cimport numpy as cnp
from libc.stdint cimport uint64_t

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    object _new_like "PyArray_NewLikeArray" (cnp.ndarray prototype, cnp.NPY_ORDER order,
                                             void* descr, int subok)
    object PyDataMem_SetHandler(object handler)

cdef extern from "fn_alloc.h":
    object fn_handler_capsule()

cdef extern from "fn_alloc.h" nogil:
    size_t fn_cache_set_limit(size_t limit)
    size_t fn_cache_release()
    void fn_cache_stats(size_t* limit, size_t* held, int* blocks, uint64_t* hits,
                        uint64_t* misses)
    size_t fn_default_limit()
    void fn_cache_after_fork_child()
    int FN_SLOTS

cdef object _handler = fn_handler_capsule()
cdef size_t _limit = fn_default_limit()  # mirrors the C limit (read without the mutex)
fn_cache_set_limit(_limit)


cdef cnp.ndarray cached_empty_like(cnp.ndarray x):
    """np.empty_like(x) (same shape, dtype, memory order) allocated by the output cache's
    handler; NumPy's own allocation when the cache is off (limit 0)."""
    if _limit == 0:
        return _new_like(x, cnp.NPY_KEEPORDER, NULL, 0)
    old = PyDataMem_SetHandler(_handler)
    try:
        return _new_like(x, cnp.NPY_KEEPORDER, NULL, 0)
    finally:
        PyDataMem_SetHandler(old)


def set_output_cache_limit(nbytes):
    """Set the most memory (bytes) fastnorm keeps mapped for reuse by its large outputs.

    Outputs of at least 1 MiB that fastnorm allocates (calls without ``out=``) come from, and
    return to, a cache of freed blocks, so a steady loop of allocating calls does not fault its
    output in afresh on every call. Blocks beyond the limit are unmapped (the oldest first);
    ``0`` turns the cache off (outputs are then allocated by NumPy's default allocator). The
    default is 256 MiB, at most 1/8 of the physical memory.

    Parameters
    ----------
    nbytes : int
        Limit in bytes, >= 0.

    Returns
    -------
    int
        The previous limit.
    """
    global _limit
    try:
        if isinstance(nbytes, bool):
            raise TypeError
        n = operator.index(nbytes)
    except TypeError:
        raise TypeError(f"set_output_cache_limit: expected an int number of bytes, got "
                        f"{type(nbytes).__name__}") from None
    if n < 0 or n > 2**62:
        raise ValueError(f"set_output_cache_limit: expected a number of bytes in [0, 2**62], "
                         f"got {n}")
    old = _limit
    _limit = n
    fn_cache_set_limit(n)
    return old


def get_output_cache_limit():
    """The most memory (bytes) the output cache may hold (see set_output_cache_limit)."""
    return _limit


def release_output_cache():
    """Unmap every block the output cache holds now (the limit stays); returns the bytes
    released. Outputs still alive are not affected: their blocks return to the cache when they
    die."""
    return fn_cache_release()


def output_cache_info():
    """The cache's state: dict with limit, held (bytes), blocks, hits and misses (allocations
    served from the cache / mapped fresh), min_output (bytes from which outputs use it) and
    max_blocks."""
    cdef size_t limit, held
    cdef int blocks
    cdef uint64_t hits, misses
    fn_cache_stats(&limit, &held, &blocks, &hits, &misses)
    return {"limit": limit, "held": held, "blocks": blocks, "hits": hits, "misses": misses,
            "min_output": OUTPUT_CACHE_MIN, "max_blocks": FN_SLOTS}


def _after_fork_in_child():
    fn_cache_after_fork_child()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
