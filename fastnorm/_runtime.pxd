# Run-time state shared by the compiled modules: the thread count the kernels may use.
cdef int threads() noexcept
