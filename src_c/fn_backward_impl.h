/* Backward kernel bodies, compiled once per storage dtype: fn_kernels_impl.h includes this file
 * just before its table, with T, CT, S, LD, ST and FN defined (see there). The interface and
 * the meaning of an entry are in fastnorm.h (fn_grad_entries, fn_grad_layer_job).
 *
 * Sums are taken in double over blocks fixed by the shape alone (FN_BLOCK elements of a row,
 * FN_BLOCK / L short rows, or a tile of the column layout) and merged in index order, so every
 * bit of the result is the same for any thread count. Not a public header. */

/* float32 storage with AVX-512: the sums in float lanes. A lane adds a run of at most 16
 * products in float (relative error ~1e-6 of what the run adds, far inside float32's tolerance),
 * then the runs go into double accumulators in a fixed order, so the result still depends on the
 * shape alone. The centre k is used as the float kf (x - kf is exact for x near kf), and the
 * remainder (kf - k) sum(dy) is added back in double. Centres beyond float's range: double loops. */
#if FN_AVX512 && defined(FN_F32LANES)
#define FN_GF32 1
FN_AVX512_INLINE __m512d fn_lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
FN_AVX512_INLINE __m512d fn_hi_pd(__m512 v)
{
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* s1 = sum(dy), s2 = sum(dy (x - k)) over the first 32 floor(n / 32) contiguous elements, in
 * runs of 256 (16 per lane); dx (not NULL) = a dy there, in the same pass (eval mode). Returns
 * the elements done. */
FN_AVX512_FUNC int64_t fn_gsums_f32_avx512(const float *x, const float *dy, float *dx, float a,
                                           int64_t n, double k, double *t1, double *t2)
{
    const float kf = (float)k;
    const __m512 kv = _mm512_set1_ps(kf), av = _mm512_set1_ps(a);
    __m512d s1 = _mm512_setzero_pd(), s2 = s1;
    const int64_t n32 = n & ~(int64_t)31;
    int64_t i = 0;
    while (i < n32) {
        const int64_t e = i + 256 < n32 ? i + 256 : n32;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
        for (; i < e; i += 32) {
            const __m512 d0 = _mm512_loadu_ps(dy + i), d1 = _mm512_loadu_ps(dy + i + 16);
            a0 = _mm512_add_ps(a0, d0);
            a1 = _mm512_add_ps(a1, d1);
            b0 = _mm512_fmadd_ps(d0, _mm512_sub_ps(_mm512_loadu_ps(x + i), kv), b0);
            b1 = _mm512_fmadd_ps(d1, _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), kv), b1);
            if (dx) {
                _mm512_storeu_ps(dx + i, _mm512_mul_ps(av, d0));
                _mm512_storeu_ps(dx + i + 16, _mm512_mul_ps(av, d1));
            }
        }
        const __m512 sa = _mm512_add_ps(a0, a1), sb = _mm512_add_ps(b0, b1);
        s1 = _mm512_add_pd(s1, _mm512_add_pd(fn_lo_pd(sa), fn_hi_pd(sa)));
        s2 = _mm512_add_pd(s2, _mm512_add_pd(fn_lo_pd(sb), fn_hi_pd(sb)));
    }
    const double r1 = fn_hsum8(s1), r2 = fn_hsum8(s2);
    *t1 = r1;
    *t2 = (double)kf != k ? r2 + ((double)kf - k) * r1 : r2;
    return i;
}

/* Column sums of a tile (see grad_tile_sums) for contiguous columns: from r0, runs of 16 rows,
 * each column's run added in float (in L1-resident float accumulators, row by row across the
 * columns as grad_tile_sums), then into the column's double accumulators a1, a2 in run order;
 * 16 columns at a time, the last ones masked. dx (not NULL): dx = a[j] dy in the same pass
 * (eval mode). */
FN_AVX512_FUNC void fn_gtile_f32_avx512(const float *x, const float *dy, float *dx, const float *a,
                                        int64_t r0, int64_t r1, int64_t rx, int64_t ry, int64_t rd,
                                        int64_t w, const float *kf, double *a1, double *a2)
{
    float f1[FN_CB] __attribute__((aligned(64))), f2[FN_CB] __attribute__((aligned(64)));
    const __m512 z = _mm512_setzero_ps();
    for (int64_t rr = r0; rr < r1; rr += 16) {
        const int64_t re = rr + 16 < r1 ? rr + 16 : r1;
        for (int64_t j = 0; j < w; j += 16) {
            _mm512_store_ps(f1 + j, z);
            _mm512_store_ps(f2 + j, z);
        }
        for (int64_t r = rr; r < re; r++) {
            const float *xr = x + r * rx, *dr = dy + r * ry;
            float *xd = dx ? dx + r * rd : NULL;
            int64_t j = 0;
            for (; j + 16 <= w; j += 16) {
                const __m512 d = _mm512_loadu_ps(dr + j);
                const __m512 v = _mm512_sub_ps(_mm512_loadu_ps(xr + j), _mm512_loadu_ps(kf + j));
                _mm512_store_ps(f1 + j, _mm512_add_ps(_mm512_load_ps(f1 + j), d));
                _mm512_store_ps(f2 + j, _mm512_fmadd_ps(d, v, _mm512_load_ps(f2 + j)));
                if (xd)
                    _mm512_storeu_ps(xd + j, _mm512_mul_ps(_mm512_loadu_ps(a + j), d));
            }
            if (j < w) {
                const __mmask16 m = (__mmask16)((1u << (w - j)) - 1u);
                const __m512 d = _mm512_maskz_loadu_ps(m, dr + j);
                const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + j),
                                               _mm512_maskz_loadu_ps(m, kf + j));
                _mm512_store_ps(f1 + j, _mm512_add_ps(_mm512_load_ps(f1 + j), d));
                _mm512_store_ps(f2 + j, _mm512_fmadd_ps(d, v, _mm512_load_ps(f2 + j)));
                if (xd)
                    _mm512_mask_storeu_ps(xd + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + j), d));
            }
        }
        for (int64_t j = 0; j < w; j += 16) {
            const __mmask16 m = w - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w - j)) - 1u);
            const __mmask8 ml = (__mmask8)(m & 0xFF), mh = (__mmask8)(m >> 8);
            const __m512 u1 = _mm512_load_ps(f1 + j), u2 = _mm512_load_ps(f2 + j);
            _mm512_mask_storeu_pd(a1 + j, ml, _mm512_add_pd(_mm512_maskz_loadu_pd(ml, a1 + j), fn_lo_pd(u1)));
            _mm512_mask_storeu_pd(a1 + j + 8, mh, _mm512_add_pd(_mm512_maskz_loadu_pd(mh, a1 + j + 8), fn_hi_pd(u1)));
            _mm512_mask_storeu_pd(a2 + j, ml, _mm512_add_pd(_mm512_maskz_loadu_pd(ml, a2 + j), fn_lo_pd(u2)));
            _mm512_mask_storeu_pd(a2 + j + 8, mh, _mm512_add_pd(_mm512_maskz_loadu_pd(mh, a2 + j + 8), fn_hi_pd(u2)));
        }
    }
}

/* LayerNorm's row sums s1 = sum(w dy), s2 = sum(w dy (x - k)) over n contiguous elements, w in
 * float, in float lanes as fn_gsums_f32_avx512 (runs of 256, then the masked tail). */
FN_AVX512_FUNC void fn_gsums_w_f32_avx512(const float *x, const float *dy, const float *w,
                                          int64_t n, double k, double *t1, double *t2)
{
    const float kf = (float)k;
    const __m512 kv = _mm512_set1_ps(kf), z = _mm512_setzero_ps();
    __m512d s1 = _mm512_setzero_pd(), s2 = s1;
    int64_t i = 0;
    while (i < n) {
        const int64_t e = i + 256 < n ? i + 256 : n;
        __m512 a0 = z, a1 = z, b0 = z, b1 = z;
        for (; i + 32 <= e; i += 32) {
            const __m512 d0 = _mm512_mul_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(dy + i));
            const __m512 d1 = _mm512_mul_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(dy + i + 16));
            a0 = _mm512_add_ps(a0, d0);
            a1 = _mm512_add_ps(a1, d1);
            b0 = _mm512_fmadd_ps(d0, _mm512_sub_ps(_mm512_loadu_ps(x + i), kv), b0);
            b1 = _mm512_fmadd_ps(d1, _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), kv), b1);
        }
        for (; i < e; i += 16) { /* the row's last elements (fewer than 32) */
            const __mmask16 m = e - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (e - i)) - 1u);
            const __m512 d0 = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, dy + i));
            a0 = _mm512_add_ps(a0, d0);
            b0 = _mm512_fmadd_ps(d0, _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), kv), b0);
        }
        const __m512 sa = _mm512_add_ps(a0, a1), sb = _mm512_add_ps(b0, b1);
        s1 = _mm512_add_pd(s1, _mm512_add_pd(fn_lo_pd(sa), fn_hi_pd(sa)));
        s2 = _mm512_add_pd(s2, _mm512_add_pd(fn_lo_pd(sb), fn_hi_pd(sb)));
    }
    const double r1 = fn_hsum8(s1), r2 = fn_hsum8(s2);
    *t1 = r1;
    *t2 = (double)kf != k ? r2 + ((double)kf - k) * r1 : r2;
}

/* grad_layer_apply over n contiguous elements with FMAs: dx = (r w) dy + (b (x - mh) + c) (dx
 * NULL: not written); fw += dy ((x - mh) r + xc), fb += dy (fw NULL: not wanted). */
