# cython: language_level=3
"""pgraft._core: the compiled hot paths — CRC32C, log entries, Raft messages, quorum commit
index, vote tally, and the frame codec (docs/protocol.md).

The pure-Python twin ``pgraft._core_py`` has exactly this API and runs the same tests; its
module docstring describes the wire layout of a RAFT frame body.
"""

from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBuffer_IsContiguous,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItemWithError
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.list cimport PyList_GET_SIZE
from cpython.object cimport PyObject
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

import msgpack

from .errors import DecodeError, InvalidArgument


cdef extern from "Python.h":
    Py_buffer *PyMemoryView_GET_BUFFER(object mview)
    bint PyMemoryView_Check(object obj)


cdef extern from "_record.h":
    void pgraft_crc_init()
    uint32_t pgraft_crc32c(uint32_t crc, const unsigned char *p, size_t n) nogil
    void pgraft_store_u32(unsigned char *p, uint32_t v) nogil
    void pgraft_store_u64(unsigned char *p, uint64_t v) nogil
    uint32_t pgraft_load_u32(const unsigned char *p) nogil
    uint64_t pgraft_load_u64(const unsigned char *p) nogil
    void pgraft_record_write(unsigned char *dst, uint64_t index, uint64_t term, uint8_t type,
                             const unsigned char *payload, uint32_t len) nogil


pgraft_crc_init()

# ---------------------------------------------------------------- constants
ENTRY_NORMAL = 0
ENTRY_CONF_CHANGE = 1

MSG_APP = 1
MSG_APP_RESP = 2
MSG_VOTE = 3
MSG_VOTE_RESP = 4
MSG_PRE_VOTE = 5
MSG_PRE_VOTE_RESP = 6
MSG_HEARTBEAT = 7
MSG_HEARTBEAT_RESP = 8
MSG_SNAP = 9
MSG_SNAP_RESP = 10
MSG_TIMEOUT_NOW = 11
MSG_READ_INDEX = 12
MSG_READ_INDEX_RESP = 13

VOTE_PENDING = 0
VOTE_WON = 1
VOTE_LOST = 2

RECORD_HEADER_SIZE = 28

FRAME_RAFT = 1
FRAME_CONTROL = 2
FRAME_HEADER_SIZE = 5
MESSAGE_HEADER_SIZE = 76
DEFAULT_MAX_FRAME = 64 * 1024 * 1024

cdef enum:
    MSG_HDR = 76
    MSG_TYPE_MAX = 13
    FLAG_REJECT = 1
    FLAG_SNAPSHOT = 2
    SMALL = 16  # voters per set gathered in a C array; larger sets take the generic path

cdef Py_ssize_t U32_MAX = 0xFFFFFFFF


# ------------------------------------------------------------------ buffers
cdef struct Buf:
    const unsigned char *ptr
    Py_ssize_t len


cdef inline int _buf_get(object obj, Buf *out, Py_buffer *view, bint *release) except -1:
    """Point ``out`` at the bytes of ``obj``; ``release`` says whether ``view`` must be
    released. bytes and contiguous memoryviews take no new buffer reference."""
    cdef Py_buffer *mv
    release[0] = False
    if type(obj) is bytes:
        out.ptr = <const unsigned char *>PyBytes_AS_STRING(obj)
        out.len = PyBytes_GET_SIZE(obj)
        return 0
    if PyMemoryView_Check(obj):
        mv = PyMemoryView_GET_BUFFER(obj)
        if PyBuffer_IsContiguous(mv, b'C'):
            out.ptr = <const unsigned char *>mv.buf
            out.len = mv.len
            return 0
    PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    release[0] = True
    out.ptr = <const unsigned char *>view.buf
    out.len = view.len
    return 0


cdef object _readonly_view(object buffer):
    """A read-only byte memoryview of ``buffer``. Zero-copy for bytes and for a memoryview
    (the caller who hands in a view keeps its memory stable, e.g. a log segment's mmap); any
    other object (bytearray, ...) is copied, so decoded entries never change underneath."""
    if type(buffer) is bytes:
        return memoryview(buffer)
    if PyMemoryView_Check(buffer):
        view = buffer
        if view.c_contiguous and view.ndim == 1 and view.itemsize == 1:
            return view.cast("B").toreadonly() if view.format != "B" else view.toreadonly()
        return memoryview(view.tobytes())
    return memoryview(bytes(buffer))


cdef inline const unsigned char *_view_ptr(object view):
    return <const unsigned char *>PyMemoryView_GET_BUFFER(view).buf


