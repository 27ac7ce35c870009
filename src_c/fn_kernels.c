/* fastnorm kernels: the shared helpers, then the bodies of fn_kernels_impl.h for float and
 * double. See fastnorm.h for the interface. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastnorm.h"
#include "fn_openmp.h"

/* Elements per statistics block: blocks are fixed by the shape alone, so the merge order (and
 * every bit of the result) is the same for any thread count. */
#define FN_BLOCK 4096
/* Columns per tile, and elements per tile, in the column (channels-last) statistics kernel: a
 * tile's per-column sums (3 doubles a column) stay in L1 while its rows stream through. */
#define FN_CB 1024
#define FN_COL_BLOCK 32768
/* Elements per unit of work in the normalize kernels. */
#define FN_NCHUNK 16384
/* Largest group (bytes) that the fused kernel normalizes right after its statistics: at least
 * this (well inside a 1 MiB L2 together with the output it writes), more where the last-level
 * cache holds four such groups per thread (see fn_fuse_bytes). */
#define FN_FUSE_BYTES (512 * 1024)
#define FN_MAX_L3 (32L * 1024 * 1024)
/* Below this many elements per thread, another thread costs more than it saves. */
#define FN_MIN_WORK_PER_THREAD 32768

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
#define FN_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))
#define FN_AVX2_FUNC static __attribute__((noinline, target("avx2,fma")))
#define FN_AVX512_INLINE static inline __attribute__((always_inline, target("avx512f")))
#define FN_AVX512_FUNC static __attribute__((noinline, target("avx512f")))
FN_AVX2_INLINE __m256d fn_load4_f32(const float *p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
FN_AVX2_INLINE __m256d fn_load4_f64(const double *p) { return _mm256_loadu_pd(p); }
FN_AVX512_INLINE __m512d fn_load8_f32(const float *p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
FN_AVX512_INLINE __m512d fn_load8_f64(const double *p) { return _mm512_loadu_pd(p); }
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
static int64_t fn_l3_state = -1; /* last-level cache bytes, 0 when unknown */

void fn_init(void)
{
    int lvl = 0;
#if FN_AVX2
    lvl = __builtin_cpu_supports("avx512f") ? 2
          : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
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
    fn_simd_state = lvl;
}

static inline int fn_simd_level(void)
{
    if (fn_simd_state < 0)
        fn_init();
    return fn_simd_state;
}

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
    *n = nn;
}

/* The shift of a block's sums: a value of the block, for precision; 0 when that value is inf or
 * NaN, which would otherwise turn every x - k into NaN and hide an inf mean. */
static inline double fn_shift(double v) { return isfinite(v) ? v : 0.0; }

/* Block moments from shifted sums s1 = sum(x - k), s2 = sum((x - k)^2) over n elements. */
static inline void fn_finish_block(double n, double k, double s1, double s2, double *mean,
                                   double *m2)
{
    const double mu = s1 / n, q = s2 - s1 * mu;
    *mean = k + mu;
    *m2 = q < 0.0 ? 0.0 : q; /* rounding can go below 0; NaN passes through */
}

void fn_merge_moments(int64_t A, int64_t K, int64_t B, double n_each, const double *mean_in,
                      const double *m2_in, double *mean_out, double *m2_out)
{
    for (int64_t a = 0; a < A; a++) {
        for (int64_t b = 0; b < B; b++) {
            double n = 0.0, mu = 0.0, q = 0.0;
            for (int64_t k = 0; k < K; k++)
                fn_chan(&n, &mu, &q, n_each, mean_in[(a * K + k) * B + b], m2_in[(a * K + k) * B + b]);
            mean_out[a * B + b] = mu;
            m2_out[a * B + b] = q;
        }
    }
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

/* Rows per block in the column kernel: about FN_COL_BLOCK elements per tile, at least 64 rows,
 * so that few partial results per column need merging. */
static inline int64_t fn_col_rows_per_block(int64_t C)
{
    const int64_t w = C < FN_CB ? C : FN_CB, r = FN_COL_BLOCK / w;
    return r < 64 ? 64 : r;
}

#define FN_STR_(a) #a
#define FN_STR(a) FN_STR_(a)

/* One block per storage dtype: its types, conversions and name; the bodies and the table come
 * from fn_kernels_impl.h. A new dtype is one more block here, its entry in fn_kernels_for and in
 * fn_dtype (fastnorm.h), plus SIMD loaders for the statistics loops (fn_loadN_<S> above). */
#define T float
#define CT float
#define S f32
#define LD(v) (v)
#define ST(v) (v)
#define FN_CTMAX FLT_MAX
#include "fn_kernels_impl.h"
#undef T
#undef CT
#undef S
#undef LD
#undef ST
#undef FN_CTMAX

#define T double
#define CT double
#define S f64
#define LD(v) (v)
#define ST(v) (v)
#define FN_CTMAX DBL_MAX
#include "fn_kernels_impl.h"
#undef T
#undef CT
#undef S
#undef LD
#undef ST
#undef FN_CTMAX

const fn_kernel_table *fn_kernels_for(int dtype)
{
    switch (dtype) {
    case FN_FLOAT32:
        return &table_f32;
    case FN_FLOAT64:
        return &table_f64;
    default:
        return NULL;
    }
}
