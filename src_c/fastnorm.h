/* fastnorm C kernels: plain C99, no Python.
 *
 * A job is described by small named structs: which elements share one mean and variance
 * (fn_rows or fn_cols: sizes and element strides, 64-bit, may be negative), the statistics
 * (fn_stats), the affine (fn_affine) and what is applied after it (fn_epilogue). The kernels of
 * one storage dtype are found in its table, fn_kernels_for(dtype): a new dtype is a new table.
 * Kernels that allocate or can reject their arguments return FN_OK or a negative status.
 *
 * Statistics are computed in one pass in double precision over fixed-size blocks (shifted sums)
 * merged with Chan's formula in index order, so results do not depend on n_threads. Moments are
 * (mean, m2) per group, where m2 = sum((x - mean)^2) over the group.
 *
 * Which public op uses which entry points (fastnorm/_kernels.pyx plans the job):
 *
 *   op (fastnorm.functional)       layout of x                entry points
 *   -----------------------------  -------------------------  ---------------------------------
 *   batch_norm                     channel not innermost      normalize_rows (one group per
 *                                                             channel; stats.given in eval)
 *                                  channels innermost (NHWC)  col_moments + fn_merge_moments
 *                                                             (training), coefs, normalize_cols
 *   instance_norm                  channel not innermost      normalize_rows (group per (n, c))
 *                                  channels innermost         group_cols (groups = channels)
 *   group_norm                     channel not innermost      normalize_rows (group per (n, g))
 *                                  channels innermost         group_cols (col_moments +
 *                                                             fn_merge_moments, coefs,
 *                                                             normalize_cols); no spatial axes:
 *                                                             row_moments, coefs, normalize_cols
 *   layer_norm, rms_norm           any                        normalize_rows (affine.elementwise;
 *                                                             stats.rms for rms_norm)
 *   add_layer_norm, add_rms_norm   any                        add_normalize_rows (x + residual
 *                                                             rounded to T, then as layer_norm)
 *   conditional / sandwich BN      channel not innermost      normalize_rows as batch_norm, the
 *   (_kernels.batch_norm_          (else a C-order copy)      per-sample affine through
 *   sample_affine)                                            affine.row_step = C
 *   switch_norm (instance_moments, rows / cols as              row_moments or col_moments, then
 *   normalize_nc)                  instance_norm              normalize_rows (stats.given) or
 *                                                             coefs + normalize_cols
 *
 * Backward passes (fastnorm/_backward.pyx plans them in the forward's layout):
 *   native_batch/instance/group_   rows                       grad_rows
 *   norm_backward                  columns                    grad_sums_cols, grad_apply_cols
 *                                  columns, eval mode         grad_eval_cols
 *   native_layer/rms_norm_backward any                        grad_layer
 *   native_switch_norm_backward    rows / cols as             grad_sums_rows / _cols, then
 *                                  instance_norm              grad_apply_rows / _cols
 */
#ifndef FASTNORM_H
#define FASTNORM_H

#include <stdint.h>

#define FN_OK 0
#define FN_ENOMEM (-1)
#define FN_EINVAL (-2)

