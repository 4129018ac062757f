"""InstallSnapshot streaming: the chunk/ack codec and both sides of a transfer.

The core emits a MSG_SNAP carrying only the metadata; :meth:`SnapshotTransfers.start_send`
streams the leader's snapshot *file* (pgraft.node.snapfile) verbatim in chunks, each a MSG_SNAP
whose ``Message.snapshot`` bytes are::

    4s "PSCH", u8 version 1, u8 flags 0, u16 0, u64 snapshot index, u64 snapshot term,
    u64 offset, u64 file size, u32 body CRC32C, then the chunk's bytes

The follower appends in-order chunks to ``snap/recv-<index>-<term>.tmp`` (in a worker thread,
CRC computed as it goes) and answers each with a MSG_SNAP_RESP whose ``snapshot`` bytes are::

    4s "PSAK", u8 version 1, u8 status, u16 0, u64 snapshot index, u64 snapshot term,
    u64 next offset

status 0 = progress (bytes before ``next`` are written), 1 = done (fsynced and the CRC and
header verified), 2 = failed (checksum mismatch: the file was discarded), 3 = gap (a chunk
arrived out of order: send from ``next``). Flow control: at most ``window`` chunks are
unacknowledged. A lost chunk or ack shows up as a gap or as a stall; after a stall
(``stall_timeout`` without progress) the leader resends from the last acknowledged offset,
and the follower ignores bytes it already has, so a dropped connection costs at most one
window. A transfer that makes no progress for ``max_stalls`` stalls is reported failed to the
core (``report_snapshot(peer, False)``), which asks again later; the follower still holds the
partial file, so a new transfer of the same snapshot resumes where it stopped (an offset-0
chunk is answered with the follower's next offset). A snapshot replaces nothing on the
follower until it is complete and verified: then the follower steps a MSG_SNAP with the
metadata into its core, the core hands it back in ``Ready.snapshot``, and
:meth:`pgraft.node.snapshots.SnapshotManager.install` takes the verified file
(:meth:`SnapshotTransfers.take_verified`) and makes it the node's state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from .. import failpoints as _fp
from .._impl import core
from ..errors import PgraftError, StorageCorrupted, StorageError
from ..fsutil import io_error
from ..raft import RawNode
from ..raft.types import SnapshotMeta
from .snapfile import HEADER_SIZE, SnapshotFile, SnapshotStore, read_snapshot_file

log = logging.getLogger("pgraft.snapshot")

MSG_SNAP = core.MSG_SNAP
MSG_SNAP_RESP = core.MSG_SNAP_RESP
_CHUNK = struct.Struct("<4sBBHQQQQI")  # "PSCH", version, flags, 0, index, term, offset, size, crc
_ACK = struct.Struct("<4sBBHQQQ")  # "PSAK", version, status, 0, index, term, next
CHUNK_MAGIC = b"PSCH"
ACK_MAGIC = b"PSAK"
ACK_PROGRESS = 0
ACK_DONE = 1
ACK_FAILED = 2
ACK_GAP = 3


class TransferHost(Protocol):
    """What a transfer needs from the running node."""

    @property
    def running(self) -> bool: ...

    @property
    def is_leader(self) -> bool:
        """This node leads (as its Ready loop last learned from the core)."""
        ...

    def send(self, messages: list[Any]) -> None: ...

    def kick(self) -> None:
        """Wake the Ready loop (the core has something new to say)."""
        ...


@dataclass
class TransferStats:
    sent: int = 0
    send_failures: int = 0
    received_bytes: int = 0
    sent_bytes: int = 0


def encode_chunk(f: SnapshotFile, offset: int, data: bytes) -> bytes:
    return _CHUNK.pack(CHUNK_MAGIC, 1, 0, 0, f.meta.index, f.meta.term, offset, f.size,
                       f.body_crc) + data


def decode_chunk(raw: bytes) -> tuple[tuple[int, int, int, int], int, memoryview]:
    """((index, term, size, crc), offset, data) of a chunk; ValueError if malformed."""
    if len(raw) < _CHUNK.size:
        raise ValueError("short snapshot chunk")
    magic, version, _flags, _res, index, term, offset, size, crc = _CHUNK.unpack_from(raw)
    if magic != CHUNK_MAGIC or version != 1:
        raise ValueError("not a snapshot chunk")
    data = memoryview(raw)[_CHUNK.size:]
    if offset + len(data) > size or size < HEADER_SIZE:
        raise ValueError(f"chunk [{offset}, {offset + len(data)}) outside a {size}-byte file")
    return (index, term, size, crc), offset, data


def encode_ack(index: int, term: int, status: int, next_offset: int) -> bytes:
    return _ACK.pack(ACK_MAGIC, 1, status, 0, index, term, next_offset)


def decode_ack(raw: bytes) -> tuple[int, int, int, int]:
    """(index, term, status, next offset); ValueError if malformed."""
    if len(raw) < _ACK.size:
        raise ValueError("short snapshot ack")
    magic, version, status, _res, index, term, nxt = _ACK.unpack_from(raw)
    if magic != ACK_MAGIC or version != 1:
        raise ValueError("not a snapshot ack")
    return index, term, status, nxt


class _Outgoing:
    """The leader's side of one transfer."""

    def __init__(self, peer: int, f: SnapshotFile, term: int, fd: int) -> None:
        self.peer = peer
        self.file = f
        self.term = term
        self.fd = fd
        self.sent = 0
        self.acked = 0
        self.rewound = -1
        self.stalls = 0
        self.status: int | None = None
        self.event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.started = time.monotonic()

    def key(self) -> tuple[int, int]:
        return self.file.meta.index, self.file.meta.term


