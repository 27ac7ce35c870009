# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython adapter between fastnorm.functional and the C kernels of src_c/.

Every op runs one skeleton, ``_run``: the op checks its arguments (``fastnorm._checks``) before
anything is written; ``_run`` prepares the output, then the op's planner describes the input as a
job of the C interface (``fastnorm.h``: fn_rows / fn_cols, fn_stats, fn_affine, fn_epilogue)
over at most a few strided axes (``fastnorm._layout``) and runs the kernels of the input's dtype,
found in that dtype's table, without the GIL. The public defs have fastnorm.functional's exact
signatures (functional uses them directly); their cdef forms (bn_call, in_call, gn_call, ln_call)
also take ``stats`` (a float64 (2, groups) array), where the op writes the mean and biased
variance of each group it normalized (training statistics only), for the backward passes of
``fastnorm._backward``. A layout that cannot be described without a copy
(rare: e.g. two unmergeable spatial axes that also interleave with the channel axis) is copied to
C order and planned again; C order, Fortran order, transposes, negative strides, slices and
channels-last (NHWC seen as NCHW) run in place. Last, the result is copied to ``out`` when it
had to be written elsewhere.
"""
import numpy as np

cimport cython
cimport numpy as cnp
from libc.stdint cimport int64_t, uint16_t
from libc.stdlib cimport free, malloc
from libc.math cimport isfinite
from libc.string cimport memcpy

from fastnorm._checks cimport (NPY_HALF_, NPY_USERDEF_, as_input, as_nc_input,
                               bfloat16_typenum, check_activation, check_eps, check_flag,
                               check_momentum, check_normalized_shape, check_running_pair,
                               check_updated, empty_like, has_shape, may_overlap, param,
                               prepare_out, prod, rms_eps, running, same_view, unalias,
                               verify_batch_size)
from fastnorm._layout cimport Ax, axes, axis, compact, iabs, pad_front, scaled, unit
from fastnorm._runtime cimport enter, leave, threads

cdef extern from "Python.h":
    ctypedef struct PyThreadState:
        pass
    PyThreadState* PyEval_SaveThread() nogil
    void PyEval_RestoreThread(PyThreadState*) nogil

cnp.import_array()
fn_init()  # before any kernel: the CPU's SIMD level and cache size, read by parallel regions


def cpu_info():
    """What the kernels found at import: {"simd": "avx512" | "avx2" | "portable", "pairs":
    whether float32's AVX-512 statistics loops run as pairs of 256-bit halves (AMD Zen 4, where
    that is faster; the same bits), "l3_bytes": last-level cache bytes (0: unknown),
    "stream_bytes": output bytes from which the normalize passes of rows use streaming stores
    (0: never), "stream_bytes_cols": the same for the column (channels-last) layouts,
    "stream_bytes_wb": the same for float32 rows with an elementwise weight and bias
    (layer_norm's), "stream_bytes_backward": the same for the channels-last backward pass's
    input gradient}."""
    cdef int level, pairs
    cdef int64_t l3, sb, sbc, sbb, sbw
    fn_cpu_info(&level, &pairs, &l3, &sb, &sbc, &sbb, &sbw)
    return {"simd": ("portable", "avx2", "avx512")[level], "pairs": bool(pairs), "l3_bytes": l3,
            "stream_bytes": sb, "stream_bytes_cols": sbc, "stream_bytes_wb": sbw,
            "stream_bytes_backward": sbb}


# --------------------------------------------------------------------------------------------
# the dtype table and the kernel calls

cdef const fn_kernel_table* _table(cnp.ndarray x) except NULL:
    """The kernels of x's dtype (the one place that maps NumPy dtypes to the C tables)."""
    cdef int t = cnp.PyArray_TYPE(x)
    cdef const fn_kernel_table* k = NULL
    if t == cnp.NPY_FLOAT:
        k = fn_kernels_for(FN_FLOAT32)
    elif t == cnp.NPY_DOUBLE:
        k = fn_kernels_for(FN_FLOAT64)
    elif t == NPY_HALF_:
        k = fn_kernels_for(FN_FLOAT16)
    elif t >= NPY_USERDEF_ and t == bfloat16_typenum():
        k = fn_kernels_for(FN_BFLOAT16)
    if k == NULL:
        raise TypeError(f"fastnorm: no kernels for dtype {x.dtype}")
    return k


cdef int _check_rc(int rc) except -1:
    if rc == FN_ENOMEM:
        raise MemoryError("fastnorm: a kernel could not allocate its scratch memory")
    if rc != FN_OK:
        raise RuntimeError(f"fastnorm: internal error, kernel status {rc}")
    return 0


cdef class _Scratch:
    """One malloc'd block for per-call statistics and coefficients, freed with the object."""
    cdef char* p

    def __cinit__(self, size_t nbytes):
        self.p = <char*>malloc(nbytes if nbytes > 0 else 1)
        if self.p == NULL:
            raise MemoryError(f"fastnorm: could not allocate {nbytes} bytes of scratch memory")

    def __dealloc__(self):
        free(self.p)


cdef object _widened(object p, int ptype):
    """A float16 / bfloat16 ndarray p as float32 when the param type is float32 (the 16-bit
    types' and float32's tables), converted by fn_widen16: NumPy's float16 cast took 12 us for a
    LayerNorm(4096)'s weight and bias, ten times the kernel of a decode-size call. Anything else
    is returned as it is, for param to check and convert."""
    if ptype != cnp.NPY_FLOAT or not isinstance(p, cnp.ndarray):
        return p
    cdef cnp.ndarray a = <cnp.ndarray>p
    cdef int t = cnp.PyArray_TYPE(a)
    cdef bint bf16 = t >= NPY_USERDEF_ and t == bfloat16_typenum()
    if (t != NPY_HALF_ and not bf16) or not cnp.PyArray_ISNOTSWAPPED(a) or \
            not cnp.PyArray_ISALIGNED(a):
        return p
    a = np.ascontiguousarray(a)
    cdef cnp.ndarray o = np.empty((<object>a).shape, np.float32)
    fn_widen16(<const uint16_t*>cnp.PyArray_DATA(a), cnp.PyArray_SIZE(a), bf16,
               <float*>cnp.PyArray_DATA(o))
    return o


