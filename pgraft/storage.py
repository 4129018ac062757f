"""DiskStorage: the Raft core's :class:`pgraft.raft.storage.Storage` over the durable log.

A node's data directory::

    LOCK            fcntl.flock'ed by the running node (holds its pid, for the error message)
    node_id         the node id this directory belongs to (written once)
    log/            pgraft._impl.log.Log segments
    hardstate       pgraft._impl.log.HardStateFile (term, vote, commit)
    snap/           the last snapshot of the applied state (pgraft.snapshot.SnapshotStore)
    node.sock       the Unix socket for local clients (made by the transport)

Writes follow the Ready contract of :class:`pgraft.raft.Ready`: ``apply_snapshot`` and
``append`` are called on the event loop (they only write into the mapped segments; a
conflicting suffix is truncated durably at once), ``set_hard_state`` records the new hard
state, and :meth:`DiskStorage.sync` — run in a thread so that the loop keeps accepting work —
makes all of it durable. The hard state file is rewritten (with its own fdatasync) only when
the term or vote changed or when the commit index has not been saved for
``commit_save_interval`` seconds: the commit index may lag on disk (Raft re-learns it from the
leader), the term and vote never may.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from typing import Any

from ._impl import core
from ._impl import log as logmod
from .errors import PgraftError, StorageCorrupted, StorageError
from .fsutil import write_file_atomic
from .raft.storage import Compacted
from .raft.types import HardState, SnapshotMeta
from .snapshot import SnapshotStore

log = logging.getLogger("pgraft.storage")

LOCK_FILE = "LOCK"
NODE_ID_FILE = "node_id"
LOG_DIR = "log"
HARD_STATE_FILE = "hardstate"
SOCKET_FILE = "node.sock"

ENTRY_CONF_CHANGE = core.ENTRY_CONF_CHANGE
RECORD_HEADER_SIZE = core.RECORD_HEADER_SIZE
#: How many of the last appended entries DiskStorage keeps for reading them back, and the
#: largest average record size of a batch it keeps (see DiskStorage.append).
RECENT_ENTRIES = 4096
RECENT_RECORD_BYTES = 1024


class DataDir:
    """The lock and the node id of a data directory."""

    def __init__(self, path: str, node_id: int) -> None:
        self.path = os.path.abspath(path)
        self.node_id = node_id
        self._lock_fd = -1
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {self.path}: {exc.strerror}",
                               hint="check the path and its permissions") from None
        self._lock()
        try:
            self._check_node_id()
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        path = os.path.join(self.path, LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {exc.strerror}",
                               hint="check the permissions of the data directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            try:
                text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                if text:
                    holder = f" (pid {text})"
            except OSError:
                pass
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StorageError(
                    f"data directory {self.path} is locked by another running node{holder}",
                    hint="stop the other node first, or give this node its own --data-dir",
                    path=self.path) from None
            raise StorageError(f"cannot lock {path}: {exc.strerror}", path=self.path) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _check_node_id(self) -> None:
        path = os.path.join(self.path, NODE_ID_FILE)
        try:
            with open(path, "rb") as f:
                text = f.read().decode("ascii", "replace").strip()
        except FileNotFoundError:
            write_file_atomic(path, f"{self.node_id}\n".encode())
            return
        try:
            stored = int(text)
        except ValueError:
            raise StorageCorrupted(f"{path} does not hold a node id ({text[:40]!r})",
                                   path=path) from None
        if stored != self.node_id:
            raise StorageError(
                f"data directory {self.path} belongs to node {stored}, not node {self.node_id}",
                hint=f"start node {self.node_id} with its own data directory (or start node "
                     f"{stored} here)", path=self.path, stored_node_id=stored)

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _log_hs(hs: HardState) -> Any:
    return logmod.HardState(hs.term, hs.vote, hs.commit)


class DiskStorage:
    """The Storage protocol of the Raft core over ``pgraft._impl.log``."""

    def __init__(self, data_dir: str, node_id: int, *, segment_size: int = 64 * 1024 * 1024,
                 max_entry_size: int = 16 * 1024 * 1024,
                 commit_save_interval: float = 1.0) -> None:
        self.data_dir = DataDir(data_dir, node_id)
        self.path = self.data_dir.path
        self.node_id = node_id
        self.commit_save_interval = commit_save_interval
        self._log: Any = None
        # The entries appended last (the core's own objects), for reading back the entries
        # that commit next without rebuilding them from the mapping (see entries()).
        self._recent: list[Any] = []
        self._recent_first = 0
        self._hsfile: Any = None
        try:
            self._open(segment_size, max_entry_size)
        except PgraftError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise StorageError(f"cannot open the storage in {self.path}: {exc}",
                               path=self.path) from None

    def _open(self, segment_size: int, max_entry_size: int) -> None:
        self.snapshots = SnapshotStore(self.path)
        self._snap = self.snapshots.meta
        self._log = logmod.Log(os.path.join(self.path, LOG_DIR), segment_size=segment_size,
                               max_entry_size=max_entry_size,
                               first_index=self._snap.index + 1)
        report = self._log.recovery
        if report is not None and (report.cut_bytes or report.removed_segments):
            log.warning("log recovery in %s: cut %d bytes of a torn tail at %s offset %s; "
                        "removed %s", self.path, report.cut_bytes, report.cut_path,
                        report.cut_offset, report.removed_segments or "no segments")
        lg, snap = self._log, self._snap
        if lg.last_index < lg.first_index:  # empty
            if lg.first_index != snap.index + 1:
                lg.reset(snap.index + 1)
        elif lg.first_index > snap.index + 1:
            raise StorageCorrupted(
                f"log in {self.path} starts at {lg.first_index} but the snapshot ends at "
                f"{snap.index}: entries are missing", path=self.path)
        elif snap.index and (snap.index > lg.last_index or (
                lg.first_index <= snap.index and lg.term(snap.index) != snap.term)):
            # A snapshot was installed and the crash came before the old log was dropped.
            lg.reset(snap.index + 1)
        self._hsfile = logmod.HardStateFile(os.path.join(self.path, HARD_STATE_FILE))
        loaded = self._hsfile.load()
        self._hs = HardState(int(loaded.term), int(loaded.vote), int(loaded.commit))
        self._saved_hs = self._hs
        self._saved_at = time.monotonic()
        last = self.last_index()
        if self._hs.commit > last:
            # The commit index can only point at entries this node holds.
            self._hs = HardState(self._hs.term, self._hs.vote, last)
        if self._hs.commit < snap.index:
            # A snapshot holds only committed entries (the saved commit index may lag).
            self._hs = HardState(self._hs.term, self._hs.vote, snap.index)

    # ------------------------------------------------------------------ reads
    def hard_state(self) -> HardState:
        return self._hs

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snap

    def first_index(self) -> int:
        # Entries behind the snapshot stay readable until compaction drops their segment.
        first = self._log.first_index
        snap_next = self._snap.index + 1
        return first if first < snap_next else snap_next

    def last_index(self) -> int:
        last = self._log.last_index
        return last if last > self._snap.index else self._snap.index

    def term(self, index: int) -> int:
        lg = self._log
        if lg.first_index <= index <= lg.last_index:
            return lg.term(index)
        if index == self._snap.index:
            return self._snap.term
        raise Compacted(index)

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Any]:
        lg = self._log
        if lo < lg.first_index:
            raise Compacted(lo)
        recent = self._recent
        off = lo - self._recent_first
        if off >= 0 and hi - self._recent_first <= len(recent) and hi <= lg.last_index + 1:
            # Committed entries are read back right after they were appended: hand out the
            # same objects (the log's own reads build a new entry per record: ~4% of a busy
            # leader's samples). The byte limit counts records as the log does (header +
            # data), with at least one entry.
            out = recent[off:hi - self._recent_first]
            total = 0
            for n, e in enumerate(out):
                total += RECORD_HEADER_SIZE + len(e.data)
                if total > max_bytes and n:
                    return out[:n]
            return out
        return lg.entries(lo, hi, max_bytes)

    def entry(self, index: int) -> Any | None:
        """The entry at ``index``, or None if it is compacted or beyond the log."""
        if index < self._log.first_index or index > self._log.last_index:
            return None
        return self._log.entry(index)

    def conf_entries(self, lo: int, hi: int) -> list[Any]:
        # From the snapshot on only: a restart reads the log tail, not the whole history.
        lo = max(lo, self._snap.index + 1, self._log.first_index)
        hi = min(hi, self._log.last_index + 1)
        out = []
        chunk = 4096
        index = lo
        while index < hi:
            top = min(hi, index + chunk)
            for e in self._log.entries(index, top):
                if e.type == ENTRY_CONF_CHANGE:
                    out.append(e)
            index = top
        return out

    @property
    def byte_size(self) -> int:
        return int(self._log.byte_size)

    # ----------------------------------------------------------------- writes
    def append(self, entries: list[Any]) -> None:
        if not entries:
            return
        first = entries[0].index
        if first <= self._snap.index:
            entries = entries[self._snap.index + 1 - first:]
            if not entries:
                return
            first = entries[0].index
        last = self._log.last_index
        if first > last + 1:
            raise StorageError(f"gap in the log: appending entry {first} after {last}")
        lg = self._log
        if first <= last:
            lg.truncate_after(first - 1)
        before = lg.byte_size
        lg.append(entries)
        # Keep the batch for reading back only if it costs bounded memory: records of at most
        # RECENT_RECORD_BYTES on average (so the kept entries hold at most 2 * RECENT_ENTRIES *
        # RECENT_RECORD_BYTES bytes) and data that is its own bytes object (entries decoded from
        # a peer's frame are views that would keep the whole received buffer alive).
        keep = lg.byte_size - before <= RECENT_RECORD_BYTES * len(entries)
        if keep:
            for e in entries:
                if e.data.__class__ is not bytes:
                    keep = False
                    break
        recent = self._recent
        if not keep:
            if recent:
                self._recent = []
        elif recent and first == self._recent_first + len(recent):
            recent.extend(entries)
            if len(recent) > 2 * RECENT_ENTRIES:
                drop = len(recent) - RECENT_ENTRIES
                del recent[:drop]
                self._recent_first += drop
        else:  # the first append, or one that replaced a suffix
            self._recent = list(entries[-RECENT_ENTRIES:])
            self._recent_first = entries[-1].index - len(self._recent) + 1

    def set_hard_state(self, hs: HardState) -> None:
        self._hs = hs

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        """Install a received snapshot (its file is already the store's current one, which is
        the durable record): the log restarts after it."""
        cur = self.snapshots.meta
        if (cur.index, cur.term) != (meta.index, meta.term):
            raise StorageError(f"snapshot {meta.index} (term {meta.term}) is installed but the "
                               f"snapshot file on disk is {cur.index} (term {cur.term})",
                               path=self.path)
        self._snap = meta
        self._recent = []
        lg = self._log
        if lg.first_index <= meta.index <= lg.last_index and lg.term(meta.index) == meta.term:
            # The log already holds the snapshot's last entry: keep what follows it (entries
            # up to the snapshot stay in their segments until compact drops them, unseen).
            lg.compact(meta.index)
        else:
            lg.reset(meta.index + 1)

    def set_snapshot(self, meta: SnapshotMeta) -> None:
        """This node took a snapshot (its file is durable and current): the core sends it
        to followers that need compacted entries. The log is not touched (see compact)."""
        self._snap = meta

    def compact(self, index: int) -> int:
        """Drop the log prefix up to ``index`` (at most the snapshot index; whole segments
        only, durable on return). Returns the new first index. Call it when no sync runs."""
        index = min(index, self._snap.index)
        if index >= self._log.first_index:
            self._log.compact(index)
        return self.first_index()

    # ------------------------------------------------------------------- sync
    def hard_state_dirty(self) -> bool:
        saved, hs = self._saved_hs, self._hs
        return saved.term != hs.term or saved.vote != hs.vote

    def sync(self, *, entries: bool = True) -> None:
        """Make everything written so far durable. Runs in a worker thread: the event loop
        does not write to the storage until it returns."""
        if entries:
            self._log.sync()
        hs = self._hs
        saved = self._saved_hs
        if hs == saved:
            return
        now = time.monotonic()
        if (hs.term != saved.term or hs.vote != saved.vote
                or now - self._saved_at >= self.commit_save_interval):
            self._hsfile.save(_log_hs(hs))
            self._saved_hs = hs
            self._saved_at = now

    def abandon(self) -> None:
        """Release everything without syncing or saving (a simulated crash: what was written
        to the mapped segments stays in the page cache, like after kill -9)."""
        if self._hsfile is not None:
            self._hsfile.close()
            self._hsfile = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.data_dir.close()

    def close(self) -> None:
        """Flush the hard state (including a lagging commit index) and release everything."""
        try:
            if self._log is not None and self._hsfile is not None:
                self._log.sync()
                if self._hs != self._saved_hs:
                    self._hsfile.save(_log_hs(self._hs))
                    self._saved_hs = self._hs
        finally:
            if self._hsfile is not None:
                self._hsfile.close()
                self._hsfile = None
            if self._log is not None:
                self._log.close()
                self._log = None
            self.data_dir.close()
