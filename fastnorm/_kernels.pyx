# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython adapters between fastnorm.functional and the C kernels of src_c/.

Each op validates its arguments (all of them, before any state changes), describes the input as a
strided 3- or 4-axis view the kernels understand (``_plan_*``), and runs the kernels without the
GIL. Layouts that cannot be described without a copy (rare: e.g. two unmergeable spatial axes that
also interleave with the channel axis) are copied to C order first; C order, Fortran order,
transposes, negative strides, slices and channels-last (NHWC seen as NCHW) run in place.
"""
import numpy as np

cimport numpy as cnp
from libc.math cimport isfinite
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cnp.import_array()
fn_init()  # before any kernel: the CPU's SIMD level and cache size, read by parallel regions

cdef extern from "numpy/arrayobject.h":
    # the C API directly, with a NULL descr (= the prototype's dtype): np.empty_like without
    # the Python-level call overhead
    object _new_like "PyArray_NewLikeArray" (cnp.ndarray prototype, cnp.NPY_ORDER order,
                                             void* descr, int subok)


cdef inline object _empty_like(cnp.ndarray x):
    return _new_like(x, cnp.NPY_KEEPORDER, NULL, 0)


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


cdef bint _may_overlap(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Bounds check, like np.may_share_memory."""
    cdef char *alo
    cdef char *ahi
    cdef char *blo
    cdef char *bhi
    _extent(a, &alo, &ahi)
    _extent(b, &blo, &bhi)
    return alo < bhi and blo < ahi

# --------------------------------------------------------------------------------------------
# threads

cdef int _num_threads = 0  # 0: follow omp_get_max_threads() (OMP_NUM_THREADS, threadpoolctl)


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
    return _threads()


def _reset_num_threads():
    """Forget set_num_threads(): follow OpenMP's limit again (used by tests)."""
    global _num_threads
    _num_threads = 0


def have_openmp():
    return bool(fn_have_openmp())


cdef inline int _threads():
    if _num_threads > 0 and fn_have_openmp():
        return _num_threads
    return fn_max_threads()  # 1 without OpenMP


# --------------------------------------------------------------------------------------------
# argument checks

cdef inline bint _is_float(cnp.ndarray a):
    cdef int t = cnp.PyArray_TYPE(a)
    return t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE


cpdef object to_numpy(object a):
    """np.asarray, also for torch tensors that require grad or live on another device (detach
    and move first; duck-typed, torch is never imported)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


cdef int64_t _prod(tuple shape, int start):
    cdef int64_t p = 1
    for d in shape[start:]:
        p *= <int64_t>d
    return p


cdef int _verify_batch_size(tuple shape) except -1:
    """As torch: training statistics need more than one value per channel."""
    if shape[0] * _prod(shape, 2) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{shape}")
    return 0


cdef cnp.ndarray _as_input(object a, str fname):
    """The input as a native-endian, aligned float32/float64 ndarray (copied only if needed)."""
    cdef cnp.ndarray arr
    if isinstance(a, cnp.ndarray):
        arr = <cnp.ndarray>a
    else:
        arr = to_numpy(a)
    if not _is_float(arr):
        raise TypeError(f"{fname}: expected input of dtype float32 or float64, got dtype {arr.dtype}")
    if not cnp.PyArray_ISNOTSWAPPED(arr) or not cnp.PyArray_ISALIGNED(arr):
        # a fresh array (copy=True): ascontiguousarray would keep an unaligned C-order one
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="K", copy=True)
    return arr


cdef inline bint _is_real(object v):
    """A Python or NumPy real number (not a bool, a string or an array)."""
    return (isinstance(v, (float, int, np.floating, np.integer))
            and not isinstance(v, (bool, np.bool_)))


cdef cnp.ndarray _as_nc_input(object a, str fname):
    """_as_input for the ops on (N, C, *) input."""
    cdef cnp.ndarray x = _as_input(a, fname)
    if x.ndim < 2:
        raise ValueError(f"{fname}: expected input of at least 2 dimensions (N, C, *), got "
                         f"{x.ndim}D input of shape {(<object>x).shape}")
    return x


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


cdef cnp.ndarray _param(object p, str name, str fname, int typenum, tuple shape,
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
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{fname}: {name} must be a real-valued array, got dtype {arr.dtype}")
        # a fresh array (copy=True): ascontiguousarray would keep an unaligned C-order one
        arr = np.array(arr, dtype=cnp.PyArray_DescrFromType(typenum), order="C", copy=True)
    if (<object>arr).shape != shape:
        if any_shape and arr.size == shape[0]:
            return arr.reshape(shape)
        raise ValueError(f"{fname}: expected {name} of shape {shape}, got shape {(<object>arr).shape}")
    return arr


cdef cnp.ndarray _running(object r, str name, str fname, Py_ssize_t C, bint write):
    """A running statistic: a float array of C elements; when it will be updated in place, a
    writable numpy.ndarray (anything np.asarray takes when it is only read)."""
    if write and not isinstance(r, cnp.ndarray):
        raise TypeError(f"{fname}: {name} must be a numpy.ndarray (it is updated in place), "
                        f"got {type(r).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>r if isinstance(r, cnp.ndarray) else to_numpy(r)
    if arr.dtype.kind != "f":
        raise TypeError(f"{fname}: {name} must have a floating dtype, got {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != C:
        raise ValueError(f"{fname}: expected {name} of shape ({C},) (one value per channel), "
                         f"got shape {(<object>arr).shape}")
    if write and not arr.flags.writeable:
        raise ValueError(f"{fname}: {name} is read-only but must be updated in place")
    return arr


cdef tuple _prepare_out(object out, cnp.ndarray x, str fname):
    """(y, final): y is where the kernels write, final what the call returns (y unless `out`
    overlaps the input in a way other than being it, when y is a temporary copied back)."""
    cdef cnp.ndarray o
    if out is None:
        y = _empty_like(x)
        return y, y
    if not isinstance(out, cnp.ndarray):
        raise TypeError(f"{fname}: out must be a numpy.ndarray, got {type(out).__name__}")
    o = <cnp.ndarray>out
    if (<object>o).shape != (<object>x).shape:
        raise ValueError(f"{fname}: out must have the input's shape {(<object>x).shape}, got {(<object>o).shape}")
    if o.dtype != x.dtype:
        raise TypeError(f"{fname}: out must have dtype {x.dtype} (the result dtype), got {o.dtype}")
    if not o.flags.writeable:
        raise ValueError(f"{fname}: out is read-only")
    if not cnp.PyArray_ISALIGNED(o):
        return _empty_like(x), o
    if not _may_overlap(o, x) or (cnp.PyArray_DATA(o) == cnp.PyArray_DATA(x) and
                                  (<object>o).strides == (<object>x).strides):
        return o, o
    return _empty_like(x), o


cdef object _unalias(object p, object out):
    """p, or a copy of it when it shares memory with out: parameters are read while out is
    written, and must be read as they were before the call (NumPy's rule for overlapping
    operands). Running statistics that are only read need no copy: they are read before
    anything is written (those that are updated must not overlap out: _check_updated)."""
    if out is None or p is None or not _may_overlap(<cnp.ndarray>out, <cnp.ndarray>p):
        return p
    return (<cnp.ndarray>p).copy()


cdef int _check_updated(object rm, object rv, object out, str fname) except -1:
    """Running statistics updated in place are written after out: they must not share its
    memory (their update would overwrite the result, or read it as their old value)."""
    if out is not None and rm is not None and (_may_overlap(<cnp.ndarray>out, <cnp.ndarray>rm)
                                               or _may_overlap(<cnp.ndarray>out, <cnp.ndarray>rv)):
        raise ValueError(f"{fname}: running_mean and running_var are updated in place and must "
                         f"not share memory with out")
    return 0


cdef tuple _c_order_copy(cnp.ndarray x, object out, object final):
    """(x, y, final) for a second try when a layout cannot be described with strides: the
    input copied to C order, a fresh output, and what the call returns (out, when given, is
    filled from that output by _finish)."""
    xc = np.ascontiguousarray(x)
    yc = np.empty_like(xc)
    return xc, yc, (yc if out is None else final)


cdef object _finish(cnp.ndarray y, object final):
    if final is not y:
        np.copyto(final, y)
    return final


# --------------------------------------------------------------------------------------------
# layouts: axes as (size, x stride, y stride) in elements

cdef struct Ax:
    int64_t n
    int64_t sx
    int64_t sy


cdef inline int64_t _iabs(int64_t v) noexcept nogil:
    return -v if v < 0 else v


cdef int _compact(Ax* a, int k, bint sort) noexcept nogil:
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
            while j >= 0 and _iabs(a[j].sx) < _iabs(t.sx):
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


cdef inline Ax _axis(cnp.ndarray x, cnp.ndarray y, int i, int64_t isz):
    cdef Ax a
    a.n = x.shape[i]
    a.sx = x.strides[i] // isz
    a.sy = y.strides[i] // isz
    return a


cdef inline Ax _unit():
    cdef Ax a
    a.n = 1
    a.sx = 0
    a.sy = 0
    return a


cdef int _axes(cnp.ndarray x, cnp.ndarray y, int start, int stop, Ax* out, bint sort):
    cdef int i, k = 0
    cdef int64_t isz = x.itemsize
    for i in range(start, stop):
        out[k] = _axis(x, y, i, isz)
        k += 1
    return _compact(out, k, sort)


# --------------------------------------------------------------------------------------------
# scratch memory and typed dispatch

cdef class _Scratch:
    """One malloc'd block for per-call statistics and coefficients, freed with the object."""
    cdef char* p

    def __cinit__(self, size_t nbytes):
        self.p = <char*>malloc(nbytes if nbytes > 0 else 1)
        if self.p == NULL:
            raise MemoryError(f"fastnorm: could not allocate {nbytes} bytes of scratch memory")

    def __dealloc__(self):
        free(self.p)