@cython.final
@cython.freelist(8)
cdef class _Call:
    """One op call: its checked arguments, the arrays the kernels read and write, and the
    kernels of the input's dtype."""
    cdef str fn
    cdef cnp.ndarray x, y
    cdef object final                  # what the call returns (y, or out when y is a temporary)
    cdef const fn_kernel_table* k
    cdef int ptype                     # NumPy type of weights and biases: the table's param type
    cdef object w, b, rm, rv           # checked arrays or None
    cdef double eps, momentum
    cdef bint training                 # batch statistics (and running stats updated when given)
    cdef int64_t num                   # group_norm: groups; layer_norm: normalized axes
    cdef int64_t wrow                  # batch_norm_sample_affine: C (weight[n, c]), else 0
    cdef bint rms
    cdef int act                       # fn_activation of the epilogue
    cdef bint fresh                    # y allocated here, not the caller's out (fn_epilogue)
    cdef object mean, var              # normalize_nc: given statistics, float64 (N, C)
    cdef object stats                  # None, or float64 (2, groups): the batch statistics
                                       # (mean, biased variance) written out, for backward
    cdef cnp.ndarray r                 # add_*: the residual (None for the other ops)
    cdef cnp.ndarray s                 # add_*: where the kernels write the sum, or None
    cdef object s_final                # add_*: sum_out (s, or sum_out when s is a temporary)
    cdef object lower                  # filter_response_norm: tau (C,) in the param type, or None

    cdef double* stat(self, int row):
        """Row 0 (mean) or 1 (variance) of stats, NULL without it."""
        if self.stats is None:
            return NULL
        cdef cnp.ndarray st = <cnp.ndarray>self.stats
        return <double*>cnp.PyArray_DATA(st) + row * st.shape[1]

    cdef int save_stats(self, const double* mean, const double* var, int64_t n) except -1:
        if self.stats is not None:
            memcpy(self.stat(0), mean, n * sizeof(double))
            memcpy(self.stat(1), var, n * sizeof(double))
        return 0

    cdef object affine(self, object weight, object bias, tuple shape, bint any_shape=False):
        """weight and bias checked against `shape`, in the param type."""
        self.w = None if weight is None else param(_widened(weight, self.ptype), "weight",
                                                   self.fn, self.ptype, shape, any_shape)
        self.b = None if bias is None else param(_widened(bias, self.ptype), "bias", self.fn,
                                                 self.ptype, shape, any_shape)

    cdef object running_stats(self, object running_mean, object running_var, object momentum,
                              str needed):
        """running_mean and running_var (both or neither), of one value per channel: updated in
        place with momentum when self.training (batch statistics), else required (`needed`
        names the flag that asks for them)."""
        check_running_pair(running_mean, running_var, self.fn)
        cdef Py_ssize_t C = self.x.shape[1]
        if running_mean is not None:
            self.rm = running(running_mean, "running_mean", self.fn, C, self.training)
            self.rv = running(running_var, "running_var", self.fn, C, self.training)
        if not self.training and self.rm is None:
            raise ValueError(f"{self.fn}: running_mean and running_var are required when "
                             f"{needed}")
        if self.training and self.rm is not None:
            self.momentum = check_momentum(momentum, self.fn)


cdef _Call _start(str fn, object input, bint nc):
    """A call of op fn on input: (N, C, *) input when nc."""
    cdef _Call c = _Call.__new__(_Call)
    c.fn = fn
    c.x = as_nc_input(input, fn) if nc else as_input(input, fn)
    c.k = _table(c.x)
    c.ptype = cnp.NPY_FLOAT if c.k.param_itemsize == 4 else cnp.NPY_DOUBLE
    c.act = FN_ACT_NONE
    return c


ctypedef bint (*_Planner)(_Call) except -1  # True: ran; False: the layout needs a copy first


cdef object _run(_Call c, object out, _Planner plan, object sum_out=None):
    """The skeleton every op shares, after its own checks: prepare the outputs, plan and run
    (again on C-order copies when the layout cannot be described), finish; counted as a call in
    progress, whose threads concurrent calls share (fastnorm._runtime)."""
    enter()
    try:
        return _run_counted(c, out, plan, sum_out)
    finally:
        leave()


cdef object _run_counted(_Call c, object out, _Planner plan, object sum_out):
    if c.r is not None:
        _prepare_sum(c, out, sum_out)
    if out is None:  # the common case, without prepare_out's tuple
        c.y = empty_like(c.x)
        c.final = c.y
    else:
        c.y, c.final = prepare_out(out, c.x, c.fn)
    if c.r is not None and c.y is c.final and may_overlap(c.y, c.r) and not same_view(c.y, c.r):
        c.y = empty_like(c.x)  # the residual is read as the output is written: out may be it
    c.fresh = out is None or c.y is not c.final
    if c.training and c.rm is not None:
        check_updated(c.rm, c.rv, out, c.fn)
    if out is not None or sum_out is not None:
        c.w, c.b = unalias(unalias(c.w, out), sum_out), unalias(unalias(c.b, out), sum_out)
    if c.x.size != 0 and not plan(c):
        c.x = np.ascontiguousarray(c.x)
        c.y = empty_like(c.x)
        c.fresh = True
        if out is None:
            c.final = c.y
        if c.r is not None:
            c.r = np.ascontiguousarray(c.r)
        if c.s is not None:
            c.s = empty_like(c.x)
        plan(c)  # C order always plans
    if c.final is not c.y:
        np.copyto(c.final, c.y)
    if c.s is None:
        return c.final
    if c.s_final is not c.s:
        np.copyto(c.s_final, c.s)
    return c.final, c.s_final


