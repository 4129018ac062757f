"""Pure-Python twin of ``pgraft._core``: entries, messages, quorum and vote tally, CRC32C, and
the frame codec.

The compiled module (``_core.pyx``) exposes exactly this API; the same tests run on both.

Frames (docs/protocol.md): ``u32 length`` (of kind + body), ``u8 kind``, body. A CONTROL body
is msgpack. A RAFT body is a fixed 76-byte little-endian header, then the entries as
concatenated records (pgraft/_record.h: the log's own bytes), then context, then snapshot::

    off  0  u8   message type (MSG_*)
    off  1  u8   flags: 1 = reject, 2 = snapshot present (else ``snapshot`` is None)
    off  2  u16  reserved, zero
    off  4  u32  number of entries
    off  8  u32  bytes of entries
    off 12  u32  bytes of context
    off 16  u32  bytes of snapshot
    off 20  u64  src, dst, term, log_term, index, commit, reject_hint (7 x u64)
    off 76  entries, context, snapshot

Decoding is strict: every length must add up, every record's CRC must match, the entries of
one message have contiguous indexes (in a MSG_APP the first follows ``index``), and anything
else raises :class:`pgraft.errors.DecodeError` naming the offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack

from .errors import DecodeError, InvalidArgument

# ---------------------------------------------------------------- entry types
ENTRY_NORMAL = 0  # user data (append, KV command); empty data = a leader's no-op of its term
ENTRY_CONF_CHANGE = 1  # membership change; data is a msgpack map (see pgraft.raft)

# ------------------------------------------------------------- message types
MSG_APP = 1  # AppendEntries
MSG_APP_RESP = 2
MSG_VOTE = 3  # RequestVote
MSG_VOTE_RESP = 4
MSG_PRE_VOTE = 5
MSG_PRE_VOTE_RESP = 6
MSG_HEARTBEAT = 7
MSG_HEARTBEAT_RESP = 8
MSG_SNAP = 9  # one InstallSnapshot chunk
MSG_SNAP_RESP = 10
MSG_TIMEOUT_NOW = 11
MSG_READ_INDEX = 12  # a follower asks the leader for a read index
MSG_READ_INDEX_RESP = 13

# --------------------------------------------------------------- vote tally
VOTE_PENDING = 0
VOTE_WON = 1
VOTE_LOST = 2

RECORD_HEADER_SIZE = 28

# ------------------------------------------------------------------- frames
FRAME_RAFT = 1
FRAME_CONTROL = 2
FRAME_HEADER_SIZE = 5  # u32 length + u8 kind
MESSAGE_HEADER_SIZE = 76
DEFAULT_MAX_FRAME = 64 * 1024 * 1024

_MSG_TYPE_MAX = MSG_READ_INDEX_RESP
_FLAG_REJECT = 1
_FLAG_SNAPSHOT = 2
_U32_MAX = 0xFFFFFFFF
_U64_MAX = (1 << 64) - 1
_RECORD_HEAD = struct.Struct("<IIQQI")  # crc, length, index, term, type + 3 reserved bytes
_MESSAGE_HEAD = struct.Struct("<BBHIIII7Q")
_U32 = struct.Struct("<I")

Buffer = bytes | bytearray | memoryview


# ------------------------------------------------------------------- CRC32C
def _make_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_table()


def crc32c(data: Buffer, crc: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``crc``."""
    table = _CRC_TABLE
    c = crc ^ 0xFFFFFFFF
    for b in bytes(data):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# ------------------------------------------------------------------- Entry
def _check_uint(name: str, value: int, limit: int) -> int:
    if not 0 <= value <= limit:
        raise OverflowError(f"{name} {value} is out of range 0..{limit}")
    return value


def encode_record(index: int, term: int, type: int, data: Buffer) -> bytes:
    """Encode one record: see pgraft/_record.h for the layout."""
    payload = bytes(data)
    _check_uint("index", index, _U64_MAX)
    _check_uint("term", term, _U64_MAX)
    _check_uint("entry type", type, 0xFF)
    _check_uint("payload length", len(payload), _U32_MAX)
    body = _RECORD_HEAD.pack(0, len(payload), index, term, type)[4:] + payload
    return _U32.pack(crc32c(body)) + body