cdef inline int _check_rc(int rc) except -1:
    if rc == FN_ENOMEM:
        raise MemoryError("fastnorm: a kernel could not allocate its scratch memory")
    if rc != FN_OK:
        raise RuntimeError(f"fastnorm: internal error, kernel status {rc}")
    return 0


cdef int _row_stats(bint dbl, const char* x, int64_t P1, int64_t P2, int64_t Q, int64_t L,
                    const int64_t* xs, double* mean, double* m2) except -1:
    cdef int rc, nt = _threads()
    with nogil:
        if dbl:
            rc = fn_row_stats_f64(<const double*>x, P1, P2, Q, L, xs, mean, m2, nt)
        else:
            rc = fn_row_stats_f32(<const float*>x, P1, P2, Q, L, xs, mean, m2, nt)
    return _check_rc(rc)


cdef int _col_stats(bint dbl, const char* x, int64_t P1, int64_t R, int64_t C, const int64_t* xs,
                    double* mean, double* m2) except -1:
    cdef int rc, nt = _threads()
    with nogil:
        if dbl:
            rc = fn_col_stats_f64(<const double*>x, P1, R, C, xs, mean, m2, nt)
        else:
            rc = fn_col_stats_f32(<const float*>x, P1, R, C, xs, mean, m2, nt)
    return _check_rc(rc)


cdef struct Coefs:  # y = (x - mh) * a + c, see fn_coefs
    char* mh
    char* a
    char* c


cdef void _coefs(bint dbl, int64_t I, int64_t J, int64_t SI, int64_t JD, const double* mean,
                 const double* var, double eps, const char* w, const char* bias, Coefs c) noexcept nogil:
    if dbl:
        fn_coefs_f64(I, J, SI, JD, mean, var, eps, <const double*>w, <const double*>bias,
                     <double*>c.mh, <double*>c.a, <double*>c.c)
    else:
        fn_coefs_f32(I, J, SI, JD, mean, var, eps, <const float*>w, <const float*>bias,
                     <float*>c.mh, <float*>c.a, <float*>c.c)


cdef int _norm_cols(bint dbl, const char* x, char* y, int64_t P1, int64_t R, int64_t C,
                    const int64_t* xs, const int64_t* ys, int64_t cp, Coefs c) except -1:
    cdef int rc, nt = _threads()
    with nogil:
        if dbl:
            rc = fn_norm_cols_f64(<const double*>x, <double*>y, P1, R, C, xs, ys, cp,
                                  <const double*>c.mh, <const double*>c.a, <const double*>c.c, nt)
        else:
            rc = fn_norm_cols_f32(<const float*>x, <float*>y, P1, R, C, xs, ys, cp,
                                  <const float*>c.mh, <const float*>c.a, <const float*>c.c, nt)
    return _check_rc(rc)


cdef int _group_rows(cnp.ndarray x, cnp.ndarray y, int64_t P1, int64_t P2, int64_t Q, int64_t L,
                    const int64_t* xs, const int64_t* ys, double eps, int flags, object w,
                    object b, int64_t as0, int64_t as1, object lw, object lb, double* gmean,
                    double* gvar) except -1:
    """Statistics + normalization per group (p1, p2) over (q, l): see fn_group_rows."""
    cdef int rc, nt = _threads()
    cdef int64_t as_[2]
    as_[0] = as0
    as_[1] = as1
    cdef const char* xp = <const char*>cnp.PyArray_DATA(x)
    cdef char* yp = <char*>cnp.PyArray_DATA(y)
    cdef const char* wp = _ptr(w)
    cdef const char* bp = _ptr(b)
    cdef const char* lwp = _ptr(lw)
    cdef const char* lbp = _ptr(lb)
    with nogil:
        if cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE:
            rc = fn_group_rows_f64(<const double*>xp, <double*>yp, P1, P2, Q, L, xs, ys, eps, flags,
                                   <const double*>wp, <const double*>bp, as_, <const double*>lwp,
                                   <const double*>lbp, gmean, gvar, nt)
        else:
            rc = fn_group_rows_f32(<const float*>xp, <float*>yp, P1, P2, Q, L, xs, ys, eps, flags,
                                   <const float*>wp, <const float*>bp, as_, <const float*>lwp,
                                   <const float*>lbp, gmean, gvar, nt)
    return _check_rc(rc)


