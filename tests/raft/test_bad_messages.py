"""What no correct peer or caller gives the Raft core is refused before anything changes.

The wire carries 64-bit fields; the core's node ids, terms and indexes are 63-bit (typed so
when compiled), and an AppendEntries never carries an entry of a later term than its sender's.
The node logs such a refusal and goes on (pgraft.node.node.Node.receive_messages).
"""

from __future__ import annotations

import pytest

from pgraft._impl import core
from pgraft.errors import InvalidArgument
from pgraft.raft import Config, MemoryStorage, RawNode, SnapshotMeta

TOO_BIG = 1 << 63


def _three_nodes() -> MemoryStorage:
    """The storage of node 1 of a freshly bootstrapped 3-node cluster."""
    st = MemoryStorage()
    RawNode.bootstrap(st, {1: ("127.0.0.1", 7001), 2: ("127.0.0.1", 7002),
                           3: ("127.0.0.1", 7003)})
    return st


def _follower() -> RawNode:
    return RawNode(Config(1), _three_nodes())


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


def _leader() -> RawNode:
    st = _three_nodes()
    node = RawNode(Config(1), st)
    node.campaign()
    for _ in range(3):
        rd = node.ready()
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        node.advance(rd)
        for f in (2, 3):
            node.step(core.Message(core.MSG_PRE_VOTE_RESP, f, 1, node.term + 1))
            node.step(core.Message(core.MSG_VOTE_RESP, f, 1, node.term))
    assert node.role == "leader"
    return node


def test_an_acknowledgement_beyond_the_leaders_log_is_refused() -> None:
    node = _leader()
    last, commit = node.log.last_index(), node.log.committed
    with pytest.raises(InvalidArgument, match=f"beyond this leader's last index {last}"):
        node.step(core.Message(core.MSG_APP_RESP, 2, 1, node.term, index=last + 5))
    assert node.status().progress[2].match == 0
    assert (node.log.last_index(), node.log.committed) == (last, commit)
    node.step(core.Message(core.MSG_APP_RESP, 2, 1, node.term, index=last))  # the real one
    assert node.status().progress[2].match == last


def test_a_snapshot_whose_metadata_disagrees_with_its_header_is_refused() -> None:
    node = _follower()
    before = _state(node)
    meta = SnapshotMeta(5, 2, node.membership)
    with pytest.raises(InvalidArgument, match="its metadata index 5 term 2"):
        node.step(core.Message(core.MSG_SNAP, 2, 1, 2, 2, 6, 5, snapshot=meta.encode()))
    assert _state(node) == before
    assert node.log.committed == 1


@pytest.mark.parametrize(("field", "value"), [("max_inflight", 2.5), ("max_msg_bytes", 1 << 63),
                                              ("max_apply_bytes", -1), ("election_ticks", "10"),
                                              ("applied", None)])
def test_a_config_value_the_core_cannot_hold_is_refused(field: str, value: object) -> None:
    st = MemoryStorage()
    RawNode.bootstrap(st, {1: ("127.0.0.1", 7001)})
    with pytest.raises(InvalidArgument, match=f"Config.{field} must be an integer"):
        RawNode(Config(1, **{field: value}), st)  # type: ignore[arg-type]


def test_none_is_refused_where_a_message_or_a_ready_belongs() -> None:
    node = _follower()
    with pytest.raises(TypeError, match="takes a Message"):
        node.step(None)
    with pytest.raises(TypeError, match="takes the Ready"):
        node.advance(None)  # type: ignore[arg-type]
