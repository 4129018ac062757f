"""Peers dials back: a node waiting to be added dials every peer that dials it at once (its
first reply, to the leader's probe, needs that link); a member only re-kicks known links."""

from __future__ import annotations

import asyncio

from pgraft.node.metrics import Metrics
from pgraft.node.peers import Peers


async def _dial_back(membership: dict[int, tuple[str, int]]) -> set[int]:
    peers = Peers(7, Metrics(), connect_timeout=0.2, backoff_base=0.5)
    if membership:
        peers.waiting_to_join = False  # the Node says so once its log holds a membership
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


async def _link_after_membership() -> tuple[tuple[str, int], set[int]]:
    peers = Peers(7, Metrics(), connect_timeout=0.2, backoff_base=0.5)
    try:
        peers.announced(1, "127.0.0.1", 9)
        peers.dialled_by(1)
        address = (peers.links[1].address, peers.links[1].port)
        # the membership arrives without node 1 (say, it was removed meanwhile)
        peers.waiting_to_join = False
        peers.set_peers({2: ("127.0.0.1", 9)})
        return address, set(peers.links)
    finally:
        await peers.close()


def test_the_dial_back_uses_the_announced_address_and_membership_closes_it() -> None:
    address, links = asyncio.run(_link_after_membership())
    assert address == ("127.0.0.1", 9)
    assert links == {2}