FN_AVX512_FUNC void fn_glayer_apply_f32_avx512(const float *x, const float *dy, float *dx,
                                               int64_t n, const float *w, float r, float mh,
                                               float b, float c, float xc, float *fw, float *fb,
                                               const float *px, const float *pdy)
{
    /* px, pdy: the next row, fetched meanwhile (this pass reads the row from L1 and leaves the
     * memory idle); a prefetch never faults, whatever the address */
    const __m512 rv = _mm512_set1_ps(r), mv = _mm512_set1_ps(mh), bv = _mm512_set1_ps(b);
    const __m512 cv = _mm512_set1_ps(c), xcv = _mm512_set1_ps(xc);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        const __m512 d = _mm512_maskz_loadu_ps(m, dy + i);
        const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mv);
        _mm_prefetch((const char *)(px + i), _MM_HINT_T0);
        _mm_prefetch((const char *)(pdy + i), _MM_HINT_T0);
        if (dx) {
            const __m512 rw = _mm512_mul_ps(rv, _mm512_maskz_loadu_ps(m, w + i));
            _mm512_mask_storeu_ps(dx + i, m, _mm512_fmadd_ps(rw, d, _mm512_fmadd_ps(bv, v, cv)));
        }
        if (fw) {
            const __m512 xh = _mm512_fmadd_ps(v, rv, xcv);
            _mm512_mask_storeu_ps(fw + i, m, _mm512_fmadd_ps(d, xh, _mm512_maskz_loadu_ps(m, fw + i)));
            _mm512_mask_storeu_ps(fb + i, m, _mm512_add_ps(d, _mm512_maskz_loadu_ps(m, fb + i)));
        }
    }
}

/* fn_glayer_apply_f32_avx512 over two rows at once (coefficients c0, c1: r, mh, b, c, xc):
 * the weight and the float partials fw, fb are loaded and stored once for both, and row 0's
 * share is added before row 1's, as two calls would. px[2], pdy[2]: two rows further on,
 * fetched into L2 meanwhile (this pass runs from L1 and leaves the memory idle; a prefetch
 * never faults). */
#define FN_LAYER_AHEAD 6
FN_AVX512_FUNC void fn_glayer_apply2_f32_avx512(const float *x0, const float *dy0, float *dx0,
                                                const float *x1, const float *dy1, float *dx1,
                                                int64_t n, const float *w, const float *c0,
                                                const float *c1, float *fw, float *fb,
                                                const float *const *px, const float *const *pdy)
{
    const __m512 r0 = _mm512_set1_ps(c0[0]), m0 = _mm512_set1_ps(c0[1]), b0 = _mm512_set1_ps(c0[2]);
    const __m512 k0 = _mm512_set1_ps(c0[3]), e0 = _mm512_set1_ps(c0[4]);
    const __m512 r1 = _mm512_set1_ps(c1[0]), m1 = _mm512_set1_ps(c1[1]), b1 = _mm512_set1_ps(c1[2]);
    const __m512 k1 = _mm512_set1_ps(c1[3]), e1 = _mm512_set1_ps(c1[4]);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        const __m512 d0 = _mm512_maskz_loadu_ps(m, dy0 + i), d1 = _mm512_maskz_loadu_ps(m, dy1 + i);
        const __m512 v0 = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x0 + i), m0);
        const __m512 v1 = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x1 + i), m1);
        _mm_prefetch((const char *)(px[0] + i), _MM_HINT_T1);
        _mm_prefetch((const char *)(pdy[0] + i), _MM_HINT_T1);
        _mm_prefetch((const char *)(px[1] + i), _MM_HINT_T1);
        _mm_prefetch((const char *)(pdy[1] + i), _MM_HINT_T1);
        if (dx0) {
            const __m512 wv = _mm512_maskz_loadu_ps(m, w + i);
            _mm512_mask_storeu_ps(dx0 + i, m, _mm512_fmadd_ps(_mm512_mul_ps(r0, wv), d0, _mm512_fmadd_ps(b0, v0, k0)));
            _mm512_mask_storeu_ps(dx1 + i, m, _mm512_fmadd_ps(_mm512_mul_ps(r1, wv), d1, _mm512_fmadd_ps(b1, v1, k1)));
        }
        if (fw) {
            const __m512 t = _mm512_fmadd_ps(d0, _mm512_fmadd_ps(v0, r0, e0), _mm512_maskz_loadu_ps(m, fw + i));
            _mm512_mask_storeu_ps(fw + i, m, _mm512_fmadd_ps(d1, _mm512_fmadd_ps(v1, r1, e1), t));
            const __m512 u = _mm512_add_ps(_mm512_maskz_loadu_ps(m, fb + i), d0);
            _mm512_mask_storeu_ps(fb + i, m, _mm512_add_ps(u, d1));
        }
    }
}

/* grad_layer_flush: cw += fw, cb += fb in double, fw = fb = 0 (n elements) */
FN_AVX512_FUNC void fn_glayer_flush_f32_avx512(float *fw, float *fb, double *cw, double *cb,
                                               int64_t n)
{
    const __m512 z = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        const __mmask8 ml = (__mmask8)(m & 0xFF), mh = (__mmask8)(m >> 8);
        const __m512 u = _mm512_maskz_loadu_ps(m, fw + i), v = _mm512_maskz_loadu_ps(m, fb + i);
        _mm512_mask_storeu_pd(cw + i, ml, _mm512_add_pd(_mm512_maskz_loadu_pd(ml, cw + i), fn_lo_pd(u)));
        _mm512_mask_storeu_pd(cw + i + 8, mh, _mm512_add_pd(_mm512_maskz_loadu_pd(mh, cw + i + 8), fn_hi_pd(u)));
        _mm512_mask_storeu_pd(cb + i, ml, _mm512_add_pd(_mm512_maskz_loadu_pd(ml, cb + i), fn_lo_pd(v)));
        _mm512_mask_storeu_pd(cb + i + 8, mh, _mm512_add_pd(_mm512_maskz_loadu_pd(mh, cb + i + 8), fn_hi_pd(v)));
        _mm512_mask_storeu_ps(fw + i, m, z);
        _mm512_mask_storeu_ps(fb + i, m, z);
    }
}

/* dx = a dy + (b (x - mh) + c) over n contiguous elements, with FMAs (the last ones masked) */
FN_AVX512_FUNC void fn_gapply_f32_avx512(const float *x, const float *dy, float *dx, int64_t n,
                                         float mh, float a, float b, float c, const float *px,
                                         const float *pdy)
{
    /* px, pdy (not NULL): n elements fetched meanwhile, the next group's (a prefetch never
     * faults) */
    const __m512 mv = _mm512_set1_ps(mh), av = _mm512_set1_ps(a), bv = _mm512_set1_ps(b);
    const __m512 cv = _mm512_set1_ps(c);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        if (px) {
            _mm_prefetch((const char *)(px + i), _MM_HINT_T0);
            _mm_prefetch((const char *)(pdy + i), _MM_HINT_T0);
        }
        const __m512 v = _mm512_sub_ps(_mm512_loadu_ps(x + i), mv);
        _mm512_storeu_ps(dx + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(dy + i), _mm512_fmadd_ps(bv, v, cv)));
    }
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mv);
        _mm512_mask_storeu_ps(dx + i, m, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, dy + i),
                                                         _mm512_fmadd_ps(bv, v, cv)));
    }
}

/* dx[j] = a[j] dy[j] + (b[j] (x[j] - mh[j]) + c[j]) across n contiguous columns, with FMAs */
FN_AVX512_FUNC void fn_gcols_f32_avx512(const float *x, const float *dy, float *dx, int64_t n,
                                        const float *mh, const float *a, const float *b,
                                        const float *c)
{
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, mh + i));
        const __m512 t = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, b + i), v, _mm512_maskz_loadu_ps(m, c + i));
        _mm512_mask_storeu_ps(dx + i, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i),
                                                         _mm512_maskz_loadu_ps(m, dy + i), t));
    }
}
/* fn_gcols on rows r < nr (rows rx, ry, rd elements apart), two rows at a time: each column's
 * coefficients are loaded once for both (the loads, not the arithmetic, bound this loop); the
 * same operations per element, so the same bits. */
FN_AVX512_FUNC void fn_gcols_rows_f32_avx512(const float *x, const float *dy, float *dx,
                                             int64_t nr, int64_t rx, int64_t ry, int64_t rd,
                                             int64_t n, const float *mh, const float *a,
                                             const float *b, const float *c, int nts)
{
    /* the columns [i, i + 16) under mask m of rows r and r + 1 into o0, o1 */
#define FN_GCOLS_PAIR(m)                                                                           \
    const __m512 mv = _mm512_maskz_loadu_ps(m, mh + i), av = _mm512_maskz_loadu_ps(m, a + i);     \
    const __m512 bv = _mm512_maskz_loadu_ps(m, b + i), cv = _mm512_maskz_loadu_ps(m, c + i);     \
    const __m512 v0 = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x0 + i), mv);                       \
    const __m512 v1 = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x1 + i), mv);                       \
    const __m512 o0 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, y0 + i),                      \
                                      _mm512_fmadd_ps(bv, v0, cv));                              \
    const __m512 o1 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, y1 + i),                      \
                                      _mm512_fmadd_ps(bv, v1, cv))
    int64_t r = 0;
    /* streaming stores (rows' starts alike modulo 64 bytes): a masked head up to the first
     * whole line, whole lines streamed, a masked tail; noted for FN_PFOR's fence */
    const int64_t h0 = (int64_t)(((64 - ((uintptr_t)dx & 63)) & 63) / sizeof(float));
    const int64_t h = h0 < n ? h0 : n, e = h + (n - h) / 16 * 16;
    for (; r + 2 <= nr; r += 2) {
        const float *x0 = x + r * rx, *x1 = x0 + rx, *y0 = dy + r * ry, *y1 = y0 + ry;
        float *d0 = dx + r * rd, *d1 = d0 + rd;
        int64_t i = 0;
        if (nts) {
            if (h) {
                const __mmask16 m = (__mmask16)((1u << h) - 1u);
                FN_GCOLS_PAIR(m);
                _mm512_mask_storeu_ps(d0 + i, m, o0);
                _mm512_mask_storeu_ps(d1 + i, m, o1);
            }
            for (i = h; i < e; i += 16) {
                FN_GCOLS_PAIR((__mmask16)0xFFFF);
                _mm512_stream_ps(d0 + i, o0);
                _mm512_stream_ps(d1 + i, o1);
            }
        }
        for (; i < n; i += 16) {
            const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
            FN_GCOLS_PAIR(m);
            _mm512_mask_storeu_ps(d0 + i, m, o0);
            _mm512_mask_storeu_ps(d1 + i, m, o1);
        }
    }
    if (nts)
        fn_nt_note();