class Entry:
    """One log entry. ``record`` is its encoded form (header + payload, CRC computed once),
    the same bytes in a segment file and in an AppendEntries frame (docs/design.md rule 4).
    Setting ``index``, ``term``, ``type`` or ``data`` drops the cached record."""

    __slots__ = ("_index", "_term", "_type", "_data", "_record")

    def __init__(self, index: int, term: int, type: int = ENTRY_NORMAL,
                 data: Buffer = b"") -> None:
        if data is None:
            raise TypeError("Entry data must be a bytes-like object, not None")
        self._index = index
        self._term = term
        self._type = type
        self._data: Buffer | None = data
        self._record: Buffer | None = None

    @property
    def index(self) -> int:
        """Log index."""
        return self._index

    @index.setter
    def index(self, value: int) -> None:
        self._index = value
        self._record = None

    @property
    def term(self) -> int:
        """Term in which the entry was created."""
        return self._term

    @term.setter
    def term(self, value: int) -> None:
        self._term = value
        self._record = None

    @property
    def type(self) -> int:
        """Entry type (ENTRY_*)."""
        return self._type

    @type.setter
    def type(self, value: int) -> None:
        self._type = value
        self._record = None

    @property
    def data(self) -> Buffer:
        """Payload (bytes, or a read-only memoryview for a decoded entry)."""
        if self._data is None:
            assert self._record is not None
            self._data = self._record[RECORD_HEADER_SIZE:]
        return self._data

    @data.setter
    def data(self, value: Buffer) -> None:
        if value is None:
            raise TypeError("Entry data must be a bytes-like object, not None")
        self._data = value
        self._record = None

    @property
    def record(self) -> Buffer:
        """The encoded record (header + payload), computed once."""
        if self._record is None:
            self._record = encode_record(self._index, self._term, self._type, self.data)
        return self._record

    @property
    def size(self) -> int:
        """Bytes of the record (header + payload), without encoding it or slicing the payload
        out of a decoded record: what batches are measured in."""
        if self._record is not None:
            return len(self._record)
        assert self._data is not None
        return RECORD_HEADER_SIZE + len(self._data)

    @property
    def tag(self) -> int:
        """The payload's first byte, -1 if it is empty (pgraft's state machine tags each
        command with it), read without slicing the payload out of a decoded record."""
        if self._data is not None:
            return self._data[0] if len(self._data) else -1
        assert self._record is not None
        return self._record[RECORD_HEADER_SIZE] if len(self._record) > RECORD_HEADER_SIZE \
            else -1

    @property
    def cached_record(self) -> Buffer | None:
        """The record if it is already encoded (or was decoded), else None."""
        return self._record

    @staticmethod
    def from_record(buffer: Buffer) -> Entry:
        """The Entry encoded in ``buffer``, which holds exactly one record. The CRC is checked;
        ``record`` and ``data`` are zero-copy slices when ``buffer`` is bytes or a memoryview."""
        view = _readonly_view(buffer)
        entry, end = _record_at(view, 0, len(view), 0)
        if end != len(view):
            raise DecodeError(f"{len(view) - end} trailing bytes after the record at offset "
                              f"{end}", offset=end)
        return entry

    def __repr__(self) -> str:
        return (f"Entry(index={self._index}, term={self._term}, type={self._type}, "
                f"data={bytes(self.data)!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return (self._index, self._term, self._type, bytes(self.data)) == (
            other._index, other._term, other._type, bytes(other.data))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Entry, (self._index, self._term, self._type, bytes(self.data)))

    __hash__ = None  # type: ignore[assignment]


def _new_entry(index: int, term: int, type: int, record: memoryview) -> Entry:
    entry = Entry.__new__(Entry)
    entry._index = index
    entry._term = term
    entry._type = type
    entry._data = None
    entry._record = record
    return entry


def _readonly_view(buffer: Buffer) -> memoryview:
    """A read-only byte memoryview of ``buffer``. Zero-copy for bytes and for a memoryview
    (the caller who hands in a view keeps its memory stable, e.g. a log segment's mmap); any
    other object (bytearray, ...) is copied, so decoded entries never change underneath."""
    if isinstance(buffer, bytes):
        return memoryview(buffer)
    if isinstance(buffer, memoryview):
        if buffer.c_contiguous and buffer.ndim == 1 and buffer.itemsize == 1:
            view = buffer.cast("B") if buffer.format != "B" else buffer
            return view.toreadonly()
        return memoryview(buffer.tobytes())
    return memoryview(bytes(buffer))


