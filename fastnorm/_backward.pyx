# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Backward passes: the adapter between fastnorm.functional's ``native_*`` functions and the
backward kernels of src_c/fn_backward_impl.h (table entries grad_*, see fastnorm.h).

A backward pass is planned in the forward's layout (the same stride merging, ``fastnorm._layout``,
applied to (x, dy) and to (x, dx): when both merge alike the kernels run in place, otherwise on
C-order copies). Per *entry* (a row of the row layout, a column of the column layout) one kernel
pass over (x, dy) gives sum(dy) and sum(dy * (x - mean)) in double; these are combined in index
order (so results do not depend on the thread count) into the per-group terms of the gradient
and per-entry coefficients, and a second, elementwise kernel pass writes

    dx = a * dy + b * (x - mean) + c.

The row layout of BatchNorm / InstanceNorm / GroupNorm runs all of it in one kernel call
(grad_rows: a group that fits in cache is read from memory once); the column layout (channels
last) and SwitchNorm combine here, between the sums and the dx pass (grad_sums_* / grad_apply_*).
Parameter gradients are summed here from the per-entry sums, in entry order.

For BatchNorm / InstanceNorm / GroupNorm with statistics m, r = rstd over the M elements of a
group, per-channel weight w, A = sum(w dy), B = sum(w dy (x - m)):

    dx = r w dy - r A / M - r^3 B (x - m) / M,   dweight = sum(dy r (x - m)),  dbias = sum(dy)

(statistics held constant, eval-mode BatchNorm: dx = r w dy, written in the same pass as the
sums: grad_rows' eval branch, grad_eval_cols). LayerNorm / RMSNorm run one kernel
(grad_layer) that sums each row, then writes its dx while the row is in cache.
"""
import numbers

import numpy as np

cimport numpy as cnp
from libc.math cimport sqrt
from libc.string cimport memset
from libc.stdint cimport int64_t

from fastnorm._checks cimport (as_input, as_nc_input, check_flag, check_normalized_shape,
                               empty_like, param, prod, rms_eps)
from fastnorm._kernels cimport (_check_rc, _rows, _table, bn_call, fn_cols, fn_grad_col_job,
                                fn_grad_layer_job, fn_grad_row_job, fn_kernel_table, fn_rows,
                                gn_call, in_call, ln_call)
from fastnorm._layout cimport Ax, axis, compact, iabs, pad_front, scaled, unit
from fastnorm._runtime cimport enter, leave, threads


cnp.import_array()

cdef enum:
    _COPY = 0  # the layout needs C-order copies
    _ROWS = 1
    _COLS = 2

cdef enum:
    K_BN = 0  # one group per channel, over N and the spatial axes
    K_NC = 1  # one group per (n, c), over the spatial axes (InstanceNorm, SwitchNorm)
    K_GN = 2  # one group per (n, g), over the group's channels and the spatial axes


cdef inline int _counted_threads() noexcept:
    """Count the kernel about to run as a call in progress (leave() right after it), then its
    threads: its share of the limit among the calls in progress, as every forward op's
    (fastnorm._runtime): concurrent backward calls from Python threads do not oversubscribe."""
    enter()
    return threads()


cdef inline double* _dp(object a):
    return <double*>cnp.PyArray_DATA(<cnp.ndarray>a)


# --------------------------------------------------------------------------------------------
# argument checks

def check_mask(object output_mask, int n, str fn):
    """output_mask as a tuple of n bools (bools or integers: 0 / 1, as torch's bool[n])."""
    try:
        if isinstance(output_mask, (str, bytes)):
            raise TypeError
        entries = tuple(output_mask)
        for v in entries:
            if not isinstance(v, (bool, np.bool_, numbers.Integral)):
                raise TypeError
        m = tuple([bool(v) for v in entries])
    except TypeError:
        raise TypeError(f"{fn}: output_mask must be a sequence of {n} bools, got "
                        f"{output_mask!r}") from None
    if len(m) != n:
        raise ValueError(f"{fn}: output_mask must have {n} entries, got {len(m)}")
    return m


cdef cnp.ndarray _grad_out(object grad_out, cnp.ndarray x, str fn):
    """grad_out: the input's shape and dtype."""
    cdef cnp.ndarray g = as_input(grad_out, fn)
    if (<object>g).shape != (<object>x).shape:
        raise ValueError(f"{fn}: expected grad_out of the input's shape {(<object>x).shape}, "
                         f"got shape {(<object>g).shape}")
    if g.dtype != x.dtype:
        raise TypeError(f"{fn}: expected grad_out of the input's dtype {x.dtype}, got {g.dtype}")
    return g


cdef inline bint _plain_vec(object a, int64_t n):
    """a is a native, aligned, C-contiguous float32 / float64 ndarray of n elements."""
    if type(a) is not cnp.ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int t = cnp.PyArray_TYPE(arr)
    return ((t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE) and cnp.PyArray_SIZE(arr) == n
            and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISNOTSWAPPED(arr)
            and cnp.PyArray_ISALIGNED(arr))


cdef inline double _at(cnp.ndarray a, int64_t i) noexcept:
    """Element i of a _plain_vec array as a double."""
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT:
        return (<float*>cnp.PyArray_DATA(a))[i]
    return (<double*>cnp.PyArray_DATA(a))[i]


cdef cnp.ndarray _vec64(object a, int64_t n):
    """A _plain_vec array as float64 (C-order, shape (n,)), without NumPy's call overhead: the
    per-call path of small backward passes."""
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) == cnp.NPY_DOUBLE and cnp.PyArray_NDIM(arr) == 1:
        return arr
    cdef cnp.npy_intp dim = n
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_DOUBLE, 0)
    cdef double* o = <double*>cnp.PyArray_DATA(out)
    cdef int64_t i
    for i in range(n):
        o[i] = _at(arr, i)
    return out