#undef FN_GCOLS_PAIR
    if (r < nr)
        fn_gcols_f32_avx512(x + r * rx, dy + r * ry, dx + r * rd, n, mh, a, b, c);
}
#else
#define FN_GF32 0
#endif

/* t1 += sum(dy), t2 += sum(dy * (x - k)) over n elements; the additions' order depends on n
 * (and the CPU's clone of the loop), never on threads. */
static FN_HOT void FN(grad_run_sums)(const T *x, const T *dy, int64_t n, int64_t sx, int64_t sy,
                                     double k, double *s1, double *s2)
{
    double t1 = 0.0, t2 = 0.0;
    if (sx == 1 && sy == 1) {
        int64_t i0 = 0;
#if FN_GF32
        if (n >= 32 && fn_fcentre(k) && fn_simd_level() >= 2)
            i0 = fn_gsums_f32_avx512(x, dy, NULL, 0.0f, n, k, &t1, &t2);
#endif
        FN_OMP(simd reduction(+ : t1, t2))
        for (int64_t i = i0; i < n; i++) {
            const double d = (double)LD(dy[i]);
            t1 += d;
            t2 += d * ((double)LD(x[i]) - k);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            const double d = (double)LD(dy[i * sy]);
            t1 += d;
            t2 += d * ((double)LD(x[i * sx]) - k);
        }
    }
    *s1 += t1;
    *s2 += t2;
}

#if FN_AVX512
#define GISA avx512
#define GFUNC FN_AVX512_FUNC
#define GV __m512d
#define GVW 8
#define GZERO _mm512_setzero_pd
#define GSET1 _mm512_set1_pd
#define GSUB _mm512_sub_pd
#define GADD _mm512_add_pd
#define GMUL _mm512_mul_pd
#define GFMA _mm512_fmadd_pd
#define GLOADD _mm512_loadu_pd
#define GHSUM fn_hsum8
#define GLOADT FN(fn_load8)
#include "fn_backward_simd_impl.h"
#endif
#if FN_AVX2
#define GISA avx2
#define GFUNC FN_AVX2_FUNC
#define GV __m256d
#define GVW 4
#define GZERO _mm256_setzero_pd
#define GSET1 _mm256_set1_pd
#define GSUB _mm256_sub_pd
#define GADD _mm256_add_pd
#define GMUL _mm256_mul_pd
#define GFMA _mm256_fmadd_pd
#define GLOADD _mm256_loadu_pd
#define GHSUM fn_hsum4
#define GLOADT FN(fn_load4)
#include "fn_backward_simd_impl.h"
#endif

/* s1 += sum(w dy), s2 += sum(w dy (x - k)) over n elements, w[i] elementwise in double (the
 * AVX-512 / AVX2 loops above where the CPU has them, as the statistics loops: results depend
 * on the CPU's path, never on threads) */
static void FN(grad_run_sums_w)(const T *x, const T *dy, const double *w, int64_t n, int64_t sx,
                                int64_t sy, double k, double *s1, double *s2)
{
    double t1 = 0.0, t2 = 0.0;
    int64_t i = 0;
#if FN_AVX512
    if (sx == 1 && sy == 1 && n >= 32 && fn_simd_level() >= 2)
        i = FN(grad_sums_w_avx512)(x, dy, w, n, k, &t1, &t2);
    else
#endif
#if FN_AVX2
    if (sx == 1 && sy == 1 && n >= 16 && fn_simd_level() >= 1)
        i = FN(grad_sums_w_avx2)(x, dy, w, n, k, &t1, &t2);
#endif
    for (; i < n; i++) {
        const double wd = w[i] * (double)LD(dy[i * sy]);
        t1 += wd;
        t2 += wd * ((double)LD(x[i * sx]) - k);
    }
    *s1 += t1;
    *s2 += t2;
}

/* dx = a * dy + b * (x - mh) + c over n elements; b == 0 (statistics held constant): x unread */
static FN_HOT void FN(grad_run_apply)(const T *x, const T *dy, T *dx, int64_t n, int64_t sx,
                                      int64_t sy, int64_t sd, CT mh, CT a, CT b, CT c)
{
    if (b == (CT)0) {
        if (sy == 1 && sd == 1) {
            FN_OMP(simd)
            for (int64_t i = 0; i < n; i++)
                dx[i] = ST(a * LD(dy[i]) + c);
        } else {
            for (int64_t i = 0; i < n; i++)
                dx[i * sd] = ST(a * LD(dy[i * sy]) + c);
        }
    } else if (sx == 1 && sy == 1 && sd == 1) {
#if FN_GF32
        if (fn_simd_level() >= 2) {
            fn_gapply_f32_avx512(x, dy, dx, n, mh, a, b, c, NULL, NULL);
            return;
        }
#endif
        FN_OMP(simd)
        for (int64_t i = 0; i < n; i++)
            dx[i] = ST(a * LD(dy[i]) + b * (LD(x[i]) - mh) + c);
    } else {
        for (int64_t i = 0; i < n; i++)
            dx[i * sd] = ST(a * LD(dy[i * sy]) + b * (LD(x[i * sx]) - mh) + c);
    }
}

/* Statistics held constant (eval mode): t1 = sum(dy), t2 = sum(dy (x - k)) over n elements and
 * dx = a dy, in one pass where the float-lane loop runs (else sums, then dx from cache). */
static void FN(grad_run_sums_scale)(const T *x, const T *dy, T *dx, int64_t n, int64_t sx,
                                    int64_t sy, int64_t sd, double k, CT a, double *t1, double *t2)
{
    int64_t i0 = 0;
    double u1 = 0.0, u2 = 0.0;
#if FN_GF32
    if (sx == 1 && sy == 1 && sd == 1 && n >= 32 && fn_fcentre(k) && fn_simd_level() >= 2)
        i0 = fn_gsums_f32_avx512(x, dy, dx, a, n, k, &u1, &u2);
#endif
    if (i0 < n) {
        FN(grad_run_sums)(x + i0 * sx, dy + i0 * sy, n - i0, sx, sy, k, &u1, &u2);
        FN(grad_run_apply)(x + i0 * sx, dy + i0 * sy, dx + i0 * sd, n - i0, sx, sy, sd, (CT)0, a,
                           (CT)0, (CT)0);
    }
    *t1 = u1;
    *t2 = u2;
}

/* Entry e's coefficients in CT: the centre as CT mh plus a double remainder folded into c, so
 * that float data is centred without rounding the true centre to float first. */
static inline void FN(grad_coefs)(const fn_grad_entries *g, int64_t e, CT *mh, CT *a, CT *b,
                                  CT *c)
{
    const double k = g->centre ? g->centre[e] : 0.0;
    const CT m = FN(narrow)(k);
    *mh = m;
    *a = FN(narrow)(g->a[e]);
    *b = FN(narrow)(g->b[e]);
    *c = FN(narrow)(g->c[e] + (g->b[e] != 0.0 ? g->b[e] * ((double)m - k) : 0.0));
}

/* Base of row e = (p, q) (p = o * groups + g) of the row layout at strides st. */
static inline int64_t FN(grad_row_at)(const fn_rows *s, const int64_t st[4], int64_t e)
{
    const int64_t p = e / s->rows, q = e % s->rows;
    return (p / s->groups) * st[0] + (p % s->groups) * st[1] + q * st[2];
}

/* Sums of row e over its chunks of FN_BLOCK, added in chunk order from 0 (the same additions as
 * grad_sums_rows' merge of its per-chunk partials, so both give the same bits). */
static inline void FN(grad_row_total)(const T *x, const T *dy, const fn_rows *s, int64_t e,
                                      double k, double *s1, double *s2)
{
    const int64_t L = s->row_len;
    const T *xr = x + FN(grad_row_at)(s, s->xs, e), *dr = dy + FN(grad_row_at)(s, s->ys, e);
    double a1 = 0.0, a2 = 0.0;
    for (int64_t l0 = 0; l0 < L; l0 += FN_BLOCK) {
        double t1 = 0.0, t2 = 0.0;
        FN(grad_run_sums)(xr + l0 * s->xs[3], dr + l0 * s->ys[3],
                          L - l0 < FN_BLOCK ? L - l0 : FN_BLOCK, s->xs[3], s->ys[3], k, &t1, &t2);
        a1 += t1;
        a2 += t2;
    }
    *s1 = a1;
    *s2 = a2;
}

/* Per-entry sums of the row layout, centred on centre[e] (per entry), else gmean[e / rows]
 * (per group), else 0: long rows in chunks of FN_BLOCK (partials merged in chunk order), short
 * rows FN_BLOCK / L to a unit of work. */
static int FN(grad_sums_impl)(const T *x, const T *dy, const fn_rows *s, const double *centre,
                              const double *gmean, double *sum_dy, double *sum_dyxc,
                              int n_threads)
{
    const int64_t Q = s->rows, E = s->outer * s->groups * Q, L = s->row_len;
#define FN_GRAD_CENTRE(e) (centre ? centre[e] : gmean ? gmean[(e) / Q] : 0.0)
    if (E <= 0)
        return FN_OK;
    if (L <= 0) {
        for (int64_t e = 0; e < E; e++)
            sum_dy[e] = sum_dyxc[e] = 0.0;
        return FN_OK;
    }
    const int64_t cpl = (L + FN_BLOCK - 1) / FN_BLOCK; /* chunks per row */
    if (cpl == 1) {
        const int64_t rpu = FN_BLOCK / L, U = (E + rpu - 1) / rpu;
        const int nt = fn_eff_threads(E * L, U, n_threads);
        FN_PFOR(n_threads, nt, u, U, {
            const int64_t e1 = (u + 1) * rpu < E ? (u + 1) * rpu : E;
            for (int64_t e = u * rpu; e < e1; e++)
                FN(grad_row_total)(x, dy, s, e, FN_GRAD_CENTRE(e), &sum_dy[e], &sum_dyxc[e]);
        });
        return FN_OK;
    }
    const int64_t U = E * cpl;
    double *part = (double *)malloc((size_t)(2 * U) * sizeof(double));
    if (!part)
        return FN_ENOMEM;
    const int nt = fn_eff_threads(E * L, U, n_threads);
    FN_PFOR(n_threads, nt, u, U, {
        const int64_t e = u / cpl, l0 = (u % cpl) * FN_BLOCK;
        const int64_t n = l0 + FN_BLOCK < L ? FN_BLOCK : L - l0;
        double t1 = 0.0, t2 = 0.0;
        FN(grad_run_sums)(x + FN(grad_row_at)(s, s->xs, e) + l0 * s->xs[3],
                          dy + FN(grad_row_at)(s, s->ys, e) + l0 * s->ys[3], n, s->xs[3],
                          s->ys[3], FN_GRAD_CENTRE(e), &t1, &t2);
        part[u] = t1;
        part[U + u] = t2;
    });
#undef FN_GRAD_CENTRE
    fn_merge_chunks(part, E, cpl, U, sum_dy, sum_dyxc);
    free(part);
    return FN_OK;
}

