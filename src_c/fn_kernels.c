/* fastnorm kernels: the shared helpers, then the bodies of fn_kernels_impl.h for float and
 * double. See fastnorm.h for the interface. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastnorm.h"

/* Streaming stores are weakly ordered: the stores' loops only note that this thread made some
 * (fn_nt_note), and each thread fences once when its share of a parallel loop is done
 * (FN_PFOR_DONE), before the loop's end makes the output visible to the others. A fence after
 * every run made short rows several times slower than plain stores: eval BatchNorm (64, 512,
 * 16, 16) float32, one thread, 5.1 ms against 1.7 with plain stores and 1.3 fenced per thread;
 * float16 channels-last rows of 1 KB 4x slower. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(FN_NO_SIMD)
#include <immintrin.h>
static __thread int fn_nt_pending; /* streaming stores made and not fenced yet */
static inline void fn_nt_note(void) { fn_nt_pending = 1; }
static inline void fn_nt_flush(void)
{
    if (fn_nt_pending) {
        _mm_sfence();
        fn_nt_pending = 0;
    }
}
#else
static inline void fn_nt_note(void) {}
static inline void fn_nt_flush(void) {}
#endif
#define FN_PFOR_DONE() fn_nt_flush()
#include "fn_openmp.h"

/* Elements per statistics block: blocks are fixed by the shape alone, so the merge order (and
 * every bit of the result) is the same for any thread count. */
#define FN_BLOCK 4096
/* Columns per tile, and elements per tile, in the column (channels-last) statistics kernel: a
 * tile's per-column sums (3 doubles a column) stay in L1 while its rows stream through. */
#define FN_CB 1024
#define FN_COL_BLOCK 32768
#define FN_COL_UNITS 8 /* pieces of work col_moments keeps for the threads (fn_col_stat_rows) */
#define FN_COL_UNITS_TALL 16 /* ... up to this many while blocks stay FN_COL_TALL rows or more */
#define FN_COL_TALL 512
#define FN_MERGE_COLS 256 /* columns per unit of the column statistics' merge */
#define FN_QB 64          /* rows whose coefficients group_apply computes at a time */
#define FN_LOOK_MIN 256   /* shortest float32 run that looks_centred looks at */
#define FN_GB 16          /* small fused groups taken at a time (fused_groups) */
#define FN_GB_BYTES 16384 /* ... when FN_GB of them fit in this much: in L1 for the normalize */
#define FN_OUTER_ROW_BYTES 2048 /* longest rows that fused_groups takes rows outer (rows_outer) */
#define FN_OUTER_BYTES (512 * 1024) /* ... where FN_GB of their groups fit in this much */
#define FN_AFFINE_COLS 1024 /* columns of long affine rows normalized at a time (fused_groups) */
#define FN_AFFINE_ROWS 4     /* long affine rows fused_groups takes at a time ... */
#define FN_AFFINE_BYTES (256 * 1024) /* ... when they take at most this much */
#define FN_PF_GROUP 16384 /* largest 16-bit group whose successor fused_groups prefetches */
#ifndef FN_TILE_PF
#define FN_TILE_PF 8192 /* bytes ahead that tile_sums prefetches (at least 4 rows) */
#endif
/* Elements per unit of work in the normalize kernels. */
#define FN_NCHUNK 16384
/* A contiguous activation-free run's remainder after the 16-bit types' direct loops (without
 * AVX-512 BW, which takes it as a masked vector) that goes element by element rather than
 * through the float buffer (three calls per run): float16 BatchNorm on 7x7 to 10x10 planes
 * spent more time in those calls than in its rows. */
#define FN_SHORT_TAIL 16
/* normalize_cols' rows of fewer columns than FN_REP_COLS go as one run with their coefficients
 * repeated over fn_rep_len(C) elements (the 16-bit direct loops; float32 / float64 where they
 * are streamed) */
#define FN_REP_COLS 128
#define FN_REP_MIN 512
#define FN_REP_MAX 2048 /* a bound on the repeated sets a unit keeps on its stack (fn_rep_len
                         * gives at most 16 * 127 = 2032 for C < FN_REP_COLS) */
#define FN_REP_UNITS 8   /* a unit repeats its own coefficient set when it has this many runs */
/* about the most bytes of a row's coefficients that normalize_cols takes in one run (more: column
 * chunks) */
#define FN_COLS_COEF_BYTES 16384
/* Largest group (bytes) that the fused kernel normalizes right after its statistics: at least
 * this (well inside a 1 MiB L2 together with the output it writes), more where the last-level
 * cache holds four such groups per thread (see fn_fuse_bytes). */
#define FN_FUSE_BYTES (512 * 1024)
#define FN_MAX_L3 (32L * 1024 * 1024)
/* Below this many elements per thread, another thread costs more than it saves. 16384: warm
 * threads, LayerNorm (4, 14336) 16.7 -> 9.7-11 us and (2, 16384) 8.2 -> 6.4 us on two threads
 * instead of one (32768 before); at 8192 a single row of 16384 split in two got slower. */
#define FN_MIN_WORK_PER_THREAD 16384
/* Calls whose output takes at most this many bytes run an output that leads its input by a few
 * hundred bytes modulo 4096 backward (fn_lead_alias); larger ones stream from L3 or memory, where
 * only forward runs are prefetched */
#define FN_BACK_BYTES (512 * 1024)

/* Whether a loop storing to y, run forward, would load from p just after storing at the same
 * address modulo 4096: y leads p by 1 to 512 bytes. The core then takes such a load for one that
 * depends on the store and waits for it (4K aliasing; loads run a few hundred bytes ahead of the
 * stores). Small outputs that NumPy or the pool of small outputs places lead their input by any
 * amount (three allocating LayerNorm (1, 768) calls: 2288, 1280 and 272 bytes); large ones start
 * 16 bytes into a page, as their input does (0). Calls of at most FN_BACK_BYTES run such outputs
 * backward (scale_back, affine_back, weight_back, the span loops' _back). RMSNorm (1, 4096) with
 * its output 80 or 160 bytes ahead of its input against the same call with the output elsewhere,
 * in separate processes: 1.00-2.07x the time forward, 1.00-1.04x backward; eval BatchNorm (1,
 * 320, 14, 14) 1.05-1.57x forward, 0.94-1.05x backward. */
static inline int fn_lead_alias(const void *y, const void *p)
{
    const uintptr_t d = ((uintptr_t)y - (uintptr_t)p) & 4095u;
    return d != 0 && d <= 512;
}
/* Whether a contiguous run storing to y, in a call small enough to run backward (back), does:
 * where y leads x, w or b (those given) that way */
static inline int fn_back_run(int back, const void *y, const void *x, const void *w,
                              const void *b)
{
    return back && (fn_lead_alias(y, x) || (w && fn_lead_alias(y, w)) || (b && fn_lead_alias(y, b)));
}

/* Hot loops are cloned per ISA and picked at load time, so a portable build still uses AVX2 /
 * AVX-512 where the CPU has them (GCC on x86-64 with ifunc support). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(FN_NO_CLONES)
#define FN_HOT __attribute__((noinline, target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FN_HOT
#endif

/* The statistics loops have AVX-512 and AVX2+FMA versions (x86-64 with GCC or clang), chosen at
 * run time by what the CPU has; elsewhere portable C. Results depend on which path runs (the
 * machine), never on the thread count. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(FN_NO_SIMD)
#define FN_AVX2 1
#define FN_AVX512 1
#include <immintrin.h>
/* clang 18-21 keep 512-bit vectors behind a target feature of their own, evex512 (for AVX10).
 * Their driver turns it on with avx512f, but a build that turns it off for the whole file (zig
 * cc for a generic CPU passes -mno-evex512) needs it named in each AVX-512 function's target;
 * clang 22 dropped the name (and ignores a target attribute that has it) */
#if defined(__clang__) && !defined(__apple_build_version__) && __clang_major__ >= 18 &&          \
    __clang_major__ <= 21
#define FN_EVEX512 "evex512,"
#else
#define FN_EVEX512 ""
#endif
#define FN_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))
#define FN_AVX2_FUNC static __attribute__((noinline, target("avx2,fma,f16c")))
#define FN_AVX512_TARGET target(FN_EVEX512 "avx512f,f16c")
#define FN_AVX512_INLINE static inline __attribute__((always_inline, FN_AVX512_TARGET))
#define FN_AVX512_FUNC static __attribute__((noinline, FN_AVX512_TARGET))
/* The statistics loops' loaders: VW stored elements widened to doubles. float16 through F16C,
 * bfloat16 by shifting its bits into the top half of a float. */
FN_AVX2_INLINE __m256d fn_load4_f32(const float *p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
FN_AVX2_INLINE __m256d fn_load4_f64(const double *p) { return _mm256_loadu_pd(p); }
FN_AVX2_INLINE __m256d fn_load4_f16(const uint16_t *p)
{
    return _mm256_cvtps_pd(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)p)));
}
FN_AVX2_INLINE __m256d fn_load4_bf16(const uint16_t *p)
{
    const __m128i u = _mm_slli_epi32(_mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)p)), 16);
    return _mm256_cvtps_pd(_mm_castsi128_ps(u));
}
FN_AVX512_INLINE __m512d fn_load8_f32(const float *p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
FN_AVX512_INLINE __m512d fn_load8_f64(const double *p) { return _mm512_loadu_pd(p); }
FN_AVX512_INLINE __m512d fn_load8_f16(const uint16_t *p)
{
    return _mm512_cvtps_pd(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)));
}
FN_AVX512_INLINE __m512d fn_load8_bf16(const uint16_t *p)
{
    const __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16);
    return _mm512_cvtps_pd(_mm256_castsi256_ps(u));
}
/* The 16-bit types' statistics loops: their elements widen exactly to float, so d = x - k and
 * d * d are taken in float, at twice the lanes of the double loops and with no float-to-double
 * conversion per element. Float partials run over FN_SUMS16_ITERS steps (2 * FN_SUMS16_ITERS
 * terms per lane) and are then added to double accumulators, which bounds their rounding error;
 * block_moments (fn_kernels_impl.h) checks each block's result and takes it again in double when
 * float could have lost accuracy (overflow, underflow, cancellation). */
#define FN_SUMS16_ITERS 8
#define FN_SUMS16_LOOP(NAME, ATTR, W, VF, VD, LOADF, SET1F, ZEROF, SUBF, ADDF, FMAF, ZEROD, ADDD,   \
                       WIDEN_LO, WIDEN_HI, HSUMD)                                                   \
    ATTR int64_t NAME(const uint16_t *x, int64_t len, float k, double *t1, double *t2)              \
    {                                                                                               \
        const VF kv = SET1F(k);                                                                     \
        VD s1 = ZEROD(), s2 = s1, u1 = s1, u2 = s1;                                                 \
        int64_t i = 0;                                                                              \
        while (i + 2 * W <= len) {                                                                  \
            VF a1 = ZEROF(), b1 = a1, a2 = a1, b2 = a1;                                             \
            for (int j = 0; j < FN_SUMS16_ITERS && i + 2 * W <= len; j++, i += 2 * W) {             \
                const VF u = SUBF(LOADF(x + i), kv), v = SUBF(LOADF(x + i + W), kv);                \
                a1 = ADDF(a1, u);                                                                   \
                a2 = FMAF(u, u, a2);                                                                \
                b1 = ADDF(b1, v);                                                                   \
                b2 = FMAF(v, v, b2);                                                                \
            }                                                                                       \
            a1 = ADDF(a1, b1);                                                                      \
            a2 = ADDF(a2, b2);                                                                      \
            s1 = ADDD(s1, WIDEN_LO(a1));                                                            \
            u1 = ADDD(u1, WIDEN_HI(a1));                                                            \
            s2 = ADDD(s2, WIDEN_LO(a2));                                                            \
            u2 = ADDD(u2, WIDEN_HI(a2));                                                            \
        }                                                                                           \
        *t1 = HSUMD(ADDD(s1, u1));                                                                  \
        *t2 = HSUMD(ADDD(s2, u2));                                                                  \
        return i;                                                                                   \
    }
