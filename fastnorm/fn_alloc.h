/* fastnorm's output cache: a NumPy memory handler (NEP 49) that keeps a bounded number of bytes
 * of freed output blocks mapped, to hand them to the next output of about the same size.
 *
 * Why: glibc serves large blocks with a fresh mmap and munmaps them on free, so every large
 * output would be faulted in again, page by page, by the kernel that writes it (on these VMs
 * 2-17 ms per 33 MB, up to several times the kernel itself). A block taken from the cache is
 * already mapped and populated. Only outputs fastnorm allocates go through it (the handler is
 * set around that one allocation, fastnorm/_alloc.pyx); NumPy's arrays keep the handler that
 * allocated them and give their block back to it when they die.
 *
 * Included by _alloc.pyx only (it needs <numpy/ndarraytypes.h>, which Cython includes first).
 * Thread-safe: one mutex around the cache, never held across a system call.
 */
#ifndef FN_ALLOC_H
#define FN_ALLOC_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Each block starts with a 16-byte header (realloc needs it: NumPy passes it no old size); the
 * data follows at +16, like glibc's mmapped blocks and so like most large NumPy inputs: an
 * output at another offset within its page than its input (e.g. +64 against +16) measured up to
 * 1.2x slower on a 3 MB LayerNorm, loads of the input aliasing stores to the output modulo 4 KiB.
 * The data is 16-byte aligned, as glibc's. */
#define FN_AHDR 16
#define FN_MAP_MIN ((size_t)256 << 10)  /* smaller blocks (only realloc makes them): malloc */
#define FN_HUGE ((size_t)2 << 20)       /* huge page size on x86-64 and most aarch64 */
#define FN_HUGE_MIN ((size_t)4 << 20)   /* as NumPy: madvise huge pages from 4 MB on */
#define FN_SLOTS 64                     /* most blocks the cache holds */

typedef struct {
    size_t len;   /* bytes mapped, header included; 0: a malloc'd block */
    size_t size;  /* bytes asked for */
} fn_ahdr;

typedef struct {
    pthread_mutex_t lock;
    size_t limit;              /* most bytes the cache may hold */
    size_t held;               /* bytes it holds */
    int n;                     /* blocks it holds, oldest first */
    void* base[FN_SLOTS];
    size_t len[FN_SLOTS];
    uint64_t hits, misses;     /* allocations served from the cache / mapped fresh */
} fn_cache_t;

static fn_cache_t fn_cache = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, {0}, {0}, 0, 0};

static size_t fn_round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

static size_t fn_page(void) {
    static size_t page = 0;
    if (page == 0) {
        long p = sysconf(_SC_PAGESIZE);
        page = p > 0 ? (size_t)p : 4096;
    }
    return page;
}

/* Bytes to map for a block of `need` bytes (header included): whole pages. (Whole huge pages
 * would waste up to 2 MiB of a 4 MiB block; the start is huge-page aligned, the tail, if not a
 * whole huge page, gets small ones.) */
static size_t fn_map_len(size_t need) { return fn_round_up(need, fn_page()); }