def _record_at(view: memoryview, pos: int, end: int, base: int) -> tuple[Entry, int]:
    """The record at ``view[pos:end]`` and where it ends; errors name ``pos - base``."""
    at = pos - base
    if end - pos < RECORD_HEADER_SIZE:
        raise DecodeError(f"record at offset {at}: header truncated ({end - pos} of "
                          f"{RECORD_HEADER_SIZE} bytes)", offset=at)
    stored, length, index, term, tail = _RECORD_HEAD.unpack_from(view, pos)
    stop = pos + RECORD_HEADER_SIZE + length
    if stop > end:
        raise DecodeError(f"record at offset {at}: payload length {length} exceeds the "
                          f"{end - pos - RECORD_HEADER_SIZE} bytes left", offset=at + 4)
    if tail >> 8:
        raise DecodeError(f"record at offset {at}: reserved header bytes are not zero",
                          offset=at + 25)
    computed = crc32c(view[pos + 4:stop])
    if computed != stored:
        raise DecodeError(f"record at offset {at}: CRC mismatch (stored 0x{stored:08x}, "
                          f"computed 0x{computed:08x})", offset=at)
    return _new_entry(index, term, tail & 0xFF, view[pos:stop]), stop


def _records_in(view: memoryview, pos: int, end: int, count: int | None,
                base: int) -> list[Entry]:
    """Exactly ``count`` contiguous records filling ``view[pos:end]`` (None: as many as fill
    it). Errors name offsets relative to ``base``."""
    out: list[Entry] = []
    expect = 0
    while (len(out) < count) if count is not None else (pos < end):
        entry, stop = _record_at(view, pos, end, base)
        if out and entry._index != expect:
            raise DecodeError(f"record {len(out)} at offset {pos - base} has index "
                              f"{entry._index}, expected {expect}: indexes must be contiguous",
                              offset=pos - base + 8)
        expect = entry._index + 1
        out.append(entry)
        pos = stop
    if pos != end:
        raise DecodeError(f"{end - pos} trailing bytes after {len(out)} records at offset "
                          f"{pos - base}", offset=pos - base)
    return out



def tagged_run(entries: list[Any], start: int, entry_type: int, tag: int) -> int:
    """How many entries of ``entries``, from ``start`` on, are of ``entry_type`` with ``tag``
    as their payload's first byte: a run the caller handles at once (the compiled twin reads
    the entries' fields, with no payload slice and no Python call per entry)."""
    if start < 0:
        raise InvalidArgument(f"start must be >= 0, not {start}")
    i = start
    while i < len(entries):
        e = entries[i]
        if e.type != entry_type or e.tag != tag:
            break
        i += 1
    return i - start


def decode_records(buffer: Buffer) -> list[Entry]:
    """Every record in ``buffer`` (concatenated, contiguous indexes, CRCs checked), as Entries
    whose ``record``/``data`` are zero-copy slices when ``buffer`` is bytes or a memoryview."""
    view = _readonly_view(buffer)
    return _records_in(view, 0, len(view), None, 0)