cdef inline PyThreadState* _unlock(_Call c) noexcept:
    """Release the GIL for a kernel (_relock takes it back), unless the work is tiny: for a
    decode-size call, dropping and retaking the GIL costs about as much as the kernel itself."""
    return PyEval_SaveThread() if cnp.PyArray_SIZE(c.x) >= 16384 else NULL


cdef inline void _relock(PyThreadState* ts) noexcept:
    if ts != NULL:
        PyEval_RestoreThread(ts)


cdef inline const void* _ptr(object a):
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _row_moments(_Call c, const fn_rows* s, double* mean, double* m2) except -1:
    cdef int rc, nt = threads()
    cdef PyThreadState* ts
    cdef const void* xp = cnp.PyArray_DATA(c.x)
    ts = _unlock(c)
    rc = c.k.row_moments(xp, s, mean, m2, nt)
    _relock(ts)
    return _check_rc(rc)


cdef int _col_moments(_Call c, const fn_cols* s, double* mean, double* m2) except -1:
    cdef int rc, nt = threads()
    cdef PyThreadState* ts
    cdef const void* xp = cnp.PyArray_DATA(c.x)
    ts = _unlock(c)
    rc = c.k.col_moments(xp, s, mean, m2, nt)
    _relock(ts)
    return _check_rc(rc)


cdef inline fn_epilogue _epilogue(_Call c, const void* lower) noexcept:
    """c's epilogue: its activation, the TLU's lower bounds (NULL: none), whether y is fresh."""
    cdef fn_epilogue e
    e.activation = c.act
    e.lower = lower
    e.fresh = c.fresh
    return e


cdef int _normalize_rows(_Call c, const fn_row_job* j) except -1:
    cdef int rc, nt = threads()
    cdef PyThreadState* ts
    cdef const void* xp = cnp.PyArray_DATA(c.x)
    cdef void* yp = cnp.PyArray_DATA(c.y)
    ts = _unlock(c)
    rc = c.k.normalize_rows(xp, yp, j, nt)
    _relock(ts)
    return _check_rc(rc)


cdef int _group_cols(_Call c, const fn_cols* shape, int64_t groups, double* mean,
                     double* var) except -1:
    """Channels-last GroupNorm (InstanceNorm: groups = channels) whole: statistics per (sample,
    group) into mean and var, then the columns normalized with c's weight and bias."""
    cdef fn_group_cols_job j
    j.shape = shape[0]
    j.groups = groups
    j.eps = c.eps
    j.weight, j.bias = _ptr(c.w), _ptr(c.b)
    j.epilogue = _epilogue(c, NULL)
    j.mean, j.var = mean, var
    cdef int rc, nt = threads()
    cdef PyThreadState* ts
    cdef const void* xp = cnp.PyArray_DATA(c.x)
    cdef void* yp = cnp.PyArray_DATA(c.y)
    ts = _unlock(c)
    rc = c.k.group_cols(xp, yp, &j, nt)
    _relock(ts)
    return _check_rc(rc)


cdef int _normalize_cols(_Call c, const fn_cols* shape, int64_t outer, int64_t channels,
                         int64_t group_step, int64_t channels_per_group, const double* mean,
                         const double* var, int64_t coef_outer_step,
                         bint row_affine=False) except -1:
    """Coefficients for (outer, channels) entries from per-group statistics (see fn_coef_job),
    then the column layout normalized with them; c's weight and bias per column, or with
    row_affine per row (fn_col_job's row_weight, row_bias)."""
    cdef int64_t n = outer * channels
    cdef _Scratch s = _Scratch(3 * n * c.k.param_itemsize)
    cdef fn_coef_job cj
    cj.outer = outer
    cj.channels = channels
    cj.group_step = group_step
    cj.channels_per_group = channels_per_group
    cj.mean = mean
    cj.var = var
    cj.eps = c.eps
    cdef fn_col_job j
    cj.weight = cj.bias = j.row_weight = j.row_bias = NULL
    if row_affine:
        j.row_weight, j.row_bias = _ptr(c.w), _ptr(c.b)
    else:
        cj.weight, cj.bias = _ptr(c.w), _ptr(c.b)
    j.shape = shape[0]
    j.coefs.shift = s.p
    j.coefs.scale = s.p + n * c.k.param_itemsize
    j.coefs.offset = s.p + 2 * n * c.k.param_itemsize
    j.coef_outer_step = coef_outer_step
    j.epilogue = _epilogue(c, NULL)
    c.k.coefs(&cj, &j.coefs)
    cdef int rc, nt = threads()
    cdef PyThreadState* ts
    cdef const void* xp = cnp.PyArray_DATA(c.x)
    cdef void* yp = cnp.PyArray_DATA(c.y)
    ts = _unlock(c)
    rc = c.k.normalize_cols(xp, yp, &j, nt)
    _relock(ts)
    return _check_rc(rc)


# --------------------------------------------------------------------------------------------
# job descriptions

cdef fn_rows _rows(Ax o, Ax g, Ax q, Ax l) noexcept:
    """Groups (o, g) of rows q of elements l."""
    cdef fn_rows s
    s.outer, s.groups, s.rows, s.row_len = o.n, g.n, q.n, l.n
    s.xs[0], s.xs[1], s.xs[2], s.xs[3] = o.sx, g.sx, q.sx, l.sx
    s.ys[0], s.ys[1], s.ys[2], s.ys[3] = o.sy, g.sy, q.sy, l.sy
    return s