FN_AVX2_INLINE __m256 fn_lf8_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
FN_AVX2_INLINE __m256 fn_lf8_bf16(const uint16_t *p)
{
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
FN_AVX2_INLINE __m256d fn_wlo4(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
FN_AVX2_INLINE __m256d fn_whi4(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
FN_AVX512_INLINE __m512 fn_lf16_f16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
/* 16 bfloat16 bit patterns widened to floats (the top halves); AVX-512F alone, so that the
 * bfloat16 loops (compiled for AVX-512 BF16, without F16C) take them inline too */
#define FN_AVX512F_INLINE static inline __attribute__((always_inline, target(FN_EVEX512 "avx512f")))
FN_AVX512F_INLINE __m512 fn_wb16(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
FN_AVX512F_INLINE __m512 fn_lf16_bf16(const uint16_t *p)
{
    return fn_wb16(_mm256_loadu_si256((const __m256i *)p));
}
FN_AVX512_INLINE __m512d fn_wlo8(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
FN_AVX512_INLINE __m512d fn_whi8(__m512 v)
{
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
/* float32's statistics loops on a CPU that runs AVX-512 on 256-bit units (AMD Zen 4): each
 * 512-bit vector of doubles is kept as a pair of 256-bit halves, low lanes first, and widened
 * from float in halves. The same lanes, operations and order as the 512-bit loops, so the same
 * bits; faster there, where widening 8 floats at once is slow (one thread, per-channel
 * statistics of channels-last (1, 960, 32, 32): 115-120 -> 101-102 us; the sum of squares of 4096
 * floats: 0.26 -> 0.16 us in cache). */
typedef struct {
    __m256d lo, hi;
} fn_pd2;
#define FN_PAIR_TARGET target(FN_EVEX512 "avx512f,avx512vl,fma,f16c")
#define FN_PAIR_INLINE static inline __attribute__((always_inline, FN_PAIR_TARGET))
#define FN_PAIR_FUNC static __attribute__((noinline, FN_PAIR_TARGET))
FN_PAIR_INLINE fn_pd2 fn_p2(__m256d lo, __m256d hi)
{
    fn_pd2 r = {lo, hi};
    return r;
}
FN_PAIR_INLINE fn_pd2 fn_p2_zero(void) { return fn_p2(_mm256_setzero_pd(), _mm256_setzero_pd()); }
FN_PAIR_INLINE fn_pd2 fn_p2_set1(double v) { return fn_p2(_mm256_set1_pd(v), _mm256_set1_pd(v)); }
FN_PAIR_INLINE fn_pd2 fn_p2_sub(fn_pd2 a, fn_pd2 b)
{
    return fn_p2(_mm256_sub_pd(a.lo, b.lo), _mm256_sub_pd(a.hi, b.hi));
}
FN_PAIR_INLINE fn_pd2 fn_p2_add(fn_pd2 a, fn_pd2 b)
{
    return fn_p2(_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi));
}
FN_PAIR_INLINE fn_pd2 fn_p2_fma(fn_pd2 a, fn_pd2 b, fn_pd2 c)
{
    return fn_p2(_mm256_fmadd_pd(a.lo, b.lo, c.lo), _mm256_fmadd_pd(a.hi, b.hi, c.hi));
}
FN_PAIR_INLINE fn_pd2 fn_p2_load(const double *p)
{
    return fn_p2(_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4));
}
FN_PAIR_INLINE void fn_p2_store(double *p, fn_pd2 v)
{
    _mm256_storeu_pd(p, v.lo);
    _mm256_storeu_pd(p + 4, v.hi);
}
FN_PAIR_INLINE fn_pd2 fn_p2_load_f32(const float *p)
{
    return fn_p2(_mm256_cvtps_pd(_mm_loadu_ps(p)), _mm256_cvtps_pd(_mm_loadu_ps(p + 4)));
}
/* The rows loops' masked loaders (VLOADT_M, fn_simd_impl.h): the first lanes of m, zeros
 * beyond (no fault there), widened as the plain loaders do; and their masked shift, zero in the
 * lanes m leaves out */
FN_AVX512_INLINE __m512d fn_load8m_f32(__mmask8 m, const float *p)
{
    return _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_maskz_loadu_ps((__mmask16)m, p)));
}
FN_AVX512_INLINE __m512d fn_load8m_f64(__mmask8 m, const double *p)
{
    return _mm512_maskz_loadu_pd(m, p);
}
FN_AVX512_INLINE __m512d fn_msub8(__mmask8 m, __m512d a, __m512d b)
{
    return _mm512_maskz_sub_pd(m, a, b);
}
FN_PAIR_INLINE fn_pd2 fn_p2_load_m_f32(__mmask8 m, const float *p)
{
    const __m256 v = _mm256_maskz_loadu_ps(m, p);
    return fn_p2(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                 _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}
FN_PAIR_INLINE fn_pd2 fn_p2_msub(__mmask8 m, fn_pd2 a, fn_pd2 b)
{
    return fn_p2(_mm256_maskz_sub_pd(m, a.lo, b.lo),
                 _mm256_maskz_sub_pd((__mmask8)(m >> 4), a.hi, b.hi));
}
/* Lanes summed in a fixed order. */
FN_AVX2_INLINE double fn_hsum4(__m256d v)
{
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
FN_AVX512_INLINE double fn_hsum8(__m512d v)
{
    const __m256d lo = _mm512_castpd512_pd256(v), hi = _mm512_extractf64x4_pd(v, 1);
    const __m256d h = _mm256_add_pd(lo, hi);
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
/* fn_hsum8 of the 512-bit vector a pair stands for (its first step adds the halves) */
FN_PAIR_INLINE double fn_p2_hsum(fn_pd2 v) { return fn_hsum4(_mm256_add_pd(v.lo, v.hi)); }
/* SUBF: the shift's subtraction, or fn_keep (the _0 loops: x itself, the same bits as k = 0) */
#define fn_keep(v, k) ((void)(k), (v))
#define FN_SUMS16_AVX2(NAME, LOADF, SUBF)                                                          \
    FN_SUMS16_LOOP(NAME, FN_AVX2_FUNC, 8, __m256, __m256d, LOADF, _mm256_set1_ps,                  \
                   _mm256_setzero_ps, SUBF, _mm256_add_ps, _mm256_fmadd_ps, _mm256_setzero_pd,      \
                   _mm256_add_pd, fn_wlo4, fn_whi4, fn_hsum4)
#define FN_SUMS16_AVX512(NAME, LOADF, SUBF)                                                        \
    FN_SUMS16_LOOP(NAME, FN_AVX512_FUNC, 16, __m512, __m512d, LOADF, _mm512_set1_ps,               \
                   _mm512_setzero_ps, SUBF, _mm512_add_ps, _mm512_fmadd_ps, _mm512_setzero_pd,      \
                   _mm512_add_pd, fn_wlo8, fn_whi8, fn_hsum8)
FN_SUMS16_AVX2(fn_sums16_f16_avx2, fn_lf8_f16, _mm256_sub_ps)
FN_SUMS16_AVX2(fn_sums16_bf16_avx2, fn_lf8_bf16, _mm256_sub_ps)
FN_SUMS16_AVX512(fn_sums16_f16_avx512, fn_lf16_f16, _mm512_sub_ps)
FN_SUMS16_AVX512(fn_sums16_bf16_avx512, fn_lf16_bf16, _mm512_sub_ps)
FN_SUMS16_AVX2(fn_sums16_0_f16_avx2, fn_lf8_f16, fn_keep)
FN_SUMS16_AVX2(fn_sums16_0_bf16_avx2, fn_lf8_bf16, fn_keep)
FN_SUMS16_AVX512(fn_sums16_0_f16_avx512, fn_lf16_f16, fn_keep)
FN_SUMS16_AVX512(fn_sums16_0_bf16_avx512, fn_lf16_bf16, fn_keep)
/* The 16-bit types' column statistics (col_moments' tiles, channels-last) in float, like their
 * rows: 16 columns a vector, d = x - k[j] and d * d in float over FN_TILE16_ROWS rows, then
 * added to the columns' double sums. Rows are read in memory order, four at a time, with
 * tile_sums' prefetches (fn_simd_impl.h, VTILE); the float partials live in L1 between rows.
 * Returns how many of the w columns it did (a multiple of 16); col_moments checks each
 * column's sums with lowp_ok and takes the tile in double when one fails. Against the double
 * loop (two conversions and twice the vectors per element): half the operations. */
#define FN_TILE16_ROWS 16
#define FN_TILE16(NAME, LOADF)                                                                      \
    FN_AVX512_FUNC int64_t NAME(const uint16_t *x, int64_t r0, int64_t r1, int64_t rend,            \
                                int64_t sr, int64_t w, const double *k, double *s1, double *s2)    \
    {                                                                                               \
        const int64_t wv = w - w % 16;                                                              \
        float kf[FN_CB], f1[FN_CB], f2[FN_CB];                                                      \
        for (int64_t j = 0; j < wv; j += 8) {                                                       \
            _mm256_storeu_ps(kf + j, _mm512_cvtpd_ps(_mm512_loadu_pd(k + j)));                     \
            _mm512_storeu_pd(s1 + j, _mm512_setzero_pd());                                          \
            _mm512_storeu_pd(s2 + j, _mm512_setzero_pd());                                          \
        }                                                                                           \
        const int64_t row_bytes = sr * 2;                                                           \
        const int64_t pf = row_bytes > 0 && FN_TILE_PF / row_bytes > 4 ? FN_TILE_PF / row_bytes : 4; \
        for (int64_t rb = r0; rb < r1; rb += FN_TILE16_ROWS) {                                      \
            const int64_t re = rb + FN_TILE16_ROWS < r1 ? rb + FN_TILE16_ROWS : r1;                 \
            for (int64_t j = 0; j < wv; j += 16) {                                                  \
                _mm512_storeu_ps(f1 + j, _mm512_setzero_ps());                                      \
                _mm512_storeu_ps(f2 + j, _mm512_setzero_ps());                                      \
            }                                                                                       \
            int64_t r = rb;                                                                         \
            for (; r + 4 <= re; r += 4) {                                                           \
                const uint16_t *x0 = x + r * sr, *x1 = x0 + sr, *x2 = x1 + sr, *x3 = x2 + sr;       \
                const uint16_t *p0 = r + pf + 4 <= rend ? x0 + pf * sr : x0;                        \
                for (int64_t j = 0; j < wv; j += 16) {                                              \
                    if (!(j & 31)) {                                                                \
                        __builtin_prefetch(p0 + j, 0, 1);                                           \
                        __builtin_prefetch(p0 + sr + j, 0, 1);                                      \
                        __builtin_prefetch(p0 + 2 * sr + j, 0, 1);                                  \
                        __builtin_prefetch(p0 + 3 * sr + j, 0, 1);                                  \
                    }                                                                               \
                    const __m512 kv = _mm512_loadu_ps(kf + j);                                      \
                    __m512 a = _mm512_loadu_ps(f1 + j), q = _mm512_loadu_ps(f2 + j);                \
                    const __m512 d0 = _mm512_sub_ps(LOADF(x0 + j), kv);                             \
                    const __m512 d1 = _mm512_sub_ps(LOADF(x1 + j), kv);                             \
                    const __m512 d2 = _mm512_sub_ps(LOADF(x2 + j), kv);                             \
                    const __m512 d3 = _mm512_sub_ps(LOADF(x3 + j), kv);                             \
                    a = _mm512_add_ps(a, d0);                                                       \
                    q = _mm512_fmadd_ps(d0, d0, q);                                                 \
                    a = _mm512_add_ps(a, d1);                                                       \
                    q = _mm512_fmadd_ps(d1, d1, q);                                                 \
                    a = _mm512_add_ps(a, d2);                                                       \
                    q = _mm512_fmadd_ps(d2, d2, q);                                                 \
                    a = _mm512_add_ps(a, d3);                                                       \
                    q = _mm512_fmadd_ps(d3, d3, q);                                                 \
                    _mm512_storeu_ps(f1 + j, a);                                                    \
                    _mm512_storeu_ps(f2 + j, q);                                                    \
                }                                                                                   \
            }                                                                                       \
            for (; r < re; r++) {                                                                   \
                const uint16_t *xr = x + r * sr;                                                    \
                for (int64_t j = 0; j < wv; j += 16) {                                              \
                    const __m512 d = _mm512_sub_ps(LOADF(xr + j), _mm512_loadu_ps(kf + j));         \
                    _mm512_storeu_ps(f1 + j, _mm512_add_ps(_mm512_loadu_ps(f1 + j), d));            \
                    _mm512_storeu_ps(f2 + j, _mm512_fmadd_ps(d, d, _mm512_loadu_ps(f2 + j)));       \
                }                                                                                   \
            }                                                                                       \
            for (int64_t j = 0; j < wv; j += 16) {                                                  \
                const __m512 a = _mm512_loadu_ps(f1 + j), q = _mm512_loadu_ps(f2 + j);              \
                _mm512_storeu_pd(s1 + j, _mm512_add_pd(_mm512_loadu_pd(s1 + j), fn_wlo8(a)));       \
                _mm512_storeu_pd(s1 + j + 8, _mm512_add_pd(_mm512_loadu_pd(s1 + j + 8), fn_whi8(a))); \
                _mm512_storeu_pd(s2 + j, _mm512_add_pd(_mm512_loadu_pd(s2 + j), fn_wlo8(q)));       \
                _mm512_storeu_pd(s2 + j + 8, _mm512_add_pd(_mm512_loadu_pd(s2 + j + 8), fn_whi8(q))); \
            }                                                                                       \
        }                                                                                           \
        return wv;                                                                                  \
    }
FN_TILE16(fn_tile16_f16_avx512, fn_lf16_f16)
FN_TILE16(fn_tile16_bf16_avx512, fn_lf16_bf16)
#else
#define FN_AVX2 0
#define FN_AVX512 0
#endif

#if defined(__unix__)
#include <unistd.h>
#endif

/* What the machine offers, found once by fn_init (the Python module calls it at import, before
 * any parallel region reads these) or, failing that, at first use. */
static int fn_simd_state = -1; /* 2: AVX-512F, 1: AVX2 + FMA, 0: neither */
static int fn_bf16_state = 0;  /* AVX-512 BF16 (and BW, DQ, VL) usable, with simd level 2 */
static int fn_bw_state = 0;    /* AVX-512 BW and VL usable, with simd level 2 */
static int fn_pairs_state = 0; /* float32 statistics in 256-bit pairs (fn_pd2), simd level 2 */
static int64_t fn_l3_state = -1; /* last-level cache bytes, 0 when unknown */
static int64_t fn_stream_env = -1; /* FN_STREAM_BYTES (environment), -1 when not set */

#if FN_AVX2
#include <cpuid.h>
/* The CPU's family on an AMD CPU (base plus extended family), 0 on any other */
static int fn_amd_family(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d) || b != 0x68747541u) /* "Auth" of AuthenticAMD */
        return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    const int base = (int)((a >> 8) & 0xf);
    return base == 0xf ? base + (int)((a >> 20) & 0xff) : base;
}
#endif

void fn_init(void)
{
    int lvl = 0;
#if FN_AVX2
    /* F16C (float16 conversions) comes with every AVX2 CPU; checked anyway, from CPUID itself
     * (clang before 15 has no "f16c" for __builtin_cpu_supports) */
    unsigned ca, cb, cc, cd;
    const int f16c = __get_cpuid(1, &ca, &cb, &cc, &cd) && (cc & bit_F16C);
    lvl = (__builtin_cpu_supports("avx512f") && f16c) ? 2
          : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) ? 1 : 0;
    /* FN_SIMD_LEVEL (environment) caps it, to test the other paths on one machine */
    const char *cap = getenv("FN_SIMD_LEVEL");
    if (cap && *cap >= '0' && *cap <= '2' && *cap - '0' < lvl)
        lvl = *cap - '0';
#endif
    long v = 0;
#if defined(__unix__) && defined(_SC_LEVEL3_CACHE_SIZE)
    v = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    /* VMs may report the whole package's L3 (256 MiB seen here) rather than the slice one core
     * cluster shares; trust at most FN_MAX_L3 */
    fn_l3_state = v <= 0 ? 0 : v > FN_MAX_L3 ? FN_MAX_L3 : v;
    /* FN_STREAM_BYTES overrides where streaming stores start (0: never), for the tests */
    const char *sb = getenv("FN_STREAM_BYTES");
    if (sb && *sb >= '0' && *sb <= '9') { /* clamped: the other thresholds are multiples of it */
        fn_stream_env = strtoll(sb, NULL, 10);
        if (fn_stream_env > ((int64_t)1 << 60))
            fn_stream_env = (int64_t)1 << 60;
    }
#if FN_AVX2
    fn_bf16_state = lvl >= 2 && __builtin_cpu_supports("avx512bf16") &&
                    __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                    __builtin_cpu_supports("avx512vl");
    fn_bw_state = lvl >= 2 && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl");
    /* AVX-512 on 256-bit units: AMD family 19h (Zen 4; Zen 3 of that family has no AVX-512).
     * FN_PAIRS=0 / 1 (environment) overrides, to test both loops on one machine. */
    const char *pe = getenv("FN_PAIRS");
    fn_pairs_state = lvl >= 2 && __builtin_cpu_supports("avx512vl") &&
                     (pe && (*pe == '0' || *pe == '1') ? *pe == '1' : fn_amd_family() == 0x19);
#endif
    fn_simd_state = lvl;
}

static inline int fn_simd_level(void)
{
    if (fn_simd_state < 0)
        fn_init();
    return fn_simd_state;
}

/* Whether the AVX-512 BW loops (masked 16-bit loads and stores) run, and the AVX-512 BF16 ones */
static inline int fn_bw_ok(void) { return fn_simd_level() >= 2 && fn_bw_state; }
static inline int fn_bf16_ok(void) { return fn_simd_level() >= 2 && fn_bf16_state; }
static inline int fn_pairs_ok(void) { return fn_simd_level() >= 2 && fn_pairs_state; }

static int64_t fn_l3_bytes(void)
{
    if (fn_l3_state < 0)
        fn_init();
    return fn_l3_state;
}

/* Group size up to which normalizing right after the statistics re-reads the group from cache:
 * L2-sized groups always; larger ones while n_threads of them (in and out) fit in half the L3.
 * When the guess is wrong the data comes from memory again, as in the unfused path. */
static int64_t fn_fuse_bytes(int n_threads)
{
    const int64_t by_l3 = fn_l3_bytes() / (4 * (int64_t)(n_threads > 0 ? n_threads : 1));
    return by_l3 > FN_FUSE_BYTES ? by_l3 : FN_FUSE_BYTES;
}

/* Bytes of groups whose statistics are taken before they are normalized, in the unfused path:
 * half the last-level cache, so that the batch is still there for the normalize pass. */
static int64_t fn_batch_bytes(void)
{
    const int64_t half = fn_l3_bytes() / 2;
    return half > FN_FUSE_BYTES ? half : FN_FUSE_BYTES;
}

int fn_have_openmp(void) { return FN_HAVE_OPENMP; }

int fn_max_threads(void) { return fn_omp_max_threads(); }

/* Threads worth using for `work` elements split into `units` independent pieces. */
static int fn_eff_threads(int64_t work, int64_t units, int n_threads)
{
    int64_t nt = n_threads > 0 ? n_threads : fn_omp_max_threads();
    const int64_t by_work = work / FN_MIN_WORK_PER_THREAD;
    if (nt > by_work)
        nt = by_work;
    if (nt > units)
        nt = units;
    return nt < 1 ? 1 : (int)nt;
}

static inline int64_t fn_abs(int64_t v) { return v < 0 ? -v : v; }

/* (p1, p2) -> the next group p1 * P2 + p2 + 1, without the division per group */
static inline void fn_next_group(int64_t *p1, int64_t *p2, int64_t P2)
{
    if (++*p2 == P2) {
        *p2 = 0;
        ++*p1;
    }
}

/* A NaN statistic as the one quiet NaN NAN: which of two NaNs an addition passes on (the data's,
 * or the negative one that inf - inf makes) follows the order of its operands, which the compiler
 * may choose differently in the serial and the parallel copy of a loop (FN_PFOR), and the sign of
 * a NaN output then depended on the thread count (float16 training BatchNorm with a NaN and an inf
 * in one channel). */
static inline double fn_one_nan(double v) { return v != v ? NAN : v; }

/* k is usable as a float centre (the backward's float-lane loops) */
static inline int fn_fcentre(double k) { return isfinite(k) && fabs(k) <= FLT_MAX; }

/* Chan et al.'s pairwise update: merge (nb, mb, m2b) into the running (n, mean, m2). */
static inline void fn_chan(double *n, double *mean, double *m2, double nb, double mb, double m2b)
{
    if (*n == 0.0) {
        *n = nb;
        *mean = mb;
        *m2 = m2b;
        return;
    }
    const double nn = *n + nb, d = mb - *mean, f = nb / nn;
    if (isfinite(d)) {
        *mean += d * f;
        *m2 += m2b + d * d * (*n) * f;
    } else { /* an inf or NaN mean: propagate as a plain sum would (inf + inf = inf, not NaN) */
        *mean += mb;
        *m2 = NAN;
    }
    *mean = fn_one_nan(*mean);
    *m2 = fn_one_nan(*m2);
    *n = nn;
}

/* fn_chan for n columns that share their counts: the running (cnt, mean[j], m2[j]) merged with
 * the block (nb, mb[j * st], m2b[j * st]). Column by column the arithmetic of fn_chan (so the
 * same bits), with the counts' division done once, and branch-free, so that it vectorizes
 * across the columns (a chain of divisions per column cost a quarter of channels-last
 * statistics). */
static FN_HOT void fn_chan_run(int64_t n, double cnt, double nb, double *mean, double *m2,
                               const double *mb, const double *m2b, int64_t st)
{
    if (cnt == 0.0) {
        for (int64_t j = 0; j < n; j++) {
            mean[j] = mb[j * st];
            m2[j] = m2b[j * st];
        }
        return;
    }
    const double f = nb / (cnt + nb);
    for (int64_t j = 0; j < n; j++) {
        const double d = mb[j * st] - mean[j];
        const int ok = fabs(d) <= DBL_MAX; /* finite: else propagate as fn_chan does */
        const double q = m2[j] + (m2b[j * st] + d * d * cnt * f);
        mean[j] = fn_one_nan(mean[j] + (ok ? d * f : mb[j * st]));
        m2[j] = ok ? fn_one_nan(q) : NAN;
    }
}

/* The backward's per-entry sums from their per-chunk partials (part[e * cpl + k] and, U
 * further on, the second sum), each entry's chunks added to 0 in chunk order. */
static inline void fn_merge_chunks(const double *part, int64_t E, int64_t cpl, int64_t U,
                                   double *s1, double *s2)
{
    for (int64_t e = 0; e < E; e++) {
        double t1 = 0.0, t2 = 0.0;
        for (int64_t k = 0; k < cpl; k++) {
            t1 += part[e * cpl + k];
            t2 += part[U + e * cpl + k];
        }
        s1[e] = t1;
        s2[e] = t2;
    }
}

/* t = (first ? z : t) + q over n columns, for both sums: a row block's sums added into the
 * running ones (the backward's grad_cols) */
static inline void fn_add_block(int64_t n, int first, double z, const double *q1,
                                const double *q2, double *t1, double *t2)
{
    for (int64_t j = 0; j < n; j++) {
        t1[j] = (first ? z : t1[j]) + q1[j];
        t2[j] = (first ? z : t2[j]) + q2[j];
    }
}

/* The shift of a block's sums: a value of the block, for precision; 0 when that value is inf or
 * NaN, which would otherwise turn every x - k into NaN and hide an inf mean. */
static inline double fn_shift(double v) { return isfinite(v) ? v : 0.0; }

/* Block moments from shifted sums s1 = sum(x - k), s2 = sum((x - k)^2) over n elements. */
static inline void fn_finish_block(double n, double k, double s1, double s2, double *mean,
                                   double *m2)
{
    const double mu = s1 / n, q = s2 - s1 * mu;
    *mean = fn_one_nan(k + mu);
    *m2 = fn_one_nan(q < 0.0 ? 0.0 : q); /* rounding can go below 0; NaN passes through */
}

/* Whether moments from sums of x itself, unshifted (float32's first try: a subtraction less per
 * element, and the statistics loops are bound by their arithmetic), lost nothing that matters:
 * mean and m2 finite, and mean^2 at most 2^8 times the variance. Then cancellation in
 * sum(x^2) - n mean^2 costs at most 8 of the double sums' 53 bits (an accumulator adds at most
 * 2^12 terms of a block in order: at least 53 - 8 - 12 bits remain, where float32 data needs
 * 24); typical activations have |mean| / std below 2. Otherwise the block is summed again,
 * shifted (test_accuracy.py: test_float32_statistics_keep_double_accuracy). */
static inline int fn_unshifted_ok(double n, double mean, double m2)
{
    return isfinite(mean) && isfinite(m2) && mean * mean * n <= 0x1p8 * m2;
}

/* fn_finish_block for w columns of n elements each, vectorized across them (the column kernels'
 * tiles): the same arithmetic, so the same bits. */
static FN_HOT void fn_finish_run(int64_t w, double n, const double *k, const double *s1,
                                 const double *s2, double *mean, double *m2)
{
    for (int64_t j = 0; j < w; j++)
        fn_finish_block(n, k[j], s1[j], s2[j], &mean[j], &m2[j]);
}

/* fn_finish_run of unshifted sums (k = 0), and whether every column passes fn_unshifted_ok:
 * one loop that vectorizes (checked one column after another, with a branch each, it cost a
 * sixth of channels-last statistics in cache). The block's moments go to locals first and
 * the pointers are restrict: otherwise GCC stored the clamped m2 masked and loaded it back, a
 * stall per vector. */
static FN_HOT int fn_finish_run0(int64_t w, double n, const double *restrict s1,
                                 const double *restrict s2, double *restrict mean,
                                 double *restrict m2)
{
    int64_t bad = 0;
    for (int64_t j = 0; j < w; j++) {
        double mj, vj;
        fn_finish_block(n, 0.0, s1[j], s2[j], &mj, &vj);
        mean[j] = mj;
        m2[j] = vj;
        bad += fn_unshifted_ok(n, mj, vj) ? 0 : 1;
    }
    return bad == 0;
}

/* The moments of K parts of n_each elements each merged into one (mean, m2): the parts'
 * mean, and their m2 plus n_each times their means' squared deviations from it (Chan's merge
 * for equal counts, all at once). Eight partial sums a loop, added in a fixed order: the loops
 * vectorize and the bits depend on K alone. An inf or NaN mean makes m2 NaN, as fn_chan. */
static FN_HOT void fn_merge_equal(int64_t K, double n_each, const double *mean, const double *m2,
                                  double *mean_out, double *m2_out)
{
    double a[8] = {0}, b[8] = {0}, d[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= K; j += 8)
        for (int l = 0; l < 8; l++)
            a[l] += mean[j + l];
    for (int l = 0; j + l < K; l++)
        a[l] += mean[j + l];
    const double sa = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    const double mu = sa / (double)K;
    for (j = 0; j + 8 <= K; j += 8)
        for (int l = 0; l < 8; l++) {
            const double e = mean[j + l] - mu;
            b[l] += m2[j + l];
            d[l] += e * e;
        }
    for (int l = 0; j + l < K; l++) {
        const double e = mean[j + l] - mu;
        b[l] += m2[j + l];
        d[l] += e * e;
    }
    const double sq = ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
    const double sd = ((d[0] + d[1]) + (d[2] + d[3])) + ((d[4] + d[5]) + (d[6] + d[7]));
    *mean_out = fn_one_nan(mu);
    *m2_out = fn_one_nan(isfinite(mu) ? sq + sd * n_each : NAN);
}

void fn_merge_moments(int64_t A, int64_t K, int64_t B, double n_each, const double *mean_in,
                      const double *m2_in, double *mean_out, double *m2_out)
{
    if (B == 1 && A >= 8) { /* GroupNorm's channels of each group: vectorized across groups */
        /* the inputs transposed first (column k of every group side by side), so that the
         * merges read contiguous vectors: at stride K they ran scalar, 4 us of a 30 us
         * channels-last GroupNorm (2, 1280, 8, 8). Out may be in in. */
        double *t = (double *)malloc((size_t)(2 * A * (K + 1)) * sizeof(double));
        if (t) {
            double *tm = t + 2 * A, *tq = tm + A * K;
            for (int64_t k = 0; k < K; k++)
                for (int64_t a = 0; a < A; a++) {
                    tm[k * A + a] = mean_in[a * K + k];
                    tq[k * A + a] = m2_in[a * K + k];
                }
            for (int64_t k = 0; k < K; k++)
                fn_chan_run(A, (double)k * n_each, n_each, t, t + A, tm + k * A, tq + k * A, 1);
            memcpy(mean_out, t, (size_t)A * sizeof(double));
            memcpy(m2_out, t + A, (size_t)A * sizeof(double));
            free(t);
            return;
        }
    }
    if (B < 8) { /* a few columns: fn_chan inline */
        for (int64_t a = 0; a < A; a++) {
            for (int64_t b = 0; b < B; b++) {
                double n = 0.0, mu = 0.0, q = 0.0;
                for (int64_t k = 0; k < K; k++)
                    fn_chan(&n, &mu, &q, n_each, mean_in[(a * K + k) * B + b],
                            m2_in[(a * K + k) * B + b]);
                mean_out[a * B + b] = mu;
                m2_out[a * B + b] = q;
            }
        }
        return;
    }
    for (int64_t a = 0; a < A; a++)
        for (int64_t k = 0; k < K; k++)
            fn_chan_run(B, (double)k * n_each, n_each, mean_out + a * B, m2_out + a * B,
                        mean_in + (a * K + k) * B, m2_in + (a * K + k) * B, 1);
}

/* How a group of Q rows of L elements is cut into blocks: long rows into chunks of FN_BLOCK,
 * short rows gathered FN_BLOCK / L at a time. */
typedef struct {
    int64_t nb;  /* blocks per group */
    int64_t rpb; /* rows per block (short rows) */
    int64_t cpl; /* chunks per row (long rows) */
} fn_rowplan;

static inline fn_rowplan fn_plan_rows(int64_t Q, int64_t L)
{
    fn_rowplan p;
    if (L >= FN_BLOCK) {
        p.rpb = 1;
        p.cpl = (L + FN_BLOCK - 1) / FN_BLOCK;
        p.nb = Q * p.cpl;
    } else {
        p.cpl = 1;
        p.rpb = FN_BLOCK / L;
        p.nb = (Q + p.rpb - 1) / p.rpb;
    }
    return p;
}

/* Scratch doubles that row_stats (fn_kernels_impl.h) needs for n groups of Q rows of L. */
static inline int64_t fn_row_stats_scratch(int64_t n, int64_t Q, int64_t L)
{
    if (Q <= 0 || L <= 0)
        return 0;
    const fn_rowplan pl = fn_plan_rows(Q, L);
    return pl.nb > 1 ? 2 * n * pl.nb : 0;
}

static inline void fn_block_range(const fn_rowplan *p, int64_t b, int64_t Q, int64_t L,
                                  int64_t *q0, int64_t *q1, int64_t *l0, int64_t *l1)
{
    if (L >= FN_BLOCK) {
        *q0 = b / p->cpl;
        *q1 = *q0 + 1;
        *l0 = (b % p->cpl) * FN_BLOCK;
        *l1 = *l0 + FN_BLOCK < L ? *l0 + FN_BLOCK : L;
    } else {
        *q0 = b * p->rpb;
        *q1 = *q0 + p->rpb < Q ? *q0 + p->rpb : Q;
        *l0 = 0;
        *l1 = L;
    }
}

static inline double fn_block_count(const fn_rowplan *p, int64_t b, int64_t Q, int64_t L)
{
    int64_t q0, q1, l0, l1;
    fn_block_range(p, b, Q, L, &q0, &q1, &l0, &l1);
    return (double)((q1 - q0) * (l1 - l0));
}

/* Rows per block of the column statistics (col_moments: R rows, `units` pieces of work per row
 * block, i.e. samples times column tiles). Each block costs a finish and a Chan merge per column:
 * with blocks of FN_COL_BLOCK elements or 64 rows (fn_col_rows_per_block) they took a fifth of
 * channels-last InstanceNorm (2, 640, 32, 32)'s statistics. So blocks are as tall as they may
 * be: at most FN_BLOCK rows, but doubled in number (equal heights, at least 64 rows) until the
 * whole call has FN_COL_UNITS pieces for the threads (fewer when fn_eff_threads would use fewer
 * threads for its `work` elements). Measured one thread, statistics of the same data NCHW /
 * NHWC, both rules in one process: (2, 640, 32, 32) 0.76-0.90 -> 0.96-1.13, (8, 128, 56, 56)
 * 0.78-0.85 -> 0.85-0.94, (8, 1024, 14, 14) 1.31-1.80 -> 1.72-2.51. Past FN_COL_UNITS pieces
 * the count doubles on, to FN_COL_UNITS_TALL, only while blocks keep FN_COL_TALL rows (a finish
 * and a merge per 512 rows of a column cost little): channels-last GroupNorm with two samples
 * had 8 of 16 threads summing, (2, 128, 128, 128) 0.27 -> 0.17-0.19 ms and (2, 320, 64, 64)
 * 0.14-0.17 -> 0.09-0.12 ms on 16 cores (two runs, builds alternating; measured with up to 32
 * pieces, which also took InstanceNorm (1, 64, 256, 256) from 16 pieces to 32 and 8-12% slower
 * there: 16 is one piece a thread on those cores). Fixed by the call's shape alone (group_cols
 * passes its whole call's: col_block_rows). */
static inline int64_t fn_col_stat_rows(int64_t R, int64_t units, int64_t work)
{
    if (R <= 1)
        return 1;
    const int64_t by_work = work / FN_MIN_WORK_PER_THREAD; /* fn_eff_threads' limit */
    const int64_t want = by_work < FN_COL_UNITS_TALL ? by_work : FN_COL_UNITS_TALL;
    int64_t n = (R + FN_BLOCK - 1) / FN_BLOCK;
    while (units * n < want && R / (2 * n) >= (units * n < FN_COL_UNITS ? 64 : FN_COL_TALL))
        n *= 2;
    return (R + n - 1) / n;
}

/* Rows per block in the column gradient kernels (R rows of C columns; fn_col_stat_rows' taller
 * blocks were not measured there). Each block costs one Chan merge (a division) per column, so
 * blocks are tall: a first height of FN_COL_BLOCK / min(C, FN_CB) rows and at least 64, taller up
 * to 1/16 of the rows (so that 16 blocks of a column still share out over threads), at most
 * FN_BLOCK rows; then as many blocks of equal height as that height needs (65 rows: 33 + 32),
 * because a short last block left one thread most of the work (144 rows as 64 + 64 + 16 in three
 * column tiles: 1.35x on two threads). Fixed by the shape alone, as the row kernel's blocks. */
static inline int64_t fn_col_rows_per_block(int64_t R, int64_t C)
{
    const int64_t w = C < FN_CB ? C : FN_CB;
    int64_t r = FN_COL_BLOCK / w;
    if (r < R / 16)
        r = R / 16;
    if (r > FN_BLOCK)
        r = FN_BLOCK;
    if (r < 64)
        r = 64;
    const int64_t n = (R + r - 1) / r;
    return n > 1 ? (R + n - 1) / n : r;
}

/* The shortest run of at least FN_REP_MIN elements that is both whole rows of C and whole
 * vectors of 16: a multiple of lcm(C, 16) */
static inline int64_t fn_rep_len(int64_t C)
{
    int64_t g = C, t = 16;
    while (t) {
        const int64_t r = g % t;
        g = t;
        t = r;
    }
    const int64_t l = C / g * 16;
    return l * ((FN_REP_MIN + l - 1) / l);
}

/* The width of n equal runs (in whole cache lines of `line` elements) that cover C columns, n
 * as few as keeps each at most about `most` wide: column tiles and chunks without a short last
 * one. */
static inline int64_t fn_even_width(int64_t C, int64_t most, int64_t line)
{
    if (C <= most)
        return C;
    const int64_t n = (C + most - 1) / most;
    return ((C + n - 1) / n + line - 1) / line * line;
}

/* Columns per tile of the column statistics: at most FN_CB, or FN_CB / 2 for float64, whose four
 * rows a step and per-column sums then stay in L1 (channels-last float64 statistics 1.1-1.2x
 * faster: (1, 1280, 19, 19), (8, 1024, 14, 14), (2, 640, 32, 32); float32, bound by its
 * conversions, measured the same either way). Never over FN_CB (col_moments' tile arrays): both
 * limits are whole cache lines for every itemsize. It depends on the shape alone; float32 in
 * cache decides per tile whether to keep its unshifted sums (unshifted_tile). */
static inline int64_t fn_col_tile(int64_t C, int64_t itemsize)
{
    return fn_even_width(C, itemsize >= 8 ? FN_CB / 2 : FN_CB, 64 / itemsize);
}

/* float16 and bfloat16 bit patterns to and from float, written with integer and float operations
 * only so that loops over them vectorize. float16: normals and subnormals by rescaling the shifted
 * bits by 2^112; the store rounds to nearest even (after F. Giesen's float_to_half_fast3_rtne),
 * overflow to inf, NaN stays a (quiet) NaN. bfloat16: the top half of a float, rounded to nearest
 * even, NaN kept quiet. */
static inline float fn_u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint32_t fn_f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float fn_h2f(uint16_t h)
{
    const uint32_t em = (uint32_t)(h & 0x7fffu) << 13, sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t fin = fn_f2u(fn_u2f(em) * 0x1p112f);
    return fn_u2f((em >= (0x7c00u << 13) ? (em | 0x7f800000u) : fin) | sign);
}
static inline uint16_t fn_f2h(float f)
{
    uint32_t u = fn_f2u(f);
    const uint32_t sign = (u >> 16) & 0x8000u;
    u &= 0x7fffffffu;
    const uint32_t big = u > 0x7f800000u ? (0x7e00u | ((u >> 13) & 0x3ffu)) : 0x7c00u;
    /* below half's smallest normal: adding 0.5 rounds the value onto half's subnormal grid */
    const uint32_t sub = fn_f2u(fn_u2f(u) + 0.5f) - 0x3f000000u;
    /* normal: rebias the exponent (-112 << 23), add 0xfff plus the lowest kept bit, truncate */
    const uint32_t nrm = (u + 0xc8000fffu + ((u >> 13) & 1u)) >> 13;
    return (uint16_t)((u >= 0x47800000u ? big : u < 0x38800000u ? sub : nrm) | sign);
}
static inline float fn_b2f(uint16_t v) { return fn_u2f((uint32_t)v << 16); }
static inline uint16_t fn_f2b(float f)
{
    const uint32_t u = fn_f2u(f);
    const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)(f != f ? ((u >> 16) | 0x40u) : r);
}

/* float16's normalize loops convert runs of up to FN_HB elements into a float buffer (with F16C
 * where the CPU has it: GCC does not vectorize the conversions above), run float32's loop on it
 * and convert back; the buffer never leaves L1. Activation-free contiguous runs convert in
 * registers instead (FN_DIRECT_LOOPS below). bfloat16's conversions vectorize as written (and
 * the same loops in intrinsics measured no faster), so its loops convert inline. */
#define FN_HB 512
#if FN_AVX2
FN_AVX2_FUNC int64_t fn_load_f16_avx2(const uint16_t *x, int64_t n, float *o)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(o + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    return i;
}
FN_AVX2_FUNC int64_t fn_store_f16_avx2(const float *o, int64_t n, uint16_t *y)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(o + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}
#endif
/* float16's activation-free contiguous loops, converting in registers (F16C) rather than through
 * the buffer: the float32 loops' arithmetic, operation
 * for operation (no FMA: -ffp-contract=off keeps float32's a*b+c unfused too), and the same
 * rounding on store, so both give the same bits. Each returns how many of the n elements it did:
 * all with TAIL = FN_MASKED_TAIL (AVX-512 BW), else a multiple of the vector width (the caller
 * does the rest). */
#define FN_DIRECT_LOOPS(W, VF, LOADH, STOREH, SUB, MUL, ADD, SET1, LOADF, NAME, ATTR, TAIL)         \
    ATTR int64_t NAME##_scale(const uint16_t *x, uint16_t *y, int64_t n, float mh, float a, float c) \
    {                                                                                               \
        const VF m = SET1(mh), av = SET1(a), cv = SET1(c);                                          \
        int64_t i = 0;                                                                              \
        for (; i + W <= n; i += W)                                                                  \
            STOREH(y + i, ADD(MUL(SUB(LOADH(x + i), m), av), cv));                                  \
        TAIL(i, n, STOREH_M(y + i, k_, ADD(MUL(SUB(LOADH_M(k_, x + i), m), av), cv)));              \
        return i;                                                                                   \
    }                                                                                               \
    ATTR int64_t NAME##_affine(const uint16_t *x, uint16_t *y, int64_t n, float mh, float a,        \
                               float c, const float *w, const float *lb)                            \
    {                                                                                               \
        const VF m = SET1(mh), av = SET1(a), cv = SET1(c);                                          \
        int64_t i = 0;                                                                              \
        for (; i + W <= n; i += W)                                                                  \
            STOREH(y + i,                                                                           \
                   ADD(MUL(ADD(MUL(SUB(LOADH(x + i), m), av), cv), LOADF(w + i)), LOADF(lb + i)));  \
        TAIL(i, n,                                                                                  \
             STOREH_M(y + i, k_,                                                                    \
                      ADD(MUL(ADD(MUL(SUB(LOADH_M(k_, x + i), m), av), cv), LOADF_M(k_, w + i)),    \
                          LOADF_M(k_, lb + i))));                                                   \
        return i;                                                                                   \
    }                                                                                               \
    ATTR int64_t NAME##_cols(const uint16_t *x, uint16_t *y, int64_t n, const float *mh,            \
                             const float *a, const float *c)                                        \
    {                                                                                               \
        int64_t i = 0;                                                                              \
        for (; i + W <= n; i += W)                                                                  \
            STOREH(y + i, ADD(MUL(SUB(LOADH(x + i), LOADF(mh + i)), LOADF(a + i)), LOADF(c + i)));  \
        TAIL(i, n,                                                                                  \
             STOREH_M(y + i, k_,                                                                    \
                      ADD(MUL(SUB(LOADH_M(k_, x + i), LOADF_M(k_, mh + i)), LOADF_M(k_, a + i)),    \
                          LOADF_M(k_, c + i))));                                                    \
        return i;                                                                                   \
    }                                                                                               \
    /* _cols with every shift 0: x * a + c, the same bits as (x - 0) * a + c, a load less */       \
    ATTR int64_t NAME##_cols0(const uint16_t *x, uint16_t *y, int64_t n, const float *a,            \
                              const float *c)                                                       \
    {                                                                                               \
        int64_t i = 0;                                                                              \
        for (; i + W <= n; i += W)                                                                  \
            STOREH(y + i, ADD(MUL(LOADH(x + i), LOADF(a + i)), LOADF(c + i)));                      \
        TAIL(i, n,                                                                                  \
             STOREH_M(y + i, k_,                                                                    \
                      ADD(MUL(LOADH_M(k_, x + i), LOADF_M(k_, a + i)), LOADF_M(k_, c + i))));       \
        return i;                                                                                   \
    }
