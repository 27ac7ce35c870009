/* The backward's SIMD sums at one vector width, compiled for each instruction set from this
 * one body: fn_backward_impl.h defines the parameters below and includes this file once per ISA
 * (and per element type T); the file consumes (undefines) them. Not a public header.
 *
 *   GISA          name suffix (avx2, avx512)      GFUNC    the functions' attributes
 *   GV, GVW       a vector of doubles, its lanes  GLOADT   GVW elements of T widened to double
 *   GZERO, GSET1, GSUB, GADD, GMUL, GFMA, GLOADD, GHSUM: the double operations */

#define GN(name) FN(FN_CAT(name, GISA))

/* sum(w dy), sum(w dy (x - k)) over the first 4 * GVW * floor(n / (4 * GVW)) contiguous
 * elements, w in double, with four accumulator pairs (independent dependency chains) added in a
 * fixed order. Returns the elements consumed. */
GFUNC int64_t GN(grad_sums_w)(const T *x, const T *dy, const double *w, int64_t n, double k,
                              double *t1, double *t2)
{
    const GV kv = GSET1(k);
    GV a0 = GZERO(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t i = 0;
    for (; i + 4 * GVW <= n; i += 4 * GVW) {
        const GV w0 = GMUL(GLOADD(w + i), GLOADT(dy + i));
        const GV w1 = GMUL(GLOADD(w + i + GVW), GLOADT(dy + i + GVW));
        const GV w2 = GMUL(GLOADD(w + i + 2 * GVW), GLOADT(dy + i + 2 * GVW));
        const GV w3 = GMUL(GLOADD(w + i + 3 * GVW), GLOADT(dy + i + 3 * GVW));
        a0 = GADD(a0, w0);
        a1 = GADD(a1, w1);
        a2 = GADD(a2, w2);
        a3 = GADD(a3, w3);
        b0 = GFMA(w0, GSUB(GLOADT(x + i), kv), b0);
        b1 = GFMA(w1, GSUB(GLOADT(x + i + GVW), kv), b1);
        b2 = GFMA(w2, GSUB(GLOADT(x + i + 2 * GVW), kv), b2);
        b3 = GFMA(w3, GSUB(GLOADT(x + i + 3 * GVW), kv), b3);
    }
    *t1 = GHSUM(GADD(GADD(a0, a1), GADD(a2, a3)));
    *t2 = GHSUM(GADD(GADD(b0, b1), GADD(b2, b3)));
    return i;
}

#undef GN
#undef GISA
#undef GFUNC
#undef GV
#undef GVW
#undef GZERO
#undef GSET1
#undef GSUB
#undef GADD
#undef GMUL
#undef GFMA
#undef GLOADD
#undef GHSUM
#undef GLOADT
