"""A write that failed is either certainly not applied (Unavailable) or of unknown outcome
(OutcomeUnknown), and every proposal is answered exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pgraft.errors import OutcomeUnknown, PgraftError, Unavailable
from pgraft.node import Node
from pgraft.node.server import log_stats
from tests.support.inprocess import Cluster, run, wait_for


def test_writes_pending_when_the_node_stops_have_an_unknown_outcome(tmpdir_short: str) -> None:
    async def scenario() -> None:
        # a long election timeout: the leader keeps its role while its followers are gone
        c = Cluster(tmpdir_short, 3, election_timeout_ms=3000, heartbeat_interval_ms=100)
        try:
            await c.start_all()
            lead = await c.wait_leader(20)
            for i in [i for i in c.nodes if i != lead.node_id]:
                await c.stop(i)
            # a write still waiting when the node stops: its entry is in the log
            fut = lead.propose_append(b"pending-at-stop")
            await c.stop(lead.node_id)
            with pytest.raises(OutcomeUnknown, match="stopped before the write was applied"):
                await fut
        finally:
            await c.stop_all()

    run(scenario(), 60)


def _isolate(node: Node) -> tuple[Any, Any]:
    """Cut ``node`` off in both directions (in process); returns what undoes it."""
    peers = node.peers
    send, receive = peers.send, node.receive_messages
    peers.send = lambda msgs: None  # type: ignore[method-assign]
    node.receive_messages = lambda msgs: None  # type: ignore[method-assign]
    return send, receive


def test_proposals_dropped_by_a_snapshot_install_are_answered(tmpdir_short: str) -> None:
    """An old leader's proposals above the snapshot it installs from the new leader are gone
    from its log: each is answered (outcome unknown) at once, none waits for a timeout."""

    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3, election_timeout_ms=300, heartbeat_interval_ms=30,
                    snapshot_entries=20, snapshot_keep=0, segment_size=1024,
                    snapshot_bytes=0)
        try:
            await c.start_all()
            old = await c.wait_leader()
            send, receive = _isolate(old)
            # proposals that only the isolated leader's log holds
            futures = [old.propose_append(b"lost-%d" % i) for i in range(150)]
            assert len(old.waiters.proposals) == 150
            others = {i for i in c.nodes if i != old.node_id}
            new = await c.wait_leader(10, among=others)
            # the new leader writes fewer entries than the old one holds, and compacts them
            for i in range(80):
                await new.propose_append(b"new-%d" % i)
            await wait_for(lambda: log_stats(new)["first_index"] > 3, 10,
                           "the new leader to snapshot and compact its log")
            assert log_stats(new)["last_index"] < log_stats(old)["last_index"]
            old.peers.send = send  # type: ignore[method-assign]
            old.receive_messages = receive  # type: ignore[method-assign]
            done, still = await asyncio.wait(futures, timeout=10)
            assert not still, f"{len(still)} proposals were never answered"
            assert not old.waiters.proposals
            for fut in done:
                exc = fut.exception()
                assert isinstance(exc, OutcomeUnknown | Unavailable), exc
                assert isinstance(exc, PgraftError)
            assert old.storage.snapshot_meta().index >= 20
        finally:
            await c.stop_all()

    run(scenario(), 60)
