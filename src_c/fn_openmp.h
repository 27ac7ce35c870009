/* The one place where OpenMP is touched. Every pragma and omp_* call in the kernels goes through
 * these macros, so a compiler without OpenMP builds the same code single-threaded
 * (modelled on scikit-learn's _openmp_helpers). */
#ifndef FN_OPENMP_H
#define FN_OPENMP_H

#ifdef _OPENMP
#include <omp.h>
#define FN_HAVE_OPENMP 1
#define FN_PRAGMA_(x) _Pragma(#x)
/* FN_OMP(parallel for ...) expands to #pragma omp parallel for ... */
#define FN_OMP(x) FN_PRAGMA_(omp x)
static inline int fn_omp_max_threads(void) { return omp_get_max_threads(); }
/* Free the calling thread's OpenMP thread pool (OpenMP 5.0 omp_pause_resource_all, hard pause):
 * called just before fork so that the child, which inherits the pool as data but none of its
 * threads, builds a fresh one instead of waiting forever on the dead ones. The parent re-creates
 * its pool at its next parallel region. 0: done; -1: not available (the caller falls back to one
 * thread in the child). GCC implements it since 9 while still defining _OPENMP as 201511. */
#if _OPENMP >= 201811 || (defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 9)
static inline int fn_omp_pause(void) { return omp_pause_resource_all(omp_pause_hard) == 0 ? 0 : -1; }
#else
static inline int fn_omp_pause(void) { return -1; }
#endif
#else
#define FN_HAVE_OPENMP 0
#define FN_OMP(x)
static inline int fn_omp_max_threads(void) { return 1; }
static inline int fn_omp_pause(void) { return 0; } /* no pool, nothing to free */
#endif

/* FN_PFOR_DONE(): what each thread does after its last iteration of an FN_PFOR loop (the
 * kernels: order their streaming stores, once per thread rather than once per run) */
#ifndef FN_PFOR_DONE
#define FN_PFOR_DONE() ((void)0)
#endif

/* FN_PFOR(nt, i, n, { body }): for (int64_t i = 0; i < n; i++) { body } on nt threads with a
 * static schedule, then FN_PFOR_DONE() on each thread. With nt <= 1 it is a plain loop: libgomp
 * enters (and leaves, with a futex wake) a team even for a parallel region whose if() clause is
 * false, which costs a syscall on every small call. The body is a macro argument so that both
 * loops share it. */
#define FN_PFOR(nt, i, n, ...)                                                                   \
    do {                                                                                         \
        const int64_t fn_pfor_n_ = (n);                                                          \
        if ((nt) > 1) {                                                                          \
            FN_OMP(parallel num_threads(nt))                                                     \
            {                                                                                    \
                FN_OMP(for schedule(static) nowait)                                              \
                for (int64_t i = 0; i < fn_pfor_n_; i++) {                                       \
                    __VA_ARGS__                                                                  \
                }                                                                                \
                FN_PFOR_DONE();                                                                  \
            }                                                                                    \
        } else {                                                                                 \
            for (int64_t i = 0; i < fn_pfor_n_; i++) {                                           \
                __VA_ARGS__                                                                      \
            }                                                                                    \
            FN_PFOR_DONE();                                                                      \
        }                                                                                        \
    } while (0)

#endif /* FN_OPENMP_H */
