"""Plain values that cross the boundary between the Raft core and the runtime.

The core hands the runtime a :class:`Ready` and the runtime reports back with
:meth:`pgraft.raft.RawNode.advance`. Everything here is a small immutable value except
``Ready`` itself, whose lists the runtime may consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .membership import Membership

# Roles ("state" in the Raft paper). Strings, so that status() and logs read well.
FOLLOWER = "follower"
PRE_CANDIDATE = "pre-candidate"
CANDIDATE = "candidate"
LEADER = "leader"

# Per-follower replication states on the leader.
PROBE = "probe"  # one AppendEntries at a time, finding where the logs agree
REPLICATE = "replicate"  # pipelined AppendEntries, bounded by the in-flight window
SNAPSHOT = "snapshot"  # the follower needs compacted entries: a snapshot is being sent


class HardState(NamedTuple):
    """What must survive a crash: the current term, the vote cast in it (0 = none), and the
    commit index (the commit index may be persisted lazily: losing it costs nothing but time).

    A named tuple rather than a frozen dataclass: one is made for nearly every Ready, and a
    frozen dataclass's ``__init__`` costs three ``object.__setattr__`` calls."""

    term: int = 0
    vote: int = 0
    commit: int = 0


class SoftState(NamedTuple):
    """Volatile state the runtime shows to users: who leads, and this node's role."""

    leader_id: int = 0
    role: str = FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """The answer to :meth:`RawNode.read_index`: once this node has applied ``index``, a read of
    the state machine is linearizable for the request identified by ``context``.

    ``refused`` is True when the leader declined the request (it has not committed an entry of
    its term yet, it is handing leadership over, it lost leadership, or a request with the same
    ``context`` is already pending there); the runtime retries (with a context of its own) or
    reports :class:`pgraft.errors.Unavailable`. ``index`` is then 0."""

    index: int
    context: bytes
    refused: bool = False


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Identity of a snapshot: the last index and term it covers and the configuration in
    force at that index. The state-machine data is not the core's business: the snapshot
    layer of the runtime stores and streams it, keyed by (index, term)."""

    index: int = 0
    term: int = 0
    membership: Membership | None = None

    def encode(self) -> bytes:
        """The bytes the core puts in ``Message.snapshot`` of a MSG_SNAP it emits."""
        from .membership import encode_obj, membership_to_obj

        return encode_obj({"index": self.index, "term": self.term,
                           "membership": membership_to_obj(self.membership)})

    @staticmethod
    def decode(data: bytes | memoryview) -> SnapshotMeta:
        from .membership import decode_obj, membership_from_obj

        obj = decode_obj(data)
        return SnapshotMeta(int(obj["index"]), int(obj["term"]),
                            membership_from_obj(obj["membership"]))


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    """The leader's view of one follower, as shown by status()."""

    match: int
    next: int
    state: str
    recent_active: bool
    learner: bool


@dataclass(slots=True)
class Status:
    """A cheap picture of a node (see :meth:`RawNode.status`)."""

    node_id: int
    role: str
    term: int
    vote: int
    leader_id: int
    commit: int
    applied: int
    first_index: int
    last_index: int
    snapshot_index: int
    membership: Membership
    progress: dict[int, ProgressStatus] = field(default_factory=dict)
    transferee: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id, "role": self.role, "term": self.term, "vote": self.vote,
            "leader_id": self.leader_id, "commit": self.commit, "applied": self.applied,
            "first_index": self.first_index, "last_index": self.last_index,
            "snapshot_index": self.snapshot_index,
            "membership": self.membership.to_list(),
            "progress": {k: {"match": p.match, "next": p.next, "state": p.state,
                             "recent_active": p.recent_active, "learner": p.learner}
                         for k, p in self.progress.items()},
            "transferee": self.transferee,
        }


class Ready:
    """Work for the runtime, produced by :meth:`RawNode.ready`. At most one Ready is
    outstanding: call :meth:`RawNode.advance` with it before asking for the next one.

    The contract (docs/design.md rule 2, "persist before you speak"):

    1. ``messages`` may be sent at once, before or in parallel with persisting this Ready.
       The core never puts a message here that depends on state that is not durable yet:
       acknowledgements (MsgAppResp, MsgVoteResp, MsgHeartbeatResp, ...) produced while this
       Ready's ``entries``/``hard_state``/``snapshot`` were pending are held back by the core
       and appear in a later Ready, after :meth:`RawNode.advance` reported them durable. What
       goes out early is the leader's AppendEntries (its own write may be in flight: it counts
       itself in the quorum only from ``advance``), heartbeats, vote requests (a candidate
       counts its own vote only once its term and vote are durable), TimeoutNow, ReadIndex.
    2. ``snapshot`` (if any) is installed first (``Storage.apply_snapshot``), then ``entries`` are
       appended (``Storage.append``: truncating any conflicting suffix), then ``hard_state`` is
       written; if ``must_sync`` all of it is made durable (fsync) before ``advance``.
    3. ``committed_entries`` are durable on a quorum (that is what committed means) but may
       include entries of this very Ready's ``entries``, not yet durable on this node: apply
       them, in order, once 2 has *written* this Ready's entries (before or after the sync).
       A node that crashes before its sync has applied nothing durable, and its peers still
       hold the entries. ``read_states`` are answered once the applied index reaches their
       ``index``.
    4. ``advance(ready)`` tells the core that 2 is durable and 3's entries are applied (or
       handed, in order, to the apply machinery).
    """

    __slots__ = ("soft_state", "hard_state", "entries", "snapshot", "committed_entries",
                 "messages", "read_states", "must_sync", "_held")

    def __init__(self, soft_state: SoftState | None = None, hard_state: HardState | None = None,
                 entries: list[Any] | None = None, snapshot: SnapshotMeta | None = None,
                 committed_entries: list[Any] | None = None, messages: list[Any] | None = None,
                 read_states: list[ReadState] | None = None, must_sync: bool = False,
                 held: list[Any] | None = None) -> None:
        self.soft_state = soft_state
        self.hard_state = hard_state
        self.entries: list[Any] = [] if entries is None else entries
        self.snapshot = snapshot
        self.committed_entries: list[Any] = [] if committed_entries is None else committed_entries
        self.messages: list[Any] = [] if messages is None else messages
        self.read_states: list[ReadState] = [] if read_states is None else read_states
        self.must_sync = must_sync
        self._held: list[Any] = [] if held is None else held

    def persists(self) -> bool:
        """True if this Ready carries anything to write (snapshot, entries or hard state)."""
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None

    def __repr__(self) -> str:
        return (f"Ready(soft_state={self.soft_state}, hard_state={self.hard_state}, "
                f"entries={len(self.entries)}, snapshot={self.snapshot}, "
                f"committed_entries={len(self.committed_entries)}, "
                f"messages={len(self.messages)}, read_states={self.read_states}, "
                f"must_sync={self.must_sync})")
