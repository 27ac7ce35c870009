# Strided layouts: an array's axes as (size, x stride, y stride) in elements, merged where they
# tile, so that the kernels see at most a few axes (see _layout.pyx).
cimport numpy as cnp
from libc.stdint cimport int64_t

cdef struct Ax:
    int64_t n   # size
    int64_t sx  # stride in x, elements
    int64_t sy  # stride in y, elements

cdef int compact(Ax* a, int k, bint sort) noexcept nogil
cdef int axes(cnp.ndarray x, cnp.ndarray y, int start, int stop, Ax* out, bint sort)
cdef int pad_front(Ax* a, int k, int want) noexcept nogil


cdef inline int64_t iabs(int64_t v) noexcept nogil:
    return -v if v < 0 else v


cdef inline Ax axis(cnp.ndarray x, cnp.ndarray y, int i):
    """Axis i of x (and y, which has x's shape and dtype)."""
    cdef Ax a
    cdef int64_t isz = cnp.PyArray_ITEMSIZE(x)
    a.n = cnp.PyArray_DIMS(x)[i]
    a.sx = cnp.PyArray_STRIDES(x)[i] // isz
    a.sy = cnp.PyArray_STRIDES(y)[i] // isz
    return a


cdef inline Ax unit() noexcept nogil:
    """A size-1 axis."""
    cdef Ax a
    a.n = 1
    a.sx = 0
    a.sy = 0
    return a


cdef inline Ax scaled(Ax a, int64_t n, int64_t step) noexcept nogil:
    """n steps of `step` elements of axis a (e.g. groups of `step` channels)."""
    cdef Ax r
    r.n = n
    r.sx = a.sx * step
    r.sy = a.sy * step
    return r
