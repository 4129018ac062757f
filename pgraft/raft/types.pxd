# cython: language_level=3
# Typed layout of pgraft/raft/types.py when it is compiled (see progress.pxd): Ready only, the
# one value made on every round; the named tuples and dataclasses stay Python classes.

cdef class Ready:
    cdef public object soft_state
    cdef public object hard_state
    cdef public list entries
    cdef public object snapshot
    cdef public list committed_entries
    cdef public list messages
    cdef public list read_states
    cdef public bint must_sync
    cdef public list _held

    cpdef bint persists(self)
