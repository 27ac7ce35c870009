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

/* The team of a parallel region with work for nt threads, in a call allowed `limit` threads.
 * libgomp ends the pool threads that a team smaller than the one before leaves out, and creates
 * threads anew for the next larger team (team.c; a C loop alternating regions of 4 and 16
 * threads created 12 threads an iteration). Calls whose regions differ in size, such as
 * BatchNorm (256, 1024)'s 4-thread statistics and 16-thread normalize, then paid for thread
 * creation at every call: 0.58 ms at 16 threads on a 16-core machine, 0.047 ms with the team
 * kept (README, "Threads, fork and memory").
 * So a calling thread's team does not shrink below its last one, within the call's limit:
 * threads beyond nt wait out the region, and a program whose regions are all small keeps a
 * small team. libgomp keeps one pool per calling thread, hence one record per thread. */
#ifdef _OPENMP
#if defined(_MSC_VER)
#define FN_TLS __declspec(thread)
#elif defined(__GNUC__) || defined(__clang__)
#define FN_TLS __thread
#else
#define FN_TLS _Thread_local
#endif
static FN_TLS int fn_last_team = 0;
static inline int fn_team(int nt, int limit)
{
    int t = fn_last_team > nt ? fn_last_team : nt;
    if (limit <= 0)
        limit = omp_get_max_threads();
    if (t > limit)
        t = limit > nt ? limit : nt;
    fn_last_team = t;
    return t;
}
#define FN_THREAD_NUM() ((int64_t)omp_get_thread_num())
#define FN_TEAM_SIZE() ((int64_t)omp_get_num_threads())
#else /* FN_OMP drops its argument, fn_team with it */
#define FN_THREAD_NUM() ((int64_t)0)
#define FN_TEAM_SIZE() ((int64_t)1)
#endif

/* FN_PFOR(limit, nt, i, n, { body }): for (int64_t i = 0; i < n; i++) { body } on nt threads,
 * each taking one contiguous range of i, then FN_PFOR_DONE() on each of them; the region's team
 * is fn_team(nt, limit) (limit: the call's thread count). With nt <= 1 it is a plain loop:
 * libgomp enters (and leaves, with a futex wake) a team even for a parallel region whose if()
 * clause is false, which costs a syscall on every small call. The body is a macro argument so
 * that both loops share it. */
#define FN_PFOR(limit, nt, i, n, ...)                                                            \
    do {                                                                                         \
        const int64_t fn_pfor_n_ = (n);                                                          \
        const int fn_pfor_nt_ = (nt);                                                            \
        if (fn_pfor_nt_ > 1) {                                                                   \
            FN_OMP(parallel num_threads(fn_team(fn_pfor_nt_, (limit))))                          \
            {                                                                                    \
                const int64_t fn_pfor_k_ =                                                       \
                    FN_TEAM_SIZE() < fn_pfor_nt_ ? FN_TEAM_SIZE() : fn_pfor_nt_;                 \
                const int64_t fn_pfor_t_ = FN_THREAD_NUM();                                      \
                if (fn_pfor_t_ < fn_pfor_k_) {                                                   \
                    const int64_t fn_pfor_hi_ = fn_pfor_n_ * (fn_pfor_t_ + 1) / fn_pfor_k_;      \
                    for (int64_t i = fn_pfor_n_ * fn_pfor_t_ / fn_pfor_k_; i < fn_pfor_hi_;      \
                         i++) {                                                                  \
                        __VA_ARGS__                                                              \
                    }                                                                            \
                    FN_PFOR_DONE();                                                              \
                }                                                                                \
            }                                                                                    \
        } else {                                                                                 \
            for (int64_t i = 0; i < fn_pfor_n_; i++) {                                           \
                __VA_ARGS__                                                                      \
            }                                                                                    \
            FN_PFOR_DONE();                                                                      \
        }                                                                                        \
    } while (0)

#endif /* FN_OPENMP_H */