/* Table entry grad_sums_rows. */
static int FN(grad_sums_rows)(const void *xv, const void *dyv, const fn_grad_row_job *jb,
                              int n_threads)
{
    return FN(grad_sums_impl)((const T *)xv, (const T *)dyv, &jb->shape, jb->e.centre, NULL,
                              jb->e.sum_dy, jb->e.sum_dyxc, n_threads);
}

/* Units of a dx pass over E rows of L elements: chunks of FN_NCHUNK of a long row, or
 * FN_NCHUNK / L short rows. Returns the unit count. */
static inline int64_t FN(grad_units)(int64_t E, int64_t L, int64_t *cpl, int64_t *rpu)
{
    *cpl = L >= FN_NCHUNK ? (L + FN_NCHUNK - 1) / FN_NCHUNK : 1;
    *rpu = L >= FN_NCHUNK ? 1 : FN_NCHUNK / L;
    return *cpl > 1 ? E * *cpl : (E + *rpu - 1) / *rpu;
}

/* Rows [e0, e1) and elements [l0, l1) of unit u (see grad_units). */
static inline void FN(grad_unit)(int64_t u, int64_t E, int64_t L, int64_t cpl, int64_t rpu,
                                 int64_t *e0, int64_t *e1, int64_t *l0, int64_t *l1)
{
    *e0 = cpl > 1 ? u / cpl : u * rpu;
    *e1 = cpl > 1 ? *e0 + 1 : (*e0 + rpu < E ? *e0 + rpu : E);
    *l0 = cpl > 1 ? (u % cpl) * FN_NCHUNK : 0;
    *l1 = cpl > 1 && *l0 + FN_NCHUNK < L ? *l0 + FN_NCHUNK : L;
}

/* Table entry grad_apply_rows: units of FN_NCHUNK elements of a row, or of several short rows. */
static int FN(grad_apply_rows)(const void *xv, const void *dyv, void *dxv,
                               const fn_grad_row_job *jb, int n_threads)
{
    const T *x = (const T *)xv, *dy = (const T *)dyv;
    T *dx = (T *)dxv;
    const fn_rows *s = &jb->shape;
    const int64_t E = s->outer * s->groups * s->rows, L = s->row_len;
    if (E <= 0 || L <= 0)
        return FN_OK;
    int64_t cpl, rpu;
    const int64_t U = FN(grad_units)(E, L, &cpl, &rpu);
    const int nt = fn_eff_threads(E * L, U, n_threads);
    FN_PFOR(n_threads, nt, u, U, {
        int64_t e0, e1, l0, l1;
        FN(grad_unit)(u, E, L, cpl, rpu, &e0, &e1, &l0, &l1);
        for (int64_t e = e0; e < e1; e++) {
            CT mh, a, b, c;
            FN(grad_coefs)(&jb->e, e, &mh, &a, &b, &c);
            FN(grad_run_apply)(x + FN(grad_row_at)(s, s->xs, e) + l0 * s->xs[3],
                               dy + FN(grad_row_at)(s, s->ys, e) + l0 * s->ys[3],
                               dx + FN(grad_row_at)(s, jb->dxs, e) + l0 * jb->dxs[3], l1 - l0,
                               s->xs[3], s->ys[3], jb->dxs[3], mh, a, b, c);
        }
    });
    return FN_OK;
}

/* Sums down rows [r0, r1) of w <= FN_CB columns (column strides sx, sy) into t1[j], t2[j]:
 * each column adds its rows in order. Row by row across the columns (vectorized across them),
 * with the accumulators in L1-resident local arrays: walking a column block down the rows
 * instead thrashes the cache when the row stride is a large power of two. dx (not NULL, eval
 * mode): dx = a[j] dy in the same pass (row stride rd, column stride sd). */
static FN_HOT void FN(grad_tile_sums)(const T *x, const T *dy, T *dx, int64_t r0, int64_t r1,
                                      int64_t rx, int64_t ry, int64_t rd, int64_t sx, int64_t sy,
                                      int64_t sd, int64_t w, const double *k, const CT *a,
                                      double *t1, double *t2)
{
    double a1[FN_CB], a2[FN_CB], kk[FN_CB];
    for (int64_t j = 0; j < w; j++) {
        a1[j] = a2[j] = 0.0;
        kk[j] = k[j];
    }
#if FN_GF32
    int fl = sx == 1 && sy == 1 && (!dx || sd == 1) && fn_simd_level() >= 2;
    for (int64_t j = 0; fl && j < w; j++)
        fl = fn_fcentre(kk[j]);
    if (fl) {
        float kf[FN_CB];
        for (int64_t j = 0; j < w; j++)
            kf[j] = (float)kk[j];
        fn_gtile_f32_avx512(x, dy, dx, a, r0, r1, rx, ry, rd, w, kf, a1, a2);
        for (int64_t j = 0; j < w; j++) {
            t1[j] = a1[j];
            t2[j] = (double)kf[j] != kk[j] ? a2[j] + ((double)kf[j] - kk[j]) * a1[j] : a2[j];
        }
        return;
    }
#endif
    for (int64_t r = r0; r < r1; r++) {
        const T *xr = x + r * rx, *dr = dy + r * ry;
        if (sx == 1 && sy == 1) {
            FN_OMP(simd)
            for (int64_t j = 0; j < w; j++) {
                const double d = (double)LD(dr[j]);
                a1[j] += d;
                a2[j] += d * ((double)LD(xr[j]) - kk[j]);
            }
        } else {
            for (int64_t j = 0; j < w; j++) {
                const double d = (double)LD(dr[j * sy]);
                a1[j] += d;
                a2[j] += d * ((double)LD(xr[j * sx]) - kk[j]);
            }
        }
        if (dx) {
            T *xd = dx + r * rd;
            for (int64_t j = 0; j < w; j++)
                xd[j * sd] = ST(a[j] * LD(dr[j * sy]));
        }
    }
    for (int64_t j = 0; j < w; j++) {
        t1[j] = a1[j];
        t2[j] = a2[j];
    }
}

/* Sums of the column layout: tiles of FN_CB columns by a block of rows (fn_col_rows_per_block),
 * partials merged down the row blocks in order. dx (not NULL, eval mode): dx = a[e] dy in the
 * same pass. */
static int FN(grad_cols_impl)(const T *x, const T *dy, T *dx, const fn_grad_col_job *jb,
                              int n_threads)
{
    const fn_cols *s = &jb->shape;
    const fn_grad_entries *g = &jb->e;
    const int64_t P1 = s->outer, R = s->rows, C = s->cols;
    if (P1 <= 0 || C <= 0)
        return FN_OK;
    if (R <= 0) {
        for (int64_t i = 0; i < P1 * C; i++)
            g->sum_dy[i] = g->sum_dyxc[i] = 0.0;
        return FN_OK;
    }
    const int64_t rb = fn_col_rows_per_block(R, C);
    const int64_t nrb = (R + rb - 1) / rb, ncb = (C + FN_CB - 1) / FN_CB;
    const int64_t U = P1 * nrb * ncb;
    double *p1s = g->sum_dy, *p2s = g->sum_dyxc, *buf = NULL;
    CT *ca = NULL;
    if (dx) { /* the scale per entry, in CT */
        if (!(ca = (CT *)malloc((size_t)(P1 * C) * sizeof(CT))))
            return FN_ENOMEM;
        for (int64_t e = 0; e < P1 * C; e++)
            ca[e] = FN(narrow)(g->a[e]);
    }
    if (nrb > 1) { /* partials [o][row block][c] */
        buf = (double *)malloc((size_t)(2 * P1 * nrb * C) * sizeof(double));
        if (!buf) {
            free(ca);
            return FN_ENOMEM;
        }
        p1s = buf;
        p2s = buf + P1 * nrb * C;
    }
    const int nt = fn_eff_threads(P1 * R * C, U, n_threads);
    FN_PFOR(n_threads, nt, u, U, {
        const int64_t o = u / (nrb * ncb), rbi = (u / ncb) % nrb, cb = u % ncb;
        const int64_t r0 = rbi * rb, r1 = r0 + rb < R ? r0 + rb : R;
        const int64_t c0 = cb * FN_CB, w = c0 + FN_CB < C ? FN_CB : C - c0;
        double k[FN_CB];
        for (int64_t j = 0; j < w; j++)
            k[j] = g->centre ? g->centre[o * C + c0 + j] : 0.0;
        const int64_t at = (o * nrb + rbi) * C + c0;
        FN(grad_tile_sums)(x + o * s->xs[0] + c0 * s->xs[2], dy + o * s->ys[0] + c0 * s->ys[2],
                           dx ? dx + o * jb->dxs[0] + c0 * jb->dxs[2] : NULL, r0, r1, s->xs[1],
                           s->ys[1], jb->dxs[1], s->xs[2], s->ys[2], jb->dxs[2], w, k,
                           ca ? ca + o * C + c0 : NULL, p1s + at, p2s + at);
    });
    free(ca);
    if (buf) {
        FN_PFOR(n_threads, nt, i, P1 * C, {
            const int64_t o = i / C, c = i % C;
            double s1 = 0.0, s2 = 0.0;
            for (int64_t b = 0; b < nrb; b++) {
                s1 += p1s[(o * nrb + b) * C + c];
                s2 += p2s[(o * nrb + b) * C + c];
            }
            g->sum_dy[i] = s1;
            g->sum_dyxc[i] = s2;
        });
        free(buf);
    }
    return FN_OK;
}