class _Incoming:
    """The follower's side of one transfer: an in-order file being written."""

    def __init__(self, key: tuple[int, int, int, int], src: int, term: int, path: str) -> None:
        self.key = key
        self.src = src
        self.term = term
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.expected = 0  # end of the bytes queued for writing
        self.written = 0  # end of the bytes written
        self.crc = 0  # CRC32C of the body bytes written so far
        self.queue: deque[tuple[int, bytes]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.aborted = False
        self.finishing = False
        self.started = time.monotonic()

    def write(self, offset: int, data: bytes) -> None:
        try:
            if _fp.ACTIVE is not None:
                _fp.hit("snapshot.write", self.path)
            view = memoryview(data)
            pos = offset
            while view:  # a short pwrite (a file system nearly full) writes the rest next
                n = os.pwrite(self.fd, view, pos)
                view = view[n:]
                pos += n
        except OSError as exc:
            raise io_error("writing the received snapshot file", self.path, exc,
                           full=True) from None
        if offset < HEADER_SIZE:
            body = data[HEADER_SIZE - offset:] if offset + len(data) > HEADER_SIZE else b""
        else:
            body = data
        if body:
            self.crc = core.crc32c(body, self.crc)

    def finish(self) -> SnapshotFile:
        """fsync, then check the header, size and body CRC against what was announced."""
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise io_error("syncing the received snapshot file", self.path, exc,
                           full=True) from None
        index, term, size, crc = self.key
        if self.crc != crc:
            raise StorageCorrupted(f"{self.path}: received snapshot body CRC mismatch",
                                   path=self.path)
        f, _ = read_snapshot_file(self.path)
        if (f.meta.index, f.meta.term, f.size, f.body_crc) != (index, term, size, crc):
            raise StorageCorrupted(f"{self.path}: received snapshot header does not match the "
                                   "transfer", path=self.path)
        return f

    def close(self, unlink: bool) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)