cdef fn_cols _cols(Ax o, Ax r, Ax col) noexcept:
    """Columns (o, col), each over the rows r."""
    cdef fn_cols s
    s.outer, s.rows, s.cols = o.n, r.n, col.n
    s.xs[0], s.xs[1], s.xs[2] = o.sx, r.sx, col.sx
    s.ys[0], s.ys[1], s.ys[2] = o.sy, r.sy, col.sy
    return s


cdef inline fn_row_job _row_job(_Call c, fn_rows shape, bint given, double* mean, double* var,
                                int64_t group_step, int64_t row_step, bint elementwise) noexcept:
    """A normalize_rows job with c's eps, weight and bias."""
    cdef fn_row_job j
    j.shape = shape
    j.stats.eps = c.eps
    j.stats.rms = c.rms
    j.stats.given = given
    j.stats.mean = mean
    j.stats.var = var
    j.affine.weight = _ptr(c.w)
    j.affine.bias = _ptr(c.b)
    j.affine.group_step = group_step
    j.affine.row_step = row_step
    j.affine.elementwise = elementwise
    j.epilogue = _epilogue(c, _ptr(c.lower))
    return j


# --------------------------------------------------------------------------------------------
# running statistics

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


cdef int _update_running_pair(_Call c, const double* mean, const double* uvar, double* tmp) except -1:
    """c's running mean and variance updated with a batch's mean and unbiased variance."""
    _update_running(c.rm, mean, c.momentum, tmp)
    _update_running(c.rv, uvar, c.momentum, tmp)
    return 0


# --------------------------------------------------------------------------------------------
# batch norm (also instance norm without input statistics)

cdef bint _bn(_Call c) except -1:
    """BatchNorm on x (N, C, *): statistics per channel over every other axis."""
    cdef cnp.ndarray x = c.x, y = c.y
    cdef int nd = x.ndim, k, d
    cdef int64_t i, C = x.shape[1], count = x.size // C
    cdef Ax ax[64]
    ax[0] = axis(x, y, 0)
    for d in range(2, nd):
        ax[d - 1] = axis(x, y, d)
    k = compact(ax, nd - 1, True)
    if k > 2:
        return False
    cdef Ax ch = axis(x, y, 1)
    # channels innermost (NHWC, (N, C)): vectorize across channels; else across the reduced axes
    cdef bint cols = k == 0 or iabs(ch.sx) < iabs(ax[k - 1].sx)
    if c.wrow and (cols or not ((k <= 1 and x.shape[0] == 1) or
                                (k == 2 and ax[0].n == x.shape[0]
                                 and ax[0].sx == axis(x, y, 0).sx))):
        # a per-sample affine needs the samples (alone) as rows: C order has them (H*W > 1)
        return False
    pad_front(ax, k, 2)
    cdef int64_t P1 = ax[0].n if cols else 1
    cdef _Scratch s = _Scratch(8 * (2 * P1 * C + 3 * C))
    cdef double* pmean = <double*>s.p
    cdef double* pm2 = pmean + P1 * C
    cdef double* mean = pm2 + P1 * C
    cdef double* var = mean + C
    cdef double* tmp = var + C
    cdef fn_cols sc
    cdef fn_row_job j
    if not c.training:
        _read_f64(c.rm, mean)
        _read_f64(c.rv, var)
    if cols:
        sc = _cols(ax[0], ax[1], ch)
        if c.training:
            _col_moments(c, &sc, pmean, pm2)
            fn_merge_moments(1, P1, C, <double>(count // P1), pmean, pm2, mean, var)
            for i in range(C):
                var[i] /= count
        _normalize_cols(c, &sc, 1, C, 0, 1, mean, var, 0)
    else:
        j = _row_job(c, _rows(unit(), ch, ax[0], ax[1]), not c.training, mean, var, 1, c.wrow,
                     False)
        _normalize_rows(c, &j)
    if c.training:
        c.save_stats(mean, var, C)
    if c.training and c.rm is not None:
        for i in range(C):  # unbiased variance for the running estimate
            pm2[i] = var[i] * count / (count - 1)  # count > 1: checked by the caller
        _update_running_pair(c, mean, pm2, tmp)
    return True


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, out=None, activation=None):
    return bn_call(input, running_mean, running_var, weight, bias, training, momentum, eps, out,
                   None, activation)


cdef object bn_call(object input, object running_mean, object running_var, object weight,
                    object bias, object training, object momentum, object eps, object out,
                    object stats, object activation):
    """batch_norm, with stats (None, or a float64 (2, C) array: the batch statistics written
    out, for the backward)."""
    cdef _Call c = _start("batch_norm", input, True)
    c.stats = stats
    c.act = check_activation(activation, c.fn)
    cdef Py_ssize_t C = c.x.shape[1]
    c.training = check_flag(training, "training", c.fn)
    c.eps = check_eps(eps, c.fn)
    c.affine(weight, bias, (C,), True)  # any shape with C elements, as torch
    c.running_stats(running_mean, running_var, momentum, "training=False")
    if c.training:
        verify_batch_size((<object>c.x).shape)
        if c.eps == 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    return _run(c, out, _bn)


def batch_norm_sample_affine(input, running_mean, running_var, weight, bias, training=False,
                             momentum=0.1, eps=1e-5):
    """batch_norm of input (N, C, *S), S > 1 element, with a per-sample affine: weight and bias
    of shape (N, C) (conditional BatchNorm's class embeddings), applied in the normalize pass of
    the same kernel: y[n, c] = (x[n, c] - mean[c]) / sqrt(var[c] + eps) * weight[n, c] +
    bias[n, c]; running statistics as batch_norm."""
    cdef _Call c = _start("batch_norm_sample_affine", input, True)
    cdef Py_ssize_t N = c.x.shape[0], C = c.x.shape[1]
    if prod((<object>c.x).shape, 2) < 2:
        raise ValueError(f"{c.fn}: expected more than 1 spatial element, got input of shape "
                         f"{(<object>c.x).shape}")
    c.training = check_flag(training, "training", c.fn)
    c.eps = check_eps(eps, c.fn)
    c.affine(weight, bias, (N, C))
    if c.w is None or c.b is None:
        raise ValueError(f"{c.fn}: weight and bias are required")
    c.wrow = C
    c.running_stats(running_mean, running_var, momentum, "training=False")
    if c.training:
        verify_batch_size((<object>c.x).shape)
    return _run(c, None, _bn)


# --------------------------------------------------------------------------------------------
# instance norm

cdef enum:
    _COPY = 0  # the layout needs a copy
    _ROWS = 1  # channel not innermost: groups (n, c) of rows
    _COLS = 2  # channels innermost: columns (n, c)


cdef int _plan_nc(cnp.ndarray x, cnp.ndarray y, fn_rows* rows, fn_cols* cols):
    """Describe x (N, C, *S) for per-(n, c) statistics over the spatial axes."""
    cdef Ax ax[64]
    cdef int k = axes(x, y, 2, x.ndim, ax, True)
    if k > 2:
        return _COPY
    cdef Ax bn = axis(x, y, 0)
    cdef Ax ch = axis(x, y, 1)
    if k == 1 and iabs(ch.sx) < iabs(ax[0].sx):
        cols[0] = _cols(bn, ax[0], ch)
        return _COLS
    pad_front(ax, k, 2)
    rows[0] = _rows(bn, ch, ax[0], ax[1])
    return _ROWS


cdef int _nc_normalize(_Call c, int mode, fn_rows* rows, fn_cols* cols, double* mean,
                       double* var) except -1:
    """y = (x - mean[n, c]) / sqrt(var[n, c] + eps) * w[c] + b[c], statistics given."""
    cdef fn_row_job j
    if mode == _ROWS:
        j = _row_job(c, rows[0], True, mean, var, 1, 0, False)
        return _normalize_rows(c, &j)
    cdef int64_t N = cols.outer, C = cols.cols
    return _normalize_cols(c, cols, N, C, C, 1, mean, var, C)


cdef bint _in(_Call c) except -1:
    """InstanceNorm with input statistics: per (n, c) over the spatial axes."""
    cdef fn_rows rows
    cdef fn_cols cols
    cdef fn_row_job j
    cdef int mode = _plan_nc(c.x, c.y, &rows, &cols)
    if mode == _COPY:
        return False
    cdef int64_t i, N = c.x.shape[0], C = c.x.shape[1], NC = N * C, S = c.x.size // NC
    cdef _Scratch s = _Scratch(8 * (2 * NC + 3 * C))
    cdef double* mean = <double*>s.p
    cdef double* var = mean + NC
    cdef double* cm = var + NC
    cdef double* cv = cm + C
    cdef double* tmp = cv + C
    if mode == _COLS:
        _group_cols(c, &cols, C, mean, var)
    else:
        j = _row_job(c, rows, False, mean, var, 1, 0, False)
        _normalize_rows(c, &j)
    c.save_stats(mean, var, NC)
    if c.rm is not None:  # running stats: batch average of the per-instance statistics
        for i in range(C):
            cm[i] = 0.0
            cv[i] = 0.0
        for i in range(NC):
            cm[i % C] += mean[i]
            cv[i % C] += var[i] * S / (S - 1)  # unbiased; S > 1: checked by the caller
        for i in range(C):
            cm[i] /= N
            cv[i] /= N
        _update_running_pair(c, cm, cv, tmp)
    return True


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5, *, out=None):
    return in_call(input, running_mean, running_var, weight, bias, use_input_stats, momentum,
                   eps, out, None)


