"""The snapshot file format and the store of one data directory's snapshot files.

The Raft core only knows a snapshot's identity (:class:`pgraft.raft.SnapshotMeta`: index, term,
membership). The data lives in one file (written here, streamed by
:mod:`pgraft.node.snapxfer`, taken and installed by :mod:`pgraft.node.snapshots`).

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
naming the file (docs/design.md rule 5).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import struct
from dataclasses import dataclass

from .. import failpoints as _fp
from .._impl import core
from ..errors import StorageCorrupted, StorageError
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

