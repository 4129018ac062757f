"""The running node: the Raft core driven on uvloop, with durable storage, peers and clients.

A :class:`Node` is built by :func:`pgraft.node.process.start_node` (the composition root),
which hands it its collaborators already open; this module drives them.

The Ready loop (one task per node) follows the contract of :class:`pgraft.raft.Ready`:

1. take a Ready; update the role/leader and the peers' addresses;
2. send its messages at once — the core only puts there what may leave before this Ready is
   durable (the leader's AppendEntries go out in parallel with its own write; acknowledgements
   are held back by the core until ``advance``);
3. write the snapshot metadata, entries and hard state into the storage (memory-mapped, cheap);
4. apply the committed entries (durable on a quorum; a follower that catches up applies them
   before its own sync) to :class:`pgraft.state.AppliedState`, resolving proposal futures (by
   index and term) and ReadIndex waiters;
5. if the Ready must be durable, ``sync``. A busy leader (more than one proposal waiting) syncs
   in a worker thread: while that runs the event loop keeps stepping messages and taking
   proposals; they all land in the next Ready, whose entries are written and synced together
   (group commit). So does a follower writing a large batch (``THREAD_SYNC_ENTRIES`` entries
   or more: catching up, or joining): it has applied them already (step 4), and answers reads
   and steps the next batch meanwhile; and so does a rare Ready, one that follows a new leader
   or changes the peers: the loop dials new peers meanwhile (a joining node is dialled by
   every member as it writes the change), and a node that just joined answers at once that it
   is a member. A follower's usual Ready, and a leader with at most one proposal waiting,
   sync on the loop thread: there is nothing to overlap with the sync but more traffic, which
   waits in the socket and lands in the next Ready just the same, and the two thread
   hand-overs per sync cost more CPU than everything else a node does for an append (measured
   on the 2-vCPU test VM: CPU per sequential append about 390 -> 230 us per follower, and ~20%
   less in total with the idle leader inline too);
6. ``advance``.

Every Raft decision stays in the core (docs/design.md rule 1): the node never decides who
leads, what commits, or whether a membership change is allowed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .._impl import core
from ..errors import (
    NotLeaderError,
    OutcomeUnknown,
    Overloaded,
    PayloadTooLarge,
    PgraftError,
    StorageFull,
    Timeout,
    Unavailable,
    UnknownNode,
)
from ..raft import (
    ADD_LEARNER,
    FOLLOWER,
    LEADER,
    REMOVE,
    ConfChange,
    Membership,
    RawNode,
    SnapshotMeta,
    SoftState,
    Status,
)
from ..raft.membership import EMPTY
from ..state import (
    APPEND_PREFIX,
    TAG_APPEND,
    AppliedState,
    encode_ha,
    encode_kv_delete,
    encode_kv_put,
)
from .config import NodeConfig, describe_membership, endpoint
from .identity import NodeIdentity
from .metrics import Metrics
from .peers import Peers
from .snapshots import SnapshotManager
from .snapxfer import MSG_SNAP, MSG_SNAP_RESP
from .storage import DiskStorage
from .waiters import Pending, Waiter, Waiters

log = logging.getLogger("pgraft.node")

#: A follower's Ready with this many entries syncs in the worker thread (module docstring, 5).
THREAD_SYNC_ENTRIES = 1000

ENTRY_CONF_CHANGE = core.ENTRY_CONF_CHANGE
ENTRY_NORMAL = core.ENTRY_NORMAL
_SNAP_TYPES = frozenset((MSG_SNAP, MSG_SNAP_RESP))


def pick_transferee(status: Status, self_id: int,
                    reachable: Callable[[int], bool] | None = None) -> tuple[int, int] | None:
    """The voter a stopping leader hands over to, as (node id, match index): of the other
    voters that answered since the last check-quorum round (``recent_active``) and are
    ``reachable`` (the peer link is up), the one with the highest match index (the lowest id
    among equals); None if there is none. Like etcd's transfer on shutdown, a choice of the
    runtime: the transfer itself (catching the target up, TimeoutNow) is the core's."""
    best: tuple[int, int] | None = None
    for peer, pr in status.progress.items():
        if (peer == self_id or pr.learner or not pr.recent_active
                or not status.membership.is_voter(peer)
                or (reachable is not None and not reachable(peer))):
            continue
        if best is None or pr.match > best[1] or (pr.match == best[1] and peer < best[0]):
            best = (peer, pr.match)
    return best


