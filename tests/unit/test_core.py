"""pgraft._core / _core_py: CRC32C, Entry, Message, quorum commit index and vote tally."""

from __future__ import annotations

import pickle
import struct
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgraft import _core, _core_py
from pgraft.errors import DecodeError, InvalidArgument

U64 = (1 << 64) - 1


def prop(examples: int) -> settings:
    """Hypothesis settings: the ``core`` fixture is a module, safe to share between inputs."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def other_twin(core: ModuleType) -> ModuleType:
    return _core_py if core is _core else _core


# ------------------------------------------------------------------- CRC32C
@pytest.mark.parametrize(("data", "expected"), [
    (b"", 0),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),  # RFC 3720 B.4
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
])
def test_crc32c_known_vectors(core: ModuleType, data: bytes, expected: int) -> None:
    assert core.crc32c(data) == expected
    assert core.crc32c(bytearray(data)) == expected
    assert core.crc32c(memoryview(data)) == expected


def test_crc32c_continuation(core: ModuleType) -> None:
    assert core.crc32c(b"56789", core.crc32c(b"1234")) == 0xE3069283
    assert core.crc32c(b"", 0x12345678) == 0x12345678


def test_crc32c_large_buffer(core: ModuleType) -> None:
    data = bytes(range(256)) * 300  # over the compiled module's nogil threshold
    assert core.crc32c(data) == core.crc32c(data[1000:], core.crc32c(data[:1000]))


def test_crc32c_rejects_non_buffers(core: ModuleType) -> None:
    with pytest.raises(TypeError):
        core.crc32c("text")


@prop(60)
@given(data=st.binary(max_size=300), seed=st.integers(0, 0xFFFFFFFF))
def test_crc32c_twins_agree(core: ModuleType, data: bytes, seed: int) -> None:
    assert core.crc32c(data, seed) == other_twin(core).crc32c(data, seed)


# -------------------------------------------------------------------- Entry
def test_entry_fields_and_record_layout(core: ModuleType) -> None:
    e = core.Entry(7, 3, core.ENTRY_CONF_CHANGE, b"payload")
    assert (e.index, e.term, e.type, bytes(e.data)) == (7, 3, 1, b"payload")
    rec = bytes(e.record)
    crc, length, index, term, type_ = struct.unpack_from("<IIQQB", rec)
    assert (length, index, term, type_) == (7, 7, 3, 1)
    assert rec[25:28] == b"\0\0\0" and rec[28:] == b"payload"
    assert crc == core.crc32c(rec[4:])
    assert len(rec) == core.RECORD_HEADER_SIZE + 7


def test_entry_defaults(core: ModuleType) -> None:
    e = core.Entry(1, 1)
    assert e.type == core.ENTRY_NORMAL and bytes(e.data) == b""
    assert len(e.record) == core.RECORD_HEADER_SIZE


@pytest.mark.parametrize("data", [b"", b"\x07", b"\x01payload", bytes(range(256)) * 3])
def test_entry_size_and_tag_without_the_payload(core: ModuleType, data: bytes) -> None:
    """``size`` is the record's length and ``tag`` the payload's first byte (-1 if empty),
    alike for a new entry and a decoded one; reading them on a decoded entry leaves its
    payload unsliced (batches are measured, and commands told apart, per entry)."""
    made = core.Entry(4, 2, 0, data)
    decoded = core.decode_records(bytes(made.record))[0]
    for e in (made, decoded):
        assert e.size == core.RECORD_HEADER_SIZE + len(data) == len(e.record)
        assert e.tag == (data[0] if data else -1)
    fresh = core.decode_records(bytes(made.record))[0]
    assert (fresh.size, fresh.tag) == (made.size, made.tag)
    if core is _core_py:
        assert fresh._data is None  # still unsliced
    plain = core.Entry(1, 1, 0, b"abc")
    assert plain.size == core.RECORD_HEADER_SIZE + 3 and plain.cached_record is None  # not encoded


def test_tagged_run_counts_entries_of_one_type_and_tag(core: ModuleType) -> None:
    made = [core.Entry(1, 1, 0, b"\x01a"), core.Entry(2, 1, 0, b"\x01"),
            core.Entry(3, 1, 0, b"\x02kv"), core.Entry(4, 1, 0, b"\x01b"),
            core.Entry(5, 1, core.ENTRY_CONF_CHANGE, b"\x01"), core.Entry(6, 1, 0, b""),
            core.Entry(7, 1, 0, b"\x01c"), core.Entry(8, 1, 0, b"\x01d")]
    decoded = core.decode_records(b"".join(bytes(e.record) for e in made))
    for ents in (made, decoded):
        runs = [core.tagged_run(ents, i, 0, 1) for i in range(len(ents) + 2)]
        # a different tag, a configuration entry and an empty payload each end a run
        assert runs == [2, 1, 0, 1, 0, 0, 2, 1, 0, 0]
        assert core.tagged_run(ents, 5, 0, -1) == 1  # the empty payload's "tag"
        assert core.tagged_run(ents, 4, core.ENTRY_CONF_CHANGE, 1) == 1
        with pytest.raises(InvalidArgument):
            core.tagged_run(ents, -1, 0, 1)
    assert core.tagged_run([], 0, 0, 1) == 0


def test_entry_record_is_computed_once(core: ModuleType) -> None:
    e = core.Entry(1, 1, 0, b"x")
    assert e.record is e.record


@pytest.mark.parametrize(("field", "value"), [
    ("index", 9), ("term", 8), ("type", 1), ("data", b"changed"),
])
def test_entry_setting_a_field_drops_the_cached_record(core: ModuleType, field: str,
                                                       value: object) -> None:
    e = core.Entry(1, 1, 0, b"x")
    before = e.record
    setattr(e, field, value)
    assert e.record != before
    again = core.Entry(e.index, e.term, e.type, e.data)
    assert bytes(e.record) == bytes(again.record)


def test_entry_equality_and_hash(core: ModuleType) -> None:
    a = core.Entry(1, 2, 0, b"x")
    assert a == core.Entry(1, 2, 0, bytearray(b"x"))
    assert a == core.Entry(1, 2, 0, memoryview(b"x"))
    assert a != core.Entry(1, 2, 0, b"y")
    assert a != core.Entry(2, 2, 0, b"x")
    assert a != core.Entry(1, 3, 0, b"x")
    assert a != core.Entry(1, 2, 1, b"x")
    assert a != "not an entry"
    with pytest.raises(TypeError):
        hash(a)


def test_entry_pickles(core: ModuleType) -> None:
    e = core.Entry(5, 4, 1, b"abc")
    assert pickle.loads(pickle.dumps(e)) == e


def test_entry_rejects_none_data(core: ModuleType) -> None:
    with pytest.raises(TypeError):
        core.Entry(1, 1, 0, None)
    e = core.Entry(1, 1)
    with pytest.raises(TypeError):
        e.data = None


@pytest.mark.parametrize(("index", "term", "type_"), [(-1, 1, 0), (1 << 64, 1, 0),
                                                      (1, -1, 0), (1, 1, 256), (1, 1, -1)])
def test_entry_out_of_range_fields(core: ModuleType, index: int, term: int, type_: int) -> None:
    with pytest.raises(OverflowError):
        core.Entry(index, term, type_, b"").record  # noqa: B018
    with pytest.raises(OverflowError):
        core.encode_record(index, term, type_, b"")


def test_entry_extreme_fields_round_trip(core: ModuleType) -> None:
    e = core.Entry(U64, U64, 255, b"z")
    assert core.Entry.from_record(e.record) == e


@prop(60)
@given(index=st.integers(0, U64), term=st.integers(0, U64), type_=st.integers(0, 255),
       data=st.binary(max_size=200))
def test_encode_record_twins_agree(core: ModuleType, index: int, term: int, type_: int,
                                   data: bytes) -> None:
    rec = core.encode_record(index, term, type_, data)
    assert rec == other_twin(core).encode_record(index, term, type_, data)
    assert bytes(core.Entry(index, term, type_, data).record) == rec
    back = core.Entry.from_record(rec)
    assert (back.index, back.term, back.type, bytes(back.data)) == (index, term, type_, data)


def test_from_record_is_zero_copy_for_immutable_buffers(core: ModuleType) -> None:
    rec = core.Entry(3, 2, 0, b"hello").record
    e = core.Entry.from_record(rec)
    assert isinstance(e.record, memoryview) and e.record.obj is rec
    assert isinstance(e.data, memoryview) and e.data.obj is rec
    assert bytes(e.data) == b"hello" and e.record is e.record


def test_from_record_is_zero_copy_for_memoryviews(core: ModuleType) -> None:
    # a log reads records through a memoryview of its (writable) segment mmap
    buf = bytearray(b"pad" + bytes(core.Entry(3, 2, 0, b"hello").record))
    view = memoryview(buf)
    e = core.Entry.from_record(view[3:])
    assert e.record.readonly and e.record.obj is buf
    assert bytes(e.data) == b"hello"
    entries = core.decode_records(view[3:])
    assert entries == [e] and entries[0].record.obj is buf


def test_cached_record(core: ModuleType) -> None:
    e = core.Entry(1, 1, 0, b"x")
    assert e.cached_record is None
    rec = e.record
    assert e.cached_record is rec
    e.term = 2
    assert e.cached_record is None
    assert core.Entry.from_record(rec).cached_record is not None


def test_from_record_copies_mutable_buffers(core: ModuleType) -> None:
    buf = bytearray(core.Entry(3, 2, 0, b"hello").record)
    e = core.Entry.from_record(buf)
    buf[-1] = ord("X")
    buf.extend(b"more")  # no buffer export pins the bytearray
    assert bytes(e.data) == b"hello"


def test_from_record_rejects_bad_records(core: ModuleType) -> None:
    rec = bytes(core.Entry(3, 2, 0, b"hello").record)
    with pytest.raises(DecodeError, match="header truncated"):
        core.Entry.from_record(rec[:20])
    with pytest.raises(DecodeError, match="payload length 5 exceeds"):
        core.Entry.from_record(rec[:-1])
    with pytest.raises(DecodeError, match="CRC mismatch"):
        core.Entry.from_record(rec[:-1] + b"X")
    with pytest.raises(DecodeError, match="reserved"):
        core.Entry.from_record(rec[:26] + b"\1" + rec[27:])
    with pytest.raises(DecodeError, match="trailing") as info:
        core.Entry.from_record(rec + b"\0")
    assert info.value.details["offset"] == len(rec)


def test_decode_records(core: ModuleType) -> None:
    entries = [core.Entry(i, 1, i % 2, bytes([i]) * i) for i in range(10, 15)]
    buf = b"".join(bytes(e.record) for e in entries)
    assert core.decode_records(buf) == entries
    assert core.decode_records(b"") == []
    with pytest.raises(DecodeError, match="contiguous"):
        core.decode_records(bytes(entries[0].record) + bytes(entries[2].record))
    with pytest.raises(DecodeError, match="truncated"):
        core.decode_records(buf + b"\0" * 5)


# ------------------------------------------------------------------ Message
def test_message_defaults_and_equality(core: ModuleType) -> None:
    m = core.Message(core.MSG_HEARTBEAT)
    assert (m.src, m.dst, m.term, m.log_term, m.index, m.commit) == (0,) * 6
    assert (m.reject, m.reject_hint, m.entries, m.context, m.snapshot) == (
        False, 0, [], b"", None)
    assert m == core.Message(core.MSG_HEARTBEAT)
    assert m != core.Message(core.MSG_HEARTBEAT, commit=1)
    assert m != core.Message(core.MSG_HEARTBEAT, snapshot=b"")
    e = [core.Entry(1, 1, 0, b"a")]
    assert core.Message(core.MSG_APP, entries=e) == core.Message(core.MSG_APP, entries=list(e))
    assert "MSG" not in repr(m) and "type=7" in repr(m)
    with pytest.raises(TypeError):
        hash(m)


def test_message_fields_are_writable(core: ModuleType) -> None:
    m = core.Message(core.MSG_APP)
    m.term, m.index, m.reject, m.context = 5, 9, True, b"c"
    m.entries.append(core.Entry(10, 5))
    assert (m.term, m.index, m.reject, m.context, len(m.entries)) == (5, 9, True, b"c", 1)


def test_message_pickles(core: ModuleType) -> None:
    m = core.Message(core.MSG_APP, 1, 2, 3, 2, 4, 4, entries=[core.Entry(5, 3, 0, b"x")],
                     context=b"c", snapshot=b"s")
    assert pickle.loads(pickle.dumps(m)) == m


# ------------------------------------------------------------------- quorum
def naive_majority(values: list[int]) -> int:
    """Largest x that more than half of ``values`` have reached (count-based model)."""
    if not values:
        return 0
    return max(x for x in values if sum(v >= x for v in values) > len(values) // 2)


def naive_committed(voters: set[int], match: dict[int, int], outgoing: set[int]) -> int:
    incoming = naive_majority([match.get(v, 0) for v in voters])
    if not outgoing:
        return incoming
    return min(incoming, naive_majority([match.get(v, 0) for v in outgoing]))


ids = st.integers(1, 40)
voter_sets = st.sets(ids, max_size=20)


@prop(150)
@given(voters=voter_sets, outgoing=voter_sets, learners=voter_sets,
       match=st.dictionaries(ids, st.integers(0, U64), max_size=40))
def test_committed_index_matches_model(core: ModuleType, voters: set[int], outgoing: set[int],
                                       learners: set[int], match: dict[int, int]) -> None:
    learners = learners - voters - outgoing
    # learners replicate far ahead: they must never move the commit index
    full = {**match, **{lr: U64 for lr in learners}}
    expected = naive_committed(voters, match, outgoing)
    assert core.committed_index(voters, full, outgoing) == expected
    assert core.committed_index(sorted(voters), full, tuple(outgoing)) == expected
    assert core.committed_index(frozenset(voters), full, list(outgoing)) == expected
    assert core.committed_index(iter(sorted(voters)), full, iter(outgoing)) == expected
    values = [match.get(v, 0) for v in voters]
    assert core.majority_index(values) == naive_majority(values)


def test_committed_index_examples(core: ModuleType) -> None:
    match = {1: 10, 2: 8, 3: 5, 4: 100, 5: 0}
    assert core.committed_index({1, 2, 3}, match) == 8
    assert core.committed_index({1, 2, 3, 4}, match) == 8
    assert core.committed_index({1, 2, 3, 4, 5}, match) == 8
    assert core.committed_index({1}, match) == 10
    assert core.committed_index(set(), match) == 0
    assert core.committed_index({1, 2, 3}, match, {3, 5}) == 0
    assert core.committed_index({1, 2, 3}, match, {1, 4}) == 8
    assert core.committed_index({1, 2, 3}, {}, ()) == 0
    assert core.committed_index({1, 2, 3}, match, set()) == 8
    assert core.committed_index(match.keys(), match) == 8


def test_committed_index_large_and_odd_values(core: ModuleType) -> None:
    voters = set(range(1, 30))
    match = {v: v * 10 for v in voters}
    assert core.committed_index(voters, match) == naive_majority(list(match.values()))
    # values outside u64 or not plain ints take the generic path with the same answer
    odd = {1: -5, 2: 1 << 70, 3: 7}
    assert core.committed_index({1, 2, 3}, odd) == 7
    assert core.majority_index([True, 3, 2]) == 2


class MatchMap:
    """A Mapping that is not a dict."""

    def __init__(self, d: dict[int, int]) -> None:
        self.d = d

    def get(self, key: int, default: int | None = None) -> int | None:
        return self.d.get(key, default)


def test_committed_index_any_mapping(core: ModuleType) -> None:
    assert core.committed_index([1, 2, 3], MatchMap({1: 4, 2: 4, 3: 1})) == 4
    assert core.vote_result([1, 2, 3], MatchMap({1: True, 2: True})) == core.VOTE_WON


def naive_tally(voters: set[int], votes: dict[int, bool]) -> int:
    if not voters:
        return _core_py.VOTE_WON
    yes = sum(1 for v in voters if votes.get(v) is True)
    no = sum(1 for v in voters if votes.get(v) is False)
    if 2 * yes > len(voters):
        return _core_py.VOTE_WON
    if 2 * no >= len(voters) + (len(voters) % 2):  # a majority is out of reach
        return _core_py.VOTE_LOST
    return _core_py.VOTE_PENDING


@prop(150)
@given(voters=voter_sets, outgoing=voter_sets,
       votes=st.dictionaries(ids, st.booleans(), max_size=40))
def test_vote_result_matches_model(core: ModuleType, voters: set[int], outgoing: set[int],
                                   votes: dict[int, bool]) -> None:
    a = naive_tally(voters, votes)
    if outgoing:
        b = naive_tally(outgoing, votes)
        if core.VOTE_LOST in (a, b):
            expected = core.VOTE_LOST
        elif a == b == core.VOTE_WON:
            expected = core.VOTE_WON
        else:
            expected = core.VOTE_PENDING
    else:
        expected = a
    assert core.vote_result(voters, votes, outgoing) == expected
    assert core.vote_result(iter(sorted(voters)), votes, iter(outgoing)) == expected


def test_vote_result_examples(core: ModuleType) -> None:
    assert core.vote_result({1, 2, 3}, {1: True}) == core.VOTE_PENDING
    assert core.vote_result({1, 2, 3}, {1: True, 2: True}) == core.VOTE_WON
    assert core.vote_result({1, 2, 3}, {1: True, 2: False, 3: False}) == core.VOTE_LOST
    assert core.vote_result({1, 2, 3, 4}, {1: False, 2: False}) == core.VOTE_LOST
    assert core.vote_result({1, 2, 3, 4}, {1: True, 2: True}) == core.VOTE_PENDING
    assert core.vote_result({1}, {2: True}) == core.VOTE_PENDING
    assert core.vote_result(set(), {}) == core.VOTE_WON
    # a learner's vote (not in the set) never counts
    assert core.vote_result({1, 2, 3}, {1: True, 9: True}) == core.VOTE_PENDING
    # non-bool values are neither a grant nor a rejection
    assert core.vote_result({1, 2, 3}, {1: 1, 2: 1}) == core.VOTE_PENDING
    joint = ({1, 2, 3}, {1: True, 2: True, 4: False, 5: False}, {3, 4, 5})
    assert core.vote_result(*joint) == core.VOTE_LOST
    assert core.vote_result({1, 2, 3}, {1: True, 2: True, 4: True}, {3, 4, 5}) == (
        core.VOTE_PENDING)
    assert core.vote_result({1, 2, 3}, {1: True, 2: True, 4: True, 5: True}, {3, 4, 5}) == (
        core.VOTE_WON)