/* A direct loop's last n - i (< 16) elements as one masked vector (AVX-512 BW): the same
 * operations on the same values, so the same bits as the element-by-element remainder it
 * spares; STEP uses k_ and the _M loads and store. FN_NO_TAIL: none (the caller finishes). */
#define FN_MASKED_TAIL(i, n, STEP)                                                                  \
    if (i < n) {                                                                                    \
        const __mmask16 k_ = (__mmask16)((1u << (n - i)) - 1u);                                     \
        STEP;                                                                                       \
        i = n;                                                                                      \
    }
#define FN_NO_TAIL(i, n, STEP)
#if FN_AVX2
FN_AVX2_INLINE void fn_sh8(uint16_t *p, __m256 v)
{
    _mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
FN_AVX512_INLINE __m256i fn_rh16(__m512 v) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT); }
FN_AVX512_INLINE void fn_sh16(uint16_t *p, __m512 v) { _mm256_storeu_si256((__m256i *)p, fn_rh16(v)); }
FN_DIRECT_LOOPS(8, __m256, fn_lf8_f16, fn_sh8, _mm256_sub_ps, _mm256_mul_ps, _mm256_add_ps,
                _mm256_set1_ps, _mm256_loadu_ps, fn_f16_avx2, FN_AVX2_FUNC, FN_NO_TAIL)
