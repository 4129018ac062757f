# cython: language_level=3, wraparound=True
"""pgraft._log: the durable Raft log over memory-mapped segment files, and the hard state file.

The pure-Python twin ``pgraft._log_py`` has the same API and the same on-disk format; its
module docstring describes the format, the recovery rule (with the ``synced_through``
watermark), what a failed sync or a full file system does, and the failpoints. Here the hot
paths are C: records are written with ``pgraft_record_write`` straight into the mapping, the
offset index is a C array per segment, and recovery verifies every CRC and builds the index
in C.
"""

import bisect
import contextlib
import fcntl
import mmap
import os

from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport errno
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memset
from posix.mman cimport MS_SYNC, msync

from . import failpoints as _fp
from .errors import InvalidArgument, StorageCorrupted, StorageError, StorageFormatError
from .fsutil import NO_SPACE, fsync_dir, io_error

try:  # entries are returned as the compiled Entry; the pure one only if _core is not built
    from ._core import Entry as _Entry
except ImportError:  # pragma: no cover - exercised only in a partial build
    from ._core_py import Entry as _Entry
from ._core_py import Entry as _PyEntry


cdef extern from "_record.h":
    void pgraft_crc_init()
    uint32_t pgraft_crc32c(uint32_t crc, const unsigned char *p, size_t n) nogil
    void pgraft_store_u32(unsigned char *p, uint32_t v) nogil
    void pgraft_store_u64(unsigned char *p, uint64_t v) nogil
    uint32_t pgraft_load_u32(const unsigned char *p) nogil
    uint64_t pgraft_load_u64(const unsigned char *p) nogil
    void pgraft_record_write(unsigned char *dst, uint64_t index, uint64_t term, uint8_t type,
                             const unsigned char *payload, uint32_t len) nogil
    int pgraft_record_check(const unsigned char *p, size_t avail, uint32_t max_payload,
                            uint32_t *len, uint64_t *index, uint64_t *term, uint8_t *type) nogil


pgraft_crc_init()

MAGIC = b"PGRFTLOG"
FORMAT_VERSION = 1
HEADER_SIZE = 32
RECORD_HEADER_SIZE = 28
SECTOR = 512
SEGMENT_SUFFIX = ".seg"
RESET_SUFFIX = ".reset"
TMP_SUFFIX = ".tmp"
LOCK_NAME = "LOCK"

#: Version of the hard state slots written (version 1, without ``synced``, is still read).
HARD_STATE_VERSION = 2

cdef enum:
    HDR = 32
    REC = 28
    SEC = 512
    HS_SLOT = 512
    HS_BODY = 56     # version 2: magic, version, reserved, seq, term, vote, commit, synced
    HS_BODY_V1 = 48  # version 1: no synced

cdef Py_ssize_t _PAGE = mmap.PAGESIZE
#: Bytes zeroed ahead of the tail at a time (see _Segment.prepare_ahead).
ZERO_CHUNK = 1024 * 1024
cdef Py_ssize_t _ZERO_CHUNK = ZERO_CHUNK
cdef bytes _HS_MAGIC = b"PGRFTHS\x00"


# ------------------------------------------------------------------ helpers
class RecoveryReport:
    """What the last open cut or removed: a torn tail (``cut_*``) and/or segment files."""

    def __init__(self, cut_path=None, cut_offset=None, cut_bytes=0, removed_segments=None):
        self.cut_path = cut_path
        self.cut_offset = cut_offset
        self.cut_bytes = cut_bytes
        self.removed_segments = [] if removed_segments is None else removed_segments

    def __repr__(self):
        return (f"RecoveryReport(cut_path={self.cut_path!r}, cut_offset={self.cut_offset!r}, "
                f"cut_bytes={self.cut_bytes!r}, removed_segments={self.removed_segments!r})")

    def __eq__(self, other):
        if not hasattr(other, "removed_segments"):
            return NotImplemented
        return (self.cut_path, self.cut_offset, self.cut_bytes, self.removed_segments) == (
            other.cut_path, other.cut_offset, other.cut_bytes, other.removed_segments)


def segment_name(first_index):
    """File name of the segment whose first entry is ``first_index``."""
    return f"{first_index:020d}{SEGMENT_SUFFIX}"


