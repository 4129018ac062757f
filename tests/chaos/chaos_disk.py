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

__all__ = ["cachestat_available", "lose_unsynced", "unsynced_pages"]

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


def unsynced_pages(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return _cachestat(fd, 0, max(size, 1)) if size else 0
    finally:
        os.close(fd)


@dataclass
class LossReport:
    """What :func:`lose_unsynced` did."""

    last_index_before: int = 0
    last_index_after: int = 0
    bytes_zeroed: int = 0
    hard_state_reverted: bool = False
    other_dirty: list[str] = field(default_factory=list)

    @property
    def entries_lost(self) -> int:
        return self.last_index_before - self.last_index_after

    def __str__(self) -> str:
        return (f"log {self.last_index_before} -> {self.last_index_after} "
                f"({self.entries_lost} entries, {self.bytes_zeroed} bytes lost)"
                + (", hard state reverted" if self.hard_state_reverted else "")
                + (f", dirty elsewhere: {self.other_dirty}" if self.other_dirty else ""))


def _records(mm: bytes, start: int) -> list[tuple[int, int, int]]:
    """(offset, end, index) of the records of a segment (up to the first zero/invalid one)."""
    out = []
    off = start
    while off + _REC.size <= len(mm):
        crc, length, index, term, _t, _r = _REC.unpack_from(mm, off)
        if index == 0 or off + _REC.size + length > len(mm):
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


def lose_unsynced(data_dir: str) -> LossReport:
    """Apply the power-loss model above to a dead node's data directory (then fsync it)."""
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
        plans.append((path, data, recs))
        if cut_from is not None:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            page = first_unsynced_page(fd, len(data))
        finally:
            os.close(fd)
        if page is None:
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
        for pos, (path, data, recs) in enumerate(plans):
            if pos < cut_from[0]:
                if recs:
                    report.last_index_after = recs[-1][2]
                continue
            start = cut_from[1] if pos == cut_from[0] else _SEG_HEADER
            kept = [r for r in recs if r[1] <= start]
            if kept:
                report.last_index_after = kept[-1][2]
            end = recs[-1][1] if recs else start
            if end > start:
                fd = os.open(path, os.O_WRONLY)
                try:
                    report.bytes_zeroed += _zero(fd, start, end)
                    os.fsync(fd)
                finally:
                    os.close(fd)
    hs_path = os.path.join(data_dir, "hardstate")
    if os.path.exists(hs_path) and unsynced_pages(hs_path):
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