cdef inline Coefs _coef_slots(char* base, int64_t n, int64_t isz) noexcept nogil:
    cdef Coefs c
    c.mh = base
    c.a = base + n * isz
    c.c = base + 2 * n * isz
    return c


cdef inline const char* _ptr(object a):
    if a is None:
        return NULL
    return <const char*>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _read_f64(cnp.ndarray a, double* dst) except -1:
    """Copy a 1-D float array into dst as float64."""
    cdef Py_ssize_t i, n = a.shape[0]
    cdef const float* f
    if cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISNOTSWAPPED(a) and cnp.PyArray_ISALIGNED(a):
        if cnp.PyArray_TYPE(a) == cnp.NPY_DOUBLE:
            memcpy(dst, cnp.PyArray_DATA(a), n * sizeof(double))
            return 0
        if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT:
            f = <const float*>cnp.PyArray_DATA(a)
            for i in range(n):
                dst[i] = f[i]
            return 0
    cdef cnp.ndarray t = np.ascontiguousarray(a, dtype=np.float64)
    memcpy(dst, cnp.PyArray_DATA(t), n * sizeof(double))
    return 0


cdef int _update_running(cnp.ndarray r, const double* stat, double momentum, double* tmp) except -1:
    """r = (1 - momentum) * r + momentum * stat, computed in double, stored in r's dtype."""
    cdef Py_ssize_t i, n = r.shape[0]
    _read_f64(r, tmp)
    for i in range(n):
        tmp[i] = (1.0 - momentum) * tmp[i] + momentum * stat[i]
    cdef double[::1] view = <double[:n]>tmp
    r[...] = np.asarray(view)
    return 0


# --------------------------------------------------------------------------------------------
# batch norm (also instance norm without input statistics)

cdef bint _bn(cnp.ndarray x, cnp.ndarray y, bint training, object rm, object rv, object w,
              object b, double eps, double momentum):
    """BatchNorm on x (N, C, *): statistics per channel over every other axis. Returns False,
    having written nothing, when the layout needs a copy first."""
    cdef int nd = x.ndim, k, d
    cdef int64_t i
    cdef int64_t C = x.shape[1], isz = x.itemsize, count = x.size // C
    cdef Ax ax[64]
    ax[0] = _axis(x, y, 0, isz)
    for d in range(2, nd):
        ax[d - 1] = _axis(x, y, d, isz)
    k = _compact(ax, nd - 1, True)
    if k > 2:
        return False
    cdef Ax ch = _axis(x, y, 1, isz)
    # channels innermost (NHWC, (N, C)): vectorize across channels; else across the reduced axes
    cdef bint cols = k == 0 or _iabs(ch.sx) < _iabs(ax[k - 1].sx)
    while k < 2:  # pad with unit axes in front
        ax[1] = ax[0] if k == 1 else _unit()
        ax[0] = _unit()
        k += 1
    cdef bint dbl = cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE
    cdef int64_t P1 = ax[0].n if cols else 1
    cdef _Scratch s = _Scratch(8 * (2 * P1 * C + 3 * C) + 3 * C * isz)
    cdef double* pmean = <double*>s.p
    cdef double* pm2 = pmean + P1 * C
    cdef double* mean = pm2 + P1 * C
    cdef double* var = mean + C
    cdef double* tmp = var + C
    cdef Coefs c = _coef_slots(<char*>(tmp + C), C, isz)
    cdef int64_t xs[4]
    cdef int64_t ys[4]
    if not training:
        _read_f64(rm, mean)
        _read_f64(rv, var)
    if cols:
        xs[0] = ax[0].sx; xs[1] = ax[1].sx; xs[2] = ch.sx
        ys[0] = ax[0].sy; ys[1] = ax[1].sy; ys[2] = ch.sy
        if training:
            _col_stats(dbl, <const char*>cnp.PyArray_DATA(x), P1, ax[1].n, C, xs, pmean, pm2)
            fn_merge_moments(1, P1, C, <double>(count // P1), pmean, pm2, mean, var)
            for i in range(C):
                var[i] /= count
        _coefs(dbl, 1, C, 0, 1, mean, var, eps, _ptr(w), _ptr(b), c)
        _norm_cols(dbl, <const char*>cnp.PyArray_DATA(x), <char*>cnp.PyArray_DATA(y), P1,
                   ax[1].n, C, xs, ys, 0, c)
    else:
        xs[0] = 0; xs[1] = ch.sx; xs[2] = ax[0].sx; xs[3] = ax[1].sx
        ys[0] = 0; ys[1] = ch.sy; ys[2] = ax[0].sy; ys[3] = ax[1].sy
        _group_rows(x, y, 1, C, ax[0].n, ax[1].n, xs, ys, eps, 0 if training else FN_STATS_GIVEN,
                    w, b, 1, 0, None, None, mean, var)
    if training and rm is not None:
        _update_running(rm, mean, momentum, tmp)
        for i in range(C):  # unbiased variance for the running estimate
            pm2[i] = var[i] * count / (count - 1)  # count > 1: checked by the caller
        _update_running(rv, pm2, momentum, tmp)
    return True


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, out=None):
    cdef str fn = "batch_norm"
    cdef cnp.ndarray x = _as_nc_input(input, fn)
    cdef Py_ssize_t C = x.shape[1]
    cdef int t = cnp.PyArray_TYPE(x)
    cdef bint tr = bool(training)
    cdef double e = check_eps(eps, fn), m = 0.0
    w = None if weight is None else _param(weight, "weight", fn, t, (C,), True)
    b = None if bias is None else _param(bias, "bias", fn, t, (C,), True)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fn}: running_mean and running_var must be given together")
    rm = None if running_mean is None else _running(running_mean, "running_mean", fn, C, tr)
    rv = None if running_var is None else _running(running_var, "running_var", fn, C, tr)
    if not tr and rm is None:
        raise ValueError(f"{fn}: running_mean and running_var are required when training=False")
    if tr and rm is not None:
        m = check_momentum(momentum, fn)
    if tr:
        _verify_batch_size((<object>x).shape)
        if e == 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    y, final = _prepare_out(out, x, fn)
    if tr:
        _check_updated(rm, rv, out, fn)
    w, b = _unalias(w, out), _unalias(b, out)
    if x.size == 0:
        return final
    if not _bn(x, y, tr, rm, rv, w, b, e, m):
        x, y, final = _c_order_copy(x, out, final)
        _bn(x, y, tr, rm, rv, w, b, e, m)
    return _finish(y, final)