FN_DIRECT_LOOPS(16, __m512, fn_lf16_f16, fn_sh16, _mm512_sub_ps, _mm512_mul_ps, _mm512_add_ps,
                _mm512_set1_ps, _mm512_loadu_ps, fn_f16_avx512, FN_AVX512_FUNC, FN_NO_TAIL)
/* with AVX-512 BW: the same loops, a masked vector for the remainder */
#define FN_BW_TARGET target(FN_EVEX512 "avx512f,avx512bw,avx512vl,f16c")
#define FN_AVX512BW_FUNC static __attribute__((noinline, FN_BW_TARGET))
#define FN_AVX512BW_INLINE static inline __attribute__((always_inline, FN_BW_TARGET))
FN_AVX512BW_INLINE __m512 fn_lh16m(__mmask16 k, const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p));
}
FN_AVX512BW_INLINE void fn_sh16m(uint16_t *p, __mmask16 k, __m512 v)
{
    _mm256_mask_storeu_epi16(p, k, fn_rh16(v));
}
#define LOADH_M fn_lh16m
#define STOREH_M fn_sh16m
#define LOADF_M _mm512_maskz_loadu_ps
FN_DIRECT_LOOPS(16, __m512, fn_lf16_f16, fn_sh16, _mm512_sub_ps, _mm512_mul_ps, _mm512_add_ps,
                _mm512_set1_ps, _mm512_loadu_ps, fn_f16_avx512bw, FN_AVX512BW_FUNC,
                FN_MASKED_TAIL)
