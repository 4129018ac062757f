# cython: language_level=3
# Typed layout of pgraft/raft/core.py when it is compiled (see progress.pxd). Messages are
# pgraft._core's compiled Message: the compiled core runs only with the compiled codec
# (pgraft/raft/__init__.py).

cimport cython

from pgraft._core cimport Entry as CEntry, Message as CMessage, make_entry, quorum_index

from .entry cimport index_of, term_of
from .log cimport RaftLog
from .progress cimport Progress
from .readonly cimport ReadOnly
from .types cimport Ready


@cython.locals(m=CMessage)
cdef CMessage _message(int mtype, long long src, long long dst, long long term,
                       long long log_term, long long index, long long commit, bint reject,
                       long long reject_hint, list entries)


cdef class Raft:
    cdef public object cfg
    cdef public long long id
    cdef public object rand
    cdef public object storage
    cdef public RaftLog log
    cdef public long long term
    cdef public long long vote
    cdef public object _base
    cdef public long long _base_index
    cdef public list _confs
    cdef public tuple _voters
    cdef public str role
    cdef public long long leader_id
    cdef public list msgs
    cdef public list msgs_after
    cdef public list read_states
    cdef public dict prs
    cdef public dict _match
    cdef public dict votes
    cdef public long long election_elapsed
    cdef public long long heartbeat_elapsed
    cdef public long long randomized_timeout
    cdef public long long transferee
    cdef public ReadOnly readonly
    cdef public bint _bcast_pending
    cdef public bint _commit_due
    cdef public long long _announced_commit
    cdef public long long _lead_start
    cdef public long long _pruned_at
    cdef readonly long long _max_msg_bytes
    cdef readonly long long _max_uncommitted
    cdef readonly long long _max_inflight

    cpdef long long _conf_index(self)
    @cython.locals(log=RaftLog)
    cpdef _check_can_propose(self, str what)
    cpdef bint _committed_in_term(self)
    @cython.locals(log=RaftLog, index="long long", e=CEntry)
    cpdef tuple propose(self, object data)
    @cython.locals(log=RaftLog, count=Py_ssize_t, first="long long", index="long long",
                   term="long long", entries=list, e=CEntry)
    cpdef tuple propose_many(self, list datas)
    @cython.locals(mtype=int)
    cpdef step(self, CMessage m)
    @cython.locals(ents=list, term="unsigned long long")
    cpdef _check_entries(self, CMessage m)
    @cython.locals(mtype=int, pr=Progress, last="long long")
    cpdef _step_leader(self, CMessage m)
    @cython.locals(mtype=int)
    cpdef _step_follower(self, CMessage m)
    @cython.locals(log=RaftLog, last_new="long long", ci="long long")
    cpdef _handle_append(self, CMessage m)
    @cython.locals(pr=Progress, hint="long long")
    cpdef _handle_append_resp(self, CMessage m)
    @cython.locals(log=RaftLog, idx="long long")
    cpdef bint _maybe_commit(self)
    cpdef _after_commit(self)
    cpdef object _term_at(self, long long index)
    @cython.locals(log=RaftLog, nxt="long long", ents=list)
    cpdef bint _send_append(self, long long to, Progress pr, bint allow_empty, bint force=*)
    @cython.locals(idx="long long", committed="long long")
    cpdef _send_commit_after_probe(self, long long to, Progress pr)
    @cython.locals(pr=Progress, committed="long long", last="long long", before="long long",
                   announce=bint)
    cpdef flush(self)
    @cython.locals(log=RaftLog, stable="long long", last_index="long long")
    cpdef advance(self, Ready rd)
