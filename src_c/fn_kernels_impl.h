/* Kernel bodies, compiled once per storage dtype: fn_kernels.c defines, for each dtype,
 *   T        the stored element type       (float, double; uint16_t for float16 and bfloat16)
 *   CT       the compute type of weights, biases, coefficients and the normalize arithmetic
 *   S        the name suffix                              (f32, f64, f16, bf16)
 *   LD(v)    a stored element as CT, ST(v) a CT value as T
 *   FN_CTMAX CT's largest finite value
 *   ACT(v, act) the activation act applied to a CT value
 *   FN_BUFFERED 1 for a type whose normalize loops run float32's on a float buffer filled by
 *            FN_LOADBUF(x, stride, n, buf) and emptied by FN_STOREBUF(buf, n, y, stride);
 *            FN_DIRECT(scale / affine / cols), when defined, does what it can of a contiguous
 *            activation-free run first, in registers (returns how many elements)
 * and includes this file once per dtype; the file ends with the dtype's kernel table, FN(table),
 * and consumes (undefines) these parameters. Not a public header. */

#define FN_CAT_(a, b) a##_##b
#define FN_CAT(a, b) FN_CAT_(a, b)
#define FN(name) FN_CAT(name, S)

/* A double coefficient as CT: finite values beyond T's range become T's largest value rather
 * than inf, so that 1 / sqrt(0 + 1e-300) times an exact zero deviation stays 0 in float, as in
 * exact arithmetic; inf and NaN (eps = 0 on constant data) pass through. */
static inline CT FN(narrow)(double v)
{
    if (isfinite(v) && fabs(v) > FN_CTMAX)
        v = copysign(FN_CTMAX, v);
    return (CT)v;
}

#if FN_AVX2
#define VISA avx2
#define VFUNC FN_AVX2_FUNC
#define V __m256d
#define VW 4
#define VZERO _mm256_setzero_pd
#define VSET1 _mm256_set1_pd
#define VSUB _mm256_sub_pd
#define VADD _mm256_add_pd
#define VFMA _mm256_fmadd_pd
#define VLOADD _mm256_loadu_pd
#define VSTORED _mm256_storeu_pd
#define VHSUM fn_hsum4
#define VLOADT FN(fn_load4)
#include "fn_simd_impl.h"
#endif

#if FN_AVX512
#define VISA avx512
#define VFUNC FN_AVX512_FUNC
#define V __m512d
#define VW 8
#define VZERO _mm512_setzero_pd
#define VSET1 _mm512_set1_pd
#define VSUB _mm512_sub_pd
#define VADD _mm512_add_pd
#define VFMA _mm512_fmadd_pd
#define VLOADD _mm512_loadu_pd
#define VSTORED _mm512_storeu_pd
#define VHSUM fn_hsum8
#define VLOADT FN(fn_load8)
#include "fn_simd_impl.h"
#endif

/* Adds sum(x - k) and sum((x - k)^2) over len elements at stride s to *s1, *s2. The order of
 * additions depends only on len (and the CPU's path), never on threads. */
static inline void FN(run_sums)(const T *x, int64_t len, int64_t s, double k, double *s1,
                                double *s2)
{
    double t1 = 0.0, t2 = 0.0, u1 = 0.0, u2 = 0.0;
    int64_t i = 0;
#if FN_AVX512
    if (s == 1 && len >= 32 && fn_simd_level() >= 2)
        i = FN(run_sums_avx512)(x, len, k, &t1, &t2);
    else
#endif
#if FN_AVX2
    if (s == 1 && len >= 16 && fn_simd_level() >= 1)
        i = FN(run_sums_avx2)(x, len, k, &t1, &t2);
#endif
    for (; i + 2 <= len; i += 2) { /* two chains for the portable path */
        const double d = (double)LD(x[i * s]) - k, e = (double)LD(x[(i + 1) * s]) - k;
        t1 += d;
        t2 += d * d;
        u1 += e;
        u2 += e * e;
    }
    for (; i < len; i++) {
        const double d = (double)LD(x[i * s]) - k;
        t1 += d;
        t2 += d * d;
    }
    *s1 += t1 + u1;
    *s2 += t2 + u2;
}

/* Moments of block b of a group (rows q at stride sq, elements l at stride sl). Shifted by the
 * block's first element: sums of (x - k) keep full precision for data far from zero, and
 * constant data gives mean == k and m2 == 0 exactly. With rms, mean = 0 and m2 = sum(x^2)
 * instead: a sum of squares needs no shift (nothing cancels), and an inf then gives m2 = inf
 * rather than inf - inf. Returns the block's element count. */
static inline double FN(block_moments)(const T *xg, const fn_rowplan *pl, int64_t b, int64_t Q,
                                       int64_t L, int64_t sq, int64_t sl, int rms, double *mean,
                                       double *m2)
{
    int64_t q0, q1, l0, l1;
    fn_block_range(pl, b, Q, L, &q0, &q1, &l0, &l1);
    const double k = rms ? 0.0 : fn_shift((double)LD(xg[q0 * sq + l0 * sl]));
    double s1 = 0.0, s2 = 0.0;
    for (int64_t q = q0; q < q1; q++)
        FN(run_sums)(xg + q * sq + l0 * sl, l1 - l0, sl, k, &s1, &s2);
    const double n = (double)((q1 - q0) * (l1 - l0));
    if (rms) {
        *mean = 0.0;
        *m2 = s2;
    } else {
        fn_finish_block(n, k, s1, s2, mean, m2);
    }
    return n;
}

