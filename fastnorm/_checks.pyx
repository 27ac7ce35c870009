# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Argument checks and conversions, shared by the ops (fastnorm._kernels) and the layers
(fastnorm.modules): every check runs before anything is written, and messages say what was
expected and what arrived."""
import numpy as np

cimport numpy as cnp
from libc.float cimport DBL_EPSILON, FLT_EPSILON
from libc.math cimport isfinite
from libc.stdint cimport int64_t

from fastnorm._alloc cimport new_output

cnp.import_array()


cdef cnp.ndarray empty_like(cnp.ndarray x):
    """A fresh array of x's shape, dtype and memory order: every output fastnorm allocates
    (fastnorm._alloc.new_output: the output cache and the pool of small outputs)."""
    return new_output(x)


cdef void _extent(cnp.ndarray a, char** lo, char** hi) noexcept:
    """Byte range [lo, hi) that a's elements occupy."""
    cdef int i
    cdef cnp.npy_intp* shape = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp* strides = cnp.PyArray_STRIDES(a)
    cdef char* l = <char*>cnp.PyArray_DATA(a)
    cdef char* h = l + cnp.PyArray_ITEMSIZE(a)
    for i in range(cnp.PyArray_NDIM(a)):
        if shape[i] == 0:
            lo[0] = l
            hi[0] = l
            return
        if strides[i] < 0:
            l += strides[i] * (shape[i] - 1)
        else:
            h += strides[i] * (shape[i] - 1)
    lo[0] = l
    hi[0] = h


cdef bint may_overlap(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Bounds check, like np.may_share_memory."""
    cdef char *alo
    cdef char *ahi
    cdef char *blo
    cdef char *bhi
    _extent(a, &alo, &ahi)
    _extent(b, &blo, &bhi)
    return alo < bhi and blo < ahi

# What inputs may be: the dtypes with kernels (fastnorm._kernels' _table maps them to the C
# tables). bfloat16 is ml_dtypes' (a NumPy user dtype), recognized by its type number.
ACCEPTED_DTYPES = "float16, bfloat16 (ml_dtypes), float32 or float64"

cdef int _bf16_num = -2  # NumPy type number of ml_dtypes.bfloat16; -2: not looked up, -1: absent


cdef int bfloat16_typenum():
    """ml_dtypes.bfloat16's NumPy type number, -1 without ml_dtypes. Only asked about arrays of
    a user dtype, which exist only once their package is imported: no import for the others."""
    global _bf16_num
    if _bf16_num == -2:
        try:
            import ml_dtypes
            _bf16_num = np.dtype(ml_dtypes.bfloat16).num
        except ImportError:
            _bf16_num = -1
    return _bf16_num


cdef inline bint _is_bf16(int t):
    return t >= NPY_USERDEF_ and t == bfloat16_typenum()


cpdef bint is_real_dtype(object dtype):
    """A NumPy real dtype (float, int, unsigned, bool) or bfloat16."""
    dt = np.dtype(dtype)
    return dt.kind in "fiub" or _is_bf16(dt.num)


cpdef bint is_float_dtype(object dtype):
    """An input dtype with kernels: float16, bfloat16, float32 or float64 (any byte order)."""
    dt = np.dtype(dtype)
    return (dt.kind == "f" and dt.itemsize in (2, 4, 8)) or _is_bf16(dt.num)


cdef inline bint _is_float(cnp.ndarray a):
    cdef int t = cnp.PyArray_TYPE(a)
    return (t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE or t == NPY_HALF_ or _is_bf16(t))


cpdef object to_numpy(object a):
    """np.asarray, also for torch tensors that require grad or live on another device (detach
    and move first; duck-typed, torch is never imported)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        a = a.detach().cpu()
        if str(a.dtype) == "torch.bfloat16":  # torch has no NumPy bfloat16: reinterpret bits
            import sys
            import ml_dtypes
            return a.view(sys.modules["torch"].int16).numpy().view(ml_dtypes.bfloat16)
        a = a.numpy()
    return np.asarray(a)


cdef int64_t prod(tuple shape, int start):
    cdef int64_t p = 1
    for d in shape[start:]:
        p *= <int64_t>d
    return p


cdef int verify_batch_size(tuple shape) except -1:
    """As torch: training statistics need more than one value per channel."""
    if shape[0] * prod(shape, 2) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{shape}")
    return 0


cdef cnp.ndarray as_input(object a, str fname):
    """The input as a native-endian, aligned ndarray of an accepted dtype (copied only if
    needed)."""
    cdef cnp.ndarray arr
    if isinstance(a, cnp.ndarray):
        arr = <cnp.ndarray>a
    else:
        arr = to_numpy(a)
    if not _is_float(arr):
        raise TypeError(f"{fname}: expected input of dtype {ACCEPTED_DTYPES}, got dtype {arr.dtype}")
    if not cnp.PyArray_ISNOTSWAPPED(arr) or not cnp.PyArray_ISALIGNED(arr):
        # a fresh array (copy=True): ascontiguousarray would keep an unaligned C-order one
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="K", copy=True)
    return arr


