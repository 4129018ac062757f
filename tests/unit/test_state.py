"""The applied state: entry encoding and classification, apply results, the applied membership
(a raft Membership), and the snapshot round trip."""

from __future__ import annotations

import msgpack
import pytest

from pgraft.errors import StorageCorrupted
from pgraft.ha.records import HaState
from pgraft.raft.membership import EMPTY, LEARNER, VOTER, Member, Membership
from pgraft.state import (
    APPEND_PREFIX,
    SNAPSHOT_FORMAT,
    TAG_APPEND,
    TAG_KV,
    AppliedState,
    describe_entry_data,
    encode_append,
    encode_kv_delete,
    encode_kv_put,
)

MEMBERS = Membership({2: Member("h2", 7002, LEARNER), 1: Member("127.0.0.1", 7001, VOTER)},
                     removed={9})


def test_encoding_and_classification() -> None:
    assert encode_append(b"abc") == APPEND_PREFIX + b"abc"
    assert encode_append(b"abc")[0] == TAG_APPEND
    assert describe_entry_data(encode_append(b"abc")) == ("append", b"abc")
    assert describe_entry_data(memoryview(encode_append(b""))) == ("append", b"")
    put = encode_kv_put("k", "v")
    assert put[0] == TAG_KV and describe_entry_data(put)[0] == "kv"
    assert msgpack.unpackb(describe_entry_data(put)[1]) == ["put", "k", "v"]
    assert describe_entry_data(b"") == ("noop", b"")
    assert describe_entry_data(b"\x07xyz") == ("unknown", b"\x07xyz")


def test_apply_results() -> None:
    st = AppliedState()
    assert st.apply_normal(3, 1, encode_append(b"x")) == 3
    assert st.apply_normal(4, 1, encode_kv_put("k", "v")) is True
    assert st.apply_normal(5, 1, encode_kv_delete("k")) is True
    assert st.apply_normal(6, 2, encode_kv_delete("k")) is False
    assert st.apply_normal(7, 2, b"") is None
    assert st.apply_normal(8, 2, b"\x07other") is None  # someone else's format: a no-op
    assert (st.applied_index, st.applied_term, st.kv) == (8, 2, {})
    with pytest.raises(StorageCorrupted, match="entry 9"):
        st.apply_normal(9, 2, b"\x01not msgpack \xc1")


def test_applied_membership_is_the_raft_membership() -> None:
    st = AppliedState()
    assert st.members is EMPTY and st.member_list(0) == []
    st.set_membership(10, 3, MEMBERS)
    assert st.members is MEMBERS and st.members.removed == {9}
    assert (st.membership_index, st.applied_index, st.applied_term) == (10, 10, 3)
    assert st.member_list(1) == [
        {"node_id": 1, "address": "127.0.0.1", "port": 7001, "role": VOTER, "is_leader": True},
        {"node_id": 2, "address": "h2", "port": 7002, "role": LEARNER, "is_leader": False}]
    assert st.address_book() == {1: ("127.0.0.1", 7001), 2: ("h2", 7002)}


def test_snapshot_round_trip_and_format() -> None:
    st = AppliedState()
    st.set_membership(10, 3, MEMBERS)
    st.apply_normal(11, 3, encode_kv_put("a", "1"))
    data = st.snapshot()
    assert msgpack.unpackb(data, strict_map_key=False) == {
        "format": SNAPSHOT_FORMAT, "applied_index": 11, "applied_term": 3,
        "membership_index": 10, "members": [[1, "127.0.0.1", 7001, VOTER],
                                            [2, "h2", 7002, LEARNER]],
        "kv": {"a": "1"}, "ha": HaState().to_snapshot()}
    again = AppliedState()
    again.restore(data)
    assert (again.applied_index, again.applied_term, again.membership_index) == (11, 3, 10)
    assert again.kv == {"a": "1"}
    # the removed ids travel in the snapshot's metadata, not in the state data
    assert again.members == Membership(dict(MEMBERS.items()))
    with pytest.raises(StorageCorrupted):
        again.restore(b"\x00garbage")
    # A format 1 snapshot (before the HA state) is still read, with an empty HA state.
    old = msgpack.unpackb(data, strict_map_key=False)
    del old["ha"]
    old["format"] = 1
    again.restore(msgpack.packb(old))
    assert again.kv == {"a": "1"} and again.ha == HaState()