/* A fresh mapping of len bytes (huge-page aligned and advised from FN_HUGE_MIN on), or NULL. */
static void* fn_map(size_t len) {
    if (len < FN_HUGE_MIN) {
        void* p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    /* over-map by a huge page and trim both ends: the block starts on a huge page boundary */
    size_t span = len + FN_HUGE;
    char* raw = (char*)mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if ((void*)raw == MAP_FAILED)
        return NULL;
    char* p = (char*)fn_round_up((uintptr_t)raw, FN_HUGE);
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    if (raw + span > p + len)
        munmap(p + len, (size_t)(raw + span - (p + len)));
#ifdef MADV_HUGEPAGE
    madvise(p, len, MADV_HUGEPAGE);  /* advice only: an error changes nothing */
#endif
    return p;
}

/* Remove cache slot i (the mutex held). */
static void fn_cache_drop(int i) {
    fn_cache.held -= fn_cache.len[i];
    memmove(fn_cache.base + i, fn_cache.base + i + 1, (size_t)(fn_cache.n - i - 1) * sizeof(void*));
    memmove(fn_cache.len + i, fn_cache.len + i + 1, (size_t)(fn_cache.n - i - 1) * sizeof(size_t));
    fn_cache.n--;
}

/* Take a cached block of at least len bytes and at most 1/8 more (the newest such), or NULL. */
static void* fn_cache_take(size_t len, size_t* got) {
    void* p = NULL;
    pthread_mutex_lock(&fn_cache.lock);
    for (int i = fn_cache.n - 1; i >= 0; i--) {
        if (fn_cache.len[i] >= len && fn_cache.len[i] - len <= len / 8) {
            p = fn_cache.base[i];
            *got = fn_cache.len[i];
            fn_cache_drop(i);
            break;
        }
    }
    if (p)
        fn_cache.hits++;
    else
        fn_cache.misses++;
    pthread_mutex_unlock(&fn_cache.lock);
    return p;
}

/* Evict the oldest blocks until `room` more bytes and one more block fit under the limit (the
 * mutex held); the evicted blocks go to out_base/out_len, for the caller to unmap unlocked. */
static int fn_cache_evict(size_t room, void** out_base, size_t* out_len) {
    int k = 0;
    while (fn_cache.n > 0 && (fn_cache.held + room > fn_cache.limit || fn_cache.n >= FN_SLOTS)) {
        out_base[k] = fn_cache.base[0];
        out_len[k] = fn_cache.len[0];
        k++;
        fn_cache_drop(0);
    }
    return k;
}

static void fn_unmap_all(int k, void** base, const size_t* len) {
    for (int i = 0; i < k; i++)
        munmap(base[i], len[i]);
}

/* Give a mapped block back: cached if it fits under the limit (older blocks make room), else
 * unmapped. */
static void fn_cache_put(void* base, size_t len) {
    void* gone[FN_SLOTS + 1];
    size_t gone_len[FN_SLOTS + 1];
    int k = 0;
    pthread_mutex_lock(&fn_cache.lock);
    if (len <= fn_cache.limit) {
        k = fn_cache_evict(len, gone, gone_len);
        fn_cache.base[fn_cache.n] = base;
        fn_cache.len[fn_cache.n] = len;
        fn_cache.n++;
        fn_cache.held += len;
    } else {
        gone[k] = base;
        gone_len[k++] = len;
    }
    pthread_mutex_unlock(&fn_cache.lock);
    fn_unmap_all(k, gone, gone_len);
}

/* Set the limit, evicting the oldest blocks until the rest fits; returns the bytes released. */
static size_t fn_cache_set_limit(size_t limit) {
    void* gone[FN_SLOTS];
    size_t gone_len[FN_SLOTS], freed = 0;
    pthread_mutex_lock(&fn_cache.lock);
    fn_cache.limit = limit;
    int k = 0;
    while (fn_cache.n > 0 && fn_cache.held > limit) {
        gone[k] = fn_cache.base[0];
        gone_len[k++] = fn_cache.len[0];
        freed += fn_cache.len[0];
        fn_cache_drop(0);
    }
    pthread_mutex_unlock(&fn_cache.lock);
    fn_unmap_all(k, gone, gone_len);
    return freed;
}

/* Unmap every cached block (the limit stays); returns the bytes released. */
static size_t fn_cache_release(void) {
    void* gone[FN_SLOTS];
    size_t gone_len[FN_SLOTS], freed = 0;
    pthread_mutex_lock(&fn_cache.lock);
    int k = fn_cache.n;
    for (int i = 0; i < k; i++) {
        gone[i] = fn_cache.base[i];
        gone_len[i] = fn_cache.len[i];
        freed += fn_cache.len[i];
    }
    fn_cache.n = 0;
    fn_cache.held = 0;
    pthread_mutex_unlock(&fn_cache.lock);
    fn_unmap_all(k, gone, gone_len);
    return freed;
}

/* A snapshot of the cache's state. */
static void fn_cache_stats(size_t* limit, size_t* held, int* blocks, uint64_t* hits, uint64_t* misses) {
    pthread_mutex_lock(&fn_cache.lock);
    *limit = fn_cache.limit;
    *held = fn_cache.held;
    *blocks = fn_cache.n;
    *hits = fn_cache.hits;
    *misses = fn_cache.misses;
    pthread_mutex_unlock(&fn_cache.lock);
}

/* In a forked child (the only thread there): the mutex is free unless another thread of the
 * parent was inside a cache operation at the fork (only possible without the GIL: with it, the
 * frees that take the mutex hold the GIL, which the forking thread holds). Then the cache may be
 * half updated: it is forgotten (its blocks stay mapped in the child, copy-on-write) and the
 * mutex made anew. Nothing is locked before fork: a before-fork hook that ran later, or a
 * garbage collection in it, would free an output into a mutex its own thread holds. */
static void fn_cache_after_fork_child(void) {
    if (pthread_mutex_trylock(&fn_cache.lock) == 0) {
        pthread_mutex_unlock(&fn_cache.lock);
        return;
    }
    pthread_mutex_init(&fn_cache.lock, NULL);
    fn_cache.n = 0;
    fn_cache.held = 0;
}

/* ---- the NEP 49 handler ---------------------------------------------------------------- */

/* A block of size bytes; *fresh: its memory is zero (a new mapping or calloc'd) */
static void* fn_alloc_block(size_t size, int* fresh) {
    if (size > SIZE_MAX - FN_AHDR - FN_HUGE)
        return NULL;
    size_t need = size + FN_AHDR;
    fn_ahdr* h;
    if (need < FN_MAP_MIN) {
        h = (fn_ahdr*)aligned_alloc(FN_AHDR, fn_round_up(need, FN_AHDR));
        if (!h)
            return NULL;
        h->len = 0;
        *fresh = 0;
    } else {
        size_t len = fn_map_len(need), got = 0;
        h = (fn_ahdr*)fn_cache_take(len, &got);  /* may be up to 1/8 longer than len */
        *fresh = h == NULL;
        if (!h) {
            h = (fn_ahdr*)fn_map(len);
            if (!h)
                return NULL;
            got = len;
        }
        h->len = got;
    }
    h->size = size;
    return (char*)h + FN_AHDR;
}

static fn_ahdr* fn_header(void* ptr) { return (fn_ahdr*)((char*)ptr - FN_AHDR); }

static void* fn_h_malloc(void* ctx, size_t size) {
    (void)ctx;
    int fresh;
    return fn_alloc_block(size, &fresh);
}

static void* fn_h_calloc(void* ctx, size_t nelem, size_t elsize) {
    (void)ctx;
    if (elsize != 0 && nelem > SIZE_MAX / elsize)
        return NULL;
    int fresh;
    void* p = fn_alloc_block(nelem * elsize, &fresh);
    if (p && !fresh)
        memset(p, 0, nelem * elsize);
    return p;
}

static void fn_h_free(void* ctx, void* ptr, size_t size) {
    (void)ctx;
    (void)size;  /* the header knows the block's true length */
    if (!ptr)
        return;
    fn_ahdr* h = fn_header(ptr);
    if (h->len == 0)
        free(h);
    else
        fn_cache_put(h, h->len);
}

static void* fn_h_realloc(void* ctx, void* ptr, size_t new_size) {
    if (!ptr)
        return fn_h_malloc(ctx, new_size);
    fn_ahdr* h = fn_header(ptr);
    if (h->len != 0 && new_size + FN_AHDR <= h->len && fn_map_len(new_size + FN_AHDR) == h->len) {
        h->size = new_size;  /* still the block a fresh allocation would map */
        return ptr;
    }
    void* q = fn_h_malloc(ctx, new_size);
    if (!q)
        return NULL;  /* as realloc: the old block stays valid */
    memcpy(q, ptr, h->size < new_size ? h->size : new_size);
    fn_h_free(ctx, ptr, h->size);
    return q;
}

static PyDataMem_Handler fn_handler = {
    "fastnorm_output_cache",
    1,
    {NULL, fn_h_malloc, fn_h_calloc, fn_h_realloc, fn_h_free},
};

/* The handler as the capsule PyDataMem_SetHandler takes (a new reference). */
static PyObject* fn_handler_capsule(void) { return PyCapsule_New(&fn_handler, "mem_handler", NULL); }

/* Default limit: 256 MiB, at most 1/8 of the physical memory. */
static size_t fn_default_limit(void) {
    size_t lim = (size_t)256 << 20;
    long pages = sysconf(_SC_PHYS_PAGES);
    if (pages > 0 && (size_t)pages / 8 * fn_page() < lim)
        lim = (size_t)pages / 8 * fn_page();
    return lim;
}

#endif /* FN_ALLOC_H */