def encode_segment_header(uint64_t first_index):
    """The 32-byte header of a segment starting at ``first_index``."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, HDR)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    memcpy(p, b"PGRFTLOG", 8)
    pgraft_store_u32(p + 8, FORMAT_VERSION)
    pgraft_store_u32(p + 12, HDR)
    pgraft_store_u64(p + 16, first_index)
    pgraft_store_u32(p + 24, 0)
    pgraft_store_u32(p + 28, pgraft_crc32c(0, p, 28))
    return out


def _prepare_file(dirpath, name, size, head):
    """Create the temp file of ``name``: ``size`` bytes allocated (the only step that needs
    free space), starting with ``head``, fsynced. Returns its path; on failure it is removed
    and the OSError raised. _commit_file puts it in place."""
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


def _commit_file(dirpath, tmp, name):
    """Rename a prepared temp file to ``name`` and fsync the directory: a crash never leaves a
    half-made file under ``name``."""
    os.rename(tmp, os.path.join(dirpath, name))
    fsync_dir(dirpath)


def _extend(fd, size, path):
    """Re-extend a truncated segment at open (posix_fallocate + fsync); StorageFull or
    StorageError naming the file."""
    try:
        if _fp.ACTIVE is not None:
            _fp.hit("log.segment_create", path)
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    except OSError as exc:
        raise io_error("extending the log segment", path, exc, full=True) from None


def _data_regions(int fd, Py_ssize_t lo, Py_ssize_t hi):
    """Ranges of [lo, hi) that may hold data; never-written preallocated space is skipped with
    SEEK_DATA/SEEK_HOLE where the file system supports it."""
    out = []
    pos = lo
    while pos < hi:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            end = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == 6:  # ENXIO: no data after pos
                break
            return [(pos, hi)]
        if start >= hi:
            break
        out.append((start, min(end, hi)))
        pos = end
    return out


cdef inline bint _zero(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i]:
            return False
    return True


cdef Py_ssize_t _last_nonzero(const unsigned char *base, int fd, Py_ssize_t lo,
                              Py_ssize_t hi) except -2:
    """Offset of the last non-zero byte in [lo, hi), or -1."""
    cdef Py_ssize_t a, b
    cdef uint64_t w
    for start, end in reversed(_data_regions(fd, lo, hi)):
        a = start
        b = end
        with nogil:
            while b - a >= 8:
                memcpy(&w, base + b - 8, 8)
                if w:
                    break
                b -= 8
            while b > a and base[b - 1] == 0:
                b -= 1
        if b > a:
            return b - 1
    return -1


cdef bint _valid_record_of(const unsigned char *base, Py_ssize_t off, Py_ssize_t size,
                           uint64_t index) noexcept nogil:
    cdef uint32_t length
    cdef uint64_t idx, term
    cdef uint8_t typ
    if off < 0 or off >= size:
        return False
    return (pgraft_record_check(base + off, <size_t>(size - off), 0xFFFFFFFFu, &length, &idx,
                                &term, &typ) == 0 and idx == index)


cdef bint _next_record_follows(const unsigned char *base, Py_ssize_t off, Py_ssize_t size,
                               Py_ssize_t last_nz, uint64_t index) noexcept nogil:
    """Is there a valid record of ``index`` starting in (off, last_nz]?"""
    cdef Py_ssize_t pos
    for pos in range(off + 1, last_nz + 1):
        if pos + 16 > size:
            break
        if pgraft_load_u64(base + pos + 8) == index and _valid_record_of(base, pos, size, index):
            return True
    return False


cdef bint _is_torn(const unsigned char *base, Py_ssize_t off, Py_ssize_t size,
                   Py_ssize_t last_nz, uint64_t expect) noexcept nogil:
    """Is the bad record at ``off`` (non-zero bytes up to ``last_nz``) a torn write? Same rule
    as _log_py._is_torn."""
    cdef Py_ssize_t rec_end = off + REC if off + REC < size else size
    cdef Py_ssize_t length, sector_end, chunk, limit
    if size - off >= 8:
        length = pgraft_load_u32(base + off + 4)
        if length <= size - off - REC:
            rec_end = off + REC + length
    sector_end = (off // SEC + 1) * SEC
    if sector_end > size:
        sector_end = size
    if _zero(base + off, sector_end - off):
        return True
    chunk = sector_end
    limit = rec_end if rec_end < last_nz + 1 else last_nz + 1
    while chunk < limit and chunk + SEC <= size:
        if _zero(base + chunk, SEC):
            return True
        chunk += SEC
    if _next_record_follows(base, off, size, last_nz, expect + 1):
        return False
    return last_nz < rec_end


# ----------------------------------------------------------------- segments
cdef class _Segment:
    """One mapped segment file."""

    def __cinit__(self, path, uint64_t first, mm, Py_ssize_t size):
        self.path = path
        self.first = first
        self.mm = mm
        # Entries are read-only slices of this view. The mapping is never closed: a view handed
        # out keeps it alive after the segment is dropped, and GC unmaps it.
        self.view = memoryview(mm).toreadonly()
        PyObject_GetBuffer(mm, &self.buf, PyBUF_WRITABLE)
        self.has_buf = True
        self.base = <unsigned char *>self.buf.buf
        self.size = size
        self.offsets = NULL
        self.count = 0
        self.cap = 0
        self.end = HDR
        self.dirty_lo = -1
        self.dirty_hi = -1
        self.prepared = 0

    def __dealloc__(self):
        free(self.offsets)
        if self.has_buf:
            PyBuffer_Release(&self.buf)

    cdef int reserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap = self.cap if self.cap else 1024
        cdef uint64_t *p
        if n <= self.cap:
            return 0
        while cap < n:
            cap *= 2
        p = <uint64_t *>realloc(self.offsets, cap * sizeof(uint64_t))
        if p == NULL:
            raise MemoryError()
        self.offsets = p
        self.cap = cap
        return 0

    cdef inline int push(self, Py_ssize_t off) except -1:
        if self.count == self.cap:
            self.reserve(self.count + 1)
        self.offsets[self.count] = off
        self.count += 1
        return 0

    cdef inline void mark_dirty(self, Py_ssize_t lo, Py_ssize_t hi) noexcept:
        if self.dirty_lo < 0 or lo < self.dirty_lo:
            self.dirty_lo = lo
        if hi > self.dirty_hi:
            self.dirty_hi = hi

    cdef bint prepare_ahead(self) noexcept:
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
        cdef Py_ssize_t lo = (self.end + _PAGE - 1) // _PAGE * _PAGE
        if lo < self.prepared:
            lo = self.prepared
        if lo >= self.size or lo - self.end >= _ZERO_CHUNK // 2:
            return False
        cdef Py_ssize_t hi = min(self.size, lo + _ZERO_CHUNK)
        memset(self.base + lo, 0, hi - lo)
        self.mark_dirty(lo, hi)
        self.prepared = hi
        return True

    cdef int flush(self) except -1:
        """msync the dirty range; an OSError names the file."""
        cdef Py_ssize_t lo
        cdef int rc, err = 0
        if self.dirty_lo < 0:
            return 0
        lo = self.dirty_lo - self.dirty_lo % _PAGE  # msync wants a page-aligned start
        if _fp.ACTIVE is not None:
            _fp.hit("log.msync", self.path)
        with nogil:
            rc = msync(self.base + lo, <size_t>(self.dirty_hi - lo), MS_SYNC)
            if rc != 0:
                err = errno
        if rc != 0:
            raise OSError(err, os.strerror(err), self.path)
        self.dirty_lo = self.dirty_hi = -1
        return 0

    cdef inline Py_ssize_t record_end(self, Py_ssize_t i) noexcept:
        return <Py_ssize_t>self.offsets[i + 1] if i + 1 < self.count else self.end

    @property
    def last(self):
        return self.first + self.count - 1


def _map(int fd, Py_ssize_t size):
    return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


# ---------------------------------------------------------------------- Log
cdef class Log:
    """The durable Raft log in directory ``path`` (created if missing, recovered if not).

    ``append`` writes into the mapped segments; nothing is durable until ``sync()``.
    ``truncate_after``, ``compact`` and ``reset`` are durable when they return. Entries read
    back carry zero-copy, read-only memoryviews into the mapping (``data`` and ``record``); a
    view of an entry that is later truncated reads zeros. ``close()`` does not sync.

    ``synced_through`` is the caller's durable watermark (see the module docstring of the
    twin): a bad record at or below it, or a log ending before it, is ``StorageCorrupted``.
    """

    def __cinit__(self, *args, **kwargs):
        self._lock_fd = -1

    def __init__(self, path, *, Py_ssize_t segment_size=64 * 1024 * 1024,
                 Py_ssize_t max_entry_size=16 * 1024 * 1024, first_index=1,
                 synced_through=0):
        if segment_size < HDR + REC:
            raise InvalidArgument(f"segment_size {segment_size} is too small")
        if not 0 <= max_entry_size < (1 << 32):
            raise InvalidArgument(f"max_entry_size {max_entry_size} out of range")
        if first_index < 1:
            raise InvalidArgument(f"first_index must be >= 1, not {first_index}")
        self.path = os.fspath(path)
        self.segment_size = segment_size
        self.max_entry_size = max_entry_size
        self.recovery = None
        self._segs = []
        self._firsts = []
        self._tail = None
        self._lock_fd = -1
        self._synced = 0
        self._bytes = 0
        self.failed = None
        self.space_low = False
        self._prepared = {}
        os.makedirs(self.path, exist_ok=True)
        self._lock()
        try:
            self._recover(first_index, synced_through)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ state
    @property
    def first_index(self):
        """Index of the first entry held (or that the next append must use, if empty)."""
        self._check_open()
        return (<_Segment>self._segs[0]).first

    @property
    def last_index(self):
        """Index of the last entry; ``first_index - 1`` when the log is empty."""
        self._check_open()
        return self._tail.first + self._tail.count - 1

    @property
    def synced_index(self):
        """Last index known durable."""
        return self._synced

    @property
    def byte_size(self):
        """Bytes of records (headers + payloads) in the log."""
        return self._bytes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Release the directory lock and drop the mappings (GC unmaps them). No sync."""
        self._segs = []
        self._firsts = []
        self._tail = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _lock(self):
        fd = os.open(os.path.join(self.path, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(f"log directory {self.path} is in use by another Log") from None
        self._lock_fd = fd

    cdef int _check_open(self) except -1:
        if self._tail is None:
            raise StorageError(f"log {self.path} is closed")
        return 0

    cdef int _check_writable(self) except -1:
        if self.failed is not None:
            raise StorageError(
                f"log {self.path}: the storage failed earlier ({self.failed}); nothing is "
                "written to it again", path=self.path,
                hint="an I/O error is reported to one sync only: what was written since the "
                     "last successful sync may never reach the disk; see the STORAGE_FAILED "
                     "file of the data directory")
        if self._tail is None:
            raise StorageError(f"log {self.path} is closed")
        return 0

    def _fail(self, what, path, exc):
        """The log is failed from now on (see the module docstring of the twin)."""
        err = io_error(what, path, exc)
        self.failed = err.message
        return err

    def _create_error(self, path, exc):
        """A segment could not be created: StorageFull (nothing changed, the log stays
        usable) when the file system is full, else the log is failed."""
        err = io_error("creating the log segment", path, exc, full=True)
        if exc.errno in NO_SPACE:
            self.space_low = True
        else:
            self.failed = err.message
        return err

    def check_space(self):
        """Re-evaluate :attr:`space_low` from the file system's free space (less than one
        segment: low) and return it."""
        try:
            st = os.statvfs(self.path)
        except OSError:
            return self.space_low
        self.space_low = st.f_bavail * st.f_frsize < self.segment_size
        return self.space_low

    # ---------------------------------------------------------------- writing
    def append(self, entries):
        """Append entries (objects with index/term/type/data); the first must be
        ``last_index + 1`` and the rest contiguous. Not durable until :meth:`sync`. All or
        nothing: ``InvalidArgument`` or ``StorageFull`` append none of them."""
        self._check_writable()
        cdef list batch = entries if type(entries) is list else list(entries)
        cdef uint64_t expect = self._tail.first + self._tail.count
        cdef Py_ssize_t k, n = len(batch), size, total = 0
        cdef Py_buffer view
        cdef object e, data, rec
        # Check the whole batch first so a bad entry appends nothing.
        for k in range(n):
            e = batch[k]
            if e.index != expect + k:
                raise InvalidArgument(f"append: entry index {e.index}, expected {expect + k}")
            # (an Entry's size needs no payload slice of a decoded record)
            size = e.size - REC if type(e) is _Entry or type(e) is _PyEntry else len(e.data)
            if size > self.max_entry_size:
                raise InvalidArgument(f"entry {e.index} has {size} bytes, over "
                                      f"max_entry_size {self.max_entry_size}")
            total += REC + size
        if self._tail.end + total > self._tail.size:
            # The segments this batch starts exist before any record is written.
            self._prepare(batch, expect)
        try:
            self._append(batch, expect)
        finally:
            if self._prepared:
                self._discard_prepared()

    def _prepare(self, list batch, uint64_t first):
        """Create (as temp files) every segment that appending ``batch`` will start, before
        any record is written: a full file system fails the append before it changes
        anything. The placement is the one _write and _roll make."""
        cdef Py_ssize_t pos = self._tail.end, size = self._tail.size, need
        cdef uint64_t index = first
        plan = []
        for e in batch:
            need = e.size if type(e) is _Entry or type(e) is _PyEntry else REC + len(e.data)
            if pos + need > size:
                size = max(self.segment_size, HDR + need)
                plan.append((index, size))
                pos = HDR
            pos += need
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

    def _discard_prepared(self):
        for tmp, _size in self._prepared.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._prepared.clear()

    cdef int _append(self, list batch, uint64_t expect) except -1:
        cdef Py_ssize_t k, n = len(batch)
        cdef Py_buffer view
        cdef object e, data, rec
        for k in range(n):
            e = batch[k]
            # An entry whose record is already encoded (a proposal, or a record received in a
            # MsgApp) is copied as is: its CRC is computed once (docs/design.md rule 4).
            rec = e.cached_record if (type(e) is _Entry or type(e) is _PyEntry) else None
            if rec is not None:
                PyObject_GetBuffer(rec, &view, PyBUF_SIMPLE)
                try:
                    self._write(expect + k, 0, 0, NULL, view.len - REC,
                                <const unsigned char *>view.buf)
                finally:
                    PyBuffer_Release(&view)
                continue
            data = e.data
            if type(data) is bytes:
                self._write(expect + k, e.term, e.type,
                            <const unsigned char *>PyBytes_AS_STRING(data),
                            PyBytes_GET_SIZE(data), NULL)
                continue
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                self._write(expect + k, e.term, e.type, <const unsigned char *>view.buf,
                            view.len, NULL)
            finally:
                PyBuffer_Release(&view)
        return 0

    cdef int _write(self, uint64_t index, uint64_t term, uint8_t type,
                    const unsigned char *payload, Py_ssize_t n,
                    const unsigned char *record) except -1:
        cdef Py_ssize_t need = REC + n
        cdef _Segment seg = self._tail
        cdef Py_ssize_t off
        if seg.end + need > seg.size:
            seg = self._roll(index, need)
        off = seg.end
        if record != NULL:
            if pgraft_load_u64(record + 8) != index:
                raise InvalidArgument(f"entry {index}: its record says another index")
            memcpy(seg.base + off, record, need)
        else:
            pgraft_record_write(seg.base + off, index, term, type, payload, <uint32_t>n)
        seg.push(off)
        seg.end = off + need
        seg.mark_dirty(off, off + need)
        self._bytes += need
        return 0

    cdef _Segment _roll(self, uint64_t first, Py_ssize_t need):
        # The full segment is made durable before the next exists, so after a crash only the
        # last segment can hold a torn tail.
        self.sync()
        cdef _Segment seg = self._new_segment(first, max(self.segment_size, HDR + need),
                                              self._prepared.pop(first, None))
        if self._tail.count == 0:  # an empty segment too small for the entry: replaced
            self._segs.pop()
            self._firsts.pop()
        self._segs.append(seg)
        self._firsts.append(first)
        self._tail = seg
        return seg

    cdef _Segment _new_segment(self, uint64_t first, Py_ssize_t size, object prepared):
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

    def _open_mapped(self, path, uint64_t first, Py_ssize_t size):
        fd = os.open(path, os.O_RDWR)
        try:
            return _Segment(path, first, _map(fd, size), size)
        finally:
            os.close(fd)

    def sync(self):
        """Return when everything appended so far is durable (msync of the dirty ranges).
        It also zeroes the space ahead of the tail (_Segment.prepare_ahead): appends must not
        run concurrently with it. A failure leaves the log failed (see the module docstring of
        the twin)."""
        self._check_writable()
        cdef _Segment seg
        cdef bint ahead
        try:
            if _fp.ACTIVE is not None:
                _fp.hit("log.sync", self._tail.path)
            ahead = self._tail.prepare_ahead()
            for seg in self._segs:
                seg.flush()
        except OSError as exc:
            raise self._fail("syncing the log segment", exc.filename or self._tail.path,
                             exc) from None
        self._synced = self._tail.first + self._tail.count - 1
        if ahead:
            self.check_space()

    def truncate_after(self, index):
        """Drop every entry after ``index`` (durable on return: the bytes are zeroed)."""
        self._check_writable()
        cdef _Segment seg
        cdef Py_ssize_t i, cut, old_end
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
        memset(seg.base + cut, 0, old_end - cut)  # nothing after the cut may come back
        seg.count = i
        seg.end = cut
        self._bytes -= old_end - cut
        seg.mark_dirty(cut, old_end)
        self.sync()
        self._synced = min(self._synced, index)

    def _drop_tail_segments(self, Py_ssize_t k):
        cdef _Segment seg
        if k >= len(self._segs):
            return
        for seg in reversed(self._segs[k:]):  # newest first: a crash leaves a contiguous log
            try:
                os.unlink(seg.path)
                fsync_dir(self.path)  # in order: unlinks may reach the disk reordered
            except OSError as exc:
                raise self._fail("removing the log segment", seg.path, exc) from None
            self._bytes -= seg.end - HDR
        del self._segs[k:]
        del self._firsts[k:]
        self._tail = self._segs[-1]

    def compact(self, index):
        """Drop whole segments whose entries are all <= ``index`` (never the last segment).
        Returns the new first index."""
        self._check_writable()
        cdef Py_ssize_t dropped = 0
        cdef _Segment seg
        while (len(self._segs) - dropped > 1
               and (<_Segment>self._segs[dropped + 1]).first - 1 <= index):
            seg = self._segs[dropped]
            try:
                os.unlink(seg.path)  # oldest first: a crash midway leaves a contiguous log
                fsync_dir(self.path)  # ... only if each unlink is durable before the next
            except OSError as exc:
                del self._segs[:dropped]
                del self._firsts[:dropped]
                raise self._fail("removing the log segment", seg.path, exc) from None
            self._bytes -= seg.end - HDR
            dropped += 1
        if dropped:
            del self._segs[:dropped]
            del self._firsts[:dropped]
        return self.first_index

    def reset(self, first_index):
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
            self._tail = None
            self._finish_reset(name)
            seg = self._open_mapped(os.path.join(self.path, segment_name(first_index)),
                                    first_index, self.segment_size)
        except OSError as exc:
            raise self._fail("resetting the log in", self.path, exc) from None
        self._segs.append(seg)
        self._firsts.append(first_index)
        self._tail = seg
        self._bytes = 0
        self._synced = first_index - 1

    def _finish_reset(self, reset_name):
        """The durable .reset file is the commit point: remove every segment, promote it."""
        for name in os.listdir(self.path):
            if name.endswith(SEGMENT_SUFFIX):
                os.unlink(os.path.join(self.path, name))
        first = int(reset_name[: -len(RESET_SUFFIX)])
        os.rename(os.path.join(self.path, reset_name),
                  os.path.join(self.path, segment_name(first)))
        fsync_dir(self.path)

    # ---------------------------------------------------------------- reading
    cdef _Segment _locate(self, uint64_t index):
        cdef _Segment seg
        self._check_open()
        seg = self._tail
        if index >= seg.first and index < seg.first + seg.count:
            return seg
        if index < (<_Segment>self._segs[0]).first or index >= seg.first + seg.count:
            raise InvalidArgument(f"index {index} is not in the log "
                                  f"[{self.first_index}, {self.last_index}]")
        return self._segs[bisect.bisect_right(self._firsts, index) - 1]

    cdef object _entry_at(self, _Segment seg, Py_ssize_t i):
        cdef Py_ssize_t off = seg.offsets[i]
        return _Entry.from_record(seg.view[off:seg.record_end(i)])

    def entry(self, index):
        """The entry at ``index``; its ``data`` and ``record`` are views into the mapping."""
        if index < 0:
            raise InvalidArgument(f"index {index} is not in the log")
        cdef _Segment seg = self._locate(index)
        return self._entry_at(seg, index - seg.first)

    def term(self, index):
        """Term of the entry at ``index``."""
        if index < 0:
            raise InvalidArgument(f"index {index} is not in the log")
        cdef _Segment seg = self._locate(index)
        return pgraft_load_u64(seg.base + seg.offsets[index - seg.first] + 16)

    def entries(self, lo, hi, max_bytes=None):
        """Entries [lo, hi), stopping before ``max_bytes`` of records (at least one entry)."""
        self._check_open()
        first, last = self.first_index, self.last_index
        if lo == hi and first <= lo <= last + 1:
            return []
        if not (first <= lo < hi <= last + 1):
            raise InvalidArgument(f"entries({lo}, {hi}) outside the log [{first}, {last}]")
        cdef list out = []
        cdef Py_ssize_t total = 0, size, j, i, n
        cdef Py_ssize_t limit = -1 if max_bytes is None else max(0, max_bytes)
        cdef uint64_t index = lo
        cdef _Segment seg
        while index < <uint64_t>hi:
            seg = self._locate(index)
            i = index - seg.first
            n = min(<uint64_t>hi - index, <uint64_t>(seg.count - i))
            for j in range(i, i + n):
                size = seg.record_end(j) - <Py_ssize_t>seg.offsets[j]
                if limit >= 0 and out and total + size > limit:
                    return out
                total += size
                out.append(self._entry_at(seg, j))
            index += n
        return out

    # --------------------------------------------------------------- recovery
    def _recover(self, first_index, synced_through):
        names = sorted(os.listdir(self.path))
        for name in names:
            if name.endswith(TMP_SUFFIX):  # a creation that did not finish
                os.unlink(os.path.join(self.path, name))
        for name in names:
            if name.endswith(RESET_SUFFIX):
                self._finish_reset(name)
        segs = sorted(n for n in os.listdir(self.path) if n.endswith(SEGMENT_SUFFIX))
        if not segs:
            if synced_through >= first_index:
                raise StorageCorrupted(
                    f"{self.path}: the log has no segments but was synced through index "
                    f"{synced_through}: synced entries are missing", path=self.path)
            seg = self._new_segment(first_index, self.segment_size, None)
            self._segs.append(seg)
            self._firsts.append(first_index)
            self._tail = seg
            self._synced = first_index - 1
            return
        report = RecoveryReport()
        for pos, name in enumerate(segs):
            self._recover_segment(name, pos == len(segs) - 1, report, synced_through)
        if report.cut_path is not None or report.removed_segments:
            self.recovery = report
        last = self._tail.first + self._tail.count - 1
        if last < synced_through:
            raise StorageCorrupted(
                f"{self._tail.path}: the log ends at index {last} (offset {self._tail.end}) "
                f"but was synced through index {synced_through}: synced entries are missing",
                path=self._tail.path, offset=self._tail.end)
        self._synced = last

    def _recover_segment(self, name, bint is_last, report, synced_through):
        path = os.path.join(self.path, name)
        stem = name[: -len(SEGMENT_SUFFIX)]
        if not (len(stem) == 20 and stem.isdigit()):
            raise StorageFormatError(f"{path}: not a pgraft segment name", path=path)
        first = int(stem)
        expect = self._tail.first + self._tail.count if self._tail is not None else first
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            hdr_first = _read_header(path, fd, size)
            if hdr_first is None:  # header missing: a segment creation torn by a crash
                if not is_last or first != expect or _file_has_data(fd, HDR, size):
                    raise StorageCorrupted(f"{path}: segment header missing", path=path,
                                           offset=0)
                if self._tail is not None:
                    os.unlink(path)
                    fsync_dir(self.path)
                    report.removed_segments.append(path)
                    return
                _extend(fd, max(size, self.segment_size), path)
                os.pwrite(fd, encode_segment_header(first) + bytes(max(0, size - HDR)), 0)
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
            _scan(seg, fd, is_last, report, synced_through)
            if is_last:
                # Records that survived a crash in the page cache only (kill -9 before a
                # sync) are made durable before the log counts them as synced.
                os.fdatasync(fd)
        finally:
            os.close(fd)
        self._segs.append(seg)
        self._firsts.append(first)
        self._tail = seg
        self._bytes += seg.end - HDR


def _file_has_data(fd, Py_ssize_t lo, Py_ssize_t size):
    """Is any byte in [lo, size) of the file non-zero?"""
    for start, end in _data_regions(fd, lo, size):
        pos = start
        while pos < end:
            chunk = os.pread(fd, min(1 << 20, end - pos), pos)
            if not chunk or chunk.strip(b"\0"):
                return bool(chunk)
            pos += len(chunk)
    return False


def _read_header(path, fd, Py_ssize_t size):
    """First index from a segment header; None when the header is missing (short or zero);
    StorageFormatError / StorageCorrupted when it is foreign or damaged."""
    if size < HDR:
        return None
    cdef bytes head = os.pread(fd, HDR, 0)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(head)
    if _zero(p, HDR):
        return None
    if head[:8] != MAGIC:
        raise StorageFormatError(f"{path}: not a pgraft log segment (bad magic)", path=path)
    version = pgraft_load_u32(p + 8)
    if version != FORMAT_VERSION or pgraft_load_u32(p + 12) != HDR:
        raise StorageFormatError(
            f"{path}: log format version {version}, this pgraft reads {FORMAT_VERSION}",
            path=path)
    if pgraft_crc32c(0, p, 28) != pgraft_load_u32(p + 28):
        raise StorageCorrupted(f"{path}: segment header CRC mismatch", path=path, offset=0)
    return pgraft_load_u64(p + 16)


cdef int _scan(_Segment seg, int fd, bint is_last, report, uint64_t synced_through) except -1:
    """Verify every record of ``seg`` and build its offset index, in C; then classify what
    follows the last good record: clean end, torn tail (cut) or corruption."""
    cdef const unsigned char *base = seg.base
    cdef Py_ssize_t size = seg.size, off = HDR, last_nz
    cdef uint64_t expect = seg.first, idx = 0, term
    cdef uint32_t length
    cdef uint8_t typ
    cdef int rc
    seg.reserve(max(1024, (size - HDR) // 256))
    while True:
        with nogil:
            while True:
                rc = pgraft_record_check(base + off, <size_t>(size - off), 0xFFFFFFFFu,
                                         &length, &idx, &term, &typ)
                if rc != 0 or idx != expect:
                    break
                if seg.count == seg.cap:
                    break
                seg.offsets[seg.count] = off
                seg.count += 1
                off += REC + length
                expect += 1
        if rc == 0 and idx == expect:  # the offset array is full: grow it and go on
            seg.reserve(seg.cap * 2)
            continue
        break
    if rc == 0:
        raise StorageCorrupted(
            f"{seg.path}: record at offset {off} has index {idx}, expected {expect}",
            path=seg.path, offset=off)
    seg.end = off
    last_nz = _last_nonzero(base, fd, off, size)
    if last_nz < 0:
        return 0  # clean end
    if expect <= synced_through:
        raise StorageCorrupted(
            f"{seg.path}: bad record at offset {off} (index {expect}), at or below index "
            f"{synced_through} that was synced: corruption, not a torn tail",
            path=seg.path, offset=off)
    if not is_last or not _is_torn(base, off, size, last_nz, expect):
        raise StorageCorrupted(
            f"{seg.path}: bad record at offset {off} (index {expect}) followed by data",
            path=seg.path, offset=off)
    memset(seg.base + off, 0, last_nz + 1 - off)
    seg.mark_dirty(off, last_nz + 1)
    seg.flush()
    report.cut_path, report.cut_offset, report.cut_bytes = seg.path, off, last_nz + 1 - off
    return 0


# ---------------------------------------------------------------- hard state
cdef class HardState:
    """What Raft must never forget: the current term, the vote in it, the commit index."""

    cdef public object term
    cdef public object vote
    cdef public object commit
    cdef public object synced  # the durable watermark: the log is synced through this index

    def __init__(self, term=0, vote=0, commit=0, synced=0):
        self.term = term
        self.vote = vote
        self.commit = commit
        self.synced = synced

    def __repr__(self):
        return (f"HardState(term={self.term!r}, vote={self.vote!r}, commit={self.commit!r}, "
                f"synced={self.synced!r})")

    def __eq__(self, other):
        if not hasattr(other, "vote"):
            return NotImplemented
        return (self.term, self.vote, self.commit, self.synced) == (
            other.term, other.vote, other.commit, getattr(other, "synced", 0))


def encode_hard_state_slot(uint64_t seq, hs):
    """One 512-byte slot (version 2): body, CRC32C of the body, zero padding."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, HS_SLOT)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    memset(p, 0, HS_SLOT)
    memcpy(p, b"PGRFTHS\x00", 8)
    pgraft_store_u32(p + 8, HARD_STATE_VERSION)
    pgraft_store_u64(p + 16, seq)
    pgraft_store_u64(p + 24, hs.term)
    pgraft_store_u64(p + 32, hs.vote)
    pgraft_store_u64(p + 40, hs.commit)
    pgraft_store_u64(p + 48, getattr(hs, "synced", 0))
    pgraft_store_u32(p + HS_BODY, pgraft_crc32c(0, p, HS_BODY))
    return out


class HardStateFile:
    """Hard state in one file of two CRC'd slots written alternately (pwrite + fdatasync); the
    valid slot with the highest sequence number wins, so a torn save leaves the previous one.
    A failed save leaves the sequence where it was (the last good slot is never the next one
    written) and the file failed (:attr:`failed`): every later save raises StorageError."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._seq = 0
        self._fd = -1
        self.failed = None
        if not os.path.exists(self.path):
            d, name = os.path.split(os.path.abspath(self.path))
            tmp = os.path.join(d, name + TMP_SUFFIX)
            with open(tmp, "wb") as f:
                f.write(encode_hard_state_slot(0, HardState()) + bytes(HS_SLOT))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
            fsync_dir(d)
        self._fd = os.open(self.path, os.O_RDWR)

    def load(self):
        """The last saved hard state (zeros if never saved)."""
        cdef object best_seq = -1, seq  # Python ints: -1 must not become a huge uint64
        best = None
        foreign = bad = 0
        cdef bytes raw
        cdef const unsigned char *p
        cdef uint32_t version
        cdef size_t body
        for slot in range(2):
            raw = os.pread(self._fd, HS_SLOT, slot * HS_SLOT).ljust(HS_SLOT, b"\0")
            p = <const unsigned char *>PyBytes_AS_STRING(raw)
            version = pgraft_load_u32(p + 8)
            if raw[:8] != _HS_MAGIC or (version != 1 and version != HARD_STATE_VERSION):
                foreign += raw[:8] == _HS_MAGIC or not _zero(p, HS_SLOT)
                continue
            body = HS_BODY if version == HARD_STATE_VERSION else HS_BODY_V1
            if pgraft_crc32c(0, p, body) != pgraft_load_u32(p + body):
                bad += 1
                continue
            seq = pgraft_load_u64(p + 16)
            if seq > best_seq:
                best_seq = seq
                best = HardState(pgraft_load_u64(p + 24), pgraft_load_u64(p + 32),
                                 pgraft_load_u64(p + 40),
                                 pgraft_load_u64(p + 48) if version == HARD_STATE_VERSION
                                 else 0)
        if best is None:
            if foreign and not bad:
                raise StorageFormatError(f"{self.path}: not a pgraft hard state file of "
                                         f"format version 1 or {HARD_STATE_VERSION}",
                                         path=self.path)
            raise StorageCorrupted(f"{self.path}: both hard state slots are damaged",
                                   path=self.path, offset=0)
        self._seq = best_seq
        return best

    def save(self, hs):
        """Write ``hs`` durably into the older slot."""
        if self.failed is not None:
            raise StorageError(
                f"hard state file {self.path}: the storage failed earlier ({self.failed}); "
                "nothing is saved to it again", path=self.path)
        if self._seq == 0:
            self.load()
        seq = self._seq + 1
        try:
            os.pwrite(self._fd, encode_hard_state_slot(seq, hs), (seq % 2) * HS_SLOT)
            if _fp.ACTIVE is not None:
                _fp.hit("hardstate.save", self.path)
            os.fdatasync(self._fd)
        except OSError as exc:
            err = io_error("saving the hard state to", self.path, exc)
            self.failed = err.message
            raise err from None
        self._seq = seq  # only now: a failed save must not move the next save onto this slot

    def close(self):
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
