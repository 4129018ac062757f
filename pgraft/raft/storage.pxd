# cython: language_level=3
# Typed layout of pgraft/raft/storage.py when it is compiled (see progress.pxd).

cimport cython

from .entry cimport index_of, size_of, term_of

cpdef list limit_size(list ents, long long max_bytes)
@cython.locals(total="long long", j=Py_ssize_t)
cpdef list take_limited(list seq, Py_ssize_t start, Py_ssize_t end, long long max_bytes)


cdef class MemoryStorage:
    cdef public object _hs
    cdef public object _snap
    cdef public list _ents

    cpdef long long first_index(self)
    cpdef long long last_index(self)
    @cython.locals(off="long long")
    cpdef long long term(self, long long index) except? -1
    @cython.locals(off="long long")
    cpdef list entries(self, long long lo, long long hi, long long max_bytes)
