/* The statistics loops at one SIMD width, compiled for each instruction set from this one body:
 * fn_kernels_impl.h defines the parameters below and includes this file once per ISA (and per
 * element type T); the file consumes (undefines) them. Not a public header.
 *
 *   VISA          name suffix of the functions (avx2, avx512)
 *   VFUNC         their attributes (noinline, target(...))
 *   V, VW         a vector of doubles and its lanes (__m256d, 4 / __m512d, 8)
 *   VZERO, VSET1, VSUB, VADD, VFMA, VLOADD, VSTORED, VHSUM: the double operations
 *   VLOADT(p)     VW elements of T at p, widened to doubles
 *
 * Four independent accumulator pairs per step hide the latency of the adds and FMAs. Lanes are
 * combined in a fixed order, so results depend on the ISA, never on the thread count. */

#define VN(name) FN(FN_CAT(name, VISA))

/* sum(x - k), sum((x - k)^2) over the first 4 * VW * floor(len / (4 * VW)) elements of a
 * contiguous run. Returns how many elements it consumed. */
VFUNC int64_t VN(run_sums)(const T *x, int64_t len, double k, double *t1, double *t2)
{
    const V kv = VSET1(k);
    V a1 = VZERO(), b1 = a1, c1 = a1, d1 = a1, a2 = a1, b2 = a1, c2 = a1, d2 = a1;
    int64_t i = 0;
    for (; i + 4 * VW <= len; i += 4 * VW) {
        const V u = VSUB(VLOADT(x + i), kv), v = VSUB(VLOADT(x + i + VW), kv);
        const V w = VSUB(VLOADT(x + i + 2 * VW), kv), z = VSUB(VLOADT(x + i + 3 * VW), kv);
        a1 = VADD(a1, u);
        a2 = VFMA(u, u, a2);
        b1 = VADD(b1, v);
        b2 = VFMA(v, v, b2);
        c1 = VADD(c1, w);
        c2 = VFMA(w, w, c2);
        d1 = VADD(d1, z);
        d2 = VFMA(z, z, d2);
    }
    *t1 = VHSUM(VADD(VADD(a1, b1), VADD(c1, d1)));
    *t2 = VHSUM(VADD(VADD(a2, b2), VADD(c2, d2)));
    return i;
}

/* tile_sums for contiguous columns: 4 * VW (then VW) columns at a time in registers down the
 * rows [r0, r1) at row stride sr. Returns how many of the w columns it handled. */
VFUNC int64_t VN(tile_sums)(const T *x, int64_t r0, int64_t r1, int64_t sr, int64_t w,
                            const double *k, double *s1, double *s2)
{
    int64_t j = 0;
    for (; j + 4 * VW <= w; j += 4 * VW) {
        const V k0 = VLOADD(k + j), k1 = VLOADD(k + j + VW);
        const V k2 = VLOADD(k + j + 2 * VW), k3 = VLOADD(k + j + 3 * VW);
        V a0 = VZERO(), a1 = a0, a2 = a0, a3 = a0, q0 = a0, q1 = a0, q2 = a0, q3 = a0;
        for (int64_t r = r0; r < r1; r++) {
            const T *xr = x + r * sr + j;
            const V d0 = VSUB(VLOADT(xr), k0), d1 = VSUB(VLOADT(xr + VW), k1);
            const V d2 = VSUB(VLOADT(xr + 2 * VW), k2), d3 = VSUB(VLOADT(xr + 3 * VW), k3);
            a0 = VADD(a0, d0);
            q0 = VFMA(d0, d0, q0);
            a1 = VADD(a1, d1);
            q1 = VFMA(d1, d1, q1);
            a2 = VADD(a2, d2);
            q2 = VFMA(d2, d2, q2);
            a3 = VADD(a3, d3);
            q3 = VFMA(d3, d3, q3);
        }
        VSTORED(s1 + j, a0);
        VSTORED(s1 + j + VW, a1);
        VSTORED(s1 + j + 2 * VW, a2);
        VSTORED(s1 + j + 3 * VW, a3);
        VSTORED(s2 + j, q0);
        VSTORED(s2 + j + VW, q1);
        VSTORED(s2 + j + 2 * VW, q2);
        VSTORED(s2 + j + 3 * VW, q3);
    }
    for (; j + VW <= w; j += VW) {
        const V k0 = VLOADD(k + j);
        V a0 = VZERO(), q0 = a0;
        for (int64_t r = r0; r < r1; r++) {
            const V d0 = VSUB(VLOADT(x + r * sr + j), k0);
            a0 = VADD(a0, d0);
            q0 = VFMA(d0, d0, q0);
        }
        VSTORED(s1 + j, a0);
        VSTORED(s2 + j, q0);
    }
    return j;
}

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
