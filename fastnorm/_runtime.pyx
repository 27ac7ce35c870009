# cython: language_level=3
"""Run-time state of fastnorm's kernels: how many threads they may use, shared fairly between
Python threads that call at once, and kept usable across fork.

OpenMP is reached through src_c/fn_openmp.h only, so a build without OpenMP compiles this module
too (one thread).
"""
import os

import numpy as np

cdef extern from "fn_openmp.h" nogil:
    int FN_HAVE_OPENMP
    int fn_omp_max_threads()
    int fn_omp_pause()

cdef extern from *:
    """
    /* the count of calls in progress, changed with the GIL held: a plain int (no locked
       instruction on the per-call path), except in free-threaded Python, where it is atomic */
    #if defined(Py_GIL_DISABLED) && (defined(__GNUC__) || defined(__clang__))
    static inline int fn_add_active(int* p, int d) { return __atomic_add_fetch(p, d, __ATOMIC_RELAXED); }
    static inline int fn_load_active(int* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    #else
    static inline int fn_add_active(int* p, int d) { return *p += d; }
    static inline int fn_load_active(int* p) { return *(volatile int*)p; }  /* read without the GIL */
    #endif
    """
    int fn_add_active(int* p, int d) nogil
    int fn_load_active(int* p) nogil

cdef int _num_threads = 0  # 0: follow omp_get_max_threads() (OMP_NUM_THREADS, threadpoolctl)
cdef int _active = 0       # calls in progress (enter() .. leave()), from any Python thread
cdef bint _fork_serial = False  # this process was forked and its OpenMP pool could not be freed
cdef bint _share = True    # concurrent calls share the thread count (off: for measurements)


cdef inline int _limit() noexcept:
    """set_num_threads' value, else OpenMP's limit (1 without OpenMP)."""
    if _fork_serial:
        return 1
    if _num_threads > 0 and FN_HAVE_OPENMP:
        return _num_threads
    return fn_omp_max_threads()


cdef int threads() noexcept:
    """Threads for the next kernel: the limit shared among the calls in progress. libgomp keeps
    one pool per calling thread, so k Python threads each running the full count would put
    k * limit busy threads on the cores; max(1, limit // calls) keeps the total at the limit."""
    cdef int n = _limit()
    cdef int a = fn_load_active(&_active)
    if a > 1 and _share:
        n = n // a
    return n if n > 1 else 1


cdef void enter() noexcept:
    fn_add_active(&_active, 1)


cdef void leave() noexcept:
    fn_add_active(&_active, -1)


def _active_calls():
    """Calls in progress (for tests)."""
    return fn_load_active(&_active)


def _enter():
    """Count a call in progress, as every op does (for tests, with _leave)."""
    enter()


def _leave():
    leave()


def _call_threads():
    """The threads a kernel started now would get (for tests)."""
    return threads()


def _set_thread_sharing(bint on):
    """Whether concurrent calls share the thread count (default True; False gives every call
    the full count: benchmarks/python_threads.py measures both). Returns the previous value."""
    global _share
    old = _share
    _share = on
    return old


def set_num_threads(n):
    """Set the number of threads fastnorm's kernels may use (n >= 1); None: follow OpenMP's
    limit again (OMP_NUM_THREADS, threadpoolctl), as before any call."""
    global _num_threads
    if n is None:
        _num_threads = 0
        return
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: expected an int or None, got {type(n).__name__}")
    if n < 1 or n > 1024:  # more would ask libgomp for more threads than it may create
        raise ValueError(f"set_num_threads: expected a number of threads in [1, 1024], got {n}")
    _num_threads = int(n)


def get_num_threads():
    """Number of threads the kernels may use: set_num_threads' value, else OpenMP's limit (1 in
    a build without OpenMP). Calls made at once from several Python threads share it."""
    return _limit()


def have_openmp():
    """Whether the kernels were built with OpenMP."""
    return bool(FN_HAVE_OPENMP)


# --------------------------------------------------------------------------------------------
# fork: a forked child inherits libgomp's thread pool as data but none of its threads, and its
# first parallel region would wait for them forever. Just before fork the forking thread's pool
# is freed (omp_pause_resource_all); the child then builds its own at full thread count and the
# parent rebuilds its pool at its next parallel call, once per fork (benchmarks/fork_pause.py
# measures both). os.register_at_fork, not pthread_atfork: it runs for os.fork (multiprocessing,
# gunicorn) but not for subprocess's fork+exec, whose child never runs a kernel, so spawning
# processes costs the pool nothing.

_pause_on_fork = True  # tests turn it off to check the one-thread fallback
cdef int _pause_rc = 0


def _before_fork():
    global _pause_rc
    _pause_rc = fn_omp_pause() if _pause_on_fork else -1


def _after_fork_in_child():
    global _active, _fork_serial
    _active = 0  # calls in progress in the parent's other threads do not exist here
    if _pause_rc != 0 and FN_HAVE_OPENMP:
        _fork_serial = True  # the pool could not be freed: a parallel region would hang


def fork_state():
    """(pause_rc, serial): how the last fork was prepared (0: pool freed, -1: not freed) and
    whether this process runs its kernels on one thread because of it."""
    return _pause_rc, bool(_fork_serial)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