# --------------------------------------------------------------------------------------------
# instance norm

cdef struct NCPlan:
    # per-(n, c) statistics over the spatial axes; rows: x[n, c, q, l]; cols: x[n, l, c]
    bint cols
    int64_t N, C, Q, L
    int64_t xs[4]
    int64_t ys[4]


cdef bint _plan_nc(cnp.ndarray x, cnp.ndarray y, NCPlan* p):
    """Describe x (N, C, *S) for per-(n, c) statistics; False when the layout needs a copy."""
    cdef int k
    cdef int64_t isz = x.itemsize
    cdef Ax ax[64]
    k = _axes(x, y, 2, x.ndim, ax, True)
    if k > 2:
        return False
    cdef Ax bn = _axis(x, y, 0, isz)
    cdef Ax ch = _axis(x, y, 1, isz)
    p.N = bn.n
    p.C = ch.n
    p.cols = k == 1 and _iabs(ch.sx) < _iabs(ax[0].sx)
    while k < 2:
        ax[1] = ax[0] if k == 1 else _unit()
        ax[0] = _unit()
        k += 1
    p.Q = ax[0].n
    p.L = ax[1].n
    p.xs[0] = bn.sx
    p.ys[0] = bn.sy
    if p.cols:
        p.xs[1] = ax[1].sx; p.xs[2] = ch.sx
        p.ys[1] = ax[1].sy; p.ys[2] = ch.sy
    else:
        p.xs[1] = ch.sx; p.xs[2] = ax[0].sx; p.xs[3] = ax[1].sx
        p.ys[1] = ch.sy; p.ys[2] = ax[0].sy; p.ys[3] = ax[1].sy
    return True


cdef int _nc_stats(cnp.ndarray x, NCPlan* p, double* mean, double* m2) except -1:
    cdef bint dbl = cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE
    cdef const char* xp = <const char*>cnp.PyArray_DATA(x)
    if p.cols:
        return _col_stats(dbl, xp, p.N, p.L, p.C, p.xs, mean, m2)
    return _row_stats(dbl, xp, p.N, p.C, p.Q, p.L, p.xs, mean, m2)


