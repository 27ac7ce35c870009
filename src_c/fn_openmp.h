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
#else
#define FN_HAVE_OPENMP 0
#define FN_OMP(x)
static inline int fn_omp_max_threads(void) { return 1; }
#endif

#endif /* FN_OPENMP_H */