/* Table entry grad_sums_cols. */
static int FN(grad_sums_cols)(const void *xv, const void *dyv, const fn_grad_col_job *jb,
                              int n_threads)
{
    return FN(grad_cols_impl)((const T *)xv, (const T *)dyv, NULL, jb, n_threads);
}

/* Table entry grad_eval_cols: grad_sums_cols and dx = a[e] dy (b = c = 0: statistics held
 * constant) in one pass over the data. */
static int FN(grad_eval_cols)(const void *xv, const void *dyv, void *dxv, const fn_grad_col_job *jb,
                              int n_threads)
{
    return FN(grad_cols_impl)((const T *)xv, (const T *)dyv, (T *)dxv, jb, n_threads);
}

/* dx[j] = a[j] * dy[j] + b[j] * (x[j] - mh[j]) + c[j] across one row of columns (b NULL: 0,
 * x unread) */
static FN_HOT void FN(grad_cols_run)(const T *x, const T *dy, T *dx, int64_t n, int64_t sx,
                                     int64_t sy, int64_t sd, const CT *mh, const CT *a,
                                     const CT *b, const CT *c)
{
    if (!b) {
        if (sy == 1 && sd == 1) {
            FN_OMP(simd)
            for (int64_t i = 0; i < n; i++)
                dx[i] = ST(a[i] * LD(dy[i]) + c[i]);
        } else {
            for (int64_t i = 0; i < n; i++)
                dx[i * sd] = ST(a[i] * LD(dy[i * sy]) + c[i]);
        }
    } else if (sx == 1 && sy == 1 && sd == 1) {
#if FN_GF32
        if (fn_simd_level() >= 2) {
            fn_gcols_f32_avx512(x, dy, dx, n, mh, a, b, c);
            return;
        }
#endif
        FN_OMP(simd)
        for (int64_t i = 0; i < n; i++)
            dx[i] = ST(a[i] * LD(dy[i]) + b[i] * (LD(x[i]) - mh[i]) + c[i]);
    } else {
        for (int64_t i = 0; i < n; i++)
            dx[i * sd] = ST(a[i] * LD(dy[i * sy]) + b[i] * (LD(x[i * sx]) - mh[i]) + c[i]);
    }
}

/* Table entry grad_apply_cols: the coefficients narrowed to CT once, then units of whole rows
 * of about FN_NCHUNK elements (as normalize_cols). */
static int FN(grad_apply_cols)(const void *xv, const void *dyv, void *dxv,
                               const fn_grad_col_job *jb, int n_threads)
{
    const T *x = (const T *)xv, *dy = (const T *)dyv;
    T *dx = (T *)dxv;
    const fn_cols *s = &jb->shape;
    const int64_t P1 = s->outer, R = s->rows, C = s->cols, E = P1 * C;
    if (P1 <= 0 || R <= 0 || C <= 0)
        return FN_OK;
    CT *cf = (CT *)malloc((size_t)(4 * E) * sizeof(CT));
    if (!cf)
        return FN_ENOMEM;
    CT *mh = cf, *a = cf + E, *b = cf + 2 * E, *c = cf + 3 * E;
    int any_b = 0; /* statistics held constant (b == 0 everywhere): x is not read */
    for (int64_t e = 0; e < E; e++) {
        FN(grad_coefs)(&jb->e, e, &mh[e], &a[e], &b[e], &c[e]);
        any_b |= b[e] != (CT)0;
    }
    const CT *bb = any_b ? b : NULL;
#if FN_GF32
    /* a dx past fn_stream_bytes_cols whose rows all start alike modulo 64 bytes: streaming
     * stores (the lines are not read before being overwritten; the same arithmetic, so the same
     * bits) */
    const int64_t sb = fn_stream_bytes_cols();
    const int nts = sb > 0 && E * R * (int64_t)sizeof(T) >= sb && C >= 64 &&
                    !((uintptr_t)dx % sizeof(T)) && (jb->dxs[0] * (int64_t)sizeof(T)) % 64 == 0 &&
                    (jb->dxs[1] * (int64_t)sizeof(T)) % 64 == 0;
#endif
    const int64_t rc = C >= FN_NCHUNK ? 1 : FN_NCHUNK / C; /* rows per unit */
    const int64_t nrc = (R + rc - 1) / rc, U = P1 * nrc;
    const int nt = fn_eff_threads(P1 * R * C, U, n_threads);
    FN_PFOR(n_threads, nt, u, U, {
        const int64_t o = u / nrc, r0 = (u % nrc) * rc, r1 = r0 + rc < R ? r0 + rc : R;
        const int64_t k = o * C;
        int64_t r = r0;
#if FN_GF32
        if (bb && s->xs[2] == 1 && s->ys[2] == 1 && jb->dxs[2] == 1 && fn_simd_level() >= 2) {
            fn_gcols_rows_f32_avx512(x + o * s->xs[0] + r0 * s->xs[1],
                                     dy + o * s->ys[0] + r0 * s->ys[1],
                                     dx + o * jb->dxs[0] + r0 * jb->dxs[1], r1 - r0, s->xs[1],
                                     s->ys[1], jb->dxs[1], C, mh + k, a + k, bb + k, c + k, nts);
            r = r1;
        }
#endif
        for (; r < r1; r++)
            FN(grad_cols_run)(x + o * s->xs[0] + r * s->xs[1], dy + o * s->ys[0] + r * s->ys[1],
                              dx + o * jb->dxs[0] + r * jb->dxs[1], C, s->xs[2], s->ys[2],
                              jb->dxs[2], mh + k, a + k, bb ? bb + k : NULL, c + k);
    });
    free(cf);
    return FN_OK;
}

/* The dx coefficients (in CT) of entries o * cols + [0, n) from their sums, as
 * _backward.pyx forms them for grad_apply_cols (A = 0 + w s1, B = 0 + w s2; grad_coefs'
 * narrowing): the same bits. The double terms first, in a loop the compiler vectorizes (its
 * divisions are most of the cost; cloned per ISA: BatchNorm (4, 1024) 14.4 -> 11.4 us a call),
 * then the narrowing. */
static FN_HOT void FN(gcols_coefs)(const fn_grad_col_job *jb, int64_t o, int64_t n,
                                   const double *s1, const double *s2, double M, CT *mh, CT *a,
                                   CT *b, CT *c)
{
    const double *r = jb->rstd + o * jb->shape.cols, *k = jb->mean + o * jb->shape.cols;
    const double *w = jb->weight;
    double tb[256], tc[256];
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        const int64_t m = n - i0 < 256 ? n - i0 : 256;
        if (w) {
            for (int64_t i = 0; i < m; i++) {
                const double ri = r[i0 + i];
                tb[i] = -ri * ri * ri * (0.0 + w[i0 + i] * s2[i0 + i]) / M;
                tc[i] = -ri * (0.0 + w[i0 + i] * s1[i0 + i]) / M;
            }
        } else {
            for (int64_t i = 0; i < m; i++) {
                const double ri = r[i0 + i];
                tb[i] = -ri * ri * ri * (0.0 + s2[i0 + i]) / M;
                tc[i] = -ri * (0.0 + s1[i0 + i]) / M;
            }
        }
        /* a's weight outside the loop: inside, GCC read w with masked loads even when it is
         * NULL, which AMD Zen 4 serves slowly (coefs_run, fn_kernels_impl.h) */
        if (w)
            for (int64_t i = 0; i < m; i++)
                a[i0 + i] = FN(narrow)(r[i0 + i] * w[i0 + i]);
        else
            for (int64_t i = 0; i < m; i++)
                a[i0 + i] = FN(narrow)(r[i0 + i]);
        for (int64_t i = 0; i < m; i++) {
            const int64_t q = i0 + i;
            const CT mq = FN(narrow)(k[q]);
            mh[q] = mq;
            b[q] = FN(narrow)(tb[i]);
            c[q] = FN(narrow)(tc[i] + (tb[i] != 0.0 ? tb[i] * ((double)mq - k[q]) : 0.0));
        }
    }
}

/* dx over rows [r0, r1) of w columns, (x, dy, dx) at the columns' origin */
static inline void FN(gcols_apply_rows)(const T *x, const T *dy, T *dx, const fn_grad_col_job *jb,
                                        int64_t r0, int64_t r1, int64_t w, const CT *mh,
                                        const CT *a, const CT *b, const CT *c, int nts)
{
    const fn_cols *s = &jb->shape;
#if FN_GF32
    if (s->xs[2] == 1 && s->ys[2] == 1 && jb->dxs[2] == 1 && fn_simd_level() >= 2) {
        fn_gcols_rows_f32_avx512(x + r0 * s->xs[1], dy + r0 * s->ys[1], dx + r0 * jb->dxs[1],
                                 r1 - r0, s->xs[1], s->ys[1], jb->dxs[1], w, mh, a, b, c, nts);
        return;
    }
#endif
    for (int64_t r = r0; r < r1; r++)
        FN(grad_cols_run)(x + r * s->xs[1], dy + r * s->ys[1], dx + r * jb->dxs[1], w, s->xs[2],
                          s->ys[2], jb->dxs[2], mh, a, b, c);
}

/* Table entry grad_cols (see fn_grad_col_job). The sums are grad_cols_impl's (its row blocks,
 * merged in the same order) and the coefficients those _backward.pyx forms for grad_apply_cols,
 * so the bits are those of grad_sums_cols + grad_apply_cols, except where every b is 0
 * (grad_apply_cols then skips x and rounds a dy + c twice). Slabs (one outer index, every row
 * and at most FN_CB columns, so whole rows when they are contiguous) that fit in cache, enough
 * of them to share out, are done whole by one thread: sums, then dx while the slab is cached
 * (IN channels-last (32, 64, 56, 56), 1 thread: 3.2 ms vs 4.0 ms in two passes). Otherwise two
 * passes: the sums per row block, then dx per row block, the same blocks going to the same
 * threads. A column window of rows a page apart gets only its share of the L2's sets, so
 * narrower slabs of long rows do not stay cached (BatchNorm (256, 1024): 1024 / 512 / 128
 * columns all slower than two passes). */