class SnapshotTransfers:
    """Both sides of InstallSnapshot for one node: the leader's transfers (one per follower)
    and the follower's one incoming transfer (see the module docstring).

    The Raft decisions stay in the core: it asks for a snapshot (MSG_SNAP), is told how a
    transfer ended (``report_snapshot``) and decides whether to install a verified one (the
    MSG_SNAP stepped into it). :meth:`attach` names the host before anything runs."""

    host: TransferHost

    def __init__(self, node_id: int, raw: RawNode, store: SnapshotStore,
                 executor: concurrent.futures.Executor, stats: TransferStats, *,
                 loop: asyncio.AbstractEventLoop, chunk_size: int, window: int,
                 stall_timeout: float = 2.0, max_stalls: int = 5,
                 verify_timeout: float = 60.0) -> None:
        self.node_id = node_id
        self.raw = raw
        self.store = store
        self.executor = executor
        self.stats = stats
        self.loop = loop
        self.chunk_size = chunk_size
        self.window = window
        self.stall_timeout = stall_timeout
        self.max_stalls = max_stalls
        self.verify_timeout = verify_timeout
        self._outgoing: dict[int, _Outgoing] = {}
        self._incoming: _Incoming | None = None
        self._verified: dict[tuple[int, int], tuple[str, SnapshotFile]] = {}
        self._closed = False

    def attach(self, host: TransferHost) -> None:
        self.host = host

    def on_message(self, m: Any) -> None:
        """A MSG_SNAP (chunk) or MSG_SNAP_RESP (ack) from a peer: never stepped as such."""
        if m.type == MSG_SNAP_RESP:
            self._on_ack(m)
        elif m.snapshot is not None:
            self._on_chunk(m)

    # ------------------------------------------------------------- leader side
    def start_send(self, m: Any) -> None:
        """The core asked (``m``, a MSG_SNAP with the metadata) for a snapshot to be sent:
        start a transfer of the current snapshot file, or keep the one in progress."""
        to = m.dst
        cur = self.store.current
        if cur is None or (cur.meta.index, cur.meta.term) != (m.index, m.log_term):
            log.error("node %d: the core asked for snapshot %d/%d for node %d, but the snapshot "
                      "file is %s", self.node_id, m.index, m.log_term, to,
                      "missing" if cur is None else f"{cur.meta.index}/{cur.meta.term}")
            self.raw.report_snapshot(to, False)
            return
        out = self._outgoing.get(to)
        if out is not None and out.status is None and out.key() == (m.index, m.log_term):
            out.term = m.term
            return
        if out is not None:
            self._stop_outgoing(out)
        try:
            fd = os.open(cur.path, os.O_RDONLY)
        except OSError as exc:
            log.error("node %d: cannot open snapshot %s: %s", self.node_id, cur.path, exc)
            self.raw.report_snapshot(to, False)
            return
        out = _Outgoing(to, cur, m.term, fd)
        self._outgoing[to] = out
        out.task = self.loop.create_task(self._send_loop(out),
                                         name=f"pgraft-snap-send-{self.node_id}-{to}")
        log.info("node %d: sending snapshot %d (term %d, %d bytes) to node %d", self.node_id,
                 cur.meta.index, cur.meta.term, cur.size, to)

    def _stop_outgoing(self, out: _Outgoing) -> None:
        if self._outgoing.get(out.peer) is out:
            del self._outgoing[out.peer]
        if out.task is not None and not out.task.done() and out.task is not asyncio.current_task():
            out.task.cancel()
        if out.fd >= 0:
            os.close(out.fd)
            out.fd = -1

    async def _send_loop(self, out: _Outgoing) -> None:
        host = self.host
        raw = self.raw
        loop = self.loop
        f = out.file
        limit = self.chunk_size * self.window
        ok = False
        try:
            while out.status is None:
                if not host.running or raw.term != out.term or not host.is_leader:
                    return  # not the leader of that term any more: the new leader decides
                while out.sent < f.size and out.sent - out.acked < limit:
                    off = out.sent
                    n = min(self.chunk_size, f.size - off)
                    data = await loop.run_in_executor(self.executor, os.pread, out.fd, n, off)
                    if len(data) != n:
                        raise StorageError(f"{f.path}: short read at offset {off}")
                    if out.status is not None or self._outgoing.get(out.peer) is not out:
                        break
                    if out.sent != off:
                        continue  # rewound by an ack while reading
                    host.send([core.Message(
                        MSG_SNAP, self.node_id, out.peer, out.term, f.meta.term, f.meta.index,
                        snapshot=encode_chunk(f, off, data))])
                    out.sent = off + n
                    self.stats.sent_bytes += n
                if out.status is not None:
                    break
                out.event.clear()
                timeout = self.stall_timeout if out.acked < f.size else self.verify_timeout
                before = out.acked
                try:
                    await asyncio.wait_for(out.event.wait(), timeout)
                except TimeoutError:
                    if out.acked == before:
                        out.stalls += 1
                        if out.stalls >= self.max_stalls:
                            log.warning("node %d: snapshot transfer to node %d stalled at "
                                        "%d/%d bytes; giving up for now", self.node_id,
                                        out.peer, out.acked, f.size)
                            return
                        out.sent = out.acked  # resend what was not acknowledged
            ok = out.status == ACK_DONE
            if ok:
                self.stats.sent += 1
                log.info("node %d: snapshot %d sent to node %d (%d bytes in %.2fs)",
                         self.node_id, f.meta.index, out.peer, f.size,
                         time.monotonic() - out.started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("node %d: snapshot transfer to node %d failed: %s", self.node_id,
                        out.peer, exc)
        finally:
            if self._outgoing.get(out.peer) is out:
                self._stop_outgoing(out)
                if host.running and raw.term == out.term:
                    if not ok:
                        self.stats.send_failures += 1
                    raw.report_snapshot(out.peer, ok)
                    host.kick()
            elif out.fd >= 0:
                os.close(out.fd)
                out.fd = -1

    def _on_ack(self, m: Any) -> None:
        out = self._outgoing.get(m.src)
        if out is None or m.snapshot is None:
            return
        try:
            index, term, status, nxt = decode_ack(m.snapshot)
        except ValueError:
            return
        if (index, term) != out.key():
            return
        if status == ACK_PROGRESS:
            if nxt > out.acked:
                out.acked = min(nxt, out.file.size)
                out.stalls = 0
                if out.sent < out.acked:
                    out.sent = out.acked
        elif status == ACK_GAP:
            if nxt < out.sent and nxt != out.rewound:
                out.rewound = nxt
                out.sent = nxt
                out.acked = min(out.acked, nxt)
        elif status == ACK_DONE:
            out.acked = out.file.size
            out.status = ACK_DONE
        elif status == ACK_FAILED:
            out.status = ACK_FAILED
        out.event.set()

    # ----------------------------------------------------------- follower side
    def _ack(self, src: int, key: tuple[int, int], status: int, nxt: int) -> None:
        if not self.host.running:
            return
        self.host.send([core.Message(
            MSG_SNAP_RESP, self.node_id, src, self.raw.term, key[1], key[0],
            reject=status == ACK_FAILED, snapshot=encode_ack(key[0], key[1], status, nxt))])

    def _on_chunk(self, m: Any) -> None:
        raw = self.raw
        if self._closed or m.term < raw.term:
            return  # a deposed leader's transfer
        try:
            key, offset, data = decode_chunk(m.snapshot)
        except ValueError as exc:
            log.warning("node %d: ignored a malformed snapshot chunk from node %d: %s",
                        self.node_id, m.src, exc)
            return
        index, term = key[0], key[1]
        inc = self._incoming
        if inc is None or inc.key != key:
            if offset != 0:
                self._ack(m.src, (index, term), ACK_GAP, 0)
                return
            if index <= raw.log.committed or (index, term) in self._verified:
                # Nothing to receive: we hold it already. Tell the leader, and let the core
                # answer with how far our log goes.
                self._ack(m.src, (index, term), ACK_DONE, key[2])
                if (index, term) not in self._verified:
                    self._step_meta(m.src, m.term, SnapshotMeta(index, term, None))
                else:
                    self._step_meta(m.src, m.term, self._verified[(index, term)][1].meta)
                return
            if inc is not None:
                self._abort(inc)
            inc = _Incoming(key, m.src, m.term, self.store.temp_path(f"recv-{index}-{term}"))
            self._incoming = inc
            log.info("node %d: receiving snapshot %d (term %d, %d bytes) from node %d",
                     self.node_id, index, term, key[2], m.src)
        inc.src = m.src
        inc.term = max(inc.term, m.term)
        if offset == inc.expected:
            inc.expected = offset + len(data)
            inc.queue.append((offset, bytes(data)))
            if inc.task is None:
                inc.task = self.loop.create_task(self._drain(inc))
        elif offset < inc.expected:
            if not inc.finishing:
                self._ack(m.src, (index, term), ACK_PROGRESS, inc.written)
        else:
            self._ack(m.src, (index, term), ACK_GAP, inc.expected)

    def _abort(self, inc: _Incoming) -> None:
        inc.aborted = True
        inc.queue.clear()
        if self._incoming is inc:
            self._incoming = None
        if inc.task is None:
            inc.close(unlink=True)

    async def _drain(self, inc: _Incoming) -> None:
        loop = self.loop
        index, term, size, _ = inc.key
        try:
            while inc.queue and not inc.aborted:
                off, data = inc.queue.popleft()
                await loop.run_in_executor(self.executor, inc.write, off, data)
                inc.written = off + len(data)
                self.stats.received_bytes += len(data)
                if not inc.aborted and inc.written < size:
                    self._ack(inc.src, (index, term), ACK_PROGRESS, inc.written)
            if inc.aborted or inc.written < size or inc.finishing:
                return
            inc.finishing = True
            try:
                f = await loop.run_in_executor(self.executor, inc.finish)
            except (PgraftError, OSError) as exc:
                log.warning("node %d: received snapshot %d is bad (%s); discarded",
                            self.node_id, index, exc)
                self._ack(inc.src, (index, term), ACK_FAILED, 0)
                inc.aborted = True
                return
            if inc.aborted:
                # Another transfer replaced this one while it was being verified: its file is
                # removed below, so the core must never hear of it.
                return
            inc.close(unlink=False)
            if self._incoming is inc:
                self._incoming = None
            for old_path, _old in self._verified.values():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old_path)
            self._verified = {(index, term): (inc.path, f)}
            log.info("node %d: snapshot %d received and verified (%d bytes in %.2fs)",
                     self.node_id, index, size, time.monotonic() - inc.started)
            self._ack(inc.src, (index, term), ACK_DONE, size)
            self._step_meta(inc.src, inc.term, f.meta)
        except asyncio.CancelledError:
            inc.aborted = True
            raise
        except Exception as exc:
            log.warning("node %d: receiving snapshot %d failed: %s", self.node_id, index,
                        exc)
            inc.aborted = True
        finally:
            inc.task = None
            if inc.aborted:
                inc.close(unlink=True)
                if self._incoming is inc:
                    self._incoming = None

    def _step_meta(self, leader: int, term: int, meta: SnapshotMeta) -> None:
        host = self.host
        if not host.running:
            return
        msg = core.Message(MSG_SNAP, leader, self.node_id, term, meta.term, meta.index,
                           snapshot=meta.encode() if meta.membership is not None else None)
        try:
            self.raw.step(msg)
        except PgraftError as exc:
            log.warning("node %d: snapshot %d not taken by the core: %s", self.node_id,
                        meta.index, exc.message)
        host.kick()

    def take_verified(self, meta: SnapshotMeta) -> tuple[str, SnapshotFile] | None:
        """The received and verified file of snapshot ``meta`` (its temporary path and what
        its header says), now the caller's to install; None if there is none."""
        return self._verified.pop((meta.index, meta.term), None)

    # ------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        inc = self._incoming
        return {
            "sending": {p: {"acked": o.acked, "size": o.file.size}
                        for p, o in self._outgoing.items()},
            "receiving": None if inc is None else {
                "from": inc.src, "index": inc.key[0], "written": inc.written,
                "size": inc.key[2]},
        }

    def stop(self) -> _Incoming | None:
        """Stop every transfer; the aborted incoming one, if any, whose file is closed with
        :meth:`discard` once no worker thread can be writing it."""
        self._closed = True
        for out in list(self._outgoing.values()):
            self._stop_outgoing(out)
        inc = self._incoming
        if inc is not None:
            self._abort(inc)
        return inc

    @staticmethod
    def discard(inc: _Incoming | None) -> None:
        if inc is not None and inc.fd >= 0:
            inc.close(unlink=True)
