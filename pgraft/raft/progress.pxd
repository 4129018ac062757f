# cython: language_level=3
# Typed layout of pgraft/raft/progress.py when it is compiled (Cython's pure-Python mode: the
# .py stays the one source and runs interpreted with PGRAFT_PUREPYTHON=1).

cimport cython


cdef class Progress:
    cdef public long long match
    cdef public long long next
    cdef public str state
    cdef public bint probe_sent
    cdef public long long probe_last
    cdef public list inflight
    cdef public Py_ssize_t _acked
    cdef public long long max_inflight
    cdef public long long pending_snapshot
    cdef public bint recent_active
    cdef public bint learner
    cdef public long long caught_up_ticks
    cdef public long long quiet_ticks
    cdef public long long sent_commit
    cdef public tuple stalled

    cpdef _reset(self, str state)
    cpdef become_probe(self)
    cpdef become_replicate(self)
    cpdef become_snapshot(self, long long index)
    cpdef bint heartbeat_stalled(self, long long last_index, long long limit)
    cpdef bint is_paused(self)
    cpdef sent_entries(self, long long count, long long last)
    cpdef Py_ssize_t in_flight(self)
    @cython.locals(inflight=list, k=Py_ssize_t, n=Py_ssize_t, x="long long")
    cpdef bint maybe_update(self, long long index)
    cpdef bint maybe_decr_to(self, long long rejected, long long hint)
