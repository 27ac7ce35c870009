# cython: language_level=3
"""fastnorm's output cache: large outputs allocated through a NumPy memory handler (NEP 49)
that keeps up to a settable number of bytes of freed outputs mapped for the next ones, so that
an allocating call in a steady loop costs what an out= call costs (no page faults on a fresh
mapping); small ones handed out again from a pool of recent outputs that nobody holds any more.
The C side is fastnorm/fn_alloc.h; see README "Threads, fork and memory"."""
import atexit
import operator
import os

cimport numpy as cnp
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.stdint cimport uint64_t
from libc.string cimport memcmp

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    object _new_like "PyArray_NewLikeArray" (cnp.ndarray prototype, cnp.NPY_ORDER order,
                                             void* descr, int subok)
    object PyDataMem_SetHandler(object handler)

    object _new_from_descr "PyArray_NewFromDescr" (void* subtype, cnp.PyArray_Descr* descr,
                                                   int nd, cnp.npy_intp* dims,
                                                   cnp.npy_intp* strides, void* data, int flags,
                                                   void* obj)
    void* _array_type "(&PyArray_Type)"
    ctypedef struct PyArrayObject_fields:
        PyObject* weakreflist

cdef extern from *:
    """
    /* the pool needs reference counts that say who else holds an array: not so without the GIL */
    #ifdef Py_GIL_DISABLED
    #define FN_SMALL_POOL 0
    #else
    #define FN_SMALL_POOL 1
    #endif
    """
    const int FN_SMALL_POOL
    Py_ssize_t Py_REFCNT(PyObject* o)

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


# The pool of small outputs: the last SMALL_SLOTS fresh ones, each with one reference held
# here. An output whose only reference is the pool's is dead to everyone else, so the next
# output of its dtype and shape can be it: in a steady loop of allocating decode-size calls the
# array's creation and destruction (about 0.1 us) cost as much as the arithmetic of a (1, 768)
# LayerNorm, and the memory is still in cache. Dead arrays that can never be handed out again
# (_spent: weak references, a base, changed strides or flags, resized) are let go within
# SMALL_SLOTS calls (_sweep); a changed shape may serve a later call. At most
# SMALL_SLOTS * SMALL_MAX bytes of outputs as made.
cdef PyObject* _small[SMALL_SLOTS]
cdef int _small_next = 0
cdef uint64_t _small_hits = 0, _small_misses = 0, _small_calls = 0
cdef int _REQ = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_OWNDATA | cnp.NPY_ARRAY_ALIGNED | \
    cnp.NPY_ARRAY_WRITEABLE


cdef bint _spent(PyObject* p) noexcept:
    """Whether pooled array p, held by the pool alone, can never be handed out again: weak
    references to it (whose callbacks wait for its death), a base, flags or strides it was not
    made with, or a size past SMALL_MAX (an in-place resize). Arrays of another shape or dtype
    than a call's may serve a later call and stay."""
    cdef cnp.ndarray a = <cnp.ndarray>p
    return ((<PyArrayObject_fields*>p).weakreflist != NULL or cnp.PyArray_BASE(a) != NULL
            or (cnp.PyArray_FLAGS(a) & _REQ) != _REQ or cnp.PyArray_NBYTES(a) > SMALL_MAX
            or not _fresh_strides(a))


cdef bint _fresh_strides(cnp.ndarray a) noexcept:
    """Whether a has the strides a fresh C-contiguous array of its shape has."""
    cdef int k
    cdef cnp.npy_intp st = cnp.PyArray_ITEMSIZE(a)
    for k in range(cnp.PyArray_NDIM(a) - 1, -1, -1):
        if cnp.PyArray_STRIDES(a)[k] != st:
            return False
        st *= cnp.PyArray_DIMS(a)[k] if cnp.PyArray_DIMS(a)[k] > 0 else 1
    return True


cdef bint _reusable(PyObject* p, cnp.ndarray x) noexcept:
    """Whether pooled array p (not NULL) is held by the pool alone and is as a fresh
    np.empty_like(x) of C-contiguous x would be (_spent's tests but the size, which x's dtype
    and shape fix)."""
    if Py_REFCNT(p) != 1:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>p
    cdef int nd = cnp.PyArray_NDIM(x)
    if (cnp.PyArray_DESCR(a) is not cnp.PyArray_DESCR(x) or cnp.PyArray_NDIM(a) != nd
            or (cnp.PyArray_FLAGS(a) & _REQ) != _REQ or cnp.PyArray_BASE(a) != NULL
            or (<PyArrayObject_fields*>p).weakreflist != NULL
            or memcmp(cnp.PyArray_DIMS(a), cnp.PyArray_DIMS(x), nd * sizeof(cnp.npy_intp))):
        return False
    return _fresh_strides(a)


cdef void _sweep() noexcept:
    """Let go of the spent pooled outputs (held by the pool alone, never to be handed out
    again): their weakref callbacks run, their memory goes. Each slot is emptied before its
    release, which may run code that comes back to the pool."""
    cdef int i
    cdef PyObject* p
    for i in range(SMALL_SLOTS):
        p = _small[i]
        if p != NULL and Py_REFCNT(p) == 1 and _spent(p):
            _small[i] = NULL
            Py_XDECREF(p)


cdef inline cnp.ndarray _fresh(cnp.ndarray x):
    """np.empty_like(x) for C-contiguous x, by the C API (no axis order to work out)."""
    Py_INCREF(<object>cnp.PyArray_DESCR(x))  # NewFromDescr steals a reference
    return _new_from_descr(_array_type, cnp.PyArray_DESCR(x), cnp.PyArray_NDIM(x),
                           cnp.PyArray_DIMS(x), NULL, NULL, 0, NULL)


