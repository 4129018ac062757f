# cython: language_level=3
# Typed layout of pgraft/raft/rawnode.py when it is compiled (see progress.pxd).

cimport cython

from .core cimport Raft
from .log cimport RaftLog
from .types cimport Ready


cdef class RawNode:
    cdef public Raft raft
    cdef public object step
    cdef public object tick
    cdef public object propose
    cdef public object propose_many
    cdef public long long _prev_term
    cdef public long long _prev_vote
    cdef public long long _prev_commit
    cdef public long long _prev_leader
    cdef public str _prev_role
    cdef public bint _outstanding

    @cython.locals(r=Raft, log=RaftLog)
    cpdef bint has_ready(self)
    @cython.locals(r=Raft, log=RaftLog, must_sync=bint, rd=Ready)
    cpdef Ready ready(self)
    cpdef advance(self, Ready rd)
