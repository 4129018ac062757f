"""Pure-Python twin of ``pgraft._log``: the durable Raft log and the hard state file.

Same API and same on-disk format as the compiled module (tests run on both, and each reads the
other's files).

On disk, a log is a directory of segment files named ``<first index, 20 digits>.seg``. Each
segment is preallocated (``posix_fallocate``: measured faster than writing zeros for both
segment creation and append+sync on ext4) and memory-mapped; it starts with a 32-byte header::

    off  0  8s   magic b"PGRFTLOG"
    off  8  u32  format version (1)
    off 12  u32  header size (32)
    off 16  u64  first index
    off 24  u32  reserved, zero
    off 28  u32  CRC32C of bytes [0, 28)

followed by records back to back (the layout of ``pgraft/_record.h``: crc, length, index, term,
type, payload), then zeros. A segment is full when the next record does not fit; a record
larger than the free space starts a new segment (sized to fit it if it is larger than a
segment). A ``<index>.reset`` file is the commit point of :meth:`Log.reset`; ``*.tmp`` files are
segments whose creation did not finish and are removed at open.

Recovery rule (docs/design.md rule 5): the first record that fails its checks in the last
segment is a torn tail, cut and reported in :attr:`Log.recovery`, when nothing but zeros follows
it, or when the write visibly did not reach the disk (the 512-byte sector where it starts is
zero from its first byte, or a whole zero sector overlaps it); otherwise, and for any bad record
in an earlier segment, the log raises ``StorageCorrupted`` naming the file and offset. The
torn-tail rule only applies above ``synced_through`` (the durable watermark the caller keeps in
the hard state, a lower bound of what was synced): a bad record at or below it is corruption,
and a log that ends before it is missing synced entries (``StorageCorrupted`` too). At open, the
last segment is fdatasync'ed once, so records that survived a crash only in the page cache are
durable before the log counts them as synced.

Failures (docs/design.md rule 2): Linux reports a writeback error to one fsync/msync only, so
after a sync (or any write) of the log failed, the log is *failed* (:attr:`Log.failed` holds the
error): every later sync, append, truncate, compact or reset raises ``StorageError`` saying so;
reads still work. A file system that is full is not a failure: creating a segment (the only
write that allocates space; segments are preallocated whole, so appends into one and the zeroing
ahead in ``sync`` never allocate) raises ``StorageFull`` and changes nothing. An append is all
or nothing: the segments it needs are created (as ``*.tmp`` files) before any of its records is
written, so an append that fails with ``StorageFull`` appended none of its entries and can be
retried with the same entries. :attr:`Log.space_low` says that the last segment creation failed
for lack of space, or that the file system holds less than one segment of free space (checked
when a segment is created and when ``sync`` zeroes ahead, about once per 512 KiB appended).

Failpoints (``pgraft.failpoints``): ``log.sync``, ``log.msync``, ``log.segment_create`` and
``hardstate.save`` fire here, identically in both twins.

The hard state file holds two 512-byte slots; slot format version 2 (``HARD_STATE_VERSION``)
adds the durable watermark ``synced`` after the commit index; version-1 slots (no watermark:
read as 0) are still read, and the next save writes version 2.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import mmap
import os
import struct
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import failpoints as _fp
from ._core_py import Entry, crc32c
from .errors import InvalidArgument, StorageCorrupted, StorageError, StorageFormatError
from .fsutil import NO_SPACE, fsync_dir, io_error

MAGIC = b"PGRFTLOG"
FORMAT_VERSION = 1
HEADER_SIZE = 32
RECORD_HEADER_SIZE = 28
SECTOR = 512
SEGMENT_SUFFIX = ".seg"
RESET_SUFFIX = ".reset"
TMP_SUFFIX = ".tmp"
LOCK_NAME = "LOCK"
_PAGE = mmap.PAGESIZE
#: Bytes zeroed ahead of the tail at a time (see _Segment.prepare_ahead).
ZERO_CHUNK = 1024 * 1024
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)

_SEG_HEADER = struct.Struct("<8sIIQI")  # magic, version, header size, first index, reserved
_REC_HEADER = struct.Struct("<IIQQB3s")  # crc, length, index, term, type, reserved
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HS_SLOT = 512  # one sector per slot: a torn write of one slot cannot touch the other
_HS_MAGIC = b"PGRFTHS\x00"
#: Version of the hard state slots written (version 1, without ``synced``, is still read).
HARD_STATE_VERSION = 2
# magic, version, reserved, seq, term, vote, commit, synced (version 2; CRC32C follows)
_HS_BODY = struct.Struct("<8sIIQQQQQ")
_HS_BODY_V1 = struct.Struct("<8sIIQQQQ")  # version 1: no synced


@dataclass
class RecoveryReport:
    """What the last open cut or removed: a torn tail (``cut_*``) and/or segment files."""

    cut_path: str | None = None
    cut_offset: int | None = None
    cut_bytes: int = 0
    removed_segments: list[str] = field(default_factory=list)


def segment_name(first_index: int) -> str:
    """File name of the segment whose first entry is ``first_index``."""
    return f"{first_index:020d}{SEGMENT_SUFFIX}"


def encode_segment_header(first_index: int) -> bytes:
    """The 32-byte header of a segment starting at ``first_index``."""
    head = _SEG_HEADER.pack(MAGIC, FORMAT_VERSION, HEADER_SIZE, first_index, 0)
    return head + _U32.pack(crc32c(head))


def _prepare_file(dirpath: str, name: str, size: int, head: bytes) -> str:
    """Create the temp file of ``name``: ``size`` bytes allocated (the only step that needs
    free space), starting with ``head``, fsynced. Returns its path; on failure it is removed
    and the OSError raised. :func:`_commit_file` puts it in place."""
    tmp = os.path.join(dirpath, name + TMP_SUFFIX)
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if _fp.ACTIVE is not None:
                _fp.hit("log.segment_create", tmp)
            os.posix_fallocate(fd, 0, size)
            os.pwrite(fd, head, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _commit_file(dirpath: str, tmp: str, name: str) -> None:
    """Rename a prepared temp file to ``name`` and fsync the directory: a crash never leaves a
    half-made file under ``name``."""
    os.rename(tmp, os.path.join(dirpath, name))
    fsync_dir(dirpath)


def _extend(fd: int, size: int, path: str) -> None:
    """Re-extend a truncated segment at open (posix_fallocate + fsync); StorageFull or
    StorageError naming the file."""
    try:
        if _fp.ACTIVE is not None:
            _fp.hit("log.segment_create", path)
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    except OSError as exc:
        raise io_error("extending the log segment", path, exc, full=True) from None


def _data_regions(fd: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """Byte ranges of [lo, hi) that may hold data: holes (never-written preallocated space)
    are skipped with SEEK_DATA/SEEK_HOLE where the file system supports it."""
    out = []
    pos = lo
    while pos < hi:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            end = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == 6:  # ENXIO: no data after pos
                break
            return [(pos, hi)]  # not supported: scan everything
        if start >= hi:
            break
        out.append((start, min(end, hi)))
        pos = end
    return out


def _last_nonzero(mm: mmap.mmap, fd: int, lo: int, hi: int) -> int:
    """Offset of the last non-zero byte in [lo, hi), or -1."""
    for start, end in reversed(_data_regions(fd, lo, hi)):
        b = end
        while b > start:
            a = max(start, b - _CHUNK)
            n = len(mm[a:b].rstrip(b"\0"))
            if n:
                return a + n - 1
            b = a
    return -1


def _file_has_data(fd: int, lo: int, size: int) -> bool:
    """Is any byte in [lo, size) of the file non-zero?"""
    for start, end in _data_regions(fd, lo, size):
        pos = start
        while pos < end:
            chunk = os.pread(fd, min(_CHUNK, end - pos), pos)
            if not chunk or chunk.strip(b"\0"):
                return bool(chunk)
            pos += len(chunk)
    return False


def _is_zero(mm: mmap.mmap, lo: int, hi: int) -> bool:
    return mm[lo:hi] == _ZEROS[: hi - lo] if hi - lo <= _CHUNK else not mm[lo:hi].strip(b"\0")


def _check_record(mm: mmap.mmap, off: int, size: int,
                  max_payload: int) -> tuple[int, int, int, int] | None:
    """(length, index, term, type) of a valid record at ``off``, or None."""
    if size - off < RECORD_HEADER_SIZE:
        return None
    crc, length, index, term, type_, reserved = _REC_HEADER.unpack_from(mm, off)
    if length > max_payload or length > size - off - RECORD_HEADER_SIZE or reserved != b"\0\0\0":
        return None
    if crc32c(mm[off + 4: off + RECORD_HEADER_SIZE + length]) != crc:
        return None
    return length, index, term, type_


class _Segment:
    """One mapped segment file. ``offsets[i]`` is where the record of ``first + i`` starts."""

    __slots__ = ("path", "first", "mm", "view", "size", "offsets", "end", "dirty_lo", "dirty_hi",
                 "prepared")

    def __init__(self, path: str, first: int, mm: mmap.mmap, size: int) -> None:
        self.path = path
        self.first = first
        self.mm = mm
        # Entries are read-only slices of this view. The mapping is never closed: a view handed
        # out keeps it alive after the segment is dropped, and GC unmaps it.
        self.view = memoryview(mm).toreadonly()
        self.size = size
        self.offsets = array("Q")
        self.end = HEADER_SIZE
        self.dirty_lo = -1
        self.dirty_hi = -1
        self.prepared = 0  # [0, prepared) holds written blocks (no unwritten extents)

    @property
    def last(self) -> int:
        return self.first + len(self.offsets) - 1

    def mark_dirty(self, lo: int, hi: int) -> None:
        self.dirty_lo = lo if self.dirty_lo < 0 else min(self.dirty_lo, lo)
        self.dirty_hi = max(self.dirty_hi, hi)

    def prepare_ahead(self) -> bool:
        """Write zeros over the next ``ZERO_CHUNK`` bytes past the records once fewer than
        half of that are left written. Preallocated space is unwritten extents: the first sync
        of data written into one also commits the extent conversion to the journal (a few
        more writes and a device flush: measured on ext4, 363 of 500 syncs of 16 KiB appends
        started a journal commit, against 1 with the space zeroed ahead). Zeroing a chunk
        converts it in one sync, after which syncs write only data. The bytes past the end of
        the records are zeros already: nothing the log holds changes. The space is allocated
        already (segments are preallocated whole): this never needs free space. Returns
        whether it zeroed a chunk."""
        # from the page after the records
        lo = max(self.prepared, (self.end + _PAGE - 1) // _PAGE * _PAGE)
        if lo >= self.size or lo - self.end >= ZERO_CHUNK // 2:
            return False
        hi = min(self.size, lo + ZERO_CHUNK)
        self.mm[lo:hi] = bytes(hi - lo)
        self.mark_dirty(lo, hi)
        self.prepared = hi
        return True

    def flush(self) -> None:
        """msync the dirty range; an OSError names the file."""
        if self.dirty_lo >= 0:
            lo = self.dirty_lo - self.dirty_lo % _PAGE  # msync wants a page-aligned start
            if _fp.ACTIVE is not None:
                _fp.hit("log.msync", self.path)
            try:
                self.mm.flush(lo, self.dirty_hi - lo)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, self.path) from None
            self.dirty_lo = self.dirty_hi = -1

    def record_end(self, i: int) -> int:
        return self.offsets[i + 1] if i + 1 < len(self.offsets) else self.end


def _map(fd: int, size: int) -> mmap.mmap:
    return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


class Log:
    """The durable Raft log in directory ``path`` (created if missing, recovered if not).

    ``append`` writes into the mapped segments; nothing is durable until ``sync()``.
    ``truncate_after``, ``compact`` and ``reset`` are durable when they return. Entries read
    back carry zero-copy, read-only memoryviews into the mapping (``data`` and ``record``); a
    view of an entry that is later truncated reads zeros. ``close()`` does not sync.

    ``synced_through`` is the caller's durable watermark (see the module docstring): a bad
    record at or below it, or a log ending before it, is ``StorageCorrupted``.
    """

    def __init__(self, path: str | os.PathLike[str], *, segment_size: int = 64 * 1024 * 1024,
                 max_entry_size: int = 16 * 1024 * 1024, first_index: int = 1,
                 synced_through: int = 0) -> None:
        if segment_size < HEADER_SIZE + RECORD_HEADER_SIZE:
            raise InvalidArgument(f"segment_size {segment_size} is too small")
        if not 0 <= max_entry_size < 1 << 32:
            raise InvalidArgument(f"max_entry_size {max_entry_size} out of range")
        if first_index < 1:
            raise InvalidArgument(f"first_index must be >= 1, not {first_index}")
        self.path = os.fspath(path)
        self.segment_size = segment_size
        self.max_entry_size = max_entry_size
        self._segs: list[_Segment] = []
        self._firsts: list[int] = []
        self._lock_fd = -1
        self.byte_size = 0
        self.synced_index = 0
        self.recovery: RecoveryReport | None = None
        #: The error text after a failed sync or write: nothing is written again.
        self.failed: str | None = None
        #: The last segment creation found the file system full, or it has less free space
        #: than one segment (see check_space).
        self.space_low = False
        # first index -> (temp file, size) of the segments the running append will start
        self._prepared: dict[int, tuple[str, int]] = {}
        os.makedirs(self.path, exist_ok=True)
        self._lock()
        try:
            self._recover(first_index, synced_through)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ state
    @property
    def first_index(self) -> int:
        """Index of the first entry held (or that the next append must use, if empty)."""
        return self._segs[0].first

    @property
    def last_index(self) -> int:
        """Index of the last entry; ``first_index - 1`` when the log is empty."""
        return self._segs[-1].last

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the directory lock and drop the mappings (GC unmaps them). No sync."""
        self._segs = []
        self._firsts = []
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _lock(self) -> None:
        fd = os.open(os.path.join(self.path, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(f"log directory {self.path} is in use by another Log") from None
        self._lock_fd = fd

    def _check_open(self) -> None:
        if not self._segs:
            raise StorageError(f"log {self.path} is closed")

    def _check_writable(self) -> None:
        if self.failed is not None:
            raise StorageError(
                f"log {self.path}: the storage failed earlier ({self.failed}); nothing is "
                "written to it again", path=self.path,
                hint="an I/O error is reported to one sync only: what was written since the "
                     "last successful sync may never reach the disk; see the STORAGE_FAILED "
                     "file of the data directory")
        if not self._segs:
            raise StorageError(f"log {self.path} is closed")

    def _fail(self, what: str, path: str, exc: OSError) -> StorageError:
        """The log is failed from now on (see the module docstring)."""
        err = io_error(what, path, exc)
        self.failed = err.message
        return err

    def _create_error(self, path: str, exc: OSError) -> StorageError:
        """A segment could not be created: StorageFull (nothing changed, the log stays
        usable) when the file system is full, else the log is failed."""
        err = io_error("creating the log segment", path, exc, full=True)
        if exc.errno in NO_SPACE:
            self.space_low = True
        else:
            self.failed = err.message
        return err

    def check_space(self) -> bool:
        """Re-evaluate :attr:`space_low` from the file system's free space (less than one
        segment: low) and return it."""
        try:
            st = os.statvfs(self.path)
        except OSError:
            return self.space_low
        self.space_low = st.f_bavail * st.f_frsize < self.segment_size
        return self.space_low

    # ---------------------------------------------------------------- writing
    def append(self, entries: Iterable[Any]) -> None:
        """Append entries (objects with index/term/type/data); the first must be
        ``last_index + 1`` and the rest contiguous. Not durable until :meth:`sync`. All or
        nothing: ``InvalidArgument`` or ``StorageFull`` append none of them."""
        self._check_writable()
        batch = list(entries)
        expect = self.last_index + 1
        first = expect
        records = []
        total = 0
        for e in batch:
            if e.index != expect:
                raise InvalidArgument(f"append: entry index {e.index}, expected {expect}")
            rec = e.record
            if len(rec) - RECORD_HEADER_SIZE > self.max_entry_size:
                raise InvalidArgument(
                    f"entry {e.index} has {len(rec) - RECORD_HEADER_SIZE} bytes, "
                    f"over max_entry_size {self.max_entry_size}")
            if _U64.unpack_from(rec, 8)[0] != expect:
                raise InvalidArgument(f"entry {e.index}: its record says another index")
            records.append(rec)
            total += len(rec)
            expect += 1
        tail = self._segs[-1]
        if tail.end + total > tail.size:
            self._prepare(records, first)
        try:
            for rec in records:
                self._write(rec)
        finally:
            if self._prepared:
                self._discard_prepared()

    def _prepare(self, records: list[Any], first: int) -> None:
        """Create (as temp files) every segment that appending ``records`` will start, before
        any record is written: a full file system fails the append before it changes
        anything. The placement is the one _write and _roll make."""
        tail = self._segs[-1]
        pos, size, index = tail.end, tail.size, first
        plan = []
        for rec in records:
            n = len(rec)
            if pos + n > size:
                size = max(self.segment_size, HEADER_SIZE + n)
                plan.append((index, size))
                pos = HEADER_SIZE
            pos += n
            index += 1
        for seg_first, seg_size in plan:
            name = segment_name(seg_first)
            try:
                tmp = _prepare_file(self.path, name, seg_size, encode_segment_header(seg_first))
            except OSError as exc:
                self._discard_prepared()
                raise self._create_error(os.path.join(self.path, name), exc) from None
            self._prepared[seg_first] = (tmp, seg_size)
        self.check_space()

    def _discard_prepared(self) -> None:
        for tmp, _size in self._prepared.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._prepared.clear()

    def _write(self, rec: bytes | memoryview) -> None:
        n = len(rec)
        seg = self._segs[-1]
        if seg.end + n > seg.size:
            seg = self._roll(seg.last + 1, n)
        off = seg.end
        seg.mm[off:off + n] = rec
        seg.offsets.append(off)
        seg.end = off + n
        seg.mark_dirty(off, off + n)
        self.byte_size += n

    def _roll(self, first: int, need: int) -> _Segment:
        # The full segment is made durable before the next exists, so after a crash only the
        # last segment can hold a torn tail.
        self.sync()
        size = max(self.segment_size, HEADER_SIZE + need)
        seg = self._new_segment(first, size, self._prepared.pop(first, None))
        if not self._segs[-1].offsets:  # an empty segment too small for the entry: replaced
            self._segs.pop()
            self._firsts.pop()
        self._segs.append(seg)
        self._firsts.append(first)
        return seg

    def _new_segment(self, first: int, size: int,
                     prepared: tuple[str, int] | None = None) -> _Segment:
        """Put the segment of ``first`` in place (a prepared temp file, or a new one) and map
        it; the caller adds it to the segment list."""
        name = segment_name(first)
        path = os.path.join(self.path, name)
        if prepared is None:
            try:
                tmp = _prepare_file(self.path, name, size, encode_segment_header(first))
            except OSError as exc:
                raise self._create_error(path, exc) from None
            self.check_space()
        else:
            tmp, size = prepared
        try:
            _commit_file(self.path, tmp, name)
            return self._open_mapped(path, first, size)
        except OSError as exc:
            raise self._fail("creating the log segment", path, exc) from None

    def _open_mapped(self, path: str, first: int, size: int) -> _Segment:
        fd = os.open(path, os.O_RDWR)
        try:
            return _Segment(path, first, _map(fd, size), size)
        finally:
            os.close(fd)

    def sync(self) -> None:
        """Return when everything appended so far is durable (msync of the dirty ranges).
        It also zeroes the space ahead of the tail (_Segment.prepare_ahead): appends must not
        run concurrently with it. A failure leaves the log failed (see the module docstring)."""
        self._check_writable()
        segs = self._segs
        try:
            if _fp.ACTIVE is not None:
                _fp.hit("log.sync", segs[-1].path)
            ahead = segs[-1].prepare_ahead()
            for seg in segs:
                seg.flush()
        except OSError as exc:
            raise self._fail("syncing the log segment", exc.filename or segs[-1].path,
                             exc) from None
        self.synced_index = self.last_index
        if ahead:
            self.check_space()

    def truncate_after(self, index: int) -> None:
        """Drop every entry after ``index`` (durable on return: the bytes are zeroed)."""
        self._check_writable()
        if index >= self.last_index:
            return
        if index < self.first_index - 1:
            raise InvalidArgument(f"truncate_after({index}) is before the first index "
                                  f"{self.first_index}")
        k = bisect.bisect_right(self._firsts, index + 1) - 1
        self._drop_tail_segments(k + 1)
        seg = self._segs[k]
        i = index + 1 - seg.first
        cut = seg.offsets[i]
        old_end = seg.end
        seg.mm[cut:old_end] = bytes(old_end - cut)  # nothing after the cut may come back
        del seg.offsets[i:]
        seg.end = cut
        self.byte_size -= old_end - cut
        seg.mark_dirty(cut, old_end)
        self.sync()
        self.synced_index = min(self.synced_index, index)

    def _drop_tail_segments(self, k: int) -> None:
        if k >= len(self._segs):
            return
        # Newest first: a crash midway leaves a contiguous log.
        for seg in reversed(self._segs[k:]):
            try:
                os.unlink(seg.path)
                fsync_dir(self.path)  # in order: unlinks may reach the disk reordered
            except OSError as exc:
                raise self._fail("removing the log segment", seg.path, exc) from None
            self.byte_size -= seg.end - HEADER_SIZE
        del self._segs[k:]
        del self._firsts[k:]

    def compact(self, index: int) -> int:
        """Drop whole segments whose entries are all <= ``index`` (never the last segment).
        Returns the new first index."""
        self._check_writable()
        dropped = 0
        while len(self._segs) - dropped > 1 and self._segs[dropped + 1].first - 1 <= index:
            seg = self._segs[dropped]
            try:
                os.unlink(seg.path)  # oldest first: a crash midway leaves a contiguous log
                fsync_dir(self.path)  # ... only if each unlink is durable before the next
            except OSError as exc:
                del self._segs[:dropped]
                del self._firsts[:dropped]
                raise self._fail("removing the log segment", seg.path, exc) from None
            self.byte_size -= seg.end - HEADER_SIZE
            dropped += 1
        if dropped:
            del self._segs[:dropped]
            del self._firsts[:dropped]
        return self.first_index

    def reset(self, first_index: int) -> None:
        """Drop everything; the log restarts empty at ``first_index`` (durable on return).
        ``StorageFull`` (the new segment could not be allocated) changes nothing."""
        self._check_writable()
        if first_index < 1:
            raise InvalidArgument(f"first_index must be >= 1, not {first_index}")
        name = f"{first_index:020d}{RESET_SUFFIX}"
        try:
            tmp = _prepare_file(self.path, name, self.segment_size,
                                encode_segment_header(first_index))
        except OSError as exc:
            raise self._create_error(os.path.join(self.path, name), exc) from None
        self.check_space()
        try:
            _commit_file(self.path, tmp, name)  # the commit point of the reset
            self._segs = []
            self._firsts = []
            self._finish_reset(name)
            seg = self._open_mapped(os.path.join(self.path, segment_name(first_index)),
                                    first_index, self.segment_size)
        except OSError as exc:
            raise self._fail("resetting the log in", self.path, exc) from None
        self._segs.append(seg)
        self._firsts.append(first_index)
        self.byte_size = 0
        self.synced_index = first_index - 1

    def _finish_reset(self, reset_name: str) -> None:
        """The durable .reset file is the commit point: remove every segment, promote it."""
        for name in os.listdir(self.path):
            if name.endswith(SEGMENT_SUFFIX):
                os.unlink(os.path.join(self.path, name))
        first = int(reset_name[: -len(RESET_SUFFIX)])
        os.rename(os.path.join(self.path, reset_name), os.path.join(self.path, segment_name(first)))
        fsync_dir(self.path)

    # ---------------------------------------------------------------- reading
    def _locate(self, index: int) -> tuple[_Segment, int]:
        segs = self._segs
        if not segs:
            raise StorageError(f"log {self.path} is closed")
        if not self.first_index <= index <= self.last_index:
            raise InvalidArgument(f"index {index} is not in the log "
                                  f"[{self.first_index}, {self.last_index}]")
        seg = segs[-1]
        if index < seg.first:
            seg = segs[bisect.bisect_right(self._firsts, index) - 1]
        return seg, index - seg.first

    def entry(self, index: int) -> Entry:
        """The entry at ``index``; its ``data`` and ``record`` are views into the mapping."""
        seg, i = self._locate(index)
        return self._entry_at(seg, i)

    def _entry_at(self, seg: _Segment, i: int) -> Entry:
        off = seg.offsets[i]
        rec = seg.view[off:seg.record_end(i)]
        _crc, _len, index, term, type_, _res = _REC_HEADER.unpack_from(rec)
        e = Entry(index, term, type_, rec[RECORD_HEADER_SIZE:])
        e._record = rec
        return e

    def term(self, index: int) -> int:
        """Term of the entry at ``index``."""
        seg, i = self._locate(index)
        return int(_U64.unpack_from(seg.mm, seg.offsets[i] + 16)[0])

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi), stopping before ``max_bytes`` of records (at least one entry)."""
        self._check_open()
        if lo == hi and self.first_index <= lo <= self.last_index + 1:
            return []
        if not (self.first_index <= lo < hi <= self.last_index + 1):
            raise InvalidArgument(f"entries({lo}, {hi}) outside the log "
                                  f"[{self.first_index}, {self.last_index}]")
        out: list[Entry] = []
        total = 0
        index = lo
        while index < hi:
            seg, i = self._locate(index)
            n = min(hi - index, len(seg.offsets) - i)
            for j in range(i, i + n):
                size = seg.record_end(j) - seg.offsets[j]
                if max_bytes is not None and out and total + size > max_bytes:
                    return out
                total += size
                out.append(self._entry_at(seg, j))
            index += n
        return out

    # --------------------------------------------------------------- recovery
    def _recover(self, first_index: int, synced_through: int) -> None:
        names = sorted(os.listdir(self.path))
        for name in names:
            if name.endswith(TMP_SUFFIX):  # a creation that did not finish
                os.unlink(os.path.join(self.path, name))
        resets = [n for n in names if n.endswith(RESET_SUFFIX)]
        for name in resets:
            self._finish_reset(name)
        segs = sorted(n for n in os.listdir(self.path) if n.endswith(SEGMENT_SUFFIX))
        if not segs:
            if synced_through >= first_index:
                raise StorageCorrupted(
                    f"{self.path}: the log has no segments but was synced through index "
                    f"{synced_through}: synced entries are missing", path=self.path)
            self._segs.append(self._new_segment(first_index, self.segment_size))
            self._firsts.append(first_index)
            self.synced_index = first_index - 1
            return
        report = RecoveryReport()
        for pos, name in enumerate(segs):
            self._recover_segment(name, pos == len(segs) - 1, report, synced_through)
        if report.cut_path is not None or report.removed_segments:
            self.recovery = report
        if self.last_index < synced_through:
            tail = self._segs[-1]
            raise StorageCorrupted(
                f"{tail.path}: the log ends at index {self.last_index} (offset {tail.end}) but "
                f"was synced through index {synced_through}: synced entries are missing",
                path=tail.path, offset=tail.end)
        self.synced_index = self.last_index

    def _recover_segment(self, name: str, is_last: bool, report: RecoveryReport,
                         synced_through: int) -> None:
        path = os.path.join(self.path, name)
        stem = name[: -len(SEGMENT_SUFFIX)]
        if not (len(stem) == 20 and stem.isdigit()):
            raise StorageFormatError(f"{path}: not a pgraft segment name", path=path)
        first = int(stem)
        expect = self._segs[-1].last + 1 if self._segs else first
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            hdr_first = self._read_header(path, fd, size)
            if hdr_first is None:  # header missing: a segment creation torn by a crash
                if not is_last or first != expect or _file_has_data(fd, HEADER_SIZE, size):
                    raise StorageCorrupted(f"{path}: segment header missing", path=path,
                                           offset=0)
                if self._segs:
                    os.unlink(path)
                    fsync_dir(self.path)
                    report.removed_segments.append(path)
                    return
                _extend(fd, max(size, self.segment_size), path)
                os.pwrite(fd, encode_segment_header(first) + bytes(max(0, size - HEADER_SIZE)), 0)
                os.fsync(fd)
                report.cut_path, report.cut_offset, report.cut_bytes = path, 0, size
                size = max(size, self.segment_size)
                hdr_first = first
            if hdr_first != first or first != expect:
                raise StorageCorrupted(
                    f"{path}: segment starts at index {hdr_first}, expected {expect}",
                    path=path, offset=0)
            if is_last and size < self.segment_size:  # truncated file: re-extend with zeros
                _extend(fd, self.segment_size, path)
                size = self.segment_size
            seg = _Segment(path, first, _map(fd, size), size)
            self._scan(seg, fd, is_last, report, synced_through)
            if is_last:
                # Records that survived a crash in the page cache only (kill -9 before a
                # sync) are made durable before the log counts them as synced.
                os.fdatasync(fd)
        finally:
            os.close(fd)
        self._segs.append(seg)
        self._firsts.append(first)
        self.byte_size += seg.end - HEADER_SIZE

    @staticmethod
    def _read_header(path: str, fd: int, size: int) -> int | None:
        """First index from a segment header; None when the header is missing (short or
        zero); StorageFormatError / StorageCorrupted when it is foreign or damaged."""
        if size < HEADER_SIZE:
            return None
        head = os.pread(fd, HEADER_SIZE, 0)
        if head == bytes(HEADER_SIZE):
            return None
        magic, version, hsize, first, _res = _SEG_HEADER.unpack_from(head)
        if magic != MAGIC:
            raise StorageFormatError(f"{path}: not a pgraft log segment (bad magic)", path=path)
        if version != FORMAT_VERSION or hsize != HEADER_SIZE:
            raise StorageFormatError(
                f"{path}: log format version {version}, this pgraft reads {FORMAT_VERSION}",
                path=path)
        if crc32c(head[:28]) != _U32.unpack_from(head, 28)[0]:
            raise StorageCorrupted(f"{path}: segment header CRC mismatch", path=path, offset=0)
        return int(first)

    def _scan(self, seg: _Segment, fd: int, is_last: bool, report: RecoveryReport,
              synced_through: int) -> None:
        mm, size, off, expect = seg.mm, seg.size, HEADER_SIZE, seg.first
        while True:
            rec = _check_record(mm, off, size, 0xFFFFFFFF)
            if rec is None:
                break
            if rec[1] != expect:
                raise StorageCorrupted(
                    f"{seg.path}: record at offset {off} has index {rec[1]}, expected {expect}",
                    path=seg.path, offset=off)
            seg.offsets.append(off)
            off += RECORD_HEADER_SIZE + rec[0]
            expect += 1
        seg.end = off
        last_nz = _last_nonzero(mm, fd, off, size)
        if last_nz < 0:
            return  # clean end
        if expect <= synced_through:
            raise StorageCorrupted(
                f"{seg.path}: bad record at offset {off} (index {expect}), at or below index "
                f"{synced_through} that was synced: corruption, not a torn tail",
                path=seg.path, offset=off)
        if not is_last or not _is_torn(mm, off, size, last_nz, expect):
            raise StorageCorrupted(
                f"{seg.path}: bad record at offset {off} (index {expect}) followed by data",
                path=seg.path, offset=off)
        mm[off:last_nz + 1] = bytes(last_nz + 1 - off)
        seg.mark_dirty(off, last_nz + 1)
        seg.flush()
        report.cut_path, report.cut_offset, report.cut_bytes = seg.path, off, last_nz + 1 - off


def _is_torn(mm: mmap.mmap, off: int, size: int, last_nz: int, expect: int) -> bool:
    """Is the bad record at ``off`` (with non-zero bytes up to ``last_nz``) a torn write?"""
    rec_end = min(off + RECORD_HEADER_SIZE, size)
    if size - off >= 8:
        length = _U32.unpack_from(mm, off + 4)[0]
        if length <= size - off - RECORD_HEADER_SIZE:
            rec_end = off + RECORD_HEADER_SIZE + length
    # The sector holding the record's start, or a whole sector within it, never got written.
    sector_end = min((off // SECTOR + 1) * SECTOR, size)
    if _is_zero(mm, off, sector_end):
        return True
    chunk = sector_end
    while chunk < min(rec_end, last_nz + 1) and chunk + SECTOR <= size:
        if _is_zero(mm, chunk, chunk + SECTOR):
            return True
        chunk += SECTOR
    if _next_record_follows(mm, off, size, last_nz, expect + 1):
        return False  # a bad record followed by a good one: corruption
    return last_nz < rec_end  # nothing but zeros after the record


def _next_record_follows(mm: mmap.mmap, off: int, size: int, last_nz: int, index: int) -> bool:
    """Is there a valid record of ``index`` starting in (off, last_nz]?"""
    pattern = _U64.pack(index)
    end = min(size, last_nz + 17)  # the index field of a record starting at last_nz
    pos = mm.find(pattern, off + 9, end)
    while pos >= 0:
        rec = _check_record(mm, pos - 8, size, 0xFFFFFFFF)
        if rec is not None and rec[1] == index:
            return True
        pos = mm.find(pattern, pos + 1, end)
    return False


# ------------------------------------------------------------------ hard state
@dataclass
class HardState:
    """What Raft must never forget: the current term, the vote in it, the commit index."""

    term: int = 0
    vote: int = 0
    commit: int = 0
    #: The durable watermark: the log is known synced through this index (a lower bound).
    synced: int = 0


def encode_hard_state_slot(seq: int, hs: Any) -> bytes:
    """One 512-byte slot (version 2): body, CRC32C of the body, zero padding."""
    body = _HS_BODY.pack(_HS_MAGIC, HARD_STATE_VERSION, 0, seq, hs.term, hs.vote, hs.commit,
                         getattr(hs, "synced", 0))
    return (body + _U32.pack(crc32c(body))).ljust(_HS_SLOT, b"\0")


class HardStateFile:
    """Hard state in one file of two CRC'd slots written alternately (pwrite + fdatasync); the
    valid slot with the highest sequence number wins, so a torn save leaves the previous one.
    A failed save leaves the sequence where it was (the last good slot is never the next one
    written) and the file failed (:attr:`failed`): every later save raises StorageError."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._seq = 0
        self._fd = -1
        #: The error text after a failed save: nothing is saved again.
        self.failed: str | None = None
        if not os.path.exists(self.path):
            d, name = os.path.split(os.path.abspath(self.path))
            tmp = os.path.join(d, name + TMP_SUFFIX)
            with open(tmp, "wb") as f:
                f.write(encode_hard_state_slot(0, HardState()) + bytes(_HS_SLOT))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
            fsync_dir(d)
        self._fd = os.open(self.path, os.O_RDWR)

    def load(self) -> HardState:
        """The last saved hard state (zeros if never saved)."""
        best: tuple[int, HardState] | None = None
        foreign = bad = 0  # slots of another format / of ours but damaged
        for slot in range(2):
            raw = os.pread(self._fd, _HS_SLOT, slot * _HS_SLOT).ljust(_HS_SLOT, b"\0")
            magic, version = raw[:8], _U32.unpack_from(raw, 8)[0]
            if magic != _HS_MAGIC or version not in (1, HARD_STATE_VERSION):
                foreign += magic == _HS_MAGIC or raw.strip(b"\0") != b""
                continue
            body = _HS_BODY if version == HARD_STATE_VERSION else _HS_BODY_V1
            if crc32c(raw[:body.size]) != _U32.unpack_from(raw, body.size)[0]:
                bad += 1
                continue
            fields = body.unpack_from(raw)
            seq, term, vote, commit = fields[3:7]
            synced = fields[7] if version == HARD_STATE_VERSION else 0
            if best is None or seq > best[0]:
                best = (seq, HardState(term, vote, commit, synced))
        if best is None:
            if foreign and not bad:
                raise StorageFormatError(f"{self.path}: not a pgraft hard state file of "
                                         f"format version 1 or {HARD_STATE_VERSION}",
                                         path=self.path)
            raise StorageCorrupted(f"{self.path}: both hard state slots are damaged",
                                   path=self.path, offset=0)
        self._seq = best[0]
        return best[1]

    def save(self, hs: HardState) -> None:
        """Write ``hs`` durably into the older slot."""
        if self.failed is not None:
            raise StorageError(
                f"hard state file {self.path}: the storage failed earlier ({self.failed}); "
                "nothing is saved to it again", path=self.path)
        if self._seq == 0:
            self.load()
        seq = self._seq + 1
        try:
            os.pwrite(self._fd, encode_hard_state_slot(seq, hs), (seq % 2) * _HS_SLOT)
            if _fp.ACTIVE is not None:
                _fp.hit("hardstate.save", self.path)
            os.fdatasync(self._fd)
        except OSError as exc:
            err = io_error("saving the hard state to", self.path, exc)
            self.failed = err.message
            raise err from None
        self._seq = seq  # only now: a failed save must not move the next save onto this slot

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> HardStateFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
