"""The Raft state machine: every Raft decision of pgraft, with no I/O (docs/design.md rule 1).

:class:`Raft` is etcd-io/raft's ``raft`` (raft.go): roles, terms, votes, the log, replication
progress, commit, membership, ReadIndex rounds, leadership transfer. It collects what the
runtime must do in its outbox (``msgs``, ``msgs_after``, ``read_states``) and in its log
(unstable entries, the snapshot to install, the commit index); :class:`pgraft.raft.RawNode`
(rawnode.py, etcd's rawnode.go) turns that into a :class:`~pgraft.raft.types.Ready` and reports
back with :meth:`Raft.advance`. The runtime drives a RawNode, never a Raft. Time is ticks,
randomness comes from ``Config.rand``; a run is a pure function of its inputs.

Implemented: elections with randomized timeouts, Pre-Vote, Check-Quorum and leader stickiness
(a node that heard from a live leader within the minimum election timeout ignores vote
requests); AppendEntries with the consistency check, fast conflict back-off by term,
probe/replicate/snapshot progress with a bounded in-flight window and byte-bounded batches;
heartbeats carrying the commit index; commit by quorum of match indexes counting only entries
of the current term (Figure 8), with an empty entry appended by every new leader;
single-server membership changes (see :mod:`pgraft.raft.membership`) with automatic promotion
of caught-up learners; leadership transfer with TimeoutNow; ReadIndex; snapshot hooks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

try:
    import cython  # compiled: read at compile time (cython.compiled); interpreted: Cython's shadow
except ImportError:  # interpreted where Cython is not installed (a wheel's pure twins)
    from . import _nocython as cython  # type: ignore[no-redef]

from .._impl import core
from ..errors import (
    InvalidArgument,
    LeadershipTransferInProgress,
    MembershipChangeInProgress,
    NotLeaderError,
    Overloaded,
    PayloadTooLarge,
    Unavailable,
    UnknownNode,
)
from .entry import index_of, term_of
from .log import RaftLog
from .membership import (
    ADD_LEARNER,
    EMPTY,
    PROMOTE,
    VOTER,
    ConfChange,
    Membership,
    encode_conf_change,
    validate_address,
    validate_node_id,
)
from .progress import Progress
from .readonly import ReadOnly, ReadRequest
from .storage import Compacted, Storage
from .types import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    PROBE,
    REPLICATE,
    SNAPSHOT,
    ProgressStatus,
    ReadState,
    Ready,
    SnapshotMeta,
    Status,
)

Entry = core.Entry
Message = core.Message
ENTRY_NORMAL = core.ENTRY_NORMAL
ENTRY_CONF_CHANGE = core.ENTRY_CONF_CHANGE
MSG_APP = core.MSG_APP
MSG_APP_RESP = core.MSG_APP_RESP
MSG_VOTE = core.MSG_VOTE
MSG_VOTE_RESP = core.MSG_VOTE_RESP
MSG_PRE_VOTE = core.MSG_PRE_VOTE
MSG_PRE_VOTE_RESP = core.MSG_PRE_VOTE_RESP
MSG_HEARTBEAT = core.MSG_HEARTBEAT
MSG_HEARTBEAT_RESP = core.MSG_HEARTBEAT_RESP
MSG_SNAP = core.MSG_SNAP
MSG_SNAP_RESP = core.MSG_SNAP_RESP
MSG_TIMEOUT_NOW = core.MSG_TIMEOUT_NOW
MSG_READ_INDEX = core.MSG_READ_INDEX
MSG_READ_INDEX_RESP = core.MSG_READ_INDEX_RESP
committed_index = core.committed_index
VOTE_WON = core.VOTE_WON
VOTE_LOST = core.VOTE_LOST
RECORD_HEADER_SIZE = core.RECORD_HEADER_SIZE


def _message(mtype: int, src: int, dst: int, term: int, log_term: int, index: int,
             commit: int, reject: bool, reject_hint: int, entries: list[Any]) -> Any:
    """A Message of the hot paths (AppendEntries and its answer), made field by field
    (``CMessage``, core.pxd): the compiled constructor would box every integer into a Python
    object and parse its arguments again, which cost more than the rest of sending one.
    Interpreted, this is the constructor itself (below)."""
    m = CMessage.__new__(CMessage)  # type: ignore[name-defined]  # noqa: F821
    m.type = mtype
    m.src = src
    m.dst = dst
    m.term = term
    m.log_term = log_term
    m.index = index
    m.commit = commit
    m.reject = reject
    m.reject_hint = reject_hint
    m.entries = entries
    m.context = b""
    return m


if not cython.compiled:
    _message = Message  # noqa: F811 (same positional arguments)


#: ``Message.context`` of a vote request sent after TimeoutNow: it bypasses leader stickiness.
CAMPAIGN_TRANSFER = b"transfer"

MAX_INT63 = (1 << 63) - 1  # the largest node id, term, index or Config value the core holds
NOT_LEADING = MAX_INT63  # Raft._lead_start when not leading: no index is above it

# Config fields the compiled core keeps as 64-bit signed integers
_CONFIG_INTS = ("election_ticks", "heartbeat_ticks", "max_msg_bytes", "max_inflight",
                "promote_within", "promote_ticks", "max_uncommitted", "max_pending_reads",
                "max_apply_bytes", "applied")


@dataclass
class Config:
    """Parameters of one node. Times are in ticks (the runtime decides how long a tick is).

    - ``election_ticks``: minimum election timeout; each node draws its timeout from
      ``[election_ticks, 2 * election_ticks)`` with ``rand``. Also the Check-Quorum period, the
      leader-stickiness lease and the leadership-transfer deadline.
    - ``heartbeat_ticks``: leader heartbeat period (must be < ``election_ticks``).
    - ``max_msg_bytes``: AppendEntries batches stop before this many record bytes (one entry at
      least; a proposal larger than this is refused with PayloadTooLarge).
    - ``max_inflight``: unacknowledged AppendEntries per follower in the replicate state.
    - ``promote_within`` / ``promote_ticks``: the leader promotes a learner once, for
      ``promote_ticks`` consecutive ticks, its match index has been within ``promote_within``
      entries of the leader's last index and it has answered (an append or heartbeat
      response) within the last ``heartbeat_ticks`` ticks: caught up and alive
      (``auto_promote``).
    - ``max_uncommitted``: proposals beyond this many uncommitted entries raise Overloaded.
    - ``max_pending_reads``: ReadIndex requests waiting for their heartbeat round.
    - ``max_apply_bytes``: bound of ``Ready.committed_entries``.
    - ``applied``: the index the state machine has applied (restart); at least the snapshot.
    """

    node_id: int
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_bytes: int = 1 << 20
    max_inflight: int = 256
    promote_within: int = 64
    promote_ticks: int = 3
    auto_promote: bool = True
    max_uncommitted: int = 1 << 16
    max_pending_reads: int = 4096
    max_apply_bytes: int = 64 << 20
    applied: int = 0
    rand: random.Random | None = field(default=None, repr=False)

    def validate(self) -> None:
        validate_node_id(self.node_id)
        for name in _CONFIG_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not (
                    0 <= value <= MAX_INT63):
                raise InvalidArgument(f"Config.{name} must be an integer from 0 to 2**63 - 1, "
                                      f"not {value!r}")
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise InvalidArgument("election_ticks must be greater than heartbeat_ticks >= 1")
        if self.max_inflight < 1 or self.max_msg_bytes < 1 or self.max_uncommitted < 1:
            raise InvalidArgument("max_inflight, max_msg_bytes and max_uncommitted must be > 0")
        if self.promote_within < 0 or self.promote_ticks < 0:
            raise InvalidArgument("promote_within and promote_ticks must be >= 0")


class Raft:
    """The state machine of one Raft node (see the module docstring). Driven through
    :class:`pgraft.raft.RawNode`, which owns the Ready bookkeeping."""

    # ------------------------------------------------------------ creation
    def __init__(self, cfg: Config, storage: Storage) -> None:
        cfg.validate()
        self.cfg = cfg
        self.id = cfg.node_id
        # read on every proposal and AppendEntries: plain (typed, when compiled) attributes
        # rather than the dataclass's (Config is not changed after the node is made)
        self._max_msg_bytes = cfg.max_msg_bytes
        self._max_uncommitted = cfg.max_uncommitted
        self._max_inflight = cfg.max_inflight
        self.rand = cfg.rand if cfg.rand is not None else random.Random(cfg.node_id)
        self.storage = storage
        self.log = RaftLog(storage, cfg.applied, cfg.max_apply_bytes)
        hs = storage.hard_state()
        self.term = hs.term
        self.vote = hs.vote
        snap = storage.snapshot_meta()
        self._base: Membership = snap.membership or EMPTY
        self._base_index = snap.index
        self._confs: list[tuple[int, Membership]] = []
        for e in storage.conf_entries(snap.index + 1, storage.last_index() + 1):
            self._push_conf(e)
        self._voters: tuple[int, ...] = self.membership.voters
        self.role = FOLLOWER
        self.leader_id = 0
        self.msgs: list[Any] = []
        self.msgs_after: list[Any] = []  # sent only once what they acknowledge is durable
        self.read_states: list[ReadState] = []
        self.prs: dict[int, Progress] = {}
        self._match: dict[int, int] = {}
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = cfg.election_ticks
        self.transferee = 0
        self.readonly = ReadOnly(cfg.max_pending_reads)
        self._bcast_pending = False
        # Whether the commit index is to be announced to followers that have every entry
        # (flush says when), and the last commit index so announced.
        self._commit_due = False
        self._announced_commit = 0
        # as leader, the index of the first entry of its term; beyond any index otherwise
        self._lead_start = NOT_LEADING
        self._pruned_at = -1  # the committed configuration whose removals _after_commit made
        self._reset_randomized_timeout()

    # --------------------------------------------------------- membership
    @property
    def membership(self) -> Membership:
        """The configuration in force: the latest one in the log (see membership.py)."""
        return self._confs[-1][1] if self._confs else self._base

    def _conf_index(self) -> int:
        return self._confs[-1][0] if self._confs else self._base_index

    def _push_conf(self, e: Any) -> None:
        self._confs.append((e.index, self.membership.apply_entry_data(e.data)))

    def _truncate_confs(self, index: int) -> None:
        """Entries from ``index`` on were replaced: forget configurations they carried."""
        confs = self._confs
        while confs and confs[-1][0] >= index:
            confs.pop()

    def _membership_changed(self) -> None:
        m = self.membership
        self._voters = m.voters
        if self.role == LEADER:
            # a member this leader adds is sent its log from the first entry on, unless the
            # log is compacted: an empty node then needs the snapshot, which the probe at the
            # end of the log leads to as fast, without a batch it must reject
            first = self.log.first_index()
            self._sync_progress(first if first == 1 else 0)

    def _sync_progress(self, first_next: int = 0) -> None:
        """Progress for every member and none for removed ones (once their removal committed).
        A new member's probe starts at ``first_next`` (default: after the last entry). A
        leader adding a member to an uncompacted log starts it at the first entry: an added
        node is nearly always empty, so the probe at the end of the log would only be
        rejected, and that rejection needs the new node's connection back to the leader (a
        round trip and a handshake) before its log can start. A node that holds part of the
        log already is sent one batch it has."""
        m = self.membership
        last = self.log.last_index()
        if not first_next:
            first_next = last + 1
        for node_id, member in m.items():
            if node_id == self.id:
                continue
            pr = self.prs.get(node_id)
            if pr is None:
                pr = Progress(first_next, self._max_inflight)
                pr.recent_active = True
                self.prs[node_id] = pr
                self._match[node_id] = 0
            pr.learner = member.role != VOTER
        # a removed node keeps receiving entries until its removal commits, so that it
        # learns it was removed and stays quiet
        if self._conf_index() <= self.log.committed:
            committed = self.log.committed
            for node_id in [i for i in self.prs if i not in m]:
                pr = self.prs[node_id]
                # a last heartbeat tells it that its removal committed, so it stays quiet
                self.msgs.append(Message(MSG_HEARTBEAT, self.id, node_id, self.term,
                                         index=self.readonly.round,
                                         commit=min(pr.match, committed)))
                del self.prs[node_id]
                self._match.pop(node_id, None)
        if self.transferee and not m.is_voter(self.transferee):
            self.transferee = 0

    def _promotable(self) -> bool:
        """May this node campaign? A voter of the latest configuration may; so may a node whose
        removal is not known committed yet (dissertation §4.2.2: it may still be needed to
        commit that change, e.g. a leader that removed itself and lost leadership first). Its
        votes are still counted with the latest configuration, which excludes it."""
        if self.id in self._voters:
            return True
        return self.id in self._base.voters or any(
            self.id in m.voters for _, m in self._confs[:-1])

    # -------------------------------------------------------------- status
    def status(self) -> Status:
        log = self.log
        progress: dict[int, ProgressStatus] = {}
        if self.role == LEADER:
            for node_id, pr in sorted(self.prs.items()):
                progress[node_id] = ProgressStatus(pr.match, pr.next, pr.state,
                                                   pr.recent_active, pr.learner)
        return Status(self.id, self.role, self.term, self.vote, self.leader_id, log.committed,
                      log.applied, log.first_index(), log.last_index(), log.snapshot_index(),
                      self.membership, progress, self.transferee)

    def _not_leader(self, what: str) -> NotLeaderError:
        lead = self.leader_id or None
        return NotLeaderError(f"cannot {what}: this node is not the leader", node_id=self.id,
                              leader_id=lead,
                              leader_address=self.membership.address_of(lead) if lead else None)

    # ------------------------------------------------------ client calls
    def propose(self, data: bytes) -> tuple[int, int]:
        """Append ``data`` as a normal entry on the leader; (index, term) of the entry."""
        self._check_can_propose("append")
        if len(data) + RECORD_HEADER_SIZE > self._max_msg_bytes:
            raise PayloadTooLarge(f"entry of {len(data)} bytes is larger than the message "
                                  f"limit of {self._max_msg_bytes} bytes")
        log = self.log
        index = log.last_index() + 1
        if cython.compiled:  # from C values: the constructor would box and parse them
            e = make_entry(index, self.term, ENTRY_NORMAL, data, None)  # type: ignore[name-defined]  # noqa: F821
        else:
            e = Entry(index, self.term, ENTRY_NORMAL, data)
        log.append([e])
        self._bcast_pending = True
        return index, self.term

    def propose_many(self, datas: list[bytes]) -> tuple[int, int]:
        """Append every payload of ``datas`` (a non-empty list) as normal entries on the
        leader, in order, in one step; (index of the first, term). All or none: raises as
        :meth:`propose` does, and Overloaded when they do not all fit under the uncommitted
        limit, appending nothing."""
        self._check_can_propose("append")
        log = self.log
        count = len(datas)
        if count > self._max_uncommitted - (log.last_index() - log.committed):
            raise Overloaded(f"{count} entries do not fit under the limit of "
                             f"{self._max_uncommitted} entries waiting to commit")
        for data in datas:
            if len(data) + RECORD_HEADER_SIZE > self._max_msg_bytes:
                raise PayloadTooLarge(f"entry of {len(data)} bytes is larger than the message "
                                      f"limit of {self._max_msg_bytes} bytes")
        first = log.last_index() + 1
        term = self.term
        index = first
        entries = []
        for data in datas:
            if cython.compiled:  # as in propose
                e = make_entry(index, term, ENTRY_NORMAL, data, None)  # type: ignore[name-defined]  # noqa: F821
            else:
                e = Entry(index, term, ENTRY_NORMAL, data)
            entries.append(e)
            index += 1
        log.append(entries)
        self._bcast_pending = True
        return first, term

    def _check_can_propose(self, what: str) -> None:
        if self.role != LEADER:
            raise self._not_leader(what)
        if self.transferee:
            raise LeadershipTransferInProgress(
                f"cannot {what}: leadership is being transferred to node {self.transferee}")
        if self.log.last_index() - self.log.committed >= self._max_uncommitted:
            raise Overloaded(f"{self._max_uncommitted} entries are waiting to commit")

    def _committed_in_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def propose_membership_change(self, cc: ConfChange) -> tuple[int, int]:
        """Propose one single-server change on the leader; (index, term) of its entry.

        Raises NotLeaderError, LeadershipTransferInProgress, MembershipChangeInProgress (one is
        not committed yet), Unavailable (the leader has not committed an entry of its term yet),
        NodeExists / UnknownNode / InvalidArgument (see Membership.check)."""
        cc = cc.normalized()
        validate_node_id(cc.node_id)
        if cc.op == ADD_LEARNER:
            validate_address(cc.address, cc.port)
        self._check_can_propose("change the membership")
        if self._conf_index() > self.log.committed:
            raise MembershipChangeInProgress(
                f"the membership change at index {self._conf_index()} has not committed yet")
        if not self._committed_in_term():
            raise Unavailable("the new leader has not committed an entry of its term yet",
                              hint="retry in a moment")
        cc = self.membership.check(cc)
        return self._append_conf(cc)

    def _append_conf(self, cc: ConfChange) -> tuple[int, int]:
        log = self.log
        e = Entry(log.last_index() + 1, self.term, ENTRY_CONF_CHANGE, encode_conf_change(cc))
        log.append([e])
        self._push_conf(e)
        self._membership_changed()
        self._bcast_pending = True
        return e.index, e.term

    def transfer_leadership(self, node_id: int) -> None:
        """Hand leadership to ``node_id`` (a voter): stop proposals, catch it up, send
        TimeoutNow. Aborted if it has not happened within an election timeout."""
        if self.role != LEADER:
            raise self._not_leader("transfer leadership")
        if node_id == self.id:
            if self.transferee:
                raise LeadershipTransferInProgress(
                    f"leadership is being transferred to node {self.transferee}")
            return
        m = self.membership
        if node_id not in m:
            raise UnknownNode(f"node {node_id} is not a member of the cluster")
        if not m.is_voter(node_id):
            raise InvalidArgument(f"node {node_id} is a learner and cannot lead",
                                  hint="wait until it has been promoted to voter")
        if self.transferee:
            if self.transferee == node_id:
                return
            raise LeadershipTransferInProgress(
                f"leadership is being transferred to node {self.transferee}")
        self.transferee = node_id
        self.election_elapsed = 0
        pr = self.prs[node_id]
        if pr.match == self.log.last_index():
            self._send_timeout_now(node_id)
        else:
            self._send_append(node_id, pr, True)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; answered by a ReadState with ``context``."""
        if self.role == LEADER:
            if not self._committed_in_term():
                raise Unavailable("the new leader has not committed an entry of its term yet",
                                  hint="retry in a moment")
            if self.transferee:
                raise LeadershipTransferInProgress(
                    f"leadership is being transferred to node {self.transferee}")
            if self.readonly.full() and len(self._voters) > 1:
                raise Overloaded(f"{len(self.readonly)} reads are waiting for a heartbeat round")
            self._leader_read(self.id, context)
            return
        if not self.leader_id:
            raise Unavailable("no leader is known right now")
        self.msgs.append(Message(MSG_READ_INDEX, self.id, self.leader_id, self.term,
                                 context=context))

    def campaign(self) -> None:
        """Start an election now (with a pre-vote round if configured)."""
        self._hup(False)

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        """The runtime finished (``ok``) or gave up sending the snapshot to ``node_id``."""
        pr = self.prs.get(node_id)
        if self.role != LEADER or pr is None or pr.state != SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        if ok:
            pr.probe_sent = True  # wait for the follower's MsgAppResp
            pr.probe_last = pr.next - 1  # (the snapshot's index)
        self._bcast_pending = True

    def report_unreachable(self, node_id: int) -> None:
        """The runtime could not deliver to ``node_id``: stop streaming optimistically."""
        pr = self.prs.get(node_id)
        if self.role == LEADER and pr is not None and pr.state == REPLICATE:
            pr.become_probe()
            self._bcast_pending = True

    # --------------------------------------------------------------- ticks
    def tick(self) -> None:
        if self.role == LEADER:
            self._tick_leader()
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout and self._promotable():
            self.election_elapsed = 0
            self._hup(False)

    def _tick_leader(self) -> None:
        if self.log.committed > self._announced_commit:
            self._commit_due = True
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self._become_follower(self.term, 0)
                return
            if self.transferee:
                self.transferee = 0  # abort: it did not happen within an election timeout
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()
        if self.cfg.auto_promote:
            self._tick_promotion()

    def _quorum_active(self) -> bool:
        acks = {self.id: True}
        for node_id, pr in self.prs.items():
            if pr.recent_active:
                acks[node_id] = True
            pr.recent_active = False
        return core.vote_result(self._voters, acks) == VOTE_WON

    def _tick_promotion(self) -> None:
        last = self.log.last_index()
        within = self.cfg.promote_within
        # alive: it answered within the last heartbeat interval (each tick, if heartbeats go
        # out every tick); a learner that caught up and then died must not become a voter
        quiet_limit = self.cfg.heartbeat_ticks
        candidate = 0
        for node_id, pr in self.prs.items():
            if not pr.learner or node_id not in self.membership:
                continue
            pr.quiet_ticks += 1
            if (pr.match > 0 and pr.match + within >= last and pr.state == REPLICATE
                    and pr.quiet_ticks <= quiet_limit):
                pr.caught_up_ticks += 1
                if pr.caught_up_ticks >= self.cfg.promote_ticks and not candidate:
                    candidate = node_id
            else:
                pr.caught_up_ticks = 0
        if (candidate and not self.transferee and self._conf_index() <= self.log.committed
                and self._committed_in_term()
                and last - self.log.committed < self.cfg.max_uncommitted):
            self._append_conf(ConfChange(PROMOTE, candidate))

    # ----------------------------------------------------- role changes
    def _reset_randomized_timeout(self) -> None:
        e = self.cfg.election_ticks
        self.randomized_timeout = e + self.rand.randrange(e)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = 0
        self.leader_id = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.votes = {}
        self.transferee = 0
        for req in self.readonly.clear():
            self._respond_read(req, refused=True)
        self.prs = {}
        self._match = {}
        self._lead_start = NOT_LEADING
        self._pruned_at = -1

    def _become_follower(self, term: int, leader_id: int) -> None:
        self._reset(term)
        self.role = FOLLOWER
        self.leader_id = leader_id

    def _become_pre_candidate(self) -> None:
        self.votes = {}
        self.leader_id = 0
        self.prs = {}
        self._match = {}
        self.transferee = 0
        self.role = PRE_CANDIDATE
        self.election_elapsed = 0
        self._reset_randomized_timeout()

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = LEADER
        self.leader_id = self.id
        log = self.log
        self._match = {self.id: 0 if log.unstable_snapshot is not None else log.offset - 1}
        self._sync_progress()
        e = Entry(log.last_index() + 1, self.term, ENTRY_NORMAL, b"")
        log.append([e])
        self._lead_start = e.index
        self._bcast_pending = True
        self._commit_due = False
        # the commit it inherits needs no announcement of its own (see flush)
        self._announced_commit = log.committed

    def _hup(self, transfer: bool) -> None:
        if self.role == LEADER or not self._promotable():
            return
        if self.cfg.pre_vote and not transfer:
            self._become_pre_candidate()
            if self._poll(self.id, True):
                return
            self._send_votes(MSG_PRE_VOTE, self.term + 1, b"")
        else:
            self._campaign(transfer)

    def _campaign(self, transfer: bool) -> None:
        self._become_candidate()
        # our own vote counts once our term and vote are durable (see advance)
        self._send_votes(MSG_VOTE, self.term, CAMPAIGN_TRANSFER if transfer else b"")

    def _send_votes(self, mtype: int, term: int, context: bytes) -> None:
        last = self.log.last_index()
        last_term = self.log.last_term()
        for v in self._voters:
            if v != self.id:
                self.msgs.append(Message(mtype, self.id, v, term, last_term, last,
                                         context=context))

    def _poll(self, node_id: int, granted: bool) -> bool:
        """Record a vote; True if the election (or pre-election) is decided."""
        self.votes.setdefault(node_id, granted)
        r = core.vote_result(self._voters, self.votes)
        if r == VOTE_WON:
            if self.role == PRE_CANDIDATE:
                self._campaign(False)
            else:
                self._become_leader()
            return True
        if r == VOTE_LOST:
            self._become_follower(self.term, 0)
            return True
        return False

    # ----------------------------------------------------------------- step
    def step(self, m: Any) -> None:
        """Process one message from a peer. Raises InvalidArgument, changing nothing, for a
        message no correct peer sends: a node id, term or index beyond 2**63 - 1, or entries
        of a later term than the message's."""
        if m is None:
            raise TypeError("Raft.step() takes a Message, not None")
        mtype = m.type
        if m.src == self.id or m.src == 0:
            return
        if (m.src | m.term | m.log_term | m.index | m.commit | m.reject_hint) >> 63:
            raise InvalidArgument(f"message {mtype} from node {m.src}: a node id, term or index "
                                  f"is beyond 2**63 - 1", hint="the peer's data is corrupt")
        if mtype == MSG_APP and m.entries:
            self._check_entries(m)
        elif mtype == MSG_SNAP and m.snapshot is not None:
            self._check_snapshot(m)
        if m.term > self.term:
            if mtype in (MSG_VOTE, MSG_PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (self.cfg.check_quorum and self.leader_id != 0
                            and self.election_elapsed < self.cfg.election_ticks)
                if in_lease and not force:
                    return  # leader stickiness: a live leader was heard from recently
            if mtype == MSG_PRE_VOTE or (mtype == MSG_PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote never changes our term
            elif mtype in (MSG_APP, MSG_HEARTBEAT, MSG_SNAP):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, 0)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and (
                    mtype in (MSG_APP, MSG_HEARTBEAT)):
                # a stale leader: tell it our term so it steps down
                self.msgs_after.append(Message(MSG_APP_RESP, self.id, m.src, self.term))
            elif mtype == MSG_PRE_VOTE:
                self.msgs.append(Message(MSG_PRE_VOTE_RESP, self.id, m.src, self.term,
                                         reject=True))
            return

        if mtype in (MSG_VOTE, MSG_PRE_VOTE):
            self._handle_vote(m)
            return
        role = self.role
        if role == LEADER:
            self._step_leader(m)
        elif role == FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _check_entries(self, m: Any) -> None:
        """The wire's fields are 64-bit, terms and indexes here 63-bit (and typed so when
        compiled); an AppendEntries also never carries an entry of a later term than its
        sender's. Checked before anything changes."""
        ents = m.entries
        if ents[-1].index >> 63:
            raise InvalidArgument(f"AppendEntries from node {m.src}: entry index "
                                  f"{ents[-1].index} is beyond 2**63 - 1",
                                  hint="the peer's data is corrupt")
        term = m.term
        for e in ents:
            if e.term > term:
                raise InvalidArgument(f"AppendEntries from node {m.src} in term {term} carries "
                                      f"entry {e.index} of term {e.term}",
                                      hint="the peer's data is corrupt")

    def _check_snapshot(self, m: Any) -> None:
        """A MSG_SNAP's header names the snapshot its metadata describes."""
        meta = SnapshotMeta.decode(m.snapshot)
        if meta.index != m.index or meta.term != m.log_term:
            raise InvalidArgument(f"snapshot message from node {m.src} says index {m.index} "
                                  f"term {m.log_term}, its metadata index {meta.index} term "
                                  f"{meta.term}", hint="the peer's data is corrupt")

    def _handle_vote(self, m: Any) -> None:
        pre = m.type == MSG_PRE_VOTE
        can_vote = (self.vote == m.src or (self.vote == 0 and self.leader_id == 0)
                    or (pre and m.term > self.term))
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            if pre:
                self.msgs.append(Message(MSG_PRE_VOTE_RESP, self.id, m.src, m.term))
            else:
                self.election_elapsed = 0
                self.vote = m.src
                self.msgs_after.append(Message(MSG_VOTE_RESP, self.id, m.src, m.term))
        elif pre:
            self.msgs.append(Message(MSG_PRE_VOTE_RESP, self.id, m.src, self.term, reject=True))
        else:
            self.msgs_after.append(Message(MSG_VOTE_RESP, self.id, m.src, self.term,
                                           reject=True))

    def _step_candidate(self, m: Any) -> None:
        mtype = m.type
        if mtype in (MSG_APP, MSG_HEARTBEAT, MSG_SNAP):
            self._become_follower(self.term, m.src)
            self._step_follower(m)
        elif (mtype == MSG_VOTE_RESP and self.role == CANDIDATE) or (
                mtype == MSG_PRE_VOTE_RESP and self.role == PRE_CANDIDATE):
            self._poll(m.src, not m.reject)
        elif mtype == MSG_TIMEOUT_NOW:
            pass

    def _step_follower(self, m: Any) -> None:
        mtype = m.type
        if mtype == MSG_APP:
            self.election_elapsed = 0
            self.leader_id = m.src
            self._handle_append(m)
        elif mtype == MSG_HEARTBEAT:
            self.election_elapsed = 0
            self.leader_id = m.src
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self.msgs_after.append(Message(MSG_HEARTBEAT_RESP, self.id, m.src, self.term,
                                           index=m.index, context=m.context))
        elif mtype == MSG_SNAP:
            self.election_elapsed = 0
            self.leader_id = m.src
            self._handle_snapshot(m)
        elif mtype == MSG_TIMEOUT_NOW:
            if self._promotable():
                self._campaign(True)
        elif mtype == MSG_READ_INDEX_RESP:
            self.read_states.append(ReadState(0 if m.reject else m.index, m.context,
                                              bool(m.reject)))

    def _handle_append(self, m: Any) -> None:
        log = self.log
        if m.index < log.committed:
            self.msgs_after.append(Message(MSG_APP_RESP, self.id, m.src, self.term,
                                           index=log.committed))
            return
        ents = m.entries
        t = log.term(m.index)
        if t is None or t != m.log_term:
            hint_index, hint_term = log.find_conflict_by_term(min(m.index, log.last_index()),
                                                              m.log_term)
            self.msgs_after.append(Message(MSG_APP_RESP, self.id, m.src, self.term,
                                           hint_term, m.index, reject=True,
                                           reject_hint=hint_index))
            return
        last_new = m.index + len(ents)
        if ents:
            ci = log.find_conflict(ents)
            if ci:
                if ci <= log.committed:
                    raise AssertionError(f"node {self.id}: entry {ci} conflicts with the "
                                         f"committed log (commit {log.committed})")
                new = ents[ci - ents[0].index:] if ci != ents[0].index else ents
                log.append(new)
                changed = False
                if self._confs and self._confs[-1][0] >= ci:
                    self._truncate_confs(ci)
                    changed = True
                for e in new:
                    if e.type == ENTRY_CONF_CHANGE:
                        self._push_conf(e)
                        changed = True
                if changed:
                    self._membership_changed()
        log.commit_to(min(m.commit, last_new))
        self.msgs_after.append(_message(MSG_APP_RESP, self.id, m.src, self.term, 0, last_new, 0,
                                        False, 0, []))

    def _handle_snapshot(self, m: Any) -> None:
        log = self.log
        if m.snapshot is not None:
            meta = SnapshotMeta.decode(m.snapshot)
        else:
            meta = SnapshotMeta(m.index, m.log_term, None)
        if meta.index <= log.committed:
            reply = log.committed
        elif log.term(meta.index) == meta.term:
            log.commit_to(meta.index)  # we have the entries: just learn they are committed
            reply = log.committed
        else:
            if meta.membership is None:
                raise InvalidArgument("a MSG_SNAP to install must carry its metadata")
            log.restore(meta)
            self._base = meta.membership
            self._base_index = meta.index
            self._confs = []
            self._membership_changed()
            reply = meta.index
        self.msgs_after.append(Message(MSG_APP_RESP, self.id, m.src, self.term, index=reply))

    def _step_leader(self, m: Any) -> None:
        mtype = m.type
        if mtype == MSG_APP_RESP:
            self._handle_append_resp(m)
        elif mtype == MSG_HEARTBEAT_RESP:
            pr = self.prs.get(m.src)
            if pr is None:
                return
            pr.recent_active = True
            pr.probe_sent = False
            last = self.log.last_index()
            if pr.state == REPLICATE and pr.heartbeat_stalled(last, 3):
                pr.become_probe()
            if pr.match < last:
                self._bcast_pending = True
            pr.quiet_ticks = 0
            for r in self.readonly.ack(m.src, m.index, self._voters, self.id):
                self._respond_read(r, refused=False)
        elif mtype == MSG_READ_INDEX:
            if (not self._committed_in_term() or self.transferee or m.src not in self.prs
                    or (self.readonly.full() and len(self._voters) > 1)):
                self.msgs.append(Message(MSG_READ_INDEX_RESP, self.id, m.src, self.term,
                                         context=m.context, reject=True))
            else:
                self._leader_read(m.src, m.context)
        elif mtype == MSG_SNAP_RESP:
            self.report_snapshot(m.src, not m.reject)

    def _handle_append_resp(self, m: Any) -> None:
        pr = self.prs.get(m.src)
        if pr is None:
            return
        if not m.reject and m.index > self.log.last_index():
            # a follower holds no entry its leader lacks (this term's entries are all ours)
            raise InvalidArgument(f"node {m.src} acknowledged index {m.index}, beyond this "
                                  f"leader's last index {self.log.last_index()}",
                                  hint="the peer's data is corrupt")
        pr.recent_active = True
        pr.quiet_ticks = 0
        self._bcast_pending = True  # the follower may be ready for more (checked in flush)
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint = self.log.find_conflict_by_term(hint, m.log_term)[0]
            if pr.maybe_decr_to(m.index, hint) and pr.state == REPLICATE:
                pr.become_probe()
            return
        if pr.maybe_update(m.index):
            self._match[m.src] = pr.match
            if pr.state == PROBE or pr.state == SNAPSHOT and pr.match + 1 >= self.log.first_index():
                pr.become_replicate()
            if self._maybe_commit():
                self._after_commit()
            if m.src == self.transferee and pr.match == self.log.last_index():
                self._send_timeout_now(m.src)

    def _send_timeout_now(self, to: int) -> None:
        self.msgs.append(Message(MSG_TIMEOUT_NOW, self.id, to, self.term))

    def _maybe_commit(self) -> bool:
        log = self.log
        if cython.compiled:  # the same count, without a Python call
            idx = quorum_index(self._voters, self._match)  # type: ignore[name-defined]  # noqa: F821
        else:
            idx = committed_index(self._voters, self._match)
        # Figure 8: only an entry of our own term commits by counting, and those are exactly
        # the entries from the first of our leadership on (no term lookup needed)
        if idx > log.committed and idx >= self._lead_start:
            log.committed = idx
            return True
        return False

    def _after_commit(self) -> None:
        conf_index = self._conf_index()
        if conf_index > self.log.committed:
            return
        if conf_index > self._announced_commit or self._announced_commit < self._lead_start:
            # announced at once: a committed configuration, and a new leader's first commit
            # (which also commits what earlier leaders left uncommitted)
            self._commit_due = True
        if conf_index != self._pruned_at:
            # once per committed configuration (not per commit): drop the progress of the
            # nodes it removed
            self._pruned_at = conf_index
            m = self.membership
            for node_id in self.prs:
                if node_id not in m:
                    self._sync_progress()
                    break
        if self.id not in self._voters:
            self._step_down_removed()

    def _step_down_removed(self) -> None:
        """Our own removal committed: tell everyone the commit, hand over to the most
        up-to-date voter if one has our whole log, and stop leading."""
        last = self.log.last_index()
        best, best_match = 0, -1
        for node_id, pr in self.prs.items():
            self._send_append(node_id, pr, True, force=True)
            if node_id in self._voters and pr.match > best_match:
                best, best_match = node_id, pr.match
        if best and best_match == last:
            self._send_timeout_now(best)
        self._become_follower(self.term, 0)

    # ------------------------------------------------------ replication
    def _term_at(self, index: int) -> int | None:
        """A leader's term of the entry at ``index`` (None if compacted): every entry from the
        first of its leadership on is of its term, with no lookup (see _maybe_commit)."""
        return self.term if index >= self._lead_start else self.log.term(index)

    def _send_append(self, to: int, pr: Progress, allow_empty: bool,
                     force: bool = False) -> bool:
        log = self.log
        nxt = pr.next
        prev_term = self._term_at(nxt - 1)
        if prev_term is None:
            return self._send_snapshot(to, pr)
        ents: list[Any] = []
        if nxt <= log.last_index():
            try:
                ents = log.slice(nxt, log.last_index() + 1, self._max_msg_bytes)
            except Compacted:
                return self._send_snapshot(to, pr)
        elif not allow_empty:
            return False
        self.msgs.append(_message(MSG_APP, self.id, to, self.term, prev_term, nxt - 1,
                                  log.committed, False, 0, ents))
        if not force:
            pr.sent_entries(len(ents), index_of(ents[-1]) if ents else nxt - 1)
        pr.sent_commit = log.committed
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        meta = self.storage.snapshot_meta()
        self.msgs.append(Message(MSG_SNAP, self.id, to, self.term, meta.term, meta.index,
                                 self.log.committed, snapshot=meta.encode()))
        pr.become_snapshot(meta.index)
        return True

    def flush(self) -> None:
        """Leader, called by RawNode before it looks for a Ready: queue what each follower is
        missing, and the heartbeat round that reads registered since the last one wait for.

        A follower missing entries gets them, and one being probed its probe, at once. One
        that has every entry gets the commit index alone only when it is announced: at the
        next tick (``_tick_leader``), or at once for a committed configuration and a new
        leader's first commit (``_after_commit``); one paused meanwhile gets the announced
        commit when it can take a message again. Announcing every commit at once would cost
        an AppendEntries and its acknowledgement per follower per commit: half the messages
        of sequential writes."""
        if self.readonly.round_due():
            self._bcast_heartbeat()
        announce = self._commit_due
        if not self._bcast_pending and not announce:
            return
        self._bcast_pending = False
        committed = self.log.committed
        if announce:
            self._commit_due = False
            self._announced_commit = committed
        last = self.log.last_index()
        for to, pr in self.prs.items():
            if pr.probe_sent and pr.state == PROBE:
                if pr.sent_commit < self._announced_commit and pr.probe_last:
                    self._send_commit_after_probe(to, pr)
                continue
            while not pr.is_paused():
                if pr.next <= last:
                    before = pr.next
                    if not self._send_append(to, pr, False):
                        break
                    if pr.state != REPLICATE or pr.next == before:
                        break
                else:
                    # nothing to send but the commit: a probe (a new or lost follower, which
                    # may lack entries or the commit) goes at once, again once a heartbeat's
                    # answer re-opened it; an up-to-date follower gets the last announced
                    # commit, even if it was paused when that went out
                    if pr.sent_commit < self._announced_commit or (
                            pr.state != REPLICATE and (pr.sent_commit < committed
                                                       or pr.match < last)):
                        self._send_append(to, pr, True)
                    break

    def _send_commit_after_probe(self, to: int, pr: Progress) -> None:
        """Announce the commit to a follower whose probe is unanswered, as an empty
        AppendEntries that follows the probe's last entry. If the follower took the probe,
        its log matches ours up to there and it commits up to there at once (a joining node
        applies its own addition without waiting for the round trip of its answer); if it
        did not, it rejects this too, and the rejection is stale (``maybe_decr_to``): the
        probe goes on as it would have. A heartbeat could not carry it: its commit is bounded
        by ``match``, which a probe has not established."""
        idx = pr.probe_last
        term = self._term_at(idx)
        if term is None:
            return
        committed = self.log.committed
        self.msgs.append(_message(MSG_APP, self.id, to, self.term, term, idx, committed, False,
                                  0, []))
        pr.sent_commit = committed  # told: the next announcement, not the next Ready

    def _bcast_heartbeat(self) -> None:
        """Send a new heartbeat round: its acknowledgements confirm every read registered
        before it (see readonly.py)."""
        rnd = self.readonly.next_round()
        committed = self.log.committed
        for to, pr in self.prs.items():
            commit = min(pr.match, committed)
            self.msgs.append(Message(MSG_HEARTBEAT, self.id, to, self.term, index=rnd,
                                     commit=commit))
            if commit > pr.sent_commit:
                pr.sent_commit = commit  # it needs no announcement of its own (see flush)

    def _leader_read(self, origin: int, context: bytes) -> None:
        if self._voters == (self.id,):
            self._respond_read(ReadRequest(self.log.committed, origin, context), refused=False)
            return
        if self.readonly.add(self.log.committed, origin, context) is None:
            # the same context is pending: answering either with the other's round could be
            # stale, and dropping it would leave the caller waiting for its timeout
            self._respond_read(ReadRequest(0, origin, context), refused=True)
        # the round it waits for goes out with the next Ready (flush): one for many reads

    def _respond_read(self, req: ReadRequest, refused: bool) -> None:
        if req.origin == self.id:
            self.read_states.append(ReadState(0 if refused else req.index, req.context,
                                              refused))
        else:
            self.msgs.append(Message(MSG_READ_INDEX_RESP, self.id, req.origin, self.term,
                                     index=0 if refused else req.index, context=req.context,
                                     reject=refused))

    # ------------------------------------------------------ Ready/advance
    def advance(self, rd: Ready) -> None:
        """``rd`` (built by RawNode from this state machine) is durable and its committed
        entries applied: count what became durable, send what was held back until then."""
        if rd is None:
            raise TypeError("Raft.advance() takes the Ready from RawNode.ready(), not None")
        log = self.log
        if rd.snapshot is not None:
            log.stable_snapshot_to(rd.snapshot.index)
            if rd.snapshot.index > log.applied:
                log.applied = rd.snapshot.index
        if rd.entries:
            last = rd.entries[-1]
            last_index = index_of(last)
            log.stable_to(last_index, term_of(last))
            if self.role == LEADER and log.unstable_snapshot is None:
                stable = min(log.offset - 1, last_index)
                if stable > self._match.get(self.id, 0):
                    self._match[self.id] = stable
                    if self._maybe_commit():
                        self._after_commit()
        if rd.committed_entries:
            log.applied = index_of(rd.committed_entries[-1])
        if rd._held:
            self.msgs[:0] = rd._held
        hs = rd.hard_state
        if (hs is not None and self.role == CANDIDATE and hs.term == self.term
                and hs.vote == self.id):
            self._poll(self.id, True)  # our vote is durable now: count it
        confs = self._confs
        while confs and confs[0][0] <= log.committed:
            self._base_index, self._base = confs.pop(0)
