"""What callers of one node wait for, and how each wait ends.

- :class:`Proposals`: the pending-proposal table, by log index. Every proposal is answered
  exactly once: with its result when its entry is applied; ``Unavailable`` when an entry of
  another term was applied at its index (it certainly did not commit); ``OutcomeUnknown`` when
  its entry was only replaced in this node's log, dropped by a snapshot install, or the node
  stopped or failed (a node that still holds the entry may commit it: docs/design.md rule 8).
- :class:`ReadWaiters`: ReadIndex requests by context (unique across nodes and restarts), then
  by the index that must be applied before the read may be answered.
- :class:`ApplyWaiters`: callers waiting until an index is applied here.
- :class:`LeaderWaiters`: leadership transfers waiting until a node leads.

The Ready loop (:class:`pgraft.node.node.Node`) resolves them; the hot paths (a proposal, an
applied entry) touch the underlying dicts and heaps directly, the rules live here.
"""

from __future__ import annotations

import asyncio
import heapq
import os
from typing import Any, Protocol

from ..errors import OutcomeUnknown, PgraftError, Unavailable
from ..raft.types import ReadState
from .metrics import Metrics


class Waiter(Protocol):
    """What a proposal is answered through: an asyncio future, or anything with the same three
    methods (the client server answers through one, with no future per request)."""

    def done(self) -> bool: ...

    def set_result(self, result: Any, /) -> None: ...

    def set_exception(self, exc: BaseException, /) -> None: ...


class Pending:
    """A proposal waiting for its entry (proposed in ``term``) to be applied."""

    __slots__ = ("term", "future", "started")

    def __init__(self, term: int, future: Waiter, started: float) -> None:
        self.term = term
        self.future = future
        self.started = started


