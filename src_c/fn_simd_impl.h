/* The statistics loops at one SIMD width, compiled for each instruction set from this one body:
 * fn_kernels_impl.h defines the parameters below and includes this file once per ISA (and per
 * element type T); the file consumes (undefines) them. Not a public header.
 *
 *   VISA          name suffix of the functions (avx2, avx512; avx512p: float32's 512-bit loops
 *                 with each vector as a pair of 256-bit halves, fn_pd2, for AMD Zen 4)
 *   VFUNC         their attributes (noinline, target(...))
 *   V, VW         a vector of doubles and its lanes (__m256d, 4 / __m512d or fn_pd2, 8)
 *   VZERO, VSET1, VSUB, VADD, VFMA, VLOADD, VSTORED, VHSUM: the double operations
 *   VLOADT(p)     VW elements of T at p, widened to doubles
 *   VLOADT_M(m, p), VMSUB(m, a, b)   (optional; AVX-512 float32 / float64) VLOADT of the lanes
 *                 of mask m, zeros elsewhere, and a - b in those lanes, zeros elsewhere: they
 *                 add the rows loops (rows_sums, rows_sums0, rows_sumsq, rows_sums_m)
 *
 * Four independent accumulator pairs per step hide the latency of the adds and FMAs. Lanes are
 * combined in a fixed order, so results depend on the ISA, never on the thread count. */

#define VN(name) FN(FN_CAT(name, VISA))

/* sum(x - k), sum((x - k)^2) over the first 4 * VW * floor(len / (4 * VW)) elements of a
 * contiguous run (run_sums0: of x itself, no k: the same bits as k = 0). Returns how many
 * elements it consumed. SHIFT(v): an element vector as summed. */
#define VRUN(NAME, SHIFT)                                                                          \
    VFUNC int64_t VN(NAME)(const T *x, int64_t len, double k, double *t1, double *t2)              \
    {                                                                                              \
        const V kv = VSET1(k);                                                                     \
        V a1 = VZERO(), b1 = a1, c1 = a1, d1 = a1, a2 = a1, b2 = a1, c2 = a1, d2 = a1;             \
        int64_t i = 0;                                                                             \
        for (; i + 4 * VW <= len; i += 4 * VW) {                                                   \
            const V u = SHIFT(VLOADT(x + i)), v = SHIFT(VLOADT(x + i + VW));                       \
            const V w = SHIFT(VLOADT(x + i + 2 * VW)), z = SHIFT(VLOADT(x + i + 3 * VW));          \
            a1 = VADD(a1, u);                                                                      \
            a2 = VFMA(u, u, a2);                                                                   \
            b1 = VADD(b1, v);                                                                      \
            b2 = VFMA(v, v, b2);                                                                   \
            c1 = VADD(c1, w);                                                                      \
            c2 = VFMA(w, w, c2);                                                                   \
            d1 = VADD(d1, z);                                                                      \
            d2 = VFMA(z, z, d2);                                                                   \
        }                                                                                          \
        (void)kv;                                                                                  \
        *t1 = VHSUM(VADD(VADD(a1, b1), VADD(c1, d1)));                                             \
        *t2 = VHSUM(VADD(VADD(a2, b2), VADD(c2, d2)));                                             \
        return i;                                                                                  \
    }
#define VSHIFT_K(v) VSUB(v, kv)
#define VSHIFT_NONE(v) (v)
VRUN(run_sums, VSHIFT_K)
VRUN(run_sums0, VSHIFT_NONE)
#undef VSHIFT_K
#undef VSHIFT_NONE
#undef VRUN

/* run_sums' sum(x^2) alone (RMSNorm: k = 0, no sum of x needed), the same accumulators in the
 * same order, so the same bits as run_sums' second sum. */
VFUNC int64_t VN(run_sumsq)(const T *x, int64_t len, double *t2)
{
    V a2 = VZERO(), b2 = a2, c2 = a2, d2 = a2;
    int64_t i = 0;
    for (; i + 4 * VW <= len; i += 4 * VW) {
        const V u = VLOADT(x + i), v = VLOADT(x + i + VW);
        const V w = VLOADT(x + i + 2 * VW), z = VLOADT(x + i + 3 * VW);
        a2 = VFMA(u, u, a2);
        b2 = VFMA(v, v, b2);
        c2 = VFMA(w, w, c2);
        d2 = VFMA(z, z, d2);
    }
    *t2 = VHSUM(VADD(VADD(a2, b2), VADD(c2, d2)));
    return i;
}