#undef LOADH_M
#undef STOREH_M
/* 16 bfloat16 patterns under mask k widened to floats (zeros elsewhere); BW and VL only, so that
 * both the BW statistics loops and the bfloat16 loops (AVX-512 BF16, no F16C) inline it */
#define FN_AVX512BW_ONLY_INLINE                                                                   \
    static inline __attribute__((always_inline, target(FN_EVEX512 "avx512f,avx512bw,avx512vl")))
FN_AVX512BW_ONLY_INLINE __m512 fn_lb16m(__mmask16 k, const uint16_t *p)
{
    return fn_wb16(_mm256_maskz_loadu_epi16(k, p));
}
/* FN_SUMS16_LOOP over nr rows of len elements (sq apart) with AVX-512 BW: each row's remainder
 * after the steps of 32 is one step of 16 and one masked vector (zeros beyond the row, which
 * add nothing), instead of element by element in double: float16 BatchNorm training on 7x7
 * planes (rows of 49) spent more time in those 17 elements than in the 32 before them. The
 * float partials still reach the double accumulators every FN_SUMS16_ITERS steps and at the end
 * of each row, and the lanes are summed once for all the rows. Any len >= 1. */
#define FN_SUMS16_ROWS(NAME, LOADF, LOADM, SUBF, MSUBF)                                             \
    FN_AVX512BW_FUNC void NAME(const uint16_t *x, int64_t nr, int64_t sq, int64_t len, float k,     \
                               double *t1, double *t2)                                              \
    {                                                                                               \
        const __m512 kv = _mm512_set1_ps(k);                                                        \
        __m512d s1 = _mm512_setzero_pd(), s2 = s1, u1 = s1, u2 = s1;                                \
        for (int64_t r = 0; r < nr; r++) {                                                          \
            const uint16_t *p = x + r * sq;                                                         \
            int64_t i = 0;                                                                          \
            for (int last = 0; !last;) {                                                            \
                __m512 a1 = _mm512_setzero_ps(), b1 = a1, a2 = a1, b2 = a1;                         \
                for (int j = 0; j < FN_SUMS16_ITERS && i + 32 <= len; j++, i += 32) {              \
                    const __m512 u = SUBF(LOADF(p + i), kv), v = SUBF(LOADF(p + i + 16), kv);       \
                    a1 = _mm512_add_ps(a1, u);                                                      \
                    a2 = _mm512_fmadd_ps(u, u, a2);                                                 \
                    b1 = _mm512_add_ps(b1, v);                                                      \
                    b2 = _mm512_fmadd_ps(v, v, b2);                                                 \
                }                                                                                   \
                if ((last = i + 32 > len)) {                                                        \
                    if (i + 16 <= len) {                                                            \
                        const __m512 u = SUBF(LOADF(p + i), kv);                                    \
                        a1 = _mm512_add_ps(a1, u);                                                  \
                        a2 = _mm512_fmadd_ps(u, u, a2);                                             \
                        i += 16;                                                                    \
                    }                                                                               \
                    if (i < len) {                                                                  \
                        const __mmask16 m = (__mmask16)((1u << (len - i)) - 1u);                    \
                        const __m512 v = MSUBF(m, LOADM(m, p + i), kv);                             \
                        b1 = _mm512_add_ps(b1, v);                                                  \
                        b2 = _mm512_fmadd_ps(v, v, b2);                                             \
                    }                                                                               \
                }                                                                                   \
                a1 = _mm512_add_ps(a1, b1);                                                         \
                a2 = _mm512_add_ps(a2, b2);                                                         \
                s1 = _mm512_add_pd(s1, fn_wlo8(a1));                                                \
                u1 = _mm512_add_pd(u1, fn_whi8(a1));                                                \
                s2 = _mm512_add_pd(s2, fn_wlo8(a2));                                                \
                u2 = _mm512_add_pd(u2, fn_whi8(a2));                                                \
            }                                                                                       \
        }                                                                                           \
        *t1 = fn_hsum8(_mm512_add_pd(s1, u1));                                                      \
        *t2 = fn_hsum8(_mm512_add_pd(s2, u2));                                                      \
    }
#define fn_keep_m(m, v, k) ((void)(m), (void)(k), (v))
FN_SUMS16_ROWS(fn_sums16r_f16_avx512bw, fn_lf16_f16, fn_lh16m, _mm512_sub_ps, _mm512_maskz_sub_ps)
FN_SUMS16_ROWS(fn_sums16r_0_f16_avx512bw, fn_lf16_f16, fn_lh16m, fn_keep, fn_keep_m)
FN_SUMS16_ROWS(fn_sums16r_bf16_avx512bw, fn_lf16_bf16, fn_lb16m, _mm512_sub_ps, _mm512_maskz_sub_ps)
FN_SUMS16_ROWS(fn_sums16r_0_bf16_avx512bw, fn_lf16_bf16, fn_lb16m, fn_keep, fn_keep_m)
/* The span loops' shared pieces, on their locals: row r's coefficients into m, a1, c1 and the
 * lanes of mask into mv, av, cv (FN_SPAN_ROW); the step of w <= W elements at offset o
 * (FN_SPAN_STEP, masked when w < W) */
#define FN_SPAN_ROW(OP, MT, mask, r)                                                               \
    do {                                                                                           \
        const MT mk_ = (MT)(mask);                                                                 \
        const int64_t rr_ = (r);                                                                   \
        m = _mm512_set1_##OP(mh[rr_]);                                                             \
        a1 = _mm512_set1_##OP(a[rr_]);                                                             \
        c1 = _mm512_set1_##OP(c[rr_]);                                                             \
        mv = _mm512_mask_blend_##OP(mk_, mv, m);                                                   \
        av = _mm512_mask_blend_##OP(mk_, av, a1);                                                  \
        cv = _mm512_mask_blend_##OP(mk_, cv, c1);                                                  \
    } while (0)
