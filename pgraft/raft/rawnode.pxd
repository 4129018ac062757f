# cython: language_level=3
# Typed layout of pgraft/raft/rawnode.py when it is compiled (see progress.pxd).

cimport cython

from .core cimport Raft
from .log cimport RaftLog


cdef class RawNode:
    cdef public object raft
    cdef public object step
    cdef public object tick
    cdef public object propose
    cdef public object _prev_hs
    cdef public object _prev_ss
    cdef public bint _outstanding

    @cython.locals(r=Raft, log=RaftLog)
    cpdef bint has_ready(self)
    @cython.locals(r=Raft, log=RaftLog)
    cpdef ready(self)
    cpdef advance(self, object rd)
