# fastnorm's output cache (see _alloc.pyx): large outputs are allocated through it.
cimport numpy as cnp

cdef enum:
    # outputs of at least this many bytes go through the cache; smaller ones are allocated by
    # NumPy directly, where the handler's ~0.2 us (two PyDataMem_SetHandler calls) would show
    # (benchmarks/alloc_vs_out.py)
    OUTPUT_CACHE_MIN = 1 << 20

cdef cnp.ndarray cached_empty_like(cnp.ndarray x)