#define FN_SPAN_STEP(OP, W, MT, LOADH, STOREH, LOADH_M, STOREH_M, o, w)                            \
    do {                                                                                           \
        if ((w) == W) {                                                                            \
            STOREH(y + (o),                                                                        \
                   _mm512_add_##OP(_mm512_mul_##OP(_mm512_sub_##OP(LOADH(x + (o)), mv), av), cv)); \
        } else {                                                                                   \
            const MT k_ = (MT)((1u << (w)) - 1u);                                                  \
            STOREH_M(y + (o), k_,                                                                  \
                     _mm512_add_##OP(_mm512_mul_##OP(_mm512_sub_##OP(LOADH_M(k_, x + (o)), mv),    \
                                                     av), cv));                                    \
        }                                                                                          \
    } while (0)
/* The direct scale loop over nr back-to-back rows of L >= 16 elements, row r with its own
 * coefficients mh[r], a[r], c[r] (eval BatchNorm on NCHW planes of 7x7 to 22x22: consecutive
 * channels are consecutive rows): whole vectors straight through the rows, a vector that
 * crosses into the next row taking that row's coefficients in its upper lanes (L >= 16: one
 * boundary at most), one masked vector at the end. The same operations per element as the
 * scale loop, so the same bits, without a masked remainder and a call per row. Returns nr. */
/* TS: the stored type, TC / V / W / MT: the coefficients' type, its vector, lanes and mask; OP:
 * ps or pd (the _mm512_<op>_OP intrinsics); LOADH / STOREH (+ _M: masked) load and store V. */
#define FN_SPAN_LOOP(NAME, ATTR, TS, TC, V, W, MT, OP, LOADH, STOREH, LOADH_M, STOREH_M)           \
    ATTR int64_t NAME(const TS *x, TS *y, int64_t nr, int64_t L, const TC *mh, const TC *a,        \
                      const TC *c)                                                                 \
    {                                                                                              \
        const int64_t n = nr * L;                                                                  \
        int64_t i = 0, e = L, r = 0; /* row r ends at e */                                         \
        V m = _mm512_set1_##OP(mh[0]), a1 = _mm512_set1_##OP(a[0]), c1 = _mm512_set1_##OP(c[0]);  \
        while (i < n) {                                                                            \
            const int64_t w = n - i < W ? n - i : W;                                               \
            V mv = m, av = a1, cv = c1;                                                            \
            if (i + w > e) { /* lanes e - i on (all when i = e): row r + 1 */                      \
                FN_SPAN_ROW(OP, MT, 0xffffu << (e - i), ++r);                                      \
                e += L;                                                                            \
            }                                                                                      \
            FN_SPAN_STEP(OP, W, MT, LOADH, STOREH, LOADH_M, STOREH_M, i, w);                       \
            i += w;                                                                                \
        }                                                                                          \
        return nr;                                                                                 \
    }
/* The span loop from the last element down (fn_lead_alias; float32 and float64, whose
 * forward loops wait on 4K aliasing): a step's lanes below row r's start s take row r - 1's
 * coefficients. The same operations on each element, so the same bits. */
#define FN_SPAN_BACK_LOOP(NAME, ATTR, TS, TC, V, W, MT, OP, LOADH, STOREH, LOADH_M, STOREH_M)      \
    ATTR int64_t NAME(const TS *x, TS *y, int64_t nr, int64_t L, const TC *mh, const TC *a,        \
                      const TC *c)                                                                 \
    {                                                                                              \
        int64_t i = nr * L, s = (nr - 1) * L, r = nr - 1; /* the step ends at i */                 \
        V m = _mm512_set1_##OP(mh[r]), a1 = _mm512_set1_##OP(a[r]), c1 = _mm512_set1_##OP(c[r]);  \
        while (i > 0) {                                                                            \
            const int64_t w = i < W ? i : W, b = i - w;                                            \
            V mv = m, av = a1, cv = c1;                                                            \
            if (b < s) { /* lanes below s - b: row r - 1 */                                        \
                FN_SPAN_ROW(OP, MT, (1u << (s - b)) - 1u, --r);                                    \
                s -= L;                                                                            \
            }                                                                                      \
            FN_SPAN_STEP(OP, W, MT, LOADH, STOREH, LOADH_M, STOREH_M, b, w);                       \
            i = b;                                                                                 \
        }                                                                                          \
        return nr;                                                                                 \
    }
FN_SPAN_LOOP(fn_f16_avx512bw_span, FN_AVX512BW_FUNC, uint16_t, float, __m512, 16, __mmask16, ps,
             fn_lf16_f16, fn_sh16, fn_lh16m, fn_sh16m)
/* The AVX-512 direct loops with streaming stores: 32 elements a step, stored as one whole
 * 64-byte line (y 64-byte aligned; the caller notes them: fn_nt_note). Half-line streaming stores
 * measured slower than plain ones. ROUND2(v0, v1): the step's two vectors of 16 floats as one
 * line of 32 half patterns (__m512i). */
#define FN_DIRECT_NT_LOOPS(LOADH, ROUND2, NAME, ATTR)                                               \
    ATTR int64_t NAME##_scale(const uint16_t *x, uint16_t *y, int64_t n, float mh, float a, float c) \
    {                                                                                               \
        const __m512 m = _mm512_set1_ps(mh), av = _mm512_set1_ps(a), cv = _mm512_set1_ps(c);       \
        int64_t i = 0;                                                                              \
        for (; i + 32 <= n; i += 32) {                                                              \
            const __m512 lo = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(LOADH(x + i), m), av), cv); \
            const __m512 hi =                                                                       \
                _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(LOADH(x + i + 16), m), av), cv);          \
            _mm512_stream_si512((__m512i *)(y + i), ROUND2(lo, hi));                                \
        }                                                                                           \
        return i;                                                                                   \
    }                                                                                               \
    ATTR int64_t NAME##_affine(const uint16_t *x, uint16_t *y, int64_t n, float mh, float a,        \
                               float c, const float *w, const float *lb)                            \
    {                                                                                               \
        const __m512 m = _mm512_set1_ps(mh), av = _mm512_set1_ps(a), cv = _mm512_set1_ps(c);       \
        int64_t i = 0;                                                                              \
        for (; i + 32 <= n; i += 32) {                                                              \
            __m512 v[2];                                                                            \
            for (int k = 0; k < 2; k++) {                                                           \
                const int64_t j = i + 16 * k;                                                       \
                const __m512 u = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(LOADH(x + j), m), av), cv); \
                v[k] = _mm512_add_ps(_mm512_mul_ps(u, _mm512_loadu_ps(w + j)),                      \
                                     _mm512_loadu_ps(lb + j));                                      \
            }                                                                                       \
            _mm512_stream_si512((__m512i *)(y + i), ROUND2(v[0], v[1]));                            \
        }                                                                                           \
        return i;                                                                                   \
    }                                                                                               \
    ATTR int64_t NAME##_cols(const uint16_t *x, uint16_t *y, int64_t n, const float *mh,            \
                             const float *a, const float *c)                                        \
    {                                                                                               \
        int64_t i = 0;                                                                              \
        for (; i + 32 <= n; i += 32) {                                                              \
            __m512 v[2];                                                                            \
            for (int k = 0; k < 2; k++) {                                                           \
                const int64_t j = i + 16 * k;                                                       \
                v[k] = _mm512_add_ps(                                                               \
                    _mm512_mul_ps(_mm512_sub_ps(LOADH(x + j), _mm512_loadu_ps(mh + j)),            \
                                  _mm512_loadu_ps(a + j)),                                          \
                    _mm512_loadu_ps(c + j));                                                        \
            }                                                                                       \
            _mm512_stream_si512((__m512i *)(y + i), ROUND2(v[0], v[1]));                            \
        }                                                                                           \
        return i;                                                                                   \
    }
FN_AVX512_INLINE __m512i fn_rh16x2(__m512 lo, __m512 hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(fn_rh16(lo)), fn_rh16(hi), 1);
}
FN_DIRECT_NT_LOOPS(fn_lf16_f16, fn_rh16x2, fn_f16_avx512_nt, FN_AVX512_FUNC)
#define FN_PICK(name, ...)                                                                        \
    do {                                                                                          \
        if (fn_bw_ok())                                                                           \
            return name##_avx512bw_##__VA_ARGS__;                                                 \
        if (fn_simd_level() >= 2)                                                                 \
            return name##_avx512_##__VA_ARGS__;                                                   \
        if (fn_simd_level() >= 1)                                                                 \
            return name##_avx2_##__VA_ARGS__;                                                     \
    } while (0)
#else
#define FN_PICK(name, ...)
#endif
/* The direct loops for this CPU, or 0 elements done; _nt: streaming stores, AVX-512 only. */
#if FN_AVX2
#define FN_PICK_NT(call)                                                                          \
    do {                                                                                          \
        if (fn_simd_level() >= 2)                                                                 \
            return fn_f16_avx512_nt_##call;                                                       \
    } while (0)
#else
#define FN_PICK_NT(call)
#endif
#define FN_DIRECT_PICKS(T16)                                                                      \
    static inline int64_t fn_##T16##_scale(const uint16_t *x, uint16_t *y, int64_t n, float mh,  \
                                           float a, float c)                                      \
    {                                                                                             \
        FN_PICK(fn_##T16, scale(x, y, n, mh, a, c));                                              \
        return 0;                                                                                 \
    }                                                                                             \
    static inline int64_t fn_##T16##_affine(const uint16_t *x, uint16_t *y, int64_t n, float mh, \
                                            float a, float c, const float *w, const float *lb)    \
    {                                                                                             \
        FN_PICK(fn_##T16, affine(x, y, n, mh, a, c, w, lb));                                      \
        return 0;                                                                                 \
    }                                                                                             \
    static inline int64_t fn_##T16##_cols(const uint16_t *x, uint16_t *y, int64_t n,             \
                                          const float *mh, const float *a, const float *c)        \
    {                                                                                             \
        FN_PICK(fn_##T16, cols(x, y, n, mh, a, c));                                               \
        return 0;                                                                                 \
    }                                                                                             \
    static inline int64_t fn_##T16##_cols0(const uint16_t *x, uint16_t *y, int64_t n,            \
                                           const float *a, const float *c)                        \
    {                                                                                             \
        FN_PICK(fn_##T16, cols0(x, y, n, a, c));                                                  \
        return 0;                                                                                 \
    }
FN_DIRECT_PICKS(f16)
/* whether the direct loops take whole runs (a masked remainder), not only whole vectors */
static inline int fn_f16_whole(void) { return fn_bw_ok(); }
/* The span loops (rows back to back, coefficients per row) for this CPU: all nr rows, or 0 */
static inline int64_t fn_f16_span(const uint16_t *x, uint16_t *y, int64_t nr, int64_t L,
                                  const float *mh, const float *a, const float *c)
{
#if FN_AVX2
    if (fn_bw_ok())
        return fn_f16_avx512bw_span(x, y, nr, L, mh, a, c);
#endif
    return 0;
}
/* The streaming direct loops for this CPU (PICK: how a type finds them), or 0 elements done */
#define FN_NT_PICKS(T16, PICK)                                                                    \
    static inline int64_t fn_##T16##_scale_nt(const uint16_t *x, uint16_t *y, int64_t n,        \
                                              float mh, float a, float c)                         \
    {                                                                                             \
        PICK(scale(x, y, n, mh, a, c));                                                           \
        return 0;                                                                                 \
    }                                                                                             \
    static inline int64_t fn_##T16##_affine_nt(const uint16_t *x, uint16_t *y, int64_t n,       \
                                               float mh, float a, float c, const float *w,        \
                                               const float *lb)                                   \
    {                                                                                             \
        PICK(affine(x, y, n, mh, a, c, w, lb));                                                   \
        return 0;                                                                                 \
    }                                                                                             \
    static inline int64_t fn_##T16##_cols_nt(const uint16_t *x, uint16_t *y, int64_t n,         \
                                             const float *mh, const float *a, const float *c)     \
    {                                                                                             \
        PICK(cols(x, y, n, mh, a, c));                                                            \
        return 0;                                                                                 \
    }
FN_NT_PICKS(f16, FN_PICK_NT)

/* bfloat16's activation-free contiguous loops in registers: widened by a shift; rounded back by
 * AVX-512 BF16's VCVTNEPS2BF16 (round to nearest even, NaN kept quiet, as fn_f2b), which flushes
 * float denormals to zero: a vector holding one takes fn_f2b's integer rounding instead. The
 * same arithmetic as the loops of fn_kernels_impl.h, so the same bits. */
#if FN_AVX2
#define FN_BF16_TARGET target(FN_EVEX512 "avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")
#define FN_BF16_FUNC static __attribute__((noinline, FN_BF16_TARGET))
#define FN_BF16_INLINE static inline __attribute__((always_inline, FN_BF16_TARGET))
FN_BF16_INLINE __m256i fn_rb16(__m512 v)
{
    __m256i r = (__m256i)_mm512_cvtneps_pbh(v);
    const __mmask16 den = _mm512_fpclass_ps_mask(v, 0x20); /* denormal */
    if (__builtin_expect(den != 0, 0)) {
        const __m512i u = _mm512_castps_si512(v), one = _mm512_set1_epi32(1);
        const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
        const __m512i t = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd);
        r = _mm256_mask_blend_epi16(den, r, _mm512_cvtepi32_epi16(_mm512_srli_epi32(t, 16)));
    }
    return r;
}
/* fn_rb16 of a streamed line's two vectors, the same bits: one subnormal test of both and one
 * VCVTNE2PS2BF16 for both (a branch and a conversion per vector, and the insert, had cost 8-16%
 * of bfloat16 LayerNorm (4096, 4096): 1.89-1.97 -> 1.58-1.75 ms, two threads) */