#ifdef __cplusplus
extern "C" {
#endif

/* Storage dtypes, each with a kernel table. float16 (IEEE binary16) and bfloat16 are stored as
 * uint16_t bit patterns and computed in float. */
typedef enum { FN_FLOAT32 = 0, FN_FLOAT64 = 1, FN_FLOAT16 = 2, FN_BFLOAT16 = 3, FN_NUM_DTYPES } fn_dtype;

/* Row layout: element (o, g, q, l) of x is at x + o*xs[0] + g*xs[1] + q*xs[2] + l*xs[3] (element
 * strides), of y likewise with ys. Group (o, g) has one mean and variance over its rows x row_len
 * elements; l is the contiguous-most axis, the one the kernels vectorize over. */
typedef struct {
    int64_t outer;   /* o: outer count (e.g. samples) */
    int64_t groups;  /* g: groups per outer index */
    int64_t rows;    /* q: rows per group */
    int64_t row_len; /* l: elements per row */
    int64_t xs[4], ys[4];
} fn_rows;

/* Column layout (channels innermost): element (o, r, c) at x + o*xs[0] + r*xs[1] + c*xs[2].
 * Column (o, c) has its own statistics over the rows r; kernels vectorize across columns. */
typedef struct {
    int64_t outer, rows, cols;
    int64_t xs[3], ys[3];
} fn_cols;

/* How the statistics of a row job are had. */
typedef struct {
    double eps; /* added to the variance */
    int rms;    /* 1: normalize by the root mean square (no centring; mean reported as 0) */
    int given;  /* 1: read mean/var instead of computing them */
    double *mean, *var; /* per group (o * groups + g), biased variance: written when computed and
                         * not NULL, read when given */
} fn_stats;

/* weight and bias in the table's param type (NULL: 1 and 0). Per channel: the channel of row q
 * of group g is g * group_step + q * row_step. Elementwise (LayerNorm): weight[l] (given) and
 * bias[l] (NULL: 0). */
typedef struct {
    const void *weight, *bias;
    int64_t group_step, row_step;
    int elementwise;
} fn_affine;

/* Applied to each normalized (and affine-transformed) value v, in the compute type, before it is
 * stored: relu max(v, 0); silu v * sigmoid(v); gelu v * Phi(v) (Phi: the normal CDF); gelu_tanh
 * torch's tanh approximation of gelu. Each kernel picks a loop specialized for the activation
 * once per run, so the inner loops have no branch on it. */
typedef enum {
    FN_ACT_NONE = 0,
    FN_ACT_RELU = 1,
    FN_ACT_SILU = 2,
    FN_ACT_GELU = 3,
    FN_ACT_GELU_TANH = 4,
    FN_NUM_ACT
} fn_activation;
typedef struct {
    int activation; /* fn_activation */
    /* normalize_rows with a per-channel affine: NULL, or the TLU (Filter Response Norm's
     * thresholded linear unit) y = max(y, lower[channel]) (param type; NaN propagates), applied
     * to each run right after it is written, while it is in cache */
    const void *lower;
    /* 1: y was allocated for this call. A loop of such calls keeps the previous result alive
     * while it writes the next, so its memory holds two outputs beside the input: the row
     * layouts' normalize passes that compute their statistics stream their stores from two
     * thirds of the size at which the caller's output streams (add_normalize_rows: counted as
     * one array more, 3/4 or 4/5 of it). 0: y is the caller's. Results are the same bits. */
    int fresh;
} fn_epilogue;

/* Normalize groups of the row layout, computing their statistics unless stats.given:
 *   y = (x - mean_g) / sqrt(var_g + eps) * weight + bias, then the epilogue. */
typedef struct {
    fn_rows shape;
    fn_stats stats;
    fn_affine affine;
    fn_epilogue epilogue;
} fn_row_job;

/* A residual add before a row normalization: s = x + residual, rounded to T (as an unfused
 * x + r would store it), is written to sum (or, when sum is NULL, to y) and normalized from there
 * into y as norm describes (norm.shape.xs: x's strides, norm.shape.ys: y's; statistics always
 * computed). Each element of x, residual and sum is read or written at its own index only, so
 * sum may be x or residual itself (same strides), and y may be x or residual; y must not share
 * memory with sum. */
typedef struct {
    fn_row_job norm;
    const void *residual;
    int64_t rs[4]; /* residual's strides (fn_rows order) */
    void *sum;     /* NULL: the sum goes to y */
    int64_t ss[4]; /* sum's strides */
} fn_add_job;

/* Per-entry coefficients, y = (x - shift) * scale + offset, in the table's param type. The shift
 * is the mean rounded to that type and the offset carries the rest of it, so float data is
 * centred without rounding the true mean first. */
typedef struct {
    void *shift, *scale, *offset;
} fn_coefs;

/* Coefficients for entries e = (i, j), i < outer, j < channels (e = i * channels + j) from
 * per-group statistics: entry (i, j) belongs to group i * group_step + j / channels_per_group
 * and takes weight[j], bias[j] (NULL: 1, 0; param type). */
typedef struct {
    int64_t outer, channels, group_step, channels_per_group;
    const double *mean, *var;
    double eps;
    const void *weight, *bias;
} fn_coef_job;

/* Normalize the column layout with per-entry coefficients: column (o, c) uses entry
 * o * coef_outer_step + c. row_weight / row_bias (param type, NULL: none; bias only with a
 * weight): a per-row affine after them, y = act(t * row_weight[r] + row_bias[r]) on each row r
 * (LayerNorm over an axis that lies outside a contiguous one: its rows here), with t rounded to
 * float32/float64 first, as their own output; the 16-bit types round y once. */
typedef struct {
    fn_cols shape;
    fn_coefs coefs;
    int64_t coef_outer_step;
    fn_epilogue epilogue;
    const void *row_weight, *row_bias;
} fn_col_job;

/* Channels-last GroupNorm / InstanceNorm whole (table entry group_cols): the statistics of each
 * sample's columns (col_moments), its groups of cols / groups consecutive columns merged
 * (fn_merge_moments), var = m2 / (rows * cols / groups), written to mean / var (samples * groups
 * each), then coefs (weight, bias per column, NULL: 1 / 0) and normalize_cols. y may be x. */
typedef struct {
    fn_cols shape; /* outer: samples */
    int64_t groups;
    double eps;
    const void *weight, *bias;
    fn_epilogue epilogue;
    double *mean, *var;
} fn_group_cols_job;

/* Backward passes (fn_backward_impl.h). The arrays of a backward pass keep the forward's row or
 * column layout: x at shape.xs, dy (the output gradient) at shape.ys, dx at dxs.
 *
 * An entry is a row (o, g, q) of the row layout, e = (o * groups + g) * rows + q, or a column
 * (o, c) of the column layout, e = o * cols + c. Per entry the sums kernels give
 *   sum_dy[e] = sum(dy),  sum_dyxc[e] = sum(dy * (x - centre[e]))
 * in double over fixed-size blocks merged in index order (same bits for any thread count), and
 * the apply kernels write
 *   dx = a[e] * dy + b[e] * (x - centre[e]) + c[e]
 * (the op combines the sums into a, b, c: see fastnorm/_backward.pyx). centre NULL: 0. */
typedef struct {
    const double *centre;
    double *sum_dy, *sum_dyxc; /* sums: written */
    const double *a, *b, *c;   /* apply: read */
} fn_grad_entries;

typedef struct {
    fn_rows shape;
    int64_t dxs[4];
    fn_grad_entries e;
    /* grad_rows only: the whole BatchNorm / InstanceNorm / GroupNorm backward of the row
     * layout. Group (o, g) has statistics mean, rstd over its M = rows * row_len elements; row q
     * has channel g * group_step + q * row_step and weight[channel] (double; NULL: 1). With
     * A = sum(w dy), B = sum(w dy (x - mean)) over the group (in entry order):
     *   train: dx = r w dy - r A / M - r^3 B (x - mean) / M;  else dx = r w dy.
     * e.sum_dy, e.sum_dyxc are written per entry (centred on the group's mean; e.centre is not
     * read); dx may be NULL. A group that fits in cache is read once for both passes. */
    const double *mean, *rstd, *weight;
    int64_t group_step, row_step;
    int train;
} fn_grad_row_job;

typedef struct {
    fn_cols shape;
    int64_t dxs[3];
    fn_grad_entries e;
    /* grad_cols only: the train-mode BatchNorm / InstanceNorm backward of a column layout
     * whose entries are each their own group of M = rows elements: statistics mean[e], rstd[e],
     * weight[e % cols] (double; NULL: 1). With A = w sum(dy), B = w sum(dy (x - mean)):
     *   dx = r w dy - r A / M - r^3 B (x - mean) / M.
     * e.sum_dy, e.sum_dyxc are written per entry (centred on the mean; e.centre is not read). */
    const double *mean, *rstd, *weight;
} fn_grad_col_job;

/* LayerNorm / RMSNorm backward in one kernel: groups (o, g) of the row layout with statistics
 * mean (NULL: 0, RMSNorm) and rstd, elementwise weight[l] (param type, given). Per group one
 * pass over (x, dy) for sum(w dy) and sum(w dy (x - mean)) in double (float32 on AVX-512: runs
 * of float lanes added into double), then dx (NULL: not wanted) while the group is in cache. dweight[l] = sum(dy * xhat), dbias[l] = sum(dy) over
 * all rows (double; NULL: not wanted): each row's share is added in the compute type for 16 rows
 * at a time, then in double into per-unit partials, merged in unit order. */
typedef struct {
    fn_rows shape;
    int64_t dxs[4];
    const double *mean, *rstd;
    const void *weight;
    double *dweight, *dbias;
} fn_grad_layer_job;

/* The kernels of one storage dtype. */
typedef struct {
    const char *name;
    int itemsize;       /* bytes of one stored element */
    int param_itemsize; /* bytes of one weight/bias/coefficient (the compute type) */
    /* moments per group (o * groups + g) of the row layout */
    int (*row_moments)(const void *x, const fn_rows *s, double *mean, double *m2, int n_threads);
    /* moments per column (o * cols + c) of the column layout */
    int (*col_moments)(const void *x, const fn_cols *s, double *mean, double *m2, int n_threads);
    void (*coefs)(const fn_coef_job *job, const fn_coefs *out);
    int (*normalize_cols)(const void *x, void *y, const fn_col_job *job, int n_threads);
    int (*group_cols)(const void *x, void *y, const fn_group_cols_job *job, int n_threads);
    /* x and y may be the same array with the same strides */
    int (*normalize_rows)(const void *x, void *y, const fn_row_job *job, int n_threads);
    /* see fn_add_job */
    int (*add_normalize_rows)(const void *x, void *y, const fn_add_job *job, int n_threads);
    /* backward (fn_grad_entries): per-entry sums of the row / column layout, then dx */
    int (*grad_sums_rows)(const void *x, const void *dy, const fn_grad_row_job *job, int n_threads);
    int (*grad_sums_cols)(const void *x, const void *dy, const fn_grad_col_job *job, int n_threads);
    int (*grad_apply_rows)(const void *x, const void *dy, void *dx, const fn_grad_row_job *job,
                           int n_threads);
    int (*grad_apply_cols)(const void *x, const void *dy, void *dx, const fn_grad_col_job *job,
                           int n_threads);
    /* BatchNorm / InstanceNorm / GroupNorm backward of the row layout (fn_grad_row_job) */
    int (*grad_rows)(const void *x, const void *dy, void *dx, const fn_grad_row_job *job,
                     int n_threads);
    /* LayerNorm / RMSNorm backward (fn_grad_layer_job); dx may be NULL */
    int (*grad_layer)(const void *x, const void *dy, void *dx, const fn_grad_layer_job *job,
                      int n_threads);
    /* eval mode of the column layout (e.b, e.c taken as 0): grad_sums_cols and dx = e.a dy in one
     * pass */
    int (*grad_eval_cols)(const void *x, const void *dy, void *dx, const fn_grad_col_job *job,
                          int n_threads);
    /* train mode of the column layout, one entry per group (fn_grad_col_job) */
    int (*grad_cols)(const void *x, const void *dy, void *dx, const fn_grad_col_job *job,
                     int n_threads);
} fn_kernel_table;

/* The table of a dtype, NULL for one that has none. */
const fn_kernel_table *fn_kernels_for(int dtype);

/* Finds what the CPU offers (SIMD level, cache size); call once before the kernels. */
void fn_init(void);
int fn_have_openmp(void);
int fn_max_threads(void);
/* What fn_init found, for show_config: the SIMD level of the hot loops (2: AVX-512, 1: AVX2 +
 * FMA, 0: portable C), whether float32's AVX-512 statistics loops run as 256-bit pairs (AMD Zen
 * 4; the same bits), the last-level cache bytes (0: unknown), and the output bytes from which
 * normalize passes use streaming stores (0: never): the row layouts' calls, the column
 * (channels-last) layouts' (stream_bytes_cols), float32 rows with an elementwise weight and
 * bias, LayerNorm's (stream_bytes_wb), and the channels-last backward pass's dx
 * (stream_bytes_backward). */
void fn_cpu_info(int *simd_level, int *pairs, int64_t *l3_bytes, int64_t *stream_bytes,
                 int64_t *stream_bytes_cols, int64_t *stream_bytes_backward,
                 int64_t *stream_bytes_wb);

/* n contiguous float16 (bf16: bfloat16) values as float32, exactly: the 16-bit types' weights
 * and biases for their tables' float32 parameters (NumPy casts float16 one element at a time,
 * 1.5 ns each: more than a decode-size kernel). */
void fn_widen16(const uint16_t *x, int64_t n, int bf16, float *o);

/* Merge moments of equal-count sets in index order: in[a, k, b] -> out[a, b] (k merged).
 * Every input set has n_each elements. out may be in itself (an in-place compaction): out[a, b]
 * is written only after every in[a', k, b'] at or before it has been read. */
void fn_merge_moments(int64_t A, int64_t K, int64_t B, double n_each, const double *mean_in,
                      const double *m2_in, double *mean_out, double *m2_out);

#ifdef __cplusplus
}
#endif
#endif /* FASTNORM_H */
