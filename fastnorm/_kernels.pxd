# Declarations of the C interface in src_c/fastnorm.h (see that header for the contracts).
from libc.stdint cimport int64_t, uint16_t

cdef extern from "fastnorm.h" nogil:
    int FN_OK
    int FN_ENOMEM
    int FN_EINVAL
    int FN_FLOAT32
    int FN_FLOAT64
    int FN_FLOAT16
    int FN_BFLOAT16
    int FN_ACT_NONE

    ctypedef struct fn_rows:
        int64_t outer, groups, rows, row_len
        int64_t xs[4]
        int64_t ys[4]

    ctypedef struct fn_cols:
        int64_t outer, rows, cols
        int64_t xs[3]
        int64_t ys[3]

    ctypedef struct fn_stats:
        double eps
        int rms, given
        double *mean
        double *var

    ctypedef struct fn_affine:
        const void *weight
        const void *bias
        int64_t group_step, row_step
        int elementwise

    ctypedef struct fn_epilogue:
        int activation
        const void *lower
        int fresh

    ctypedef struct fn_row_job:
        fn_rows shape
        fn_stats stats
        fn_affine affine
        fn_epilogue epilogue

    ctypedef struct fn_add_job:
        fn_row_job norm
        const void *residual
        int64_t rs[4]
        void *sum
        int64_t ss[4]

    ctypedef struct fn_coefs:
        void *shift
        void *scale
        void *offset

    ctypedef struct fn_coef_job:
        int64_t outer, channels, group_step, channels_per_group
        const double *mean
        const double *var
        double eps
        const void *weight
        const void *bias

    ctypedef struct fn_col_job:
        fn_cols shape
        fn_coefs coefs
        int64_t coef_outer_step
        fn_epilogue epilogue
        const void *row_weight
        const void *row_bias

    ctypedef struct fn_group_cols_job:
        fn_cols shape
        int64_t groups
        double eps
        const void *weight
        const void *bias
        fn_epilogue epilogue
        double *mean
        double *var

    ctypedef struct fn_grad_entries:
        const double *centre
        double *sum_dy
        double *sum_dyxc
        const double *a
        const double *b
        const double *c

    ctypedef struct fn_grad_row_job:
        fn_rows shape
        int64_t dxs[4]
        fn_grad_entries e
        const double *mean
        const double *rstd
        const double *weight
        int64_t group_step, row_step
        int train

    ctypedef struct fn_grad_col_job:
        fn_cols shape
        int64_t dxs[3]
        fn_grad_entries e
        const double *mean
        const double *rstd
        const double *weight

    ctypedef struct fn_grad_layer_job:
        fn_rows shape
        int64_t dxs[4]
        const double *mean
        const double *rstd
        const void *weight
        double *dweight
        double *dbias

    ctypedef struct fn_kernel_table:
        const char *name
        int itemsize, param_itemsize
        int (*row_moments)(const void *x, const fn_rows *s, double *mean, double *m2, int nt) noexcept nogil
        int (*col_moments)(const void *x, const fn_cols *s, double *mean, double *m2, int nt) noexcept nogil
        void (*coefs)(const fn_coef_job *job, const fn_coefs *out) noexcept nogil
        int (*normalize_cols)(const void *x, void *y, const fn_col_job *job, int nt) noexcept nogil
        int (*group_cols)(const void *x, void *y, const fn_group_cols_job *job, int nt) noexcept nogil
        int (*normalize_rows)(const void *x, void *y, const fn_row_job *job, int nt) noexcept nogil
        int (*add_normalize_rows)(const void *x, void *y, const fn_add_job *job, int nt) noexcept nogil
        int (*grad_sums_rows)(const void *x, const void *dy, const fn_grad_row_job *job, int nt) noexcept nogil
        int (*grad_sums_cols)(const void *x, const void *dy, const fn_grad_col_job *job, int nt) noexcept nogil
        int (*grad_apply_rows)(const void *x, const void *dy, void *dx, const fn_grad_row_job *job, int nt) noexcept nogil
        int (*grad_apply_cols)(const void *x, const void *dy, void *dx, const fn_grad_col_job *job, int nt) noexcept nogil
        int (*grad_rows)(const void *x, const void *dy, void *dx, const fn_grad_row_job *job, int nt) noexcept nogil
        int (*grad_layer)(const void *x, const void *dy, void *dx, const fn_grad_layer_job *job, int nt) noexcept nogil
        int (*grad_eval_cols)(const void *x, const void *dy, void *dx, const fn_grad_col_job *job, int nt) noexcept nogil
        int (*grad_cols)(const void *x, const void *dy, void *dx, const fn_grad_col_job *job, int nt) noexcept nogil

    const fn_kernel_table *fn_kernels_for(int dtype)
    void fn_init()
    void fn_cpu_info(int *simd_level, int *pairs, int64_t *l3_bytes, int64_t *stream_bytes,
                     int64_t *stream_bytes_cols, int64_t *stream_bytes_backward,
                     int64_t *stream_bytes_wb)
    void fn_widen16(const uint16_t *x, int64_t n, int bf16, float *o)
    void fn_merge_moments(int64_t A, int64_t K, int64_t B, double n_each, const double *mean_in,
                          const double *m2_in, double *mean_out, double *m2_out)


# The adapter's dtype -> kernel table mapping, kernel status check and row-layout job
# description, shared with _backward.
cimport numpy as cnp
from fastnorm._layout cimport Ax
cdef const fn_kernel_table* _table(cnp.ndarray x) except NULL
cdef int _check_rc(int rc) except -1
cdef fn_rows _rows(Ax o, Ax g, Ax q, Ax l) noexcept
# The ops with `stats` (the batch statistics written out): what the backward's forwards call.
cdef object bn_call(object input, object running_mean, object running_var, object weight,
                    object bias, object training, object momentum, object eps, object out,
                    object stats, object activation)
cdef object in_call(object input, object running_mean, object running_var, object weight,
                    object bias, object use_input_stats, object momentum, object eps, object out,
                    object stats)
cdef object gn_call(object input, object num_groups, object weight, object bias, object eps,
                    object out, object stats, object activation)
cdef object ln_call(str fn, object input, object normalized_shape, object weight, object bias,
                    object eps, object out, bint rms, object activation, object stats)