FN_BF16_INLINE __m512i fn_rb16x2(__m512 lo, __m512 hi)
{
    const __mmask16 den = _mm512_fpclass_ps_mask(lo, 0x20) | _mm512_fpclass_ps_mask(hi, 0x20);
    if (__builtin_expect(den != 0, 0))
        return _mm512_inserti64x4(_mm512_castsi256_si512(fn_rb16(lo)), fn_rb16(hi), 1);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); /* lo in the low half */
}
FN_BF16_INLINE void fn_sb16(uint16_t *p, __m512 v) { _mm256_storeu_si256((__m256i *)p, fn_rb16(v)); }
FN_BF16_INLINE void fn_sb16m(uint16_t *p, __mmask16 k, __m512 v)
{
    _mm256_mask_storeu_epi16(p, k, fn_rb16(v));
}
#define LOADH_M fn_lb16m
#define STOREH_M fn_sb16m
FN_DIRECT_LOOPS(16, __m512, fn_lf16_bf16, fn_sb16, _mm512_sub_ps, _mm512_mul_ps, _mm512_add_ps,
                _mm512_set1_ps, _mm512_loadu_ps, fn_bf16_avx512, FN_BF16_FUNC, FN_MASKED_TAIL)
FN_SPAN_LOOP(fn_bf16_avx512_span, FN_BF16_FUNC, uint16_t, float, __m512, 16, __mmask16, ps,
             fn_lf16_bf16, fn_sb16, fn_lb16m, fn_sb16m)
#undef LOADH_M
#undef STOREH_M
#undef LOADF_M
FN_DIRECT_NT_LOOPS(fn_lf16_bf16, fn_rb16x2, fn_bf16_avx512_nt, FN_BF16_FUNC)
#define FN_PICK_BF16(call)                                                                        \
    do {                                                                                          \
        if (fn_bf16_ok())                                                                         \
            return fn_bf16_avx512_##call;                                                         \
    } while (0)
#else
#define FN_PICK_BF16(call)
#endif
static inline int64_t fn_bf16_scale(const uint16_t *x, uint16_t *y, int64_t n, float mh, float a,
                                    float c)
{
    FN_PICK_BF16(scale(x, y, n, mh, a, c));
    return 0;
}
static inline int64_t fn_bf16_affine(const uint16_t *x, uint16_t *y, int64_t n, float mh,
                                     float a, float c, const float *w, const float *lb)
{
    FN_PICK_BF16(affine(x, y, n, mh, a, c, w, lb));
    return 0;
}
static inline int64_t fn_bf16_span(const uint16_t *x, uint16_t *y, int64_t nr, int64_t L,
                                   const float *mh, const float *a, const float *c)
{
    FN_PICK_BF16(span(x, y, nr, L, mh, a, c));
    return 0;
}
static inline int64_t fn_bf16_cols(const uint16_t *x, uint16_t *y, int64_t n, const float *mh,
                                   const float *a, const float *c)
{
    FN_PICK_BF16(cols(x, y, n, mh, a, c));
    return 0;
}
static inline int64_t fn_bf16_cols0(const uint16_t *x, uint16_t *y, int64_t n, const float *a,
                                    const float *c)
{
    FN_PICK_BF16(cols0(x, y, n, a, c));
    return 0;
}
static inline int fn_bf16_whole(void) { return fn_bf16_ok(); }
#define FN_PICK_BF16_NT(call) FN_PICK_BF16(nt_##call)
FN_NT_PICKS(bf16, FN_PICK_BF16_NT)

/* n elements at stride s into o[0..n), and back */
static FN_HOT void fn_load_f16(const uint16_t *x, int64_t s, int64_t n, float *o)
{
    int64_t i = 0;
#if FN_AVX2
    if (s == 1 && fn_simd_level() >= 1)
        i = fn_load_f16_avx2(x, n, o);
#endif
    for (; i < n; i++)
        o[i] = fn_h2f(x[i * s]);
}
static FN_HOT void fn_store_f16(const float *o, int64_t n, uint16_t *y, int64_t s)
{
    int64_t i = 0;
#if FN_AVX2
    if (s == 1 && fn_simd_level() >= 1)
        i = fn_store_f16_avx2(o, n, y);
#endif
    for (; i < n; i++)
        y[i * s] = fn_f2h(o[i]);
}
/* Activations (fn_activation). In float without libm calls, so that the loops vectorize:
 * exp by Cody-Waite range reduction and a degree-7 polynomial (about 1 ulp); erfc by the
 * Chebyshev fit of Numerical Recipes' erfcc (fractional error < 1.2e-7), its polynomial in
 * Estrin's form (shorter dependency chains than Horner's). gelu_tanh uses 0.5 * (1 + tanh(u)) =
 * 1 / (1 + exp(-2u)), which has no cancellation. In double, libm. */
/* exp's argument is clamped to [-87.3, 88.8], so that 2^k is one float built from its bits (k
 * from -126 to 128, where 128 gives inf: exp overflows from 88.38 rather than 88.72, and stops
 * at about 1.2e-38 instead of going subnormal; neither changes an activation by more than
 * 1e-36). 1.2-1.3x faster silu and gelu_tanh, 1.1x gelu than with 2^k as two factors (one
 * thread, a loop over 64K floats); the same bits for arguments in [-87.3, 88.38). */
static inline __attribute__((always_inline)) float fn_expf(float x)
{
    const int nan = x != x;
    float xc = x > -87.3f ? x : -87.3f;
    xc = xc < 88.8f ? xc : 88.8f;
    const float kf = (xc * 1.44269504f + 12582912.0f) - 12582912.0f; /* round(x / ln 2) */
    const float r = (xc - kf * 0.693359375f) - kf * -2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    const float res = p * fn_u2f((uint32_t)((int32_t)kf + 127) << 23);
    return nan ? x : res;
}

static inline __attribute__((always_inline)) float fn_gelu_f(float v)
{
    const float z = fabsf(v) * 0.70710678f;
    const float t = 1.0f / (1.0f + 0.5f * z);
    const float t2 = t * t, t4 = t2 * t2, t8 = t4 * t4;
    const float q0 = fmaf(1.00002368f, t, -1.26551223f), q1 = fmaf(0.09678418f, t, 0.37409196f);
    const float q2 = fmaf(0.27886807f, t, -0.18628806f), q3 = fmaf(1.48851587f, t, -1.13520398f);
    const float q4 = fmaf(0.17087277f, t, -0.82215223f);
    const float p = fmaf(q4, t8, fmaf(fmaf(q3, t2, q2), t4, fmaf(q1, t2, q0)));
    const float e = t * fn_expf(p - z * z); /* erfc(|v| / sqrt 2) */
    return v * (v >= 0.0f ? 1.0f - 0.5f * e : 0.5f * e);
}

static inline __attribute__((always_inline)) float fn_act_f(float v, int act)
{
    switch (act) {
    case FN_ACT_RELU:
        return v < 0.0f ? 0.0f : v; /* NaN stays NaN */
    case FN_ACT_SILU:
        return v / (1.0f + fn_expf(-v));
    case FN_ACT_GELU:
        return fn_gelu_f(v);
    case FN_ACT_GELU_TANH:
        return v / (1.0f + fn_expf(-1.5957691216f * (v + 0.044715f * v * v * v)));
    default:
        return v;
    }
}

static inline __attribute__((always_inline)) double fn_act_d(double v, int act)
{
    switch (act) {
    case FN_ACT_RELU:
        return v < 0.0 ? 0.0 : v;
    case FN_ACT_SILU:
        return v / (1.0 + exp(-v));
    case FN_ACT_GELU:
        return 0.5 * v * erfc(-v * 0.70710678118654752440);
    case FN_ACT_GELU_TANH:
        return 0.5 * v * (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v)));
    default:
        return v;
    }
}

/* Activation-free normalize loops with non-temporal (streaming) stores, for outputs that overflow
 * the last-level cache beside their input (fn_stream_bytes and the thresholds derived from it): the
 * output's lines are written without being read first, a third less memory traffic (1.3-1.4x
 * faster from 16 MB on, one thread). Same arithmetic as the regular loops, operation for
 * operation (no FMA), so the same bits. Head elements before the first 64-byte-aligned output
 * and the tail are stored as usual. */
#define FN_ACT_STREAM FN_NUM_ACT /* the run tables' extra entry: no activation, streamed */
#if FN_AVX512
#define FN_STREAM_LOOPS(T, V, W, LD, STREAM, SET1, SUB, MUL, ADD, NAME)                           \
    FN_AVX512_FUNC void NAME##_scale(const T *x, T *y, int64_t n, T mh, T a, T c)                 \
    {                                                                                             \
        int64_t i = 0;                                                                            \
        for (; i < n && ((uintptr_t)(y + i) & 63); i++)                                           \
            y[i] = (x[i] - mh) * a + c;                                                           \
        const V m = SET1(mh), av = SET1(a), cv = SET1(c);                                         \
        for (; i + W <= n; i += W)                                                                \
            STREAM(y + i, ADD(MUL(SUB(LD(x + i), m), av), cv));                                   \
        for (; i < n; i++)                                                                        \
            y[i] = (x[i] - mh) * a + c;                                                           \
        fn_nt_note();                                                                             \
    }                                                                                             \
    FN_AVX512_FUNC void NAME##_affine(const T *x, T *y, int64_t n, T mh, T a, T c, const T *w,    \
                                      const T *lb)                                                \
    {                                                                                             \
        int64_t i = 0;                                                                            \
        for (; i < n && ((uintptr_t)(y + i) & 63); i++)                                           \
            y[i] = ((x[i] - mh) * a + c) * w[i] + lb[i];                                          \
        const V m = SET1(mh), av = SET1(a), cv = SET1(c);                                         \
        for (; i + W <= n; i += W)                                                                \
            STREAM(y + i, ADD(MUL(ADD(MUL(SUB(LD(x + i), m), av), cv), LD(w + i)), LD(lb + i)));  \
        for (; i < n; i++)                                                                        \
            y[i] = ((x[i] - mh) * a + c) * w[i] + lb[i];                                          \
        fn_nt_note();                                                                             \
    }                                                                                             \
    FN_AVX512_FUNC void NAME##_weight(const T *x, T *y, int64_t n, T mh, T a, T c, const T *w)    \
    {                                                                                             \
        int64_t i = 0;                                                                            \
        const V m = SET1(mh), av = SET1(a), cv = SET1(c);                                         \
        if (mh == 0 && c == 0) { /* weight_body's RMSNorm form */                                 \
            for (; i < n && ((uintptr_t)(y + i) & 63); i++)                                       \
                y[i] = x[i] * a * w[i];                                                           \
            for (; i + W <= n; i += W)                                                            \
                STREAM(y + i, MUL(MUL(LD(x + i), av), LD(w + i)));                                \
            for (; i < n; i++)                                                                    \
                y[i] = x[i] * a * w[i];                                                           \
        } else {                                                                                  \
            for (; i < n && ((uintptr_t)(y + i) & 63); i++)                                       \
                y[i] = ((x[i] - mh) * a + c) * w[i];                                              \
            for (; i + W <= n; i += W)                                                            \
                STREAM(y + i, MUL(ADD(MUL(SUB(LD(x + i), m), av), cv), LD(w + i)));               \
            for (; i < n; i++)                                                                    \
                y[i] = ((x[i] - mh) * a + c) * w[i];                                              \
        }                                                                                         \
        fn_nt_note();                                                                             \
    }                                                                                             \
    FN_AVX512_FUNC void NAME##_cols(const T *x, T *y, int64_t nr, int64_t rx, int64_t ry,         \
                                    int64_t n, const T *mh, const T *a, const T *c)               \
    {                                                                                             \
        for (int64_t r = 0; r < nr; r++, x += rx, y += ry) {                                      \
            int64_t i = 0;                                                                        \
            for (; i < n && ((uintptr_t)(y + i) & 63); i++)                                       \
                y[i] = (x[i] - mh[i]) * a[i] + c[i];                                              \
            for (; i + W <= n; i += W)                                                            \
                STREAM(y + i, ADD(MUL(SUB(LD(x + i), LD(mh + i)), LD(a + i)), LD(c + i)));        \
            for (; i < n; i++)                                                                    \
                y[i] = (x[i] - mh[i]) * a[i] + c[i];                                              \
        }                                                                                         \
        fn_nt_note();                                                                             \
    }
