# fastnorm's output cache (see _alloc.pyx): large outputs are allocated through it.
cimport numpy as cnp

cdef enum:
    # outputs of at least this many bytes go through the cache. Below it glibc's heap serves a
    # steady loop without page faults (its mmap threshold rises to the size of blocks freed,
    # up to 32 MiB), and the handler's ~2700 instructions per allocation (two
    # PyDataMem_SetHandler calls, measured with callgrind) would be 1-3% of a 1 MiB call.
    OUTPUT_CACHE_MIN = 4 << 20

cdef cnp.ndarray cached_empty_like(cnp.ndarray x)
