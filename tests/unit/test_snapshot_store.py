"""The snapshot file format and store: round trip, CRCs, crash leftovers, the chunk codec."""

from __future__ import annotations

import os

import pytest

from pgraft.errors import StorageCorrupted
from pgraft.node.snapfile import HEADER_SIZE, SnapshotStore, read_snapshot_file
from pgraft.node.snapxfer import decode_ack, decode_chunk, encode_ack, encode_chunk
from pgraft.raft.membership import Member, Membership
from pgraft.raft.types import SnapshotMeta
from pgraft.state import AppliedState

MEMBERS = Membership({1: Member("127.0.0.1", 7001, "voter"), 2: Member("h2", 7002, "learner")},
                     removed={7, 9})


def _state(n: int) -> AppliedState:
    st = AppliedState()
    st.kv = {f"k{i}": "v" * (i % 50) for i in range(n)}
    st.set_membership(5, 1, Membership({1: Member("127.0.0.1", 7001, "voter"),
                                        2: Member("h2", 7002, "learner")}))
    st.mark_applied(100 + n, 3)
    return st


def test_round_trip_and_only_the_newest_is_kept(tmp_path: str) -> None:
    store = SnapshotStore(str(tmp_path))
    assert store.current is None and store.meta.index == 0
    a = store.write(SnapshotMeta(110, 3, MEMBERS), _state(10).snapshot())
    store.set_current(a)
    b = store.write(SnapshotMeta(300, 4, MEMBERS), _state(200).snapshot())
    store.set_current(b)
    assert sorted(os.listdir(store.dir)) == [os.path.basename(b.path)]
    again = SnapshotStore(str(tmp_path))
    assert again.meta == SnapshotMeta(300, 4, MEMBERS)
    assert again.meta.membership is not None and again.meta.membership.removed == {7, 9}
    restored = AppliedState()
    restored.restore(again.load_data())
    assert restored.kv == _state(200).kv and restored.applied_index == 300
    assert restored.members[2].role == "learner"


def test_crash_leftovers_are_cleaned(tmp_path: str) -> None:
    store = SnapshotStore(str(tmp_path))
    old = store.write(SnapshotMeta(110, 3, MEMBERS), _state(10).snapshot())
    store.set_current(old)
    new = store.write(SnapshotMeta(220, 3, MEMBERS), _state(20).snapshot())
    # a crash after the new file's rename, before the old one was unlinked; and a torn temp
    with open(os.path.join(store.dir, "x.snap.tmp"), "wb") as f:
        f.write(b"partial")
    again = SnapshotStore(str(tmp_path))
    assert again.meta.index == 220 and again.current is not None
    assert again.current.path == new.path
    assert sorted(os.listdir(store.dir)) == [os.path.basename(new.path)]


@pytest.mark.parametrize("where", ["header", "body", "truncated"])
def test_damage_is_reported_with_the_file(tmp_path: str, where: str) -> None:
    store = SnapshotStore(str(tmp_path))
    f = store.write(SnapshotMeta(110, 3, MEMBERS), _state(50).snapshot())
    store.set_current(f)
    with open(f.path, "r+b") as fh:
        if where == "header":
            fh.seek(20)
            fh.write(b"\xff")
        elif where == "body":
            fh.seek(f.size - 10)
            fh.write(b"\xff")
        else:
            fh.truncate(f.size - 1)
    with pytest.raises(StorageCorrupted) as err:
        again = SnapshotStore(str(tmp_path))
        again.load_data()
    assert f.path in err.value.message


def test_chunk_and_ack_codec(tmp_path: str) -> None:
    store = SnapshotStore(str(tmp_path))
    f = store.write(SnapshotMeta(110, 3, MEMBERS), _state(5).snapshot())
    raw = encode_chunk(f, 0, b"abc")
    key, off, data = decode_chunk(raw)
    assert key == (110, 3, f.size, f.body_crc) and off == 0 and bytes(data) == b"abc"
    with pytest.raises(ValueError):
        decode_chunk(raw[:10])
    with pytest.raises(ValueError):
        decode_chunk(encode_chunk(f, f.size - 1, b"too long"))
    assert decode_ack(encode_ack(110, 3, 1, 77)) == (110, 3, 1, 77)
    with pytest.raises(ValueError):
        decode_ack(b"PSAK")
    meta_file, _ = read_snapshot_file(f.path)
    assert meta_file.size == f.size and f.size > HEADER_SIZE