# -------------------------------------------------------------------- CRC32C
def crc32c(data, uint32_t crc=0):
    """CRC32C (Castagnoli) of ``data``, continuing from ``crc``."""
    cdef Buf b
    cdef Py_buffer view
    cdef bint release
    cdef uint32_t out
    _buf_get(data, &b, &view, &release)
    try:
        if b.len > 65536:
            with nogil:
                out = pgraft_crc32c(crc, b.ptr, <size_t>b.len)
        else:
            out = pgraft_crc32c(crc, b.ptr, <size_t>b.len)
    finally:
        if release:
            PyBuffer_Release(&view)
    return out


# --------------------------------------------------------------------- Entry
cdef bytes _encode_record_c(uint64_t index, uint64_t term, uint8_t type, object data):
    cdef Buf b
    cdef Py_buffer view
    cdef bint release
    cdef bytes out
    _buf_get(data, &b, &view, &release)
    try:
        if b.len > U32_MAX:
            raise OverflowError(f"entry payload of {b.len} bytes exceeds the 4 GiB record limit")
        out = PyBytes_FromStringAndSize(NULL, REC_HDR + b.len)
        pgraft_record_write(<unsigned char *>PyBytes_AS_STRING(out), index, term, type,
                            b.ptr, <uint32_t>b.len)
    finally:
        if release:
            PyBuffer_Release(&view)
    return out


def encode_record(uint64_t index, uint64_t term, uint8_t type, data):
    """Encode one record: see pgraft/_record.h for the layout."""
    return _encode_record_c(index, term, type, data)


cdef class Entry:
    """One log entry. ``record`` is its encoded form (header + payload, CRC computed once),
    the same bytes in a segment file and in an AppendEntries frame (docs/design.md rule 4).
    Setting ``index``, ``term``, ``type`` or ``data`` drops the cached record."""

    def __init__(self, uint64_t index, uint64_t term, uint8_t type=ENTRY_NORMAL, data=b""):
        if data is None:
            raise TypeError("Entry data must be a bytes-like object, not None")
        self._index = index
        self._term = term
        self._type = type
        self._data = data
        self._record = None

    cdef object get_record(self):
        if self._record is None:
            self._record = _encode_record_c(self._index, self._term, self._type, self._data)
        return self._record

    cdef object get_data(self):
        if self._data is None:
            self._data = self._record[REC_HDR:]
        return self._data

    @property
    def index(self):
        """Log index."""
        return self._index

    @index.setter
    def index(self, uint64_t value):
        self._index = value
        self._record = None

    @property
    def term(self):
        """Term in which the entry was created."""
        return self._term

    @term.setter
    def term(self, uint64_t value):
        self._term = value
        self._record = None

    @property
    def type(self):
        """Entry type (ENTRY_*)."""
        return self._type

    @type.setter
    def type(self, uint8_t value):
        self._type = value
        self._record = None

    @property
    def data(self):
        """Payload (bytes, or a read-only memoryview for a decoded entry)."""
        return self.get_data()

    @data.setter
    def data(self, value):
        if value is None:
            raise TypeError("Entry data must be a bytes-like object, not None")
        self._data = value
        self._record = None

    @property
    def record(self):
        """The encoded record (header + payload), computed once."""
        return self.get_record()

    @property
    def size(self):
        """Bytes of the record (header + payload), without encoding it or slicing the payload
        out of a decoded record: what batches are measured in."""
        if self._record is not None:
            return len(self._record)
        return REC_HDR + len(self._data)

    @property
    def tag(self):
        """The payload's first byte, -1 if it is empty (pgraft's state machine tags each
        command with it), read without slicing the payload out of a decoded record."""
        return _entry_tag(self)

    @property
    def cached_record(self):
        """The record if it is already encoded (or was decoded), else None."""
        return self._record

    @staticmethod
    def from_record(buffer):
        """The Entry encoded in ``buffer``, which holds exactly one record. The CRC is checked;
        ``record`` and ``data`` are zero-copy slices when ``buffer`` is bytes or a memoryview."""
        view = _readonly_view(buffer)
        cdef Py_ssize_t n = len(view)
        cdef Entry e = _record_at(view, _view_ptr(view), 0, n, True, 0)
        cdef Py_ssize_t size = len(e._record)
        if size != n:
            raise DecodeError(f"{n - size} trailing bytes after the record at offset {size}",
                              offset=size)
        return e

    def __repr__(self):
        return (f"Entry(index={self._index}, term={self._term}, type={self._type}, "
                f"data={bytes(self.get_data())!r})")

    def __eq__(self, other):
        if not isinstance(other, Entry):
            return NotImplemented
        cdef Entry o = <Entry>other
        if self._index != o._index or self._term != o._term or self._type != o._type:
            return False
        return _same_bytes(self.get_data(), o.get_data())

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __reduce__(self):
        return (Entry, (self._index, self._term, self._type, bytes(self.get_data())))


