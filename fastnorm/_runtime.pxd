# Run-time state shared by the compiled modules: the thread count the kernels may use, and the
# count of calls in progress that share it (enter() / leave() around every op's kernels).
cdef int threads() noexcept
cdef void enter() noexcept  # with the GIL
cdef void leave() noexcept
