"""Snapshots of the applied state, log compaction, and InstallSnapshot streaming.

The Raft core only knows a snapshot's identity (:class:`pgraft.raft.SnapshotMeta`: index, term,
membership). This module owns the data: the file on disk, when one is taken, what is compacted
afterwards, and how a leader streams one to a follower.

Snapshot file (``<data dir>/snap/<index, 20 digits>-<term, 20 digits>.snap``)
--------------------------------------------------------------------------
::

    off  0  8s   magic b"PGRFTSNP"
    off  8  u32  format version (1)
    off 12  u32  header size (64)
    off 16  u64  index (last entry the snapshot covers)
    off 24  u64  term of that entry
    off 32  u64  M = bytes of metadata
    off 40  u64  D = bytes of state data
    off 48  u32  CRC32C of the body (metadata + state data)
    off 52  8    zero
    off 60  u32  CRC32C of bytes [0, 60)
    off 64  M    metadata: ``SnapshotMeta.encode()`` (index, term, membership with roles and
                 the removed ids)
    ...     D    state data: ``AppliedState.snapshot()`` (KV store, membership view, applied
                 index and term)

Writing (:meth:`SnapshotStore.write`, in a worker thread): ``<name>.tmp``, write, fsync,
rename to ``<name>``, fsync the directory; only then are older snapshots unlinked. A crash at
any point leaves the previous snapshot intact; ``*.tmp`` files (an unfinished write or an
unfinished transfer) are removed when the store opens, and if a crash came between the rename
and the unlink of the older file, the newest one is used and the older removed. A snapshot
whose header or body CRC does not match raises :class:`~pgraft.errors.StorageCorrupted`
naming the file (DESIGN rule 5).

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

InstallSnapshot (leader -> follower)
------------------------------------
The core emits a MSG_SNAP carrying only the metadata; the runtime hands it to
:meth:`SnapshotManager.intercept`, which streams the leader's snapshot *file* verbatim in
chunks, each a MSG_SNAP whose ``Message.snapshot`` bytes are::

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
:meth:`SnapshotManager.install` renames the file into place (the commit point), restores the
applied state, resets the log after it, and the core's MsgAppResp tells the leader.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from .. import failpoints as _fp
from .._impl import core
from ..errors import PgraftError, StorageCorrupted, StorageError
from ..fsutil import fsync_dir, io_error
from ..raft.types import SnapshotMeta

log = logging.getLogger("pgraft.snapshot")

SNAP_DIR = "snap"
MAGIC = b"PGRFTSNP"
FORMAT_VERSION = 1
HEADER_SIZE = 64
SUFFIX = ".snap"
TMP_SUFFIX = ".tmp"
_HEAD = struct.Struct("<8sIIQQQQI")  # magic, version, header size, index, term, M, D, body crc
_U32 = struct.Struct("<I")
_WRITE_SLICE = 8 * 1024 * 1024

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

#: Test hook: ``PGRAFT_TEST_CRASH_POINT=snapshot-write`` kills the process (SIGKILL) halfway
#: through writing a snapshot's temporary file, before it is complete (crash-safety tests).
CRASH_POINT = os.environ.get("PGRAFT_TEST_CRASH_POINT", "")


def snapshot_name(index: int, term: int) -> str:
    return f"{index:020d}-{term:020d}{SUFFIX}"


def encode_header(index: int, term: int, meta_len: int, data_len: int, body_crc: int) -> bytes:
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, HEADER_SIZE, index, term, meta_len, data_len,
                      body_crc) + bytes(60 - _HEAD.size)
    return head + _U32.pack(core.crc32c(head))


@dataclass(frozen=True)
class SnapshotFile:
    """A complete snapshot file: where it is and what its header says."""

    path: str
    meta: SnapshotMeta
    size: int  # whole file
    body_crc: int
    meta_len: int
    data_len: int


def parse_header(head: bytes, path: str) -> tuple[int, int, int, int, int]:
    """(index, term, meta_len, data_len, body_crc) of a snapshot header."""
    if len(head) < HEADER_SIZE:
        raise StorageCorrupted(f"{path}: snapshot header is truncated ({len(head)} bytes)",
                               path=path, offset=0)
    magic, version, hsize, index, term, mlen, dlen, crc = _HEAD.unpack_from(head)
    if magic != MAGIC:
        raise StorageCorrupted(f"{path}: not a pgraft snapshot (bad magic)", path=path, offset=0)
    if core.crc32c(head[:60]) != _U32.unpack_from(head, 60)[0]:
        raise StorageCorrupted(f"{path}: snapshot header CRC mismatch", path=path, offset=0)
    if version != FORMAT_VERSION or hsize != HEADER_SIZE:
        raise StorageCorrupted(f"{path}: snapshot format version {version}, this pgraft reads "
                               f"{FORMAT_VERSION}", path=path, offset=0)
    return int(index), int(term), int(mlen), int(dlen), int(crc)


def read_snapshot_file(path: str, *, verify: bool = False) -> tuple[SnapshotFile, bytes | None]:
    """Open ``path``: its header and metadata (and, with ``verify``, the state data, whose CRC is
    checked). Raises StorageCorrupted naming the file."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEADER_SIZE)
        index, term, mlen, dlen, crc = parse_header(head, path)
        if size != HEADER_SIZE + mlen + dlen:
            raise StorageCorrupted(f"{path}: snapshot file has {size} bytes, its header says "
                                   f"{HEADER_SIZE + mlen + dlen}", path=path, offset=size)
        raw_meta = f.read(mlen)
        data = f.read(dlen) if verify else None
    if verify:
        assert data is not None
        if core.crc32c(data, core.crc32c(raw_meta)) != crc:
            raise StorageCorrupted(f"{path}: snapshot body CRC mismatch", path=path,
                                   offset=HEADER_SIZE)
    try:
        meta = SnapshotMeta.decode(raw_meta)
    except Exception as exc:
        raise StorageCorrupted(f"{path}: snapshot metadata cannot be decoded: {exc}",
                               path=path, offset=HEADER_SIZE) from None
    if meta.index != index or meta.term != term or meta.membership is None:
        raise StorageCorrupted(f"{path}: snapshot metadata does not match its header",
                               path=path, offset=HEADER_SIZE)
    return SnapshotFile(path, meta, size, crc, mlen, dlen), data


