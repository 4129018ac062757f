# cython: language_level=3
# Typed layout of pgraft/raft/readonly.py when it is compiled (see progress.pxd).

cdef class ReadRequest:
    cdef public long long index
    cdef public long long origin
    cdef public object context
    cdef public long long round


cdef class ReadOnly:
    cdef public long long limit
    cdef public object pending
    cdef public long long round
    cdef public dict acked

    cpdef bint full(self)
    cpdef bint round_due(self)
    cpdef long long next_round(self)