static int FN(grad_cols)(const void *xv, const void *dyv, void *dxv, const fn_grad_col_job *jb,
                         int n_threads)
{
    const T *x = (const T *)xv, *dy = (const T *)dyv;
    T *dx = (T *)dxv;
    const fn_cols *s = &jb->shape;
    const int64_t P1 = s->outer, R = s->rows, C = s->cols, E = P1 * C;
    double *S1 = jb->e.sum_dy, *S2 = jb->e.sum_dyxc;
    if (!jb->mean || !jb->rstd || !S1 || !S2 || !dx)
        return FN_EINVAL;
    if (P1 <= 0 || C <= 0)
        return FN_OK;
    if (R <= 0) {
        for (int64_t i = 0; i < E; i++)
            S1[i] = S2[i] = 0.0;
        return FN_OK;
    }
    const int64_t rb = fn_col_rows_per_block(R, C), nrb = (R + rb - 1) / rb;
    const double M = (double)R;
    /* the row blocks' sums as grad_cols_impl adds them: one block as it is (-0.0 + v is v),
     * else the blocks added to 0 in order */
    const double z = nrb > 1 ? 0.0 : -0.0;
    const int ntf = fn_eff_threads(E * R, P1, n_threads);
    if (C <= FN_CB && P1 >= 2 * ntf && 2 * R * C * (int64_t)sizeof(T) <= fn_fuse_bytes(ntf)) {
        FN_PFOR(n_threads, ntf, o, P1, {
            double s1[FN_CB], s2[FN_CB], t1[FN_CB], t2[FN_CB];
            CT mh[FN_CB], a[FN_CB], b[FN_CB], c[FN_CB];
            const T *xo = x + o * s->xs[0], *dyo = dy + o * s->ys[0];
            const double *k = jb->mean + o * C;
            for (int64_t bi = 0; bi < nrb; bi++) {
                const int64_t r0 = bi * rb, r1 = r0 + rb < R ? r0 + rb : R;
                FN(grad_tile_sums)(xo, dyo, NULL, r0, r1, s->xs[1], s->ys[1], 0, s->xs[2],
                                   s->ys[2], 0, C, k, NULL, t1, t2);
                fn_add_block(C, bi == 0, z, t1, t2, s1, s2);
            }
            for (int64_t j = 0; j < C; j++) {
                S1[o * C + j] = s1[j];
                S2[o * C + j] = s2[j];
            }
            FN(gcols_coefs)(jb, o, C, s1, s2, M, mh, a, b, c);
            FN(gcols_apply_rows)(xo, dyo, dx + o * jb->dxs[0], jb, 0, R, C, mh, a, b, c, 0);
        });
        return FN_OK;
    }
    const int64_t ncb = (C + FN_CB - 1) / FN_CB, U = P1 * nrb * ncb;
    double *buf = (double *)malloc((size_t)(2 * E * nrb) * sizeof(double));
    CT *cf = (CT *)malloc((size_t)(4 * E) * sizeof(CT));
    if (!buf || !cf) {
        free(buf);
        free(cf);
        return FN_ENOMEM;
    }
    double *p1s = buf, *p2s = buf + E * nrb; /* partials [o][row block][c] */
    const int nt = fn_eff_threads(E * R, U, n_threads);
    FN_PFOR(n_threads, nt, u, U, {
        const int64_t o = u / (nrb * ncb), rbi = (u / ncb) % nrb, cb = u % ncb;
        const int64_t r0 = rbi * rb, r1 = r0 + rb < R ? r0 + rb : R;
        const int64_t c0 = cb * FN_CB, w = c0 + FN_CB < C ? FN_CB : C - c0;
        const int64_t at = (o * nrb + rbi) * C + c0;
        FN(grad_tile_sums)(x + o * s->xs[0] + c0 * s->xs[2], dy + o * s->ys[0] + c0 * s->ys[2],
                           NULL, r0, r1, s->xs[1], s->ys[1], 0, s->xs[2], s->ys[2], 0, w,
                           jb->mean + o * C + c0, NULL, p1s + at, p2s + at);
    });
    CT *mh = cf, *a = cf + E, *b = cf + 2 * E, *c = cf + 3 * E;
    for (int64_t o = 0; o < P1; o++) {
        double *t1 = S1 + o * C, *t2 = S2 + o * C;
        for (int64_t bi = 0; bi < nrb; bi++)
            fn_add_block(C, bi == 0, z, p1s + (o * nrb + bi) * C, p2s + (o * nrb + bi) * C, t1,
                         t2);
        FN(gcols_coefs)(jb, o, C, t1, t2, M, mh + o * C, a + o * C, b + o * C, c + o * C);
    }
    /* dx with streaming stores where x, dy and dx together overflow the last-level cache
     * (fn_stream_bytes_backward, the whole cache): dx's lines are not read first, and they do not
     * push out the x and dy this pass reads (BatchNorm training, channels-last, 1 thread: (32, 256, 28, 28)
     * 1.24x, (8, 512, 28, 28) 1.2x, (16, 1024, 14, 14) 1.1x faster; rows of at least 256
     * channels: (64, 128, 28, 28) level, (32, 64, 56, 56) 1.5x slower streamed; from 3/4 of
     * the cache, GroupNorm's dx pass (4, 512, 32, 32) was 1.2x slower). The same bits. */
    const int64_t sb = fn_stream_bytes_backward();
    const int nts = FN_GF32 && sb > 0 && C >= 256 &&
                    3 * E * R * (int64_t)sizeof(T) > sb && !((uintptr_t)dx % sizeof(T)) &&
                    (jb->dxs[0] * (int64_t)sizeof(T)) % 64 == 0 &&
                    (jb->dxs[1] * (int64_t)sizeof(T)) % 64 == 0;
    const int64_t Ua = P1 * nrb; /* the row blocks again: with ncb == 1, each to the thread that
                                  * summed it (a static schedule over as many units) */
    const int nta = fn_eff_threads(E * R, Ua, n_threads);
    FN_PFOR(n_threads, nta, u, Ua, {
        const int64_t o = u / nrb, r0 = (u % nrb) * rb, r1 = r0 + rb < R ? r0 + rb : R;
        FN(gcols_apply_rows)(x + o * s->xs[0], dy + o * s->ys[0], dx + o * jb->dxs[0], jb, r0, r1,
                             C, mh + o * C, a + o * C, b + o * C, c + o * C, nts);
    });
    free(buf);
    free(cf);
    return FN_OK;
}

/* A = sum(w dy), B = sum(w dy (x - mean)) of group g from its entries' sums, in entry order. */
static inline void FN(grad_group_ab)(const fn_grad_row_job *jb, int64_t g, double *A, double *B)
{
    const int64_t Q = jb->shape.rows, p2 = g % jb->shape.groups;
    double a = 0.0, b = 0.0;
    for (int64_t q = 0; q < Q; q++) {
        const double w = jb->weight ? jb->weight[p2 * jb->group_step + q * jb->row_step] : 1.0;
        a += w * jb->e.sum_dy[g * Q + q];
        b += w * jb->e.sum_dyxc[g * Q + q];
    }
    *A = a;
    *B = b;
}

/* dx over rows [q0, q1), elements [l0, l1) of group g (see fn_grad_row_job). */
static inline void FN(grad_group_apply)(const T *x, const T *dy, T *dx, const fn_grad_row_job *jb,
                                        int64_t g, double A, double B, int64_t q0, int64_t q1,
                                        int64_t l0, int64_t l1, int fetch_next)
{
    const fn_rows *s = &jb->shape;
    const double M = (double)(s->rows * s->row_len), mu = jb->mean[g], r = jb->rstd[g];
    const double b = jb->train ? -r * r * r * B / M : 0.0, c = jb->train ? -r * A / M : 0.0;
    const CT mh = FN(narrow)(mu), bt = FN(narrow)(b);
    const CT ct = FN(narrow)(c + (b != 0.0 ? b * ((double)mh - mu) : 0.0));
    const int64_t p2 = g % s->groups;
    for (int64_t q = q0; q < q1; q++) {
        const int64_t e = g * s->rows + q;
        const double w = jb->weight ? jb->weight[p2 * jb->group_step + q * jb->row_step] : 1.0;
#if FN_GF32
        /* fetch_next: the next group's row q fetched meanwhile (grad_rows' in-cache path reads
         * groups whose short rows lie apart, which the hardware prefetcher finds late) */
        if (fetch_next && s->xs[3] == 1 && s->ys[3] == 1 && jb->dxs[3] == 1 &&
            fn_simd_level() >= 2) {
            const int64_t en = e + s->rows < s->outer * s->groups * s->rows ? e + s->rows : e;
            fn_gapply_f32_avx512(x + FN(grad_row_at)(s, s->xs, e) + l0,
                                 dy + FN(grad_row_at)(s, s->ys, e) + l0,
                                 dx + FN(grad_row_at)(s, jb->dxs, e) + l0, l1 - l0, mh,
                                 FN(narrow)(r * w), bt, ct, x + FN(grad_row_at)(s, s->xs, en) + l0,
                                 dy + FN(grad_row_at)(s, s->ys, en) + l0);
            continue;
        }
#else
        (void)fetch_next;
#endif
        FN(grad_run_apply)(x + FN(grad_row_at)(s, s->xs, e) + l0 * s->xs[3],
                           dy + FN(grad_row_at)(s, s->ys, e) + l0 * s->ys[3],
                           dx + FN(grad_row_at)(s, jb->dxs, e) + l0 * jb->dxs[3], l1 - l0,
                           s->xs[3], s->ys[3], jb->dxs[3], mh, FN(narrow)(r * w), bt, ct);
    }
}

/* grad_rows with the statistics held constant (eval mode): dx = r w dy needs no sums, so each
 * block is summed and scaled in one pass. The blocks and their merge are grad_sums_impl's. */
