/* Kernel bodies, compiled once per storage dtype: fn_kernels.c defines, for each dtype,
 *   T        the stored element type       (float, double; uint16_t for float16 and bfloat16)
 *   CT       the compute type of weights, biases, coefficients and the normalize arithmetic
 *   S        the name suffix                              (f32, f64, f16, bf16)
 *   LD(v)    a stored element as CT, ST(v) a CT value as T
 *   FN_CTMAX CT's largest finite value
 *   ACT(v, act) the activation act applied to a CT value
 *   FN_BUFFERED 1 for a type whose normalize loops run float32's on a float buffer filled by
 *            FN_LOADBUF(x, stride, n, buf) and emptied by FN_STOREBUF(buf, n, y, stride)
 *   FN_DIRECT(scale / affine / cols), when defined, does what it can of a contiguous
 *            activation-free run first, in registers (returns how many elements); unbuffered
 *            types use its scale and affine only
 *   FN_SUMS16(isa), when defined, the float-partial statistics loop of a 16-bit type
 * and includes this file once per dtype; the file ends with the dtype's kernel table, FN(table),
 * and consumes (undefines) these parameters. Not a public header. */

#ifndef FN_UNSHIFTED
#define FN_UNSHIFTED 0 /* the statistics sum x unshifted first (fn_unshifted_ok) */
#endif
/* whether block_moments looks for centred blocks: float32 (FN_UNSHIFTED) and the 16-bit types'
 * float loops (FN_SUMS16) sum those unshifted first */
#ifdef FN_SUMS16
#define FN_LOOK 1
#else
#define FN_LOOK FN_UNSHIFTED
#endif

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

/* The shift m of a group's normalization (x - m) * a + c, and the remainder dl = mean - m that
 * goes into c = b - dl * a. Data far from zero (|mean| > 4 std; NaN statistics too) is centred
 * on its mean rounded to CT, the remainder kept in double, so that no digits are lost to
 * cancellation. Otherwise m = 0 and the whole mean is in c: y = x * a + c, whose rounding of
 * x * a costs at most about 8 units in the last place of |a| * std more (tests/test_accuracy.py),
 * and the channels-last loops then read two coefficients per element instead of three
 * (normalize_cols). Constant data (var = 0) stays exact: it is shifted unless it is 0. */