cdef cnp.ndarray _pooled(cnp.ndarray x):
    """np.empty_like(x) for C-contiguous x of at most SMALL_MAX bytes: a pooled output that only
    the pool holds, or a fresh one that joins the pool (the oldest leaves). The GIL serializes
    it; with the cache off (limit 0) it is a plain allocation."""
    global _small_next, _small_hits, _small_misses, _small_calls
    cdef int i
    cdef PyObject* p
    if not (FN_SMALL_POOL and _limit != 0):
        return _fresh(x)
    # the sweep every SMALL_SLOTS calls, whichever slots serve them: at every call (every slot
    # tested, sizes included) it cost decode-size calls 5% (LayerNorm (1, 768), builds
    # alternating, 0.400-0.405 -> 0.420-0.434 us; 0.399-0.406 so)
    _small_calls += 1
    if _small_calls % SMALL_SLOTS == 0:
        _sweep()
    for i in range(SMALL_SLOTS):
        p = _small[i]
        if p != NULL and _reusable(p, x):
            _small_hits += 1
            return <cnp.ndarray>p
    cdef cnp.ndarray a = _fresh(x)
    _small_misses += 1
    # the slot changes hands before the old array is let go: its death may run weakref
    # callbacks that call fastnorm (and so come back here)
    p = _small[_small_next]
    Py_INCREF(a)
    _small[_small_next] = <PyObject*>a
    _small_next = (_small_next + 1) % SMALL_SLOTS
    Py_XDECREF(p)
    return a


cdef cnp.ndarray new_output(cnp.ndarray x):
    """A fresh array of x's shape, dtype and memory order: every output fastnorm allocates.
    Large ones come from the output cache, small C-contiguous ones from the pool."""
    cdef size_t nbytes = <size_t>cnp.PyArray_NBYTES(x)
    if nbytes >= OUTPUT_CACHE_MIN:
        return cached_empty_like(x)
    if cnp.PyArray_IS_C_CONTIGUOUS(x):
        return _pooled(x) if nbytes <= SMALL_MAX else _fresh(x)
    return _new_like(x, cnp.NPY_KEEPORDER, NULL, 0)


cdef size_t _pool_bytes(bint release):
    """Bytes of the pooled outputs that only the pool holds; with release, the pool lets go of
    every output (those nobody else holds die), each slot emptied before its array is let go."""
    global _small_next
    cdef size_t n = 0
    cdef int i
    cdef PyObject* p
    for i in range(SMALL_SLOTS):
        p = _small[i]
        if p == NULL:
            continue
        if Py_REFCNT(p) == 1:
            n += <size_t>cnp.PyArray_NBYTES(<cnp.ndarray>p)
        if release:
            _small[i] = NULL
            Py_XDECREF(p)
    if release:
        _small_next = 0
    return n


def _release_pool_at_exit():
    _pool_bytes(True)


atexit.register(_release_pool_at_exit)


def set_output_cache_limit(nbytes):
    """Set the most memory (bytes) fastnorm keeps mapped for reuse by its large outputs.

    Outputs of at least 1 MiB that fastnorm allocates (calls without ``out=``) come from, and
    return to, a cache of freed blocks, so a steady loop of allocating calls does not fault its
    output in afresh on every call. Blocks beyond the limit are unmapped (the oldest first);
    ``0`` turns the cache off (outputs are then allocated by NumPy's default allocator). The
    default is 256 MiB, at most 1/8 of the physical memory.

    C-contiguous outputs of at most 64 KiB come from a pool of the last 8 of them instead (one
    that only the pool still holds is handed out again): at most 512 KiB of outputs as made
    whatever the limit (one resized in place and dropped is let go within 8 small outputs),
    released by ``release_output_cache()``, turned off with the cache by a limit of ``0``.

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
    if n == 0:
        _pool_bytes(True)
    return old


def get_output_cache_limit():
    """The most memory (bytes) the output cache may hold (see set_output_cache_limit)."""
    return _limit


def release_output_cache():
    """Unmap every block the output cache holds now and let go of the pooled small outputs (the
    limit stays); returns the bytes released. Outputs still alive are not affected: their
    blocks return to the cache when they die."""
    return fn_cache_release() + _pool_bytes(True)


def output_cache_info():
    """The cache's state: dict with limit, held (bytes), blocks, hits and misses (allocations
    served from the cache / mapped fresh), min_output (bytes from which outputs use it) and
    max_blocks; and the pool of small outputs: small_held (bytes of pooled outputs nobody else
    holds), small_hits and small_misses (outputs handed out again / made fresh), small_max
    (bytes up to which outputs use it) and small_slots (outputs it keeps)."""
    cdef size_t limit, held
    cdef int blocks
    cdef uint64_t hits, misses
    cdef bint pool_on = FN_SMALL_POOL and _limit != 0
    fn_cache_stats(&limit, &held, &blocks, &hits, &misses)
    return {"limit": limit, "held": held, "blocks": blocks, "hits": hits, "misses": misses,
            "min_output": OUTPUT_CACHE_MIN, "max_blocks": FN_SLOTS,
            "small_held": _pool_bytes(False), "small_hits": _small_hits,
            "small_misses": _small_misses, "small_max": SMALL_MAX if pool_on else 0,
            "small_slots": SMALL_SLOTS if pool_on else 0}


def _after_fork_in_child():
    fn_cache_after_fork_child()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