cdef object in_call(object input, object running_mean, object running_var, object weight,
                    object bias, object use_input_stats, object momentum, object eps, object out,
                    object stats):
    """instance_norm, with stats (None, or float64 (2, N * C))."""
    cdef _Call c = _start("instance_norm", input, True)
    c.stats = stats
    cdef Py_ssize_t C = c.x.shape[1]
    c.training = check_flag(use_input_stats, "use_input_stats", c.fn)
    c.eps = check_eps(eps, c.fn)
    c.affine(weight, bias, (C,))
    c.running_stats(running_mean, running_var, momentum, "use_input_stats=False")
    if c.training and prod((<object>c.x).shape, 2) == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size "
                         f"{(<object>c.x).shape}")
    if not (c.training and c.eps == 0.0 and c.x.size):
        return _run(c, out, _in if c.training else _bn)
    # eps = 0: torch's kernel (its batch_norm's) takes 1 / sqrt(var + eps) as 0 where var is 0
    # too, so a constant plane gives its bias (0 without one), not 0 * inf = NaN
    if stats is None:
        c.stats = stats = np.full((2, c.x.shape[0] * C), np.nan)
    y = _run(c, out, _in)
    flat = np.flatnonzero(stats[1] == 0.0)
    if flat.size:
        n, ch = np.divmod(flat, C)
        y[n, ch] = 0 if c.b is None else c.b[ch].reshape((-1,) + (1,) * (y.ndim - 2))
    return y