static inline CT FN(centre)(double mean, double var, double *dl)
{
    const CT m = mean * mean <= 16.0 * var ? (CT)0 : FN(narrow)(mean);
    *dl = mean - (double)m;
    return m;
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
#ifdef FN_ROWS_SIMD
#define VLOADT_M FN(fn_load8m)
#define VMSUB fn_msub8
#endif
#include "fn_simd_impl.h"
#endif

/* the 512-bit loops again as pairs of 256-bit halves (fn_pd2: the same bits), for float32 */
#ifdef FN_PAIRS_LOAD
#define VISA avx512p
#define VFUNC FN_PAIR_FUNC
#define V fn_pd2
#define VW 8
#define VZERO fn_p2_zero
#define VSET1 fn_p2_set1
#define VSUB fn_p2_sub
#define VADD fn_p2_add
#define VFMA fn_p2_fma
#define VLOADD fn_p2_load
#define VSTORED fn_p2_store
#define VHSUM fn_p2_hsum
#define VLOADT FN_PAIRS_LOAD
#define VLOADT_M fn_p2_load_m_f32
#define VMSUB fn_p2_msub
#include "fn_simd_impl.h"
/* a 512-bit statistics loop: its pair form where fn_pairs_ok */
#define FN_V512(name) (fn_pairs_ok() ? FN(FN_CAT(name, avx512p)) : FN(FN_CAT(name, avx512)))
#else
#define FN_V512(name) FN(FN_CAT(name, avx512))
#endif

/* Adds sum(x - k) and sum((x - k)^2) over len elements at stride s to *s1, *s2. The order of
 * additions depends only on len (and the CPU's path), never on threads. k == 0 skips the
 * subtractions (the same bits). */
static inline void FN(run_sums)(const T *x, int64_t len, int64_t s, double k, int lowp,
                                double *s1, double *s2)
{
    double t1 = 0.0, t2 = 0.0, u1 = 0.0, u2 = 0.0;
    int64_t i = 0;
#if defined(FN_SUMS16) && FN_AVX2
    /* lowp: the 16-bit types' float-partial loops (k is one of their values: exact in float) */
    if (lowp && s == 1 && len >= 32 && fn_simd_level() >= 2)
        i = k == 0.0 ? FN_SUMS16_0(avx512)(x, len, 0.0f, &t1, &t2)
                     : FN_SUMS16(avx512)(x, len, (float)k, &t1, &t2);
    else if (lowp && s == 1 && len >= 16 && fn_simd_level() >= 1)
        i = k == 0.0 ? FN_SUMS16_0(avx2)(x, len, 0.0f, &t1, &t2)
                     : FN_SUMS16(avx2)(x, len, (float)k, &t1, &t2);
    else
#endif
#if FN_AVX512
    if (s == 1 && len >= 32 && fn_simd_level() >= 2)
        i = k == 0.0 ? FN_V512(run_sums0)(x, len, k, &t1, &t2)
                     : FN_V512(run_sums)(x, len, k, &t1, &t2);
    else
#endif
#if FN_AVX2
    if (s == 1 && len >= 16 && fn_simd_level() >= 1)
        i = k == 0.0 ? FN(run_sums0_avx2)(x, len, k, &t1, &t2)
                     : FN(run_sums_avx2)(x, len, k, &t1, &t2);
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

/* run_sums (k == 0: of x itself, the same bits) over nr rows of len elements at stride s, sq
 * apart, added to *s1, *s2: contiguous rows in one AVX-512 rows loop (fn_simd_impl.h,
 * rows_sums: masked remainders, the lanes summed once), else row by row. */
static inline void FN(rows_run_sums)(const T *x, int64_t nr, int64_t sq, int64_t len, int64_t s,
                                     double k, double *s1, double *s2)
{
#if FN_AVX512 && defined(FN_ROWS_SIMD)
    if (s == 1 && fn_simd_level() >= 2) {
        double t1, t2;
        if (k == 0.0)
            FN_V512(rows_sums0)(x, nr, sq, len, &t1, &t2);
        else
            FN_V512(rows_sums)(x, nr, sq, len, k, &t1, &t2);
        *s1 += t1;
        *s2 += t2;
        return;
    }
#endif
    for (int64_t q = 0; q < nr; q++)
        FN(run_sums)(x + q * sq, len, s, k, 0, s1, s2);
}

#ifdef FN_SUMS16
/* run_sums' float-partial loops (lowp) over nr contiguous rows of len elements, sq apart, added
 * to *s1, *s2: in one call with AVX-512 BW (the lanes summed once for all the rows; rows of any
 * length, the remainder masked), else row by row. */
static inline void FN(rows_sums16)(const T *x, int64_t nr, int64_t sq, int64_t len, double k,
                                   double *s1, double *s2)
{
#if FN_AVX2
    if (fn_bw_ok()) {
        double t1, t2;
        if (k == 0.0)
            FN_SUMS16R_0(x, nr, sq, len, 0.0f, &t1, &t2);
        else
            FN_SUMS16R(x, nr, sq, len, (float)k, &t1, &t2);
        *s1 += t1;
        *s2 += t2;
        return;
    }
#endif
    for (int64_t q = 0; q < nr; q++)
        FN(run_sums)(x + q * sq, len, 1, k, 1, s1, s2);
}
#endif

/* run_sums with k = 0 for the sum of squares alone (RMSNorm): *s2 gets the same bits. */
static inline void FN(run_sumsq)(const T *x, int64_t len, int64_t s, double *s2)
{
    double t2 = 0.0, u2 = 0.0;
    int64_t i = 0;
#if FN_AVX512
    if (s == 1 && len >= 32 && fn_simd_level() >= 2)
        i = FN_V512(run_sumsq)(x, len, &t2);
    else
#endif
#if FN_AVX2
    if (s == 1 && len >= 16 && fn_simd_level() >= 1)
        i = FN(run_sumsq_avx2)(x, len, &t2);
#endif
    for (; i + 2 <= len; i += 2) {
        const double d = (double)LD(x[i * s]), e = (double)LD(x[(i + 1) * s]);
        t2 += d * d;
        u2 += e * e;
    }
    for (; i < len; i++) {
        const double d = (double)LD(x[i * s]);
        t2 += d * d;
    }
    *s2 += t2 + u2;
}

/* run_sumsq over nr rows as rows_run_sums (rows_sumsq: the same bits as its k == 0 s2) */
static inline void FN(rows_run_sumsq)(const T *x, int64_t nr, int64_t sq, int64_t len, int64_t s,
                                      double *s2)
{
#if FN_AVX512 && defined(FN_ROWS_SIMD)
    if (s == 1 && fn_simd_level() >= 2) {
        double t2;
        FN_V512(rows_sumsq)(x, nr, sq, len, &t2);
        *s2 += t2;
        return;
    }
#endif
    for (int64_t q = 0; q < nr; q++)
        FN(run_sumsq)(x + q * sq, len, s, s2);
}

/* Whether a group's rows (several, contiguous: sl == 1, len elements each, sq apart) are short
 * and far apart, as a channel's rows in NCHW BatchNorm training (one per sample, hundreds of KB
 * apart).
 * Where FN_GB such groups fit in FN_OUTER_BYTES, normalize_rows' fused path takes up to FN_GB
 * of them at a time (at most P / threads) and fused_groups reads row q of every group before
 * row q + 1 (rows_sums_m through short_moments, or outer_moments for groups of several blocks;
 * the normalize pass likewise): memory in order, not a few hundred bytes at each of a group's
 * rows, which the hardware prefetchers do not follow. The same bits as one group at a time.
 * (Rows of FN_OUTER_ROW_BYTES are far shorter than FN_BLOCK elements: blocks are whole rows.
 * float64 groups of several blocks exceed FN_OUTER_BYTES: outer_moments runs for float32.)
 * Two threads, against one group at a time: BatchNorm training (16, 2048, 7, 7) 0.75-0.79x the
 * time, (64, 2048, 7, 7) 0.80-0.99x, (32, 1024, 14, 14) 0.75-0.87x, (16, 512, 22, 22)
 * 0.63-0.79x; with 10 groups of 50 KB at a time (64, 1024, 14, 14) was 0.89-1.10x, 4 of 124 KB
 * (64, 512, 22, 22) 0.98-1.05x: those keep one group at a time. */
static inline int FN(rows_outer)(int64_t nr, int64_t len, int64_t sq, int64_t sl)
{
#if FN_AVX512 && defined(FN_ROWS_SIMD)
    return sl == 1 && nr > 1 && len * (int64_t)sizeof(T) <= FN_OUTER_ROW_BYTES &&
           fn_abs(sq) * (int64_t)sizeof(T) >= 4096 && fn_simd_level() >= 2;
#else
    (void)nr, (void)len, (void)sq, (void)sl;
    return 0;
#endif
}

/* Whether a block's float-partial sums (run_sums' lowp) are as good as double's: finite; a sum
 * of squares far above float's underflow (so that terms lost below it do not count); and, with
 * the shift, s2 - s1^2 / n at least 1/16 of s2 (the shift within about 4 standard deviations of
 * the mean), so that cancellation does not magnify float's rounding into the variance. NaN and
 * inf (in the data or from overflow) fail the test. */
static inline int FN(lowp_ok)(double n, double s1, double s2, int rms)
{
    return isfinite(s1) && s2 >= n * 0x1p-100 && s2 <= DBL_MAX &&
           (rms || s1 * s1 <= n * s2 * (15.0 / 16.0));
}

/* Whether a run of n elements (s apart) looks centred enough to be summed unshifted first: of
 * its first 4 values (in the cache line that the shift reads anyway, when contiguous; a look
 * further in cost a cache miss per block, 10% of LayerNorm (512, 768), and 8 values cost 5%),
 * the largest |x| is within 4 times their range (about |mean| < 7 std for independent normal
 * values, inside fn_unshifted_ok's 16). Data far from zero then goes straight to the shifted
 * sums instead of paying for a second pass (LayerNorm (512, 768) at |mean| = 100 std, one
 * thread: 0.085 ms before unshifted sums, 0.123 with them and no look, 0.093-0.096 with it).
 * Correlated neighbours (image planes) can make a centred run look offset, which only costs
 * the faster first try. The look sees the block's data only, so the choice, and the bits, do
 * not depend on the threads. */
static inline int FN(looks_centred)(const T *x, int64_t n, int64_t s)
{
    if (n < 4)
        return 0;
    const double a = (double)LD(x[0]), b = (double)LD(x[s]);
    const double c = (double)LD(x[2 * s]), d = (double)LD(x[3 * s]);
    const double l0 = a < b ? a : b, h0 = a < b ? b : a, l1 = c < d ? c : d, h1 = c < d ? d : c;
    const double l = l0 < l1 ? l0 : l1, h = h0 > h1 ? h0 : h1;
    return (fabs(l) > fabs(h) ? fabs(l) : fabs(h)) <= 4.0 * (h - l); /* max |x| <= 4 range */
}

/* Whether a block of n elements is looked at (looks_centred) at all: float32 blocks of fewer than
 * FN_LOOK_MIN go straight to the shifted sums, the look and fn_unshifted_ok's test costing more
 * there than the subtraction they spare (LayerNorm over 96 channels, 2.4M elements, one thread,
 * builds alternating, best of six: 1.28 -> 0.87 ms; 64 channels 1.60 -> 1.12, 128 1.11 ->
 * 1.03, 192 0.93 -> 0.89). By the block's size alone, as every path counts it. */
#ifdef FN_SUMS16
#define FN_LOOK_N(n) 1
#else
#define FN_LOOK_N(n) ((n) >= FN_LOOK_MIN)
#endif

/* looks_centred for a tile's w columns (sc apart) over rows [r0, r1) (sr apart), from every
 * eighth column of its first and middle rows, in aggregate: the sum over those columns of the
 * larger |x| within 4 times the sum of the two values' distances (one unlucky column does not
 * decide; the exact test, fn_unshifted_ok, still follows per column). All columns of every
 * tile cost 20% of channels-last GroupNorm (2, 640, 32, 32)'s tiles of 64 rows. */
static inline int FN(tile_looks_centred)(const T *xt, int64_t r0, int64_t r1, int64_t sr,
                                         int64_t sc, int64_t w)
{
    const T *a = xt + r0 * sr, *b = xt + (r0 + (r1 - r0) / 2) * sr;
    double sm = 0.0, sd = 0.0;
    for (int64_t j = 0; j < w; j += 8) {
        const double u = (double)LD(a[j * sc]), v = (double)LD(b[j * sc]);
        sm += fabs(u) > fabs(v) ? fabs(u) : fabs(v);
        sd += fabs(u - v);
    }
    return sm <= 4.0 * sd;
}

/* A block's moments from its sums s1, s2 (rms: s2 alone, the sum of squares) of nr rows of len
 * elements at stride sl, sq apart, from x, n in all: shifted by k, or, with tried, of x itself
 * (block_moments' unshifted try), kept where fn_unshifted_ok accepts them and otherwise summed
 * again, shifted by k. */
static inline void FN(block_finish)(const T *x, int64_t nr, int64_t sq, int64_t len, int64_t sl,
                                    double n, double k, int tried, int rms, double s1, double s2,
                                    double *mean, double *m2)
{
    if (rms) {
        *mean = 0.0;
        *m2 = fn_one_nan(s2);
        return;
    }
    if (tried) {
        const double mu = s1 / n;
        if (fn_unshifted_ok(n, mu, s2 - s1 * mu)) {
            k = 0.0;
        } else {
            s1 = s2 = 0.0;
            FN(rows_run_sums)(x, nr, sq, len, sl, k, &s1, &s2);
        }
    }
    fn_finish_block(n, k, s1, s2, mean, m2);
}

/* Moments of block b of a group (rows q at stride sq, elements l at stride sl). Shifted by the
 * block's first element: sums of (x - k) keep full precision for data far from zero, and
 * constant data gives mean == k and m2 == 0 exactly. With rms, mean = 0 and m2 = sum(x^2)
 * instead: a sum of squares needs no shift (nothing cancels), and an inf then gives m2 = inf
 * rather than inf - inf. A block that looks centred sums x itself first (float32: kept when
 * fn_unshifted_ok); the 16-bit types sum in float first (unshifted, then shifted) and in
 * double only when lowp_ok rejects that. Returns the block's element count. */
static inline __attribute__((always_inline)) double
FN(block_moments)(const T *xg, const fn_rowplan *pl, int64_t b, int64_t Q, int64_t L, int64_t sq,
                  int64_t sl, int rms, double *mean, double *m2)
{
    int64_t q0, q1, l0, l1;
    fn_block_range(pl, b, Q, L, &q0, &q1, &l0, &l1);
    double k = rms ? 0.0 : fn_shift((double)LD(xg[q0 * sq + l0 * sl]));
    const double n = (double)((q1 - q0) * (l1 - l0));
    double s1 = 0.0, s2 = 0.0;
    /* whole short rows back to back (NCHW GroupNorm / InstanceNorm planes): one run, not a
     * loop of short ones (each with its own reduction; half the statistics' time) */
    if (sl == 1 && sq == L && l0 == 0 && l1 == L && q1 - q0 > 1) {
        L = (q1 - q0) * L;
        l1 = L;
        q1 = q0 + 1;
    }
    int done = 0;
    /* x itself first where the block looks centred (a subtraction less per element) */
    const int centred =
        FN_LOOK && !rms && k != 0.0 && FN_LOOK_N(n) &&
        FN(looks_centred)(xg + q0 * sq + l0 * sl, l1 - l0, sl);
#ifdef FN_SUMS16
    /* where the float loops run */
    const int lowp = sl == 1 && (l1 - l0 >= 16 || fn_bw_ok());
    /* the 16-bit types' float loops: unshifted where centred (their squares are exact in
     * float), then shifted, each kept when lowp_ok */
    for (int shifted = !centred; lowp && !done && shifted < 2; shifted++) {
        s1 = s2 = 0.0;
        FN(rows_sums16)(xg + q0 * sq + l0, q1 - q0, sq, l1 - l0, shifted ? k : 0.0, &s1, &s2);
        if ((done = FN(lowp_ok)(n, s1, s2, rms)) && !shifted)
            k = 0.0;
    }
#endif
    const T *xb = xg + q0 * sq + l0 * sl;
    const int tried = FN_UNSHIFTED && centred && !done; /* float32: sums of x itself first */
    if (!done) {
        s1 = s2 = 0.0;
        if (rms)
            FN(rows_run_sumsq)(xb, q1 - q0, sq, l1 - l0, sl, &s2);
        else
            FN(rows_run_sums)(xb, q1 - q0, sq, l1 - l0, sl, tried ? 0.0 : k, &s1, &s2);
    }
    FN(block_finish)(xb, q1 - q0, sq, l1 - l0, sl, n, k, tried, rms, s1, s2, mean, m2);
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

#ifndef FN_SUMS16
/* group_moments of m <= FN_GB one-block groups from g0 on, the same bits: the sums of every
 * group first, then their finishing arithmetic in one loop that vectorizes, and the groups
 * whose unshifted sums fn_unshifted_ok rejects summed again, shifted, as block_moments does.
 * One group at a time, a short group's division and checks waited on its sums and held up the
 * next group's (LayerNorm over 32-128 channels: a third of the time in group_moments). */
static inline void FN(short_moments)(const T *x, const fn_rows *s, int64_t g0, int64_t m,
                                     int rms, double *mean, double *m2)
{
    int64_t Q = s->rows, L = s->row_len;
    const int64_t sq = s->xs[2], sl = s->xs[3];
    const double n = (double)(Q * L);
    if (sl == 1 && sq == L && Q > 1) { /* whole short rows back to back: one run */
        L *= Q;
        Q = 1;
    }
    double k[FN_GB], kk[FN_GB], s1[FN_GB], s2[FN_GB];
    int cen[FN_GB];
    const T *xg[FN_GB];
    const int outer = m > 1 && FN(rows_outer)(Q, L, sq, sl);
#if FN_AVX512 && defined(FN_ROWS_SIMD)
    /* single contiguous rows (LayerNorm) two a call, rows_sums_2: rows of 128-192, one thread,
     * 2.4M elements, builds alternating, best of six: 0.90 -> 0.84 ms, 0.84 -> 0.78 (64-96
     * level) */
    const int pair = !rms && Q == 1 && sl == 1 && fn_simd_level() >= 2;
#endif
    int64_t p1 = g0 / s->groups, p2 = g0 % s->groups; /* group g0 + i, counted up */
    for (int64_t i = 0; i < m; i++, fn_next_group(&p1, &p2, s->groups)) {
        xg[i] = x + p1 * s->xs[0] + p2 * s->xs[1];
        k[i] = rms ? 0.0 : fn_shift((double)LD(xg[i][0]));
        cen[i] = FN_UNSHIFTED && !rms && k[i] != 0.0 && FN_LOOK_N(n) &&
                 FN(looks_centred)(xg[i], L, sl);
        s1[i] = s2[i] = 0.0;
        kk[i] = cen[i] ? 0.0 : k[i];
        if (outer)
            continue;
#if FN_AVX512 && defined(FN_ROWS_SIMD)
        if (pair && (i & 1)) { /* rows i - 1 and i in one call */
            FN_V512(rows_sums_2)(xg + i - 1, L, kk + i - 1, s1 + i - 1, s2 + i - 1);
            continue;
        }
        if (pair && i + 1 < m)
            continue; /* summed with row i + 1 */
#endif
        if (rms)
            FN(rows_run_sumsq)(xg[i], Q, sq, L, sl, &s2[i]);
        else
            FN(rows_run_sums)(xg[i], Q, sq, L, sl, kk[i], &s1[i], &s2[i]);
    }
#if FN_AVX512 && defined(FN_ROWS_SIMD)
    if (outer) /* kk = 0 (centred, RMSNorm): rows_sums0's bits, and rows_sumsq's in s2 */
        FN_V512(rows_sums_m)(xg, m, Q, sq, L, kk, s1, s2);
#endif
    int bad = 0;
    for (int64_t i = 0; i < m; i++) {
        const double mu = s1[i] / n, q = s2[i] - s1[i] * mu;
        const int again = cen[i] && !fn_unshifted_ok(n, mu, q);
        mean[i] = rms ? 0.0 : fn_one_nan((cen[i] ? 0.0 : k[i]) + mu);
        m2[i] = fn_one_nan(rms ? s2[i] : q < 0.0 ? 0.0 : q);
        cen[i] = again;
        bad |= again;
    }
    for (int64_t i = 0; bad && i < m; i++) {
        if (!cen[i])
            continue;
        double t1 = 0.0, t2 = 0.0;
        FN(rows_run_sums)(xg[i], Q, sq, L, sl, k[i], &t1, &t2);
        fn_finish_block(n, k[i], t1, t2, &mean[i], &m2[i]);
    }
}
#endif

#if FN_AVX512 && defined(FN_ROWS_SIMD)
/* group_moments of m <= FN_GB groups from g0 on whose rows are short and far apart (rows_outer)
 * and that take several blocks of whole rows: block b of every group, row q of each before row
 * q + 1 (rows_sums_m), then each group's block finished and merged as group_moments does it,
 * block_moments' choices included (its shift, the unshifted try where the block looks centred,
 * again shifted where fn_unshifted_ok rejects it). The same bits as group_moments. */
static void FN(outer_moments)(const T *x, const fn_rows *s, const fn_rowplan *pl, int64_t g0,
                              int64_t m, int rms, double *mean, double *m2)
{
    const int64_t Q = s->rows, L = s->row_len, sq = s->xs[2];
    const T *xg[FN_GB], *xb[FN_GB];
    double n[FN_GB], mu[FN_GB], qs[FN_GB], k[FN_GB], kk[FN_GB], s1[FN_GB], s2[FN_GB];
    int cen[FN_GB];
    int64_t p1 = g0 / s->groups, p2 = g0 % s->groups; /* group g0 + i, counted up */
    for (int64_t i = 0; i < m; i++, fn_next_group(&p1, &p2, s->groups)) {
        xg[i] = x + p1 * s->xs[0] + p2 * s->xs[1];
        n[i] = mu[i] = qs[i] = 0.0;
    }
    for (int64_t b = 0; b < pl->nb; b++) {
        int64_t q0, q1, l0, l1;
        fn_block_range(pl, b, Q, L, &q0, &q1, &l0, &l1); /* whole rows: l0 = 0, l1 = L */
        const double bn = (double)((q1 - q0) * L);
        for (int64_t i = 0; i < m; i++) {
            xb[i] = xg[i] + q0 * sq;
            k[i] = rms ? 0.0 : fn_shift((double)LD(xb[i][0]));
            cen[i] = FN_UNSHIFTED && !rms && k[i] != 0.0 && FN_LOOK_N(bn) &&
                     FN(looks_centred)(xb[i], L, 1);
            kk[i] = cen[i] ? 0.0 : k[i];
        }
        FN_V512(rows_sums_m)(xb, m, q1 - q0, sq, L, kk, s1, s2);
        for (int64_t i = 0; i < m; i++) {
            double bm, bq;
            FN(block_finish)(xb[i], q1 - q0, sq, L, 1, bn, k[i], cen[i], rms, s1[i], s2[i], &bm,
                             &bq);
            fn_chan(&n[i], &mu[i], &qs[i], bn, bm, bq);
        }
    }
    for (int64_t i = 0; i < m; i++) {
        mean[i] = mu[i];
        m2[i] = qs[i];
    }
}
#endif

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
    FN_PFOR(n_threads, nt, u, U, {
        const int64_t g = g0 + u / pl.nb;
        FN(block_moments)(x + (g / P2) * xs[0] + (g % P2) * xs[1], &pl, u % pl.nb, Q, L, xs[2],
                          xs[3], rms, &pm[u], &pq[u]);
    });
    if (many) {
        FN_PFOR(n_threads, nt, g, P, {
            double n = 0.0, mu = 0.0, q = 0.0;
            for (int64_t b = 0; b < pl.nb; b++)
                fn_chan(&n, &mu, &q, fn_block_count(&pl, b, Q, L), pm[g * pl.nb + b],
                        pq[g * pl.nb + b]);
            mean[g] = mu;
            m2[g] = q;
        });
    }
}


/* Sums of (x - k[j]) and their squares down rows [r0, r1) (of rows [0, rend)) for each of
 * w <= FN_CB columns (column stride sc) into s1[j], s2[j]; each column adds its rows in order.
 * k NULL: sums of x itself (the same bits as k all 0, without the subtractions). */
static void FN(tile_sums)(const T *x, int64_t r0, int64_t r1, int64_t rend, int64_t sr,
                          int64_t sc, int64_t w, const double *k, double *s1, double *s2)
{
    int64_t j = 0;
#if FN_AVX512
    if (sc == 1 && fn_simd_level() >= 2)
        j = k ? FN_V512(tile_sums)(x, r0, r1, rend, sr, w, k, s1, s2)
              : FN_V512(tile_sums0)(x, r0, r1, rend, sr, w, k, s1, s2);
#endif
#if FN_AVX2
    if (sc == 1 && fn_simd_level() >= 1)
        j += k ? FN(tile_sums_avx2)(x + j, r0, r1, rend, sr, w - j, k + j, s1 + j, s2 + j)
               : FN(tile_sums0_avx2)(x + j, r0, r1, rend, sr, w - j, k, s1 + j, s2 + j);
#endif
    for (; j < w; j++) {
        double t1 = 0.0, t2 = 0.0;
        for (int64_t r = r0; r < r1; r++) {
            const double d = (double)LD(x[r * sr + j * sc]) - (k ? k[j] : 0.0);
            t1 += d;
            t2 += d * d;
        }
        s1[j] = t1;
        s2[j] = t2;
    }
}

/* The columns of a tile that the 16-bit types' float loop (FN_TILE16_FN) summed into s1, s2
 * and lowp_ok accepted, in one piece from the first: all its columns or none (0 for the other
 * types, strided columns, or without AVX-512). */
static inline int64_t FN(tile16)(const T *x, int64_t r0, int64_t r1, int64_t rend, int64_t sr,
                                 int64_t sc, int64_t w, const double *k, double *s1, double *s2)
{
#if defined(FN_SUMS16) && FN_AVX512
    if (sc == 1 && fn_simd_level() >= 2) {
        const int64_t wv = FN_TILE16_FN(x, r0, r1, rend, sr, w, k, s1, s2);
        const double n = (double)(r1 - r0);
        int bad = 0;
        for (int64_t j = 0; j < wv; j++)
            bad |= !FN(lowp_ok)(n, s1[j], s2[j], 0);
        return bad ? 0 : wv;
    }
#else
    (void)x, (void)r0, (void)r1, (void)rend, (void)sr, (void)sc, (void)w, (void)k, (void)s1,
        (void)s2;
#endif
    return 0;
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

/* col_moments' tile from sums of x itself (float32: FN_UNSHIFTED), false where a column does
 * not look centred or fails fn_unshifted_ok (the tile is then summed shifted). */
static inline int FN(unshifted_tile)(const T *xt, int64_t r0, int64_t r1, int64_t R,
                                     const int64_t *xs, int64_t w, double *s1, double *s2,
                                     double *mean, double *m2)
{
    const double n = (double)(r1 - r0);
    if (!FN(tile_looks_centred)(xt, r0, r1, xs[1], xs[2], w))
        return 0;
    FN(tile_sums)(xt, r0, r1, R, xs[1], xs[2], w, NULL, s1, s2);
    return fn_finish_run0(w, n, s1, s2, mean, m2);
}

/* The moments of rows [r0, r1) (of [0, R)) of w <= FN_CB columns from xt (strides xs[1], xs[2])
 * into mean[j], m2[j]: col_moments' tile and group_block's. float32 in cache (unshifted) sums x
 * itself first (a subtraction less per element: the loop is bound by its arithmetic, 1.2x
 * faster) and keeps that where it lost nothing that matters; otherwise each column is shifted
 * by its first row's value, the 16-bit types' float loop taking what it can. */
static inline void FN(tile_moments)(const T *xt, int64_t r0, int64_t r1, int64_t R,
                                    const int64_t *xs, int64_t w, int unshifted, double *mean,
                                    double *m2)
{
    double k[FN_CB], s1[FN_CB], s2[FN_CB];
    if (unshifted && FN(unshifted_tile)(xt, r0, r1, R, xs, w, s1, s2, mean, m2))
        return;
    for (int64_t j = 0; j < w; j++)
        k[j] = fn_shift((double)LD(xt[r0 * xs[1] + j * xs[2]]));
    const int64_t j0 = FN(tile16)(xt, r0, r1, R, xs[1], xs[2], w, k, s1, s2);
    FN(tile_sums)(xt + j0 * xs[2], r0, r1, R, xs[1], xs[2], w - j0, k + j0, s1 + j0, s2 + j0);
    fn_finish_run(w, (double)(r1 - r0), k, s1, s2, mean, m2);
}

/* Rows per block of col_moments for the call described by s (fn_col_stat_rows). group_cols
 * passes the whole call's height when a thread takes one sample at a time, so that the blocks,
 * and the bits, do not depend on which way the thread count made it go. */
static inline int64_t FN(col_block_rows)(const fn_cols *s)
{
    const int64_t tw = fn_col_tile(s->cols, (int64_t)sizeof(T));
    return fn_col_stat_rows(s->rows, s->outer * ((s->cols + tw - 1) / tw),
                            s->outer * s->rows * s->cols);
}

/* Moments of the column layout: tiles of fn_col_tile columns by blocks of rb rows, merged down
 * the row blocks in order. */
static int FN(col_moments_rb)(const void *xv, const fn_cols *s, int64_t rb, double *mean,
                              double *m2, int n_threads)
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
    const int64_t tw = fn_col_tile(C, (int64_t)sizeof(T)), ncb = (C + tw - 1) / tw;
    const int64_t nrb = (R + rb - 1) / rb;
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
    /* unshifted first only for data that fits in the last-level cache: from memory the loop
     * waits on loads, not arithmetic, and measured 10% slower unshifted ((32, 256, 56, 56)
     * float32 channels-last, 98 MB: 3.75 -> 4.1-4.2 ms, one thread) */
    const int unshifted = FN_UNSHIFTED && P1 * R * C * (int64_t)sizeof(T) <= fn_l3_bytes();
    FN_PFOR(n_threads, nt, u, U, {
        const int64_t p1 = u / (nrb * ncb), rbi = (u / ncb) % nrb, cb = u % ncb;
        const int64_t r0 = rbi * rb, r1 = r0 + rb < R ? r0 + rb : R;
        const int64_t c0 = cb * tw, w = c0 + tw < C ? tw : C - c0;
        const int64_t o = (p1 * nrb + rbi) * C + c0;
        FN(tile_moments)(x + p1 * xs[0] + c0 * xs[2], r0, r1, R, xs, w, unshifted, pm + o,
                         pq + o);
    });
    if (buf) { /* runs of columns merged down the row blocks, vectorized across the columns */
        /* at most FN_MERGE_COLS a unit, in units that share evenly among the threads (each
         * column merges alone, so any split gives the same bits; 640 columns of one sample in
         * runs of 256, 256 and 128 kept one thread of two four times as busy) */
        int64_t cpr = (C + FN_MERGE_COLS - 1) / FN_MERGE_COLS;
        if (P1 * cpr % nt)
            cpr = ((P1 * cpr + nt - 1) / nt * nt + P1 - 1) / P1;
        const int64_t mw = ((C + cpr - 1) / cpr + 7) / 8 * 8;
        cpr = (C + mw - 1) / mw;
        FN_PFOR(n_threads, nt, i, P1 * cpr, {
            const int64_t p1 = i / cpr, c0 = (i % cpr) * mw;
            const int64_t n = c0 + mw < C ? mw : C - c0;
            for (int64_t b = 0; b < nrb; b++) {
                const int64_t o = (p1 * nrb + b) * C + c0;
                fn_chan_run(n, (double)(b * rb), (double)((b + 1) * rb <= R ? rb : R - b * rb),
                            mean + p1 * C + c0, m2 + p1 * C + c0, pm + o, pq + o, 1);
            }
        });
        free(buf);
    }
    return FN_OK;
}

/* Moments of the column layout (table entry col_moments). */
static int FN(col_moments)(const void *xv, const fn_cols *s, double *mean, double *m2,
                           int n_threads)
{
    return FN(col_moments_rb)(xv, s, FN(col_block_rows)(s), mean, m2, n_threads);
}

/* The coefficients a, c of m channels of one group (statistics rstd and the mean's remainder
 * dl; weight / bias at stride st, NULL: 1 / 0), in a loop that vectorizes: coefs' multi-channel
 * groups and group_apply's rows. Their arithmetic, so the same bits. */
static FN_HOT void FN(row_coefs)(int64_t m, double rstd, double dl, const CT *w, const CT *b,
                                 int64_t st, CT *a, CT *c)
{
    if (st == 1 && w && b) { /* the usual case, contiguous: a loop of plain vector loads */
        for (int64_t i = 0; i < m; i++) {
            const double ad = rstd * (double)w[i];
            a[i] = FN(narrow)(ad);
            c[i] = FN(narrow)((double)b[i] - dl * ad);
        }
        return;
    }
    for (int64_t i = 0; i < m; i++) {
        const double ad = w ? rstd * (double)w[i * st] : rstd;
        a[i] = FN(narrow)(ad);
        c[i] = FN(narrow)((b ? (double)b[i * st] : 0.0) - dl * ad);
    }
}

/* Table entry coefs: see fn_coef_job. One sqrt and divide per group. */
/* coefs for a run of n entries that are each their own group: a loop that vectorizes (a sqrt
 * and a divide per entry dominate eval BatchNorm on small inputs); the same arithmetic, so the
 * same bits, as the general loop below. */
static inline __attribute__((always_inline)) void
FN(coefs_loop)(int64_t n, const double *mean, const double *var, double eps, const CT *w,
               const CT *bias, CT *mh, CT *a, CT *c, const int hw, const int hb)
{
    for (int64_t j = 0; j < n; j++) {
        const double r = 1.0 / sqrt(var[j] + eps);
        double dl;
        const CT mt = FN(centre)(mean[j], var[j], &dl);
        const double ad = hw ? r * (double)w[j] : r;
        mh[j] = mt;
        a[j] = FN(narrow)(ad);
        c[j] = FN(narrow)((hb ? (double)bias[j] : 0.0) - dl * ad);
    }
}

/* One loop per case of weight and bias (hw, hb constants in each copy). With the NULL tests
 * inside one loop, GCC turned them into masked vector loads from the pointer even when it is
 * NULL, every lane masked off; AMD Zen 4 then takes a slow assist on each such load of an
 * unmapped page: channels-last InstanceNorm (1, 2560, 8, 8) spent 19.5 us of its 63 on these
 * 2560 coefficients, which a loop of the same arithmetic computes in 2.6. */
static FN_HOT void FN(coefs_run)(int64_t n, const double *mean, const double *var, double eps,
                                 const CT *w, const CT *bias, CT *mh, CT *a, CT *c)
{
    if (w && bias)
        FN(coefs_loop)(n, mean, var, eps, w, bias, mh, a, c, 1, 1);
    else if (w)
        FN(coefs_loop)(n, mean, var, eps, w, NULL, mh, a, c, 1, 0);
    else if (bias)
        FN(coefs_loop)(n, mean, var, eps, NULL, bias, mh, a, c, 0, 1);
    else
        FN(coefs_loop)(n, mean, var, eps, NULL, NULL, mh, a, c, 0, 0);
}

static void FN(coefs)(const fn_coef_job *jb, const fn_coefs *out)
{
    const CT *w = (const CT *)jb->weight, *bias = (const CT *)jb->bias;
    CT *mh = (CT *)out->shift, *a = (CT *)out->scale, *c = (CT *)out->offset;
    const int64_t J = jb->channels, JD = jb->channels_per_group;
    if (JD == 1) {
        for (int64_t i = 0; i < jb->outer; i++)
            FN(coefs_run)(J, jb->mean + i * jb->group_step, jb->var + i * jb->group_step, jb->eps,
                          w, bias, mh + i * J, a + i * J, c + i * J);
        return;
    }
    for (int64_t i = 0; i < jb->outer; i++) {
        for (int64_t j0 = 0; j0 < J; j0 += JD) { /* group s: entries j0 .. j0 + JD - 1 */
            const int64_t s = i * jb->group_step + j0 / JD, e0 = i * J + j0;
            const double r = 1.0 / sqrt(jb->var[s] + jb->eps);
            double dl;
            const CT mt = FN(centre)(jb->mean[s], jb->var[s], &dl);
            FN(row_coefs)(JD, r, dl, w ? w + j0 : NULL, bias ? bias + j0 : NULL, 1, a + e0,
                          c + e0);
            for (int64_t e = e0; e < e0 + JD; e++)
                mh[e] = mt;
        }
    }
}

/* The normalize loops. Each is one run of n elements at strides sx, sy; same-index in place
 * (x == y) is allowed. The contiguous case is written apart so that it vectorizes. Each loop is
 * compiled once per activation (act is a constant in each copy: no branch in the inner loop);
 * FN(<loop>_runs)[act] is the copy for act. */
/* Elements of a contiguous output run before y is 64-byte aligned (at most n): the head that a
 * streamed run stores as usual. */
static inline int64_t FN(head)(const T *y, int64_t n)
{
    const int64_t h = (int64_t)(((64 - ((uintptr_t)y & 63)) & 63) / sizeof(T));
    return ((uintptr_t)y % sizeof(T)) || h > n ? n : h;
}

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

/* y = act(((x - mh) * a + c) * w[i]) (an elementwise weight without bias); with mh == c == 0
 * (RMSNorm) the same values as act((x * a) * w[i]) (x - 0 == x, v + 0 == v), which is what runs */
FN_INLINE void FN(weight_body)(const T *x, T *y, int64_t n, int64_t sx, int64_t sy, CT mh, CT a,
                               CT c, const CT *w, const int act)
{
    if (mh == 0 && c == 0) {
        if (sx == 1 && sy == 1) {
            FN_OMP(simd)
            for (int64_t i = 0; i < n; i++)
                y[i] = ST(ACT(LD(x[i]) * a * w[i], act));
        } else {
            for (int64_t i = 0; i < n; i++)
                y[i * sy] = ST(ACT(LD(x[i * sx]) * a * w[i], act));
        }
    } else if (sx == 1 && sy == 1) {
        FN_OMP(simd)
        for (int64_t i = 0; i < n; i++)
            y[i] = ST(ACT(((LD(x[i]) - mh) * a + c) * w[i], act));
    } else {
        for (int64_t i = 0; i < n; i++)
            y[i * sy] = ST(ACT(((LD(x[i * sx]) - mh) * a + c) * w[i], act));
    }
}

/* scale_body, affine_body and weight_body over a contiguous run from its last element down:
 * blocks of 16 from the end, then the first n % 16 (each the same body, so the same bits).
 * Small calls (FN_BACK_BYTES) whose output leads an input by up to 512 bytes modulo 4096
 * (fn_lead_alias) take these, activation-free rows only (FN(back_ok)); large ones keep the
 * forward loops, which the prefetchers follow: backward, eval BatchNorm (4, 256, 56, 56) took
 * 2.8x their time and RMSNorm (2048, 4096) 1.6x. */
static void FN(scale_back)(const T *x, T *y, int64_t n, CT mh, CT a, CT c)
{
    for (; n >= 16; n -= 16)
        FN(scale_body)(x + n - 16, y + n - 16, 16, 1, 1, mh, a, c, FN_ACT_NONE);
    FN(scale_body)(x, y, n, 1, 1, mh, a, c, FN_ACT_NONE);
}
static void FN(affine_back)(const T *x, T *y, int64_t n, CT mh, CT a, CT c, const CT *w,
                            const CT *lb)
{
    for (; n >= 16; n -= 16)
        FN(affine_body)(x + n - 16, y + n - 16, 16, 1, 1, mh, a, c, w + n - 16, lb + n - 16,
                        FN_ACT_NONE);
    FN(affine_body)(x, y, n, 1, 1, mh, a, c, w, lb, FN_ACT_NONE);
}
static void FN(weight_back)(const T *x, T *y, int64_t n, CT mh, CT a, CT c, const CT *w)
{
    for (; n >= 16; n -= 16)
        FN(weight_body)(x + n - 16, y + n - 16, 16, 1, 1, mh, a, c, w + n - 16, FN_ACT_NONE);
    FN(weight_body)(x, y, n, 1, 1, mh, a, c, w, FN_ACT_NONE);
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

/* cols_run for n == NC contiguous columns: the coefficients copied to locals (which the stores
 * cannot alias) stay in registers across the rows, and the row loop has no inner-loop overhead
 * (NHWC with few channels) */
#define FN_COLS_FIXED(NC, act)                                                                   \
    if (n == NC) {                                                                               \
        CT m_[NC], a_[NC], c_[NC];                                                               \
        for (int64_t i = 0; i < NC; i++) {                                                       \
            m_[i] = mh[i];                                                                       \
            a_[i] = a[i];                                                                        \
            c_[i] = c[i];                                                                        \
        }                                                                                        \
        for (int64_t r = 0; r < nr; r++) {                                                       \
            const T *xr = x + r * rx;                                                            \
            T *yr = y + r * ry;                                                                  \
            FN_OMP(simd)                                                                         \
            for (int64_t i = 0; i < NC; i++)                                                     \
                yr[i] = ST(ACT((LD(xr[i]) - m_[i]) * a_[i] + c_[i], act));                       \
        }                                                                                        \
        return;                                                                                  \
    }
#define FN_SCALE_ARGS const T *x, T *y, int64_t n, int64_t sx, int64_t sy, CT mh, CT a, CT c
#define FN_AFFINE_ARGS FN_SCALE_ARGS, const CT *w, const CT *lb
#define FN_WEIGHT_ARGS FN_SCALE_ARGS, const CT *w
/* rows r < nr of n columns each, rows rx / ry apart: one call per unit of rows, not per row */
#define FN_COLS_ARGS                                                                             \
    const T *x, T *y, int64_t nr, int64_t rx, int64_t ry, int64_t n, int64_t sx, int64_t sy,     \
        const CT *mh, const CT *a, const CT *c
#define FN_ACT_LOOPS(K, act)                                                                     \
    static FN_HOT void FN(scale_run_##K)(FN_SCALE_ARGS)                                          \
    {                                                                                            \
        FN(scale_body)(x, y, n, sx, sy, mh, a, c, act);                                          \
    }                                                                                            \
    static FN_HOT void FN(affine_run_##K)(FN_AFFINE_ARGS)                                        \
    {                                                                                            \
        FN(affine_body)(x, y, n, sx, sy, mh, a, c, w, lb, act);                                  \
    }                                                                                            \
    static FN_HOT void FN(weight_run_##K)(FN_WEIGHT_ARGS)                                        \
    {                                                                                            \
        FN(weight_body)(x, y, n, sx, sy, mh, a, c, w, act);                                      \
    }                                                                                            \
    static FN_HOT void FN(cols_run_##K)(FN_COLS_ARGS)                                            \
    {                                                                                            \
        if (sx == 1 && sy == 1) {                                                                \
            FN_COLS_FIXED(16, act)                                                               \
            FN_COLS_FIXED(32, act)                                                               \
            FN_COLS_FIXED(64, act)                                                               \
        }                                                                                        \
        for (int64_t r = 0; r < nr; r++)                                                         \
            FN(cols_body)(x + r * rx, y + r * ry, n, sx, sy, mh, a, c, act);                     \
    }                                                                                            \
    /* cols_run where every shift mh[i] is 0: x * a[i] + c[i], the same bits as (x - 0) *     \
     * a[i] + c[i] with one load less per element (the loop is bound by its loads); 16, 32 or  \
     * 64 columns keep cols_run's coefficients in registers (no loads: 1.2x faster) */          \
    static FN_HOT void FN(cols0_run_##K)(FN_COLS_ARGS)                                           \
    {                                                                                            \
        if (sx != 1 || sy != 1 || n == 16 || n == 32 || n == 64) {                               \
            FN(cols_run_##K)(x, y, nr, rx, ry, n, sx, sy, mh, a, c);                             \
            return;                                                                              \
        }                                                                                        \
        for (int64_t r = 0; r < nr; r++) {                                                       \
            const T *xr = x + r * rx;                                                            \
            T *yr = y + r * ry;                                                                  \
            FN_OMP(simd)                                                                         \
            for (int64_t i = 0; i < n; i++)                                                      \
                yr[i] = ST(ACT(LD(xr[i]) * a[i] + c[i], act));                                   \
        }                                                                                        \
    }
FN_ACT_LOOPS(none, FN_ACT_NONE)
FN_ACT_LOOPS(relu, FN_ACT_RELU)
FN_ACT_LOOPS(silu, FN_ACT_SILU)
FN_ACT_LOOPS(gelu, FN_ACT_GELU)
FN_ACT_LOOPS(gelu_tanh, FN_ACT_GELU_TANH)
#ifdef FN_DIRECT
/* activation-free contiguous runs: what FN_DIRECT does in registers first, the rest as above */
static void FN(scale_run_direct)(FN_SCALE_ARGS)
{
    if (sx == 1 && sy == 1) {
        const int64_t d = FN_DIRECT(scale)(x, y, n, mh, a, c);
        x += d;
        y += d;
        n -= d;
    }
    FN(scale_run_none)(x, y, n, sx, sy, mh, a, c);
}
static void FN(affine_run_direct)(FN_AFFINE_ARGS)
{
    if (sx == 1 && sy == 1) {
        const int64_t d = FN_DIRECT(affine)(x, y, n, mh, a, c, w, lb);
        x += d;
        y += d;
        w += d;
        lb += d;
        n -= d;
    }
    FN(affine_run_none)(x, y, n, sx, sy, mh, a, c, w, lb);
}
#if !FN_BUFFERED
/* the same for columns: rows in registers while FN_DIRECT takes whole rows (all or none for
 * the unbuffered types), the rest as above */
static void FN(cols_run_direct)(FN_COLS_ARGS)
{
    int64_t r = 0;
    if (sx == 1 && sy == 1)
        while (r < nr && FN_DIRECT(cols)(x + r * rx, y + r * ry, n, mh, a, c) == n)
            r++;
    if (r < nr)
        FN(cols_run_none)(x + r * rx, y + r * ry, nr - r, rx, ry, n, sx, sy, mh, a, c);
}
static void FN(cols0_run_direct)(FN_COLS_ARGS)
{
    int64_t r = 0;
    if (sx == 1 && sy == 1)
        while (r < nr && FN_DIRECT(cols0)(x + r * rx, y + r * ry, n, a, c) == n)
            r++;
    if (r < nr)
        FN(cols0_run_none)(x + r * rx, y + r * ry, nr - r, rx, ry, n, sx, sy, mh, a, c);
}
#define FN_COLS_NONE FN(cols_run_direct)
#define FN_COLS0_NONE FN(cols0_run_direct)
#endif
#define FN_SCALE_NONE FN(scale_run_direct)
#define FN_AFFINE_NONE FN(affine_run_direct)
#else
#define FN_SCALE_NONE FN(scale_run_none)
#define FN_AFFINE_NONE FN(affine_run_none)
#endif
#ifdef FN_STREAM
/* FN_ACT_STREAM: the streaming loops where they apply (contiguous runs, AVX-512) */
static void FN(scale_run_stream)(FN_SCALE_ARGS)
{
    if (sx == 1 && sy == 1)
        FN_STREAM(scale)(x, y, n, mh, a, c);
    else
        FN(scale_run_none)(x, y, n, sx, sy, mh, a, c);
}
static void FN(affine_run_stream)(FN_AFFINE_ARGS)
{
    if (sx == 1 && sy == 1)
        FN_STREAM(affine)(x, y, n, mh, a, c, w, lb);
    else
        FN(affine_run_none)(x, y, n, sx, sy, mh, a, c, w, lb);
}
static void FN(weight_run_stream)(FN_WEIGHT_ARGS)
{
    if (sx == 1 && sy == 1)
        FN_STREAM(weight)(x, y, n, mh, a, c, w);
    else
        FN(weight_run_none)(x, y, n, sx, sy, mh, a, c, w);
}
static void FN(cols_run_stream)(FN_COLS_ARGS)
{
    if (sx == 1 && sy == 1)
        FN_STREAM(cols)(x, y, nr, rx, ry, n, mh, a, c);
    else
        FN(cols_run_none)(x, y, nr, rx, ry, n, sx, sy, mh, a, c);
}
#define FN_SCALE_STREAM FN(scale_run_stream)
#define FN_AFFINE_STREAM FN(affine_run_stream)
#define FN_WEIGHT_STREAM FN(weight_run_stream)
#define FN_COLS_STREAM FN(cols_run_stream)
#elif defined(FN_DIRECT_NT)
/* the direct loops' streaming copies past an unstreamed head; the rest as FN_ACT_NONE */
static void FN(scale_run_stream)(FN_SCALE_ARGS)
{
    if (sx == 1 && sy == 1) {
        const int64_t h = FN(head)(y, n);
        FN_SCALE_NONE(x, y, h, 1, 1, mh, a, c);
        const int64_t d = h + FN_DIRECT_NT(scale)(x + h, y + h, n - h, mh, a, c);
        fn_nt_note();
        x += d;
        y += d;
        n -= d;
    }
    FN_SCALE_NONE(x, y, n, sx, sy, mh, a, c);
}
static void FN(affine_run_stream)(FN_AFFINE_ARGS)
{
    if (sx == 1 && sy == 1) {
        const int64_t h = FN(head)(y, n);
        FN_AFFINE_NONE(x, y, h, 1, 1, mh, a, c, w, lb);
        const int64_t d = h + FN_DIRECT_NT(affine)(x + h, y + h, n - h, mh, a, c, w + h, lb + h);
        fn_nt_note();
        x += d;
        y += d;
        w += d;
        lb += d;
        n -= d;
    }
    FN_AFFINE_NONE(x, y, n, sx, sy, mh, a, c, w, lb);
}
#define FN_SCALE_STREAM FN(scale_run_stream)
#define FN_AFFINE_STREAM FN(affine_run_stream)
#define FN_WEIGHT_STREAM FN(weight_run_none)
#define FN_COLS_STREAM FN(cols_run_none)
#else
#define FN_SCALE_STREAM FN_SCALE_NONE
#define FN_AFFINE_STREAM FN_AFFINE_NONE
#define FN_WEIGHT_STREAM FN(weight_run_none)
#define FN_COLS_STREAM FN(cols_run_none)
#endif
#ifndef FN_COLS_NONE
#define FN_COLS_NONE FN(cols_run_none)
#define FN_COLS0_NONE FN(cols0_run_none)
#endif
/* FN(K_runs)[act]: loop K's copy for activation act; [FN_NUM_ACT]: its streaming copy */
#define FN_RUN_TABLE(K, ARGS, NONE, STREAM)                                                      \
    static void (*const FN(K##_runs)[FN_NUM_ACT + 1])(ARGS) = {                                   \
        NONE, FN(K##_run_relu), FN(K##_run_silu), FN(K##_run_gelu), FN(K##_run_gelu_tanh), STREAM};
FN_RUN_TABLE(scale, FN_SCALE_ARGS, FN_SCALE_NONE, FN_SCALE_STREAM)
FN_RUN_TABLE(affine, FN_AFFINE_ARGS, FN_AFFINE_NONE, FN_AFFINE_STREAM)
FN_RUN_TABLE(weight, FN_WEIGHT_ARGS, FN(weight_run_none), FN_WEIGHT_STREAM)
FN_RUN_TABLE(cols, FN_COLS_ARGS, FN_COLS_NONE, FN_COLS_STREAM)
FN_RUN_TABLE(cols0, FN_COLS_ARGS, FN_COLS0_NONE, FN_COLS_STREAM)
#undef FN_RUN_TABLE
#undef FN_SCALE_NONE
#undef FN_AFFINE_NONE
#undef FN_COLS_NONE
#undef FN_COLS0_NONE
#undef FN_SCALE_STREAM
#undef FN_AFFINE_STREAM
#undef FN_WEIGHT_STREAM
#undef FN_COLS_STREAM
#undef FN_ACT_LOOPS
#undef FN_COLS_FIXED
#undef FN_SCALE_ARGS
#undef FN_AFFINE_ARGS
#undef FN_WEIGHT_ARGS
#undef FN_COLS_ARGS
#undef FN_INLINE

#define FN_SCALE_RUN(act, x, y, n, sx, sy, mh, a, c) FN(scale_runs)[act](x, y, n, sx, sy, mh, a, c)
#define FN_AFFINE_RUN(act, x, y, n, sx, sy, mh, a, c, w, lb)                                     \
    FN(affine_runs)[act](x, y, n, sx, sy, mh, a, c, w, lb)
#define FN_WEIGHT_RUN(act, x, y, n, sx, sy, mh, a, c, w)                                         \
    FN(weight_runs)[act](x, y, n, sx, sy, mh, a, c, w)
#define FN_COLS_RUN(act, x, y, nr, rx, ry, n, sx, sy, mh, a, c)                                   \
    FN(cols_runs)[act](x, y, nr, rx, ry, n, sx, sy, mh, a, c)
#define FN_COLS0_RUN(act, x, y, nr, rx, ry, n, sx, sy, mh, a, c)                                  \
    FN(cols0_runs)[act](x, y, nr, rx, ry, n, sx, sy, mh, a, c)

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
#ifdef FN_DIRECT_NT
    if (act == FN_ACT_STREAM) { /* an unstreamed head, then the streaming direct loop */
        act = FN_ACT_NONE;
        if (sx == 1 && sy == 1) {
            const int64_t h = FN(head)(y, n);
            FN(scale_run_)(act, x, y, h, 1, 1, mh, a, c);
            const int64_t d = h + FN_DIRECT_NT(scale)(x + h, y + h, n - h, mh, a, c);
            fn_nt_note();
            x += d;
            y += d;
            n -= d;
        }
    }
#endif
#ifdef FN_DIRECT
    if (act == FN_ACT_NONE && sx == 1 && sy == 1) {
        const int64_t d = FN_DIRECT(scale)(x, y, n, mh, a, c);
        x += d;
        y += d;
        n -= d;
        if (n < FN_SHORT_TAIL) { /* float32's operations element by element, no buffer */
            for (int64_t i = 0; i < n; i++)
                y[i] = ST((LD(x[i]) - mh) * a + c);
            return;
        }
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
#ifdef FN_DIRECT_NT
    if (act == FN_ACT_STREAM) {
        act = FN_ACT_NONE;
        if (sx == 1 && sy == 1) {
            const int64_t h = FN(head)(y, n);
            FN(affine_run_)(act, x, y, h, 1, 1, mh, a, c, w, lb);
            const int64_t d =
                h + FN_DIRECT_NT(affine)(x + h, y + h, n - h, mh, a, c, w + h, lb + h);
            fn_nt_note();
            x += d;
            y += d;
            w += d;
            lb += d;
            n -= d;
        }
    }
#endif
#ifdef FN_DIRECT
    if (act == FN_ACT_NONE && sx == 1 && sy == 1) {
        const int64_t d = FN_DIRECT(affine)(x, y, n, mh, a, c, w, lb);
        x += d;
        y += d;
        w += d;
        lb += d;
        n -= d;
        if (n < FN_SHORT_TAIL) {
            for (int64_t i = 0; i < n; i++)
                y[i] = ST(((LD(x[i]) - mh) * a + c) * w[i] + lb[i]);
            return;
        }
    }
#endif
    FN_BY_BUFFER(i0, m, n, {
        FN_LOADBUF(x + i0 * sx, sx, m, buf);
        affine_runs_f32[act](buf, buf, m, 1, 1, mh, a, c, w + i0, lb + i0);
        FN_STOREBUF(buf, m, y + i0 * sy, sy);
    });
}
static void FN(weight_run_)(int act, const T *x, T *y, int64_t n, int64_t sx, int64_t sy, CT mh,
                            CT a, CT c, const CT *w)
{
    float buf[FN_HB];
    if (act == FN_ACT_STREAM) /* no streaming loop: stored as usual */
        act = FN_ACT_NONE;
    FN_BY_BUFFER(i0, m, n, {
        FN_LOADBUF(x + i0 * sx, sx, m, buf);
        weight_runs_f32[act](buf, buf, m, 1, 1, mh, a, c, w + i0);
        FN_STOREBUF(buf, m, y + i0 * sy, sy);
    });
}
static void FN(cols_run1)(int act, const T *x, T *y, int64_t n, int64_t sx, int64_t sy,
                          const CT *mh, const CT *a, const CT *c)
{
    float buf[FN_HB];
    if (act == FN_ACT_STREAM) /* streamed by cols_run_; strided runs are not */
        act = FN_ACT_NONE;
#ifdef FN_DIRECT
    if (act == FN_ACT_NONE && sx == 1 && sy == 1) {
        const int64_t d = FN_DIRECT(cols)(x, y, n, mh, a, c);
        x += d;
        y += d;
        mh += d;
        a += d;
        c += d;
        n -= d;
        if (n < FN_SHORT_TAIL) {
            for (int64_t i = 0; i < n; i++)
                y[i] = ST((LD(x[i]) - mh[i]) * a[i] + c[i]);
            return;
        }
    }
#endif
    FN_BY_BUFFER(i0, m, n, {
        FN_LOADBUF(x + i0 * sx, sx, m, buf);
        cols_runs_f32[act](buf, buf, 1, 0, 0, m, 1, 1, mh + i0, a + i0, c + i0);
        FN_STOREBUF(buf, m, y + i0 * sy, sy);
    });
}
/* cols_run1 over nr rows. FN_ACT_STREAM: each row's whole output lines by the streaming direct
 * loop, its head and tail as usual; the stores noted once for all the rows (FN_PFOR fences). */
static void FN(cols_run_)(int act, const T *x, T *y, int64_t nr, int64_t rx, int64_t ry,
                          int64_t n, int64_t sx, int64_t sy, const CT *mh, const CT *a,
                          const CT *c)
{
#ifdef FN_DIRECT_NT
    if (act == FN_ACT_STREAM && sx == 1 && sy == 1) {
        for (int64_t r = 0; r < nr; r++) {
            const T *xr = x + r * rx;
            T *yr = y + r * ry;
            const int64_t h = FN(head)(yr, n);
            const int64_t d =
                h + FN_DIRECT_NT(cols)(xr + h, yr + h, n - h, mh + h, a + h, c + h);
            FN(cols_run1)(FN_ACT_NONE, xr, yr, h, 1, 1, mh, a, c);
            FN(cols_run1)(FN_ACT_NONE, xr + d, yr + d, n - d, 1, 1, mh + d, a + d, c + d);
        }
        fn_nt_note();
        return;
    }
#endif
    for (int64_t r = 0; r < nr; r++)
        FN(cols_run1)(act, x + r * rx, y + r * ry, n, sx, sy, mh, a, c);
}
#define FN_SCALE_RUN FN(scale_run_)
#define FN_AFFINE_RUN FN(affine_run_)
#define FN_WEIGHT_RUN FN(weight_run_)
/* cols_run_ where every shift is 0: activation-free contiguous rows by FN_DIRECT(cols0) */
static void FN(cols0_run_)(int act, const T *x, T *y, int64_t nr, int64_t rx, int64_t ry,
                           int64_t n, int64_t sx, int64_t sy, const CT *mh, const CT *a,
                           const CT *c)
{
    if (act != FN_ACT_NONE) { /* an activation, or streamed */
        FN(cols_run_)(act, x, y, nr, rx, ry, n, sx, sy, mh, a, c);
        return;
    }
    for (int64_t r = 0; r < nr; r++) {
        const int64_t d =
            sx == 1 && sy == 1 ? FN_DIRECT(cols0)(x + r * rx, y + r * ry, n, a, c) : 0;
        if (d < n)
            FN(cols_run1)(act, x + r * rx + d * sx, y + r * ry + d * sy, n - d, sx, sy, mh + d,
                          a + d, c + d);
    }
}
#define FN_COLS_RUN FN(cols_run_)
#define FN_COLS0_RUN FN(cols0_run_)

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

/* The 16-bit types' normalize_cols with a per-row affine: the column coefficients, then row r's
 * t * w[r] + b[r] and the activation, in a float buffer, so that the output is rounded once
 * (float32's two passes, operation for operation, rounded at the end; two passes through the
 * 16-bit output would round t first). */
#ifdef FN_SUMS16
#define FN_ROW_FUSED 1
static void FN(cols_row_run)(int act, const T *x, T *y, int64_t nr, int64_t rx, int64_t ry,
                             int64_t n, int64_t sx, int64_t sy, const CT *mh, const CT *a,
                             const CT *c, const CT *rw, const CT *rb)
{
    float buf[FN_HB];
    for (int64_t r = 0; r < nr; r++) {
        for (int64_t i0 = 0; i0 < n; i0 += FN_HB) {
            const int64_t m = n - i0 < FN_HB ? n - i0 : FN_HB;
            const T *xr = x + r * rx + i0 * sx;
            T *yr = y + r * ry + i0 * sy;
#if FN_BUFFERED
            FN_LOADBUF(xr, sx, m, buf);
#else
            for (int64_t i = 0; i < m; i++)
                buf[i] = LD(xr[i * sx]);
#endif
            cols_runs_f32[FN_ACT_NONE](buf, buf, 1, 0, 0, m, 1, 1, mh + i0, a + i0, c + i0);
            scale_runs_f32[act](buf, buf, m, 1, 1, 0.0f, rw[r], rb ? rb[r] : 0.0f);
#if FN_BUFFERED
            FN_STOREBUF(buf, m, yr, sy);
#else
            for (int64_t i = 0; i < m; i++)
                yr[i * sy] = ST(buf[i]);
#endif
        }
    }
}
#define FN_COLS_ROW_RUN FN(cols_row_run)
#else
#define FN_ROW_FUSED 0
#define FN_COLS_ROW_RUN(...) ((void)0)
#endif

/* The run-table index a normalize pass uses: act, or FN_ACT_STREAM (streaming stores) for an
 * activation-free output of out_bytes past the threshold of kind (FN_SB_ROWS, _COLS: the
 * column layouts, _WB: float32 rows with a weight and bias) whose contiguous runs are long
 * (run_len elements, at least 256, or 128 in whole cache lines: short runs would be mostly
 * unaligned head and tail, and channels-last rows of 64 channels or fewer measured slower
 * streamed one at a time than with their coefficients in registers; normalize_cols streams
 * such rows back to back as one run instead). fresh: out_bytes counted as fn_out_footprint
 * does for an output allocated for the call (callers pass 0 where that measured slower). */
static inline int FN(out_act)(int act, int64_t out_bytes, int64_t run_len, int kind, int fresh)
{
#if defined(FN_STREAM) || defined(FN_DIRECT_NT)
    out_bytes = fn_out_footprint(out_bytes, fresh);
    const int64_t sb = kind == FN_SB_COLS ? fn_stream_bytes_cols()
                       : kind == FN_SB_WB ? fn_stream_bytes_wb()
                                          : fn_stream_bytes();
    /* The 16-bit types' streamed runs pay for a head and a tail stored as usual (masked
     * vectors; outputs start 16 bytes into a line, as NumPy's): eval BatchNorm with rows of L
     * float16 (32 MB, one thread) was slower streamed than with plain stores up to L = 2048
     * (L = 128: 9.3 against 2.0 ms, 512: 5.6 against 1.9), level at 4096 and faster from 8192
     * (1.76 against 1.95); at two threads, rows of 4096 streamed keep LayerNorm (4096, 4096),
     * GroupNorm (8, 256, 64, 64) and InstanceNorm (8, 64, 128, 128) 1.6-2.0x faster than float32
     * (bench_half.py), 1.2-1.5x without. */
    const int runs_ok =
        sizeof(T) == 2 ? run_len >= 4096
                       : run_len >= 256 || (run_len >= 128 && run_len * (int64_t)sizeof(T) % 64 == 0);
    /* The same thresholds for every dtype: where input and output no longer fit the cache
     * together, plain stores read each output line from memory first. The 16-bit types had
     * waited for the whole last-level cache (at 16 MB their GroupNorm / InstanceNorm had
     * measured faster with plain stores on a quiet machine); on a busy one their passes are
     * bound by that traffic. float16, 2 threads, out=, both thresholds alternating in one
     * process (median of 9): GroupNorm (8, 256, 64, 64) / (2, 320, 128, 128) 1.10x / 1.23x
     * faster streamed, InstanceNorm (8, 64, 128, 128) 1.16x, LayerNorm (2048, 4096) 1.23x,
     * eval BatchNorm (16, 64, 112, 112) 1.19x, training 1.19x; bfloat16 1.10-1.76x; one
     * thread 0.97-1.48x; allocating calls 0.98-1.40x. A call that reads its input once (eval
     * BatchNorm) streams where its input and output no longer fit the cache together, as the
     * row layouts do: streamed it keeps its time whatever the machine's neighbours do, plain
     * stores do not. Eval BatchNorm float32, 2 threads, alternating: (8, 64, 112, 112) and (8,
     * 256, 56, 56), 25.7 MB, 1.01-1.06 ms streamed against 1.15-1.51 plain in four pairs; (8,
     * 320, 44, 44) 0.78-0.79 against 0.96-1.01; (8, 512, 32, 32), 16.8 MB, 0.63-0.69 against
     * 0.59-0.89 (an earlier session on a quieter machine: (8, 64, 112, 112) 0.93-0.96 streamed
     * against 0.74-0.83, README). */
    if (act == FN_ACT_NONE && sb > 0 && out_bytes >= sb && runs_ok)
        return FN_ACT_STREAM;
#else
    (void)out_bytes;
    (void)run_len;
    (void)kind;
    (void)fresh;
#endif
    return act;
}

/* Whether a call of n elements whose normalize pass uses run-table index act may run outputs
 * backward (FN(scale_back) and the like): float32 / float64, activation-free plain stores, at
 * most FN_BACK_BYTES. The 16-bit types' loops are bound by their conversions: float16 RMSNorm
 * (1, 4096) measured level with its output 80 bytes ahead of its input. */
static inline int FN(back_ok)(int act, int64_t n)
{
    return sizeof(T) > 2 && act == FN_ACT_NONE && n * (int64_t)sizeof(T) <= FN_BACK_BYTES;
}

#if defined(FN_DIRECT) || defined(FN_STREAM)
#define FN_REP 1
/* The coefficients mh, a, c of C columns repeated over n elements each (n a multiple of C):
 * out[0, n), [n, 2 n), [2 n, 3 n) (normalize_cols' short rows) */
static void FN(repeat_coefs)(CT *out, int64_t n, int64_t C, const CT *mh, const CT *a,
                             const CT *c)
{
    for (int q = 0; q < 3; q++)
        for (int64_t i = 0; i < n; i += C)
            memcpy(out + q * n + i, q == 0 ? mh : q == 1 ? a : c, (size_t)C * sizeof(CT));
}
#endif

/* Table entry normalize_cols: units of whole rows of about FN_NCHUNK elements. */
static int FN(normalize_cols)(const void *xv, void *yv, const fn_col_job *jb, int n_threads)
{
    const T *x = (const T *)xv;
    T *y = (T *)yv;
    const fn_cols *s = &jb->shape;
    const int64_t P1 = s->outer, R = s->rows, C = s->cols, cp = jb->coef_outer_step;
    if (jb->epilogue.activation < 0 || jb->epilogue.activation >= FN_NUM_ACT)
        return FN_EINVAL;
    if (P1 <= 0 || R <= 0 || C <= 0)
        return FN_OK;
    const CT *rw = (const CT *)jb->row_weight, *rb = (const CT *)jb->row_bias;
    /* with a per-row affine the columns' pass writes t, which the rows' pass reads back (in
     * cache: no streaming) and finishes with the activation; the 16-bit types do both in one
     * pass (cols_row_run), so that their output is rounded once */
    const int act = rw ? FN_ACT_NONE
                       : FN(out_act)(jb->epilogue.activation, P1 * R * C * (int64_t)sizeof(T),
                                     s->ys[2] == 1 ? C : 1, FN_SB_COLS, 0);
    const CT *mh = (const CT *)jb->coefs.shift, *a = (const CT *)jb->coefs.scale;
    const CT *c = (const CT *)jb->coefs.offset;
    const int64_t rc = C >= FN_NCHUNK ? 1 : FN_NCHUNK / C; /* rows per unit */
    const int64_t nrc = (R + rc - 1) / rc, U = P1 * nrc;
    const int nt = fn_eff_threads(P1 * R * C, U, n_threads);
    /* A coefficient set whose shifts are all 0 (FN(centre): its channels or groups lie within
     * 4 std of zero, the usual case) takes the loops that read two coefficients per element,
     * not three: 1.3-1.6x faster in cache. A set with any shift (data far from zero) keeps the
     * three; splitting its columns into runs of each kind measured slower where the runs are
     * short, and gained only where few long ones cover most columns. */
    const int64_t sets = cp ? P1 : 1;
    unsigned char *zero = (unsigned char *)malloc((size_t)sets);
    if (!zero)
        return FN_ENOMEM;
    for (int64_t p = 0; p < sets; p++) {
        int z = 1;
        for (int64_t j = 0; j < C; j++)
            z &= mh[p * cp + j] == (CT)0;
        zero[p] = (unsigned char)z;
    }
    CT *rep = NULL; /* the coefficient sets repeated, rn elements each (below) */
#ifdef FN_REP
    int64_t rl = 0, rn = 0;
    /* Rows of few columns, back to back (channels-last with 16-72 channels: early CNN
     * stages): the 16-bit direct loops took one short row a call. With each coefficient set
     * repeated over rl elements (a whole number of rows and of vectors, at least
     * FN_REP_MIN), a unit's rows are one contiguous run taken rl elements a call: the same
     * coefficients for every element, the same bits. Eval BatchNorm, channels-last, 1 thread,
     * ms: float16 (4, 40, 56, 56) 0.070 -> 0.038, (1, 16, 112, 112) 0.036 -> 0.019,
     * (8, 72, 28, 28) 0.053 -> 0.035, (1, 96, 56, 56) 0.030 -> 0.027; bfloat16 0.073 ->
     * 0.049, 0.039 -> 0.022, 0.056 -> 0.044, 0.031 (the same).
     * float32 / float64 (FN_STREAM) where the output is to be streamed but out_act found
     * rows of fewer than 128 columns too short to stream one at a time: the unit's rows
     * stream as one run, rl elements a call from its first 64-byte-aligned output on (so in
     * any column's phase: rn = rl + C): plain stores had left channels-last eval BatchNorm
     * 1.5x slower than NCHW's (streamed) on the same data. Builds alternating, 2 threads, ms:
     * eval BatchNorm (8, 80, 112, 112) 1.78-2.26 -> 1.22-1.31 (1 thread 2.17-2.90 -> 1.63),
     * float64 (8, 64, 112, 112) 2.25-2.63 -> 1.92-2.29; GroupNorm (8, 64, 128, 128) 2.67-3.34
     * -> 1.91-2.44, InstanceNorm 2.83-2.89 -> 1.95-2.27; training BatchNorm (32, 64, 56, 56)
     * 1.17-1.31 -> 0.96-1.34; (8, 64, 112, 112), whose 64 coefficients sat in registers,
     * 0.96-1.18 -> 0.95-0.99. */
#ifdef FN_DIRECT
    const int rep_ok = act == FN_ACT_NONE && FN_DIRECT(whole)();
#else
    const int rep_ok = act == FN_ACT_NONE && (uintptr_t)y % sizeof(T) == 0 &&
                       FN(out_act)(act, P1 * R * C * (int64_t)sizeof(T), FN_REP_MIN,
                                   FN_SB_COLS, 0) == FN_ACT_STREAM;
#endif
    if (!rw && rep_ok && C < FN_REP_COLS && R > 1 && s->xs[2] == 1 && s->ys[2] == 1 &&
        s->xs[1] == C && s->ys[1] == C) {
        rl = fn_rep_len(C);
#ifdef FN_DIRECT
        rn = rl;
#else
        rn = rl + C;
#endif
        /* one set (BatchNorm): repeated once for all the units; a set per outer index
         * (GroupNorm, InstanceNorm): by each unit of at least FN_REP_UNITS runs of rl, on its
         * stack, at most 3 FN_REP_MAX floats' worth (a copy per set would cost 6 KB and more
         * per sample) */
        if (sets == 1 && (rep = (CT *)malloc((size_t)(3 * rn) * sizeof(CT))) != NULL)
            FN(repeat_coefs)(rep, rn, C, mh, a, c);
        else if ((R < rc ? R : rc) * C < FN_REP_UNITS * rl ||
                 rn * (int64_t)sizeof(CT) > FN_REP_MAX * (int64_t)sizeof(float))
            rl = 0;
    }
#endif
    const int64_t l3 = fn_l3_bytes(); /* 0: unknown, chunks as in cache */
    const int chunks = l3 <= 0 || 2 * P1 * R * C * (int64_t)sizeof(T) <= l3 / 2;
    FN_PFOR(n_threads, nt, u, U, {
        const int64_t p1 = u / nrc, r0 = (u % nrc) * rc, r1 = r0 + rc < R ? r0 + rc : R;
        const int64_t k = p1 * cp;
        const T *xu = x + p1 * s->xs[0] + r0 * s->xs[1];
        T *yu = y + p1 * s->ys[0] + r0 * s->ys[1];
#ifdef FN_REP
        CT own[rep || !rl ? 1 : 3 * rn];
        if (rl && !rep)
            FN(repeat_coefs)(own, rn, C, mh + k, a + k, c + k);
        if (rl) {
            const CT *rm = rep ? rep : own, *ra = rm + rn, *rcf = ra + rn;
            const int64_t N = (r1 - r0) * C;
#ifdef FN_DIRECT
            for (int64_t j = 0; j < N; j += rl) {
                const int64_t m = N - j < rl ? N - j : rl;
                if (zero[cp ? p1 : 0])
                    FN_DIRECT(cols0)(xu + j, yu + j, m, ra, rcf);
                else
                    FN_DIRECT(cols)(xu + j, yu + j, m, rm, ra, rcf);
            }
#else
            const int64_t h = FN(head)(yu, N), ph = h % C;
            FN_STREAM(cols)(xu, yu, 1, 0, 0, h, rm, ra, rcf);
            for (int64_t j = h; j < N; j += rl)
                FN_STREAM(cols)(xu + j, yu + j, 1, 0, 0, N - j < rl ? N - j : rl, rm + ph,
                                ra + ph, rcf + ph);
#endif
        } else
#endif
        if (FN_ROW_FUSED && rw) /* the 16-bit types: both in one pass, rounded once */
            FN_COLS_ROW_RUN(jb->epilogue.activation, xu, yu, r1 - r0, s->xs[1], s->ys[1], C,
                            s->xs[2], s->ys[2], mh + k, a + k, c + k, rw + r0,
                            rb ? rb + r0 : NULL);
        else {
            /* units of several rows whose coefficients take over FN_COLS_COEF_BYTES go in
             * column chunks of equal width (whole cache lines), each down all the unit's rows:
             * row by row, a row's input and output pushed the coefficients out of L1 before
             * the next row (eval BatchNorm, channels-last, 1 thread: float64 (1, 1280, 19, 19)
             * and float32 (8, 2560, 7, 7) 1.4x faster). Only while input and output fit in
             * half the last-level cache (`chunks`): from further out, half rows 6 KB apart
             * defeat the prefetchers (float64 (1, 768, 60, 60), 2 threads: 1.06-1.31 ms whole
             * rows against 1.44-1.81 in chunks; (1, 768, 48, 48) 0.48-0.56 against 0.63-0.82;
             * in+out 19.7 MB, (1, 768, 40, 40), level; 9.6 MB, (1, 768, 28, 28), 1 thread:
             * 0.17-0.23 in chunks against 0.21-0.26). Rows over
             * FN_NCHUNK / 2 are units of one row: nothing to reuse. float16 (buffered: its
             * loops read all three coefficients) from a quarter more: (4, 2048, 7, 7), 24 KB,
             * 1.23x faster, (1, 1536, 14, 14), 18 KB, 1.04x slower in chunks; bfloat16, whose
             * loops convert element by element, measured 1.05x slower in chunks. */
            const int z = zero[cp ? p1 : 0];
            const int64_t cb = (int64_t)(z && !FN_BUFFERED ? 2 : 3) * (int64_t)sizeof(CT);
            const int64_t most =
                (FN_BUFFERED ? FN_COLS_COEF_BYTES * 5 / 4 : FN_COLS_COEF_BYTES) / cb;
            const int64_t cw = chunks && r1 - r0 > 1 && (sizeof(T) > 2 || FN_BUFFERED)
                                   ? fn_even_width(C, most, 64 / (int64_t)sizeof(T))
                                   : C;
            for (int64_t j0 = 0; j0 < C; j0 += cw) {
                const int64_t n = C - j0 < cw ? C - j0 : cw, kj = k + j0;
                const T *xj = xu + j0 * s->xs[2];
                T *yj = yu + j0 * s->ys[2];
                if (z)
                    FN_COLS0_RUN(act, xj, yj, r1 - r0, s->xs[1], s->ys[1], n, s->xs[2], s->ys[2],
                                 mh + kj, a + kj, c + kj);
                else
                    FN_COLS_RUN(act, xj, yj, r1 - r0, s->xs[1], s->ys[1], n, s->xs[2], s->ys[2],
                                mh + kj, a + kj, c + kj);
            }
        }
        for (int64_t r = r0; !FN_ROW_FUSED && rw && r < r1; r++) { /* (t - 0) * w[r] + b[r] */
            T *yr = yu + (r - r0) * s->ys[1];
            FN_SCALE_RUN(jb->epilogue.activation, yr, yr, C, s->ys[2], s->ys[2], (CT)0, rw[r],
                         rb ? rb[r] : (CT)0);
        }
    });
    free(rep);
    free(zero);
    return FN_OK;
}

/* group_cols' steps for samples [p0, p1) on n_threads: the same arithmetic whether a unit is a
 * sample or all of them (col_moments' tiles depend on cols only, its row blocks on the whole
 * call's shape, jb->shape) */
static int FN(group_cols_run)(const T *x, T *y, const fn_group_cols_job *jb, int64_t p0,
                              int64_t p1, double *st, CT *cf, int n_threads)
{
    const fn_cols *s = &jb->shape;
    const int64_t R = s->rows, C = s->cols, G = jb->groups, Cg = C / G, P = p1 - p0;
    fn_cols part = *s;
    part.outer = P;
    double *m = st, *q = st + P * C;
    int rc = FN(col_moments_rb)(x + p0 * s->xs[0], &part, FN(col_block_rows)(s), m, q,
                                n_threads);
    if (rc != FN_OK)
        return rc;
    if (Cg > 1) /* into the first P * G entries */
        fn_merge_moments(P * G, Cg, 1, (double)R, m, q, m, q);
    for (int64_t i = 0; i < P * G; i++) {
        q[i] /= (double)(Cg * R);
        jb->mean[p0 * G + i] = m[i];
        jb->var[p0 * G + i] = q[i];
    }
    const fn_coef_job cj = {P, C, G, Cg, m, q, jb->eps, jb->weight, jb->bias};
    const fn_coefs co = {cf, cf + P * C, cf + 2 * P * C};
    FN(coefs)(&cj, &co);
    const fn_col_job nj = {part, co, C, jb->epilogue, NULL, NULL};
    return FN(normalize_cols)(x + p0 * s->xs[0], y + p0 * s->ys[0], &nj, n_threads);
}

/* group_cols of one sample for its k groups g0 .. g0 + k - 1 whole (W = k Cg columns from
 * c0 = g0 Cg; its R <= FN_BLOCK rows one block): the columns' moments, in tiles as col_moments
 * takes them, each group's Cg columns merged at once (fn_merge_equal), the groups' coefficients
 * and the normalize pass, while the unit's elements are in the thread's cache. m: scratch of
 * 2 W doubles, cf of 3 W. */
static void FN(group_block)(const T *x, T *y, const fn_group_cols_job *jb, int64_t g0, int64_t k,
                            int unshifted, double *m, CT *cf)
{
    const fn_cols *s = &jb->shape;
    const int64_t R = s->rows, G = jb->groups, Cg = s->cols / G, W = k * Cg, c0 = g0 * Cg;
    const int64_t *xs = s->xs, *ys = s->ys;
    const T *xu = x + c0 * xs[2];
    T *yu = y + c0 * ys[2];
    double *q = m + W, *gm = jb->mean + g0, *gv = jb->var + g0;
    for (int64_t j0 = 0; j0 < W; j0 += FN_CB)
        FN(tile_moments)(xu + j0 * xs[2], 0, R, R, xs, W - j0 < FN_CB ? W - j0 : FN_CB,
                         unshifted, m + j0, q + j0);
    for (int64_t g = 0; g < k; g++) {
        fn_merge_equal(Cg, (double)R, m + g * Cg, q + g * Cg, &gm[g], &gv[g]);
        gv[g] /= (double)(Cg * R);
    }
    const CT *wp = (const CT *)jb->weight, *bp = (const CT *)jb->bias;
    const fn_coef_job cj = {1, W, k, Cg, gm, gv, jb->eps, wp ? wp + c0 : NULL,
                            bp ? bp + c0 : NULL};
    const fn_coefs co = {cf, cf + W, cf + 2 * W};
    FN(coefs)(&cj, &co);
    int z = 1;
    for (int64_t j = 0; j < W; j++)
        z &= cf[j] == (CT)0;
    const int act = jb->epilogue.activation;
    if (z)
        FN_COLS0_RUN(act, xu, yu, R, xs[1], ys[1], W, xs[2], ys[2], cf, cf + W, cf + 2 * W);
    else
        FN_COLS_RUN(act, xu, yu, R, xs[1], ys[1], W, xs[2], ys[2], cf, cf + W, cf + 2 * W);
}

/* Groups per unit of group_cols' single-sample path (group_block), or 0 where it does not apply:
 * one sample of at most 512 rows (maps to about 22x22), float32 or a 16-bit type, groups of 8
 * channels or more, in eight units of G / 8 groups (or a group a unit where G is not a multiple
 * of 8, at least 4 of them: fewer would leave threads idle) of 96 to FN_CB columns, a multiple
 * of 8 (no column left to the statistics' scalar loop), and at most 256 KB each (2 MB in all),
 * so that a unit is normalized from its thread's cache right after its statistics. The path
 * reads the sample twice, as the others do, but has no serial step between parallel passes.
 * Measured in one process against group_cols_run, 2 threads, time ratio old / units: float32
 * (1, 2560, 8, 8) 1.24-1.38, (1, 1280, 16, 16) 1.11-1.24, (1, 1152, 12, 12) 1.13-1.27, (1, 2048,
 * 8, 8) 1.25-1.37, (1, 1280, 8, 8) 1.19-1.34, (1, 960, 16, 16) 1.15-1.36, GroupNorm(16) (1, 2560,
 * 8, 8) 1.63; float16 1.26-1.54, bfloat16 1.16-1.40; 1 thread 0.93-1.10; builds alternating,
 * float16 (1, 1280, 20, 20), 400 rows: 1.3x at 2 threads, level at 1. Left to the other paths:
 * two samples or more (0.81-1.05 at 2 threads: group_cols_run takes a sample a thread), float64
 * (0.80-1.07), units under 96 columns (float32 (1, 512, 16, 16), 64: 0.81 at 1 thread), groups
 * of one channel (InstanceNorm: 0.64-0.83), taller maps (float16 (1, 1024, 32, 32), 1024 rows:
 * 0.83-0.86 at 1 thread, 0.90-0.99 at 2; builds alternating) and units whose width leaves
 * columns to a scalar loop (float16 (1, 992, 32, 32), 124 columns: 0.73-0.79 at 1 thread). */
static inline int64_t FN(block_groups)(const fn_cols *s, int64_t G)
{
    const int64_t R = s->rows, Cg = s->cols / G, kg = G % 8 ? 1 : G / 8;
    const int64_t unit = R * kg * Cg * (int64_t)sizeof(T);
    if (s->outer != 1 || sizeof(T) > 4 || R < 1 || R > 512 || G < 4 || Cg < 8 ||
        kg * Cg < 96 || kg * Cg > FN_CB || kg * Cg % 8 || unit > 256 * 1024 ||
        G / kg * unit > 2048 * 1024)
        return 0;
    return kg;
}

/* Table entry group_cols (x and y may be the same array). Samples that fit in a thread's share
 * of the cache (fn_fuse_bytes), and all of them in the last-level cache, go a sample per unit of
 * one thread when they split evenly enough over several threads and the output is not streamed
 * (normalize_cols decides that from one sample's bytes there): no serial steps between parallel
 * passes (the groups' merge and the coefficients took a quarter of a two-thread channels-last
 * GroupNorm (2, 1280, 8, 8)), and each sample normalized while it is in its thread's cache.
 * Otherwise each step runs over all samples on all threads. Same bits either way. A single
 * sample of few rows and wide groups goes in units of whole groups instead (block_groups: its
 * own bits, chosen by the shape alone, so the same for any thread count). */
static int FN(group_cols)(const void *xv, void *yv, const fn_group_cols_job *jb, int n_threads)
{
    const T *x = (const T *)xv;
    T *y = (T *)yv;
    const fn_cols *s = &jb->shape;
    const int64_t N = s->outer, R = s->rows, C = s->cols, G = jb->groups;
    if (G <= 0 || C % G)
        return FN_EINVAL;
    if (N <= 0 || C <= 0)
        return FN_OK;
    const int64_t sample = R * C * (int64_t)sizeof(T), sb = fn_stream_bytes_cols();
    /* the threads the work merits (not capped at N: two samples must not idle 14 threads) */
    const int nt = fn_eff_threads(N * R * C, N * R * C, n_threads);
    /* statistics (2 C doubles) and coefficients (3 C) of every sample */
    double *st = (double *)malloc((size_t)(2 * N * C) * sizeof(double));
    CT *cf = (CT *)malloc((size_t)(3 * N * C) * sizeof(CT));
    int rc = st && cf ? FN_OK : FN_ENOMEM;
    const int64_t kg = FN(block_groups)(s, G);
    if (rc == FN_OK && kg > 0) { /* one sample, in units of kg whole groups */
        const int64_t U = G / kg, W = kg * (C / G);
        const int unshifted = FN_UNSHIFTED && sample <= fn_l3_bytes(); /* as col_moments */
        FN_PFOR(n_threads, fn_eff_threads(R * C, U, n_threads), u, U, {
            FN(group_block)(x, y, jb, u * kg, kg, unshifted, st + 2 * u * W, cf + 3 * u * W);
        });
    } else if (rc == FN_OK && nt > 1 && (N % nt == 0 || N >= 4 * nt) &&
               sample <= fn_fuse_bytes(nt) && N * sample <= fn_l3_bytes() &&
               (sb <= 0 || N * sample < sb)) {
        /* (within the last-level cache as a whole too: col_moments chooses its float32 sums by
         * the bytes of its call, and so must choose the same for one sample as for all) */
        FN_PFOR(n_threads, nt, p, N, {
            const int r =
                FN(group_cols_run)(x, y, jb, p, p + 1, st + 2 * p * C, cf + 3 * p * C, 1);
            if (r != FN_OK) {
                FN_OMP(atomic write)
                rc = r;
            }
        });
    } else if (rc == FN_OK) {
        rc = FN(group_cols_run)(x, y, jb, 0, N, st, cf, n_threads);
    }
    free(st);
    free(cf);
    return rc;
}

/* y = max(y, lo) over a run just written (in cache): the TLU. NaN in y or lo propagates, as
 * torch.maximum. */
static FN_HOT void FN(tlu_run)(T *y, int64_t n, int64_t sy, CT lo)
{
    if (lo != lo) {
        for (int64_t i = 0; i < n; i++)
            y[i * sy] = ST(lo);
        return;
    }
    const T tl = ST(lo);
    for (int64_t i = 0; i < n; i++)
        if (LD(y[i * sy]) < lo)
            y[i * sy] = tl;
}

/* BACK_CALL where cond (a contiguous run to write backward: FN(scale_back) and the like), else
 * RUN_CALL; float16's buffered loops have no backward copies (FN(back_ok) is false for the
 * 16-bit types). */
#if FN_BUFFERED
#define FN_BACK_OR(cond, BACK_CALL, RUN_CALL) RUN_CALL
#else
#define FN_BACK_OR(cond, BACK_CALL, RUN_CALL)                                                    \
    do {                                                                                         \
        if (cond)                                                                                \
            BACK_CALL;                                                                           \
        else                                                                                     \
            RUN_CALL;                                                                            \
    } while (0)
#endif

/* Normalizes rows [q0, q1) x [l0, l1) of group g (group index p2 within its outer index) with
 * its mean, variance and rstd (centred as FN(centre) says, as coefs does). back: a small call
 * without activation, whose single rows may run backward (FN(scale_back) and the like). */
static inline void FN(group_apply)(const T *xg, T *yg, int64_t p2, int64_t q0, int64_t q1,
                                   int64_t l0, int64_t l1, const fn_rows *s, const fn_affine *af,
                                   int act, const CT *lower, double mean, double var, double rstd,
                                   int back)
{
    double dl;
    const CT mh = FN(centre)(mean, var, &dl);
    const CT *w = (const CT *)af->weight, *b = (const CT *)af->bias;
    if (!af->elementwise && q1 - q0 > 1) {
        /* per-row coefficients, FN_QB rows at a time through row_coefs (narrowing them one
         * short row at a time cost as much as the row's normalization) */
        CT ab[FN_QB], cb[FN_QB];
        for (int64_t qq = q0; qq < q1; qq += FN_QB) {
            const int64_t m = q1 - qq < FN_QB ? q1 - qq : FN_QB;
            const int64_t j0 = p2 * af->group_step + qq * af->row_step;
            FN(row_coefs)(m, rstd, dl, w ? w + j0 : NULL, b ? b + j0 : NULL, af->row_step, ab, cb);
            for (int64_t i = 0; i < m; i++) {
                const int64_t q = qq + i;
                T *yr = yg + q * s->ys[2] + l0 * s->ys[3];
                FN_SCALE_RUN(act, xg + q * s->xs[2] + l0 * s->xs[3], yr, l1 - l0, s->xs[3],
                             s->ys[3], mh, ab[i], cb[i]);
                if (lower)
                    FN(tlu_run)(yr, l1 - l0, s->ys[3], lower[j0 + i * af->row_step]);
            }
        }
        return;
    }
    back = back && s->xs[3] == 1 && s->ys[3] == 1;
    for (int64_t q = q0; q < q1; q++) {
        const T *xr = xg + q * s->xs[2] + l0 * s->xs[3];
        T *yr = yg + q * s->ys[2] + l0 * s->ys[3];
        const int64_t n = l1 - l0;
        if (af->elementwise) {
            const CT a = FN(narrow)(rstd), c = FN(narrow)(-dl * rstd);
            if (!b)
                FN_BACK_OR(fn_back_run(back, yr, xr, w + l0, NULL),
                           FN(weight_back)(xr, yr, n, mh, a, c, w + l0),
                           FN_WEIGHT_RUN(act, xr, yr, n, s->xs[3], s->ys[3], mh, a, c, w + l0));
            else
                FN_BACK_OR(fn_back_run(back, yr, xr, w + l0, b + l0),
                           FN(affine_back)(xr, yr, n, mh, a, c, w + l0, b + l0),
                           FN_AFFINE_RUN(act, xr, yr, n, s->xs[3], s->ys[3], mh, a, c, w + l0,
                                         b + l0));
        } else {
            const int64_t j = p2 * af->group_step + q * af->row_step;
            const double ad = w ? rstd * (double)w[j] : rstd;
            const CT a = FN(narrow)(ad), c = FN(narrow)((b ? (double)b[j] : 0.0) - dl * ad);
            FN_BACK_OR(fn_back_run(back, yr, xr, NULL, NULL), FN(scale_back)(xr, yr, n, mh, a, c),
                       FN_SCALE_RUN(act, xr, yr, n, s->xs[3], s->ys[3], mh, a, c));
            if (lower)
                FN(tlu_run)(yr, l1 - l0, s->ys[3], lower[j]);
        }
    }
}

/* Whether normalize_rows' fused path applies: groups of gbytes that fit in cache
 * (fn_fuse_bytes) and P of them that share out evenly over nt threads. */
static inline int FN(fuse_ok)(int64_t gbytes, int64_t P, int nt)
{
    return gbytes <= fn_fuse_bytes(nt) && (nt == 1 || P % nt == 0 || P >= 8 * nt);
}

/* The fused path's work on groups g0 <= g < g0 + m (m <= FN_GB): their statistics, then their
 * normalization while in cache, cols columns of each group at a time. normalize_rows takes
 * small one-block groups FN_GB at a time: the divisions and square roots of all m then run in
 * one loop that vectorizes, where one group after another they form a chain of dependent
 * divisions that dominated groups of a few dozen elements (InstanceNorm on 4x4 to 8x8 maps);
 * and rows-outer groups (FN(rows_outer)) up to FN_GB at a time, of one block or several. */
static inline void FN(fused_groups)(const T *x, T *y, int64_t g0, int64_t m, const fn_row_job *jb,
                                    const fn_rowplan *pl, int act, int64_t cols, int back)
{
    const fn_rows *s = &jb->shape;
    const int64_t Q = s->rows, L = s->row_len;
    double mean[FN_GB], m2[FN_GB], rstd[FN_GB];
#ifndef FN_SUMS16
    if (pl->nb == 1)
        FN(short_moments)(x, s, g0, m, jb->stats.rms, mean, m2);
    else
#endif
#if FN_AVX512 && defined(FN_ROWS_SIMD)
    if (m > 1 && FN(rows_outer)(Q, L, s->xs[2], s->xs[3])) /* rows < FN_BLOCK */
        FN(outer_moments)(x, s, pl, g0, m, jb->stats.rms, mean, m2);
    else
#endif
        for (int64_t i = 0; i < m; i++) {
            const int64_t g = g0 + i;
            FN(group_moments)(x + (g / s->groups) * s->xs[0] + (g % s->groups) * s->xs[1], pl,
                              Q, L, s->xs[2], s->xs[3], jb->stats.rms, &mean[i], &m2[i]);
        }
    /* The 16-bit types: the next contiguous group into L2 while this one is normalized (their
     * loops are bound by conversions and arithmetic, and a fresh row otherwise stalls on memory
     * at each 4 KB page the hardware prefetcher does not cross), when the data is not in cache
     * anyway. LayerNorm (4096, 4096) float16, one thread: 4.65 -> 4.0-4.2 ms. float32, bound by
     * memory, measured slower with it, and so did groups of 32 KB and more (GroupNorm,
     * InstanceNorm planes: the burst of prefetches competes with the current group's loads). */
    const int64_t gn = g0 + m, nbytes = Q * L * (int64_t)sizeof(T);
    if (sizeof(T) == 2 && nbytes <= FN_PF_GROUP && gn < s->outer * s->groups && s->xs[3] == 1 &&
        (Q == 1 || s->xs[2] == L) && s->outer * s->groups * nbytes >= fn_batch_bytes()) {
        const char *p =
            (const char *)(x + (gn / s->groups) * s->xs[0] + (gn % s->groups) * s->xs[1]);
        for (int64_t o = 0; o < nbytes; o += 64)
            __builtin_prefetch(p + o, 0, 2);
    }
    const double n = (double)(Q * L), eps = jb->stats.eps;
    for (int64_t i = 0; i < m; i++) {
        const double var = m2[i] / n;
        m2[i] = var;
        rstd[i] = 1.0 / sqrt(var + eps);
    }
    for (int64_t i = 0; i < m; i++) {
        if (jb->stats.mean)
            jb->stats.mean[g0 + i] = mean[i];
        if (jb->stats.var)
            jb->stats.var[g0 + i] = m2[i];
    }
    /* cols columns of every group in turn (normalize_rows' long affine rows: the weight and
     * bias then come from L1 once for all m, where a row's own otherwise stream from L2 beside
     * it); cols >= L: each group whole */
    const int64_t lc = cols < L ? cols : L;
    if (Q == 1 && lc == L && jb->affine.elementwise && jb->affine.bias && !jb->epilogue.lower) {
        /* single rows with a weight and bias (LayerNorm): group_apply's coefficients for all m
         * rows in one loop, then the rows' affine loops (the same arithmetic, without a call
         * and its branches per row: LayerNorm over 32-192 channels) */
        CT cm[FN_GB], ca[FN_GB], cc[FN_GB];
        for (int64_t i = 0; i < m; i++) {
            double dl;
            cm[i] = FN(centre)(mean[i], m2[i], &dl);
            ca[i] = FN(narrow)(rstd[i]);
            cc[i] = FN(narrow)(-dl * rstd[i]);
        }
        const CT *w = (const CT *)jb->affine.weight, *b = (const CT *)jb->affine.bias;
        int64_t p1 = g0 / s->groups, p2 = g0 % s->groups; /* group g0 + i, counted up */
        back = back && s->xs[3] == 1 && s->ys[3] == 1;
        for (int64_t i = 0; i < m; i++, fn_next_group(&p1, &p2, s->groups)) {
            const T *xr = x + p1 * s->xs[0] + p2 * s->xs[1];
            T *yr = y + p1 * s->ys[0] + p2 * s->ys[1];
            FN_BACK_OR(fn_back_run(back, yr, xr, w, b),
                       FN(affine_back)(xr, yr, L, cm[i], ca[i], cc[i], w, b),
                       FN_AFFINE_RUN(act, xr, yr, L, s->xs[3], s->ys[3], cm[i], ca[i], cc[i], w, b));
        }
        return;
    }
    const fn_affine *af = &jb->affine;
    if (m > 1 && !af->elementwise && af->row_step == 0 && !jb->epilogue.lower &&
        s->ys[3] == 1 && FN(rows_outer)(Q, L, s->xs[2], s->xs[3])) {
        /* rows outer (FN(rows_outer)): group_apply's coefficients (its row_coefs, all rows
         * alike), then row q of every group before row q + 1 */
        CT cm[FN_GB], ca[FN_GB], cc[FN_GB];
        const T *xg[FN_GB];
        T *yg[FN_GB];
        const CT *w = (const CT *)af->weight, *b = (const CT *)af->bias;
        int64_t p1 = g0 / s->groups, p2 = g0 % s->groups; /* group g0 + i, counted up */
        for (int64_t i = 0; i < m; i++, fn_next_group(&p1, &p2, s->groups)) {
            double dl;
            const int64_t j = p2 * af->group_step;
            cm[i] = FN(centre)(mean[i], m2[i], &dl);
            FN(row_coefs)(1, rstd[i], dl, w ? w + j : NULL, b ? b + j : NULL, 0, &ca[i], &cc[i]);
            xg[i] = x + p1 * s->xs[0] + p2 * s->xs[1];
            yg[i] = y + p1 * s->ys[0] + p2 * s->ys[1];
        }
        for (int64_t q = 0; q < Q; q++)
            for (int64_t i = 0; i < m; i++)
                FN_SCALE_RUN(act, xg[i] + q * s->xs[2], yg[i] + q * s->ys[2], L, 1, 1, cm[i],
                             ca[i], cc[i]);
        return;
    }
    for (int64_t l0 = 0; l0 < L; l0 += lc) {
        const int64_t l1 = L - l0 < lc ? L : l0 + lc;
        int64_t p1 = g0 / s->groups, p2 = g0 % s->groups; /* group g0 + i, counted up */
        for (int64_t i = 0; i < m; i++, fn_next_group(&p1, &p2, s->groups)) {
            FN(group_apply)(x + p1 * s->xs[0] + p2 * s->xs[1], y + p1 * s->ys[0] + p2 * s->ys[1],
                            p2, 0, Q, l0, l1, s, &jb->affine, act, (const CT *)jb->epilogue.lower,
                            mean[i], m2[i], rstd[i], back);
        }
    }
}

/* Whether normalize_rows' fused path takes its P groups FN_AFFINE_ROWS at a time,
 * FN_AFFINE_COLS columns of each in turn (see fused_groups): float32/float64 rows with an
 * elementwise weight, at most FN_AFFINE_BYTES for the FN_AFFINE_ROWS of them.
 * - Where input and output take at most half the last-level cache: rows whose weight and bias
 *   take over 16 KB (over 2048 float32, over 1024 float64). LayerNorm 1.04-1.25x faster ((8-512,
 *   4096), (256, 8192), (512, 2560), float64 (256, 1600), (512, 2048)), float64 (256, 1280) 0.97x
 *   at one thread and 1.05x at two. Rows of exactly 16 KB stay one at a time there (float64
 *   (512, 1024): 0.93-0.98x).
 * - Where input and output take more than half of it (known: an unknown size keeps one row at
 *   a time), rows with a weight and a bias of 16 KB and more (2048 float32, 1024 float64 and
 *   up; a bias alone comes with a weight of ones): one row at a time, x's row, the weight, the
 *   bias and the next row's statistics no longer fit L1 together, while a block of rows reads
 *   each column chunk of weight and bias once. LayerNorm with weight and bias, calls of both
 *   forms alternating in one process: float32 (2048, 2048), (8192, 2048), (2048, 4096), (16, 512,
 *   2048) 1.1-1.3x faster at one thread, 0.98-1.27x at two ((4096, 4096) 1.01-1.14x); float64
 *   (2048, 1024), (8192, 1024) 1.06-1.34x. A weight alone keeps one row at a time (0.67-0.93x in
 *   blocks), and so do rows under 16 KB of weight and bias (float32 rows of 768-1280:
 *   0.71-0.96x).
 * The 16-bit types, bound by their conversions, gained nothing; the fused residual add with
 * sum_out, 0.93-1.1x (add_rms_norm, (16-256, 4096), (32, 8192)), keeps one row at a time. */
static inline int FN(long_affine)(const fn_row_job *jb, int64_t P)
{
    const int64_t L = jb->shape.row_len, gbytes = jb->shape.rows * L * (int64_t)sizeof(T);
    const int64_t pbytes = 2 * L * (int64_t)sizeof(CT);
    if (sizeof(T) < 4 || jb->shape.rows != 1 || !jb->affine.elementwise ||
        FN_AFFINE_ROWS * gbytes > FN_AFFINE_BYTES)
        return 0;
    const int64_t l3 = fn_l3_bytes();
    if (l3 <= 0)
        return 0;
    if (4 * P * gbytes <= l3)
        return pbytes > FN_GB_BYTES;
    return jb->affine.bias && pbytes >= FN_GB_BYTES;
}

static inline int FN(bad_job)(const fn_row_job *jb)
{
    const fn_affine *af = &jb->affine;
    const int act = jb->epilogue.activation;
    return (af->elementwise && !af->weight) || (af->elementwise && jb->epilogue.lower) ||
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
    const int act = FN(out_act)(jb->epilogue.activation, R * L * (int64_t)sizeof(T),
                                s->ys[3] == 1 ? L : 1, FN_SB_ROWS, 0);
    CT *co = (CT *)malloc((size_t)(3 * P) * sizeof(CT));
    if (!co)
        return FN_ENOMEM;
    CT *cm = co, *ca = co + P, *cc = co + 2 * P;
    /* group g = (p1, p2) is coefficient entry (p1, p2), with weight[p2] (group_step 1) */
    const fn_coef_job cj = {s->outer, P2, P2, 1, jb->stats.mean, jb->stats.var, jb->stats.eps,
                            af->weight, af->bias};
    const fn_coefs cf = {cm, ca, cc};
    FN(coefs)(&cj, &cf);
    /* one row per group counts as rows outer (the same order), so that a span of nr groups
     * advances p2 by nr at once, not q by 1 nr times */
    const int rows_outer = Q == 1 || fn_abs(s->xs[2]) > fn_abs(s->xs[1]);
    /* consecutive groups' rows lie back to back (FN_SPAN; rows outer); rows of 512 and more
     * lose little to a call each and gain nothing in the span loop (float32, 2 threads: (1,
     * 512, 28, 28) 28.2 -> 29.6 us in it; (1, 256, 56, 56) at one thread 7% slower) */
    const int span = rows_outer && act == FN_ACT_NONE && L >= 16 && L < 512 && s->xs[3] == 1 &&
                     s->ys[3] == 1 && s->xs[1] == L && s->ys[1] == L;
    const int back = FN(back_ok)(act, R * L) && s->xs[3] == 1 && s->ys[3] == 1;
    (void)back; /* (unused by float16, which has no backward loops) */
    const int64_t rpu = FN_NCHUNK / L, U = (R + rpu - 1) / rpu;
    const int nt = fn_eff_threads(R * L, U, n_threads);
    FN_PFOR(n_threads, nt, u, U, {
        const int64_t t0 = u * rpu, t1 = (u + 1) * rpu < R ? (u + 1) * rpu : R;
        /* row t = (p1 * Q + q) * P2 + p2 rows outer, else t = (p1 * P2 + p2) * Q + q: the
         * indices of the unit's first row, then counted up (no division per row) */
        int64_t p1, p2, q;
        if (rows_outer) {
            p2 = t0 % P2;
            q = (t0 / P2) % Q;
            p1 = t0 / (Q * P2);
        } else {
            q = t0 % Q;
            p2 = (t0 / Q) % P2;
            p1 = t0 / (Q * P2);
        }
        for (int64_t t = t0; t < t1;) {
            const int64_t g = p1 * P2 + p2;
            const T *xr = x + p1 * s->xs[0] + p2 * s->xs[1] + q * s->xs[2];
            T *yr = y + p1 * s->ys[0] + p2 * s->ys[1] + q * s->ys[2];
            int64_t done = 0;
            /* the rows of consecutive groups up to the next q, back to back: in one span */
            if (span) {
                const int64_t nr = t1 - t < P2 - p2 ? t1 - t : P2 - p2;
#ifdef FN_SPAN_BACK
                if (nr > 1 && fn_back_run(back, yr, xr, NULL, NULL))
                    done = FN_SPAN_BACK(xr, yr, nr, L, cm + g, ca + g, cc + g);
                else
#endif
                if (nr > 1)
                    done = FN_SPAN(xr, yr, nr, L, cm + g, ca + g, cc + g);
            }
            if (!done) {
                FN_BACK_OR(fn_back_run(back, yr, xr, NULL, NULL),
                           FN(scale_back)(xr, yr, L, cm[g], ca[g], cc[g]),
                           FN_SCALE_RUN(act, xr, yr, L, s->xs[3], s->ys[3], cm[g], ca[g], cc[g]));
                done = 1;
            }
            t += done;
            int64_t *inner = rows_outer ? &p2 : &q, *outer = rows_outer ? &q : &p2;
            const int64_t ni = rows_outer ? P2 : Q, no = rows_outer ? Q : P2;
            for (*inner += done; *inner >= ni;) {
                *inner -= ni;
                if (++*outer == no) {
                    *outer = 0;
                    p1++;
                }
            }
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
    /* The TLU re-reads each run: no streaming stores then. float32 rows with an elementwise
     * weight and bias stream from fn_stream_bytes_wb. */
    const int oact =
        jb->epilogue.lower
            ? act
            : FN(out_act)(act, P * gsize * (int64_t)sizeof(T), s->ys[3] == 1 ? L : 1,
                          sizeof(T) == 4 && af->elementwise && af->bias ? FN_SB_WB : FN_SB_ROWS,
                          jb->epilogue.fresh && !given);
    const int back = FN(back_ok)(oact, P * gsize);
    /* Fused: each thread takes whole groups and normalizes a group right after its statistics,
     * while it is still in cache. Needs enough groups to share out evenly and groups that fit. */
    if (!given && FN(fuse_ok)(gsize * (int64_t)sizeof(T), P, nt)) {
        const int ntf = P < nt ? (int)P : nt;
        /* one-block groups several at a time (their square roots and divisions in one loop):
         * as many as fit in FN_GB_BYTES, at most FN_GB. Groups of over FN_GB_BYTES / FN_GB
         * bytes only four or more at a time and where input and output take less than half the
         * last-level cache: LayerNorm rows of 384-1000 float32 measured 1.03-1.1x faster that
         * way, but 1.05-1.4x slower two at a time (rows of 1600) or from further out
         * ((8192, 320), (2048, 1024), (4096, 1024)). */
        int64_t mb = FN_GB_BYTES / (gsize * (int64_t)sizeof(T));
        mb = mb > FN_GB ? FN_GB : mb;
        if (mb < FN_GB && (mb < 4 || 4 * P * gsize * (int64_t)sizeof(T) >= fn_l3_bytes()))
            mb = 1;
        /* rows outer (FN(rows_outer)), FN_GB groups at a time where they stay in L2 together */
        const int outer = FN(rows_outer)(Q, L, s->xs[2], s->xs[3]) &&
                          FN_GB * gsize * (int64_t)sizeof(T) <= FN_OUTER_BYTES;
        if (outer)
            mb = FN_GB;
        const int long_affine = FN(long_affine)(jb, P);
        if (long_affine)
            mb = FN_AFFINE_ROWS;
        if (mb > P / ntf) /* a unit for every thread (a group's bits do not depend on it) */
            mb = P / ntf;
        if (pl.nb > 1 && !long_affine && !outer)
            mb = 1;
        const int64_t cols = long_affine && mb > 1 ? FN_AFFINE_COLS : L;
        FN_PFOR(n_threads, ntf, u, (P + mb - 1) / mb, {
            const int64_t g0 = u * mb;
            FN(fused_groups)(x, y, g0, P - g0 < mb ? P - g0 : mb, jb, &pl, oact, cols, back);
        });
        return FN_OK;
    }
    if (given && !af->elementwise && af->group_step == 1 && af->row_step == 0 && L < FN_NCHUNK &&
        !jb->epilogue.lower)
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
        FN_PFOR(n_threads, ntn, u, U, {
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
                            p2, q, q + 1, l0, l1, s, af, oact, (const CT *)jb->epilogue.lower,
                            mean[g], var[g], rstd[g], 0);
        });
    }
    free(buf);
    return FN_OK;
}


/* Table entry add_normalize_rows (see fn_add_job). Fused like normalize_rows: a thread adds a
 * group into the sum (or, with no sum wanted, into its own scratch), then takes its statistics
 * and normalizes it from there while it is in cache, so x and residual are read once.
 * Otherwise the whole sum first, then normalize_rows on it. Both normalize the stored (rounded) sum with normalize_rows' blocks: the result is
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
    /* out_act's threshold is for a pass over x and y; this one also reads the residual (and
     * writes the sum), and a fresh y keeps the previous result beside them (fn_epilogue): its
     * output stops fitting beside the rest at 2/3 (1/2, 2/5) of that size */
    const int64_t streams = 3 + (jb->sum != NULL) + (jb->norm.epilogue.fresh != 0);
    const int oact = FN(out_act)(jb->norm.epilogue.activation,
                                 P * Q * L * (int64_t)sizeof(T) * streams / 2,
                                 s->ys[3] == 1 ? L : 1, FN_SB_ROWS, 0);
    const int back = FN(back_ok)(oact, P * Q * L);
    if (FN(fuse_ok)(Q * L * (int64_t)sizeof(T), P, nt)) {
        const int ntf = P < nt ? (int)P : nt;
        if (jb->sum) {
            FN_PFOR(n_threads, ntf, g, P, {
                const int64_t p1 = g / P2, p2 = g % P2;
                for (int64_t q = 0; q < Q; q++)
                    FN(add_run)(x + p1 * xs[0] + p2 * xs[1] + q * xs[2],
                                r + p1 * rs[0] + p2 * rs[1] + q * rs[2],
                                t + p1 * ts[0] + p2 * ts[1] + q * ts[2], L, xs[3], rs[3], ts[3]);
                FN(fused_groups)(t, y, g, 1, &nj, &pl, oact, L, back);
            });
            return FN_OK;
        }
        /* No sum wanted: each thread adds a group into its own cache-resident scratch, not into
         * y, so y is written once (a second, streaming write over lines just stored costs more
         * than the whole add). The scratch has the group's rows back to back (xs = {0, 0, L, 1}):
         * the statistics' bits are those of dense rows whatever y's layout (below). */
        const int64_t gl = Q * L;
        T *scr = (T *)malloc((size_t)(ntf * gl) * sizeof(T));
        if (!scr)
            return FN_ENOMEM;
        nj.shape.xs[0] = nj.shape.xs[1] = 0;
        nj.shape.xs[2] = L;
        nj.shape.xs[3] = 1;
        FN_PFOR(n_threads, ntf, k, ntf, {
            T *sk = scr + k * gl;
            for (int64_t g = P * k / ntf; g < P * (k + 1) / ntf; g++) {
                const int64_t p1 = g / P2, p2 = g % P2;
                for (int64_t q = 0; q < Q; q++)
                    FN(add_run)(x + p1 * xs[0] + p2 * xs[1] + q * xs[2],
                                r + p1 * rs[0] + p2 * rs[1] + q * rs[2], sk + q * L, L, xs[3],
                                rs[3], 1);
                FN(fused_groups)(sk, y, g, 1, &nj, &pl, oact, L, back);
            }
        });
        free(scr);
        return FN_OK;
    }
    /* Unfused, no sum wanted: the sum goes into y where y's rows are dense; otherwise (a
     * transposed or Fortran-order output) into a dense scratch, so that the statistics are
     * those of dense rows as in the fused path: the same bits for any thread count (which
     * picks the path) and any output layout (in place or not). */
    T *scr = NULL;
    int64_t dense[4];
    if (!jb->sum && !(s->ys[3] == 1 && (Q == 1 || s->ys[2] == L))) {
        scr = (T *)malloc((size_t)(P * Q * L) * sizeof(T));
        if (!scr)
            return FN_ENOMEM;
        dense[3] = 1;
        dense[2] = L;
        dense[1] = Q * L;
        dense[0] = P2 * Q * L;
        t = scr;
        ts = dense;
        memcpy(nj.shape.xs, ts, sizeof nj.shape.xs);
    }
    const int64_t cpl = (L + FN_NCHUNK - 1) / FN_NCHUNK, U = P * Q * cpl;
    const int nta = fn_eff_threads(P * Q * L, U, n_threads);
    FN_PFOR(n_threads, nta, u, U, {
        const int64_t row = u / cpl, g = row / Q, q = row % Q, p1 = g / P2, p2 = g % P2;
        const int64_t l0 = (u % cpl) * FN_NCHUNK, l1 = l0 + FN_NCHUNK < L ? l0 + FN_NCHUNK : L;
        FN(add_run)(x + p1 * xs[0] + p2 * xs[1] + q * xs[2] + l0 * xs[3],
                    r + p1 * rs[0] + p2 * rs[1] + q * rs[2] + l0 * rs[3],
                    t + p1 * ts[0] + p2 * ts[1] + q * ts[2] + l0 * ts[3], l1 - l0, xs[3], rs[3],
                    ts[3]);
    });
    const int rc = FN(normalize_rows)(t, y, &nj, n_threads);
    free(scr);
    return rc;
}

#include "fn_backward_impl.h"

static const fn_kernel_table FN(table) = {
    FN_STR(S), (int)sizeof(T), (int)sizeof(CT), FN(row_moments), FN(col_moments), FN(coefs),
    FN(normalize_cols), FN(group_cols), FN(normalize_rows), FN(add_normalize_rows),
    FN(grad_sums_rows), FN(grad_sums_cols), FN(grad_apply_rows), FN(grad_apply_cols), FN(grad_rows),
    FN(grad_layer), FN(grad_eval_cols), FN(grad_cols),
};

#undef FN_SCALE_RUN
#undef FN_AFFINE_RUN
#undef FN_WEIGHT_RUN
#undef FN_COLS_RUN
#undef FN_COLS0_RUN
#undef FN_COLS_ROW_RUN
#undef FN_ROW_FUSED

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
#undef FN_REP
#undef FN_SPAN
#undef FN_SPAN_BACK
#undef FN_BACK_OR
#undef FN_PAIRS_LOAD
#undef FN_V512
#undef FN_DIRECT_NT
#undef FN_UNSHIFTED
#undef FN_LOOK
#undef FN_LOOK_N
#undef FN_STREAM
#undef FN_SUMS16
#undef FN_SUMS16_0
#undef FN_SUMS16R
#undef FN_SUMS16R_0
#undef FN_TILE16_FN
#undef FN_ROWS_SIMD