cpdef cnp.ndarray stat(object a, str name, str fn, tuple shape):
    """A saved statistic as C-contiguous float64 of `shape` (any shape with as many elements:
    torch's saved statistics keep size-1 axes)."""
    if a is None:
        raise ValueError(f"{fn}: {name} is required")
    cdef cnp.ndarray arr = param(a, name, fn, cnp.NPY_DOUBLE, (prod(shape, 0),), True)
    return arr.reshape(shape)


cdef object _weight64(object w, str fn, int64_t C):
    if w is None:
        return None
    if _plain_vec(w, C) and cnp.PyArray_NDIM(<cnp.ndarray>w) == 1:
        return _vec64(w, C)
    return param(w, "weight", fn, cnp.NPY_DOUBLE, (C,), True)


cdef int _ptype(cnp.ndarray x):
    return cnp.NPY_FLOAT if _table(x).param_itemsize == 4 else cnp.NPY_DOUBLE


# --------------------------------------------------------------------------------------------
# planning: the forward's layouts, for x, dy and dx together

cdef int _axes3(cnp.ndarray x, cnp.ndarray dy, object dx, int start, int stop, Ax* a, Ax* d,
                bint sort, int drop=-1):
    """Axes start..stop-1 (except `drop`) of (x, dy) into a and of (x, dx) into d (d's sy: dx's
    strides), compacted alike; -1 when x, dy and dx do not merge the same way."""
    cdef int i, k = 0, kd
    cdef cnp.ndarray dxa = x if dx is None else <cnp.ndarray>dx
    for i in range(start, stop):
        if i != drop:
            a[k] = axis(x, dy, i)
            d[k] = axis(x, dxa, i)
            k += 1
    kd = compact(d, k, sort)
    k = compact(a, k, sort)
    if k != kd:
        return -1
    for i in range(k):
        if a[i].n != d[i].n or a[i].sx != d[i].sx:
            return -1
    return k