def instance_moments(input):
    """Per-(n, c) mean and biased variance over the spatial axes of input (N, C, *), as two
    float64 arrays of shape (N, C): the statistics SwitchNorm mixes."""
    cdef _Call c = _start("instance_moments", input, True)
    cdef fn_rows rows
    cdef fn_cols cols
    cdef int mode = _plan_nc(c.x, c.x, &rows, &cols)
    if mode == _COPY:
        c.x = np.ascontiguousarray(c.x)
        mode = _plan_nc(c.x, c.x, &rows, &cols)
    shape = (c.x.shape[0], c.x.shape[1])
    mean = np.zeros(shape, np.float64)
    var = np.zeros(shape, np.float64)
    if c.x.size == 0:
        return mean, var
    cdef double* mp = <double*>cnp.PyArray_DATA(<cnp.ndarray>mean)
    cdef double* vp = <double*>cnp.PyArray_DATA(<cnp.ndarray>var)
    enter()
    try:
        if mode == _COLS:
            _col_moments(c, &cols, mp, vp)
        else:
            _row_moments(c, &rows, mp, vp)
    finally:
        leave()
    cdef int64_t i, S = c.x.size // mean.size
    for i in range(mean.size):
        vp[i] /= S
    return mean, var


cdef bint _nc_given(_Call c) except -1:
    cdef fn_rows rows
    cdef fn_cols cols
    cdef int mode = _plan_nc(c.x, c.y, &rows, &cols)
    if mode == _COPY:
        return False
    _nc_normalize(c, mode, &rows, &cols, <double*>cnp.PyArray_DATA(<cnp.ndarray>c.mean),
                  <double*>cnp.PyArray_DATA(<cnp.ndarray>c.var))
    return True


def normalize_nc(input, mean, var, weight=None, bias=None, eps=1e-5, out=None):
    """y = (x - mean[n, c]) / sqrt(var[n, c] + eps) * weight[c] + bias[c] for input (N, C, *)
    and mean, var of shape (N, C) (any float dtype; used in float64)."""
    cdef _Call c = _start("normalize_nc", input, True)
    cdef tuple nc = (c.x.shape[0], c.x.shape[1])
    c.eps = check_eps(eps, c.fn)
    c.mean = param(mean, "mean", c.fn, cnp.NPY_DOUBLE, nc)
    c.var = param(var, "var", c.fn, cnp.NPY_DOUBLE, nc)
    c.affine(weight, bias, (c.x.shape[1],))
    return _run(c, out, _nc_given)


cdef bint _frn(_Call c) except -1:
    """Filter Response Norm: per (n, c) plane, x / sqrt(mean(x^2) + eps), the per-channel affine
    and the TLU, one fused pass (rows layout; anything else plans again on a C-order copy)."""
    cdef fn_rows rows
    cdef fn_cols cols
    if _plan_nc(c.x, c.y, &rows, &cols) != _ROWS:
        return False
    cdef fn_row_job j = _row_job(c, rows, False, NULL, NULL, 1, 0, False)
    _normalize_rows(c, &j)
    return True


def filter_response_norm(input, weight, bias, tau, eps, out=None):
    """y = max(x / sqrt(mean(x^2 over the spatial axes) + eps) * weight[c] + bias[c], tau[c])
    for input (N, C, *) (weight, bias, tau: (C,) or None; tau None: no max), one pass over the
    data per (n, c) plane."""
    cdef _Call c = _start("filter_response_norm", input, True)
    cdef tuple ch = (c.x.shape[1],)
    c.eps = check_eps(eps, c.fn)
    c.affine(weight, bias, ch)
    c.lower = None if tau is None else param(tau, "tau", c.fn, c.ptype, ch)
    c.rms = True
    return _run(c, out, _frn)


# --------------------------------------------------------------------------------------------
# group norm

cdef bint _gn(_Call c) except -1:
    """GroupNorm: per (n, g) over the group's channels and the spatial axes."""
    cdef cnp.ndarray x = c.x, y = c.y
    cdef int64_t G = c.num, N = x.shape[0], C = x.shape[1]
    cdef int64_t Cg = C // G, S = x.size // (N * C), i
    cdef Ax ax[64]
    cdef int k = axes(x, y, 2, x.ndim, ax, True)
    if k > 1:
        return False
    cdef Ax bn = axis(x, y, 0)
    cdef Ax ch = axis(x, y, 1)
    cdef fn_row_job j
    cdef fn_rows sr
    cdef fn_cols sc
    if k == 1 and iabs(ch.sx) > iabs(ax[0].sx):  # NCHW-like: rows of a group's channels
        j = _row_job(c, _rows(bn, scaled(ch, G, Cg), scaled(ch, Cg, 1), ax[0]), False,
                     c.stat(0), c.stat(1), Cg, 1, False)
        _normalize_rows(c, &j)
        return True
    # channels-last: statistics per (n, c) merged per group, normalized across the channels of
    # each row; no spatial extent: statistics per (n, g) directly
    cdef _Scratch s = _Scratch(8 * 2 * N * G)  # statistics per (n, g)
    cdef double* mean = <double*>s.p
    cdef double* var = mean + N * G
    if k:
        sc = _cols(bn, ax[0], ch)
        _group_cols(c, &sc, G, mean, var)
        c.save_stats(mean, var, N * G)
        return True
    sr = _rows(bn, scaled(ch, G, Cg), unit(), scaled(ch, Cg, 1))
    _row_moments(c, &sr, mean, var)
    for i in range(N * G):
        var[i] /= Cg * S
    c.save_stats(mean, var, N * G)
    sc = _cols(bn, unit(), ch)
    _normalize_cols(c, &sc, N, C, G, Cg, mean, var, C)
    return True


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *, out=None,
               activation=None):
    return gn_call(input, num_groups, weight, bias, eps, out, None, activation)