/* Moments of a whole group: its blocks in order, merged with Chan's formula. The same blocks
 * and the same merge order as fn_row_stats' parallel path, so both give identical bits. */
static inline void FN(group_moments)(const T *xg, const fn_rowplan *pl, int64_t Q, int64_t L,
                                     int64_t sq, int64_t sl, int rms, double *mean, double *m2)
{
    double n = 0.0, mu = 0.0, q = 0.0;
    for (int64_t b = 0; b < pl->nb; b++) {
        double bm, bq;
        const double bn = FN(block_moments)(xg, pl, b, Q, L, sq, sl, rms, &bm, &bq);
        fn_chan(&n, &mu, &q, bn, bm, bq);
    }
    *mean = mu;
    *m2 = q;
}

/* Moments of the groups g0 <= g < g1 (g = p1 * P2 + p2) into mean[g - g0], m2[g - g0];
 * with rms the (0, sum of squares) moments of block_moments. When groups have more than one
 * block, part is scratch for 2 * (g1 - g0) * blocks-per-group per-block partials (the caller
 * allocates it, so that nothing can fail once output has been written). */
static void FN(row_stats)(const T *x, int64_t P2, int64_t Q, int64_t L, const int64_t xs[4],
                          int rms, int64_t g0, int64_t g1, double *mean, double *m2,
                          double *part, int n_threads)
{
    const int64_t P = g1 - g0;
    if (P <= 0)
        return;
    if (Q <= 0 || L <= 0) {
        for (int64_t g = 0; g < P; g++)
            mean[g] = m2[g] = 0.0;
        return;
    }
    const fn_rowplan pl = fn_plan_rows(Q, L);
    const int64_t U = P * pl.nb;
    const int many = pl.nb > 1; /* per-block partials, merged below in block order */
    double *pm = many ? part : mean, *pq = many ? part + U : m2;
    const int nt = fn_eff_threads(P * Q * L, U, n_threads);
    FN_PFOR(nt, u, U, {
        const int64_t g = g0 + u / pl.nb;
        FN(block_moments)(x + (g / P2) * xs[0] + (g % P2) * xs[1], &pl, u % pl.nb, Q, L, xs[2],
                          xs[3], rms, &pm[u], &pq[u]);
    });
    if (many) {
        FN_PFOR(nt, g, P, {
            double n = 0.0, mu = 0.0, q = 0.0;
            for (int64_t b = 0; b < pl.nb; b++)
                fn_chan(&n, &mu, &q, fn_block_count(&pl, b, Q, L), pm[g * pl.nb + b],
                        pq[g * pl.nb + b]);
            mean[g] = mu;
            m2[g] = q;
        });
    }
}


/* Sums of (x - k[j]) and their squares down rows [r0, r1) for each of w <= FN_CB columns
 * (column stride sc) into s1[j], s2[j]; each column adds its rows in order. */
static void FN(tile_sums)(const T *x, int64_t r0, int64_t r1, int64_t sr, int64_t sc, int64_t w,
                          const double *k, double *s1, double *s2)
{
    int64_t j = 0;
#if FN_AVX512
    if (sc == 1 && fn_simd_level() >= 2)
        j = FN(tile_sums_avx512)(x, r0, r1, sr, w, k, s1, s2);
#endif
#if FN_AVX2
    if (sc == 1 && fn_simd_level() >= 1)
        j += FN(tile_sums_avx2)(x + j, r0, r1, sr, w - j, k + j, s1 + j, s2 + j);
#endif
    for (; j < w; j++) {
        double t1 = 0.0, t2 = 0.0;
        for (int64_t r = r0; r < r1; r++) {
            const double d = (double)LD(x[r * sr + j * sc]) - k[j];
            t1 += d;
            t2 += d * d;
        }
        s1[j] = t1;
        s2[j] = t2;
    }
}

/* Moments of the row layout (table entry row_moments). */
static int FN(row_moments)(const void *xv, const fn_rows *s, double *mean, double *m2,
                           int n_threads)
{
    const int64_t P = s->outer * s->groups;
    const int64_t ns = fn_row_stats_scratch(P, s->rows, s->row_len);
    double *part = NULL;
    if (ns > 0 && !(part = (double *)malloc((size_t)ns * sizeof(double))))
        return FN_ENOMEM;
    FN(row_stats)((const T *)xv, s->groups, s->rows, s->row_len, s->xs, 0, 0, P, mean, m2, part,
                  n_threads);
    free(part);
    return FN_OK;
}

/* Moments of the column layout (table entry col_moments): tiles of FN_CB columns by a block of
 * rows, merged down the row blocks in order. */