cdef int _nc_normalize(cnp.ndarray x, cnp.ndarray y, NCPlan* p, double* mean, double* var,
                       object w, object b, double eps) except -1:
    """y = (x - mean[n, c]) / sqrt(var[n, c] + eps) * w[c] + b[c]."""
    if not p.cols:
        return _group_rows(x, y, p.N, p.C, p.Q, p.L, p.xs, p.ys, eps, FN_STATS_GIVEN, w, b, 1, 0,
                           None, None, mean, var)
    cdef bint dbl = cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE
    cdef int64_t NC = p.N * p.C
    cdef _Scratch s = _Scratch(3 * NC * x.itemsize)
    cdef Coefs c = _coef_slots(s.p, NC, x.itemsize)
    _coefs(dbl, p.N, p.C, p.C, 1, mean, var, eps, _ptr(w), _ptr(b), c)
    return _norm_cols(dbl, <const char*>cnp.PyArray_DATA(x), <char*>cnp.PyArray_DATA(y), p.N,
                      p.L, p.C, p.xs, p.ys, p.C, c)


cdef bint _in(cnp.ndarray x, cnp.ndarray y, object rm, object rv, object w, object b, double eps,
              double momentum):
    """InstanceNorm with input statistics: per (n, c) over the spatial axes."""
    cdef NCPlan p
    if not _plan_nc(x, y, &p):
        return False
    cdef int64_t i, N = p.N, C = p.C, NC = p.N * p.C, S = p.Q * p.L
    cdef _Scratch s = _Scratch(8 * (2 * NC + 3 * C))
    cdef double* mean = <double*>s.p
    cdef double* var = mean + NC
    cdef double* cm = var + NC
    cdef double* cv = cm + C
    cdef double* tmp = cv + C
    if p.cols:
        _nc_stats(x, &p, mean, var)
        for i in range(NC):
            var[i] /= S
        _nc_normalize(x, y, &p, mean, var, w, b, eps)
    else:
        _group_rows(x, y, N, C, p.Q, p.L, p.xs, p.ys, eps, 0, w, b, 1, 0, None, None, mean, var)
    if rm is not None:  # running stats: batch average of the per-instance statistics
        for i in range(C):
            cm[i] = 0.0
            cv[i] = 0.0
        for i in range(NC):
            cm[i % C] += mean[i]
            cv[i % C] += var[i] * S / (S - 1)  # unbiased; S > 1: checked by the caller
        for i in range(C):
            cm[i] /= N
            cv[i] /= N
        _update_running(rm, cm, momentum, tmp)
        _update_running(rv, cv, momentum, tmp)
    return True


def instance_moments(input):
    """Per-(n, c) mean and biased variance over the spatial axes of input (N, C, *), as two
    float64 arrays of shape (N, C): the statistics SwitchNorm mixes."""
    cdef str fn = "instance_moments"
    cdef cnp.ndarray x = _as_nc_input(input, fn)
    cdef NCPlan p
    if not _plan_nc(x, x, &p):
        x = np.ascontiguousarray(x)
        _plan_nc(x, x, &p)
    mean = np.zeros((x.shape[0], x.shape[1]), np.float64)
    var = np.zeros((x.shape[0], x.shape[1]), np.float64)
    if x.size == 0:
        return mean, var
    cdef double* mp = <double*>cnp.PyArray_DATA(<cnp.ndarray>mean)
    cdef double* vp = <double*>cnp.PyArray_DATA(<cnp.ndarray>var)
    _nc_stats(x, &p, mp, vp)
    cdef int64_t i, S = p.Q * p.L
    for i in range(p.N * p.C):
        vp[i] /= S
    return mean, var


