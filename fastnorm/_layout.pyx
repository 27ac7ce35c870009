# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Strided layouts for the kernels: the axes of an input (and its output, which has the input's
shape) as (size, x stride, y stride) in elements. Size-1 axes are dropped and neighbours that
tile in both arrays are merged, so C order, Fortran order, transposes, negative strides, slices
and channels-last all reach the kernels as at most a few axes without a copy."""
cimport numpy as cnp

cnp.import_array()


cdef int compact(Ax* a, int k, bint sort) noexcept nogil:
    """Drop size-1 axes, optionally order by |x stride| (largest first; the order of reduced or
    independent axes is free), and merge neighbours that tile in both x and y. Returns the count."""
    cdef int i, j, m = 0
    cdef Ax t
    for i in range(k):
        if a[i].n != 1:
            a[m] = a[i]
            m += 1
    if sort:
        for i in range(1, m):
            t = a[i]
            j = i - 1
            while j >= 0 and iabs(a[j].sx) < iabs(t.sx):
                a[j + 1] = a[j]
                j -= 1
            a[j + 1] = t
    if m == 0:
        return 0
    j = 0
    for i in range(1, m):
        if a[j].sx == a[i].sx * a[i].n and a[j].sy == a[i].sy * a[i].n:
            a[j].n *= a[i].n
            a[j].sx = a[i].sx
            a[j].sy = a[i].sy
        else:
            j += 1
            a[j] = a[i]
    return j + 1


cdef int axes(cnp.ndarray x, cnp.ndarray y, int start, int stop, Ax* out, bint sort):
    """Axes start..stop-1 of x and y into out, compacted; returns their count."""
    cdef int i, k = 0
    for i in range(start, stop):
        out[k] = axis(x, y, i)
        k += 1
    return compact(out, k, sort)


cdef int pad_front(Ax* a, int k, int want) noexcept nogil:
    """Prepend size-1 axes to the k axes of a until there are `want`; returns want."""
    cdef int i
    if k >= want:
        return k
    for i in range(k - 1, -1, -1):
        a[i + want - k] = a[i]
    for i in range(want - k):
        a[i] = unit()
    return want