cdef bint _same_bytes(object a, object b) except -1:
    cdef Buf x, y
    cdef Py_buffer va, vb
    cdef bint ra = False, rb = False
    _buf_get(a, &x, &va, &ra)
    try:
        _buf_get(b, &y, &vb, &rb)
        try:
            return x.len == y.len and (x.len == 0 or memcmp(x.ptr, y.ptr, x.len) == 0)
        finally:
            if rb:
                PyBuffer_Release(&vb)
    finally:
        if ra:
            PyBuffer_Release(&va)


cdef int _entry_tag(Entry e) except -2:
    """The first payload byte of ``e`` (-1 if empty), from its record or its data."""
    cdef Buf b
    cdef Py_buffer view
    cdef bint release
    cdef Py_ssize_t off = 0
    cdef int tag = -1
    src = e._data
    if src is None:
        src = e._record
        off = REC_HDR
    _buf_get(src, &b, &view, &release)
    if b.len > off:
        tag = b.ptr[off]
    if release:
        PyBuffer_Release(&view)
    return tag


def tagged_run(list entries not None, Py_ssize_t start, uint8_t entry_type, int tag):
    """How many entries of ``entries``, from ``start`` on, are of ``entry_type`` with ``tag``
    as their payload's first byte: a run the caller handles at once, read from the entries'
    fields (no payload slice, no Python call per entry)."""
    cdef Py_ssize_t i = start, n = PyList_GET_SIZE(entries)
    cdef Entry e
    if start < 0:
        raise InvalidArgument(f"start must be >= 0, not {start}")
    while i < n:
        obj = entries[i]
        if type(obj) is not Entry:
            break
        e = <Entry>obj
        if e._type != entry_type or _entry_tag(e) != tag:
            break
        i += 1
    return i - start


cdef Entry make_entry(uint64_t index, uint64_t term, uint8_t type, object data, object record):
    cdef Entry e = Entry.__new__(Entry)
    e._index = index
    e._term = term
    e._type = type
    e._data = data
    e._record = record
    return e


cdef Entry _record_at(object view, const unsigned char *base, Py_ssize_t offset,
                      Py_ssize_t avail, bint verify, Py_ssize_t report_base):
    """Parse the record at ``base + offset``; errors name ``offset - report_base``."""
    cdef const unsigned char *p = base + offset
    cdef Py_ssize_t at = offset - report_base
    cdef uint32_t length, stored, computed
    if avail < REC_HDR:
        raise DecodeError(f"record at offset {at}: header truncated ({avail} of {REC_HDR} "
                          f"bytes)", offset=at)
    length = pgraft_load_u32(p + 4)
    if length > <uint64_t>(avail - REC_HDR):
        raise DecodeError(f"record at offset {at}: payload length {length} exceeds the "
                          f"{avail - REC_HDR} bytes left", offset=at + 4)
    if p[25] | p[26] | p[27]:
        raise DecodeError(f"record at offset {at}: reserved header bytes are not zero",
                          offset=at + 25)
    if verify:
        stored = pgraft_load_u32(p)
        computed = pgraft_crc32c(0, p + 4, REC_HDR - 4 + length)
        if stored != computed:
            raise DecodeError(f"record at offset {at}: CRC mismatch (stored 0x{stored:08x}, "
                              f"computed 0x{computed:08x})", offset=at)
    return make_entry(pgraft_load_u64(p + 8), pgraft_load_u64(p + 16), p[24], None,
                      view[offset:offset + REC_HDR + length])


cdef Entry entry_from_memory(object view, const unsigned char *base, Py_ssize_t offset,
                             Py_ssize_t avail, bint verify):
    return _record_at(view, base, offset, avail, verify, 0)