def normalize_nc(input, mean, var, weight=None, bias=None, eps=1e-5, out=None):
    """y = (x - mean[n, c]) / sqrt(var[n, c] + eps) * weight[c] + bias[c] for input (N, C, *)
    and mean, var of shape (N, C) (any float dtype; used in float64)."""
    cdef str fn = "normalize_nc"
    cdef cnp.ndarray x = _as_nc_input(input, fn)
    cdef tuple nc = (x.shape[0], x.shape[1])
    cdef int t = cnp.PyArray_TYPE(x)
    cdef double e = check_eps(eps, fn)
    m = _param(mean, "mean", fn, cnp.NPY_DOUBLE, nc)
    v = _param(var, "var", fn, cnp.NPY_DOUBLE, nc)
    w = None if weight is None else _param(weight, "weight", fn, t, (x.shape[1],))
    b = None if bias is None else _param(bias, "bias", fn, t, (x.shape[1],))
    y, final = _prepare_out(out, x, fn)
    w, b = _unalias(w, out), _unalias(b, out)
    if x.size == 0:
        return final
    cdef NCPlan p
    if not _plan_nc(x, y, &p):
        x, y, final = _c_order_copy(x, out, final)
        _plan_nc(x, y, &p)
    _nc_normalize(x, y, &p, <double*>cnp.PyArray_DATA(<cnp.ndarray>m),
                  <double*>cnp.PyArray_DATA(<cnp.ndarray>v), w, b, e)
    return _finish(y, final)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5, out=None):
    cdef str fn = "instance_norm"
    cdef cnp.ndarray x = _as_nc_input(input, fn)
    cdef Py_ssize_t C = x.shape[1]
    cdef int t = cnp.PyArray_TYPE(x)
    cdef bint stats = bool(use_input_stats)
    cdef double e = check_eps(eps, fn), m = 0.0
    w = None if weight is None else _param(weight, "weight", fn, t, (C,))
    b = None if bias is None else _param(bias, "bias", fn, t, (C,))
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fn}: running_mean and running_var must be given together")
    rm = None if running_mean is None else _running(running_mean, "running_mean", fn, C, stats)
    rv = None if running_var is None else _running(running_var, "running_var", fn, C, stats)
    if not stats and rm is None:
        raise ValueError(f"{fn}: running_mean and running_var are required when "
                         f"use_input_stats=False")
    if stats and rm is not None:
        m = check_momentum(momentum, fn)
    if stats and _prod((<object>x).shape, 2) == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size "
                         f"{(<object>x).shape}")
    y, final = _prepare_out(out, x, fn)
    if stats:
        _check_updated(rm, rv, out, fn)
    w, b = _unalias(w, out), _unalias(b, out)
    if x.size == 0:
        return final
    if not stats:
        ok = _bn(x, y, False, rm, rv, w, b, e, m)
    else:
        ok = _in(x, y, rm, rv, w, b, e, m)
    if not ok:
        x, y, final = _c_order_copy(x, out, final)
        if not stats:
            _bn(x, y, False, rm, rv, w, b, e, m)
        else:
            _in(x, y, rm, rv, w, b, e, m)
    return _finish(y, final)


# --------------------------------------------------------------------------------------------
# group norm