cdef class _Job:
    """A planned backward pass over x, dy (and dx): its layout, entries and their groups."""
    cdef cnp.ndarray x, dy, dx
    cdef const fn_kernel_table* k
    cdef int mode
    cdef fn_grad_row_job rj
    cdef fn_grad_col_job cj
    cdef int64_t E                     # entries
    cdef int64_t Q, P2, gstep, rstep   # rows: entry e -> group e // Q, channel
                                       #   (group % P2) * gstep + (e % Q) * rstep
    cdef int64_t C, ostep, cpg         # cols: entry e = (o, c) -> group o * ostep + c // cpg
    cdef object scratch

    cdef inline int64_t group(self, int64_t e) noexcept:
        if self.mode == _ROWS:
            return e // self.Q
        return (e // self.C) * self.ostep + (e % self.C) // self.cpg

    cdef inline int64_t channel(self, int64_t e) noexcept:
        if self.mode == _ROWS:
            return ((e // self.Q) % self.P2) * self.gstep + (e % self.Q) * self.rstep
        return e % self.C

    cdef void index(self, int64_t* gi, int64_t* ci) noexcept:
        """gi[e] = group(e), ci[e] = channel(e) for every entry, without a division per entry."""
        cdef int64_t e = 0, a, b, k, cg, base
        if self.mode == _ROWS:
            for a in range(self.E // self.Q):
                base = (a % self.P2) * self.gstep
                for b in range(self.Q):
                    gi[e] = a
                    ci[e] = base + b * self.rstep
                    e += 1
            return
        for a in range(self.E // self.C):
            cg, k = a * self.ostep, 0
            for b in range(self.C):
                gi[e] = cg
                ci[e] = b
                e += 1
                k += 1
                if k == self.cpg:
                    k = 0
                    cg += 1

    cdef int rows(self, Ax o, Ax g, Ax q, Ax l, Ax do, Ax dg, Ax dq, Ax dl, int64_t P2,
                  int64_t gstep, int64_t rstep) except -1:
        self.mode = _ROWS
        self.rj.shape = _rows(o, g, q, l)
        self.rj.dxs[0], self.rj.dxs[1], self.rj.dxs[2], self.rj.dxs[3] = do.sy, dg.sy, dq.sy, dl.sy
        self.E = o.n * g.n * q.n
        self.Q, self.P2, self.gstep, self.rstep = q.n, P2, gstep, rstep
        return 0

    cdef int cols(self, Ax o, Ax r, Ax c, Ax do, Ax dr, Ax dc, int64_t ostep,
                  int64_t cpg) except -1:
        self.mode = _COLS
        cdef fn_cols s
        s.outer, s.rows, s.cols = o.n, r.n, c.n
        s.xs[0], s.xs[1], s.xs[2] = o.sx, r.sx, c.sx
        s.ys[0], s.ys[1], s.ys[2] = o.sy, r.sy, c.sy
        self.cj.shape = s
        self.cj.dxs[0], self.cj.dxs[1], self.cj.dxs[2] = do.sy, dr.sy, dc.sy
        self.E = o.n * c.n
        self.C, self.ostep, self.cpg = c.n, ostep, cpg
        return 0

    cdef int plan(self, int kind, int64_t G) except -1:
        """The forward's plan for op `kind` (G: GroupNorm's groups); mode _COPY when the layout
        cannot be described."""
        cdef cnp.ndarray x = self.x, dy = self.dy
        cdef object dx = self.dx
        cdef cnp.ndarray dxa = x if dx is None else <cnp.ndarray>dx
        cdef Ax a[64]
        cdef Ax d[64]
        cdef int k
        cdef Ax bn = axis(x, dy, 0), dbn = axis(x, dxa, 0)
        cdef Ax ch = axis(x, dy, 1), dch = axis(x, dxa, 1)
        cdef int64_t C = x.shape[1]
        self.mode = _COPY
        if kind == K_BN:  # as _kernels._bn
            k = _axes3(x, dy, dx, 0, x.ndim, a, d, True, 1)
            if k < 0 or k > 2:
                return 0
            if k == 0 or iabs(ch.sx) < iabs(a[k - 1].sx):
                pad_front(a, k, 2)
                pad_front(d, k, 2)
                return self.cols(a[0], a[1], ch, d[0], d[1], dch, 0, 1)
            pad_front(a, k, 2)
            pad_front(d, k, 2)
            return self.rows(unit(), ch, a[0], a[1], unit(), dch, d[0], d[1], C, 1, 0)
        k = _axes3(x, dy, dx, 2, x.ndim, a, d, True)
        if kind == K_NC:  # as _kernels._plan_nc
            if k < 0 or k > 2:
                return 0
            if k == 1 and iabs(ch.sx) < iabs(a[0].sx):
                return self.cols(bn, a[0], ch, dbn, d[0], dch, C, 1)
            pad_front(a, k, 2)
            pad_front(d, k, 2)
            return self.rows(bn, ch, a[0], a[1], dbn, dch, d[0], d[1], C, 1, 0)
        # K_GN, as _kernels._gn
        if k < 0 or k > 1:
            return 0
        cdef int64_t Cg = C // G
        if k == 1 and iabs(ch.sx) > iabs(a[0].sx):
            return self.rows(bn, scaled(ch, G, Cg), scaled(ch, Cg, 1), a[0], dbn,
                             scaled(dch, G, Cg), scaled(dch, Cg, 1), d[0], G, Cg, 1)
        if k == 0:
            a[0] = unit()
            d[0] = unit()
        return self.cols(bn, a[0], ch, dbn, d[0], dch, G, Cg)

    cdef int sums(self, const double* centre, double* s1, double* s2) except -1:
        """Per entry: s1 = sum(dy), s2 = sum(dy * (x - centre[entry]))."""
        cdef int rc, nt = _counted_threads()
        cdef const void* xp = cnp.PyArray_DATA(self.x)
        cdef const void* dp = cnp.PyArray_DATA(self.dy)
        if self.mode == _ROWS:
            self.rj.e.centre, self.rj.e.sum_dy, self.rj.e.sum_dyxc = centre, s1, s2
            with nogil:
                rc = self.k.grad_sums_rows(xp, dp, &self.rj, nt)
        else:
            self.cj.e.centre, self.cj.e.sum_dy, self.cj.e.sum_dyxc = centre, s1, s2
            with nogil:
                rc = self.k.grad_sums_cols(xp, dp, &self.cj, nt)
        leave()
        return _check_rc(rc)

    cdef int eval_cols(self, const double* centre, const double* a, double* s1,
                       double* s2) except -1:
        """Column layout, statistics held constant: the sums (as sums) and dx = a * dy in one
        pass."""
        cdef int rc, nt = _counted_threads()
        cdef const void* xp = cnp.PyArray_DATA(self.x)
        cdef const void* dp = cnp.PyArray_DATA(self.dy)
        cdef void* op = cnp.PyArray_DATA(self.dx)
        self.cj.e.centre, self.cj.e.sum_dy, self.cj.e.sum_dyxc = centre, s1, s2
        self.cj.e.a, self.cj.e.b, self.cj.e.c = a, NULL, NULL
        with nogil:
            rc = self.k.grad_eval_cols(xp, dp, op, &self.cj, nt)
        leave()
        return _check_rc(rc)

    cdef int cols_backward(self, const double* mean, const double* rstd, const double* weight,
                           double* s1, double* s2) except -1:
        """The train-mode backward of a column layout whose entries are each their own group
        (grad_cols): per-entry sums into s1, s2 and dx."""
        cdef int rc, nt = _counted_threads()
        cdef const void* xp = cnp.PyArray_DATA(self.x)
        cdef const void* dp = cnp.PyArray_DATA(self.dy)
        cdef void* op = cnp.PyArray_DATA(self.dx)
        self.cj.e.sum_dy, self.cj.e.sum_dyxc = s1, s2
        self.cj.mean, self.cj.rstd, self.cj.weight = mean, rstd, weight
        with nogil:
            rc = self.k.grad_cols(xp, dp, op, &self.cj, nt)
        leave()
        return _check_rc(rc)

    cdef int rows_backward(self, const double* mean, const double* rstd, const double* weight,
                           bint train, double* s1, double* s2) except -1:
        """The row layout's whole backward (grad_rows): per-entry sums into s1, s2 and dx."""
        cdef int rc, nt = _counted_threads()
        cdef const void* xp = cnp.PyArray_DATA(self.x)
        cdef const void* dp = cnp.PyArray_DATA(self.dy)
        cdef void* op = NULL if self.dx is None else cnp.PyArray_DATA(self.dx)
        self.rj.e.sum_dy, self.rj.e.sum_dyxc = s1, s2
        self.rj.mean, self.rj.rstd, self.rj.weight = mean, rstd, weight
        self.rj.group_step, self.rj.row_step, self.rj.train = self.gstep, self.rstep, train
        with nogil:
            rc = self.k.grad_rows(xp, dp, op, &self.rj, nt)
        leave()
        return _check_rc(rc)

    cdef int apply(self, const double* centre, const double* a, const double* b,
                   const double* c) except -1:
        """dx = a * dy + b * (x - centre) + c, per entry."""
        cdef int rc, nt = _counted_threads()
        cdef const void* xp = cnp.PyArray_DATA(self.x)
        cdef const void* dp = cnp.PyArray_DATA(self.dy)
        cdef void* op = cnp.PyArray_DATA(self.dx)
        if self.mode == _ROWS:
            self.rj.e.centre, self.rj.e.a, self.rj.e.b, self.rj.e.c = centre, a, b, c
            with nogil:
                rc = self.k.grad_apply_rows(xp, dp, op, &self.rj, nt)
        else:
            self.cj.e.centre, self.cj.e.a, self.cj.e.b, self.cj.e.c = centre, a, b, c
            with nogil:
                rc = self.k.grad_apply_cols(xp, dp, op, &self.cj, nt)
        leave()
        return _check_rc(rc)


cdef _Job _plan(cnp.ndarray x, cnp.ndarray dy, bint want_dx, int kind, int64_t G):
    """Plan the pass (on C-order copies when the layout needs them)."""
    cdef _Job j = _Job.__new__(_Job)
    j.k = _table(x)
    j.x, j.dy = x, dy
    j.dx = empty_like(x) if want_dx else None
    j.plan(kind, G)
    if j.mode == _COPY:
        j.x = np.ascontiguousarray(x)
        j.dy = np.ascontiguousarray(dy)
        j.dx = empty_like(j.x) if want_dx else None
        j.plan(kind, G)  # C order always plans
    return j


cdef tuple _backward_groups(cnp.ndarray x, cnp.ndarray dy, int kind, int64_t G,
                            cnp.ndarray mean, cnp.ndarray rstd, object w, bint train,
                            tuple mask, object pdt):
    """The backward of BatchNorm (K_BN), InstanceNorm (K_NC) and GroupNorm (K_GN) with per-group
    mean and rstd (float64) and per-channel weight (float64 or None). Returns dx (input dtype)
    and dweight, dbias (dtype pdt, per channel), each None when not asked."""
    cdef bint want_dx = mask[0], want_dw = mask[1], want_db = mask[2]
    cdef int64_t C = x.shape[1], NG = mean.size
    if x.size == 0:
        dx = empty_like(x) if want_dx else None
        return (dx, np.zeros(C, pdt) if want_dw else None, np.zeros(C, pdt) if want_db else None)
    cdef _Job j = _plan(x, dy, want_dx, kind, G)
    cdef int64_t e, gi, ci, E = j.E
    cdef double M = <double>(x.size // NG)
    cdef double wv, r
    cdef const double* mp = _dp(mean)
    cdef const double* rp = _dp(rstd)
    cdef const double* wp = NULL if w is None else _dp(w)
    cdef bint need_sums = (train and want_dx) or want_dw or want_db
    cdef bint want_pg = want_dw or want_db
    cdef int64_t nbuf = 6 * E + 2 * NG + (2 * C if want_pg else 0)
    buf = np.empty(nbuf)  # zeroed below where it accumulates or is read unwritten
    ix = np.empty(2 * E, dtype=np.int64)
    cdef int64_t* gix = <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>ix)
    cdef int64_t* cix = gix + E
    j.index(gix, cix)
    cdef double* centre = _dp(buf)
    cdef double* s1 = centre + E
    cdef double* s2 = s1 + E
    cdef double* ca = s2 + E
    cdef double* cb = ca + E
    cdef double* cc = cb + E
    cdef double* A = cc + E
    cdef double* B = A + NG
    cdef bint rows = j.mode == _ROWS
    cdef bint dx_done = False
    # the column layout with one entry per group (BatchNorm over contiguous channels,
    # channels-last InstanceNorm): sums, coefficients and dx in one kernel call
    cdef bint own = (not rows and train and want_dx and j.cpg == 1
                     and (j.ostep == j.C or j.E == j.C))
    cdef double* zero_from = (B + NG) if own else (A if train else cb)  # A, B, dweight, dbias
    memset(zero_from, 0, (centre + nbuf - zero_from) * sizeof(double))  # (eval: cb, cc too)
    if rows and (need_sums or want_dx):  # sums, combine and dx in one kernel call
        j.rows_backward(mp, rp, wp, train, s1, s2)
    elif own:
        j.cols_backward(mp, rp, wp, s1, s2)
        dx_done = True
    else:
        for e in range(E):
            centre[e] = mp[gix[e]]
        if need_sums and want_dx and not train:  # dx = r w dy needs no sums: one pass
            for e in range(E):
                ca[e] = rp[gix[e]] * (1.0 if wp == NULL else wp[cix[e]])
            j.eval_cols(centre, ca, s1, s2)
            dx_done = True
        elif need_sums:
            j.sums(centre, s1, s2)
    cdef double* pgp = B + NG  # dweight, dbias (float64) at the end of buf
    cdef double* dwp = pgp if want_dw else NULL
    cdef double* dbp = pgp + C if want_db else NULL
    for e in range(E):  # in entry order: the same sums for any thread count
        gi = gix[e]
        ci = cix[e]
        wv = 1.0 if wp == NULL else wp[ci]
        if train and not rows and not own:
            A[gi] += wv * s1[e]
            B[gi] += wv * s2[e]
        if dwp != NULL:
            dwp[ci] += rp[gi] * s2[e]
        if dbp != NULL:
            dbp[ci] += s1[e]
    if want_dx and not rows and not dx_done:
        for e in range(E):
            gi = gix[e]
            r = rp[gi]
            ca[e] = r * (1.0 if wp == NULL else wp[cix[e]])
            if train:
                cb[e] = -r * r * r * B[gi] / M
                cc[e] = -r * A[gi] / M
        j.apply(centre, ca, cb, cc)
    if not want_pg:
        return j.dx, None, None
    # the parameter gradients in their dtype (float32 / float64: a loop, no astype)
    cdef cnp.npy_intp dims[2]
    dims[0], dims[1] = 2, C
    cdef int pt = pdt.num
    cdef cnp.ndarray out
    cdef double* g = pgp
    cdef float* of
    cdef double* od
    if pt == cnp.NPY_FLOAT or (pt == cnp.NPY_DOUBLE and pdt.isnative):
        out = cnp.PyArray_EMPTY(2, dims, pt, 0)
        if pt == cnp.NPY_FLOAT:
            of = <float*>cnp.PyArray_DATA(out)
            for e in range(2 * C):
                of[e] = <float>g[e]
        else:
            od = <double*>cnp.PyArray_DATA(out)
            for e in range(2 * C):
                od[e] = g[e]
    else:
        out = buf[6 * E + 2 * NG:].reshape(2, C).astype(pdt)
    return j.dx, (out[0] if want_dw else None), (out[1] if want_db else None)


cdef object _dtype_of(object a):
    """a's dtype (np.asarray's for what is not an ndarray)."""
    if isinstance(a, cnp.ndarray):
        return (<cnp.ndarray>a).dtype
    return np.asarray(a).dtype


# --------------------------------------------------------------------------------------------
# BatchNorm

def native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps):
    x = input if isinstance(input, np.ndarray) else np.asarray(input)
    C = x.shape[1] if x.ndim >= 2 else 0
    if not check_flag(training, "training", "native_batch_norm"):
        y = bn_call(x, running_mean, running_var, weight, bias, False, momentum, eps, None, None,
                    None)
        return y, np.empty(0), np.empty(0)
    stats = np.full((2, C), np.nan)
    y = bn_call(x, running_mean, running_var, weight, bias, True, momentum, eps, None, stats,
                None)
    return y, stats[0], 1.0 / np.sqrt(stats[1] + eps)


cdef tuple _stats_or_running(str fn, bint train, object save_mean, object save_invstd,
                             object running_mean, object running_var, double eps, tuple shape,
                             int64_t C):
    """(mean, rstd) per group: the saved batch statistics in training, else the running ones
    (per channel, broadcast to `shape`)."""
    if train:
        return (stat(save_mean, "save_mean", fn, shape), stat(save_invstd, "save_invstd", fn, shape))
    cdef cnp.npy_intp dim = C
    cdef cnp.ndarray rstd = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_DOUBLE, 0)
    cdef double* p = _dp(rstd)
    cdef int64_t i
    cdef cnp.ndarray rv
    if _plain_vec(running_mean, C) and _plain_vec(running_var, C):  # no NumPy calls
        rm = _vec64(running_mean, C)
        rv = <cnp.ndarray>running_var
        for i in range(C):
            p[i] = 1.0 / sqrt(_at(rv, i) + eps)
        return rm, rstd
    rm = stat(running_mean, "running_mean", fn, (C,))
    rv = stat(running_var, "running_var", fn, (C,))
    cdef const double* v = _dp(rv)
    for i in range(C):  # a loop: no NumPy temporaries on this per-call path
        p[i] = 1.0 / sqrt(v[i] + eps)
    return rm, rstd


cdef tuple _bn_like_backward(str fn, object grad_out, object input, object weight,
                             object running_mean, object running_var, object save_mean,
                             object save_invstd, bint train, object eps, object output_mask,
                             bint per_instance):
    """BatchNorm's backward, or InstanceNorm's (per_instance: statistics per (n, c) in
    training; the running ones, per channel, in eval)."""
    cdef cnp.ndarray x = as_nc_input(input, fn)
    cdef cnp.ndarray dy = _grad_out(grad_out, x, fn)
    mask = check_mask(output_mask, 3, fn)
    cdef int64_t C = x.shape[1]
    cdef tuple shape = ((<object>x).shape[:2] if per_instance else (C,))
    w = _weight64(weight, fn, C)
    mean, rstd = _stats_or_running(fn, train, save_mean, save_invstd, running_mean, running_var,
                                   float(eps), shape, C)
    pdt = x.dtype if weight is None else _dtype_of(weight)
    return _backward_groups(x, dy, K_NC if (per_instance and train) else K_BN, 1, mean, rstd, w,
                            train, mask, pdt)


def native_batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean,
                               save_invstd, train, eps, output_mask):
    fn = "native_batch_norm_backward"
    return _bn_like_backward(fn, grad_out, input, weight, running_mean, running_var, save_mean,
                             save_invstd, check_flag(train, "train", fn), eps, output_mask, False)


# --------------------------------------------------------------------------------------------
# InstanceNorm

def native_instance_norm(input, weight, bias, running_mean, running_var, use_input_stats,
                         momentum, eps):
    x = input if isinstance(input, np.ndarray) else np.asarray(input)
    if not check_flag(use_input_stats, "use_input_stats", "native_instance_norm"):
        y = in_call(x, running_mean, running_var, weight, bias, False, momentum, eps, None, None)
        return y, np.empty(0), np.empty(0)
    NC = (x.shape[0], x.shape[1]) if x.ndim >= 2 else (0, 0)
    stats = np.full((2, NC[0] * NC[1]), np.nan)
    y = in_call(x, running_mean, running_var, weight, bias, True, momentum, eps, None, stats)
    with np.errstate(divide="ignore"):  # eps = 0 and var = 0: invstd 0, as in_call takes it
        invstd = np.where(stats[1] + eps == 0, 0.0, 1.0 / np.sqrt(stats[1] + eps))
    return y, stats[0].reshape(NC), invstd.reshape(NC)


def native_instance_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean,
                                  save_invstd, use_input_stats, eps, output_mask):
    return _bn_like_backward("native_instance_norm_backward", grad_out, input, weight,
                             running_mean, running_var, save_mean, save_invstd,
                             check_flag(use_input_stats, "use_input_stats",
                                        "native_instance_norm_backward"), eps, output_mask, True)


# --------------------------------------------------------------------------------------------
# GroupNorm

cdef int _check_gn(cnp.ndarray x, object N, object C, object HxW, object group, str fn) except -1:
    shape = (<object>x).shape
    for name, v in (("N", N), ("C", C), ("HxW", HxW), ("group", group)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{fn}: {name} must be an int, got {type(v).__name__}")
    if shape[0] != N or shape[1] != C or prod(shape, 2) != HxW:
        raise ValueError(f"{fn}: expected input of shape (N, C, *) = ({N}, {C}, ...) with "
                         f"HxW = {HxW} spatial elements, got shape {shape}")
    if group <= 0 or C % group != 0:
        raise ValueError(f"{fn}: group must be positive and divide C = {C}, got {group}")
    return 0


def native_group_norm(input, weight, bias, N, C, HxW, group, eps):
    fn = "native_group_norm"
    cdef cnp.ndarray x = as_nc_input(input, fn)
    _check_gn(x, N, C, HxW, group, fn)
    stats = np.full((2, N * group), np.nan)
    y = gn_call(x, group, weight, bias, eps, None, stats, None)
    return y, stats[0].reshape(N, group), (1.0 / np.sqrt(stats[1] + eps)).reshape(N, group)


def native_group_norm_backward(grad_out, input, mean, rstd, weight, N, C, HxW, group,
                               output_mask):
    fn = "native_group_norm_backward"
    cdef cnp.ndarray x = as_nc_input(input, fn)
    _check_gn(x, N, C, HxW, group, fn)
    cdef cnp.ndarray dy = _grad_out(grad_out, x, fn)
    mask = check_mask(output_mask, 3, fn)
    w = _weight64(weight, fn, C)
    m = stat(mean, "mean", fn, (N, group))
    r = stat(rstd, "rstd", fn, (N, group))
    if weight is None:  # torch has no dweight without a weight (and no dbias without a bias)
        mask = (mask[0], False, False)
    pdt = x.dtype if weight is None else _dtype_of(weight)
    return _backward_groups(x, dy, K_GN, group, m, r, w, True, mask, pdt)


# --------------------------------------------------------------------------------------------
# LayerNorm and RMSNorm

cdef tuple _ln_shapes(cnp.ndarray x, object normalized_shape, str fn):
    """(normalized_shape, leading shape, shape of the saved statistics)."""
    ns = check_normalized_shape(normalized_shape, fn)  # the forward ops' check (no int())
    shape = (<object>x).shape
    k = len(ns)
    if k == 0 or x.ndim < k or tuple(shape[x.ndim - k:]) != ns:
        raise ValueError(f"{fn}: given normalized_shape={list(ns)}, expected input with shape "
                         f"[*, {', '.join(map(str, ns))}], but got input of size {list(shape)}")
    lead = tuple(shape[:x.ndim - k])
    return ns, lead, lead + (1,) * k


def native_layer_norm(input, normalized_shape, weight, bias, eps):
    fn = "native_layer_norm"
    cdef cnp.ndarray x = as_input(input, fn)
    ns, lead, sshape = _ln_shapes(x, normalized_shape, fn)
    stats = np.full((2, prod(lead, 0)), np.nan)
    y = ln_call("layer_norm", x, ns, weight, bias, eps, None, False, None, stats)
    return y, stats[0].reshape(sshape), (1.0 / np.sqrt(stats[1] + eps)).reshape(sshape)


def native_rms_norm(input, normalized_shape, weight, eps):
    fn = "native_rms_norm"
    cdef cnp.ndarray x = as_input(input, fn)
    ns, lead, sshape = _ln_shapes(x, normalized_shape, fn)
    stats = np.full((2, prod(lead, 0)), np.nan)
    y = ln_call("rms_norm", x, ns, weight, None, eps, None, True, None, stats)
    e = rms_eps(x.dtype) if eps is None else eps
    return y, (1.0 / np.sqrt(stats[1] + e)).reshape(sshape)


cdef tuple _layer_backward(str fn, object grad_out, object input, object normalized_shape,
                           object mean, object rstd, object weight, bint want_dx, bint want_dw,
                           bint want_db):
    cdef cnp.ndarray x = as_input(input, fn)
    cdef cnp.ndarray dy = _grad_out(grad_out, x, fn)
    ns, lead, sshape = _ln_shapes(x, normalized_shape, fn)
    cdef int64_t P = prod(lead, 0), L = prod(ns, 0)
    cdef int pt = _ptype(x)
    w = (np.ones(ns, dtype=cnp.PyArray_DescrFromType(pt)) if weight is None
         else param(weight, "weight", fn, pt, ns))
    m = None if mean is None else stat(mean, "mean", fn, (P,))
    r = stat(rstd, "rstd", fn, (P,))
    dx = empty_like(x) if want_dx else None
    dw = np.zeros(L) if want_dw else None
    db = np.zeros(L) if want_db else None
    if x.size == 0:
        return dx, dw, db
    cdef Ax am[64]
    cdef Ax dm[64]
    cdef Ax ak[64]
    cdef Ax dk[64]
    cdef int nd = x.ndim, nk = len(ns)
    cdef int km = _axes3(x, dy, dx, 0, nd - nk, am, dm, False)
    cdef int kk = _axes3(x, dy, dx, nd - nk, nd, ak, dk, False)
    if km < 0 or km > 2 or kk < 0 or kk > 1:
        x = np.ascontiguousarray(x)
        dy = np.ascontiguousarray(dy)
        dx = empty_like(x) if want_dx else None
        km = _axes3(x, dy, dx, 0, nd - nk, am, dm, False)
        kk = _axes3(x, dy, dx, nd - nk, nd, ak, dk, False)
    pad_front(am, km, 2)
    pad_front(dm, km, 2)
    pad_front(ak, kk, 1)
    pad_front(dk, kk, 1)
    cdef fn_grad_layer_job j
    j.shape = _rows(am[0], am[1], unit(), ak[0])
    j.dxs[0], j.dxs[1], j.dxs[2], j.dxs[3] = dm[0].sy, dm[1].sy, 0, dk[0].sy
    j.mean = NULL if m is None else _dp(m)
    j.rstd = _dp(r)
    j.weight = cnp.PyArray_DATA(<cnp.ndarray>w)
    j.dweight = NULL if dw is None else _dp(dw)
    j.dbias = NULL if db is None else _dp(db)
    cdef const fn_kernel_table* k = _table(x)
    cdef int rc, nt = _counted_threads()
    cdef const void* xp = cnp.PyArray_DATA(x)
    cdef const void* dp = cnp.PyArray_DATA(dy)
    cdef void* op = NULL if dx is None else cnp.PyArray_DATA(<cnp.ndarray>dx)
    with nogil:
        rc = k.grad_layer(xp, dp, op, &j, nt)
    leave()
    _check_rc(rc)
    return dx, (None if dw is None else dw.reshape(ns)), (None if db is None else db.reshape(ns))


def native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias,
                               output_mask):
    fn = "native_layer_norm_backward"
    mask = check_mask(output_mask, 3, fn)
    dx, dw, db = _layer_backward(fn, grad_out, input, normalized_shape, mean, rstd, weight,
                                 mask[0], mask[1] and weight is not None,
                                 mask[2] and bias is not None)
    return (dx, None if dw is None else dw.astype(np.asarray(weight).dtype, copy=False),
            None if db is None else db.astype(np.asarray(bias).dtype, copy=False))


def native_rms_norm_backward(grad_out, input, normalized_shape, rstd, weight, output_mask):
    fn = "native_rms_norm_backward"
    mask = check_mask(output_mask, 2, fn)
    dx, dw, _ = _layer_backward(fn, grad_out, input, normalized_shape, None, rstd, weight,
                                mask[0], mask[1] and weight is not None, False)
    return dx, None if dw is None else dw.astype(np.asarray(weight).dtype, copy=False)


# --------------------------------------------------------------------------------------------
# SwitchNorm: the per-(n, c) sums and the dx pass, for fastnorm.functional's chain rule

def nc_sums(x, dy, centre):
    """Per (n, c) of x (N, C, *): sum(dy) and sum(dy * (x - centre[n, c])), float64 (N, C)."""
    cdef cnp.ndarray xa = <cnp.ndarray>x, da = <cnp.ndarray>dy
    cdef int64_t N = xa.shape[0], C = xa.shape[1], e, E
    cdef _Job j = _plan(xa, da, False, K_NC, 1)
    cdef cnp.ndarray cen = np.ascontiguousarray(centre, dtype=np.float64).reshape(N * C)
    E = j.E
    ce = np.empty(3 * E)
    cdef double* cp = _dp(ce)
    for e in range(E):
        cp[e] = _dp(cen)[j.group(e)]
    j.sums(cp, cp + E, cp + 2 * E)
    # the entries of a group are consecutive (rows of one (n, c), or the column (n, c) itself)
    return ce[E:2 * E].reshape(N, C, -1).sum(axis=2), ce[2 * E:].reshape(N, C, -1).sum(axis=2)


def nc_apply(x, dy, centre, a, b, c):
    """dx = a * dy + b * (x - centre) + c with (N, C) float64 coefficients, for x (N, C, *)."""
    cdef cnp.ndarray xa = <cnp.ndarray>x, da = <cnp.ndarray>dy
    cdef _Job j = _plan(xa, da, True, K_NC, 1)
    cdef int64_t e, E = j.E, gi
    ce = np.empty(4 * E)
    cdef double* cp = _dp(ce)
    cdef const double* src
    for k, arr in enumerate((centre, a, b, c)):
        arr = np.ascontiguousarray(arr, dtype=np.float64).reshape(-1)
        src = _dp(arr)
        for e in range(E):
            cp[k * E + e] = src[j.group(e)]
    j.apply(cp, cp + E, cp + 2 * E, cp + 3 * E)
    return j.dx