static int FN(col_moments)(const void *xv, const fn_cols *s, double *mean, double *m2,
                           int n_threads)
{
    const T *x = (const T *)xv;
    const int64_t P1 = s->outer, R = s->rows, C = s->cols;
    const int64_t *xs = s->xs;
    if (P1 <= 0 || C <= 0)
        return FN_OK;
    if (R <= 0) {
        for (int64_t i = 0; i < P1 * C; i++)
            mean[i] = m2[i] = 0.0;
        return FN_OK;
    }
    const int64_t rb = fn_col_rows_per_block(R, C);
    const int64_t nrb = (R + rb - 1) / rb, ncb = (C + FN_CB - 1) / FN_CB;
    const int64_t U = P1 * nrb * ncb;
    double *pm = mean, *pq = m2, *buf = NULL;
    if (nrb > 1) { /* partials [p1][row block][c], merged below in row-block order */
        buf = (double *)malloc((size_t)(2 * P1 * nrb * C) * sizeof(double));
        if (!buf)
            return FN_ENOMEM;
        pm = buf;
        pq = buf + P1 * nrb * C;
    }
    const int nt = fn_eff_threads(P1 * R * C, U, n_threads);
    FN_PFOR(nt, u, U, {
        const int64_t p1 = u / (nrb * ncb), rbi = (u / ncb) % nrb, cb = u % ncb;
        const int64_t r0 = rbi * rb, r1 = r0 + rb < R ? r0 + rb : R;
        const int64_t c0 = cb * FN_CB, w = c0 + FN_CB < C ? FN_CB : C - c0;
        const T *xt = x + p1 * xs[0] + c0 * xs[2];
        double k[FN_CB], s1[FN_CB], s2[FN_CB];
        for (int64_t j = 0; j < w; j++)
            k[j] = fn_shift((double)LD(xt[r0 * xs[1] + j * xs[2]]));
        FN(tile_sums)(xt, r0, r1, xs[1], xs[2], w, k, s1, s2);
        const int64_t o = (p1 * nrb + rbi) * C + c0;
        for (int64_t j = 0; j < w; j++)
            fn_finish_block((double)(r1 - r0), k[j], s1[j], s2[j], &pm[o + j], &pq[o + j]);
    });
    if (buf) {
        FN_PFOR(nt, i, P1 * C, {
            const int64_t p1 = i / C, c = i % C;
            double n = 0.0, mu = 0.0, q = 0.0;
            for (int64_t b = 0; b < nrb; b++) {
                const int64_t o = (p1 * nrb + b) * C + c;
                const int64_t cnt = (b + 1) * rb <= R ? rb : R - b * rb;
                fn_chan(&n, &mu, &q, (double)cnt, pm[o], pq[o]);
            }
            mean[i] = mu;
            m2[i] = q;
        });
        free(buf);
    }
    return FN_OK;
}

/* Table entry coefs: see fn_coef_job. One sqrt and divide per group. */
static void FN(coefs)(const fn_coef_job *jb, const fn_coefs *out)
{
    const CT *w = (const CT *)jb->weight, *bias = (const CT *)jb->bias;
    CT *mh = (CT *)out->shift, *a = (CT *)out->scale, *c = (CT *)out->offset;
    const int64_t J = jb->channels, JD = jb->channels_per_group;
    for (int64_t i = 0; i < jb->outer; i++) {
        for (int64_t j0 = 0; j0 < J; j0 += JD) { /* group s: entries j0 .. j0 + JD - 1 */
            const int64_t s = i * jb->group_step + j0 / JD;
            const double mu = jb->mean[s], r = 1.0 / sqrt(jb->var[s] + jb->eps);
            const CT mt = FN(narrow)(mu);
            const double dl = mu - (double)mt;
            for (int64_t j = j0; j < j0 + JD; j++) {
                const int64_t e = i * J + j;
                const double ad = w ? r * (double)w[j] : r;
                mh[e] = mt;
                a[e] = FN(narrow)(ad);
                c[e] = FN(narrow)((bias ? (double)bias[j] : 0.0) - dl * ad);
            }
        }
    }
}

/* The normalize loops. Each is one run of n elements at strides sx, sy; same-index in place
 * (x == y) is allowed. The contiguous case is written apart so that it vectorizes. Each loop is
 * compiled once per activation (act is a constant in each copy: no branch in the inner loop);
 * FN(<loop>_runs)[act] is the copy for act. */
#if !FN_BUFFERED
#define FN_INLINE static inline __attribute__((always_inline))

/* y = act((x - mh) * a + c) */
FN_INLINE void FN(scale_body)(const T *x, T *y, int64_t n, int64_t sx, int64_t sy, CT mh, CT a,
                              CT c, const int act)
{
    if (sx == 1 && sy == 1) {
        FN_OMP(simd)
        for (int64_t i = 0; i < n; i++)
            y[i] = ST(ACT((LD(x[i]) - mh) * a + c, act));
    } else {
        for (int64_t i = 0; i < n; i++)
            y[i * sy] = ST(ACT((LD(x[i * sx]) - mh) * a + c, act));
    }
}

