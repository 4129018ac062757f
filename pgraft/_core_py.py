"""Pure-Python twin of ``pgraft._core``: entries, messages, quorum and vote tally, CRC32C.

The compiled module (``_core.pyx``) must expose exactly this API; the same tests run on both.
The frame codec (encode/decode of messages) is added below the data types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .errors import DecodeError  # noqa: F401  (the codec raises it)

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
_MASK64 = (1 << 64) - 1


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


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``crc``."""
    table = _CRC_TABLE
    c = crc ^ 0xFFFFFFFF
    for b in bytes(data):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# ------------------------------------------------------------------- Entry
class Entry:
    """One log entry. ``record`` is its encoded form (header + payload, CRC computed once),
    the same bytes in a segment file and in an AppendEntries frame (DESIGN rule 4)."""

    __slots__ = ("index", "term", "type", "data", "_record")

    def __init__(self, index: int, term: int, type: int = ENTRY_NORMAL,
                 data: bytes | memoryview = b"") -> None:
        self.index = index
        self.term = term
        self.type = type
        self.data = data
        self._record: bytes | memoryview | None = None

    @property
    def record(self) -> bytes | memoryview:
        if self._record is None:
            self._record = encode_record(self.index, self.term, self.type, self.data)
        return self._record

    def __repr__(self) -> str:
        return f"Entry(index={self.index}, term={self.term}, type={self.type}, data={bytes(self.data)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return (self.index, self.term, self.type, bytes(self.data)) == (
            other.index, other.term, other.type, bytes(other.data))

    __hash__ = None  # type: ignore[assignment]


def encode_record(index: int, term: int, type: int, data: bytes | memoryview) -> bytes:
    """Encode one record: see pgraft/_record.h for the layout."""
    body = (len(data).to_bytes(4, "little") + (index & _MASK64).to_bytes(8, "little")
            + (term & _MASK64).to_bytes(8, "little") + bytes((type, 0, 0, 0)) + bytes(data))
    return crc32c(body).to_bytes(4, "little") + body


# ----------------------------------------------------------------- Message
class Message:
    """A Raft message between nodes. One flat shape for every type (like etcd's raftpb);
    fields a type does not use stay at their defaults and cost nothing on the wire beyond the
    fixed header.

    - ``src``/``dst``: node ids; ``term``: the sender's term.
    - MSG_APP: ``index``/``log_term`` = previous entry; ``entries``; ``commit``.
    - MSG_APP_RESP: ``index`` = match (accept) or the rejected index; ``reject``;
      ``reject_hint`` = conflict index hint, ``log_term`` = conflict term hint.
    - MSG_VOTE/MSG_PRE_VOTE: ``index``/``log_term`` = candidate's last entry;
      ``context`` = b"transfer" when campaigning after TimeoutNow.
    - MSG_HEARTBEAT(_RESP): ``commit``; ``context`` = ReadIndex round id, echoed back.
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
