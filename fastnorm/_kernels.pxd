# Declarations of the C kernels in src_c/fastnorm.h (see that header for the contracts).
from libc.stdint cimport int64_t

cdef extern from "fastnorm.h" nogil:
    int FN_OK
    int FN_ENOMEM
    int FN_RMS
    int FN_STATS_GIVEN

    int fn_have_openmp()
    int fn_max_threads()
    void fn_init()
    void fn_merge_moments(int64_t A, int64_t K, int64_t B, double n_each, const double *mean_in,
                          const double *m2_in, double *mean_out, double *m2_out)

    int fn_row_stats_f32(const float *x, int64_t P1, int64_t P2, int64_t Q, int64_t L,
                         const int64_t *xs, double *mean, double *m2, int n_threads)
    int fn_row_stats_f64(const double *x, int64_t P1, int64_t P2, int64_t Q, int64_t L,
                         const int64_t *xs, double *mean, double *m2, int n_threads)
    int fn_col_stats_f32(const float *x, int64_t P1, int64_t R, int64_t C, const int64_t *xs,
                         double *mean, double *m2, int n_threads)
    int fn_col_stats_f64(const double *x, int64_t P1, int64_t R, int64_t C, const int64_t *xs,
                         double *mean, double *m2, int n_threads)
    void fn_coefs_f32(int64_t I, int64_t J, int64_t SI, int64_t JD, const double *mean,
                      const double *var, double eps, const float *w, const float *bias,
                      float *mh, float *a, float *c)
    void fn_coefs_f64(int64_t I, int64_t J, int64_t SI, int64_t JD, const double *mean,
                      const double *var, double eps, const double *w, const double *bias,
                      double *mh, double *a, double *c)
    int fn_norm_cols_f32(const float *x, float *y, int64_t P1, int64_t R, int64_t C,
                         const int64_t *xs, const int64_t *ys, int64_t cp, const float *mh,
                         const float *a, const float *c, int n_threads)
    int fn_norm_cols_f64(const double *x, double *y, int64_t P1, int64_t R, int64_t C,
                         const int64_t *xs, const int64_t *ys, int64_t cp, const double *mh,
                         const double *a, const double *c, int n_threads)
    int fn_group_rows_f32(const float *x, float *y, int64_t P1, int64_t P2, int64_t Q, int64_t L,
                          const int64_t *xs, const int64_t *ys, double eps, int flags,
                          const float *w, const float *b, const int64_t *as_, const float *lw,
                          const float *lb, double *gmean, double *gvar, int n_threads)
    int fn_group_rows_f64(const double *x, double *y, int64_t P1, int64_t P2, int64_t Q, int64_t L,
                          const int64_t *xs, const int64_t *ys, double eps, int flags,
                          const double *w, const double *b, const int64_t *as_, const double *lw,
                          const double *lb, double *gmean, double *gvar, int n_threads)