static int FN(grad_rows_eval)(const T *x, const T *dy, T *dx, const fn_grad_row_job *jb,
                              int n_threads)
{
    const fn_rows *s = &jb->shape;
    const int64_t Q = s->rows, E = s->outer * s->groups * Q, L = s->row_len;
    double *S1 = jb->e.sum_dy, *S2 = jb->e.sum_dyxc;
    const int64_t cpl = (L + FN_BLOCK - 1) / FN_BLOCK; /* chunks per row */
    const int64_t rpu = cpl == 1 ? FN_BLOCK / L : 1;   /* rows per unit */
    const int64_t U = cpl == 1 ? (E + rpu - 1) / rpu : E * cpl;
    double *part = NULL;
    if (cpl > 1 && !(part = (double *)malloc((size_t)(2 * U) * sizeof(double))))
        return FN_ENOMEM;
    const int nt = fn_eff_threads(E * L, U, n_threads);
    FN_PFOR(n_threads, nt, u, U, {
        const int64_t e0 = cpl == 1 ? u * rpu : u / cpl;
        const int64_t e1 = cpl == 1 ? (e0 + rpu < E ? e0 + rpu : E) : e0 + 1;
        const int64_t l0 = cpl == 1 ? 0 : (u % cpl) * FN_BLOCK;
        const int64_t n = l0 + FN_BLOCK < L ? FN_BLOCK : L - l0;
        for (int64_t e = e0; e < e1; e++) {
            const int64_t g = e / Q, q = e % Q;
            const double w =
                jb->weight ? jb->weight[(g % s->groups) * jb->group_step + q * jb->row_step] : 1.0;
            double t1, t2;
            FN(grad_run_sums_scale)(x + FN(grad_row_at)(s, s->xs, e) + l0 * s->xs[3],
                                    dy + FN(grad_row_at)(s, s->ys, e) + l0 * s->ys[3],
                                    dx + FN(grad_row_at)(s, jb->dxs, e) + l0 * jb->dxs[3], n,
                                    s->xs[3], s->ys[3], jb->dxs[3], jb->mean[g],
                                    FN(narrow)(jb->rstd[g] * w), &t1, &t2);
            if (part) {
                part[u] = t1;
                part[U + u] = t2;
            } else { /* as grad_row_total: the chunks added to 0 */
                S1[e] = 0.0 + t1;
                S2[e] = 0.0 + t2;
            }
        }
    });
    if (part) {
        fn_merge_chunks(part, E, cpl, U, S1, S2);
        free(part);
    }
    return FN_OK;
}

/* Table entry grad_rows (see fn_grad_row_job). Groups that fit in cache, enough of them to
 * share out, are done whole by one thread: sums, then dx while the group is still in cache.
 * Others: block-parallel sums, the groups' A and B, then a parallel pass for dx. The same
 * additions either way: the same bits. */
static int FN(grad_rows)(const void *xv, const void *dyv, void *dxv, const fn_grad_row_job *jb,
                         int n_threads)
{
    const T *x = (const T *)xv, *dy = (const T *)dyv;
    T *dx = (T *)dxv;
    const fn_rows *s = &jb->shape;
    const int64_t P = s->outer * s->groups, Q = s->rows, L = s->row_len;
    double *S1 = jb->e.sum_dy, *S2 = jb->e.sum_dyxc;
    if (!jb->mean || !jb->rstd || !S1 || !S2)
        return FN_EINVAL;
    if (P <= 0 || Q <= 0 || L <= 0 || !dx)
        return FN(grad_sums_impl)(x, dy, s, NULL, jb->mean, S1, S2, n_threads);
    if (!jb->train)
        return FN(grad_rows_eval)(x, dy, dx, jb, n_threads);
    const int nt = fn_eff_threads(P * Q * L, P, n_threads);
    if (2 * Q * L * (int64_t)sizeof(T) <= fn_fuse_bytes(nt) && (nt == 1 || P >= 4 * nt)) {
        FN_PFOR(n_threads, nt, g, P, {
            double A, B;
            for (int64_t q = 0; q < Q; q++)
                FN(grad_row_total)(x, dy, s, g * Q + q, jb->mean[g], &S1[g * Q + q],
                                   &S2[g * Q + q]);
            FN(grad_group_ab)(jb, g, &A, &B);
            FN(grad_group_apply)(x, dy, dx, jb, g, A, B, 0, Q, 0, L, 1);
        });
        return FN_OK;
    }
    const int rc = FN(grad_sums_impl)(x, dy, s, NULL, jb->mean, S1, S2, n_threads);
    if (rc != FN_OK)
        return rc;
    double *ab = (double *)malloc((size_t)(2 * P) * sizeof(double));
    if (!ab)
        return FN_ENOMEM;
    for (int64_t g = 0; g < P; g++)
        FN(grad_group_ab)(jb, g, &ab[g], &ab[P + g]);
    int64_t cpl, rpu;
    const int64_t E = P * Q, U = FN(grad_units)(E, L, &cpl, &rpu);
    const int nta = fn_eff_threads(E * L, U, n_threads);
    FN_PFOR(n_threads, nta, u, U, {
        int64_t e0, e1, l0, l1;
        FN(grad_unit)(u, E, L, cpl, rpu, &e0, &e1, &l0, &l1);
        for (int64_t e = e0; e < e1; e++)
            FN(grad_group_apply)(x, dy, dx, jb, e / Q, ab[e / Q], ab[P + e / Q], e % Q,
                                 e % Q + 1, l0, l1, 0);
    });
    free(ab);
    return FN_OK;
}

/* dx = (r w) dy + b (x - mh) + c over one row (dx NULL: not written), and this row's share of
 * dweight and dbias into the CT partials fw[l] += dy xhat, fb[l] += dy (fw NULL: not wanted),
 * with xhat = (x - mh) r + xc: the mean's remainder below CT's precision is in xc. */
static FN_HOT void FN(grad_layer_apply)(const T *x, const T *dy, T *dx, int64_t n, int64_t sx,
                                        int64_t sy, int64_t sd, const CT *w, CT r, CT mh, CT b,
                                        CT c, CT xc, CT *fw, CT *fb)
{
    if (sx == 1 && sy == 1 && sd == 1 && dx && fw) {
        FN_OMP(simd)
        for (int64_t i = 0; i < n; i++) {
            const CT d = LD(dy[i]), v = LD(x[i]) - mh;
            dx[i] = ST((r * w[i]) * d + b * v + c);
            fw[i] += d * (v * r + xc);
            fb[i] += d;
        }
    } else if (sx == 1 && sy == 1 && sd == 1 && dx) {
        FN_OMP(simd)
        for (int64_t i = 0; i < n; i++)
            dx[i] = ST((r * w[i]) * LD(dy[i]) + b * (LD(x[i]) - mh) + c);
    } else if (sx == 1 && sy == 1 && !dx) {
        FN_OMP(simd)
        for (int64_t i = 0; i < n; i++) {
            const CT d = LD(dy[i]);
            fw[i] += d * ((LD(x[i]) - mh) * r + xc);
            fb[i] += d;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            const CT d = LD(dy[i * sy]), v = LD(x[i * sx]) - mh;
            if (dx)
                dx[i * sd] = ST((r * w[i]) * d + b * v + c);
            if (fw) {
                fw[i] += d * (v * r + xc);
                fb[i] += d;
            }
        }
    }
}

/* Rows whose dweight/dbias shares are summed in CT before being added to the double partials:
 * a short sum in the compute type, fixed by the shape (float32: ~1e-6 relative). */
#define FN_LAYER_FLUSH 16

