"""Peers dials back: a node waiting to be added dials every peer that dials it at once (its
first reply, to the leader's probe, needs that link); a member only re-kicks known links."""

from __future__ import annotations

import asyncio

from pgraft.node.metrics import Metrics
from pgraft.node.peers import Peers


async def _dial_back(membership: dict[int, tuple[str, int]]) -> set[int]:
    peers = Peers(7, Metrics(), connect_timeout=0.2, backoff_base=0.5)
    if membership:
        peers.set_peers(membership)
    try:
        # port 9 on loopback: nothing listens, the links just keep retrying
        peers.announced(1, "127.0.0.1", 9)
        peers.dialled_by(1)
        return set(peers.links)
    finally:
        await peers.close()


def test_a_node_without_members_dials_back_whoever_dials_it() -> None:
    assert asyncio.run(_dial_back({})) == {1}


def test_a_member_does_not_dial_peers_outside_its_membership() -> None:
    # a removed node that keeps dialling must not get a link of its own
    assert asyncio.run(_dial_back({2: ("127.0.0.1", 9)})) == {2}
