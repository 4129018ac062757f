"""RawNode: the runtime's handle on one Raft node, and the Ready bookkeeping (etcd's rawnode.go).

The runtime calls :meth:`RawNode.tick` on a timer, :meth:`RawNode.step` for every message from
a peer, the ``propose*`` / ``read_index`` / ``transfer_leadership`` methods for clients, and
then takes a :class:`~pgraft.raft.types.Ready` with :meth:`RawNode.ready`, persists, sends,
applies it and reports back with :meth:`RawNode.advance` (the contract is on
:class:`~pgraft.raft.types.Ready`).

The decisions are the state machine's (:class:`pgraft.raft.core.Raft`); this layer only
remembers what the runtime was last told (the previous soft and hard state), builds a Ready from
the state machine's outbox and log, and makes sure one Ready at a time is outstanding.
``step``, ``tick`` and ``propose`` are the state machine's own bound methods, so delegating
costs nothing per message or proposal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import cython  # compiled: read at compile time (cython.compiled); interpreted: Cython's shadow
except ImportError:  # interpreted where Cython is not installed (a wheel's pure twins)
    from . import _nocython as cython  # type: ignore[no-redef]

from .._impl import core
from ..errors import InvalidArgument
from .core import Config, Raft
from .log import RaftLog
from .membership import ConfChange, Membership, encode_bootstrap, validate_address, validate_node_id
from .storage import Storage
from .types import FOLLOWER, LEADER, HardState, Ready, SoftState, Status

Entry = core.Entry
ENTRY_CONF_CHANGE = core.ENTRY_CONF_CHANGE


class RawNode:
    """One Raft node as the runtime drives it (see the module docstring).

    ``step(m)``: process one message from a peer. ``tick()``: one tick of the logical clock.
    ``propose(data)``: append ``data`` as a normal entry on the leader; returns its (index,
    term). ``propose_many(datas)``: append many, in order, in one step; returns the first's
    (index, term). All four are :class:`~pgraft.raft.core.Raft`'s methods, bound here."""

    step: Callable[[Any], None]
    tick: Callable[[], None]
    propose: Callable[[bytes], tuple[int, int]]
    propose_many: Callable[[list[bytes]], tuple[int, int]]

    def __init__(self, cfg: Config, storage: Storage) -> None:
        self.raft = raft = Raft(cfg, storage)
        # getattr: the bound methods as Python callables. Compiled, ``raft.step`` of the typed
        # Raft would wrap the C method, whose argument type (Message) Python cannot name.
        self.step = getattr(raft, "step")  # noqa: B009
        self.tick = getattr(raft, "tick")  # noqa: B009
        self.propose = getattr(raft, "propose")  # noqa: B009
        self.propose_many = getattr(raft, "propose_many")  # noqa: B009
        # what the runtime was last told (the last hard and soft state advanced), as plain
        # fields: compared on every Ready
        self._prev_term = raft.term
        self._prev_vote = raft.vote
        self._prev_commit = raft.log.committed
        self._prev_leader = 0
        self._prev_role = FOLLOWER
        self._outstanding = False

    @staticmethod
    def bootstrap(storage: Storage, members: dict[int, tuple[str, int]]) -> None:
        """Write the first configuration of a brand-new cluster: one committed conf-change entry
        at index 1 (term 1) listing the voters. Every initial member writes the same entry."""
        if storage.last_index() != 0 or storage.hard_state() != HardState():
            raise InvalidArgument("cannot bootstrap: the storage already holds a log",
                                  hint="bootstrap only a brand-new node")
        if not members:
            raise InvalidArgument("cannot bootstrap a cluster with no members")
        seen: set[tuple[str, int]] = set()
        for node_id, (address, port) in members.items():
            validate_node_id(node_id)
            validate_address(address, port)
            if (address, port) in seen:
                raise InvalidArgument(f"{address}:{port} is given for two nodes")
            seen.add((address, port))
        e = Entry(1, 1, ENTRY_CONF_CHANGE, encode_bootstrap(members))
        storage.append([e])
        storage.set_hard_state(HardState(term=1, vote=0, commit=1))

    # ------------------------------------------------------------ the node, read-only
    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def cfg(self) -> Config:
        return self.raft.cfg

    @property
    def role(self) -> str:
        return self.raft.role

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def vote(self) -> int:
        return self.raft.vote

    @property
    def leader_id(self) -> int:
        return self.raft.leader_id

    @property
    def transferee(self) -> int:
        return self.raft.transferee

    @property
    def log(self) -> RaftLog:
        return self.raft.log

    @property
    def membership(self) -> Membership:
        """The configuration in force: the latest one in the log (see membership.py)."""
        return self.raft.membership

    def status(self) -> Status:
        return self.raft.status()

    # ---------------------------------------------------------------- client calls
    def propose_membership_change(self, cc: ConfChange) -> tuple[int, int]:
        """Propose one single-server change on the leader; (index, term) of its entry (see
        :meth:`pgraft.raft.core.Raft.propose_membership_change` for what it raises)."""
        return self.raft.propose_membership_change(cc)

    def transfer_leadership(self, node_id: int) -> None:
        """Hand leadership to ``node_id`` (a voter); aborted after an election timeout."""
        self.raft.transfer_leadership(node_id)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; answered by a ReadState with ``context``."""
        self.raft.read_index(context)

    def campaign(self) -> None:
        """Start an election now (with a pre-vote round if configured)."""
        self.raft.campaign()

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        """The runtime finished (``ok``) or gave up sending the snapshot to ``node_id``."""
        self.raft.report_snapshot(node_id, ok)

    def report_unreachable(self, node_id: int) -> None:
        """The runtime could not deliver to ``node_id``: stop streaming optimistically."""
        self.raft.report_unreachable(node_id)

    # --------------------------------------------------------------- Ready/advance
    def has_ready(self) -> bool:
        r = self.raft
        if r.role == LEADER:
            r.flush()
        log = r.log
        return bool(r.msgs or r.msgs_after or r.read_states
                    or log.has_unhanded() or log.has_next_committed()
                    or self._prev_leader != r.leader_id
                    or self._prev_role != r.role
                    or self._prev_term != r.term or self._prev_vote != r.vote
                    or self._prev_commit != log.committed)

    def ready(self) -> Ready:
        if self._outstanding:
            raise RuntimeError("advance() the previous Ready before asking for the next")
        r = self.raft
        if r.role == LEADER:
            r.flush()
        log = r.log
        soft_state = None
        if self._prev_leader != r.leader_id or self._prev_role != r.role:
            soft_state = SoftState(r.leader_id, r.role)
        hard_state = None
        # a new term or vote must be durable before anything is said; a commit index need not
        must_sync = self._prev_term != r.term or self._prev_vote != r.vote
        if must_sync or self._prev_commit != log.committed:
            # tuple.__new__: HardState's own __new__ is a Python function (a named tuple's)
            hard_state = tuple.__new__(HardState, (r.term, r.vote, log.committed))
        snapshot = None
        if log.unstable_snapshot is not None and not log.snapshot_handed:
            snapshot = log.unstable_snapshot
            log.snapshot_handed = True
            must_sync = True
        # each list is made only where the Ready would be left without one
        entries: list[Any] = log.take_unhanded() if log.handed < log.last_index() else []
        if entries:
            must_sync = True
        committed = log.next_committed()
        read_states: list[Any]
        if r.read_states:
            read_states = r.read_states
            r.read_states = []
        else:
            read_states = []
        msgs = r.msgs
        r.msgs = []
        held: list[Any]
        if r.msgs_after and must_sync:
            held = r.msgs_after
            r.msgs_after = []
        else:
            held = []
            if r.msgs_after:
                msgs.extend(r.msgs_after)
                r.msgs_after = []
        self._outstanding = True
        if cython.compiled:  # field by field: the constructor's argument parsing costs more
            rd = Ready.__new__(Ready)
            rd.soft_state = soft_state
            rd.hard_state = hard_state
            rd.entries = entries
            rd.snapshot = snapshot
            rd.committed_entries = committed
            rd.messages = msgs
            rd.read_states = read_states
            rd.must_sync = must_sync
            rd._held = held
        else:
            rd = Ready(soft_state, hard_state, entries, snapshot, committed, msgs, read_states,
                       must_sync, held)
        return rd

    def advance(self, rd: Ready) -> None:
        """``rd`` is durable and its committed entries applied (see Ready)."""
        if rd is None:
            raise TypeError("RawNode.advance() takes the Ready from ready(), not None")
        self._outstanding = False
        ss = rd.soft_state
        if ss is not None:
            self._prev_leader = ss.leader_id
            self._prev_role = ss.role
        hs = rd.hard_state
        if hs is not None:
            self._prev_term = hs.term
            self._prev_vote = hs.vote
            self._prev_commit = hs.commit
        self.raft.advance(rd)