cdef list _records_in(object view, const unsigned char *base, Py_ssize_t start,
                      Py_ssize_t end, Py_ssize_t count, Py_ssize_t report_base):
    """Exactly ``count`` contiguous records filling ``[start, end)`` (count < 0: as many as
    fill it). Errors name offsets relative to ``report_base``."""
    cdef list out = []
    cdef Py_ssize_t pos = start, i = 0
    cdef Entry e
    cdef uint64_t expect = 0
    while (i < count) if count >= 0 else (pos < end):
        e = _record_at(view, base, pos, end - pos, True, report_base)
        if i > 0 and e._index != expect:
            raise DecodeError(f"record {i} at offset {pos - report_base} has index "
                              f"{e._index}, expected {expect}: indexes must be contiguous",
                              offset=pos - report_base + 8)
        expect = e._index + 1
        pos += REC_HDR + pgraft_load_u32(base + pos + 4)
        out.append(e)
        i += 1
    if pos != end:
        raise DecodeError(f"{end - pos} trailing bytes after {i} records at offset "
                          f"{pos - report_base}", offset=pos - report_base)
    return out


def decode_records(buffer):
    """Every record in ``buffer`` (concatenated, contiguous indexes, CRCs checked), as Entries
    whose ``record``/``data`` are zero-copy slices when ``buffer`` is bytes or a memoryview."""
    view = _readonly_view(buffer)
    return _records_in(view, _view_ptr(view), 0, len(view), -1, 0)


# ------------------------------------------------------------------- Message
cdef class Message:
    """A Raft message between nodes: one flat shape for every type (see the twin,
    ``pgraft._core_py.Message``, for which fields each type uses). Integer fields are unsigned
    64-bit."""

    def __init__(self, int type, uint64_t src=0, uint64_t dst=0, uint64_t term=0,
                 uint64_t log_term=0, uint64_t index=0, uint64_t commit=0, bint reject=False,
                 uint64_t reject_hint=0, entries=None, context=b"", snapshot=None):
        self.type = type
        self.src = src
        self.dst = dst
        self.term = term
        self.log_term = log_term
        self.index = index
        self.commit = commit
        self.reject = reject
        self.reject_hint = reject_hint
        self.entries = entries if entries is not None else []
        self.context = context
        self.snapshot = snapshot

    def __repr__(self):
        return (f"Message(type={self.type!r}, src={self.src!r}, dst={self.dst!r}, "
                f"term={self.term!r}, log_term={self.log_term!r}, index={self.index!r}, "
                f"commit={self.commit!r}, reject={self.reject!r}, "
                f"reject_hint={self.reject_hint!r}, entries={self.entries!r}, "
                f"context={self.context!r}, snapshot={self.snapshot!r})")

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        cdef Message o = <Message>other
        return (self.type == o.type and self.src == o.src and self.dst == o.dst
                and self.term == o.term and self.log_term == o.log_term
                and self.index == o.index and self.commit == o.commit
                and self.reject == o.reject and self.reject_hint == o.reject_hint
                and self.entries == o.entries and self.context == o.context
                and self.snapshot == o.snapshot)

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __reduce__(self):
        return (Message, (self.type, self.src, self.dst, self.term, self.log_term, self.index,
                          self.commit, self.reject, self.reject_hint, self.entries,
                          self.context, self.snapshot))


# -------------------------------------------------------------------- quorum
cdef inline uint64_t _kth_desc(uint64_t *a, Py_ssize_t n) noexcept:
    """a[n // 2] after sorting ``a`` descending (insertion sort: n <= SMALL)."""
    cdef Py_ssize_t i, j
    cdef uint64_t x
    for i in range(1, n):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] < x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x
    return a[n // 2]


cdef inline object _lookup(object mapping, object key, object default):
    cdef PyObject *found
    if type(mapping) is dict:
        found = PyDict_GetItemWithError(mapping, key)
        if found == NULL:
            return default
        return <object>found
    return mapping.get(key, default)


cdef object _reiterable(object ids):
    if type(ids) is list or type(ids) is tuple or type(ids) is set or type(ids) is frozenset:
        return ids
    if iter(ids) is ids:
        return list(ids)
    return ids


cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object obj, int *overflow) except? -1


cdef inline int _as_u64(object value, uint64_t *out) except -1:
    """0 and ``out`` set if ``value`` is an int in 0..2**63-1, else 1 (generic path)."""
    cdef int overflow = 0
    cdef long long x
    if type(value) is not int:
        return 1
    x = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or x < 0:
        return 1
    out[0] = <uint64_t>x
    return 0