cdef object gn_call(object input, object num_groups, object weight, object bias, object eps,
                    object out, object stats, object activation):
    """group_norm, with stats (None, or float64 (2, N * num_groups))."""
    cdef _Call c = _start("group_norm", input, True)
    c.stats = stats
    c.act = check_activation(activation, c.fn)
    if isinstance(num_groups, (bool, np.bool_)) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"{c.fn}: num_groups must be an int, got {type(num_groups).__name__}")
    cdef Py_ssize_t C = c.x.shape[1]
    if num_groups <= 0:
        raise ValueError(f"{c.fn}: num_groups must be positive, got {num_groups}")
    if C % num_groups != 0:
        raise ValueError(f"Expected number of channels in input to be divisible by num_groups, "
                         f"but got input of shape {(<object>c.x).shape} and num_groups={num_groups}")
    verify_batch_size((c.x.shape[0] * C // num_groups, num_groups) + (<object>c.x).shape[2:])
    c.num = num_groups
    c.eps = check_eps(eps, c.fn)
    c.affine(weight, bias, (C,))
    return _run(c, out, _gn)


# --------------------------------------------------------------------------------------------
# layer norm and rms norm

cdef bint _ln(_Call c) except -1:
    """LayerNorm (or RMSNorm, c.rms: no centring, x / sqrt(mean(x^2) + eps)): per row over the
    trailing c.num axes; weight/bias elementwise over them."""
    cdef cnp.ndarray x = c.x, y = c.y
    cdef int nd = x.ndim, nk = c.num
    cdef Ax am[64]
    cdef Ax ak[64]
    cdef int km = axes(x, y, 0, nd - nk, am, False)
    cdef int kk = axes(x, y, nd - nk, nd, ak, False)
    if km > 2 or kk > 1:
        return False
    pad_front(am, km, 2)
    pad_front(ak, kk, 1)
    if _ln_by_columns(c, am, ak):
        return True
    cdef fn_row_job j = _row_job(c, _rows(am[0], am[1], unit(), ak[0]), False, c.stat(0),
                                 c.stat(1), 0, 0, c.w is not None)
    _normalize_rows(c, &j)
    return True


cdef bint _ln_by_columns(_Call c, Ax* am, Ax* ak) except -1:
    """LayerNorm whose normalized axis lies outside a contiguous batch axis (x.transpose(0, 2,
    1) normalized over its last axis) by the column kernels: statistics per column (batch
    element) down the normalized axis, then the weight and bias per row. As strided rows it
    took 1.8x torch's time ((64, 128, 768) transposed: 11.7 ms); by columns it reads memory in
    order. RMSNorm takes the mean of squares as var + mean^2, where both are finite (a column
    with inf or NaN goes back to strided rows, which give RMSNorm's own inf semantics). The
    16-bit types apply the row's weight and bias in the column pass's float buffer (rounded
    once; float16 (64, 128, 768) transposed: 9.6 ms as strided rows). False (not done)
    elsewhere, and for calls that keep statistics for a backward pass."""
    if (c.stats is not None or am[1].n < 16 or am[1].sx != 1 or am[1].sy != 1 or ak[0].n < 2
            or iabs(ak[0].sx) < am[1].n or iabs(ak[0].sy) < am[1].n):
        return False
    cdef fn_cols sc = _cols(am[0], ak[0], am[1])
    cdef int64_t P = am[0].n * am[1].n, i
    cdef _Scratch s = _Scratch(8 * 2 * P)
    cdef double* mean = <double*>s.p
    cdef double* var = mean + P
    _col_moments(c, &sc, mean, var)
    for i in range(P):
        var[i] /= ak[0].n
        if c.rms:
            if not (isfinite(mean[i]) and isfinite(var[i])):
                return False
            var[i] += mean[i] * mean[i]
            mean[i] = 0.0
    _normalize_cols(c, &sc, am[0].n, am[1].n, am[1].n, 1, mean, var, am[1].n, True)
    return True


cdef dict _constants = {}  # (value, shape, dtype) -> a read-only array of it


cdef object _constant(int value, tuple shape, object dtype):
    """A read-only array of `value` (the missing half of an elementwise affine), made once per
    shape: an RMSNorm decode call would otherwise spend a third of its time making zeros."""
    key = (value, shape, (<cnp.dtype>dtype).type_num)  # an int hashes faster than a dtype
    a = _constants.get(key)
    if a is None:
        if len(_constants) >= 64:  # bounded: a process that sees many shapes keeps few
            _constants.clear()
        a = np.full(shape, value, dtype=dtype)
        a.flags.writeable = False
        _constants[key] = a
    return a


cdef int _ln_setup(_Call c, object normalized_shape, object weight, object bias, object eps,
                   bint rms, object activation) except -1:
    """The checks and arguments of layer_norm / rms_norm (and their add_ forms) on c.x."""
    cdef tuple ns = check_normalized_shape(normalized_shape, c.fn)
    cdef int nk = len(ns)
    cdef cnp.ndarray x = c.x
    if x.ndim < nk or not has_shape(x, ns, x.ndim - nk):
        raise ValueError(f"Given normalized_shape={list(ns)}, expected input with shape "
                         f"[*, {', '.join(map(str, ns))}], but got input of size{list((<object>x).shape)}")
    c.num = nk
    c.rms = rms
    c.eps = (rms_eps(<object>cnp.PyArray_DESCR(x)) if (rms and eps is None)
             else check_eps(eps, c.fn))
    c.act = check_activation(activation, c.fn)
    c.affine(weight, bias, ns)
    # the kernel's elementwise affine needs a weight (a bias alone gets ones); no bias is NULL
    if c.b is not None and c.w is None:
        c.w = _constant(1, ns, c.b.dtype)
    return 0


cdef object ln_call(str fn, object input, object normalized_shape, object weight, object bias,
                    object eps, object out, bint rms, object activation, object stats):
    """layer_norm (rms_norm: rms), with stats (None, or float64 (2, rows))."""
    cdef _Call c = _start(fn, input, False)
    c.stats = stats
    _ln_setup(c, normalized_shape, weight, bias, eps, rms, activation)
    return _run(c, out, _ln)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, out=None,
               activation=None):
    return ln_call("layer_norm", input, normalized_shape, weight, bias, eps, out, False,
                   activation, None)


def rms_norm(input, normalized_shape, weight=None, eps=None, *, out=None, activation=None):
    return ln_call("rms_norm", input, normalized_shape, weight, None, eps, out, True, activation,
                   None)


# --------------------------------------------------------------------------------------------
# residual add, then layer norm or rms norm

cdef int _axes4(tuple arrs, int start, int stop, int64_t* n, int64_t* st) except -1:
    """Axes start..stop-1 of the four same-shape arrays in arrs (x, y, residual, sum) as sizes
    n[k] and element strides st[4 * k + a], size-1 axes dropped and neighbours merged where they
    tile in all four (axis order kept: rows are matched across the arrays). Returns the count."""
    cdef int i, a, m = 0
    cdef bint tiles
    cdef cnp.ndarray x = <cnp.ndarray>arrs[0]
    cdef int64_t isz = cnp.PyArray_ITEMSIZE(x)
    for i in range(start, stop):
        if x.shape[i] == 1:
            continue
        n[m] = x.shape[i]
        for a in range(4):
            st[4 * m + a] = cnp.PyArray_STRIDES(<cnp.ndarray>arrs[a])[i] // isz
        tiles = m > 0
        for a in range(4):
            tiles = tiles and st[4 * (m - 1) + a] == st[4 * m + a] * n[m]
        if tiles:
            n[m - 1] *= n[m]
            for a in range(4):
                st[4 * (m - 1) + a] = st[4 * m + a]
        else:
            m += 1
    return m


cdef bint _add(_Call c) except -1:
    """add_normalize_rows of x + r -> s (None: no sum kept) -> y: rows over the trailing c.num
    axes. False when the arrays cannot be described without a copy."""
    cdef fn_add_job job
    cdef fn_add_job* j = &job
    cdef cnp.ndarray x = c.x, r = c.r, s = c.s
    cdef int64_t n[64]
    cdef int64_t st[256]
    cdef int nd = x.ndim, i, a, km, kk, o
    cdef tuple arrs = (x, c.y, r, c.y if s is None else s)
    km = _axes4(arrs, 0, nd - c.num, n, st)
    kk = _axes4(arrs, nd - c.num, nd, n + km, st + 4 * km)
    if km > 2 or kk > 1:
        return False
    j.norm = _row_job(c, _rows(unit(), unit(), unit(), unit()), False, NULL, NULL, 0, 0,
                      c.w is not None)
    cdef fn_rows* sh = &j.norm.shape
    cdef int64_t* dst[4]
    dst[0], dst[1], dst[2], dst[3] = sh.xs, sh.ys, j.rs, j.ss
    sh.outer = n[0] if km == 2 else 1
    sh.groups = n[km - 1] if km >= 1 else 1
    sh.row_len = n[km] if kk == 1 else 1
    for a in range(4):
        dst[a][0] = st[a] if km == 2 else 0             # outer
        dst[a][1] = st[4 * (km - 1) + a] if km >= 1 else 0  # groups
        dst[a][2] = 0                                   # one row per group
        dst[a][3] = st[4 * km + a] if kk == 1 else 0     # along the row
    j.residual = cnp.PyArray_DATA(r)
    j.sum = NULL if s is None else cnp.PyArray_DATA(s)
    cdef int rc, nt = threads()
    cdef PyThreadState* ts
    cdef const void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(c.y)
    ts = _unlock(c)
    rc = c.k.add_normalize_rows(xp, yp, j, nt)
    _relock(ts)
    _check_rc(rc)
    return True


cdef bint _shares(object a, object b):
    """Whether a and b share an element (interleaved views do not); too hard to tell: yes."""
    try:
        return np.shares_memory(a, b, max_work=1 << 20)
    except np.exceptions.TooHardError:
        return True


cdef int _prepare_sum(_Call c, object out, object sum_out) except -1:
    """c.s and c.s_final for sum_out (None: no sum kept), and the rules of their aliasing."""
    c.s, c.s_final = None, None
    if sum_out is None:
        return 0
    c.s, c.s_final = prepare_out(sum_out, c.x, c.fn, "sum_out")
    if (out is not None and isinstance(out, np.ndarray)
            and may_overlap(<cnp.ndarray>out, c.s_final) and _shares(out, c.s_final)):
        raise ValueError(f"{c.fn}: out and sum_out must not share memory")
    # the kernel reads r[i] before it writes s[i]: s may be r itself, not a shifted view
    if c.s is c.s_final and may_overlap(c.s, c.r) and not same_view(c.s, c.r):
        c.s = empty_like(c.x)
    return 0


cdef object _add_call(str fn, object input, object residual, object normalized_shape,
                      object weight, object bias, object eps, object out, object sum_out,
                      bint rms, object activation):
    cdef _Call c = _start(fn, input, False)
    c.r = as_input(residual, fn)
    if (<object>c.r).shape != (<object>c.x).shape:
        raise ValueError(f"{fn}: residual must have the input's shape {(<object>c.x).shape}, "
                         f"got {(<object>c.r).shape}")
    if c.r.dtype != c.x.dtype:
        raise TypeError(f"{fn}: residual must have the input's dtype {c.x.dtype}, got "
                        f"{c.r.dtype}")
    _ln_setup(c, normalized_shape, weight, bias, eps, rms, activation)
    return _run(c, out, _add, sum_out)


def add_layer_norm(input, residual, normalized_shape, weight=None, bias=None, eps=1e-5, *,
                   out=None, sum_out=None, activation=None):
    return _add_call("add_layer_norm", input, residual, normalized_shape, weight, bias, eps, out,
                     sum_out, False, activation)


def add_rms_norm(input, residual, normalized_shape, weight=None, eps=None, *, out=None,
                 sum_out=None, activation=None):
    return _add_call("add_rms_norm", input, residual, normalized_shape, weight, None, eps, out,
                     sum_out, True, activation)