#ifdef VLOADT_M
/* run_sums over nr rows of len contiguous elements each, sq apart (any len >= 1), in one set of
 * accumulators: per row, run_sums' steps of 4 * VW, then steps of VW and one masked vector for
 * the rest (zeros beyond the row, shifted under the same mask so that they add nothing); the
 * lanes are summed once for all the rows. Row by row, BatchNorm training on 7x7 planes (rows of
 * 49, 17 of them element by element in double, and two lane sums a row) spent more than half
 * its statistics there. One row of a multiple of 4 * VW elements gets run_sums' bits. */
#define VROWS_BODY(SHIFT, MSHIFT, ACC1)                                                           \
    V a1 = VZERO(), b1 = a1, c1 = a1, d1 = a1, a2 = a1, b2 = a1, c2 = a1, d2 = a1;                \
    const __mmask8 m = (__mmask8)((1u << (len % VW)) - 1u);                                       \
    for (int64_t r = 0; r < nr; r++)                                                              \
        VROW(x + r * sq, SHIFT, MSHIFT, ACC1)
/* one row of len elements from P into the accumulators a1 .. d2 (mask m: its remainder) */
#define VROW(P, SHIFT, MSHIFT, ACC1)                                                              \
    {                                                                                             \
        const T *p = (P);                                                                         \
        int64_t i = 0;                                                                            \
        for (; i + 4 * VW <= len; i += 4 * VW) {                                                  \
            const V u = SHIFT(VLOADT(p + i)), v = SHIFT(VLOADT(p + i + VW));                      \
            const V w = SHIFT(VLOADT(p + i + 2 * VW)), z = SHIFT(VLOADT(p + i + 3 * VW));         \
            ACC1(a1 = VADD(a1, u));                                                               \
            a2 = VFMA(u, u, a2);                                                                  \
            ACC1(b1 = VADD(b1, v));                                                               \
            b2 = VFMA(v, v, b2);                                                                  \
            ACC1(c1 = VADD(c1, w));                                                               \
            c2 = VFMA(w, w, c2);                                                                  \
            ACC1(d1 = VADD(d1, z));                                                               \
            d2 = VFMA(z, z, d2);                                                                  \
        }                                                                                         \
        for (; i + 2 * VW <= len; i += 2 * VW) {                                                  \
            const V u = SHIFT(VLOADT(p + i)), v = SHIFT(VLOADT(p + i + VW));                      \
            ACC1(c1 = VADD(c1, u));                                                               \
            c2 = VFMA(u, u, c2);                                                                  \
            ACC1(d1 = VADD(d1, v));                                                               \
            d2 = VFMA(v, v, d2);                                                                  \
        }                                                                                         \
        if (i + VW <= len) {                                                                      \
            const V u = SHIFT(VLOADT(p + i));                                                     \
            ACC1(a1 = VADD(a1, u));                                                               \
            a2 = VFMA(u, u, a2);                                                                  \
            i += VW;                                                                              \
        }                                                                                         \
        if (i < len) {                                                                            \
            const V u = MSHIFT(VLOADT_M(m, p + i));                                               \
            ACC1(b1 = VADD(b1, u));                                                               \
            b2 = VFMA(u, u, b2);                                                                  \
        }                                                                                         \
    }
#define VACC(e) e
#define VNOACC(e) ((void)0)
#define VSHIFT_K(v) VSUB(v, kv)
#define VMSHIFT_K(v) VMSUB(m, v, kv)
#define VSHIFT_NONE(v) (v)
VFUNC void VN(rows_sums)(const T *x, int64_t nr, int64_t sq, int64_t len, double k, double *t1,
                         double *t2)
{
    const V kv = VSET1(k);
    VROWS_BODY(VSHIFT_K, VMSHIFT_K, VACC)
    *t1 = VHSUM(VADD(VADD(a1, b1), VADD(c1, d1)));
    *t2 = VHSUM(VADD(VADD(a2, b2), VADD(c2, d2)));
}
/* rows_sums of x itself (no shift: the same bits as k = 0; masked lanes load as zeros) */
VFUNC void VN(rows_sums0)(const T *x, int64_t nr, int64_t sq, int64_t len, double *t1, double *t2)
{
    VROWS_BODY(VSHIFT_NONE, VSHIFT_NONE, VACC)
    *t1 = VHSUM(VADD(VADD(a1, b1), VADD(c1, d1)));
    *t2 = VHSUM(VADD(VADD(a2, b2), VADD(c2, d2)));
}
/* rows_sums of ng groups at once, group i's rows from xg[i] (each nr rows, sq apart, of len),
 * shifted by k[i] (0: the same bits as rows_sums0, and as rows_sumsq in t2): row q of every
 * group, then row q + 1, each group with its own accumulators, kept here between its rows.
 * The same operations per group as rows_sums, so the same bits; the rows of neighbouring groups
 * (a sample's channels) are read in memory order rather than one group's rows hundreds of KB
 * apart (fused_groups, rows_outer in fn_kernels_impl.h). */