# ----------------------------------------------------------------- Message
class Message:
    """A Raft message between nodes. One flat shape for every type (like etcd's raftpb);
    fields a type does not use stay at their defaults and cost nothing on the wire beyond the
    fixed header. Integer fields are unsigned 64-bit on the wire.

    - ``src``/``dst``: node ids; ``term``: the sender's term.
    - MSG_APP: ``index``/``log_term`` = previous entry; ``entries``; ``commit``.
    - MSG_APP_RESP: ``index`` = match (accept) or the rejected index; ``reject``;
      ``reject_hint`` = conflict index hint, ``log_term`` = conflict term hint.
    - MSG_VOTE/MSG_PRE_VOTE: ``index``/``log_term`` = candidate's last entry;
      ``context`` = b"transfer" when campaigning after TimeoutNow.
    - MSG_HEARTBEAT(_RESP): ``commit``; ``index`` = the leader's heartbeat round, echoed back
      (ReadIndex confirmation, pgraft.raft.readonly); ``context`` is echoed but confirms nothing.
    - MSG_SNAP: ``index``/``log_term`` = snapshot index/term; ``snapshot`` = opaque chunk bytes
      (metadata, offset, data; defined by the snapshot layer).
    - MSG_READ_INDEX(_RESP): ``context`` = request id; ``index`` = read index in the response.
    """

    __slots__ = ("type", "src", "dst", "term", "log_term", "index", "commit", "reject",
                 "reject_hint", "entries", "context", "snapshot")

    def __init__(self, type: int, src: int = 0, dst: int = 0, term: int = 0,
                 log_term: int = 0, index: int = 0, commit: int = 0, reject: bool = False,
                 reject_hint: int = 0, entries: list[Entry] | None = None,
                 context: bytes = b"", snapshot: bytes | None = None) -> None:
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

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"Message({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Message, tuple(getattr(self, k) for k in self.__slots__))

    __hash__ = None  # type: ignore[assignment]


