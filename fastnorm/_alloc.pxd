# fastnorm's output allocation (see _alloc.pyx): new_output makes every output fastnorm
# allocates, large ones through the output cache, small ones from the pool.
cimport numpy as cnp

cdef enum:
    # outputs of at least this many bytes go through the cache. The handler costs ~2700
    # instructions per allocation (two PyDataMem_SetHandler calls; callgrind), under 2% of the
    # cheapest op on 1 MiB. From 512 KiB on, glibc's heap re-faults part of a group_norm output
    # on every call of a steady loop (18 minor faults at 512 KiB, 24 at 1 MiB, 75 at 3 MiB),
    # none with the cache; below 256 KiB no op faults.
    OUTPUT_CACHE_MIN = 1 << 20
    # C-contiguous outputs of at most this many bytes come from the pool of recent small
    # outputs (new_output), SMALL_SLOTS of them at a time
    SMALL_MAX = 1 << 16
    SMALL_SLOTS = 8

cdef cnp.ndarray new_output(cnp.ndarray x)
