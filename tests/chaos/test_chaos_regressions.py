"""Regressions for bugs the chaos campaign found."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from pgraft.node.peers import PeerLink


def test_flush_to_a_peer_whose_connection_just_closed_does_not_raise() -> None:
    """Found by the chaos campaign (seed 11, lose-unsynced): a peer was killed; its connection
    was closed (connection_lost ran) but the link's task had not resumed yet, so the link still
    looked connected. The next Ready's send flushed into the closed uvloop transport, which
    raises RuntimeError; that escaped into the Ready loop and the node stopped itself
    ("the Ready loop failed"). The link must keep the queue for the next connection instead."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        transport.abort()  # closed, as after connection_lost
        await asyncio.sleep(0.05)  # the handle is closed now: a write raises under uvloop
        assert transport.is_closing()
        link = PeerLink.__new__(PeerLink)
        link.owner = SimpleNamespace(metrics=SimpleNamespace(bytes_sent=0))
        link.connected = True
        link._proto = SimpleNamespace(transport=transport, paused=False)
        link.queue = __import__("collections").deque([b"frame-1", b"frame-2"])
        link.queued_bytes = 14
        link.flush()  # must not raise
        assert list(link.queue) == [b"frame-1", b"frame-2"] and link.queued_bytes == 14
        link.queue.pop()
        link.flush()
        assert list(link.queue) == [b"frame-1"]
        server.close()
        await server.wait_closed()

    try:
        import uvloop
    except ImportError:
        asyncio.run(scenario())
    else:
        uvloop.run(scenario())  # the node's loop: uvloop raises where asyncio only warns


def test_overwritten_proposal_is_not_reported_as_certainly_uncommitted() -> None:
    """Found while classifying errors for the chaos checker: a proposal whose entry was
    replaced in the proposer's log was answered "it was not committed". A node that still holds
    the entry can become leader and commit it (Raft's Figure 8), so only an applied entry of
    another term at that index makes the failure certain; the other case says "unknown"."""
    from pgraft.node.metrics import Metrics
    from pgraft.node.waiters import Pending, Proposals

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        proposals = Proposals(Metrics())
        replaced = Pending(3, loop.create_future(), 0.0)
        proposals.fail_overwritten(7, replaced)
        msg = replaced.future.exception().message
        assert "unknown" in msg and "not committed" not in msg
        superseded = Pending(3, loop.create_future(), 0.0)
        proposals.fail_overwritten(7, superseded, certain=True)
        assert "it was not committed" in superseded.future.exception().message

    asyncio.run(scenario())


def test_leader_found_by_its_voters_not_outvoted_by_nodes_outside_the_cluster() -> None:
    """Seed 4243 (30 min): five nodes whose add or removal had an unknown outcome kept running
    outside the cluster; counting them in the majority found no leader after healing although
    the five voters agreed on one ("no-convergence")."""
    from chaos_campaign import leader_confirmed

    voters = [77, 78, 81, 82, 83]
    named: dict[int, int | None] = {77: 82, 78: None, 81: 82, 82: 82, 83: 82,
                                    15: None, 23: None, 38: None, 69: None, 84: None}
    assert leader_confirmed(82, voters, named)
    # the rule it replaced: a majority of every process the harness runs
    assert not sum(1 for n in named.values() if n == 82) * 2 > len(named)
    # and a minority of the voters is still not enough
    assert not leader_confirmed(82, voters, {77: 82, 82: 82, 81: 78, 78: 78, 83: None})
    assert not leader_confirmed(82, [], named)
