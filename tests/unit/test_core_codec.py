"""The frame codec of pgraft._core / _core_py: round trips, byte-identical twins, strictness."""

from __future__ import annotations

import random
import struct
import tracemalloc
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgraft import _core, _core_py
from pgraft.errors import DecodeError, InvalidArgument

U64 = (1 << 64) - 1
HEAD = struct.Struct("<BBHIIII7Q")
ALL_TYPES = list(range(1, 14))


def prop(examples: int) -> settings:
    """Hypothesis settings: the ``core`` fixture is a module, safe to share between inputs."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def other_twin(core: ModuleType) -> ModuleType:
    return _core_py if core is _core else _core


# ------------------------------------------------------------------ builders
def make_message(core: ModuleType, spec: dict[str, Any]) -> Any:
    """A Message of ``core`` from a plain description (so both twins build the same one)."""
    entries = [core.Entry(i, t, ty, d) for i, t, ty, d in spec["entries"]]
    return core.Message(spec["type"], spec["src"], spec["dst"], spec["term"], spec["log_term"],
                        spec["index"], spec["commit"], spec["reject"], spec["reject_hint"],
                        entries, spec["context"], spec["snapshot"])


u64 = st.one_of(st.integers(0, 1000), st.integers(0, U64))


@st.composite
def specs(draw: st.DrawFn, types: list[int] | None = None) -> dict[str, Any]:
    mtype = draw(st.sampled_from(types or ALL_TYPES))
    index = draw(st.integers(0, 1 << 40))
    n = draw(st.integers(0, 8)) if mtype == 1 else draw(st.sampled_from([0, 0, 0, 2]))
    first = index + 1 if mtype == 1 else draw(st.integers(0, 1 << 40))
    entries = [(first + k, draw(u64), draw(st.integers(0, 255)), draw(st.binary(max_size=90)))
               for k in range(n)]
    return {
        "type": mtype, "src": draw(u64), "dst": draw(u64), "term": draw(u64),
        "log_term": draw(u64), "index": index, "commit": draw(u64), "reject": draw(st.booleans()),
        "reject_hint": draw(u64), "entries": entries, "context": draw(st.binary(max_size=40)),
        "snapshot": draw(st.one_of(st.none(), st.binary(max_size=200))),
    }


def app(core: ModuleType, n: int = 3, size: int = 16, prev: int = 10) -> Any:
    entries = [core.Entry(prev + 1 + k, 4, k % 2, bytes([k]) * size) for k in range(n)]
    return core.Message(core.MSG_APP, 1, 2, 4, 3, prev, prev, entries=entries, context=b"ctx")


def body_of(frame: bytes) -> bytes:
    return frame[5:]


def frame_of(body: bytes, kind: int = 1) -> bytes:
    return struct.pack("<IB", len(body) + 1, kind) + body


def record(index: int, term: int = 1, data: bytes = b"abc", type_: int = 0) -> bytes:
    return _core_py.encode_record(index, term, type_, data)


def record_count(records: bytes) -> int:
    """How many records the length fields of ``records`` delimit (no other check)."""
    pos = count = 0
    while pos + 28 <= len(records):
        pos += 28 + struct.unpack_from("<I", records, pos + 4)[0]
        count += 1
    return count


def raw_body(mtype: int = 1, flags: int = 0, reserved: int = 0, records: bytes = b"",
             count: int | None = None, context: bytes = b"", snapshot: bytes = b"",
             index: int = 0, lengths: tuple[int, int, int] | None = None) -> bytes:
    """A RAFT body built by hand, to place exactly one defect."""
    if count is None:
        count = record_count(records)
    ebytes, clen, slen = lengths or (len(records), len(context), len(snapshot))
    head = HEAD.pack(mtype, flags, reserved, count, ebytes, clen, slen, 1, 2, 3, 0, index, 0, 0)
    return head + records + context + snapshot


# ---------------------------------------------------------------- round trips
@prop(120)
@given(spec=specs())
def test_round_trip_every_message_type(core: ModuleType, spec: dict[str, Any]) -> None:
    msg = make_message(core, spec)
    frame = core.encode_message(msg)
    assert struct.unpack_from("<IB", frame) == (len(frame) - 4, core.FRAME_RAFT)
    assert core.decode_message(body_of(frame)) == msg
    decoder = core.FrameDecoder()
    assert decoder.feed(frame) == [msg]
    assert decoder.pending_bytes == 0
    decoder.close()


@prop(80)
@given(spec=specs())
def test_twins_encode_identical_bytes(core: ModuleType, spec: dict[str, Any]) -> None:
    frame = core.encode_message(make_message(core, spec))
    twin = other_twin(core)
    assert frame == twin.encode_message(make_message(twin, spec))
    assert twin.decode_message(body_of(frame)) == make_message(twin, spec)


@pytest.mark.parametrize("size", [0, 1, 64, 4096, 70000])
def test_entries_of_various_sizes(core: ModuleType, size: int) -> None:
    msg = app(core, n=3, size=size)
    assert core.decode_message(body_of(core.encode_message(msg))) == msg


def test_snapshot_none_and_empty_differ(core: ModuleType) -> None:
    a = core.Message(core.MSG_SNAP, snapshot=None)
    b = core.Message(core.MSG_SNAP, snapshot=b"")
    assert core.decode_message(body_of(core.encode_message(a))).snapshot is None
    assert core.decode_message(body_of(core.encode_message(b))).snapshot == b""


def test_decoded_entries_are_the_received_record_bytes(core: ModuleType) -> None:
    msg = app(core, n=4, size=33)
    frame = core.encode_message(msg)
    body = body_of(frame)
    got = core.decode_message(body)
    for sent, received in zip(msg.entries, got.entries, strict=True):
        assert isinstance(received.record, memoryview)
        assert received.record.obj is body  # zero-copy slice of the received bytes
        assert bytes(received.record) == bytes(sent.record)
        assert received.record is received.record
    # a follower forwarding / a leader re-sending decoded entries copies the same bytes
    assert core.encode_message(got) == frame


def test_encoder_copies_cached_records(core: ModuleType) -> None:
    e = core.Entry(11, 4, 0, b"payload")
    rec = e.record
    msg = core.Message(core.MSG_APP, index=10, entries=[e])
    frame = core.encode_message(msg)
    assert e.record is rec
    assert frame[5 + core.MESSAGE_HEADER_SIZE:] == bytes(rec)


def test_encoder_accepts_memoryview_and_bytearray_fields(core: ModuleType) -> None:
    entries = core.decode_records(record(5) + record(6))
    msg = core.Message(core.MSG_APP, index=4, entries=entries, context=bytearray(b"c"),
                       snapshot=memoryview(b"snap"))
    got = core.decode_message(body_of(core.encode_message(msg)))
    assert got.entries == entries and got.context == b"c" and got.snapshot == b"snap"


def test_encode_control_round_trip(core: ModuleType) -> None:
    objs = [{"hello": "peer", "node_id": 3, "version": 1}, {"id": 1, "ok": True, "result": None},
            {"data": b"\x00\xff", "text": "é", 7: [1, 2.5, None]}, [], 0]
    frames = b"".join(core.encode_control(o) for o in objs)
    assert core.FrameDecoder().feed(frames) == objs
    assert core.encode_control(objs[2]) == other_twin(core).encode_control(objs[2])
    assert frames[4] == core.FRAME_CONTROL


def test_mixed_stream(core: ModuleType) -> None:
    msgs = [core.encode_control({"hello": "peer"}), core.encode_message(app(core)),
            core.encode_message(core.Message(core.MSG_HEARTBEAT, commit=3, context=b"r1"))]
    out = core.FrameDecoder().feed(b"".join(msgs))
    assert out == [{"hello": "peer"}, app(core),
                   core.Message(core.MSG_HEARTBEAT, commit=3, context=b"r1")]


# --------------------------------------------------------------- streaming
def stream(core: ModuleType) -> tuple[bytes, list[Any]]:
    items: list[Any] = [app(core, n=5, size=40), {"id": 1, "op": "status", "args": {}},
                        core.Message(core.MSG_VOTE, 1, 2, 7, 6, 40, context=b"transfer"),
                        app(core, n=1, size=0, prev=20), [b"x" * 300]]
    data = b"".join(core.encode_message(i) if isinstance(i, core.Message)
                    else core.encode_control(i) for i in items)
    return data, items


def test_feed_byte_by_byte(core: ModuleType) -> None:
    data, items = stream(core)
    decoder = core.FrameDecoder()
    out: list[Any] = []
    for i in range(len(data)):
        out += decoder.feed(data[i:i + 1])
    assert out == items
    assert decoder.pending_bytes == 0
    decoder.close()


@prop(60)
@given(cuts=st.lists(st.integers(0, 2000), max_size=12), as_type=st.sampled_from(
    [bytes, bytearray, memoryview]))
def test_feed_random_chunks(core: ModuleType, cuts: list[int], as_type: type) -> None:
    data, items = stream(core)
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    decoder = core.FrameDecoder()
    out: list[Any] = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        out += decoder.feed(as_type(data[a:b]))
        assert decoder.pending_bytes < 4 + 1 + 2000
    assert out == items
    decoder.close()


def test_every_truncated_prefix_yields_nothing(core: ModuleType) -> None:
    frame = core.encode_message(app(core, n=3, size=5))
    body = body_of(frame)
    for k in range(len(frame)):
        decoder = core.FrameDecoder()
        assert decoder.feed(frame[:k]) == []
        assert decoder.pending_bytes == k
        if k:
            with pytest.raises(DecodeError, match="stream closed inside a frame"):
                decoder.close()
        else:
            decoder.close()
    for k in range(len(body)):
        with pytest.raises(DecodeError):
            core.decode_message(body[:k])


def test_truncated_control_frame(core: ModuleType) -> None:
    frame = core.encode_control({"a": [1, 2, 3]})
    for k in range(1, len(frame)):
        decoder = core.FrameDecoder()
        assert decoder.feed(frame[:k]) == []
        with pytest.raises(DecodeError):
            decoder.close()


def outcome(mod: ModuleType, data: bytes) -> Any:
    """What a fresh decoder of ``mod`` makes of ``data``: frames re-encoded, or the error."""
    try:
        out = mod.FrameDecoder().feed(data)
    except DecodeError as exc:
        return ("error", exc.details.get("offset"))
    return [mod.encode_message(o) if isinstance(o, mod.Message) else o for o in out]


@prop(150)
@given(seed=st.integers(0, 1 << 30), flips=st.integers(1, 4))
def test_mutated_frames_never_crash(core: ModuleType, seed: int, flips: int) -> None:
    rnd = random.Random(seed)
    msg = app(core, n=rnd.randint(0, 4), size=rnd.randint(0, 20))
    frame = bytearray(core.encode_message(msg) if rnd.random() < 0.8
                      else core.encode_control({"k": [1, b"v"]}))
    for _ in range(flips):
        pos = rnd.randrange(len(frame))
        frame[pos] = rnd.randrange(256)
    result = outcome(core, bytes(frame))
    # both twins reach the same verdict, at the same offset
    assert result == outcome(other_twin(core), bytes(frame))


# ---------------------------------------------------------------- limits
def test_oversized_length_rejected_from_the_header_alone(core: ModuleType) -> None:
    decoder = core.FrameDecoder(max_frame_size=1 << 20)
    with pytest.raises(DecodeError, match="exceeds the limit") as info:
        decoder.feed(struct.pack("<I", (1 << 20) + 1))
    assert info.value.details["offset"] == 0
    with pytest.raises(DecodeError):  # the decoder stays failed
        decoder.feed(b"\x01")
    with pytest.raises(DecodeError, match="exceeds the limit"):
        core.FrameDecoder().feed(struct.pack("<I", 0xFFFFFFFF))


def test_oversized_length_split_over_feeds(core: ModuleType) -> None:
    decoder = core.FrameDecoder(max_frame_size=1000)
    good = core.encode_control("x")
    assert decoder.feed(good + b"\xe9") == ["x"]
    assert decoder.feed(b"\x03") == []
    with pytest.raises(DecodeError, match=f"stream offset {len(good)}: length 1001"):
        decoder.feed(b"\x00\x00" + b"\x01" * 50)


def test_zero_length_frame(core: ModuleType) -> None:
    with pytest.raises(DecodeError, match="length 0"):
        core.FrameDecoder().feed(b"\0\0\0\0")


def test_claimed_length_is_not_preallocated(core: ModuleType) -> None:
    decoder = core.FrameDecoder()
    tracemalloc.start()
    try:
        assert decoder.feed(struct.pack("<IB", 60 << 20, 1) + b"\0" * 100) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoder.pending_bytes == 105
    assert peak < 1 << 20


def test_huge_entry_count_is_checked_before_allocating(core: ModuleType) -> None:
    body = raw_body(count=0xFFFFFFFF, records=record(1))
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="cannot fit"):
            core.decode_message(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_max_frame_size_validation(core: ModuleType) -> None:
    for bad in (0, -1, 1 << 32):
        with pytest.raises(InvalidArgument):
            core.FrameDecoder(max_frame_size=bad)
    assert core.FrameDecoder().max_frame_size == core.DEFAULT_MAX_FRAME == 64 * 1024 * 1024


# ---------------------------------------------------------------- strictness
def test_valid_hand_built_body(core: ModuleType) -> None:
    msg = core.decode_message(raw_body(records=record(1) + record(2), index=0))
    assert [e.index for e in msg.entries] == [1, 2]


@pytest.mark.parametrize(("body", "pattern", "offset"), [
    (raw_body(mtype=0), "unknown message type 0", 0),
    (raw_body(mtype=14), "unknown message type 14", 0),
    (raw_body(flags=4), "unknown flag bits", 1),
    (raw_body(reserved=1), "reserved header bytes", 2),
    (raw_body(snapshot=b"s"), "without the snapshot flag", 16),
    (raw_body(context=b"abc", lengths=(0, 2, 0)), "do not match the body length", 8),
    (raw_body(lengths=(0, 0xFFFFFFFF, 0xFFFFFFFF), flags=2), "do not match", 8),
    (raw_body(records=record(1, data=b"x" * 30) + b"\0" * 10, count=2), "header truncated",
     76 + 58),
    (raw_body(records=record(1) + record(2)[:20], count=2), "cannot fit", 4),
    (raw_body(records=record(1) + record(2), count=1), "trailing bytes after 1 records",
     76 + 31),
    (raw_body(records=record(1) + b"\0" * 3, count=1), "trailing bytes", 76 + 31),
    (raw_body(records=record(1) + record(3)), "indexes must be contiguous", 76 + 31 + 8),
    (raw_body(records=record(2), index=0), "previous index is 0", 76 + 8),
    (raw_body(records=record(1)[:-1] + b"X"), "CRC mismatch", 76),
    (raw_body(records=record(1)[:25] + b"\1" + record(1)[26:], count=1), "reserved", 76 + 25),
    (raw_body(records=record(1)[:4] + b"\xff" + record(1)[5:], count=1), "payload length",
     76 + 4),
    (b"\x01" * 10, "shorter than the 76-byte message header", 10),
])
def test_malformed_bodies(core: ModuleType, body: bytes, pattern: str, offset: int) -> None:
    with pytest.raises(DecodeError, match=pattern) as info:
        core.decode_message(body)
    assert info.value.details["offset"] == offset
    # inside a stream the error names the frame and the absolute offset
    good = core.encode_control(1)
    with pytest.raises(DecodeError, match=f"frame at stream offset {len(good)}: ") as info:
        core.FrameDecoder().feed(good + frame_of(body))
    assert info.value.details["offset"] == len(good) + 5 + offset


def test_non_app_messages_may_carry_contiguous_entries(core: ModuleType) -> None:
    msg = core.decode_message(raw_body(mtype=core.MSG_READ_INDEX, records=record(7) + record(8)))
    assert [e.index for e in msg.entries] == [7, 8]


def test_unknown_frame_kind(core: ModuleType) -> None:
    with pytest.raises(DecodeError, match="unknown frame kind 3") as info:
        core.FrameDecoder().feed(frame_of(b"", kind=3))
    assert info.value.details["offset"] == 4


@pytest.mark.parametrize("payload", [b"\xc1", b"\x92\x01", b"\x01\x02", b"\xa3ab",
                                     b"\x81\x80\x01", b"\x91" * 100_000 + b"\x00"])
def test_bad_msgpack(core: ModuleType, payload: bytes) -> None:
    with pytest.raises(DecodeError, match="bad msgpack"):
        core.FrameDecoder().feed(frame_of(payload, kind=2))


def test_trailing_garbage_after_raft_body(core: ModuleType) -> None:
    frame = core.encode_message(core.Message(core.MSG_HEARTBEAT))
    body = body_of(frame) + b"\0"
    with pytest.raises(DecodeError, match="do not match the body length"):
        core.decode_message(body)
    with pytest.raises(DecodeError, match="do not match the body length"):
        core.FrameDecoder().feed(frame_of(body))


def test_decode_copies_mutable_input(core: ModuleType) -> None:
    body = bytearray(body_of(core.encode_message(app(core, n=1, size=4))))
    msg = core.decode_message(body)
    body[-1] ^= 0xFF
    body.extend(b"x")
    assert bytes(msg.entries[0].data) == bytes([0]) * 4


# ---------------------------------------------------------------- encoder checks
def test_encoder_rejects_unknown_type(core: ModuleType) -> None:
    for bad in (0, 14):
        with pytest.raises(InvalidArgument, match="unknown message type"):
            core.encode_message(core.Message(bad))


def test_encoder_rejects_non_contiguous_entries(core: ModuleType) -> None:
    entries = [core.Entry(5, 1), core.Entry(7, 1)]
    with pytest.raises(InvalidArgument, match="contiguous"):
        core.encode_message(core.Message(core.MSG_APP, index=4, entries=entries))
    with pytest.raises(InvalidArgument, match="msg.index"):
        core.encode_message(core.Message(core.MSG_APP, index=3, entries=[core.Entry(5, 1)]))
    with pytest.raises(InvalidArgument, match="contiguous"):
        core.encode_message(core.Message(core.MSG_VOTE, entries=entries))


def test_encoder_rejects_bad_field_values(core: ModuleType) -> None:
    with pytest.raises(OverflowError):
        core.encode_message(core.Message(core.MSG_HEARTBEAT, term=-1))
    with pytest.raises(TypeError):
        core.encode_message(core.Message(core.MSG_HEARTBEAT, context=None))