class SnapshotStore:
    """The snapshot files of one data directory (``<data dir>/snap``)."""

    def __init__(self, data_dir: str) -> None:
        self.dir = os.path.join(data_dir, SNAP_DIR)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.removed: list[str] = []
        names = sorted(os.listdir(self.dir))
        for name in names:
            if name.endswith(TMP_SUFFIX):  # an unfinished write or transfer
                os.unlink(os.path.join(self.dir, name))
                self.removed.append(name)
        snaps = [n for n in names if n.endswith(SUFFIX) and len(n) == 41 + len(SUFFIX)
                 and n[:20].isdigit() and n[21:41].isdigit()]
        self.current: SnapshotFile | None = None
        if snaps:
            self.current, _ = read_snapshot_file(os.path.join(self.dir, snaps[-1]))
            for name in snaps[:-1]:  # a crash between a rename and the unlink that follows
                os.unlink(os.path.join(self.dir, name))
                self.removed.append(name)
        if self.removed:
            fsync_dir(self.dir)
            log.info("snapshot store %s: removed %s", self.dir, ", ".join(self.removed))

    @property
    def meta(self) -> SnapshotMeta:
        cur = self.current
        return cur.meta if cur is not None else SnapshotMeta(0, 0, None)

    def load_data(self, f: SnapshotFile | None = None, *, verify: bool = True) -> bytes:
        """The state data of ``f`` (default: the current snapshot), CRC-checked."""
        f = f or self.current
        if f is None:
            raise StorageError(f"no snapshot in {self.dir}")
        if verify:
            _, data = read_snapshot_file(f.path, verify=True)
            assert data is not None
            return data
        with open(f.path, "rb") as fh:
            fh.seek(HEADER_SIZE + f.meta_len)
            return fh.read(f.data_len)

    def write(self, meta: SnapshotMeta, data: bytes) -> SnapshotFile:
        """Write a snapshot durably (temp file, fsync, rename, fsync dir). Blocking: runs in a
        worker thread. Does not make it current (see :meth:`set_current`). A failed write
        removes its temp file and leaves the current snapshot as it was: StorageFull when the
        file system is full, StorageError (naming the file and the errno) otherwise."""
        raw_meta = meta.encode()
        crc = core.crc32c(data, core.crc32c(raw_meta))
        head = encode_header(meta.index, meta.term, len(raw_meta), len(data), crc)
        name = snapshot_name(meta.index, meta.term)
        path = os.path.join(self.dir, name)
        tmp = path + TMP_SUFFIX
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise io_error("creating the snapshot file", tmp, exc, full=True) from None
        try:
            _write_all(fd, head)
            _write_all(fd, raw_meta)
            view = memoryview(data)
            if CRASH_POINT == "snapshot-write":
                _write_all(fd, view[:len(view) // 2])
                os.fsync(fd)  # what the crash leaves: a real, partial temp file
                os.kill(os.getpid(), signal.SIGKILL)
            for lo in range(0, len(view), _WRITE_SLICE):
                _write_all(fd, view[lo:lo + _WRITE_SLICE])
            os.fsync(fd)
        except BaseException as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise io_error("writing the snapshot file", tmp, exc, full=True) from None
            raise
        os.close(fd)
        try:
            os.rename(tmp, path)
            fsync_dir(self.dir)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise io_error("renaming the snapshot file", tmp, exc) from None
        size = HEADER_SIZE + len(raw_meta) + len(data)
        return SnapshotFile(path, meta, size, crc, len(raw_meta), len(data))

    def adopt(self, tmp: str, f: SnapshotFile) -> SnapshotFile:
        """Move a received, verified (and fsynced) file into place; durable on return."""
        path = os.path.join(self.dir, snapshot_name(f.meta.index, f.meta.term))
        os.rename(tmp, path)
        fsync_dir(self.dir)
        return SnapshotFile(path, f.meta, f.size, f.body_crc, f.meta_len, f.data_len)

    def set_current(self, f: SnapshotFile) -> None:
        """``f`` (durable) is now the snapshot: older files are removed."""
        self.current = f
        keep = os.path.basename(f.path)
        removed = False
        for name in os.listdir(self.dir):
            if name.endswith(SUFFIX) and name != keep and name < keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.dir, name))
                removed = True
        if removed:
            fsync_dir(self.dir)

    def temp_path(self, tag: str) -> str:
        return os.path.join(self.dir, f"{tag}{TMP_SUFFIX}")

    def disk_bytes(self) -> int:
        total = 0
        for name in os.listdir(self.dir):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(self.dir, name)).st_size
        return total


