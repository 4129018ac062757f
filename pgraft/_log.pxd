# cython: language_level=3
"""C-level layout of pgraft._log (the durable Raft log); see _log.pyx and _log_py.py."""

from cpython.buffer cimport Py_buffer
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef class _Segment:
    cdef readonly object path
    cdef uint64_t first
    cdef object mm            # the mmap object; never closed (exported views keep it alive)
    cdef object view          # read-only memoryview of mm: entries are slices of it
    cdef Py_buffer buf        # writable export of mm held for the segment's lifetime
    cdef bint has_buf
    cdef unsigned char *base
    cdef Py_ssize_t size
    cdef uint64_t *offsets    # offsets[i]: record of entry first + i
    cdef Py_ssize_t count
    cdef Py_ssize_t cap
    cdef Py_ssize_t end       # end of the last record
    cdef Py_ssize_t dirty_lo  # unsynced byte range, -1 when clean
    cdef Py_ssize_t dirty_hi
    cdef Py_ssize_t prepared  # [0, prepared) holds written blocks (no unwritten extents)

    cdef int reserve(self, Py_ssize_t n) except -1
    cdef int push(self, Py_ssize_t off) except -1
    cdef void mark_dirty(self, Py_ssize_t lo, Py_ssize_t hi) noexcept
    cdef int flush(self) except -1
    cdef bint prepare_ahead(self) noexcept
    cdef Py_ssize_t record_end(self, Py_ssize_t i) noexcept


cdef class Log:
    cdef readonly object path
    cdef readonly Py_ssize_t segment_size
    cdef readonly Py_ssize_t max_entry_size
    cdef readonly object recovery
    cdef list _segs
    cdef list _firsts
    cdef _Segment _tail
    cdef int _lock_fd
    cdef uint64_t _synced
    cdef Py_ssize_t _bytes
    cdef readonly object failed    # the error text after a failed sync or write, else None
    cdef public bint space_low     # the file system is (nearly) full: see check_space
    cdef dict _prepared            # first index -> (temp file, size) for the running append

    cdef int _check_open(self) except -1
    cdef int _check_writable(self) except -1
    cdef int _append(self, list batch, uint64_t expect) except -1
    cdef int _write(self, uint64_t index, uint64_t term, uint8_t type,
                    const unsigned char *payload, Py_ssize_t n,
                    const unsigned char *record) except -1
    cdef _Segment _roll(self, uint64_t first, Py_ssize_t need)
    cdef _Segment _new_segment(self, uint64_t first, Py_ssize_t size, object prepared)
    cdef _Segment _locate(self, uint64_t index)
    cdef object _entry_at(self, _Segment seg, Py_ssize_t i)