VFUNC void VN(rows_sums_m)(const T *const *xg, int64_t ng, int64_t nr, int64_t sq, int64_t len,
                           const double *k, double *t1, double *t2)
{
    V acc[8 * FN_GB];
    for (int64_t j = 0; j < 8 * ng; j++)
        acc[j] = VZERO();
    const __mmask8 m = (__mmask8)((1u << (len % VW)) - 1u);
    for (int64_t r = 0; r < nr; r++)
        for (int64_t g = 0; g < ng; g++) {
            V *h = acc + 8 * g;
            V a1 = h[0], b1 = h[1], c1 = h[2], d1 = h[3];
            V a2 = h[4], b2 = h[5], c2 = h[6], d2 = h[7];
            const V kv = VSET1(k[g]);
            VROW(xg[g] + r * sq, VSHIFT_K, VMSHIFT_K, VACC)
            h[0] = a1, h[1] = b1, h[2] = c1, h[3] = d1, h[4] = a2, h[5] = b2, h[6] = c2, h[7] = d2;
        }
    for (int64_t g = 0; g < ng; g++) {
        const V *h = acc + 8 * g;
        t1[g] = VHSUM(VADD(VADD(h[0], h[1]), VADD(h[2], h[3])));
        t2[g] = VHSUM(VADD(VADD(h[4], h[5]), VADD(h[6], h[7])));
    }
}
/* rows_sums of two single rows of len at x[0], x[1] (shifts k[0], k[1]; 0: rows_sums0's bits)
 * in one call: the second row's loads and sums proceed while the first's lanes are summed (short
 * LayerNorm rows, short_moments). Each row the same operations as rows_sums, so the same bits. */
VFUNC void VN(rows_sums_2)(const T *const *x, int64_t len, const double *k, double *t1,
                           double *t2)
{
    const __mmask8 m = (__mmask8)((1u << (len % VW)) - 1u);
    for (int j = 0; j < 2; j++) {
        V a1 = VZERO(), b1 = a1, c1 = a1, d1 = a1, a2 = a1, b2 = a1, c2 = a1, d2 = a1;
        const V kv = VSET1(k[j]);
        VROW(x[j], VSHIFT_K, VMSHIFT_K, VACC)
        t1[j] = VHSUM(VADD(VADD(a1, b1), VADD(c1, d1)));
        t2[j] = VHSUM(VADD(VADD(a2, b2), VADD(c2, d2)));
    }
}
/* rows_sums0's sum of squares alone (RMSNorm): the same accumulators in the same order */
VFUNC void VN(rows_sumsq)(const T *x, int64_t nr, int64_t sq, int64_t len, double *t2)
{
    VROWS_BODY(VSHIFT_NONE, VSHIFT_NONE, VNOACC)
    (void)a1, (void)b1, (void)c1, (void)d1;
    *t2 = VHSUM(VADD(VADD(a2, b2), VADD(c2, d2)));
}
#undef VACC
#undef VNOACC
#undef VSHIFT_K
#undef VMSHIFT_K
#undef VSHIFT_NONE
#undef VROWS_BODY
#undef VROW
#undef VLOADT_M
#undef VMSUB
#endif

/* tile_sums for contiguous columns: rows [r0, r1) (of [0, rend)) at row stride sr, read in
 * memory order, four rows at a time; the per-column sums live in s1/s2 (L1-resident, VW columns
 * per vector) between rows. Each column still adds its rows one after another, from zero.
 * Returns how many of the w columns it handled (a multiple of VW). SHIFT(v, kv): an element
 * vector as summed (minus the shifts kv = KLOAD(j) of its columns, or as it is: tile_sums0). */
