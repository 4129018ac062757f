"""DiskStorage: the Raft core's :class:`pgraft.raft.storage.Storage` over the durable log.

A node's data directory::

    LOCK            fcntl.flock'ed by the running node (holds its pid, for the error message)
    node_id         the node id this directory belongs to (written once)
    pg_system_id    the PostgreSQL server it belongs to, when run by one (pgraft.node.pgbinding)
    log/            pgraft._impl.log.Log segments
    hardstate       pgraft._impl.log.HardStateFile (term, vote, commit, synced watermark)
    snap/           the last snapshot of the applied state (pgraft.node.snapfile.SnapshotStore)
    node.sock       the Unix socket for local clients (made by the listener)
    STORAGE_FAILED  only after an I/O error: when, which file, what error (see below)

Writes follow the Ready contract of :class:`pgraft.raft.Ready`: ``apply_snapshot`` and
``append`` are called on the event loop (they only write into the mapped segments; a
conflicting suffix is truncated durably at once), ``set_hard_state`` records the new hard
state, and :meth:`DiskStorage.sync` — run in a thread so that the loop keeps accepting work —
makes all of it durable. The hard state file is rewritten (with its own fdatasync) only when
the term or vote changed or when the commit index has not been saved for
``commit_save_interval`` seconds: the commit index may lag on disk (Raft re-learns it from the
leader), the term and vote never may.

The hard state also carries the *durable watermark* ``synced``: an index through which the log
is known synced (set from the log after each successful sync, saved whenever the hard state is
saved anyway, and at a clean close: it may lag, never lead). At open, a bad record at or below
it is corruption (``StorageCorrupted`` naming file and offset), never a torn tail to cut; and a
saved commit index above the last index (that the snapshot does not cover) means committed
entries are missing: ``StorageCorrupted`` too. Truncating the log below the saved watermark
(a conflicting suffix, a snapshot that replaces the log) first saves the lowered watermark.

I/O errors (docs/design.md rule 2): Linux reports a failed writeback to one fsync only, so a
retry can "succeed" on data that never reached the disk. After any I/O error in append, sync,
compaction or a hard state save, the storage is *failed* (:attr:`DiskStorage.failed`): every
later write raises ``StorageError``, :meth:`DiskStorage.close` releases without syncing or
saving (like :meth:`DiskStorage.abandon`), and the failure is recorded durably in
``STORAGE_FAILED``. A data directory holding that file is refused at open, with the way out in
the hint: remove the node from the cluster, wipe the directory, add the node back under a new
id; or, after checking the disk, clear the record with :func:`clear_storage_failure` (``pgraft
storage clear-failure --data-dir DIR``).

A full file system is not a failure: ``append`` raises ``StorageFull`` (an
``StorageError``; SQLSTATE 53100) when a segment it needs cannot be allocated, having appended
none of its entries (a conflicting suffix it replaces may already be truncated: retrying the
same entries is always right); nothing is lost and the call can be retried once space is
freed. :attr:`DiskStorage.space_low` warns before that happens (see ``Log.space_low``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from .._impl import core
from .._impl import log as logmod
from ..errors import PgraftError, StorageCorrupted, StorageError, StorageFull
from ..fsutil import errno_text, fsync_dir, io_error, write_file_atomic
from ..protocol import SOCKET_NAME
from ..raft.storage import Compacted, take_limited
from ..raft.types import HardState, SnapshotMeta
from .snapfile import SnapshotStore

log = logging.getLogger("pgraft.storage")

LOCK_FILE = "LOCK"
NODE_ID_FILE = "node_id"
LOG_DIR = "log"
HARD_STATE_FILE = "hardstate"
SOCKET_FILE = SOCKET_NAME  # made by the listener; the clients find it by this name
#: Written into the data directory after an I/O error; the directory is refused while it exists.
FAILED_MARKER = "STORAGE_FAILED"

ENTRY_CONF_CHANGE = core.ENTRY_CONF_CHANGE
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


def _log_hs(hs: HardState, synced: int) -> Any:
    return logmod.HardState(hs.term, hs.vote, hs.commit, synced)


def _failed_hint(path: str, node_id: int | None) -> str:
    node = f"node {node_id}" if node_id is not None else "the node"
    return (f"the safe way: remove {node} from the cluster, wipe {path} and add the node back "
            f"under a new node id. Only if you have checked the disk and know that the data is "
            f"intact: run `pgraft storage clear-failure --data-dir {path}` and start the node "
            f"again")


def read_storage_failure(data_dir: str) -> str | None:
    """The text of the data directory's ``STORAGE_FAILED`` record, or None if it has none."""
    try:
        with open(os.path.join(os.path.abspath(data_dir), FAILED_MARKER), "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None


def _marker_fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.isidentifier():
            out[key] = value
    return out


@contextlib.contextmanager
def operator_lock(data_dir: str) -> Iterator[str]:
    """Hold the lock of a stopped node's data directory (the node's own ``LOCK``) for an
    operator command (``pgraft storage ...``), so that no node starts on it meanwhile; yields
    the absolute path. StorageError if it is not a directory or a node holds the lock."""
    path = os.path.abspath(data_dir)
    if not os.path.isdir(path):
        raise StorageError(f"{path} is not a data directory", path=path)
    lock = os.path.join(path, LOCK_FILE)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise io_error("opening", lock, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            try:
                text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                if text.isdigit():
                    holder = f" (pid {text})"
            except OSError:
                pass
            raise StorageError(f"data directory {path} is locked by a running node{holder}",
                               hint="stop the node first", path=path) from None
        yield path
    finally:
        os.close(fd)


def clear_storage_failure(data_dir: str) -> str | None:
    """Remove the ``STORAGE_FAILED`` record of ``data_dir`` so that the node may open it again
    (the operator has checked the disk: see the module docstring). Returns the removed record's
    text, or None if there was none. StorageError while a node holds the directory."""
    path = os.path.abspath(data_dir)
    marker = os.path.join(path, FAILED_MARKER)
    if not os.path.isdir(path):
        raise StorageError(f"{path} is not a data directory", path=path)
    if not os.path.exists(marker):
        return None
    with operator_lock(path):
        text = read_storage_failure(path)
        try:
            os.unlink(marker)
            fsync_dir(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise io_error("removing", marker, exc) from None
    log.warning("storage failure record %s removed by the operator; it said: %s", marker,
                (text or "").strip().replace("\n", "; "))
    return text


class DiskStorage:
    """The Storage protocol of the Raft core over ``pgraft._impl.log``."""

    def __init__(self, data_dir: str, node_id: int, *, segment_size: int = 64 * 1024 * 1024,
                 max_entry_size: int = 16 * 1024 * 1024,
                 commit_save_interval: float = 1.0,
                 on_locked: Callable[[str, bool], None] | None = None) -> None:
        """``on_locked(path, used_before)`` is called once the directory is locked and its
        node id checked, before anything else in it is read or written (``used_before``: it
        already holds a log or hard state); what it raises aborts the open (the composition
        root checks there which PostgreSQL server the directory belongs to)."""
        self.data_dir = DataDir(data_dir, node_id)
        self.path = self.data_dir.path
        self.node_id = node_id
        self.commit_save_interval = commit_save_interval
        #: The error text once an I/O error made the storage untrusted (module docstring).
        self.failed: str | None = None
        self._log: Any = None
        # The entries appended last (the core's own objects), for reading back the entries
        # that commit next without rebuilding them from the mapping (see entries()).
        self._recent: list[Any] = []
        self._recent_first = 0
        self._hsfile: Any = None
        self._synced = 0  # the log is known synced through this index
        self._saved_synced = 0  # ... and the hard state on disk says so
        try:
            if on_locked is not None:
                on_locked(self.path, any(os.path.exists(os.path.join(self.path, name))
                                         for name in (HARD_STATE_FILE, LOG_DIR)))
            self._check_failure_record()
            self._open(segment_size, max_entry_size)
        except PgraftError:
            self._release()
            raise
        except OSError as exc:
            self._release()
            raise StorageError(f"cannot open the storage in {self.path}: "
                               f"{exc.filename or ''} {errno_text(exc)}".replace("  ", " "),
                               path=self.path) from None

    def _check_failure_record(self) -> None:
        text = read_storage_failure(self.path)
        if text is None:
            return
        marker = os.path.join(self.path, FAILED_MARKER)
        fields = _marker_fields(text)
        error = fields.get("error") or " ".join(text.split())[:500]
        where = fields.get("file", "unknown")
        when = fields.get("time", "an unknown time")
        raise StorageError(
            f"the storage in {self.path} failed at {when} and is not trusted: {error} (file "
            f"{where}; recorded in {marker})",
            hint=_failed_hint(self.path, self.node_id), path=marker, failed_file=where)

    def _open(self, segment_size: int, max_entry_size: int) -> None:
        self.snapshots = SnapshotStore(self.path)
        self._snap = self.snapshots.meta
        self._hsfile = logmod.HardStateFile(os.path.join(self.path, HARD_STATE_FILE))
        loaded = self._hsfile.load()
        self._hs = HardState(int(loaded.term), int(loaded.vote), int(loaded.commit))
        self._saved_hs = self._hs
        self._saved_synced = int(getattr(loaded, "synced", 0))
        self._saved_at = time.monotonic()
        log_dir = os.path.join(self.path, LOG_DIR)
        self._log = logmod.Log(log_dir, segment_size=segment_size,
                               max_entry_size=max_entry_size,
                               first_index=self._snap.index + 1,
                               synced_through=self._saved_synced)
        report = self._log.recovery
        if report is not None and (report.cut_bytes or report.removed_segments):
            log.warning("log recovery in %s: cut %d bytes of a torn tail at %s offset %s; "
                        "removed %s", self.path, report.cut_bytes, report.cut_path,
                        report.cut_offset, report.removed_segments or "no segments")
        lg, snap = self._log, self._snap
        self._synced = int(lg.synced_index)
        if lg.last_index < lg.first_index:  # empty
            if lg.first_index != snap.index + 1:
                self._lower_watermark(snap.index)
                lg.reset(snap.index + 1)
        elif lg.first_index > snap.index + 1:
            raise StorageCorrupted(
                f"log in {self.path} starts at {lg.first_index} but the snapshot ends at "
                f"{snap.index}: entries are missing", path=self.path)
        elif snap.index and (snap.index > lg.last_index or (
                lg.first_index <= snap.index and lg.term(snap.index) != snap.term)):
            # A snapshot was installed and the crash came before the old log was dropped.
            self._lower_watermark(snap.index)
            lg.reset(snap.index + 1)
        self._synced = int(lg.synced_index)
        last = self.last_index()
        if self._hs.commit > last:
            # The commit index only ever points at entries this node held durably: they are
            # gone (a lost or cut log). Never lower it silently (docs/design.md rule 5).
            raise StorageCorrupted(
                f"{self.path}: the saved commit index {self._hs.commit} is above the last index "
                f"{last} (the log in {log_dir} ends at {lg.last_index}, the snapshot at "
                f"{snap.index}): committed entries are missing", path=log_dir)
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
            return take_limited(recent, off, hi - self._recent_first, max_bytes)
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

    @property
    def space_low(self) -> bool:
        """The file system of the log is full or nearly (less than one segment free): the
        next append that needs a new segment may raise StorageFull (see Log.space_low). Cheap:
        an attribute; :meth:`check_space` measures again."""
        lg = self._log
        return bool(lg is not None and lg.space_low)

    def check_space(self) -> bool:
        """Measure the free space again (statvfs) and return :attr:`space_low`."""
        lg = self._log
        return bool(lg is not None and lg.check_space())

    # --------------------------------------------------------------- failures
    def _refuse(self) -> StorageError:
        return StorageError(f"the storage in {self.path} failed earlier ({self.failed}); "
                            "nothing is written to it again",
                            hint=_failed_hint(self.path, self.node_id), path=self.path)

    def _on_error(self, exc: BaseException) -> BaseException:
        """The error to raise for ``exc`` from a write: an I/O error (an OSError, or a
        StorageError after which the log or hard state file is failed) fails the storage."""
        if isinstance(exc, OSError):
            path = exc.filename if isinstance(exc.filename, str) else self.path
            err = io_error("writing", path, exc)
            self._mark_failed(err.message, path)
            return err
        lg, hsf = self._log, self._hsfile
        if isinstance(exc, StorageError) and not isinstance(exc, StorageFull) and (
                (lg is not None and lg.failed is not None)
                or (hsf is not None and hsf.failed is not None)):
            details = getattr(exc, "details", {}) or {}
            self._mark_failed(getattr(exc, "message", str(exc)), details.get("path"))
        return exc

    def _mark_failed(self, text: str, path: str | None) -> None:
        """The storage is failed: record it in memory and, where the disk still lets us, in
        the STORAGE_FAILED file."""
        if self.failed is not None:
            return
        self.failed = text
        marker = os.path.join(self.path, FAILED_MARKER)
        log.error("node %d: the storage in %s failed: %s; it is not written again (recorded "
                  "in %s)", self.node_id, self.path, text, marker)
        body = (f"pgraft storage failure: do not trust this data directory\n"
                f"time: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
                f"node: {self.node_id}\n"
                f"file: {path or 'unknown'}\n"
                f"error: {' '.join(text.split())}\n"
                f"what_to_do: {_failed_hint(self.path, self.node_id)}\n")
        try:
            write_file_atomic(marker, body.encode())
        except OSError as exc:
            log.error("node %d: cannot record the storage failure in %s: %s", self.node_id,
                      marker, errno_text(exc))

    def _save_hard_state(self, hs: HardState, synced: int) -> None:
        """Save ``hs`` with the watermark ``synced`` (the caller handles errors)."""
        self._hsfile.save(_log_hs(hs, synced))
        self._saved_hs = hs
        self._saved_synced = synced
        self._saved_at = time.monotonic()

    def _lower_watermark(self, index: int) -> None:
        """Before the log is cut back to ``index``: the saved watermark must not claim more.
        Rewrites what is durable already (the saved hard state, whose commit index is never
        above a cut) with the lower watermark."""
        if self._synced > index:
            self._synced = index
        if self._saved_synced > index:
            self._save_hard_state(self._saved_hs, index)

    # ----------------------------------------------------------------- writes
    def append(self, entries: list[Any]) -> None:
        """Append (replacing a conflicting suffix). StorageFull: none of ``entries`` was
        appended, nothing is lost; retry later with the same entries."""
        if not entries:
            return
        if self.failed is not None:
            raise self._refuse()
        try:
            self._append(entries)
        except (StorageError, OSError) as exc:
            raise self._on_error(exc) from None

    def _append(self, entries: list[Any]) -> None:
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
            self._lower_watermark(first - 1)
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
        if self.failed is not None:
            raise self._refuse()
        self._snap = meta
        self._recent = []
        lg = self._log
        try:
            if (lg.first_index <= meta.index <= lg.last_index
                    and lg.term(meta.index) == meta.term):
                # The log already holds the snapshot's last entry: keep what follows it
                # (entries up to the snapshot stay in their segments until compact drops
                # them, unseen).
                lg.compact(meta.index)
            else:
                self._lower_watermark(meta.index)
                lg.reset(meta.index + 1)
                self._synced = int(lg.synced_index)
        except (StorageError, OSError) as exc:
            raise self._on_error(exc) from None

    def set_snapshot(self, meta: SnapshotMeta) -> None:
        """This node took a snapshot (its file is durable and current): the core sends it
        to followers that need compacted entries. The log is not touched (see compact)."""
        self._snap = meta

    def compact(self, index: int) -> int:
        """Drop the log prefix up to ``index`` (at most the snapshot index; whole segments
        only, durable on return). Returns the new first index. Call it when no sync runs."""
        index = min(index, self._snap.index)
        if index >= self._log.first_index:
            if self.failed is not None:
                raise self._refuse()
            try:
                self._log.compact(index)
            except (StorageError, OSError) as exc:
                raise self._on_error(exc) from None
        return self.first_index()

    # ------------------------------------------------------------------- sync
    def hard_state_dirty(self) -> bool:
        saved, hs = self._saved_hs, self._hs
        return saved.term != hs.term or saved.vote != hs.vote

    def sync(self, *, entries: bool = True) -> None:
        """Make everything written so far durable. Runs in a worker thread: the event loop
        does not write to the storage until it returns. An I/O error fails the storage (see
        the module docstring): this and every later write raise StorageError."""
        if self.failed is not None:
            raise self._refuse()
        try:
            if entries:
                self._log.sync()
                self._synced = self._log.synced_index
            hs = self._hs
            saved = self._saved_hs
            if hs == saved and self._synced == self._saved_synced:
                return
            now = time.monotonic()
            if (hs.term != saved.term or hs.vote != saved.vote
                    or now - self._saved_at >= self.commit_save_interval):
                self._save_hard_state(hs, self._synced)
        except (StorageError, OSError) as exc:
            raise self._on_error(exc) from None

    def _release(self) -> None:
        if self._hsfile is not None:
            self._hsfile.close()
            self._hsfile = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.data_dir.close()

    def abandon(self) -> None:
        """Release everything without syncing or saving (a simulated crash: what was written
        to the mapped segments stays in the page cache, like after kill -9)."""
        self._release()

    def close(self) -> None:
        """Sync the log, save the hard state (including a lagging commit index and the
        watermark) and release everything. A failed storage is released without syncing or
        saving (a retried sync can "succeed" on data that never reached the disk)."""
        try:
            lg, hsf = self._log, self._hsfile
            if lg is not None and hsf is not None and self.failed is None:
                if lg.failed is not None or hsf.failed is not None:
                    self._mark_failed(lg.failed or hsf.failed, None)
                    return
                try:
                    lg.sync()
                    self._synced = lg.synced_index
                    if self._hs != self._saved_hs or self._synced != self._saved_synced:
                        self._save_hard_state(self._hs, self._synced)
                except (StorageError, OSError) as exc:
                    raise self._on_error(exc) from None
        finally:
            self._release()