/* y = act(((x - mh) * a + c) * w[i] + lb[i]) (LayerNorm's elementwise affine) */
FN_INLINE void FN(affine_body)(const T *x, T *y, int64_t n, int64_t sx, int64_t sy, CT mh, CT a,
                               CT c, const CT *w, const CT *lb, const int act)
{
    if (sx == 1 && sy == 1) {
        FN_OMP(simd)
        for (int64_t i = 0; i < n; i++)
            y[i] = ST(ACT(((LD(x[i]) - mh) * a + c) * w[i] + lb[i], act));
    } else {
        for (int64_t i = 0; i < n; i++)
            y[i * sy] = ST(ACT(((LD(x[i * sx]) - mh) * a + c) * w[i] + lb[i], act));
    }
}

/* y[i] = act((x[i] - mh[i]) * a[i] + c[i]) (one row across the columns) */
FN_INLINE void FN(cols_body)(const T *x, T *y, int64_t n, int64_t sx, int64_t sy, const CT *mh,
                             const CT *a, const CT *c, const int act)
{
    if (sx == 1 && sy == 1) {
        FN_OMP(simd)
        for (int64_t i = 0; i < n; i++)
            y[i] = ST(ACT((LD(x[i]) - mh[i]) * a[i] + c[i], act));
    } else {
        for (int64_t i = 0; i < n; i++)
            y[i * sy] = ST(ACT((LD(x[i * sx]) - mh[i]) * a[i] + c[i], act));
    }
}

#define FN_SCALE_ARGS const T *x, T *y, int64_t n, int64_t sx, int64_t sy, CT mh, CT a, CT c
#define FN_AFFINE_ARGS FN_SCALE_ARGS, const CT *w, const CT *lb
#define FN_COLS_ARGS                                                                             \
    const T *x, T *y, int64_t n, int64_t sx, int64_t sy, const CT *mh, const CT *a, const CT *c