class Node:
    """One pgraft node in this process: drives its Raft core with its storage, peers and
    snapshots (built and wired by :func:`pgraft.node.process.start_node`).

    It is the :class:`~pgraft.node.listener.MessageSink` of its listener, the
    :class:`~pgraft.node.peers.PeerEvents` of its peers and the
    :class:`~pgraft.node.snapshots.SnapshotHost` of its snapshots; ``close_resources`` closes
    what the composition root opened, once the node has stopped driving them."""

    def __init__(self, config: NodeConfig, *, loop: asyncio.AbstractEventLoop,
                 storage: DiskStorage, identity: NodeIdentity, raw: RawNode,
                 state: AppliedState, metrics: Metrics, peers: Peers,
                 snapshots: SnapshotManager, executor: concurrent.futures.ThreadPoolExecutor,
                 close_resources: Callable[[bool], Awaitable[None]]) -> None:
        self.config = config
        self.node_id = config.node_id
        self.loop = loop
        self.storage = storage
        self.identity = identity
        self.raw = raw
        self.state = state
        self.metrics = metrics
        self.peers = peers
        peers.waiting_to_join = len(raw.membership) == 0  # kept current by _update_peers
        self.snapshots = snapshots
        self._executor = executor
        self._close_resources = close_resources
        #: The role and leader as of the last Ready (the core's soft state).
        self.role = FOLLOWER
        self.leader_id = 0
        self._peer_book: dict[int, tuple[str, int]] = {}
        self._peer_membership: Membership | None = None
        self.waiters = waiters = Waiters(config.node_id, metrics)
        self._proposals = waiters.proposals
        self._reads = waiters.reads
        self._applied = waiters.applied
        # The tables the hot paths touch directly (their identity never changes).
        self._pending = waiters.proposals.pending
        self._read_heap = waiters.reads.waiting
        self._apply_heap = waiters.applied.waiting
        self._wake: asyncio.Future[None] | None = None
        self._kicked = False
        self._ready_task: asyncio.Task[None] | None = None
        #: The HA controller (pgraft.ha.controller) in HA mode, else None: the server's ha_*
        #: ops answer HaNotEnabled then.
        self.ha: Any = None
        #: Other ports this node serves, by name ("http": --http-port, as bound).
        self.extra_ports: dict[str, int] = {}
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._tick_s, self._hb_ticks, self._el_ticks = config.ticks()
        self._running = False
        self._failed: asyncio.Future[BaseException | None] = loop.create_future()
        self._syncing = False
        #: Set while the data directory's file system is full (see _wait_for_space).
        self._disk_full: StorageFull | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start driving the core: the tick timer and the Ready loop."""
        loop = self.loop
        self._running = True
        self._update_peers()
        self._next_tick = loop.time() + self._tick_s
        self._tick_handle = loop.call_at(self._next_tick, self._on_tick)
        self._ready_task = loop.create_task(self._ready_loop(), name=f"pgraft-ready-{self.node_id}")

    async def stop(self) -> None:
        """Stop cleanly: finish the Ready in progress, sync, close everything."""
        await self._shutdown(graceful=True)

    async def crash(self) -> None:
        """Stop abruptly, like a killed process: no final hard-state save, connections reset.
        (What was written to the mapped log stays in the page cache, as after kill -9.)"""
        await self._shutdown(graceful=False)

    async def _shutdown(self, graceful: bool) -> None:
        was_running = self._running
        self._running = False
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        task = self._ready_task
        self._ready_task = None
        if task is not None:
            if graceful:
                self.kick()
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), 5.0)
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.waiters.fail_all(
            Unavailable(f"node {self.node_id} is stopping",
                        hint="retry on another node or once it has restarted"),
            OutcomeUnknown(f"node {self.node_id} stopped before the write was applied here; "
                           "its entry is in the log and may commit",
                           hint="read the state back on another node before retrying the "
                                "write"))
        await self._close_resources(graceful)
        if not self._failed.done():
            self._failed.set_result(None)
        if was_running and not graceful:
            log.info("node %d crashed (simulated)", self.node_id)

    async def wait_failed(self) -> BaseException | None:
        """Returns when the node stops; the exception that stopped it, if any."""
        return await asyncio.shield(self._failed)

    # -------------------------------------------- what the collaborators ask (Protocols)
    @property
    def running(self) -> bool:
        return self._running

    @property
    def syncing(self) -> bool:
        """A sync of the log is in flight (the log must not be compacted under it)."""
        return self._syncing

    @property
    def is_leader(self) -> bool:
        return self.role == LEADER

    @property
    def disk_full(self) -> StorageFull | None:
        """Why the data directory cannot be written right now (None: it can)."""
        return self._disk_full

    @property
    def peer_book(self) -> dict[int, tuple[str, int]]:
        """The peers this node dials: id -> (address, port)."""
        return self._peer_book

    def send(self, messages: list[Any]) -> None:
        """Send messages that are not the core's (snapshot chunks and their acks)."""
        self.peers.send(messages)

    def kick(self) -> None:
        """Wake the Ready loop: the core may have something to do."""
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)
        else:
            self._kicked = True

    def receive_messages(self, messages: list[Any]) -> None:
        """Listener callback: messages from a peer."""
        if not self._running:
            return
        step = self.raw.step
        snapshots = self.snapshots
        for m in messages:
            if m.type in _SNAP_TYPES:  # chunks and their acks: pgraft.node.snapshots
                snapshots.on_message(m)
                continue
            try:
                step(m)
            except PgraftError as exc:
                log.warning("node %d: ignored message %d from node %d: %s", self.node_id,
                            m.type, m.src, exc.message)
        self.kick()

    def report_unreachable(self, peer_id: int) -> None:
        """Peers callback: the connection to ``peer_id`` was lost."""
        if self._running:
            self.raw.report_unreachable(peer_id)
            self.kick()

    def snapshot_installed(self, meta: SnapshotMeta) -> None:
        """A received snapshot was installed (pgraft.node.snapshots restored the applied state
        from its data): the membership follows it, and waiters up to its index are released;
        proposals it leaves unapplied are answered (see Proposals.fail_not_in_log)."""
        state = self.state
        if meta.membership is not None:
            self._set_applied_membership(meta.index, meta.term, meta.membership,
                                         previous=state.members)
        state.mark_applied(meta.index, meta.term)
        self._proposals.fail_not_in_log(meta.index, self.raw.log.term)
        applied = state.applied_index
        self._reads.release(applied)
        self._applied.release(applied)

    # ----------------------------------------------------------------- driving
    def _on_tick(self) -> None:
        if not self._running:
            return
        loop = self.loop
        now = loop.time()
        self._next_tick += self._tick_s
        if self._next_tick < now - 10 * self._tick_s:
            self._next_tick = now + self._tick_s  # the loop stalled: do not burst ticks
        self._tick_handle = loop.call_at(self._next_tick, self._on_tick)
        self.raw.tick()
        self.kick()

    async def _ready_loop(self) -> None:
        raw = self.raw
        storage = self.storage
        peers = self.peers
        snapshots = self.snapshots
        pending = self._pending
        loop = self.loop
        metrics = self.metrics
        try:
            while self._running:
                if self._kicked:
                    self._kicked = False
                if not raw.has_ready():
                    wake = loop.create_future()
                    self._wake = wake
                    if self._kicked:
                        self._kicked = False
                        self._wake = None
                        continue
                    await wake
                    continue
                rd = raw.ready()
                metrics.ready_batches += 1
                # a rare Ready (a leader learned, the peers changed) syncs in the worker thread
                rare = False
                if rd.soft_state is not None:
                    self._apply_soft_state(rd.soft_state)
                    rare = True
                if raw.membership is not self._peer_membership:
                    self._update_peers()
                    rare = True
                if rd.messages:
                    peers.send(snapshots.intercept(rd.messages))
                if rd.snapshot is not None:
                    await snapshots.install(rd.snapshot)  # restores state, resets the log
                if rd.entries:
                    if pending:  # fail the proposals these entries overwrite
                        self._proposals.fail_replaced(rd.entries, storage.last_index())
                    try:
                        storage.append(rd.entries)
                    except StorageFull as exc:
                        await self._wait_for_space(exc, storage.append, rd.entries)
                    metrics.entries_persisted += len(rd.entries)
                if rd.hard_state is not None:
                    storage.set_hard_state(rd.hard_state)
                if rd.committed_entries:
                    self._apply(rd.committed_entries)
                if rd.read_states:
                    self._reads.on_read_states(rd.read_states, self.state.applied_index)
                if rd.must_sync or rd.entries:
                    started = time.perf_counter()
                    self._syncing = True
                    try:
                        if rare or (len(pending) > 1 if self.role == LEADER else
                                    rd.entries is not None
                                    and len(rd.entries) >= THREAD_SYNC_ENTRIES):
                            await loop.run_in_executor(self._executor, storage.sync)
                        else:
                            storage.sync()  # see the module docstring, step 5
                    finally:
                        self._syncing = False
                    metrics.syncs += 1
                    metrics.sync_latency.observe(time.perf_counter() - started)
                raw.advance(rd)
                snapshots.after_ready()  # take a snapshot, or compact after one
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("node %d: the Ready loop failed; stopping", self.node_id)
            self._running = False
            if not self._failed.done():
                self._failed.set_result(exc)
            self.waiters.fail_all(
                Unavailable(f"node {self.node_id} failed: {exc}"),
                OutcomeUnknown(f"node {self.node_id} failed before the write was applied here "
                               f"({exc}); its entry is in the log and may commit",
                               hint="read the state back on another node before retrying "
                                    "the write"))

    async def _wait_for_space(self, exc: StorageFull, write: Any, *args: Any) -> None:
        """The file system is full: ``write`` wrote nothing. Retry it until it fits. The Ready
        stays outstanding meanwhile -- nothing it acknowledges is sent -- while the loop goes
        on stepping messages: a leader stops heartbeating, so a healthy node takes over within
        an election timeout; new proposals are refused with StorageFull."""
        self._disk_full = exc
        self.metrics.disk_full_events += 1
        log.error("node %d cannot write its log: %s; it stops acknowledging (a leader hands "
                  "over to a healthy node) and retries until space is freed", self.node_id,
                  exc.message)
        loop = self.loop
        raw = self.raw
        delay = 0.05
        next_try = loop.time() + delay
        while True:
            await asyncio.sleep(0.05)
            if not self._running:
                raise exc
            # The core goes on stepping messages (a new leader's heartbeats demote this node):
            # clients must be sent to the real leader, not told that this node still leads.
            if raw.role != self.role or raw.leader_id != self.leader_id:
                self._apply_soft_state(SoftState(raw.leader_id, raw.role))
            if loop.time() < next_try:
                continue
            try:
                write(*args)
            except StorageFull as again:
                exc = again
                delay = min(delay * 2, 1.0)
                next_try = loop.time() + delay
                continue
            break
        self._disk_full = None
        log.info("node %d: the data directory has space again; resuming", self.node_id)

    # -------------------------------------------------------------- Ready parts
    def _apply_soft_state(self, ss: SoftState) -> None:
        term = self.raw.term
        if ss.role != self.role:
            self.metrics.role_changes += 1
            log.info("node %d: %s -> %s in term %d", self.node_id, self.role, ss.role, term)
            if self.role == LEADER and ss.role != LEADER:
                self._reads.fail_all(NotLeaderError(
                    f"node {self.node_id} lost the leadership while the read was pending",
                    node_id=self.node_id, leader_id=ss.leader_id or None,
                    leader_address=self.address_of(ss.leader_id)))
        if ss.leader_id != self.leader_id:
            if ss.leader_id:
                self.metrics.leader_changes += 1
                if ss.leader_id != self.node_id:
                    log.info("node %d: leader is node %d in term %d", self.node_id,
                             ss.leader_id, term)
            self.waiters.leader.leader_is(ss.leader_id)
        self.role = ss.role
        self.leader_id = ss.leader_id

    def _update_peers(self) -> None:
        membership = self.raw.membership
        self._peer_membership = membership
        self.peers.waiting_to_join = len(membership) == 0
        book = {i: (m.address, m.port) for i, m in self.state.members.items()}
        book.update((i, (m.address, m.port)) for i, m in membership.items())
        book.pop(self.node_id, None)
        # (links made before the membership named the peers -- dialled back while waiting to
        # join, or to answer a leader -- are closed here if they are not members)
        if book != self._peer_book or self.peers.links.keys() != book.keys():
            self._peer_book = book
            self.peers.set_peers(book)

    def _apply(self, entries: list[Any]) -> None:
        state = self.state
        pending = self._pending
        apply_normal = state.apply_normal
        metrics = self.metrics
        now = time.perf_counter()
        observe = metrics.commit_latency.observe
        tagged_run = core.tagged_run
        i, n = 0, len(entries)
        while i < n:
            if not pending:
                # a run of user appends no proposal here waits for (a follower's, or one that
                # catches up): they change nothing but the applied index
                i += tagged_run(entries, i, ENTRY_NORMAL, TAG_APPEND)
                if i == n:
                    break
            e = entries[i]
            i += 1
            index = e.index
            if e.type == ENTRY_CONF_CHANGE:
                result: Any = self._apply_conf_change(e)
            else:
                # (the tag, not the payload: a decoded entry's payload is a slice to make)
                tag = e.tag
                if tag == TAG_APPEND:
                    result = index  # a user append changes nothing but the applied index
                elif tag < 0:
                    result = None  # a leader's no-op
                else:
                    result = apply_normal(index, e.term, e.data)
            if pending:
                p = pending.pop(index, None)
                if p is not None:
                    if p.term == e.term:
                        observe(now - p.started)
                        if not p.future.done():
                            p.future.set_result(True if result is None else result)
                    else:
                        self._proposals.fail_overwritten(index, p, certain=True)
        metrics.entries_applied += len(entries)
        last = entries[-1]
        state.mark_applied(last.index, last.term)
        applied = state.applied_index
        if self._read_heap and self._read_heap[0][0] <= applied:
            self._reads.release(applied)
        if self._apply_heap and self._apply_heap[0][0] <= applied:
            self._applied.release(applied)

    def _apply_conf_change(self, e: Any) -> bool:
        before = self.state.members
        after = before.apply_entry_data(e.data)
        self._set_applied_membership(e.index, e.term, after, previous=before)
        return True

    def _set_applied_membership(self, index: int, term: int, after: Membership, *,
                                previous: Membership | None = None) -> None:
        self.state.set_membership(index, term, after)
        self._log_membership(index, previous or EMPTY, after)
        self._update_peers()

    def _log_membership(self, index: int, before: Membership, after: Membership) -> None:
        if not len(before):
            log.info("node %d: membership at index %d: %s", self.node_id, index,
                     describe_membership(after))
            return
        for i, m in after.items():
            old = before.get(i)
            if old is None:
                log.info("node %d: membership: node %d added at %s as %s (index %d)",
                         self.node_id, i, endpoint(m.address, m.port), m.role, index)
            elif old.role != m.role:
                log.info("node %d: membership: node %d is now a %s (index %d)", self.node_id,
                         i, m.role, index)
        for i in before:
            if i not in after:
                log.info("node %d: membership: node %d removed (index %d)", self.node_id, i,
                         index)

    # ------------------------------------------------------------ client calls
    def address_of(self, node_id: int) -> str | None:
        """``HOST:PORT`` of ``node_id`` (the applied membership first, then the core's)."""
        if not node_id:
            return None
        m = self.state.members.get(node_id)
        if m is None:
            m = self.raw.membership.get(node_id)
        return None if m is None else endpoint(m.address, m.port)

    def _check_running(self) -> RawNode:
        if not self._running:
            raise Unavailable(f"node {self.node_id} is not running")
        return self.raw

    def not_leader(self, what: str) -> PgraftError:
        lead = self.leader_id
        if not lead:
            return Unavailable(f"cannot {what}: this node ({self.node_id}) is not the leader "
                               "and no leader is known right now",
                               hint="an election is in progress, or this node cannot reach "
                                    "a majority; retry shortly")
        return NotLeaderError(f"cannot {what}: this node ({self.node_id}) is not the leader",
                              node_id=self.node_id, leader_id=lead,
                              leader_address=self.address_of(lead))

    def _check_proposable(self, what: str, count: int) -> None:
        """Raise why ``count`` proposals cannot be taken now (none is taken then)."""
        if not self._running:
            raise Unavailable(f"node {self.node_id} is not running")
        # The core's role read directly (RawNode.role is a property: a Python call per write).
        if self.role != LEADER or self.raw.raft.role != LEADER:
            raise self.not_leader(what)
        if self._disk_full is not None:
            raise self._storage_full(what)
        waiting = len(self._pending)
        if waiting + count > self.config.max_pending_proposals:
            self.metrics.proposals_dropped += count
            raise Overloaded(f"{waiting} proposals are waiting to commit" if count == 1 else
                             f"{waiting} proposals are waiting to commit; {count} more are "
                             f"over the limit of {self.config.max_pending_proposals}")

    def _propose(self, data: bytes, what: str, waiter: Waiter | None = None) -> Any:
        self._check_proposable(what, 1)
        pending = self._pending
        index, term = self.raw.propose(data)
        if waiter is None:
            waiter = self.loop.create_future()
        # Proposals.add, inlined (the hot path)
        if index in pending:
            self._proposals.fail_overwritten(index, pending[index])
        pending[index] = Pending(term, waiter, time.perf_counter())
        self.metrics.proposals += 1
        if self._wake is not None:
            self.kick()
        else:
            self._kicked = True
        return waiter

    def propose_append(self, payload: bytes, waiter: Waiter | None = None) -> Any:
        """Append ``payload``; the future gives its index once committed and applied.

        ``waiter`` replaces the future: any object with ``done()``, ``set_result(value)`` and
        ``set_exception(exc)`` (the client server answers through one, with no future, callback
        or loop iteration per request)."""
        self.check_payload(payload)
        return self._propose(APPEND_PREFIX + payload, "append", waiter)  # encode_append

    def check_payload(self, payload: bytes) -> None:
        """Raise PayloadTooLarge for an append's payload over the node's limit."""
        if len(payload) > self.config.max_payload:
            raise PayloadTooLarge(f"payload of {len(payload)} bytes is over the limit of "
                                  f"{self.config.max_payload} bytes",
                                  hint="split the data into smaller entries")

    def propose_appends(self, payloads: list[bytes], waiters: Sequence[Waiter]) -> None:
        """Append every payload, in order, in one step of the core; ``waiters[i]`` gets
        payload ``i``'s index once committed and applied. All or none: raises as
        :meth:`propose_append` does (PayloadTooLarge for any payload over the limit),
        proposing nothing."""
        for payload in payloads:
            self.check_payload(payload)
        self._check_proposable("append", len(payloads))
        first, term = self.raw.propose_many([APPEND_PREFIX + p for p in payloads])
        pending = self._pending
        started = time.perf_counter()
        index = first
        for waiter in waiters:
            if index in pending:
                self._proposals.fail_overwritten(index, pending[index])
            pending[index] = Pending(term, waiter, started)
            index += 1
        self.metrics.proposals += len(payloads)
        if self._wake is not None:
            self.kick()
        else:
            self._kicked = True

    def propose_kv_put(self, key: str, value: str, waiter: Waiter | None = None) -> Any:
        data = encode_kv_put(key, value)
        if len(data) > self.config.max_payload:
            raise PayloadTooLarge(f"key and value of {len(data)} bytes are over the limit of "
                                  f"{self.config.max_payload} bytes")
        return self._propose(data, "put a key", waiter)

    def propose_kv_delete(self, key: str, waiter: Waiter | None = None) -> Any:
        return self._propose(encode_kv_delete(key), "delete a key", waiter)

    def propose_ha(self, command: list[Any], waiter: Waiter | None = None) -> Any:
        """An HA command (pgraft.ha.records); the future gives whether it took effect."""
        return self._propose(encode_ha(command), "record an HA decision", waiter)

    @property
    def applied_current_term(self) -> bool:
        """Whether the applied state includes an entry of the current term: a new leader has
        then applied everything its predecessors committed (its no-op comes after it)."""
        return self.state.applied_term == self.raw.term

    def _storage_full(self, what: str) -> StorageFull:
        full = self._disk_full
        assert full is not None
        return StorageFull(f"cannot {what}: node {self.node_id} cannot write its log "
                           f"({full.message}); the write was not accepted",
                           hint="free space in the node's data directory (it resumes by "
                                "itself), or write through another node once one leads")

    def _change(self, cc: ConfChange, what: str) -> asyncio.Future[Any]:
        raw = self._check_running()
        if self.role != LEADER or raw.role != LEADER:
            raise self.not_leader(what)
        if self._disk_full is not None:
            raise self._storage_full(what)
        index, term = raw.propose_membership_change(cc)
        fut = self.loop.create_future()
        self._proposals.add(index, term, fut, time.perf_counter())
        self.metrics.proposals += 1
        self.kick()
        return fut

    async def add_node(self, node_id: int, address: str, port: int) -> None:
        """Add a node (as a learner; the leader promotes it once it has caught up); returns
        once the change is committed and applied here."""
        await self._change(ConfChange(ADD_LEARNER, node_id, address, port), "add node")

    async def remove_node(self, node_id: int) -> None:
        """Remove a node; returns once the change is committed and applied here."""
        await self._change(ConfChange(REMOVE, node_id), "remove node")

    async def linearizable_read(self) -> None:
        """Return once this node's applied state reflects every write committed before the call
        (ReadIndex). Retries while a new leader has not committed in its term yet."""
        raw = self._check_running()
        self.metrics.read_index_requests += 1
        reads = self._reads
        delay = self._tick_s
        while True:
            if not self.leader_id:
                raise self.not_leader("read linearizably")
            ctx = reads.new_context()
            fut: asyncio.Future[Any] = self.loop.create_future()
            try:
                raw.read_index(ctx)
            except Unavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            reads.pending[ctx] = fut
            self.kick()
            try:
                index = await fut
            finally:
                reads.pending.pop(ctx, None)
            if index is not None:
                return
            await asyncio.sleep(delay)  # refused (no commit in the term yet): retry
            delay = min(delay * 2, 0.1)
            raw = self._check_running()

    async def transfer_leadership(self, node_id: int) -> None:
        """Hand the leadership to ``node_id``; returns once it is the leader (as seen here)."""
        raw = self._check_running()
        if self.role != LEADER:
            raise self.not_leader("transfer leadership")
        if node_id not in raw.membership:
            raise UnknownNode(f"node {node_id} is not a member of the cluster")
        if node_id == self.node_id:
            return
        fut: asyncio.Future[Any] = self.loop.create_future()
        entry = (node_id, fut)
        leader_waiters = self.waiters.leader
        leader_waiters.add(entry)
        try:
            raw.transfer_leadership(node_id)
            self.kick()
            # The core gives up after an election timeout; allow for a full election more.
            limit = 3 * self._el_ticks * self._tick_s + 1.0
            try:
                await asyncio.wait_for(asyncio.shield(fut), limit)
            except TimeoutError:
                raise Timeout(f"leadership did not move to node {node_id} within "
                              f"{limit:.1f}s", hint="check that the node is running and "
                              "caught up, then retry") from None
        finally:
            leader_waiters.discard(entry)

    async def hand_over_leadership(self) -> int | None:
        """Before a graceful stop: if this node leads and has another voter, hand the
        leadership to the most up-to-date one that answered recently and is connected
        (:func:`pick_transferee`), and wait, at most about two election timeouts, until another
        node leads. Returns the new leader's id, or None (not the leader, no other voter, none
        reachable, or no one took over in time); logs the outcome either way.

        The core aborts a transfer that has not happened within an election timeout; while
        time is left and this node still leads, the next pick is tried. Proposals are refused
        meanwhile (LeadershipTransferInProgress, by the core); clients are served as usual."""
        raw = self.raw
        if not self._running or raw.role != LEADER:
            return None
        node_id = self.node_id
        if not any(v != node_id for v in raw.membership.voters):
            log.info("node %d is the only voter: stopping without a leadership handover",
                     node_id)
            return None
        loop = self.loop
        connected = self.peers.peer_connected
        election_s = self._el_ticks * self._tick_s
        # Every peer's recent_active is cleared at each check-quorum round (once an election
        # timeout, when the core also gives up a transfer) and set again by its next answer,
        # within a heartbeat interval or so.
        search_s = 3 * self._hb_ticks * self._tick_s + 0.05
        started = loop.time()
        deadline = started + 2 * election_s
        searching_since = started
        poll = min(self._tick_s, 0.02)
        target = 0
        transferring = False
        gave_up = "no other node took over the leadership"
        while self._running:
            lead = raw.leader_id
            if raw.role != LEADER and lead and lead != node_id:
                log.info("node %d: node %d took over the leadership in %.2fs (term %d); "
                         "stopping", node_id, lead, loop.time() - started, raw.term)
                return lead
            now = loop.time()
            if now >= deadline:
                break
            if not any(connected(v) for v in raw.membership.voters if v != node_id):
                gave_up = "no other voter is reachable"
                break
            if raw.role == LEADER and not raw.transferee:
                if transferring:  # the core gave the transfer up: search again
                    transferring = False
                    searching_since = now
                pick = pick_transferee(raw.status(), node_id, connected)
                if pick is not None:
                    target, match = pick
                    log.info("node %d is stopping: handing the leadership over to node %d "
                             "(match index %d, last index %d)", node_id, target, match,
                             raw.log.last_index())
                    try:
                        raw.transfer_leadership(target)
                    except PgraftError as exc:
                        gave_up = f"cannot hand the leadership over to node {target} " \
                                  f"({exc.message})"
                        break
                    transferring = True
                    self.kick()
                elif now - searching_since >= search_s:
                    gave_up = "no other voter has answered recently"
                    break
            await asyncio.sleep(poll)
        if self._running:
            log.warning("node %d: %s (after %.2fs); stopping without a leadership handover "
                        "(the others elect a leader after an election timeout)", node_id,
                        gave_up, loop.time() - started)
        return None

    async def wait_applied(self, index: int) -> None:
        """Return once this node has applied ``index``."""
        if self.state.applied_index >= index:
            return
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._applied.add(index, fut)
        await fut

    # ------------------------------------------------------------------ reads
    @property
    def term(self) -> int:
        return self.raw.term

    @property
    def port(self) -> int:
        return self.config.port

    def get_nodes(self) -> list[dict[str, Any]]:
        return self.state.member_list(self.leader_id)

    def get_leader(self) -> dict[str, Any]:
        lead = self.leader_id
        return {"leader_id": lead or None, "address": self.address_of(lead)}