cdef inline bint _is_real(object v):
    """A Python or NumPy real number (not a bool, a string or an array)."""
    if type(v) is float or type(v) is int:  # the common case, without the isinstance chain
        return True
    return (isinstance(v, (float, int, np.floating, np.integer))
            and not isinstance(v, (bool, np.bool_)))


cdef bint has_shape(cnp.ndarray a, tuple shape, int start=0):
    """a.shape[start:] == shape, without building the shape tuple."""
    cdef int i, n = len(shape)
    if cnp.PyArray_NDIM(a) - start != n:
        return False
    for i in range(n):
        if cnp.PyArray_DIMS(a)[start + i] != <cnp.npy_intp>shape[i]:
            return False
    return True


cdef cnp.ndarray as_nc_input(object a, str fname):
    """_as_input for the ops on (N, C, *) input."""
    cdef cnp.ndarray x = as_input(a, fname)
    if x.ndim < 2:
        raise ValueError(f"{fname}: expected input of at least 2 dimensions (N, C, *), got "
                         f"{x.ndim}D input of shape {(<object>x).shape}")
    return x


cpdef bint check_flag(object value, str name, str fname) except -1:
    """A bool (NumPy's too) as a bint; anything else raises TypeError, as torch's functions do
    (a string or None is not quietly taken for its truth value)."""
    if value is True or value is False:
        return value is True
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{fname}: {name} must be a bool, got {type(value).__name__}")


cpdef double check_eps(object eps, str fname) except -1.0:
    """eps as a double: a real number, finite and >= 0 (TypeError / ValueError naming fname)."""
    if not _is_real(eps):
        raise TypeError(f"{fname}: eps must be a real number, got {type(eps).__name__}")
    cdef double e = float(eps)
    if not isfinite(e) or e < 0:
        raise ValueError(f"{fname}: eps must be finite and >= 0, got {eps!r}")
    return e


cpdef double check_momentum(object momentum, str fname, bint none_ok=False) except? -1.0:
    """momentum as a double: a finite real number (TypeError / ValueError naming fname; none_ok:
    the caller takes None, so the message says so)."""
    if not _is_real(momentum):
        raise TypeError(f"{fname}: momentum must be a real number{' or None' if none_ok else ''}, "
                        f"got {type(momentum).__name__}")
    cdef double m = float(momentum)
    if not isfinite(m):
        raise ValueError(f"{fname}: momentum must be finite, got {momentum!r}")
    return m