#define VTILE(NAME, KLOAD, SHIFT)                                                                  \
    VFUNC int64_t VN(NAME)(const T *x, int64_t r0, int64_t r1, int64_t rend, int64_t sr,           \
                           int64_t w, const double *k, double *s1, double *s2)                     \
    {                                                                                              \
        const int64_t wv = w - w % VW;                                                             \
        for (int64_t j = 0; j < wv; j += VW) {                                                     \
            VSTORED(s1 + j, VZERO());                                                              \
            VSTORED(s2 + j, VZERO());                                                              \
        }                                                                                          \
        /* Rows of a few KB read four at a time defeat the hardware prefetchers (each stream is  \
         * short within its page: about 0.3x the row kernel's throughput from DRAM), so the rows \
         * about FN_TILE_PF bytes ahead are prefetched into L2, a line of each per step (into L1 \
         * it was slower: the prefetches hold L1's miss buffers). */                              \
        const int64_t line = 64 / (int64_t)sizeof(T), row_bytes = sr * (int64_t)sizeof(T);        \
        const int64_t pf = row_bytes > 0 && FN_TILE_PF / row_bytes > 4 ? FN_TILE_PF / row_bytes : 4; \
        int64_t r = r0;                                                                            \
        for (; r + 4 <= r1; r += 4) {                                                              \
            const T *x0 = x + r * sr, *x1 = x0 + sr, *x2 = x1 + sr, *x3 = x2 + sr;                 \
            const T *p0 = r + pf + 4 <= rend ? x0 + pf * sr : x0; /* on into the next tile */     \
            for (int64_t j = 0; j < wv; j += VW) {                                                 \
                if (!(j & (line - 1))) {                                                           \
                    __builtin_prefetch(p0 + j, 0, 1);                                              \
                    __builtin_prefetch(p0 + sr + j, 0, 1);                                         \
                    __builtin_prefetch(p0 + 2 * sr + j, 0, 1);                                     \
                    __builtin_prefetch(p0 + 3 * sr + j, 0, 1);                                     \
                }                                                                                  \
                const V kv = KLOAD(j);                                                             \
                V a = VLOADD(s1 + j), q = VLOADD(s2 + j);                                          \
                const V d0 = SHIFT(VLOADT(x0 + j), kv), d1 = SHIFT(VLOADT(x1 + j), kv);            \
                const V d2 = SHIFT(VLOADT(x2 + j), kv), d3 = SHIFT(VLOADT(x3 + j), kv);            \
                a = VADD(a, d0);                                                                   \
                q = VFMA(d0, d0, q);                                                               \
                a = VADD(a, d1);                                                                   \
                q = VFMA(d1, d1, q);                                                               \
                a = VADD(a, d2);                                                                   \
                q = VFMA(d2, d2, q);                                                               \
                a = VADD(a, d3);                                                                   \
                q = VFMA(d3, d3, q);                                                               \
                VSTORED(s1 + j, a);                                                                \
                VSTORED(s2 + j, q);                                                                \
            }                                                                                      \
        }                                                                                          \
        for (; r < r1; r++) {                                                                      \
            const T *xr = x + r * sr;                                                              \
            for (int64_t j = 0; j < wv; j += VW) {                                                 \
                const V kv = KLOAD(j);                                                             \
                const V d = SHIFT(VLOADT(xr + j), kv);                                             \
                VSTORED(s1 + j, VADD(VLOADD(s1 + j), d));                                          \
                VSTORED(s2 + j, VFMA(d, d, VLOADD(s2 + j)));                                       \
            }                                                                                      \
        }                                                                                          \
        return wv;                                                                                 \
    }
#define VKLOAD_K(j) VLOADD(k + (j))
#define VKLOAD_NONE(j) VZERO()
#define VSHIFT_K(v, kv) VSUB(v, kv)
#define VSHIFT_NONE(v, kv) ((void)(kv), (v))
VTILE(tile_sums, VKLOAD_K, VSHIFT_K)
VTILE(tile_sums0, VKLOAD_NONE, VSHIFT_NONE)
#undef VKLOAD_K
#undef VKLOAD_NONE
#undef VSHIFT_K
#undef VSHIFT_NONE
#undef VTILE

#undef VN
#undef VISA
#undef VFUNC
#undef V
#undef VW
#undef VZERO
#undef VSET1
#undef VSUB
#undef VADD
#undef VFMA
#undef VLOADD
#undef VSTORED
#undef VHSUM
#undef VLOADT