FN_STREAM_LOOPS(float, __m512, 16, _mm512_loadu_ps, _mm512_stream_ps, _mm512_set1_ps,
                _mm512_sub_ps, _mm512_mul_ps, _mm512_add_ps, fn_stream_f32)
FN_STREAM_LOOPS(double, __m512d, 8, _mm512_loadu_pd, _mm512_stream_pd, _mm512_set1_pd,
                _mm512_sub_pd, _mm512_mul_pd, _mm512_add_pd, fn_stream_f64)
#undef FN_STREAM_LOOPS
/* float32 / float64's span loops (AVX-512F masks their lanes): eval BatchNorm on NCHW planes of
 * 7x7 to 22x22 had taken a call and a scalar remainder per plane */
FN_SPAN_LOOP(fn_f32_avx512_span, FN_AVX512_FUNC, float, float, __m512, 16, __mmask16, ps,
             _mm512_loadu_ps, _mm512_storeu_ps, _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps)
FN_SPAN_LOOP(fn_f64_avx512_span, FN_AVX512_FUNC, double, double, __m512d, 8, __mmask8, pd,
             _mm512_loadu_pd, _mm512_storeu_pd, _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd)
FN_SPAN_BACK_LOOP(fn_f32_avx512_span_back, FN_AVX512_FUNC, float, float, __m512, 16, __mmask16, ps,
                  _mm512_loadu_ps, _mm512_storeu_ps, _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps)
FN_SPAN_BACK_LOOP(fn_f64_avx512_span_back, FN_AVX512_FUNC, double, double, __m512d, 8, __mmask8,
                  pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_maskz_loadu_pd,
                  _mm512_mask_storeu_pd)
#endif
/* the span loops of float32 and float64 for this CPU, forward and from the last element down
 * (fn_lead_alias): all nr rows, or 0 */
#if FN_AVX512
#define FN_SPAN_PICK(NAME, T, LOOP)                                                               \
    static inline int64_t NAME(const T *x, T *y, int64_t nr, int64_t L, const T *mh, const T *a, \
                               const T *c)                                                        \
    {                                                                                             \
        return fn_simd_level() >= 2 ? LOOP(x, y, nr, L, mh, a, c) : 0;                            \
    }
#else
#define FN_SPAN_PICK(NAME, T, LOOP)                                                               \
    static inline int64_t NAME(const T *x, T *y, int64_t nr, int64_t L, const T *mh, const T *a, \
                               const T *c)                                                        \
    {                                                                                             \
        return 0;                                                                                 \
    }
#endif
FN_SPAN_PICK(fn_f32_span, float, fn_f32_avx512_span)
FN_SPAN_PICK(fn_f64_span, double, fn_f64_avx512_span)
FN_SPAN_PICK(fn_f32_span_back, float, fn_f32_avx512_span_back)
FN_SPAN_PICK(fn_f64_span_back, double, fn_f64_avx512_span_back)
#undef FN_SPAN_PICK

/* Output bytes from which the normalize passes stream their stores (0: never): half the
 * last-level cache, where a pass's input and output together no longer fit it. AVX-512 only.
 * The threshold was three quarters of the cache for a while: 16 MiB outputs in a 32 MiB L3 that
 * a repeated call found in cache were faster with plain stores on a quiet machine (GroupNorm
 * (2, 128, 128, 128) float32 0.59-0.64 ms against 0.72-0.77 streamed, RMSNorm (2048, 2048)
 * 0.61-0.64 against 0.65-0.69, 2 threads). With the machine's neighbours busy, and in a
 * pipeline whose next layer reads the output after other data went through the cache, such an
 * output is not in cache for long: 2 threads, 16-17 MB outputs, builds alternating, each timed
 * beside torch in the same process, streamed against plain: LayerNorm (2048, 2048) 0.44-0.76 ms
 * against 1.04-1.71, training BatchNorm (16, 256, 32, 32) 0.63-0.97 against 1.45-1.87,
 * InstanceNorm (4, 64, 128, 128) 0.57-0.77 against 0.90-1.23, GroupNorm (2, 128, 128, 128) and
 * RMSNorm (2048, 2048) level to 1.4x, LayerNorm (4, 1024, 1024) level (README, "How it
 * works"). */
static int64_t fn_stream_bytes(void)
{
    if (fn_simd_level() < 2)
        return 0;
    if (fn_stream_env >= 0)
        return fn_stream_env;
    const int64_t l3 = fn_l3_bytes();
    return l3 > 0 ? l3 / 2 : ((int64_t)16 << 20);
}

/* ... twice that (the whole last-level cache) for the channels-last backward pass, whose x,
 * dy and dx overflow it (grad_cols) */
static int64_t fn_stream_bytes_backward(void) { return 2 * fn_stream_bytes(); }

/* ... and half as much again (three quarters of the cache) for the column layouts (channels
 * last), forward and backward: at 16 MiB their passes were slower streamed (2 threads, training
 * BatchNorm channels-last (16, 256, 32, 32) 0.80-0.89 ms against 0.69-0.72, GroupNorm (2, 640,
 * 64, 64) 1.06-1.18 against 0.99-1.15), and the backward's grad_apply_cols measured its
 * condition against this threshold (fn_backward_impl.h) */
static int64_t fn_stream_bytes_cols(void) { return fn_stream_bytes() * 3 / 2; }

/* ... and three quarters of it for float32 rows with an elementwise weight and bias
 * (LayerNorm's; normalize_rows): a row's weight and bias beside its input and output crowd L1
 * and L2 (a weight passed as the bias too ran 1.3-1.5x faster in cache), and plain stores of
 * the output add to it. LayerNorm of 12-12.5 MiB with weight and bias, rows of 768-1600, both
 * thresholds alternating in one process: 0.61-0.83x the time at two threads and 0.54-0.96x at
 * one on a busy machine; earlier on a quiet one 0.83-0.85x for rows of 768, 0.91-1.09x for
 * 1536. float64 measured slower streamed there (1.09-1.31x), and RMSNorm's weight alone mixed
 * (0.83-1.27x) at 8 MiB: they keep fn_stream_bytes. */
static int64_t fn_stream_bytes_wb(void)
{
    const int64_t sb = fn_stream_bytes();
    return sb - sb / 4;
}

/* The bytes out_act compares with those thresholds, which are for a pass over an input and an
 * output of out_bytes each: a fresh output (fn_epilogue) counts one output more, the previous
 * result that a loop of allocating calls keeps alive. Where the input and two outputs overflow
 * the cache, plain stores read each output line from memory first and push the input out
 * between the statistics and the normalize pass; streamed stores leave the input in cache.
 * Allocating calls (streamed) against out= alternating between two outputs (plain stores, the
 * same footprint), in one process, 12.6-12.8 MB float32, 2 threads, three runs: training
 * BatchNorm (32, 128, 28, 28) 0.75-0.78x the time, GroupNorm (3, 256, 64, 64) 0.89-0.98x,
 * RMSNorm (3072, 1024) with a weight 0.81-0.96x, LayerNorm (2560, 1024) with weight and bias
 * (10.5 MB, FN_SB_WB) 0.54-0.97x, InstanceNorm (4, 48, 128, 128) 0.93-1.04x; across builds
 * alternating, allocating training BatchNorm 1.19 -> 0.60 ms; float16, 24 MiB, the same
 * comparison: GroupNorm (12, 256, 64, 64) 0.93-1.00x, InstanceNorm (12, 64, 128, 128)
 * 0.89-0.95x, LayerNorm (3072, 4096) 0.73-0.87x. Calls that read their input once (statistics
 * given: eval BatchNorm) keep their threshold, their callers passing 0: streamed they took
 * 0.98-1.30x the time of plain stores, (1, 256, 112, 112) 1.08-1.22x. So do the
 * column layouts: channels-last GroupNorm (2, 640, 64, 64), 21 MB, went 1.38-1.70 -> 1.23-1.87
 * ms across builds, and its whole samples fused in cache (group_cols) would give way to two
 * passes over all of them. */
static inline int64_t fn_out_footprint(int64_t out_bytes, int fresh)
{
    return fresh ? out_bytes + out_bytes / 2 : out_bytes;
}

/* Which of these thresholds out_act (fn_kernels_impl.h) compares an output with */
enum { FN_SB_ROWS, FN_SB_COLS, FN_SB_WB };

#define FN_STR_(a) #a
#define FN_STR(a) FN_STR_(a)

/* One block per storage dtype: its types, conversions and name; the bodies and the table come
 * from fn_kernels_impl.h. A new dtype is one more block here, its entry in fn_kernels_for and in
 * fn_dtype (fastnorm.h), plus SIMD loaders for the statistics loops (fn_loadN_<S> above).
 * ACT is the activation in CT; a type with FN_BUFFERED names its buffer converters and reuses
 * float32's loops (so float32's block comes first). fn_kernels_impl.h undefines them all. */
#define T float
#define CT float
#define S f32
#define FN_UNSHIFTED 1
#define LD(v) (v)
#define ST(v) (v)
#define FN_CTMAX FLT_MAX
#define ACT fn_act_f
#define FN_BUFFERED 0
#define FN_F32LANES 1 /* the backward's float-lane SIMD loops (fn_backward_impl.h) */
#if FN_AVX512
#define FN_STREAM(loop) fn_stream_f32_##loop
#endif
#define FN_SPAN fn_f32_span
#define FN_SPAN_BACK fn_f32_span_back
#if FN_AVX512
#define FN_PAIRS_LOAD fn_p2_load_f32
#define FN_ROWS_SIMD 1
#endif
#include "fn_kernels_impl.h"

#define T double
#define CT double
#define S f64
#define LD(v) (v)
#define ST(v) (v)
#define FN_CTMAX DBL_MAX
#define ACT fn_act_d
#define FN_BUFFERED 0
#if FN_AVX512
#define FN_STREAM(loop) fn_stream_f64_##loop
#endif
#define FN_SPAN fn_f64_span
#define FN_SPAN_BACK fn_f64_span_back
#if FN_AVX512
#define FN_ROWS_SIMD 1
#endif
#include "fn_kernels_impl.h"

#define T uint16_t
#define CT float
#define S f16
#define LD(v) fn_h2f(v)
#define ST(v) fn_f2h(v)
#define FN_CTMAX FLT_MAX
#define ACT fn_act_f
#define FN_BUFFERED 1
#define FN_LOADBUF fn_load_f16
#define FN_STOREBUF fn_store_f16
#define FN_DIRECT(loop) fn_f16_##loop
#define FN_SPAN fn_f16_span
#define FN_DIRECT_NT(loop) fn_f16_##loop##_nt
#define FN_SUMS16(isa) fn_sums16_f16_##isa
#define FN_SUMS16_0(isa) fn_sums16_0_f16_##isa
#define FN_SUMS16R fn_sums16r_f16_avx512bw
#define FN_TILE16_FN fn_tile16_f16_avx512
#define FN_SUMS16R_0 fn_sums16r_0_f16_avx512bw
#include "fn_kernels_impl.h"

#define T uint16_t
#define CT float
#define S bf16
#define LD(v) fn_b2f(v)
#define ST(v) fn_f2b(v)
#define FN_CTMAX FLT_MAX
#define ACT fn_act_f
#define FN_BUFFERED 0
#define FN_SUMS16(isa) fn_sums16_bf16_##isa
#define FN_SUMS16_0(isa) fn_sums16_0_bf16_##isa
#define FN_SUMS16R fn_sums16r_bf16_avx512bw
#define FN_TILE16_FN fn_tile16_bf16_avx512
#define FN_SUMS16R_0 fn_sums16r_0_bf16_avx512bw
#define FN_DIRECT(loop) fn_bf16_##loop
#define FN_SPAN fn_bf16_span
#define FN_DIRECT_NT(loop) fn_bf16_##loop##_nt
#include "fn_kernels_impl.h"

void fn_widen16(const uint16_t *x, int64_t n, int bf16, float *o)
{
    if (bf16) {
        for (int64_t i = 0; i < n; i++)
            o[i] = fn_b2f(x[i]);
    } else {
        fn_load_f16(x, 1, n, o);
    }
}

void fn_cpu_info(int *simd_level, int *pairs, int64_t *l3_bytes, int64_t *stream_bytes,
                 int64_t *stream_bytes_cols, int64_t *stream_bytes_backward,
                 int64_t *stream_bytes_wb)
{
    *simd_level = fn_simd_level();
    *pairs = fn_pairs_ok();
    *l3_bytes = fn_l3_bytes();
    *stream_bytes = fn_stream_bytes();
    *stream_bytes_cols = fn_stream_bytes_cols();
    *stream_bytes_backward = fn_stream_bytes_backward();
    *stream_bytes_wb = fn_stream_bytes_wb();
}

const fn_kernel_table *fn_kernels_for(int dtype)
{
    switch (dtype) {
    case FN_FLOAT32:
        return &table_f32;
    case FN_FLOAT64:
        return &table_f64;
    case FN_FLOAT16:
        return &table_f16;
    case FN_BFLOAT16:
        return &table_bf16;
    default:
        return NULL;
    }
}
