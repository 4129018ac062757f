"""``propose_many``: many payloads appended by the leader in one step, in order, all or none.
Both builds run this file (test_other_implementation.py)."""

from __future__ import annotations

import pytest

from pgraft._impl import core
from pgraft.errors import NotLeaderError, Overloaded, PayloadTooLarge
from pgraft.raft import Config, MemoryStorage, RawNode
from tests.raft.test_commit_quorum import _leader_of, _persist


def test_the_payloads_become_consecutive_entries_of_the_term_and_commit_together() -> None:
    node, st = _leader_of(3)
    before = node.log.last_index()
    for f in (2, 3):  # the followers hold the leader's log: AppendEntries flow freely
        node.step(core.Message(core.MSG_APP_RESP, f, 1, node.term, index=before))
    rd = node.ready()
    _persist(st, rd)
    node.advance(rd)
    first, term = node.propose_many([b"a", b"b", b"c"])
    assert (first, term) == (before + 1, node.term)
    rd = node.ready()
    assert [(e.index, e.term, e.type, bytes(e.data)) for e in rd.entries] == [
        (first + i, term, core.ENTRY_NORMAL, p) for i, p in enumerate((b"a", b"b", b"c"))]
    # one AppendEntries per follower carries all three
    apps = [m for m in rd.messages if m.type == core.MSG_APP]
    assert sorted(m.dst for m in apps) == [2, 3] and all(len(m.entries) == 3 for m in apps)
    _persist(st, rd)
    node.advance(rd)
    node.step(core.Message(core.MSG_APP_RESP, 2, 1, node.term, index=first + 2))
    rd = node.ready()
    assert node.log.committed == first + 2
    assert [bytes(e.data) for e in rd.committed_entries][-3:] == [b"a", b"b", b"c"]


def test_all_or_none() -> None:
    st = MemoryStorage()
    RawNode.bootstrap(st, {1: ("127.0.0.1", 7001), 2: ("127.0.0.1", 7002),
                           3: ("127.0.0.1", 7003)})
    follower = RawNode(Config(1), st)
    with pytest.raises(NotLeaderError):
        follower.propose_many([b"x"])

    node, _ = _leader_of(3)
    last = node.log.last_index()
    too_big = b"x" * (Config(1).max_msg_bytes + 1)
    with pytest.raises(PayloadTooLarge):
        node.propose_many([b"ok", too_big])
    assert node.log.last_index() == last  # the fitting one was not appended either

    room = node.raft._max_uncommitted - (last - node.log.committed)
    with pytest.raises(Overloaded) as info:
        node.propose_many([b"y"] * (room + 1))
    assert f"{room + 1} entries" in info.value.message
    assert node.log.last_index() == last
    first, _ = node.propose_many([b"y"] * room)  # exactly the room left fits
    assert node.log.last_index() == first + room - 1 == last + room