# ------------------------------------------------------------------ quorum
def majority_index(matches: Sequence[int]) -> int:
    """The largest index that a majority of ``matches`` (one per voter) have reached.
    An empty voter set returns 0."""
    n = len(matches)
    if n == 0:
        return 0
    return sorted(matches, reverse=True)[n // 2]


def committed_index(voters: Iterable[int], match: Mapping[int, int],
                    outgoing: Iterable[int] = ()) -> int:
    """Quorum commit index. ``voters`` (and ``outgoing`` in a joint configuration) are node
    ids; ``match`` maps node id to match index (missing = 0). Learners are simply not in either
    set. Joint: the lower of the two majorities; an empty ``outgoing`` means not joint."""
    incoming = majority_index([match.get(v, 0) for v in voters])
    out = list(outgoing)
    if not out:
        return incoming
    return min(incoming, majority_index([match.get(v, 0) for v in out]))


def _tally(voters: Iterable[int], votes: Mapping[int, bool]) -> int:
    ids = list(voters)
    if not ids:
        return VOTE_WON
    need = len(ids) // 2 + 1
    yes = sum(1 for v in ids if votes.get(v) is True)
    no = sum(1 for v in ids if votes.get(v) is False)
    if yes >= need:
        return VOTE_WON
    if no > len(ids) - need:
        return VOTE_LOST
    return VOTE_PENDING


def vote_result(voters: Iterable[int], votes: Mapping[int, bool],
                outgoing: Iterable[int] = ()) -> int:
    """VOTE_WON / VOTE_LOST / VOTE_PENDING for ``votes`` (node id -> granted). Joint: won only
    if both sets are won, lost if either is lost."""
    a = _tally(voters, votes)
    out = list(outgoing)
    if not out:
        return a
    b = _tally(out, votes)
    if a == VOTE_WON and b == VOTE_WON:
        return VOTE_WON
    if VOTE_LOST in (a, b):
        return VOTE_LOST
    return VOTE_PENDING


# --------------------------------------------------------------- frame codec
def _entry_records(msg: Message) -> list[Buffer]:
    """The cached records of ``msg.entries``, checking that their indexes are contiguous (and
    follow ``msg.index`` for MSG_APP)."""
    records: list[Buffer] = []
    expect = msg.index + 1
    for i, entry in enumerate(msg.entries):
        if (i > 0 or msg.type == MSG_APP) and entry.index != expect:
            what = "previous entry" if i > 0 else "msg.index"
            raise InvalidArgument(f"entry {i} has index {entry.index}, expected {expect} after "
                                  f"the {what}: entries in a message must be contiguous")
        expect = entry.index + 1
        records.append(entry.record)
    return records


def _message_head(msg: Message, count: int, ebytes: int, clen: int, slen: int) -> bytes:
    flags = (_FLAG_REJECT if msg.reject else 0) | (
        _FLAG_SNAPSHOT if msg.snapshot is not None else 0)
    fields = (msg.src, msg.dst, msg.term, msg.log_term, msg.index, msg.commit, msg.reject_hint)
    for value in fields:
        if not 0 <= value <= _U64_MAX:
            raise OverflowError(f"message field value {value} is out of range 0..{_U64_MAX}")
    return _MESSAGE_HEAD.pack(msg.type, flags, 0, count, ebytes, clen, slen, *fields)


def encode_message(msg: Message) -> bytes:
    """The whole RAFT frame of ``msg`` (length prefix, kind byte, body). Entries are copied
    from their cached records, never re-encoded."""
    if not 1 <= msg.type <= _MSG_TYPE_MAX:
        raise InvalidArgument(f"unknown message type {msg.type}")
    records = _entry_records(msg)
    ebytes = sum(len(r) for r in records)
    context = memoryview(msg.context).cast("B")
    snapshot = memoryview(msg.snapshot).cast("B") if msg.snapshot is not None else b""
    body = 1 + MESSAGE_HEADER_SIZE + ebytes + len(context) + len(snapshot)
    if body > _U32_MAX:
        raise InvalidArgument(f"a frame of {body} bytes exceeds the 4 GiB frame limit")
    head = _message_head(msg, len(records), ebytes, len(context), len(snapshot))
    return b"".join((_U32.pack(body), bytes((FRAME_RAFT,)), head, *records, context, snapshot))


def encode_control(obj: Any) -> bytes:
    """The whole CONTROL frame of ``obj`` (msgpack, binary type for bytes)."""
    payload = msgpack.packb(obj, use_bin_type=True)
    if len(payload) + 1 > _U32_MAX:
        raise InvalidArgument(f"a control payload of {len(payload)} bytes exceeds the 4 GiB "
                              f"frame limit")
    return _U32.pack(len(payload) + 1) + bytes((FRAME_CONTROL,)) + payload


def _check_message_head(head: tuple[int, ...], n: int) -> None:
    mtype, flags, reserved, count, ebytes, clen, slen = head[:7]
    if not 1 <= mtype <= _MSG_TYPE_MAX:
        raise DecodeError(f"unknown message type {mtype} at offset 0", offset=0)
    if flags & ~(_FLAG_REJECT | _FLAG_SNAPSHOT):
        raise DecodeError(f"unknown flag bits 0x{flags:02x} at offset 1", offset=1)
    if reserved:
        raise DecodeError("reserved header bytes at offset 2 are not zero", offset=2)
    if slen and not flags & _FLAG_SNAPSHOT:
        raise DecodeError(f"snapshot length {slen} at offset 16 without the snapshot flag",
                          offset=16)
    if MESSAGE_HEADER_SIZE + ebytes + clen + slen != n:
        raise DecodeError(f"section lengths at offset 8 (entries {ebytes} + context {clen} + "
                          f"snapshot {slen} + header {MESSAGE_HEADER_SIZE}) do not match the "
                          f"body length {n}", offset=8)
    if count * RECORD_HEADER_SIZE > ebytes:
        raise DecodeError(f"{count} entries at offset 4 cannot fit in {ebytes} bytes",
                          offset=4)


def _decode_body(view: memoryview, start: int, n: int) -> Message:
    """The Message in the RAFT body ``view[start:start + n]``; errors name offsets relative
    to ``start``."""
    if n < MESSAGE_HEADER_SIZE:
        raise DecodeError(f"RAFT body of {n} bytes is shorter than the {MESSAGE_HEADER_SIZE}-"
                          f"byte message header", offset=n)
    head = _MESSAGE_HEAD.unpack_from(view, start)
    _check_message_head(head, n)
    mtype, flags, _, count, ebytes, clen, slen = head[:7]
    src, dst, term, log_term, index, commit, reject_hint = head[7:]
    pos = start + MESSAGE_HEADER_SIZE
    entries = _records_in(view, pos, pos + ebytes, count, start)
    if count and mtype == MSG_APP and entries[0]._index != index + 1:
        raise DecodeError(f"first entry has index {entries[0]._index} but the previous index "
                          f"is {index}", offset=MESSAGE_HEADER_SIZE + 8)
    pos += ebytes
    context = bytes(view[pos:pos + clen])
    snapshot = bytes(view[pos + clen:pos + clen + slen]) if flags & _FLAG_SNAPSHOT else None
    return Message(mtype, src, dst, term, log_term, index, commit, bool(flags & _FLAG_REJECT),
                   reject_hint, entries, context, snapshot)


def decode_message(body: Buffer) -> Message:
    """The Message in one RAFT frame body (the bytes after the kind byte). Strict: raises
    pgraft.errors.DecodeError naming the offset of what is wrong."""
    view = _readonly_view(body)
    return _decode_body(view, 0, len(view))


def _decode_control(body: memoryview) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DecodeError(f"bad msgpack in CONTROL body: {reason}", offset=0) from None


def _frame_error(frame_at: int, exc: DecodeError) -> DecodeError:
    offset = frame_at + FRAME_HEADER_SIZE + exc.details.get("offset", 0)
    return DecodeError(f"frame at stream offset {frame_at}: {exc.message}", offset=offset)


class FrameDecoder:
    """Streaming decoder of frames: ``feed(data)`` returns a list with a Message for every
    complete RAFT frame and the decoded object of every complete CONTROL frame, in order, and
    buffers a partial frame. ``close()`` raises if the stream ended inside a frame. Any error
    is a DecodeError (the decoder then refuses further data)."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME) -> None:
        if not 1 <= max_frame_size <= _U32_MAX:
            raise InvalidArgument(f"max_frame_size must be in 1..{_U32_MAX}, not "
                                  f"{max_frame_size}")
        self._max = max_frame_size
        self._buf = bytearray()
        self._offset = 0  # stream offset of the first byte of _buf
        self._error: DecodeError | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held until more data arrives."""
        return len(self._buf)

    @property
    def max_frame_size(self) -> int:
        """The cap on a frame's length field."""
        return self._max

    def _check_length(self, length: int, at: int) -> None:
        if length == 0:
            raise DecodeError(f"frame at stream offset {at}: length 0 (a frame holds at least "
                              f"its kind byte)", offset=at)
        if length > self._max:
            raise DecodeError(f"frame at stream offset {at}: length {length} exceeds the "
                              f"limit of {self._max} bytes", offset=at)

    def feed(self, data: Buffer) -> list[Any]:
        """Decode every frame completed by ``data``; returns them in order (may be empty)."""
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except DecodeError as exc:
            self._error = exc
            raise

    def _feed(self, data: Buffer) -> list[Any]:
        if not isinstance(data, bytes | bytearray):
            data = memoryview(data).cast("B")
        n = len(data)
        have = len(self._buf)
        if n == 0:
            return []
        if have == 0:
            return self._parse(data if isinstance(data, bytes) else bytes(data))
        if have + n < 4:
            self._buf += data
            return []
        head = bytes(self._buf[:4]) + bytes(data[:max(0, 4 - have)])
        length = _U32.unpack_from(head)[0]
        self._check_length(length, self._offset)
        self._buf += data
        if have + n < 4 + length:
            return []
        chunk = bytes(self._buf)
        self._buf.clear()
        return self._parse(chunk)

    def _parse(self, chunk: bytes) -> list[Any]:
        out: list[Any] = []
        view = memoryview(chunk)
        n = len(chunk)
        pos = 0
        while n - pos >= 4:
            length = _U32.unpack_from(chunk, pos)[0]
            self._check_length(length, self._offset + pos)
            if n - pos - 4 < length:
                break
            out.append(self._frame(view, pos, length))
            pos += 4 + length
        if pos < n:
            self._buf += view[pos:]
        self._offset += pos
        return out

    def _frame(self, view: memoryview, pos: int, length: int) -> Any:
        kind = view[pos + 4]
        try:
            if kind == FRAME_RAFT:
                return _decode_body(view, pos + FRAME_HEADER_SIZE, length - 1)
            if kind == FRAME_CONTROL:
                return _decode_control(view[pos + FRAME_HEADER_SIZE:pos + 4 + length])
        except DecodeError as exc:
            raise _frame_error(self._offset + pos, exc) from None
        at = self._offset + pos
        raise DecodeError(f"frame at stream offset {at}: unknown frame kind {kind} at offset "
                          f"{at + 4}", offset=at + 4)

    def close(self) -> None:
        """Declare the stream ended: raises DecodeError if it ended inside a frame."""
        if self._error is not None:
            raise self._error
        if self._buf:
            self._error = DecodeError(
                f"stream closed inside a frame: {len(self._buf)} bytes of an incomplete frame "
                f"at stream offset {self._offset}", offset=self._offset)
            raise self._error