/* cw[l] += fw[l], cb[l] += fb[l] in double, then fw = fb = 0 */
static inline void FN(grad_layer_flush)(CT *fw, CT *fb, double *cw, double *cb, int64_t n)
{
#if FN_GF32
    if (fn_simd_level() >= 2) {
        fn_glayer_flush_f32_avx512(fw, fb, cw, cb, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        cw[i] += (double)fw[i];
        cb[i] += (double)fb[i];
        fw[i] = fb[i] = (CT)0;
    }
}

/* Groups per unit of work in grad_layer: at most FN_LAYER_UNITS units, so that the per-unit
 * dweight/dbias partials stay small; fixed by the shape, so the merge order is too. */
#ifndef FN_LAYER_UNITS
#define FN_LAYER_UNITS 64
#endif

/* A row's dx / dweight coefficients from its sums s1 = sum(w dy), s2 = sum(w dy (x - m)):
 * cf = {r, mh, b, c, xc} in CT (see grad_layer_apply). */
static inline void FN(grad_layer_coefs)(double s1, double s2, double m, double r, double M,
                                        int has_mean, CT cf[5])
{
    const double b = -r * r * r * s2 / M, c0 = has_mean ? -r * s1 / M : 0.0;
    const CT mh = FN(narrow)(m);
    cf[0] = FN(narrow)(r);
    cf[1] = mh;
    cf[2] = FN(narrow)(b);
    cf[3] = FN(narrow)(c0 + b * ((double)mh - m));
    cf[4] = FN(narrow)(((double)mh - m) * r);
}

#if FN_GF32
/* Groups [g0, g1) of grad_layer for float32 groups of one contiguous row (LayerNorm, RMSNorm)
 * on AVX-512: rows in pairs, both summed, then one dx / dweight pass over the two (the same
 * operations in the same order as one row at a time, so the same bits). fw (NULL: no
 * dweight/dbias) flushed into cw, cb every FN_LAYER_FLUSH rows as grad_layer does. */
static void FN(grad_layer_pairs)(const float *x, const float *dy, float *dx,
                                 const fn_grad_layer_job *jb, const float *w, int64_t g0,
                                 int64_t g1, double M, float *fw, float *fb, double *cw,
                                 double *cb)
{
    const fn_rows *s = &jb->shape;
    const int64_t L = s->row_len, G = s->groups, P_ = s->outer * s->groups;
#define FN_ROW(base, st, g) ((base) + ((g) / G) * (st)[0] + ((g) % G) * (st)[1])
    int64_t rows = 0;
    for (int64_t g = g0; g < g1;) {
        const int k = g + 1 < g1 ? 2 : 1;
        float cf[2][5];
        for (int j = 0; j < k; j++) {
            const double m = jb->mean ? jb->mean[g + j] : 0.0;
            double t1 = 0.0, t2 = 0.0;
            if (fn_fcentre(m))
                fn_gsums_w_f32_avx512(FN_ROW(x, s->xs, g + j), FN_ROW(dy, s->ys, g + j), w, L, m,
                                      &t1, &t2);
            else { /* as grad_layer: the double loop */
                double *wd = NULL; /* grad_run_sums_w wants the weights in double */
                double wbuf[256];
                t1 = t2 = 0.0;
                for (int64_t l0 = 0; l0 < L; l0 += 256) {
                    const int64_t n = L - l0 < 256 ? L - l0 : 256;
                    for (int64_t l = 0; l < n; l++)
                        wbuf[l] = (double)w[l0 + l];
                    wd = wbuf;
                    double u1 = 0.0, u2 = 0.0;
                    FN(grad_run_sums_w)(FN_ROW(x, s->xs, g + j) + l0, FN_ROW(dy, s->ys, g + j) + l0,
                                        wd, n, 1, 1, m, &u1, &u2);
                    t1 += u1;
                    t2 += u2;
                }
            }
            FN(grad_layer_coefs)(t1, t2, m, jb->rstd[g + j], M, jb->mean != NULL, cf[j]);
        }
        if (!dx && !fw) {
            g += k;
            continue;
        }
        const float *x0 = FN_ROW(x, s->xs, g), *d0 = FN_ROW(dy, s->ys, g);
        float *o0 = dx ? FN_ROW(dx, jb->dxs, g) : NULL;
        if (k == 2) {
            /* FN_LAYER_AHEAD rows on: on 768-float rows, 6 ahead measured ~12% faster than 2 */
            const int64_t ah = FN_LAYER_AHEAD;
            const int64_t gn = g + ah < P_ ? g + ah : g, gm = g + ah + 1 < P_ ? g + ah + 1 : g;
            const float *px[2] = {FN_ROW(x, s->xs, gn), FN_ROW(x, s->xs, gm)};
            const float *py[2] = {FN_ROW(dy, s->ys, gn), FN_ROW(dy, s->ys, gm)};
            fn_glayer_apply2_f32_avx512(x0, d0, o0, FN_ROW(x, s->xs, g + 1),
                                        FN_ROW(dy, s->ys, g + 1),
                                        dx ? FN_ROW(dx, jb->dxs, g + 1) : NULL, L, w, cf[0],
                                        cf[1], fw, fb, px, py);
        } else {
            fn_glayer_apply_f32_avx512(x0, d0, o0, L, w, cf[0][0], cf[0][1], cf[0][2], cf[0][3],
                                       cf[0][4], fw, fb, x0, d0);
        }
        for (int j = 0; j < k; j++)
            if (fw && ++rows % FN_LAYER_FLUSH == 0)
                FN(grad_layer_flush)(fw, fb, cw, cb, L);
        g += k;
    }
#undef FN_ROW
}
#endif

/* Table entry grad_layer (see fn_grad_layer_job). With statistics m = mean, r = rstd over the
 * M elements of a group, A = sum(w dy), B = sum(w dy (x - m)):
 *   dx = r w dy - r A / M - r^3 B (x - m) / M   (RMSNorm: m = 0 and no A term). */
static int FN(grad_layer)(const void *xv, const void *dyv, void *dxv, const fn_grad_layer_job *jb,
                          int n_threads)
{
    const T *x = (const T *)xv, *dy = (const T *)dyv;
    T *dx = (T *)dxv;
    const fn_rows *s = &jb->shape;
    const CT *w = (const CT *)jb->weight;
    const int64_t P = s->outer * s->groups, Q = s->rows, L = s->row_len;
    const int want_cols = jb->dweight != NULL || jb->dbias != NULL;
    if (!w || !jb->rstd)
        return FN_EINVAL;
    if (want_cols) {
        for (int64_t l = 0; l < L; l++) {
            if (jb->dweight)
                jb->dweight[l] = 0.0;
            if (jb->dbias)
                jb->dbias[l] = 0.0;
        }
    }
    if (P <= 0 || Q <= 0 || L <= 0)
        return FN_OK;
    const int64_t gpu0 = (P + FN_LAYER_UNITS - 1) / FN_LAYER_UNITS;
    const int64_t U = (P + gpu0 - 1) / gpu0;
    double *part = NULL;
    CT *fpart = NULL;
    if (want_cols) {
        /* zeroed by their units (calloc would fault in and clear fresh pages on every call) */
        part = (double *)malloc((size_t)(2 * U * L) * sizeof(double));
        fpart = (CT *)malloc((size_t)(2 * U * L) * sizeof(CT));
        if (!part || !fpart) {
            free(part);
            free(fpart);
            return FN_ENOMEM;
        }
    }
    double *wd = (double *)malloc((size_t)L * sizeof(double)); /* the weights in double */
    if (!wd) {
        free(part);
        free(fpart);
        return FN_ENOMEM;
    }
    for (int64_t l = 0; l < L; l++)
        wd[l] = (double)w[l];
    const double M = (double)(Q * L);
    const int nt = fn_eff_threads(P * Q * L, U, n_threads);
    FN_PFOR(n_threads, nt, u, U, {
        double *cw = part ? part + u * L : NULL, *cb = part ? part + (U + u) * L : NULL;
        CT *fw = fpart ? fpart + u * L : NULL, *fb = fpart ? fpart + (U + u) * L : NULL;
        if (part) {
            memset(cw, 0, (size_t)L * sizeof(double));
            memset(cb, 0, (size_t)L * sizeof(double));
            memset(fw, 0, (size_t)L * sizeof(CT));
            memset(fb, 0, (size_t)L * sizeof(CT));
        }
        const int64_t g1 = (u + 1) * gpu0 < P ? (u + 1) * gpu0 : P;
        int64_t rows = 0;
#if FN_GF32
        /* float32, contiguous rows: the float-lane loops */
        const int fl = s->xs[3] == 1 && s->ys[3] == 1 && (!dx || jb->dxs[3] == 1) &&
                       fn_simd_level() >= 2;
#else
        const int fl = 0;
#endif
#if FN_GF32
        if (fl && Q == 1)
            FN(grad_layer_pairs)(x, dy, dx, jb, w, u * gpu0, g1, M, fw, fb, cw, cb);
        else
#endif
        for (int64_t g = u * gpu0; g < g1; g++) {
            const int64_t o = g / s->groups, p2 = g % s->groups;
            const T *xg = x + o * s->xs[0] + p2 * s->xs[1];
            const T *dg = dy + o * s->ys[0] + p2 * s->ys[1];
            /* the next group's first row (fn_glayer_apply_f32_avx512 fetches it) */
            const int64_t on = (g + 1) / s->groups, pn = (g + 1) % s->groups;
            const T *xn = x + on * s->xs[0] + pn * s->xs[1], *dn = dy + on * s->ys[0] + pn * s->ys[1];
            (void)xn;
            (void)dn;
            const double m = jb->mean ? jb->mean[g] : 0.0, r = jb->rstd[g];
            double s1 = 0.0, s2 = 0.0;
            const int flg = fl && fn_fcentre(m);
            (void)flg;
            for (int64_t q = 0; q < Q; q++) {
#if FN_GF32
                if (flg) {
                    double t1, t2;
                    fn_gsums_w_f32_avx512(xg + q * s->xs[2], dg + q * s->ys[2], w, L, m, &t1, &t2);
                    s1 += t1;
                    s2 += t2;
                    continue;
                }
#endif
                FN(grad_run_sums_w)(xg + q * s->xs[2], dg + q * s->ys[2], wd, L, s->xs[3],
                                    s->ys[3], m, &s1, &s2);
            }
            const double b = -r * r * r * s2 / M, c0 = jb->mean ? -r * s1 / M : 0.0;
            const CT mh = FN(narrow)(m);
            const CT cc = FN(narrow)(c0 + b * ((double)mh - m));
            const CT xc = FN(narrow)(((double)mh - m) * r);
            T *xd = dx ? dx + o * jb->dxs[0] + p2 * jb->dxs[1] : NULL;
            for (int64_t q = 0; (xd || fw) && q < Q; q++) {
#if FN_GF32
                if (flg)
                    fn_glayer_apply_f32_avx512(xg + q * s->xs[2], dg + q * s->ys[2],
                                               xd ? xd + q * jb->dxs[2] : NULL, L, w,
                                               FN(narrow)(r), mh, FN(narrow)(b), cc, xc, fw, fb,
                                               q + 1 < Q ? xg + (q + 1) * s->xs[2] : xn,
                                               q + 1 < Q ? dg + (q + 1) * s->ys[2] : dn);
                else
#endif
                    FN(grad_layer_apply)(xg + q * s->xs[2], dg + q * s->ys[2],
                                         xd ? xd + q * jb->dxs[2] : NULL, L, s->xs[3], s->ys[3],
                                         jb->dxs[3], w, FN(narrow)(r), mh, FN(narrow)(b), cc, xc,
                                         fw, fb);
                if (fw && ++rows % FN_LAYER_FLUSH == 0)
                    FN(grad_layer_flush)(fw, fb, cw, cb, L);
            }
        }
        if (fw)
            FN(grad_layer_flush)(fw, fb, cw, cb, L);
    });
    if (part) { /* each column adds the units' partials to 0 in unit order, columns in blocks */
        const int64_t NB = (L + 1023) / 1024;
        const int ntm = fn_eff_threads(U * L, NB, n_threads);
        FN_PFOR(n_threads, ntm, bl, NB, {
            const int64_t l0 = bl * 1024, l1 = l0 + 1024 < L ? l0 + 1024 : L;
            for (int64_t u = 0; u < U; u++) {
                const double *p1 = part + u * L, *p2 = part + (U + u) * L;
                if (jb->dweight)
                    for (int64_t l = l0; l < l1; l++)
                        jb->dweight[l] += p1[l];
                if (jb->dbias)
                    for (int64_t l = l0; l < l1; l++)
                        jb->dbias[l] += p2[l];
            }
        });
        free(part);
        free(fpart);
    }
    free(wd);
    return FN_OK;
}

#undef FN_GF32
#ifdef FN_F32LANES
#undef FN_F32LANES
#endif
