# Argument checks and conversions shared by the ops (_kernels) and the layers (fastnorm.modules).
cimport numpy as cnp
from libc.stdint cimport int64_t

cdef extern from "numpy/ndarraytypes.h":
    # type numbers Cython's numpy declarations lack
    enum:
        NPY_HALF_ "NPY_HALF"
        NPY_USERDEF_ "NPY_USERDEF"

cpdef object to_numpy(object a)
cpdef bint is_float_dtype(object dtype)
cpdef bint check_flag(object value, str name, str fname) except -1
cpdef double check_eps(object eps, str fname) except -1.0
cpdef double check_momentum(object momentum, str fname, bint none_ok=*) except? -1.0
cpdef tuple check_normalized_shape(object normalized_shape, str fn, bint empty_ok=*)
cdef int64_t prod(tuple shape, int start)
cdef bint has_shape(cnp.ndarray a, tuple shape, int start=*)
cdef int verify_batch_size(tuple shape) except -1
cdef cnp.ndarray as_input(object a, str fname)
cdef cnp.ndarray as_nc_input(object a, str fname)
cdef cnp.ndarray param(object p, str name, str fname, int typenum, tuple shape,
                       bint any_shape=*)
cdef cnp.ndarray running(object r, str name, str fname, Py_ssize_t C, bint write)
cdef int check_running_pair(object rm, object rv, str fname) except -1
cdef tuple prepare_out(object out, cnp.ndarray x, str fname, str name=*)
cdef bint same_view(cnp.ndarray a, cnp.ndarray b)
cdef object unalias(object p, object out)
cdef int check_updated(object rm, object rv, object out, str fname) except -1
cdef bint may_overlap(cnp.ndarray a, cnp.ndarray b) noexcept
cdef cnp.ndarray empty_like(cnp.ndarray x)
cdef int bfloat16_typenum()
cpdef bint is_real_dtype(object dtype)
cpdef int check_activation(object activation, str fname) except -1
cpdef double rms_eps(object dtype)