class Proposals:
    """The pending-proposal table (see the module docstring)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        #: log index -> the proposal whose entry was appended there.
        self.pending: dict[int, Pending] = {}

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, index: int, term: int, waiter: Waiter, started: float) -> None:
        """A proposal's entry was appended at ``index`` in ``term``. A proposal still pending
        at that index (its entry was replaced, and this node leads again) is answered first."""
        pending = self.pending
        if index in pending:
            self.fail_overwritten(index, pending[index])
        pending[index] = Pending(term, waiter, started)

    def fail_overwritten(self, index: int, p: Pending, *, certain: bool = False) -> None:
        """``certain``: a committed entry of another term was applied at ``index``. Otherwise
        the entry was only replaced in this node's log, and a node that still holds it may
        become leader and commit it (Raft's Figure 8): the outcome is unknown."""
        self.metrics.proposals_failed += 1
        if p.future.done():
            return
        if certain:
            p.future.set_exception(Unavailable(
                f"the entry proposed at index {index} in term {p.term} was replaced by another "
                "leader's entry: it was not committed",
                hint="the leader changed while the request was pending; retry on the new "
                     "leader"))
        else:
            p.future.set_exception(OutcomeUnknown(
                f"the entry proposed at index {index} in term {p.term} was replaced in this "
                "node's log by another leader's entry; its outcome is unknown (a node that "
                "still holds it may become leader and commit it)",
                hint="the leader changed while the request was pending; check whether it took "
                     "effect before retrying on the new leader"))

    def fail_replaced(self, entries: list[Any], last_index: int) -> None:
        """``entries`` are about to be written over a log that ends at ``last_index``: fail the
        proposals whose entries they overwrite (same index, another term)."""
        pending = self.pending
        if not pending:
            return
        first = entries[0].index
        if first > last_index:
            return
        for index in [i for i in pending if i >= first]:
            off = index - first
            p = pending[index]
            if off < len(entries) and entries[off].term == p.term:
                continue
            del pending[index]
            self.fail_overwritten(index, p)

    def fail_not_in_log(self, snapshot_index: int, log_term: Any) -> None:
        """A snapshot up to ``snapshot_index`` was installed. Proposals at or below it will
        never be applied here one by one: whether they committed is unknown to this node (the
        snapshot carries no per-entry record). Those above it whose entry the install dropped
        from the log (``log_term(index)`` is not their term) are gone from here too: each is
        answered now, exactly once, rather than left to time out (or to be overwritten in the
        table by a later proposal at the same index)."""
        pending = self.pending
        for index in [i for i, p in pending.items()
                      if i <= snapshot_index or log_term(i) != p.term]:
            self.fail_overwritten(index, pending.pop(index))

    def fail_all(self, exc: OutcomeUnknown) -> None:
        for p in self.pending.values():
            if not p.future.done():
                p.future.set_exception(exc)
        self.pending.clear()


class ReadWaiters:
    """Linearizable reads: first waiting for their ReadState (by context), then for the
    applied index to reach the read index."""

    def __init__(self, node_id: int) -> None:
        #: context -> the read waiting for its ReadState.
        self.pending: dict[bytes, asyncio.Future[Any]] = {}
        #: heap of (read index, seq, future): reads waiting for the applied index.
        self.waiting: list[tuple[int, int, asyncio.Future[Any]]] = []
        self._seq = 0
        # ReadIndex contexts are unique across nodes and restarts (node id, a random boot
        # nonce, a counter): the leader matches acknowledgements by context.
        self._prefix = node_id.to_bytes(8, "little") + os.urandom(8)
        self._counter = 0

    def new_context(self) -> bytes:
        self._counter += 1
        return self._prefix + self._counter.to_bytes(8, "little")

    def on_read_states(self, read_states: list[ReadState], applied: int) -> None:
        """The core answered: a refused read gets None (the caller retries), the others their
        index, at once if it is applied, else once it is."""
        for rs in read_states:
            fut = self.pending.pop(rs.context, None)
            if fut is None or fut.done():
                continue
            if rs.refused:
                fut.set_result(None)  # the caller retries
                continue
            if rs.index <= applied:
                fut.set_result(rs.index)
            else:
                self._seq += 1
                heapq.heappush(self.waiting, (rs.index, self._seq, fut))

    def release(self, applied: int) -> None:
        waiters = self.waiting
        while waiters and waiters[0][0] <= applied:
            index, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(index)

    def fail_all(self, exc: PgraftError) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self.pending.clear()
        for _, _, fut in self.waiting:
            if not fut.done():
                fut.set_exception(exc)
        self.waiting.clear()


class ApplyWaiters:
    """Callers waiting until an index is applied on this node."""

    def __init__(self) -> None:
        #: heap of (index, seq, future).
        self.waiting: list[tuple[int, int, asyncio.Future[Any]]] = []
        self._seq = 0

    def add(self, index: int, fut: asyncio.Future[Any]) -> None:
        self._seq += 1
        heapq.heappush(self.waiting, (index, self._seq, fut))

    def release(self, applied: int) -> None:
        waiters = self.waiting
        while waiters and waiters[0][0] <= applied:
            _, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(None)

    def fail_all(self, exc: PgraftError) -> None:
        for _, _, fut in self.waiting:
            if not fut.done():
                fut.set_exception(exc)
        self.waiting.clear()


class LeaderWaiters:
    """Leadership transfers waiting until their target leads (as seen here)."""

    def __init__(self) -> None:
        self.waiting: list[tuple[int, asyncio.Future[Any]]] = []

    def add(self, entry: tuple[int, asyncio.Future[Any]]) -> None:
        self.waiting.append(entry)

    def discard(self, entry: tuple[int, asyncio.Future[Any]]) -> None:
        if entry in self.waiting:
            self.waiting.remove(entry)

    def leader_is(self, leader_id: int) -> None:
        for entry in list(self.waiting):
            target, fut = entry
            if target == leader_id:
                self.waiting.remove(entry)
                if not fut.done():
                    fut.set_result(True)

    def fail_all(self, exc: PgraftError) -> None:
        for _, fut in self.waiting:
            if not fut.done():
                fut.set_exception(exc)
        self.waiting.clear()


class Waiters:
    """Every wait of one node."""

    def __init__(self, node_id: int, metrics: Metrics) -> None:
        self.proposals = Proposals(metrics)
        self.reads = ReadWaiters(node_id)
        self.applied = ApplyWaiters()
        self.leader = LeaderWaiters()

    def fail_all(self, exc: PgraftError, proposals_exc: OutcomeUnknown) -> None:
        """Fail every waiter with ``exc``; proposals (whose entries are in the log) with
        ``proposals_exc``."""
        self.proposals.fail_all(proposals_exc)
        self.reads.fail_all(exc)
        self.leader.fail_all(exc)
        self.applied.fail_all(exc)
