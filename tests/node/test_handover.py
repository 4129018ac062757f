"""The leadership handover of a graceful stop (Node.hand_over_leadership): who is picked, and
the outcomes on an in-process cluster (handed over, follower, only voter, nobody reachable)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pgraft.node.node import pick_transferee
from pgraft.raft import FOLLOWER, LEADER, Membership, ProgressStatus, Status
from pgraft.raft.membership import LEARNER, VOTER, Member
from tests.support.inprocess import ELECTION_MS, Cluster, run, wait_for


def _status(progress: dict[int, tuple[int, bool, bool]], roles: dict[int, str] | None = None
            ) -> Status:
    """Node 1 leads; ``progress``: peer -> (match, recent_active, learner)."""
    ids = {1, *progress}
    roles = roles or {}
    members = {i: Member("127.0.0.1", 7000 + i, roles.get(i, VOTER)) for i in ids}
    prs = {i: ProgressStatus(m, m + 1, "replicate", active, learner)
           for i, (m, active, learner) in progress.items()}
    return Status(1, LEADER, 3, 1, 1, 10, 10, 1, 10, 0, Membership(members), prs)


def test_pick_the_most_up_to_date_recently_active_voter() -> None:
    assert pick_transferee(_status({2: (8, True, False), 3: (10, True, False)}), 1) == (3, 10)
    # not recently active: skipped, however far it got
    assert pick_transferee(_status({2: (8, True, False), 3: (10, False, False)}), 1) == (2, 8)
    # equal match: the lowest id
    assert pick_transferee(_status({3: (10, True, False), 2: (10, True, False)}), 1) == (2, 10)
    # learners never
    assert pick_transferee(_status({2: (8, True, False), 3: (10, True, True)},
                                   {3: LEARNER}), 1) == (2, 8)
    # a peer the leader still replicates to but that is no member any more (its removal not
    # committed yet) is no voter
    st = _status({2: (8, True, False)})
    st.progress[5] = ProgressStatus(10, 11, "replicate", True, False)
    assert pick_transferee(st, 1) == (2, 8)
    # not reachable (the peer link is down): skipped
    assert pick_transferee(_status({2: (8, True, False), 3: (10, True, False)}), 1,
                           lambda peer: peer != 3) == (2, 8)
    assert pick_transferee(_status({2: (8, True, False)}), 1, lambda peer: False) is None
    assert pick_transferee(_status({2: (8, False, False), 3: (10, False, False)}), 1) is None
    assert pick_transferee(_status({}), 1) is None


def test_a_leader_hands_over_and_a_follower_does_not(tmpdir_short: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "pgraft.node")

    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            index = await lead.propose_append(b"x")
            await c.wait_applied(index)
            follower = next(n for n in c.nodes.values() if n is not lead)
            assert await follower.hand_over_leadership() is None
            assert lead.is_leader
            loop = asyncio.get_running_loop()
            started = loop.time()
            new = await lead.hand_over_leadership()
            took = loop.time() - started
            assert new is not None and new != lead.node_id
            assert took < ELECTION_MS / 1000, took  # a transfer, not an election timeout
            assert lead.raw.role == FOLLOWER and lead.raw.leader_id == new
            assert c.nodes[new].is_leader
            assert (f"node {lead.node_id} is stopping: handing the leadership over to node "
                    f"{new} (match index") in caplog.text
            assert f"node {lead.node_id}: node {new} took over the leadership in" in caplog.text
            # writes go on at the new leader; the old one's entries are all there
            index2 = await c.nodes[new].propose_append(b"y")
            await c.wait_applied(index2)
        finally:
            await c.stop_all()

    run(scenario(), 60)


def test_the_only_voter_stops_at_once(tmpdir_short: str,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "pgraft.node")

    async def scenario() -> None:
        c = Cluster(tmpdir_short, 1)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            assert await lead.hand_over_leadership() is None
            assert lead.is_leader
            assert "node 1 is the only voter: stopping without a leadership handover" \
                in caplog.text
        finally:
            await c.stop_all()

    run(scenario(), 30)


def test_nobody_reachable_to_hand_over_to(tmpdir_short: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """The other voters are gone (their links down): the stop does not wait for them."""
    caplog.set_level(logging.INFO, "pgraft.node")

    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            index = await lead.propose_append(b"x")
            await c.wait_applied(index)
            for i in [i for i in c.nodes if i != lead.node_id]:
                await c.stop(i, crash=True)
            await wait_for(lambda: not any(lead.peers.peer_connected(i) for i in (1, 2, 3)),
                           5, "the links to the others to be down")
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await lead.hand_over_leadership() is None
            assert loop.time() - started < ELECTION_MS / 1000
            assert (f"node {lead.node_id}: no other voter is reachable (after "
                    in caplog.text), caplog.text
            assert "handing the leadership over" not in caplog.text
        finally:
            await c.stop_all()

    run(scenario(), 60)
