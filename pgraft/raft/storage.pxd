# cython: language_level=3
# Typed layout of pgraft/raft/storage.py when it is compiled (see progress.pxd).

cpdef list limit_size(list ents, long long max_bytes)
cpdef list take_limited(list seq, Py_ssize_t start, Py_ssize_t end, long long max_bytes)


cdef class MemoryStorage:
    cdef public object _hs
    cdef public object _snap
    cdef public list _ents