#define FN_ACT_LOOPS(K, act)                                                                     \
    static FN_HOT void FN(scale_run_##K)(FN_SCALE_ARGS)                                          \
    {                                                                                            \
        FN(scale_body)(x, y, n, sx, sy, mh, a, c, act);                                          \
    }                                                                                            \
    static FN_HOT void FN(affine_run_##K)(FN_AFFINE_ARGS)                                        \
    {                                                                                            \
        FN(affine_body)(x, y, n, sx, sy, mh, a, c, w, lb, act);                                  \
    }                                                                                            \
    static FN_HOT void FN(cols_run_##K)(FN_COLS_ARGS)                                            \
    {                                                                                            \
        FN(cols_body)(x, y, n, sx, sy, mh, a, c, act);                                           \
    }
FN_ACT_LOOPS(none, FN_ACT_NONE)
FN_ACT_LOOPS(relu, FN_ACT_RELU)
FN_ACT_LOOPS(silu, FN_ACT_SILU)
FN_ACT_LOOPS(gelu, FN_ACT_GELU)
FN_ACT_LOOPS(gelu_tanh, FN_ACT_GELU_TANH)
static void (*const FN(scale_runs)[FN_NUM_ACT])(FN_SCALE_ARGS) = {
    FN(scale_run_none), FN(scale_run_relu), FN(scale_run_silu), FN(scale_run_gelu),
    FN(scale_run_gelu_tanh)};
static void (*const FN(affine_runs)[FN_NUM_ACT])(FN_AFFINE_ARGS) = {
    FN(affine_run_none), FN(affine_run_relu), FN(affine_run_silu), FN(affine_run_gelu),
    FN(affine_run_gelu_tanh)};
static void (*const FN(cols_runs)[FN_NUM_ACT])(FN_COLS_ARGS) = {
    FN(cols_run_none), FN(cols_run_relu), FN(cols_run_silu), FN(cols_run_gelu),
    FN(cols_run_gelu_tanh)};
#undef FN_ACT_LOOPS
#undef FN_SCALE_ARGS
#undef FN_AFFINE_ARGS
#undef FN_COLS_ARGS
#undef FN_INLINE

#define FN_SCALE_RUN(act, x, y, n, sx, sy, mh, a, c) FN(scale_runs)[act](x, y, n, sx, sy, mh, a, c)
#define FN_AFFINE_RUN(act, x, y, n, sx, sy, mh, a, c, w, lb)                                     \
    FN(affine_runs)[act](x, y, n, sx, sy, mh, a, c, w, lb)
#define FN_COLS_RUN(act, x, y, n, sx, sy, mh, a, c) FN(cols_runs)[act](x, y, n, sx, sy, mh, a, c)

/* s = x + r, added in CT and rounded to T (the residual add of add_normalize_rows; exact before
 * the rounding for the 16-bit types) */
static FN_HOT void FN(add_run)(const T *x, const T *r, T *s, int64_t n, int64_t sx, int64_t sr,
                               int64_t ss)
{
    if (sx == 1 && sr == 1 && ss == 1) {
        FN_OMP(simd)
        for (int64_t i = 0; i < n; i++)
            s[i] = ST(LD(x[i]) + LD(r[i]));
    } else {
        for (int64_t i = 0; i < n; i++)
            s[i * ss] = ST(LD(x[i * sx]) + LD(r[i * sr]));
    }
}

#else /* FN_BUFFERED: float32's loops on a float buffer, FN_HB elements at a time */

#define FN_BY_BUFFER(i0, m, n, ...)                                                               \
    for (int64_t i0 = 0; i0 < (n); i0 += FN_HB) {                                                \
        const int64_t m = (n) - i0 < FN_HB ? (n) - i0 : FN_HB;                                   \
        __VA_ARGS__                                                                              \
    }
static void FN(scale_run_)(int act, const T *x, T *y, int64_t n, int64_t sx, int64_t sy, CT mh,
                           CT a, CT c)
{
    float buf[FN_HB];
#ifdef FN_DIRECT
    if (act == FN_ACT_NONE && sx == 1 && sy == 1) {
        const int64_t d = FN_DIRECT(scale)(x, y, n, mh, a, c);
        x += d;
        y += d;
        n -= d;
    }
#endif
    FN_BY_BUFFER(i0, m, n, {
        FN_LOADBUF(x + i0 * sx, sx, m, buf);
        scale_runs_f32[act](buf, buf, m, 1, 1, mh, a, c);
        FN_STOREBUF(buf, m, y + i0 * sy, sy);
    });
}
static void FN(affine_run_)(int act, const T *x, T *y, int64_t n, int64_t sx, int64_t sy, CT mh,
                            CT a, CT c, const CT *w, const CT *lb)
{
    float buf[FN_HB];
#ifdef FN_DIRECT
    if (act == FN_ACT_NONE && sx == 1 && sy == 1) {
        const int64_t d = FN_DIRECT(affine)(x, y, n, mh, a, c, w, lb);
        x += d;
        y += d;
        w += d;
        lb += d;
        n -= d;
    }
#endif
    FN_BY_BUFFER(i0, m, n, {
        FN_LOADBUF(x + i0 * sx, sx, m, buf);
        affine_runs_f32[act](buf, buf, m, 1, 1, mh, a, c, w + i0, lb + i0);
        FN_STOREBUF(buf, m, y + i0 * sy, sy);
    });
}
static void FN(cols_run_)(int act, const T *x, T *y, int64_t n, int64_t sx, int64_t sy,
                          const CT *mh, const CT *a, const CT *c)
{
    float buf[FN_HB];
#ifdef FN_DIRECT
    if (act == FN_ACT_NONE && sx == 1 && sy == 1) {
        const int64_t d = FN_DIRECT(cols)(x, y, n, mh, a, c);
        x += d;
        y += d;
        mh += d;
        a += d;
        c += d;
        n -= d;
    }
#endif
    FN_BY_BUFFER(i0, m, n, {
        FN_LOADBUF(x + i0 * sx, sx, m, buf);
        cols_runs_f32[act](buf, buf, m, 1, 1, mh + i0, a + i0, c + i0);
        FN_STOREBUF(buf, m, y + i0 * sy, sy);
    });
}
#define FN_SCALE_RUN FN(scale_run_)
#define FN_AFFINE_RUN FN(affine_run_)
#define FN_COLS_RUN FN(cols_run_)

/* s = x + r, added in float and rounded to T (exact before the rounding) */
static void FN(add_run)(const T *x, const T *r, T *s, int64_t n, int64_t sx, int64_t sr,
                        int64_t ss)
{
    float a[FN_HB], b[FN_HB];
    FN_BY_BUFFER(i0, m, n, {
        FN_LOADBUF(x + i0 * sx, sx, m, a);
        FN_LOADBUF(r + i0 * sr, sr, m, b);
        add_run_f32(a, b, a, m, 1, 1, 1);
        FN_STOREBUF(a, m, s + i0 * ss, ss);
    });
}
#undef FN_BY_BUFFER
#endif

/* Table entry normalize_cols: units of whole rows of about FN_NCHUNK elements. */
static int FN(normalize_cols)(const void *xv, void *yv, const fn_col_job *jb, int n_threads)
{
    const T *x = (const T *)xv;
    T *y = (T *)yv;
    const fn_cols *s = &jb->shape;
    const int64_t P1 = s->outer, R = s->rows, C = s->cols, cp = jb->coef_outer_step;
    const int act = jb->epilogue.activation;
    if (act < 0 || act >= FN_NUM_ACT)
        return FN_EINVAL;
    if (P1 <= 0 || R <= 0 || C <= 0)
        return FN_OK;
    const CT *mh = (const CT *)jb->coefs.shift, *a = (const CT *)jb->coefs.scale;
    const CT *c = (const CT *)jb->coefs.offset;
    const int64_t rc = C >= FN_NCHUNK ? 1 : FN_NCHUNK / C; /* rows per unit */
    const int64_t nrc = (R + rc - 1) / rc, U = P1 * nrc;
    const int nt = fn_eff_threads(P1 * R * C, U, n_threads);
    FN_PFOR(nt, u, U, {
        const int64_t p1 = u / nrc, r0 = (u % nrc) * rc, r1 = r0 + rc < R ? r0 + rc : R;
        const int64_t k = p1 * cp;
        for (int64_t r = r0; r < r1; r++)
            FN_COLS_RUN(act, x + p1 * s->xs[0] + r * s->xs[1], y + p1 * s->ys[0] + r * s->ys[1],
                        C, s->xs[2], s->ys[2], mh + k, a + k, c + k);
    });
    return FN_OK;
}

/* Normalizes rows [q0, q1) x [l0, l1) of group g (group index p2 within its outer index) with
 * its mean and rstd. */
static inline void FN(group_apply)(const T *xg, T *yg, int64_t p2, int64_t q0, int64_t q1,
                                   int64_t l0, int64_t l1, const fn_rows *s, const fn_affine *af,
                                   int act, double mean, double rstd)
{
    /* the mean as CT hi plus a double remainder folded into the offset: float data is centred
     * on a float mean without rounding the true mean to float first */
    const CT mh = FN(narrow)(mean);
    const double dl = mean - (double)mh;
    const CT *w = (const CT *)af->weight, *b = (const CT *)af->bias;
    for (int64_t q = q0; q < q1; q++) {
        const T *xr = xg + q * s->xs[2] + l0 * s->xs[3];
        T *yr = yg + q * s->ys[2] + l0 * s->ys[3];
        if (af->elementwise) {
            FN_AFFINE_RUN(act, xr, yr, l1 - l0, s->xs[3], s->ys[3], mh, FN(narrow)(rstd),
                          FN(narrow)(-dl * rstd), w + l0, b + l0);
        } else {
            const int64_t j = p2 * af->group_step + q * af->row_step;
            const double a = w ? rstd * (double)w[j] : rstd;
            const double c = (b ? (double)b[j] : 0.0) - dl * a;
            FN_SCALE_RUN(act, xr, yr, l1 - l0, s->xs[3], s->ys[3], mh, FN(narrow)(a),
                         FN(narrow)(c));
        }
    }
}

/* Whether normalize_rows' fused path applies: groups of gbytes that fit in cache
 * (fn_fuse_bytes) and P of them that share out evenly over nt threads. */
static inline int FN(fuse_ok)(int64_t gbytes, int64_t P, int nt)
{
    return gbytes <= fn_fuse_bytes(nt) && (nt == 1 || P % nt == 0 || P >= 8 * nt);
}

/* The fused path's work on group g: its statistics, then its normalization while in cache. */
static inline void FN(fused_group)(const T *x, T *y, int64_t g, const fn_row_job *jb,
                                   const fn_rowplan *pl)
{
    const fn_rows *s = &jb->shape;
    const int64_t p1 = g / s->groups, p2 = g % s->groups, Q = s->rows, L = s->row_len;
    const T *xg = x + p1 * s->xs[0] + p2 * s->xs[1];
    double mean, m2, var;
    FN(group_moments)(xg, pl, Q, L, s->xs[2], s->xs[3], jb->stats.rms, &mean, &m2);
    var = m2 / (double)(Q * L);
    if (jb->stats.mean)
        jb->stats.mean[g] = mean;
    if (jb->stats.var)
        jb->stats.var[g] = var;
    FN(group_apply)(xg, y + p1 * s->ys[0] + p2 * s->ys[1], p2, 0, Q, 0, L, s, &jb->affine,
                    jb->epilogue.activation, mean, 1.0 / sqrt(var + jb->stats.eps));
}

static inline int FN(bad_job)(const fn_row_job *jb)
{
    const fn_affine *af = &jb->affine;
    const int act = jb->epilogue.activation;
    return (af->elementwise && (!af->weight || !af->bias)) ||
           (jb->stats.given && (!jb->stats.mean || !jb->stats.var)) || act < 0 ||
           act >= FN_NUM_ACT;
}

/* Table entry normalize_rows. When the statistics are computed, groups that fit in cache
 * (fn_fuse_bytes) and share out evenly over the threads are normalized right after their
 * statistics; others go in batches of about half the last-level cache, statistics then
 * normalization. Either way the data comes from memory once when it fits, and the results are
 * the same bits. */
/* normalize_rows with the statistics given, a per-group affine and rows shorter than a unit of
 * work (eval BatchNorm on late CNN stages: 7x7 planes): each group's coefficients are computed
 * once (by coefs: group_apply's arithmetic), and a unit of work is several whole rows, taken in memory
 * order (rows outer when rows lie further apart than groups). */
static int FN(given_short_rows)(const T *x, T *y, const fn_row_job *jb, int n_threads)
{
    const fn_rows *s = &jb->shape;
    const fn_affine *af = &jb->affine;
    const int64_t P2 = s->groups, Q = s->rows, L = s->row_len, P = s->outer * P2, R = P * Q;
    const int act = jb->epilogue.activation;
    CT *co = (CT *)malloc((size_t)(3 * P) * sizeof(CT));
    if (!co)
        return FN_ENOMEM;
    CT *cm = co, *ca = co + P, *cc = co + 2 * P;
    /* group g = (p1, p2) is coefficient entry (p1, p2), with weight[p2] (group_step 1) */
    const fn_coef_job cj = {s->outer, P2, P2, 1, jb->stats.mean, jb->stats.var, jb->stats.eps,
                            af->weight, af->bias};
    const fn_coefs cf = {cm, ca, cc};
    FN(coefs)(&cj, &cf);
    const int rows_outer = Q > 1 && fn_abs(s->xs[2]) > fn_abs(s->xs[1]);
    const int64_t rpu = FN_NCHUNK / L, U = (R + rpu - 1) / rpu;
    const int nt = fn_eff_threads(R * L, U, n_threads);
    FN_PFOR(nt, u, U, {
        const int64_t t1 = (u + 1) * rpu < R ? (u + 1) * rpu : R;
        for (int64_t t = u * rpu; t < t1; t++) {
            int64_t g, q; /* row t: t = (p1 * Q + q) * P2 + p2 rows outer, else t = g * Q + q */
            if (rows_outer) {
                q = (t / P2) % Q;
                g = t / (Q * P2) * P2 + t % P2;
            } else {
                g = t / Q;
                q = t % Q;
            }
            const int64_t p1 = g / P2, p2 = g % P2;
            FN_SCALE_RUN(act, x + p1 * s->xs[0] + p2 * s->xs[1] + q * s->xs[2],
                         y + p1 * s->ys[0] + p2 * s->ys[1] + q * s->ys[2], L, s->xs[3], s->ys[3],
                         cm[g], ca[g], cc[g]);
        }
    });
    free(co);
    return FN_OK;
}

static int FN(normalize_rows)(const void *xv, void *yv, const fn_row_job *jb, int n_threads)
{
    const T *x = (const T *)xv;
    T *y = (T *)yv;
    const fn_rows *s = &jb->shape;
    const fn_affine *af = &jb->affine;
    const int64_t P2 = s->groups, Q = s->rows, L = s->row_len, P = s->outer * P2;
    const int given = jb->stats.given, rms = jb->stats.rms, act = jb->epilogue.activation;
    const double eps = jb->stats.eps;
    double *gmean = jb->stats.mean, *gvar = jb->stats.var;
    if (FN(bad_job)(jb))
        return FN_EINVAL;
    if (P <= 0 || Q <= 0 || L <= 0)
        return FN_OK;
    const fn_rowplan pl = fn_plan_rows(Q, L);
    const int64_t gsize = Q * L;
    const int nt = fn_eff_threads(P * gsize, P * pl.nb, n_threads);
    /* Fused: each thread takes whole groups and normalizes a group right after its statistics,
     * while it is still in cache. Needs enough groups to share out evenly and groups that fit. */
    if (!given && FN(fuse_ok)(gsize * (int64_t)sizeof(T), P, nt)) {
        const int ntf = P < nt ? (int)P : nt;
        FN_PFOR(ntf, g, P, { FN(fused_group)(x, y, g, jb, &pl); });
        return FN_OK;
    }
    if (given && !af->elementwise && af->group_step == 1 && af->row_step == 0 && L < FN_NCHUNK)
        return FN(given_short_rows)(x, y, jb, n_threads);
    /* Statistics given, or few or large groups: block-parallel statistics, then a parallel
     * normalize pass over row chunks. With statistics to compute, groups go in batches that fit
     * in half the last-level cache, so the normalize pass reads each batch from there rather
     * than from memory. Batches change the order of the work, not its blocks: same bits. */
    int64_t batch = given ? P : fn_batch_bytes() / (gsize * (int64_t)sizeof(T));
    if (batch < 1)
        batch = 1;
    else if (batch > P)
        batch = P;
    const int64_t ns = given ? 0 : fn_row_stats_scratch(batch, Q, L);
    double *buf = (double *)malloc((size_t)(3 * P + ns) * sizeof(double));
    if (!buf)
        return FN_ENOMEM;
    double *mean = buf, *var = buf + P, *rstd = buf + 2 * P, *part = buf + 3 * P;
    if (given) {
        memcpy(mean, gmean, (size_t)P * sizeof(double));
        memcpy(var, gvar, (size_t)P * sizeof(double));
    }
    const int64_t cpl = (L + FN_NCHUNK - 1) / FN_NCHUNK;
    /* With the statistics given the pass sweeps the whole input once: in memory order, so that
     * the prefetchers see long streams. When rows lie further apart than groups (BatchNorm on
     * NCHW: a row is one sample's channel plane), that is rows outer, groups inner. */
    const int rows_outer = given && Q > 1 && fn_abs(s->xs[2]) > fn_abs(s->xs[1]);
    for (int64_t g0 = 0; g0 < P; g0 += batch) {
        const int64_t g1 = g0 + batch < P ? g0 + batch : P;
        if (!given)
            FN(row_stats)(x, P2, Q, L, s->xs, rms, g0, g1, mean + g0, var + g0, part, n_threads);
        for (int64_t g = g0; g < g1; g++) {
            if (!given) {
                var[g] /= (double)gsize; /* m2 -> biased variance (rms: mean of squares) */
                if (gmean)
                    gmean[g] = mean[g];
                if (gvar)
                    gvar[g] = var[g];
            }
            rstd[g] = 1.0 / sqrt(var[g] + eps);
        }
        const int64_t U = (g1 - g0) * Q * cpl;
        const int ntn = fn_eff_threads((g1 - g0) * gsize, U, n_threads);
        FN_PFOR(ntn, u, U, {
            int64_t g, q; /* unit u: chunk u % cpl of row q of group g */
            if (rows_outer) { /* u = ((p1 * Q + q) * P2 + p2) * cpl + chunk; here g0 = 0 */
                const int64_t t = u / cpl, p1 = t / (Q * P2);
                q = (t / P2) % Q;
                g = p1 * P2 + t % P2;
            } else { /* u = ((g - g0) * Q + q) * cpl + chunk */
                const int64_t row = g0 * Q + u / cpl;
                g = row / Q;
                q = row % Q;
            }
            const int64_t l0 = (u % cpl) * FN_NCHUNK, l1 = l0 + FN_NCHUNK < L ? l0 + FN_NCHUNK : L;
            const int64_t p1 = g / P2, p2 = g % P2;
            FN(group_apply)(x + p1 * s->xs[0] + p2 * s->xs[1], y + p1 * s->ys[0] + p2 * s->ys[1],
                            p2, q, q + 1, l0, l1, s, af, act, mean[g], rstd[g]);
        });
    }
    free(buf);
    return FN_OK;
}


/* Table entry add_normalize_rows (see fn_add_job). Fused like normalize_rows: a thread adds a
 * group into the sum, then takes its statistics and normalizes it from there while it is in
 * cache, so x and residual are read once. Otherwise the whole sum first, then normalize_rows
 * on it. Both normalize the stored (rounded) sum with normalize_rows' blocks: the result is
 * normalize_rows of x + residual, bit for bit. */
static int FN(add_normalize_rows)(const void *xv, void *yv, const fn_add_job *jb, int n_threads)
{
    const T *x = (const T *)xv, *r = (const T *)jb->residual;
    T *y = (T *)yv;
    const fn_rows *s = &jb->norm.shape;
    const int64_t P2 = s->groups, Q = s->rows, L = s->row_len, P = s->outer * P2;
    if (FN(bad_job)(&jb->norm) || jb->norm.stats.given || !r)
        return FN_EINVAL;
    if (P <= 0 || Q <= 0 || L <= 0)
        return FN_OK;
    /* the job normalize_rows runs: from the sum (in sum, or in y) into y */
    T *t = jb->sum ? (T *)jb->sum : y;
    const int64_t *ts = jb->sum ? jb->ss : s->ys, *xs = s->xs, *rs = jb->rs;
    fn_row_job nj = jb->norm;
    memcpy(nj.shape.xs, ts, sizeof nj.shape.xs);
    const fn_rowplan pl = fn_plan_rows(Q, L);
    const int nt = fn_eff_threads(P * Q * L, P * pl.nb, n_threads);
    if (FN(fuse_ok)(Q * L * (int64_t)sizeof(T), P, nt)) {
        const int ntf = P < nt ? (int)P : nt;
        FN_PFOR(ntf, g, P, {
            const int64_t p1 = g / P2, p2 = g % P2;
            for (int64_t q = 0; q < Q; q++)
                FN(add_run)(x + p1 * xs[0] + p2 * xs[1] + q * xs[2],
                            r + p1 * rs[0] + p2 * rs[1] + q * rs[2],
                            t + p1 * ts[0] + p2 * ts[1] + q * ts[2], L, xs[3], rs[3], ts[3]);
            FN(fused_group)(t, y, g, &nj, &pl);
        });
        return FN_OK;
    }
    const int64_t cpl = (L + FN_NCHUNK - 1) / FN_NCHUNK, U = P * Q * cpl;
    const int nta = fn_eff_threads(P * Q * L, U, n_threads);
    FN_PFOR(nta, u, U, {
        const int64_t row = u / cpl, g = row / Q, q = row % Q, p1 = g / P2, p2 = g % P2;
        const int64_t l0 = (u % cpl) * FN_NCHUNK, l1 = l0 + FN_NCHUNK < L ? l0 + FN_NCHUNK : L;
        FN(add_run)(x + p1 * xs[0] + p2 * xs[1] + q * xs[2] + l0 * xs[3],
                    r + p1 * rs[0] + p2 * rs[1] + q * rs[2] + l0 * rs[3],
                    t + p1 * ts[0] + p2 * ts[1] + q * ts[2] + l0 * ts[3], l1 - l0, xs[3], rs[3],
                    ts[3]);
    });
    return FN(normalize_rows)(t, y, &nj, n_threads);
}

#include "fn_backward_impl.h"

static const fn_kernel_table FN(table) = {
    FN_STR(S), (int)sizeof(T), (int)sizeof(CT), FN(row_moments), FN(col_moments), FN(coefs),
    FN(normalize_cols), FN(normalize_rows), FN(add_normalize_rows),
    FN(grad_sums_rows), FN(grad_sums_cols), FN(grad_apply_rows), FN(grad_apply_cols), FN(grad_rows),
    FN(grad_layer), FN(grad_eval_cols),
};

#undef FN_SCALE_RUN
#undef FN_AFFINE_RUN
#undef FN_COLS_RUN

#undef FN
#undef FN_CAT
#undef FN_CAT_
#undef T
#undef CT
#undef S
#undef LD
#undef ST
#undef FN_CTMAX
#undef ACT
#undef FN_BUFFERED
#undef FN_LOADBUF
#undef FN_STOREBUF
#undef FN_DIRECT