cdef bint _gn(cnp.ndarray x, cnp.ndarray y, int64_t G, object w, object b, double eps):
    """GroupNorm: per (n, g) over the group's channels and the spatial axes."""
    cdef int nd = x.ndim, k
    cdef int64_t N = x.shape[0], C = x.shape[1], isz = x.itemsize
    cdef int64_t Cg = C // G, S = x.size // (N * C), NC = N * C
    cdef Ax ax[64]
    k = _axes(x, y, 2, nd, ax, True)
    if k > 1:
        return False
    cdef Ax bn = _axis(x, y, 0, isz)
    cdef Ax ch = _axis(x, y, 1, isz)
    cdef int64_t i
    cdef int64_t xs[4]
    cdef int64_t ys[4]
    if k == 1 and _iabs(ch.sx) > _iabs(ax[0].sx):  # NCHW-like: fused rows kernel
        xs[0] = bn.sx; xs[1] = Cg * ch.sx; xs[2] = ch.sx; xs[3] = ax[0].sx
        ys[0] = bn.sy; ys[1] = Cg * ch.sy; ys[2] = ch.sy; ys[3] = ax[0].sy
        _group_rows(x, y, N, G, Cg, S, xs, ys, eps, 0, w, b, Cg, 1, None, None, NULL, NULL)
        return True
    # channels-last, or no spatial extent: statistics per (n, c) (or per (n, g) directly),
    # normalized across the channels of each row
    cdef bint dbl = cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE
    cdef _Scratch s = _Scratch(8 * 2 * NC + 3 * NC * isz)
    cdef double* mean = <double*>s.p
    cdef double* var = mean + NC
    cdef Coefs c = _coef_slots(<char*>(var + NC), NC, isz)
    cdef const char* xp = <const char*>cnp.PyArray_DATA(x)
    if k == 0:  # a group is Cg consecutive channels
        xs[0] = bn.sx; xs[1] = Cg * ch.sx; xs[2] = 0; xs[3] = ch.sx
        _row_stats(dbl, xp, N, G, 1, Cg, xs, mean, var)
    else:
        xs[0] = bn.sx; xs[1] = ax[0].sx; xs[2] = ch.sx
        _col_stats(dbl, xp, N, S, C, xs, mean, var)
        # merge the Cg channels of each group, in channel order, into the first N*G slots
        fn_merge_moments(N * G, Cg, 1, <double>S, mean, var, mean, var)
    for i in range(N * G):
        var[i] /= Cg * S
    _coefs(dbl, N, C, G, Cg, mean, var, eps, _ptr(w), _ptr(b), c)
    xs[0] = bn.sx; xs[1] = ax[0].sx if k else 0; xs[2] = ch.sx
    ys[0] = bn.sy; ys[1] = ax[0].sy if k else 0; ys[2] = ch.sy
    _norm_cols(dbl, xp, <char*>cnp.PyArray_DATA(y), N, S, C, xs, ys, C, c)
    return True


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, out=None):
    cdef str fn = "group_norm"
    cdef cnp.ndarray x = _as_nc_input(input, fn)
    if isinstance(num_groups, (bool, np.bool_)) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"{fn}: num_groups must be an int, got {type(num_groups).__name__}")
    cdef Py_ssize_t C = x.shape[1]
    if num_groups <= 0:
        raise ValueError(f"{fn}: num_groups must be positive, got {num_groups}")
    if C % num_groups != 0:
        raise ValueError(f"Expected number of channels in input to be divisible by num_groups, "
                         f"but got input of shape {(<object>x).shape} and num_groups={num_groups}")
    _verify_batch_size((x.shape[0] * C // num_groups, num_groups) + (<object>x).shape[2:])
    cdef int t = cnp.PyArray_TYPE(x)
    cdef double e = check_eps(eps, fn)
    w = None if weight is None else _param(weight, "weight", fn, t, (C,))
    b = None if bias is None else _param(bias, "bias", fn, t, (C,))
    y, final = _prepare_out(out, x, fn)
    w, b = _unalias(w, out), _unalias(b, out)
    if x.size == 0:
        return final
    if not _gn(x, y, num_groups, w, b, e):
        x, y, final = _c_order_copy(x, out, final)
        _gn(x, y, num_groups, w, b, e)
    return _finish(y, final)


# --------------------------------------------------------------------------------------------
# layer norm

cpdef tuple check_normalized_shape(object normalized_shape, str fn, bint empty_ok=False):
    """normalized_shape (an int or a sequence of ints >= 0; at least one unless empty_ok) as a
    tuple."""
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
    return ns


cdef bint _ln(cnp.ndarray x, cnp.ndarray y, int nk, object w, object b, double eps, bint rms):
    """LayerNorm (or RMSNorm, rms=True: no centring, x / sqrt(mean(x^2) + eps)): per row over
    the trailing nk axes; weight/bias indexed by their position."""
    cdef int nd = x.ndim, km, kk
    cdef Ax am[64]
    cdef Ax ak[64]
    km = _axes(x, y, 0, nd - nk, am, False)
    kk = _axes(x, y, nd - nk, nd, ak, False)
    if km > 2 or kk > 1:
        return False
    while km < 2:
        am[1] = am[0] if km == 1 else _unit()
        am[0] = _unit()
        km += 1
    if kk == 0:
        ak[0] = _unit()
    cdef int64_t xs[4]
    cdef int64_t ys[4]
    xs[0] = am[0].sx; xs[1] = am[1].sx; xs[2] = 0; xs[3] = ak[0].sx
    ys[0] = am[0].sy; ys[1] = am[1].sy; ys[2] = 0; ys[3] = ak[0].sy
    _group_rows(x, y, am[0].n, am[1].n, 1, ak[0].n, xs, ys, eps, FN_RMS if rms else 0, None,
                None, 0, 0, w, b, NULL, NULL)
    return True


cdef object _ln_call(str fn, object input, object normalized_shape, object weight, object bias,
                     object eps, object out, bint rms):
    cdef cnp.ndarray x = _as_input(input, fn)
    cdef tuple ns = check_normalized_shape(normalized_shape, fn)
    cdef int nk = len(ns)
    if x.ndim < nk or tuple((<object>x).shape[x.ndim - nk:]) != ns:
        raise ValueError(f"Given normalized_shape={list(ns)}, expected input with shape "
                         f"[*, {', '.join(map(str, ns))}], but got input of size{list((<object>x).shape)}")
    cdef int t = cnp.PyArray_TYPE(x)
    cdef double e = np.finfo(x.dtype).eps if (rms and eps is None) else check_eps(eps, fn)
    w = None if weight is None else _param(weight, "weight", fn, t, ns)
    b = None if bias is None else _param(bias, "bias", fn, t, ns)
    y, final = _prepare_out(out, x, fn)
    w, b = _unalias(w, out), _unalias(b, out)
    if x.size == 0:
        return final
    # the kernel's affine path takes weight and bias together
    if w is not None and b is None:
        b = np.zeros(ns, dtype=x.dtype)
    elif b is not None and w is None:
        w = np.ones(ns, dtype=x.dtype)
    if not _ln(x, y, nk, w, b, e, rms):
        x, y, final = _c_order_copy(x, out, final)
        _ln(x, y, nk, w, b, e, rms)
    return _finish(y, final)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, out=None):
    return _ln_call("layer_norm", input, normalized_shape, weight, bias, eps, out, False)


def rms_norm(input, normalized_shape, weight=None, eps=None, out=None):
    return _ln_call("rms_norm", input, normalized_shape, weight, None, eps, out, True)
