"""A leader commits an entry exactly when a majority of the voters holds it, at any size.

The compiled core counts the quorum in C (``pgraft._core.quorum_index``) with a fast path for
up to 16 voters and the generic count above; the interpreted core calls ``committed_index``.
Both builds run this file (test_other_implementation.py)."""

from __future__ import annotations

import pytest

from pgraft._impl import core
from pgraft.raft import Config, MemoryStorage, RawNode
from pgraft.raft.types import Ready


def _persist(st: MemoryStorage, rd: Ready) -> None:
    st.append(rd.entries)
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)


def _leader_of(voters: int) -> tuple[RawNode, MemoryStorage]:
    st = MemoryStorage()
    RawNode.bootstrap(st, {i: ("127.0.0.1", 7000 + i) for i in range(1, voters + 1)})
    node = RawNode(Config(1), st)
    node.campaign()
    for _ in range(3):
        rd = node.ready()
        _persist(st, rd)
        node.advance(rd)
        for f in range(2, voters + 1):
            node.step(core.Message(core.MSG_PRE_VOTE_RESP, f, 1, node.term + 1))
            node.step(core.Message(core.MSG_VOTE_RESP, f, 1, node.term))
    assert node.role == "leader"
    rd = node.ready()
    _persist(st, rd)
    node.advance(rd)
    return node, st


@pytest.mark.parametrize("voters", [1, 2, 3, 5, 16, 17, 20])
def test_the_commit_follows_the_majority_of_acknowledgements(voters: int) -> None:
    node, st = _leader_of(voters)
    # the leader's empty entry of its term: acknowledged by every follower
    first = node.log.last_index()
    for f in range(2, voters + 1):
        node.step(core.Message(core.MSG_APP_RESP, f, 1, node.term, index=first))
    rd = node.ready()
    _persist(st, rd)
    node.advance(rd)
    assert node.log.committed == first
    index, _ = node.propose(b"x")
    rd = node.ready()
    _persist(st, rd)  # the leader's own copy is durable: one of the majority
    node.advance(rd)
    majority = voters // 2 + 1
    assert node.log.committed == (index if majority == 1 else first)
    for acked, f in enumerate(range(2, voters + 1), start=2):
        node.step(core.Message(core.MSG_APP_RESP, f, 1, node.term, index=index))
        node.advance(node.ready())
        assert node.log.committed == (index if acked >= majority else first), (voters, acked)