cdef cnp.ndarray param(object p, str name, str fname, int typenum, tuple shape,
                        bint any_shape=False):
    """weight/bias as a C-contiguous array of the input's dtype with exactly `shape` (or, with
    any_shape, of any shape with as many elements, seen as `shape`: torch's batch_norm)."""
    cdef cnp.ndarray arr
    if (isinstance(p, cnp.ndarray) and cnp.PyArray_TYPE(<cnp.ndarray>p) == typenum
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>p)
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>p) and cnp.PyArray_ISALIGNED(<cnp.ndarray>p)):
        arr = <cnp.ndarray>p
    else:
        arr = to_numpy(p)
        if not is_real_dtype(arr.dtype):
            raise TypeError(f"{fname}: {name} must be a real-valued array, got dtype {arr.dtype}")
        # a fresh array (copy=True): ascontiguousarray would keep an unaligned C-order one
        arr = np.array(arr, dtype=cnp.PyArray_DescrFromType(typenum), order="C", copy=True)
    if not has_shape(arr, shape):
        if any_shape and arr.size == shape[0]:
            return arr.reshape(shape)
        raise ValueError(f"{fname}: expected {name} of shape {shape}, got shape {(<object>arr).shape}")
    return arr


cdef cnp.ndarray running(object r, str name, str fname, Py_ssize_t C, bint write):
    """A running statistic: a float array of C elements; when it will be updated in place, a
    writable numpy.ndarray (anything np.asarray takes when it is only read)."""
    if write and not isinstance(r, cnp.ndarray):
        raise TypeError(f"{fname}: {name} must be a numpy.ndarray (it is updated in place), "
                        f"got {type(r).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>r if isinstance(r, cnp.ndarray) else to_numpy(r)
    if arr.dtype.kind != "f" and not _is_bf16(arr.dtype.num):
        raise TypeError(f"{fname}: {name} must have a floating dtype, got {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != C:
        raise ValueError(f"{fname}: expected {name} of shape ({C},) (one value per channel), "
                         f"got shape {(<object>arr).shape}")
    if write and not arr.flags.writeable:
        raise ValueError(f"{fname}: {name} is read-only but must be updated in place")
    return arr


cdef bint same_view(cnp.ndarray a, cnp.ndarray b):
    """a and b view the same elements in the same places (same start and strides)."""
    return (cnp.PyArray_DATA(a) == cnp.PyArray_DATA(b)
            and (<object>a).strides == (<object>b).strides)


cdef tuple prepare_out(object out, cnp.ndarray x, str fname, str name="out"):
    """(y, final) for a given `out` (not None: without one, callers write into a fresh
    empty_like(x)): y is where the kernels write, final what the call returns (y unless `out`
    overlaps the input in a way other than being it, when y is a temporary copied back).
    name: the argument's name in messages."""
    cdef cnp.ndarray o
    if not isinstance(out, cnp.ndarray):
        raise TypeError(f"{fname}: {name} must be a numpy.ndarray, got {type(out).__name__}")
    o = <cnp.ndarray>out
    # C-level checks (the Python attributes cost a third of a decode-size call)
    if cnp.PyArray_NDIM(o) != cnp.PyArray_NDIM(x) or not cnp.PyArray_CompareLists(
            cnp.PyArray_DIMS(o), cnp.PyArray_DIMS(x), cnp.PyArray_NDIM(x)):
        raise ValueError(f"{fname}: {name} must have the input's shape {(<object>x).shape}, got {(<object>o).shape}")
    if <void*>cnp.PyArray_DESCR(o) != <void*>cnp.PyArray_DESCR(x) and o.dtype != x.dtype:
        raise TypeError(f"{fname}: {name} must have dtype {x.dtype} (the result dtype), got {o.dtype}")
    if not cnp.PyArray_ISWRITEABLE(o):
        raise ValueError(f"{fname}: {name} is read-only")
    if not cnp.PyArray_ISALIGNED(o):
        return empty_like(x), o
    if not may_overlap(o, x) or same_view(o, x):
        return o, o
    return empty_like(x), o


cdef object unalias(object p, object out):
    """p, or a copy of it when it shares memory with out: parameters are read while out is
    written, and must be read as they were before the call (NumPy's rule for overlapping
    operands). Running statistics that are only read need no copy: they are read before
    anything is written (those that are updated must not overlap out: check_updated)."""
    if out is None or p is None or not may_overlap(<cnp.ndarray>out, <cnp.ndarray>p):
        return p
    return (<cnp.ndarray>p).copy()


cdef int check_updated(object rm, object rv, object out, str fname) except -1:
    """Running statistics updated in place are written after out: they must not share its
    memory (their update would overwrite the result, or read it as their old value)."""
    if out is not None and rm is not None and (may_overlap(<cnp.ndarray>out, <cnp.ndarray>rm)
                                               or may_overlap(<cnp.ndarray>out, <cnp.ndarray>rv)):
        raise ValueError(f"{fname}: running_mean and running_var are updated in place and must "
                         f"not share memory with out")
    return 0


_SIZE_MAX = 2 ** 63 - 1  # the largest axis size check_normalized_shape passes on


cpdef tuple check_normalized_shape(object normalized_shape, str fn, bint empty_ok=False):
    """normalized_shape (an int or a sequence of ints >= 0; at least one unless empty_ok) as a
    tuple."""
    cdef Py_ssize_t i
    if type(normalized_shape) is int and 0 <= normalized_shape <= _SIZE_MAX:  # one axis
        return (normalized_shape,)
    if type(normalized_shape) is tuple:  # fast path: a tuple of non-negative Python ints
        for i in range(len(<tuple>normalized_shape)):
            d = (<tuple>normalized_shape)[i]
            if type(d) is not int or d < 0 or d > _SIZE_MAX:
                break
        else:
            if len(<tuple>normalized_shape) or empty_ok:
                return <tuple>normalized_shape
    if isinstance(normalized_shape, (int, np.integer)) and not isinstance(normalized_shape, bool):
        ns = (int(normalized_shape),)
    elif isinstance(normalized_shape, (tuple, list)):
        dims = []
        for d in normalized_shape:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
                raise TypeError(f"{fn}: normalized_shape must be an int or a sequence of ints, "
                                f"got {normalized_shape!r} (holding a {type(d).__name__})")
            dims.append(int(d))
        ns = tuple(dims)
    else:
        raise TypeError(f"{fn}: normalized_shape must be an int or a sequence of ints, got "
                        f"{type(normalized_shape).__name__}")
    if len(ns) == 0 and not empty_ok:
        raise ValueError(f"{fn}: expected normalized_shape to be at least 1-dimensional, got {ns}")
    for d in ns:
        if d < 0:
            raise ValueError(f"{fn}: normalized_shape must not have negative sizes, got {ns}")
        if d > _SIZE_MAX:  # no array has such an axis; a C integer could not hold it either
            raise ValueError(f"{fn}: normalized_shape sizes must be below 2**63, got {ns}")
    return ns


cdef int check_running_pair(object rm, object rv, str fname) except -1:
    if (rm is None) != (rv is None):
        raise ValueError(f"{fname}: running_mean and running_var must be given together")
    return 0


_ACTIVATIONS = {None: 0, "relu": 1, "silu": 2, "gelu": 3, "gelu_tanh": 4}  # fn_activation


cpdef int check_activation(object activation, str fname) except -1:
    """The fn_activation code of activation: None, "relu", "silu", "gelu" or "gelu_tanh"."""
    if activation is None:
        return 0
    if not isinstance(activation, str):
        raise TypeError(f"{fname}: activation must be None or a str, got "
                        f"{type(activation).__name__}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{fname}: activation must be None, 'relu', 'silu', 'gelu' or "
                         f"'gelu_tanh', got {activation!r}")
    return _ACTIVATIONS[activation]


cpdef double rms_eps(object dtype):
    """``eps=None`` of the RMS norms for input of this dtype: the machine epsilon of the type
    torch computes in, float64's for float64 and float32's for float32, float16 and bfloat16
    (torch 2.13's CPU rms_norm, whatever its documentation says of the input's own epsilon)."""
    # NumPy 2's dtypes are subclasses (Float32DType): isinstance, not type() is
    cdef cnp.dtype dt = dtype if isinstance(dtype, cnp.dtype) else np.dtype(dtype)
    cdef int t = dt.type_num
    if t == cnp.NPY_FLOAT or t == NPY_HALF_ or _is_bf16(t):
        return FLT_EPSILON
    if t == cnp.NPY_DOUBLE:
        return DBL_EPSILON
    return float(np.finfo(dt).eps)
