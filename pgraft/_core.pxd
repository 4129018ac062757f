# cython: language_level=3
"""C-level API of pgraft._core, for other extensions (pgraft._log, pgraft.raft) to cimport.

    from pgraft._core cimport Entry, make_entry, entry_from_memory
    from pgraft._core cimport entry_index, entry_term, entry_size, quorum_index  # the Raft core

Entry fields are plain C fields here; from Python they are the properties ``index``, ``term``,
``type``, ``data`` and ``record`` (setting index/term/type/data drops the cached record).
``_data`` is None for an entry decoded from a record until its payload is first asked for, and
``_record`` is None until the record is first encoded: use ``get_data()`` / ``get_record()``.
"""

from libc.stdint cimport uint8_t, uint64_t

cdef enum:
    REC_HDR = 28  # bytes of a record's header (pgraft/_record.h)


cdef class Entry:
    cdef uint64_t _index
    cdef uint64_t _term
    cdef uint8_t _type
    cdef object _data    # payload (bytes-like), or None: slice it from _record when asked
    cdef object _record  # encoded record (bytes or read-only memoryview), or None: not yet

    cdef object get_record(self)
    cdef object get_data(self)


cdef class Message:
    cdef public int type
    cdef public uint64_t src
    cdef public uint64_t dst
    cdef public uint64_t term
    cdef public uint64_t log_term
    cdef public uint64_t index
    cdef public uint64_t commit
    cdef public bint reject
    cdef public uint64_t reject_hint
    cdef public object entries
    cdef public object context
    cdef public object snapshot


# An Entry from its fields; ``data`` or ``record`` may be None (not both): the other is derived
# on demand. No check that ``record`` matches the fields: the caller has verified it.
cdef Entry make_entry(uint64_t index, uint64_t term, uint8_t type, object data, object record)

# committed_index(voters, match) of a tuple of voters and a dict of match indexes.
cdef long long quorum_index(tuple voters, dict match) except? -1

# The record that starts at byte ``offset`` of ``view`` (a read-only memoryview whose first byte
# is at ``base``), with ``avail`` bytes readable from there. Checks length, reserved bytes and,
# if ``verify``, the CRC; raises pgraft.errors.DecodeError naming ``offset``. The Entry's record
# (and later its data) are zero-copy slices of ``view``.
cdef Entry entry_from_memory(object view, const unsigned char *base, Py_ssize_t offset,
                             Py_ssize_t avail, bint verify)


# Entry.size, .index and .term for compiled callers (the Raft core: pgraft/raft/entry.py),
# without the property lookup and the integer object each costs from Python.
cdef inline Py_ssize_t entry_size(Entry e) except -1:
    if e is None:
        raise TypeError("expected a log Entry, not None")
    if e._record is not None:
        return len(e._record)
    return REC_HDR + len(e._data)


cdef inline uint64_t entry_index(Entry e) except? 0:
    if e is None:
        raise TypeError("expected a log Entry, not None")
    return e._index


cdef inline uint64_t entry_term(Entry e) except? 0:
    if e is None:
        raise TypeError("expected a log Entry, not None")
    return e._term
