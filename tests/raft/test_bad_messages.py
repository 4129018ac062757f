"""A message no correct peer sends is refused with InvalidArgument before anything changes.

The wire carries 64-bit fields; the core's node ids, terms and indexes are 63-bit (typed so
when compiled), and an AppendEntries never carries an entry of a later term than its sender's.
The node logs such a refusal and goes on (pgraft.node.node.Node.receive_messages).
"""

from __future__ import annotations

import pytest

from pgraft._impl import core
from pgraft.errors import InvalidArgument
from pgraft.raft import Config, MemoryStorage, RawNode

TOO_BIG = 1 << 63


def _follower() -> RawNode:
    st = MemoryStorage()
    RawNode.bootstrap(st, {1: ("127.0.0.1", 7001), 2: ("127.0.0.1", 7002),
                           3: ("127.0.0.1", 7003)})
    return RawNode(Config(1), st)


def _append(term: int, prev: int, entry_terms: list[int], log_term: int = 1) -> object:
    """An AppendEntries from node 2 of entries after ``prev`` with these terms."""
    entries = [core.Entry(prev + 1 + i, t, core.ENTRY_NORMAL, b"x")
               for i, t in enumerate(entry_terms)]
    return core.Message(core.MSG_APP, 2, 1, term, log_term, prev, 1, entries=entries)


def _state(node: RawNode) -> tuple[int, int, int, int, str]:
    return node.term, node.vote, node.leader_id, node.log.last_index(), node.role


def test_a_good_append_is_taken() -> None:
    node = _follower()
    node.step(_append(2, 1, [2, 2]))
    assert _state(node) == (2, 0, 2, 3, "follower")


@pytest.mark.parametrize("field", ["term", "log_term", "index", "commit", "reject_hint"])
def test_a_field_beyond_63_bits_is_refused(field: str) -> None:
    node = _follower()
    before = _state(node)
    m = core.Message(core.MSG_HEARTBEAT, 2, 1, 2)
    setattr(m, field, TOO_BIG)
    with pytest.raises(InvalidArgument, match="beyond 2\\*\\*63 - 1"):
        node.step(m)
    assert _state(node) == before
    assert not node.has_ready() or not node.ready().messages


def test_a_sender_id_beyond_63_bits_is_refused() -> None:
    node = _follower()
    before = _state(node)
    with pytest.raises(InvalidArgument, match="node id, term or index"):
        node.step(core.Message(core.MSG_HEARTBEAT, TOO_BIG, 1, 2))
    assert _state(node) == before


def test_an_entry_index_beyond_63_bits_is_refused() -> None:
    node = _follower()
    before = _state(node)
    with pytest.raises(InvalidArgument, match="entry index"):
        node.step(_append(2, TOO_BIG - 1, [2], log_term=1))
    assert _state(node) == before


def test_an_entry_of_a_later_term_than_its_message_is_refused() -> None:
    node = _follower()
    before = _state(node)
    with pytest.raises(InvalidArgument, match="carries entry 3 of term 3"):
        node.step(_append(2, 1, [2, 3]))
    assert _state(node) == before
    assert node.log.last_index() == 1
