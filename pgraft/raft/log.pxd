# cython: language_level=3
# Typed layout of pgraft/raft/log.py when it is compiled (see progress.pxd).

cimport cython

from .entry cimport index_of, term_of
from .storage cimport limit_size, take_limited


cdef class RaftLog:
    cdef public object storage
    cdef public list unstable
    cdef public long long offset
    cdef public long long handed
    cdef public object unstable_snapshot
    cdef public bint snapshot_handed
    cdef public long long committed
    cdef public long long applied
    cdef public long long max_apply_bytes
    cdef public long long _last

    cpdef long long last_index(self)
    cpdef long long first_index(self)
    cpdef long long snapshot_index(self)
    @cython.locals(off="long long", i="long long")
    cpdef object term(self, long long index)
    cpdef long long last_term(self)
    cpdef bint is_up_to_date(self, long long index, long long term)
    @cython.locals(off="long long")
    cpdef list slice(self, long long lo, long long hi, long long max_bytes)
    cpdef list entries_from(self, long long lo, long long max_bytes)
    @cython.locals(first="long long", off="long long")
    cpdef append(self, list ents)
    cpdef long long find_conflict(self, list ents)
    cpdef bint commit_to(self, long long index)
    cpdef bint has_unhanded(self)
    @cython.locals(start="long long")
    cpdef list take_unhanded(self)
    @cython.locals(off="long long", i="long long")
    cpdef stable_to(self, long long index, long long term)
    cpdef bint has_next_committed(self)
    @cython.locals(hi="long long")
    cpdef list next_committed(self)