def _write_all(fd: int, data: bytes | memoryview) -> None:
    if _fp.ACTIVE is not None:
        _fp.hit("snapshot.write")
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# ---------------------------------------------------------------------------- streaming
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


@dataclass
class SnapshotStats:
    taken: int = 0
    installed: int = 0
    sent: int = 0
    send_failures: int = 0
    received_bytes: int = 0
    sent_bytes: int = 0
    last_take_seconds: float = 0.0
    last_compacted_to: int = 0


class SnapshotManager:
    """Snapshot policy, compaction, and InstallSnapshot streaming of one running node.

    ``node`` is the :class:`pgraft.node.Node` (this module reads its applied state, its core
    and its transport; every Raft decision stays in the core)."""

    def __init__(self, node: Any, storage: Any, *, entries: int, nbytes: int, keep: int,
                 chunk_size: int, window: int, stall_timeout: float = 2.0,
                 max_stalls: int = 5, verify_timeout: float = 60.0) -> None:
        self.node = node
        self.storage = storage
        self.store: SnapshotStore = storage.snapshots
        self.entries = entries
        self.nbytes = nbytes
        self.keep = keep
        self.chunk_size = chunk_size
        self.window = window
        self.stall_timeout = stall_timeout
        self.max_stalls = max_stalls
        self.verify_timeout = verify_timeout
        self.stats = SnapshotStats()
        self.executor = concurrent.futures.ThreadPoolExecutor(
            2, thread_name_prefix=f"pgraft-snap-{node.node_id}")
        self._task: asyncio.Task[None] | None = None
        self._done: SnapshotFile | None = None
        self._outgoing: dict[int, _Outgoing] = {}
        self._incoming: _Incoming | None = None
        self._verified: dict[tuple[int, int], tuple[str, SnapshotFile]] = {}
        self._closed = False
        self._installing = False
        self._rearm(self.store.meta.index)

    # ------------------------------------------------------------------- policy
    def _rearm(self, index: int) -> None:
        self._next_index = index + self.entries if self.entries else 1 << 62
        self._next_bytes = (self.storage.byte_size + self.nbytes) if self.nbytes else 1 << 62

    def after_ready(self) -> None:
        """Called by the Ready loop after each ``advance`` (no sync is in flight): finish a
        snapshot whose file is durable (then compact), or start one if one is due."""
        if self._done is not None:
            self._finish_taken()
        elif self._task is None and (self.node.state.applied_index >= self._next_index
                                     or self.storage.byte_size >= self._next_bytes):
            self.take()

    def take(self) -> bool:
        """Start a snapshot of the applied state now (False if one is being written or nothing
        was applied since the last one)."""
        if self._task is not None or self._done is not None or self._closed:
            return False
        state = self.node.state
        index = state.applied_index
        if index <= self.storage.snapshot_meta().index:
            self._rearm(max(index, self.storage.snapshot_meta().index))
            return False
        started = time.perf_counter()
        meta = SnapshotMeta(index, state.applied_term, self.node._applied_membership)
        data = state.snapshot()  # a copy: applying goes on while the thread writes it
        self._next_index = self._next_bytes = 1 << 62
        self._task = self.node.loop.create_task(self._write(meta, data, started),
                                                name=f"pgraft-snapshot-{self.node.node_id}")
        return True

    async def _write(self, meta: SnapshotMeta, data: bytes, started: float) -> None:
        try:
            f = await self.node.loop.run_in_executor(self.executor, self.store.write, meta, data)
        except Exception as exc:
            log.error("node %d: writing the snapshot at index %d failed: %s", self.node.node_id,
                      meta.index, exc)
            self._task = None
            self._rearm(meta.index)
            return
        self.stats.last_take_seconds = time.perf_counter() - started
        self._done = f
        if not self.node._syncing and not self._installing:
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
                 "%d (%d bytes)", self.node.node_id, f.meta.index, f.meta.term, f.size,
                 self.stats.last_take_seconds, first, storage.byte_size)

    # ------------------------------------------------------------- leader side
    def intercept(self, messages: list[Any]) -> list[Any]:
        """The messages of a Ready, minus the core's MSG_SNAP requests, which start (or keep
        going) a chunked transfer instead."""
        for m in messages:
            if m.type == MSG_SNAP:
                break
        else:
            return messages
        rest = []
        for m in messages:
            if m.type == MSG_SNAP:
                self._start_send(m)
            else:
                rest.append(m)
        return rest

    def _start_send(self, m: Any) -> None:
        node = self.node
        to = m.dst
        cur = self.store.current
        if cur is None or (cur.meta.index, cur.meta.term) != (m.index, m.log_term):
            log.error("node %d: the core asked for snapshot %d/%d for node %d, but the snapshot "
                      "file is %s", node.node_id, m.index, m.log_term, to,
                      "missing" if cur is None else f"{cur.meta.index}/{cur.meta.term}")
            node.raw.report_snapshot(to, False)
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
            log.error("node %d: cannot open snapshot %s: %s", node.node_id, cur.path, exc)
            node.raw.report_snapshot(to, False)
            return
        out = _Outgoing(to, cur, m.term, fd)
        self._outgoing[to] = out
        out.task = node.loop.create_task(self._send_loop(out),
                                         name=f"pgraft-snap-send-{node.node_id}-{to}")
        log.info("node %d: sending snapshot %d (term %d, %d bytes) to node %d", node.node_id,
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
        node = self.node
        loop = node.loop
        f = out.file
        limit = self.chunk_size * self.window
        ok = False
        try:
            while out.status is None:
                raw = node.raw
                if raw is None or not node._running or raw.term != out.term or \
                        node.role != "leader":
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
                    node.transport.send([core.Message(
                        MSG_SNAP, node.node_id, out.peer, out.term, f.meta.term, f.meta.index,
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
                                        "%d/%d bytes; giving up for now", node.node_id,
                                        out.peer, out.acked, f.size)
                            return
                        out.sent = out.acked  # resend what was not acknowledged
            ok = out.status == ACK_DONE
            if ok:
                self.stats.sent += 1
                log.info("node %d: snapshot %d sent to node %d (%d bytes in %.2fs)",
                         node.node_id, f.meta.index, out.peer, f.size,
                         time.monotonic() - out.started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("node %d: snapshot transfer to node %d failed: %s", node.node_id,
                        out.peer, exc)
        finally:
            if self._outgoing.get(out.peer) is out:
                self._stop_outgoing(out)
                raw = node.raw
                if raw is not None and node._running and raw.term == out.term:
                    if not ok:
                        self.stats.send_failures += 1
                    raw.report_snapshot(out.peer, ok)
                    node._kick()
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
    def on_message(self, m: Any) -> None:
        """A MSG_SNAP (chunk) or MSG_SNAP_RESP (ack) from a peer: never stepped as such."""
        if m.type == MSG_SNAP_RESP:
            self._on_ack(m)
        elif m.snapshot is not None:
            self._on_chunk(m)

    def _ack(self, src: int, key: tuple[int, int], status: int, nxt: int) -> None:
        node = self.node
        raw = node.raw
        if raw is None or node.transport is None or not node._running:
            return
        node.transport.send([core.Message(
            MSG_SNAP_RESP, node.node_id, src, raw.term, key[1], key[0],
            reject=status == ACK_FAILED, snapshot=encode_ack(key[0], key[1], status, nxt))])

    def _on_chunk(self, m: Any) -> None:
        node = self.node
        raw = node.raw
        if self._closed or raw is None or m.term < raw.term:
            return  # a deposed leader's transfer
        try:
            key, offset, data = decode_chunk(m.snapshot)
        except ValueError as exc:
            log.warning("node %d: ignored a malformed snapshot chunk from node %d: %s",
                        node.node_id, m.src, exc)
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
                     node.node_id, index, term, key[2], m.src)
        inc.src = m.src
        inc.term = max(inc.term, m.term)
        if offset == inc.expected:
            inc.expected = offset + len(data)
            inc.queue.append((offset, bytes(data)))
            if inc.task is None:
                inc.task = node.loop.create_task(self._drain(inc))
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
        loop = self.node.loop
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
                            self.node.node_id, index, exc)
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
                     self.node.node_id, index, size, time.monotonic() - inc.started)
            self._ack(inc.src, (index, term), ACK_DONE, size)
            self._step_meta(inc.src, inc.term, f.meta)
        except asyncio.CancelledError:
            inc.aborted = True
            raise
        except Exception as exc:
            log.warning("node %d: receiving snapshot %d failed: %s", self.node.node_id, index,
                        exc)
            inc.aborted = True
        finally:
            inc.task = None
            if inc.aborted:
                inc.close(unlink=True)
                if self._incoming is inc:
                    self._incoming = None

    def _step_meta(self, leader: int, term: int, meta: SnapshotMeta) -> None:
        node = self.node
        raw = node.raw
        if raw is None or not node._running:
            return
        msg = core.Message(MSG_SNAP, leader, node.node_id, term, meta.term, meta.index,
                           snapshot=meta.encode() if meta.membership is not None else None)
        try:
            raw.step(msg)
        except PgraftError as exc:
            log.warning("node %d: snapshot %d not taken by the core: %s", node.node_id,
                        meta.index, exc.message)
        node._kick()

    async def install(self, meta: SnapshotMeta) -> None:
        """``Ready.snapshot``: make the received snapshot this node's state (see the module
        docstring). Runs inside the Ready loop, before the Ready's entries are written."""
        node = self.node
        loop = node.loop
        entry = self._verified.pop((meta.index, meta.term), None)
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
        node.state.restore(data)
        self.storage.apply_snapshot(meta)
        node._on_snapshot(meta)
        self.stats.installed += 1
        self._rearm(meta.index)
        log.info("node %d: installed snapshot %d (term %d, %d bytes)", node.node_id,
                 meta.index, meta.term, f.size)

    # ------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        cur = self.store.current
        return {
            "index": cur.meta.index if cur else 0,
            "term": cur.meta.term if cur else 0,
            "bytes": cur.size if cur else 0,
            "taken": self.stats.taken,
            "installed": self.stats.installed,
            "sent": self.stats.sent,
            "send_failures": self.stats.send_failures,
            "sent_bytes": self.stats.sent_bytes,
            "received_bytes": self.stats.received_bytes,
            "last_take_seconds": round(self.stats.last_take_seconds, 6),
            "compacted_to": self.stats.last_compacted_to,
            "sending": {p: {"acked": o.acked, "size": o.file.size}
                        for p, o in self._outgoing.items()},
            "receiving": None if self._incoming is None else {
                "from": self._incoming.src, "index": self._incoming.key[0],
                "written": self._incoming.written, "size": self._incoming.key[2]},
        }

    async def close(self) -> None:
        self._closed = True
        for out in list(self._outgoing.values()):
            self._stop_outgoing(out)
        inc = self._incoming
        if inc is not None:
            self._abort(inc)
        task = self._task
        if task is not None and not task.done():
            # Let a snapshot write finish: the thread cannot be interrupted anyway.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 30.0)
        await self.node.loop.run_in_executor(None, self.executor.shutdown, True)
        if inc is not None and inc.fd >= 0:
            inc.close(unlink=True)
