"""Lose what a killed node had not synced: the page cache tells what that is.

After ``kill -9`` everything the node wrote is still in the kernel's page cache, so a plain kill
loses nothing. A power failure loses what was not yet written back. The ``cachestat`` system
call (Linux 6.5+) reports, for any byte range of a file, how many of its cached pages are dirty
or under writeback -- i.e. not on the disk yet. A page that ``msync``/``fdatasync`` wrote is
clean, and so is one the kernel wrote back by itself (that data would survive too).

The model applied to a killed node's data directory (the node must be dead, its pages no longer
mapped):

* **log segments** (``log/*.seg``, records back to back after a 32-byte header): let D be the
  first page, in log order, that is dirty or under writeback. Everything before D is on disk.
  The synced length L ends inside page D (appends are sequential), so the disk holds page D as
  it was at some moment after L was synced. We keep every record that ends within pages
  ``<= D`` and zero everything after the last of them (also in later segments); the records
  lost are exactly those that were never written back. Keeping the records that end in page D
  is the conservative choice: the kernel may have written page D back after they were
  appended, and cutting them could lose a synced, acknowledged entry -- which would be a fault
  no real disk produces.
* **hard state** (two 512-byte slots written alternately, pwrite + fdatasync): if its page is
  dirty, the last ``pwrite`` had not been synced: the slot with the highest sequence number is
  zeroed, so the node restarts from the previous hard state.
* Other files (node id, snapshot metadata) are written with fsync + rename; a dirty page there
  is reported, not changed.

The result is what the node would find after a power failure in which the kernel had written
back nothing more than it had when the process was killed (the strongest such loss that
page-granular knowledge allows).
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass, field

__all__ = ["cachestat_available", "disk_page", "log_has_unsynced", "lose_unsynced",
           "unsynced_pages"]

PAGE = os.sysconf("SC_PAGE_SIZE")
_SYS_CACHESTAT = 451  # the same number on x86_64, aarch64 and the other unified tables
_SEG_HEADER = 32
_REC = struct.Struct("<IIQQB3s")  # crc, length, index, term, type, reserved
_HS_SLOT = 512
_HS_BODY = struct.Struct("<8sIIQQQQ")  # magic, version, reserved, seq, term, vote, commit


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [("nr_cache", ctypes.c_uint64), ("nr_dirty", ctypes.c_uint64),
                ("nr_writeback", ctypes.c_uint64), ("nr_evicted", ctypes.c_uint64),
                ("nr_recently_evicted", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)


def _cachestat(fd: int, off: int, length: int) -> int:
    """Pages in [off, off+length) that are dirty or under writeback."""
    r, s = _Range(off, length), _Stat()
    if _libc.syscall(_SYS_CACHESTAT, fd, ctypes.byref(r), ctypes.byref(s), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cachestat: {os.strerror(err)}")
    return int(s.nr_dirty + s.nr_writeback)


def cachestat_available() -> str | None:
    """None if cachestat works here, else why not."""
    path = f"/tmp/.pgraft-cachestat-{os.getpid()}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"x")
            if _cachestat(fd, 0, PAGE) != 1:
                return "cachestat does not report a fresh write as dirty"
            os.fsync(fd)
            if _cachestat(fd, 0, PAGE) != 0:
                return "cachestat reports a synced page as dirty (tmpfs?)"
        finally:
            os.close(fd)
            os.unlink(path)
    except OSError as exc:
        return str(exc)
    return None


def first_unsynced_page(fd: int, size: int) -> int | None:
    """The index of the first dirty/writeback page of the file, or None (binary search)."""
    npages = (size + PAGE - 1) // PAGE
    if npages == 0 or _cachestat(fd, 0, npages * PAGE) == 0:
        return None
    lo, hi = 0, npages  # the answer is in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _cachestat(fd, lo * PAGE, (mid - lo) * PAGE):
            hi = mid
        else:
            lo = mid
    return lo


_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP = struct.Struct("<QQIII I")  # start, length, flags, mapped, count, reserved
_EXTENT = struct.Struct("<QQQQQI12x")  # logical, physical, length, reserved x2, flags
_EXTENT_UNKNOWN, _EXTENT_DELALLOC, _EXTENT_UNWRITTEN = 0x2, 0x4, 0x800
_EXTENT_UNREADABLE = 0x8 | 0x100 | 0x200  # encoded, not aligned, inline


def _block_device(path: str) -> str | None:
    dev = os.stat(path).st_dev
    sysfs = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    try:
        name = os.path.basename(os.path.realpath(sysfs))
    except OSError:
        return None
    node = f"/dev/{name}"
    return node if os.path.exists(node) else None


def disk_page(path: str, page: int) -> bytes | None:
    """The content page ``page`` of ``path`` has on the disk (not in the page cache), or None
    when that cannot be known. FIEMAP (without its sync flag) maps the page to a block of the
    file system's device, read with O_DIRECT; an unwritten (preallocated) or not yet allocated
    block reads as zeros."""
    import fcntl
    import mmap

    fd = os.open(path, os.O_RDONLY)
    try:
        req = bytearray(_FIEMAP.size + _EXTENT.size)
        _FIEMAP.pack_into(req, 0, page * PAGE, PAGE, 0, 0, 1, 0)
        try:
            fcntl.ioctl(fd, _FS_IOC_FIEMAP, req)
        except OSError:
            return None
    finally:
        os.close(fd)
    mapped = _FIEMAP.unpack_from(req, 0)[3]
    if mapped == 0:
        return bytes(PAGE)  # a hole
    logical, physical, length, _r1, _r2, flags = _EXTENT.unpack_from(req, _FIEMAP.size)
    if not logical <= page * PAGE < logical + length:
        return bytes(PAGE)
    if flags & (_EXTENT_DELALLOC | _EXTENT_UNWRITTEN):
        return bytes(PAGE)
    if flags & (_EXTENT_UNKNOWN | _EXTENT_UNREADABLE):
        return None
    device = _block_device(path)
    if device is None:
        return None
    offset = physical + (page * PAGE - logical)
    buf = mmap.mmap(-1, PAGE)  # page-aligned, as O_DIRECT wants
    try:
        dfd = os.open(device, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return None
    try:
        if os.preadv(dfd, [buf], offset) != PAGE:
            return None
        return bytes(buf)
    except OSError:
        return None
    finally:
        os.close(dfd)
        buf.close()


def unsynced_pages(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return _cachestat(fd, 0, max(size, 1)) if size else 0
    finally:
        os.close(fd)


def log_has_unsynced(data_dir: str) -> bool:
    """True when some log segment of ``data_dir`` has dirty or writeback pages."""
    log_dir = os.path.join(data_dir, "log")
    try:
        names = [n for n in os.listdir(log_dir) if n.endswith(".seg")]
        return any(unsynced_pages(os.path.join(log_dir, n)) for n in names)
    except OSError:
        return False


@dataclass
class LossReport:
    """What :func:`lose_unsynced` did."""

    last_index_before: int = 0
    last_index_after: int = 0
    bytes_zeroed: int = 0
    exact: bool = False  # the first unsynced page was restored from the disk
    first_unsynced: str = ""  # "segment:page", where the unsynced data starts
    hard_state_reverted: bool = False
    other_dirty: list[str] = field(default_factory=list)

    @property
    def entries_lost(self) -> int:
        return self.last_index_before - self.last_index_after

    def __str__(self) -> str:
        return (f"log {self.last_index_before} -> {self.last_index_after} "
                f"(first unsynced page {self.first_unsynced or 'none'}) "
                f"({self.entries_lost} entries, {self.bytes_zeroed} bytes lost)"
                + ("" if self.exact else ", page-cache bound only")
                + (", hard state reverted" if self.hard_state_reverted else "")
                + (f", dirty elsewhere: {self.other_dirty}" if self.other_dirty else ""))


def _records(mm: bytes, start: int) -> list[tuple[int, int, int]]:
    """(offset, end, index) of the valid records of a segment, up to the first zero, torn or
    otherwise invalid one."""
    from pgraft._impl import core

    out = []
    off = start
    while off + _REC.size <= len(mm):
        crc, length, index, term, _t, _r = _REC.unpack_from(mm, off)
        if index == 0 or off + _REC.size + length > len(mm):
            break
        if core.crc32c(mm[off + 4: off + _REC.size + length]) != crc:
            break
        out.append((off, off + _REC.size + length, index))
        off += _REC.size + length
    return out


def _zero(fd: int, start: int, end: int) -> int:
    n = 0
    chunk = bytes(1 << 20)
    pos = start
    while pos < end:
        k = min(len(chunk), end - pos)
        os.pwrite(fd, chunk[:k], pos)
        pos += k
        n += k
    return n


def lose_unsynced(data_dir: str, *, apply: bool = True) -> LossReport:
    """Apply the power-loss model above to a dead node's data directory (then fsync it).
    With ``apply=False`` nothing is changed: the report says what applying it would lose
    (the node may be frozen rather than dead)."""
    report = LossReport()
    log_dir = os.path.join(data_dir, "log")
    segs = sorted(n for n in os.listdir(log_dir) if n.endswith(".seg"))
    cut_from: tuple[int, int] | None = None  # (segment position, byte offset)
    plans = []
    for pos, name in enumerate(segs):
        path = os.path.join(log_dir, name)
        with open(path, "rb") as f:
            data = f.read()
        recs = _records(data, _SEG_HEADER)
        if recs:
            report.last_index_before = recs[-1][2]
        plans.append((path, data, recs, recs[-1][1] if recs else _SEG_HEADER))
        if cut_from is not None:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            page = first_unsynced_page(fd, len(data))
        finally:
            os.close(fd)
        if page is None:
            continue
        report.first_unsynced = f"{name}:{page}"
        on_disk = disk_page(path, page)
        if on_disk is not None:
            # Exact: page D as the disk holds it, nothing after it.
            if apply:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.pwrite(fd, on_disk, page * PAGE)
                finally:
                    os.close(fd)
            report.exact = True
            changed = sum(1 for a, b in zip(on_disk, data[page * PAGE:(page + 1) * PAGE],
                                            strict=False) if a != b)
            report.bytes_zeroed += changed
            data = data[:page * PAGE] + on_disk + data[(page + 1) * PAGE:]
            cut_from = (pos, (page + 1) * PAGE)
            recs = [r for r in _records(data, _SEG_HEADER) if r[1] <= cut_from[1]]
            plans[-1] = (path, data, recs, plans[-1][3])
            continue
        limit = (page + 1) * PAGE
        keep_end = _SEG_HEADER
        for _off, end, _index in recs:
            if end <= limit:
                keep_end = end
            else:
                break
        cut_from = (pos, keep_end)
    report.last_index_after = report.last_index_before
    if cut_from is not None:
        report.last_index_after = 0
        for pos, (path, _data, recs, data_end) in enumerate(plans):
            if pos < cut_from[0]:
                if recs:
                    report.last_index_after = recs[-1][2]
                continue
            start = cut_from[1] if pos == cut_from[0] else _SEG_HEADER
            kept = [r for r in recs if r[1] <= start]
            if kept:
                report.last_index_after = kept[-1][2]
            if not apply:
                report.bytes_zeroed += max(0, data_end - start)
                continue
            fd = os.open(path, os.O_WRONLY)
            try:
                if data_end > start:
                    report.bytes_zeroed += _zero(fd, start, data_end)
                os.fsync(fd)
            finally:
                os.close(fd)
    hs_path = os.path.join(data_dir, "hardstate")
    if apply and os.path.exists(hs_path) and unsynced_pages(hs_path):
        fd = os.open(hs_path, os.O_RDWR)
        try:
            slots = []
            for slot in range(2):
                raw = os.pread(fd, _HS_SLOT, slot * _HS_SLOT)
                if len(raw) >= _HS_BODY.size:
                    magic, _v, _r, seq, *_rest = _HS_BODY.unpack_from(raw)
                    if magic.startswith(b"PGRFTHS"):
                        slots.append((seq, slot))
            if len(slots) == 2:
                _seq, newest = max(slots)
                os.pwrite(fd, bytes(_HS_SLOT), newest * _HS_SLOT)
                report.hard_state_reverted = True
            os.fsync(fd)
        finally:
            os.close(fd)
    for name in os.listdir(data_dir):
        path = os.path.join(data_dir, name)
        if name in ("hardstate", "log", "LOCK") or not os.path.isfile(path):
            continue
        if unsynced_pages(path):
            report.other_dirty.append(name)
    return report
