"""Snapshots of the applied state, log compaction, and the InstallSnapshot policy.

The Raft core only knows a snapshot's identity (:class:`pgraft.raft.SnapshotMeta`: index, term,
membership). The runtime owns the data: the file format and store (:mod:`pgraft.node.snapfile`),
the streaming of a file to a follower (:mod:`pgraft.node.snapxfer`), and, here, when one is
taken, what is compacted afterwards, and how a received one is installed. What this needs from
the running node is the small :class:`SnapshotHost` (no back-reference to the Node itself).

When snapshots are taken, and what is compacted
-----------------------------------------------
Every node snapshots its own applied state when, since its last snapshot, ``snapshot_entries``
entries were applied or ``snapshot_bytes`` bytes were added to its log (either 0 = off). The
state is serialized on the event loop (one msgpack call over the in-memory state: a copy,
so applying continues at once) and written in a worker thread. Once the file is durable, the
storage's snapshot becomes this one and the log prefix up to ``index - snapshot_keep`` is
compacted (``Log.compact`` drops whole segments, so up to one segment more is kept), so a
follower that lags by fewer than ``snapshot_keep`` entries still catches up from the log.
Compaction runs on the event loop between two Readies, when no sync is in flight.

InstallSnapshot
---------------
The core's MSG_SNAP requests are taken out of a Ready's messages (:meth:`SnapshotManager.
intercept`) and become chunked transfers of the current snapshot file (pgraft.node.snapxfer).
A follower steps the metadata of a received, verified file into its core; the core hands it
back in ``Ready.snapshot``, and :meth:`SnapshotManager.install` renames the file into place
(the commit point), restores the applied state, resets the log after it, and the core's
MsgAppResp tells the leader.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import StorageError
from ..raft import RawNode
from ..raft.types import SnapshotMeta
from ..state import AppliedState
from .snapfile import SnapshotFile, SnapshotStore
from .snapxfer import MSG_SNAP, SnapshotTransfers, TransferHost, TransferStats
from .storage import DiskStorage

log = logging.getLogger("pgraft.snapshot")


class SnapshotHost(TransferHost, Protocol):
    """What the snapshot policy needs from the running node (besides the transfers' needs:
    running, is-leader, send, kick)."""

    @property
    def syncing(self) -> bool:
        """A sync of the log is in flight: the log must not be compacted under it."""
        ...

    def snapshot_installed(self, meta: SnapshotMeta) -> None:
        """A received snapshot is now the applied state: waiters and the membership follow."""
        ...


@dataclass
class SnapshotStats(TransferStats):
    taken: int = 0
    installed: int = 0
    last_take_seconds: float = 0.0
    last_compacted_to: int = 0


class SnapshotManager:
    """Snapshot policy, compaction, and InstallSnapshot of one running node (every Raft
    decision stays in the core). :meth:`attach` names the host before anything runs."""

    host: SnapshotHost

    def __init__(self, node_id: int, storage: DiskStorage, state: AppliedState, raw: RawNode,
                 *, loop: asyncio.AbstractEventLoop, entries: int, nbytes: int, keep: int,
                 chunk_size: int, window: int, stall_timeout: float = 2.0,
                 max_stalls: int = 5, verify_timeout: float = 60.0) -> None:
        self.node_id = node_id
        self.storage = storage
        self.store: SnapshotStore = storage.snapshots
        self.state = state
        self.loop = loop
        self.entries = entries
        self.nbytes = nbytes
        self.keep = keep
        self.stats = SnapshotStats()
        self.executor = concurrent.futures.ThreadPoolExecutor(
            2, thread_name_prefix=f"pgraft-snap-{node_id}")
        self.transfers = SnapshotTransfers(
            node_id, raw, self.store, self.executor, self.stats, loop=loop,
            chunk_size=chunk_size, window=window, stall_timeout=stall_timeout,
            max_stalls=max_stalls, verify_timeout=verify_timeout)
        self._task: asyncio.Task[None] | None = None
        self._done: SnapshotFile | None = None
        self._closed = False
        self._installing = False
        self._rearm(self.store.meta.index)

    def attach(self, host: SnapshotHost) -> None:
        self.host = host
        self.transfers.attach(host)

    # ------------------------------------------------------------------- policy
    def _rearm(self, index: int) -> None:
        self._next_index = index + self.entries if self.entries else 1 << 62
        self._next_bytes = (self.storage.byte_size + self.nbytes) if self.nbytes else 1 << 62

    def after_ready(self) -> None:
        """Called by the Ready loop after each ``advance`` (no sync is in flight): finish a
        snapshot whose file is durable (then compact), or start one if one is due."""
        if self._done is not None:
            self._finish_taken()
        elif self._task is None and (self.state.applied_index >= self._next_index
                                     or self.storage.byte_size >= self._next_bytes):
            self.take()

    def take(self) -> bool:
        """Start a snapshot of the applied state now (False if one is being written or nothing
        was applied since the last one)."""
        if self._task is not None or self._done is not None or self._closed:
            return False
        state = self.state
        index = state.applied_index
        if index <= self.storage.snapshot_meta().index:
            self._rearm(max(index, self.storage.snapshot_meta().index))
            return False
        started = time.perf_counter()
        meta = SnapshotMeta(index, state.applied_term, state.members)
        data = state.snapshot()  # a copy: applying goes on while the thread writes it
        self._next_index = self._next_bytes = 1 << 62
        self._task = self.loop.create_task(self._write(meta, data, started),
                                           name=f"pgraft-snapshot-{self.node_id}")
        return True

    async def _write(self, meta: SnapshotMeta, data: bytes, started: float) -> None:
        try:
            f = await self.loop.run_in_executor(self.executor, self.store.write, meta, data)
        except Exception as exc:
            log.error("node %d: writing the snapshot at index %d failed: %s", self.node_id,
                      meta.index, exc)
            self._task = None
            self._rearm(meta.index)
            return
        self.stats.last_take_seconds = time.perf_counter() - started
        self._done = f
        if not self.host.syncing and not self._installing:
            # The Ready loop is idle (waiting for work) or between two awaits that do not touch
            # the log: compact now rather than after the next Ready, which may be far off.
            self._finish_taken()

    def _finish_taken(self) -> None:
        f = self._done
        assert f is not None
        self._done = None
        self._task = None
        storage = self.storage
        if f.meta.index <= storage.snapshot_meta().index:  # an installed one is newer
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f.path)
            self._rearm(storage.snapshot_meta().index)
            return
        self.store.set_current(f)
        storage.set_snapshot(f.meta)
        self.stats.taken += 1
        compact_to = f.meta.index - self.keep
        first = storage.compact(compact_to) if compact_to > 0 else storage.first_index()
        self.stats.last_compacted_to = first - 1
        self._rearm(f.meta.index)
        log.info("node %d: snapshot at index %d (term %d, %d bytes, %.3fs); log now starts at "
                 "%d (%d bytes)", self.node_id, f.meta.index, f.meta.term, f.size,
                 self.stats.last_take_seconds, first, storage.byte_size)


    # ----------------------------------------------------------- InstallSnapshot
    def intercept(self, messages: list[Any]) -> list[Any]:
        """The messages of a Ready, minus the core's MSG_SNAP requests, which start (or keep
        going) a chunked transfer instead."""
        for m in messages:
            if m.type == MSG_SNAP:
                break
        else:
            return messages
        rest = []
        start_send = self.transfers.start_send
        for m in messages:
            if m.type == MSG_SNAP:
                start_send(m)
            else:
                rest.append(m)
        return rest

    def on_message(self, m: Any) -> None:
        """A MSG_SNAP (chunk) or MSG_SNAP_RESP (ack) from a peer: never stepped as such."""
        self.transfers.on_message(m)

    async def install(self, meta: SnapshotMeta) -> None:
        """``Ready.snapshot``: make the received snapshot this node's state (see the module
        docstring). Runs inside the Ready loop, before the Ready's entries are written."""
        loop = self.loop
        entry = self.transfers.take_verified(meta)
        if entry is None:
            raise StorageError(f"the core installs snapshot {meta.index} (term {meta.term}) but "
                               "no verified snapshot file was received for it")
        tmp, f = entry
        self._installing = True
        try:
            f = await loop.run_in_executor(self.executor, self.store.adopt, tmp, f)
            data = await loop.run_in_executor(
                self.executor, lambda: self.store.load_data(f, verify=False))
        finally:
            self._installing = False
        self.store.set_current(f)
        if self._done is not None and self._done.meta.index <= meta.index:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._done.path)
            self._done = None
            self._task = None
        self.state.restore(data)
        self.storage.apply_snapshot(meta)
        self.host.snapshot_installed(meta)
        self.stats.installed += 1
        self._rearm(meta.index)
        log.info("node %d: installed snapshot %d (term %d, %d bytes)", self.node_id,
                 meta.index, meta.term, f.size)

    # ------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        cur = self.store.current
        stats = self.stats
        return {
            "index": cur.meta.index if cur else 0,
            "term": cur.meta.term if cur else 0,
            "bytes": cur.size if cur else 0,
            "taken": stats.taken,
            "installed": stats.installed,
            "sent": stats.sent,
            "send_failures": stats.send_failures,
            "sent_bytes": stats.sent_bytes,
            "received_bytes": stats.received_bytes,
            "last_take_seconds": round(stats.last_take_seconds, 6),
            "compacted_to": stats.last_compacted_to,
            **self.transfers.status(),
        }

    async def close(self) -> None:
        self._closed = True
        inc = self.transfers.stop()
        task = self._task
        if task is not None and not task.done():
            # Let a snapshot write finish: the thread cannot be interrupted anyway.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 30.0)
        await self.loop.run_in_executor(None, self.executor.shutdown, True)
        self.transfers.discard(inc)
