/* fastnorm C kernels: plain C99, no Python. Arrays are described by a base pointer, sizes and
 * element strides (64-bit, may be negative). Every kernel that allocates or can reject its
 * arguments returns FN_OK or a negative status; the others return nothing.
 * Statistics are computed in one pass in double precision over fixed-size blocks that are merged
 * with Chan's formula in index order, so results do not depend on n_threads.
 *
 * Moments are returned as (mean, m2) per group, where m2 = sum((x - mean)^2) over the group.
 */
#ifndef FASTNORM_H
#define FASTNORM_H

#include <stdint.h>

#define FN_OK 0
#define FN_ENOMEM (-1)
#define FN_EINVAL (-2)

/* flags of fn_group_rows */
#define FN_RMS 1         /* normalize by the root mean square: no centring */
#define FN_STATS_GIVEN 2 /* use gmean/gvar as given instead of computing statistics */

#ifdef __cplusplus
extern "C" {
#endif

/* Finds what the CPU offers (SIMD level, cache size); call once before the kernels. */
void fn_init(void);
int fn_have_openmp(void);
int fn_max_threads(void);

/* Merge moments of equal-count sets in index order: in[a, k, b] -> out[a, b] (k merged).
 * Every input set has n_each elements. out may be in itself (an in-place compaction): out[a, b]
 * is written only after every in[a', k, b'] at or before it has been read. */
void fn_merge_moments(int64_t A, int64_t K, int64_t B, double n_each, const double *mean_in,
                      const double *m2_in, double *mean_out, double *m2_out);

#define FN_DECLARE(T, S)                                                                         \
    /* Moments per group g = (p1, p2) over the (Q, L) block of x[p1, p2, q, l]. */              \
    int fn_row_stats_##S(const T *x, int64_t P1, int64_t P2, int64_t Q, int64_t L,              \
                         const int64_t xs[4], double *mean, double *m2, int n_threads);          \
    /* Moments per (p1, c) over the R rows of x[p1, r, c]. */                                    \
    int fn_col_stats_##S(const T *x, int64_t P1, int64_t R, int64_t C, const int64_t xs[3],     \
                         double *mean, double *m2, int n_threads);                               \
    /* Coefficients for entries e = (i, j): group s = i*SI + j/JD, affine index j, so that     \
     * y = (x - mh[e]) * a[e] + c[e] with a = w[j] / sqrt(var[s] + eps) (w, bias may be NULL:    \
     * 1 and 0). mh is the mean rounded to T and c = bias[j] - (mean - mh) * a, so float data is  \
     * centred without rounding the true mean to float first. */                                \
    void fn_coefs_##S(int64_t I, int64_t J, int64_t SI, int64_t JD, const double *mean,         \
                      const double *var, double eps, const T *w, const T *bias, T *mh, T *a,     \
                      T *c);                                                                     \
    /* y[p1,r,c] = (x - mh[k]) * a[k] + c[k], k = p1*cp + c. */                                  \
    int fn_norm_cols_##S(const T *x, T *y, int64_t P1, int64_t R, int64_t C, const int64_t xs[3], \
                         const int64_t ys[3], int64_t cp, const T *mh, const T *a, const T *c,     \
                         int n_threads);                                                           \
    /* Statistics and normalization per group g = (p1, p2) of x[p1, p2, q, l] over (q, l):     \
     *   y = (x - mean_g) / sqrt(var_g + eps) * w[j] + b[j],  j = p2*as[0] + q*as[1]            \
     * (w, b may be NULL: 1, 0), or with lw/lb (both or neither; LayerNorm's elementwise        \
     * affine) y = (...) * lw[l] + lb[l]. The biased mean/variance of each group go to gmean/gvar \
     * when these are not NULL, or are read from them with FN_STATS_GIVEN. When the statistics  \
     * are computed, groups that fit in cache (fn_fuse_bytes) and share out evenly over the     \
     * threads are normalized right after their statistics; others go in batches of about half  \
     * the last-level cache, statistics then normalization. Either way the data comes from     \
     * memory once when it fits, and the results are the same bits. x and y may be the same    \
     * array with the same strides. */                                                          \
    int fn_group_rows_##S(const T *x, T *y, int64_t P1, int64_t P2, int64_t Q, int64_t L,       \
                          const int64_t xs[4], const int64_t ys[4], double eps, int flags,       \
                          const T *w, const T *b, const int64_t as[2], const T *lw, const T *lb,  \
                          double *gmean, double *gvar, int n_threads);

FN_DECLARE(float, f32)
FN_DECLARE(double, f64)
#undef FN_DECLARE

#ifdef __cplusplus
}
#endif
#endif /* FASTNORM_H */