cdef int _gather(object ids, object match, uint64_t *buf, Py_ssize_t *n) except -1:
    """Match indexes of ``ids`` into ``buf``; 1 if they do not fit (more than SMALL ids, or a
    value that is not an int in 0..2**63-1): the caller takes the generic path."""
    cdef Py_ssize_t k = 0, size
    if type(ids) is list or type(ids) is tuple:
        size = len(ids)
        if size > SMALL:
            return 1
        for k in range(size):
            if _as_u64(_lookup(match, ids[k], 0), &buf[k]):
                return 1
        n[0] = size
        return 0
    if type(ids) is set or type(ids) is frozenset:
        for v in <set>ids:  # frozenset shares set's layout: Cython's fast set iteration
            if k == SMALL or _as_u64(_lookup(match, v, 0), &buf[k]):
                return 1
            k += 1
    else:
        for v in ids:
            if k == SMALL or _as_u64(_lookup(match, v, 0), &buf[k]):
                return 1
            k += 1
    n[0] = k
    return 0


def _majority_generic(matches):
    cdef Py_ssize_t n = len(matches)
    if n == 0:
        return 0
    return sorted(matches, reverse=True)[n // 2]


cdef object _majority_of(object ids, object match, Py_ssize_t *count):
    cdef uint64_t buf[SMALL]
    cdef Py_ssize_t n = 0
    if _gather(ids, match, buf, &n) == 0:
        count[0] = n
        return _kth_desc(buf, n) if n else 0
    values = [match.get(v, 0) for v in ids]
    count[0] = len(values)
    return _majority_generic(values)


def majority_index(matches):
    """The largest index that a majority of ``matches`` (one per voter) have reached.
    An empty voter set returns 0."""
    cdef uint64_t buf[SMALL]
    cdef Py_ssize_t n = len(matches), i
    if n == 0:
        return 0
    if n > SMALL:
        return _majority_generic(matches)
    for i in range(n):
        if _as_u64(matches[i], &buf[i]):
            return _majority_generic(matches)
    return _kth_desc(buf, n)


def committed_index(voters, match, outgoing=()):
    """Quorum commit index. ``voters`` (and ``outgoing`` in a joint configuration) are node
    ids; ``match`` maps node id to match index (missing = 0). Learners are simply not in either
    set. Joint: the lower of the two majorities; an empty ``outgoing`` means not joint.
    No allocation for up to 16 voters per set."""
    cdef Py_ssize_t n_in = 0, n_out = 0
    incoming = _majority_of(_reiterable(voters), match, &n_in)
    if type(outgoing) is tuple and len(outgoing) == 0:
        return incoming
    out = _majority_of(_reiterable(outgoing), match, &n_out)
    if n_out == 0:
        return incoming
    return out if out < incoming else incoming


cdef long long quorum_index(tuple voters, dict match) except? -1:
    """``committed_index(voters, match)`` for compiled callers (the Raft core, which keeps its
    voters as a tuple and their match indexes in a dict): no Python call, no allocation for up
    to 16 voters."""
    cdef uint64_t buf[SMALL]
    cdef Py_ssize_t n = 0
    if _gather(voters, match, buf, &n) == 0:
        return <long long>_kth_desc(buf, n) if n else 0
    return committed_index(voters, match)


cdef inline void _count_vote(object granted, Py_ssize_t *yes, Py_ssize_t *no) noexcept:
    if granted is True:
        yes[0] += 1
    elif granted is False:
        no[0] += 1


cdef int _tally(object ids, object votes, Py_ssize_t *count) except -1:
    cdef Py_ssize_t n = 0, yes = 0, no = 0, need
    if type(ids) is set or type(ids) is frozenset:
        for v in <set>ids:
            n += 1
            _count_vote(_lookup(votes, v, None), &yes, &no)
    else:
        for v in ids:
            n += 1
            _count_vote(_lookup(votes, v, None), &yes, &no)
    count[0] = n
    if n == 0:
        return VOTE_WON
    need = n // 2 + 1
    if yes >= need:
        return VOTE_WON
    if no > n - need:
        return VOTE_LOST
    return VOTE_PENDING


def vote_result(voters, votes, outgoing=()):
    """VOTE_WON / VOTE_LOST / VOTE_PENDING for ``votes`` (node id -> granted). Joint: won only
    if both sets are won, lost if either is lost."""
    cdef Py_ssize_t n_in = 0, n_out = 0
    cdef int a = _tally(voters, votes, &n_in)
    if type(outgoing) is tuple and len(outgoing) == 0:
        return a
    cdef int b = _tally(outgoing, votes, &n_out)
    if n_out == 0:
        return a
    if a == VOTE_WON and b == VOTE_WON:
        return VOTE_WON
    if a == VOTE_LOST or b == VOTE_LOST:
        return VOTE_LOST
    return VOTE_PENDING


# --------------------------------------------------------------- frame codec
cdef inline object _entry_record(object item, uint64_t *index):
    if type(item) is Entry:
        index[0] = (<Entry>item)._index
        return (<Entry>item).get_record()
    index[0] = item.index
    return item.record


cdef inline Py_ssize_t _buf_len(object obj) except -1:
    if type(obj) is bytes:
        return PyBytes_GET_SIZE(obj)
    if PyMemoryView_Check(obj):
        return PyMemoryView_GET_BUFFER(obj).len
    return len(memoryview(obj).cast("B"))


cdef Py_ssize_t _entries_size(Message msg, list entries) except -1:
    """Bytes of all records; checks that their indexes are contiguous (and follow
    ``msg.index`` for MSG_APP)."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(entries), total = 0
    cdef uint64_t index = 0, expect = msg.index + 1
    cdef object rec
    for i in range(n):
        rec = _entry_record(entries[i], &index)
        if (i > 0 or msg.type == MSG_APP) and index != expect:
            what = "previous entry" if i > 0 else "msg.index"
            raise InvalidArgument(f"entry {i} has index {index}, expected {expect} after the "
                                  f"{what}: entries in a message must be contiguous")
        expect = index + 1
        total += _buf_len(rec)
    if total > U32_MAX:
        raise InvalidArgument(f"entries of {total} bytes do not fit in one frame")
    return total


cdef Py_ssize_t _copy_in(unsigned char *dst, Py_ssize_t room, object src) except -1:
    cdef Buf b
    cdef Py_buffer view
    cdef bint release
    _buf_get(src, &b, &view, &release)
    try:
        if b.len > room:
            raise InvalidArgument("a buffer changed size while the frame was being encoded")
        if b.len:
            memcpy(dst, b.ptr, b.len)
        return b.len
    finally:
        if release:
            PyBuffer_Release(&view)


cdef void _write_header(unsigned char *p, Message msg, Py_ssize_t count, Py_ssize_t ebytes,
                        Py_ssize_t clen, Py_ssize_t slen, bint has_snap) noexcept:
    p[0] = <uint8_t>msg.type
    p[1] = (FLAG_REJECT if msg.reject else 0) | (FLAG_SNAPSHOT if has_snap else 0)
    p[2] = 0
    p[3] = 0
    pgraft_store_u32(p + 4, <uint32_t>count)
    pgraft_store_u32(p + 8, <uint32_t>ebytes)
    pgraft_store_u32(p + 12, <uint32_t>clen)
    pgraft_store_u32(p + 16, <uint32_t>slen)
    pgraft_store_u64(p + 20, msg.src)
    pgraft_store_u64(p + 28, msg.dst)
    pgraft_store_u64(p + 36, msg.term)
    pgraft_store_u64(p + 44, msg.log_term)
    pgraft_store_u64(p + 52, msg.index)
    pgraft_store_u64(p + 60, msg.commit)
    pgraft_store_u64(p + 68, msg.reject_hint)


def encode_message(Message msg):
    """The whole RAFT frame of ``msg`` (length prefix, kind byte, body). Entries are copied
    from their cached records, never re-encoded."""
    if msg.type < 1 or msg.type > MSG_TYPE_MAX:
        raise InvalidArgument(f"unknown message type {msg.type}")
    entries = msg.entries
    if type(entries) is not list:
        entries = list(entries)
    cdef list elist = <list>entries
    cdef Py_ssize_t count = PyList_GET_SIZE(elist)
    if count > U32_MAX:
        raise InvalidArgument(f"{count} entries do not fit in one frame")
    cdef Py_ssize_t ebytes = _entries_size(msg, elist)
    context, snapshot = msg.context, msg.snapshot
    cdef bint has_snap = snapshot is not None
    cdef Py_ssize_t clen = _buf_len(context)
    cdef Py_ssize_t slen = _buf_len(snapshot) if has_snap else 0
    cdef Py_ssize_t body = 1 + MSG_HDR + ebytes + clen + slen
    if clen > U32_MAX or slen > U32_MAX or body > U32_MAX:
        raise InvalidArgument(f"a frame of {body} bytes exceeds the 4 GiB frame limit")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 4 + body)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    cdef unsigned char *end = p + 4 + body
    cdef Py_ssize_t i
    cdef uint64_t index
    cdef object rec
    pgraft_store_u32(p, <uint32_t>body)
    p[4] = FRAME_RAFT
    _write_header(p + 5, msg, count, ebytes, clen, slen, has_snap)
    p += 5 + MSG_HDR
    for i in range(count):
        rec = _entry_record(elist[i], &index)
        p += _copy_in(p, end - p, rec)
    p += _copy_in(p, end - p, context)
    if has_snap:
        p += _copy_in(p, end - p, snapshot)
    if p != end:
        raise InvalidArgument("a buffer changed size while the frame was being encoded")
    return out


def encode_control(obj):
    """The whole CONTROL frame of ``obj`` (msgpack, binary type for bytes)."""
    payload = msgpack.packb(obj, use_bin_type=True)
    cdef Py_ssize_t n = len(payload)
    if n + 1 > U32_MAX:
        raise InvalidArgument(f"a control payload of {n} bytes exceeds the 4 GiB frame limit")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 5 + n)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    pgraft_store_u32(p, <uint32_t>(n + 1))
    p[4] = FRAME_CONTROL
    memcpy(p + 5, PyBytes_AS_STRING(payload), n)
    return out


cdef Message _decode_body(object view, const unsigned char *base, Py_ssize_t start,
                          Py_ssize_t n):
    """The Message in the RAFT body ``[start, start + n)`` of ``view`` (whose first byte is at
    ``base``). Errors name offsets relative to ``start``."""
    cdef const unsigned char *p = base + start
    if n < MSG_HDR:
        raise DecodeError(f"RAFT body of {n} bytes is shorter than the {MSG_HDR}-byte message "
                          f"header", offset=n)
    cdef int mtype = p[0], flags = p[1]
    if mtype < 1 or mtype > MSG_TYPE_MAX:
        raise DecodeError(f"unknown message type {mtype} at offset 0", offset=0)
    if flags & ~(FLAG_REJECT | FLAG_SNAPSHOT):
        raise DecodeError(f"unknown flag bits 0x{flags:02x} at offset 1", offset=1)
    if p[2] | p[3]:
        raise DecodeError("reserved header bytes at offset 2 are not zero", offset=2)
    cdef uint64_t count = pgraft_load_u32(p + 4), ebytes = pgraft_load_u32(p + 8)
    cdef uint64_t clen = pgraft_load_u32(p + 12), slen = pgraft_load_u32(p + 16)
    if slen and not (flags & FLAG_SNAPSHOT):
        raise DecodeError(f"snapshot length {slen} at offset 16 without the snapshot flag",
                          offset=16)
    if MSG_HDR + ebytes + clen + slen != <uint64_t>n:
        raise DecodeError(f"section lengths at offset 8 (entries {ebytes} + context {clen} + "
                          f"snapshot {slen} + header {MSG_HDR}) do not match the body length "
                          f"{n}", offset=8)
    if count * REC_HDR > ebytes:
        raise DecodeError(f"{count} entries at offset 4 cannot fit in {ebytes} bytes",
                          offset=4)
    cdef Message msg = Message.__new__(Message)
    msg.type = mtype
    msg.reject = flags & FLAG_REJECT
    msg.src = pgraft_load_u64(p + 20)
    msg.dst = pgraft_load_u64(p + 28)
    msg.term = pgraft_load_u64(p + 36)
    msg.log_term = pgraft_load_u64(p + 44)
    msg.index = pgraft_load_u64(p + 52)
    msg.commit = pgraft_load_u64(p + 60)
    msg.reject_hint = pgraft_load_u64(p + 68)
    cdef list entries = _records_in(view, base, start + MSG_HDR, start + MSG_HDR + ebytes,
                                    count, start)
    if count and mtype == MSG_APP and (<Entry>entries[0])._index != msg.index + 1:
        raise DecodeError(f"first entry has index {(<Entry>entries[0])._index} but the "
                          f"previous index is {msg.index}", offset=MSG_HDR + 8)
    msg.entries = entries
    cdef const char *q = <const char *>p + MSG_HDR + ebytes
    msg.context = PyBytes_FromStringAndSize(q, clen)
    msg.snapshot = PyBytes_FromStringAndSize(q + clen, slen) if flags & FLAG_SNAPSHOT else None
    return msg


def decode_message(body):
    """The Message in one RAFT frame body (the bytes after the kind byte). Strict: raises
    pgraft.errors.DecodeError naming the offset of what is wrong."""
    view = _readonly_view(body)
    return _decode_body(view, _view_ptr(view), 0, len(view))


def _decode_control(body):
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DecodeError(f"bad msgpack in CONTROL body: {reason}", offset=0) from None


def _frame_error(Py_ssize_t frame_at, exc):
    offset = frame_at + 5 + exc.details.get("offset", 0)
    return DecodeError(f"frame at stream offset {frame_at}: {exc.message}", offset=offset)


cdef class FrameDecoder:
    """Streaming decoder of frames: ``feed(data)`` returns a list with a Message for every
    complete RAFT frame and the decoded object of every complete CONTROL frame, in order, and
    buffers a partial frame. ``close()`` raises if the stream ended inside a frame. Any error
    is a DecodeError (the decoder then refuses further data)."""

    cdef bytearray _buf
    cdef Py_ssize_t _max
    cdef Py_ssize_t _offset
    cdef object _error

    def __init__(self, max_frame_size=DEFAULT_MAX_FRAME):
        if not 1 <= max_frame_size <= U32_MAX:
            raise InvalidArgument(f"max_frame_size must be in 1..{U32_MAX}, not "
                                  f"{max_frame_size}")
        self._max = max_frame_size
        self._buf = bytearray()
        self._offset = 0
        self._error = None

    @property
    def pending_bytes(self):
        """Bytes of an incomplete frame held until more data arrives."""
        return len(self._buf)

    @property
    def max_frame_size(self):
        """The cap on a frame's length field."""
        return self._max

    cdef int _check_length(self, uint32_t length, Py_ssize_t at) except -1:
        if length == 0:
            raise DecodeError(f"frame at stream offset {at}: length 0 (a frame holds at least "
                              f"its kind byte)", offset=at)
        if <Py_ssize_t>length > self._max:
            raise DecodeError(f"frame at stream offset {at}: length {length} exceeds the "
                              f"limit of {self._max} bytes", offset=at)
        return 0

    def feed(self, data):
        """Decode every frame completed by ``data``; returns them in order (may be empty)."""
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except DecodeError as exc:
            self._error = exc
            raise

    cdef list _feed(self, data):
        cdef Py_ssize_t have = len(self._buf), n = len(data)
        cdef unsigned char head[4]
        cdef uint32_t length
        if type(data) is not bytes and type(data) is not bytearray:
            data = memoryview(data).cast("B")
            n = len(data)
        if n == 0:
            return []
        if have == 0:
            return self._parse(data if type(data) is bytes else bytes(data))
        if have + n < 4:
            self._buf += data
            return []
        if have < 4:
            extra = bytes(memoryview(data).cast("B")[:4 - have])
            memcpy(head, PyBytes_AS_STRING(bytes(self._buf) + extra), 4)
        else:
            memcpy(head, PyByteArray_AS_STRING(self._buf), 4)
        length = pgraft_load_u32(head)
        self._check_length(length, self._offset)
        self._buf += data
        if have + n < 4 + <Py_ssize_t>length:
            return []
        chunk = bytes(self._buf)
        self._buf.clear()
        return self._parse(chunk)

    cdef list _parse(self, bytes chunk):
        cdef list out = []
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(chunk)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(chunk), pos = 0
        cdef uint32_t length
        view = memoryview(chunk)
        while n - pos >= 4:
            length = pgraft_load_u32(p + pos)
            self._check_length(length, self._offset + pos)
            if n - pos - 4 < <Py_ssize_t>length:
                break
            out.append(self._frame(view, p, pos, length))
            pos += 4 + <Py_ssize_t>length
        if pos < n:
            self._buf += view[pos:]
        self._offset += pos
        return out

    cdef object _frame(self, object view, const unsigned char *p, Py_ssize_t pos,
                       uint32_t length):
        cdef int kind = p[pos + 4]
        try:
            if kind == FRAME_RAFT:
                return _decode_body(view, p, pos + 5, length - 1)
            if kind == FRAME_CONTROL:
                return _decode_control(view[pos + 5:pos + 4 + length])
        except DecodeError as exc:
            raise _frame_error(self._offset + pos, exc) from None
        raise DecodeError(f"frame at stream offset {self._offset + pos}: unknown frame kind "
                          f"{kind} at offset {self._offset + pos + 4}",
                          offset=self._offset + pos + 4)

    def close(self):
        """Declare the stream ended: raises DecodeError if it ended inside a frame."""
        if self._error is not None:
            raise self._error
        if self._buf:
            self._error = DecodeError(
                f"stream closed inside a frame: {len(self._buf)} bytes of an incomplete frame "
                f"at stream offset {self._offset}", offset=self._offset)
            raise self._error
