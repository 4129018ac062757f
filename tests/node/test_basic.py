"""Election, replication and apply on an in-process 3-node cluster."""

from __future__ import annotations

import asyncio

import pgraft
from pgraft.node.server import entry, status
from tests.support.inprocess import Cluster, run


def test_election_and_append_everywhere(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            indexes = []
            for i in range(20):
                indexes.append(await lead.propose_append(b"x%d" % i))
            assert indexes == sorted(indexes) and len(set(indexes)) == 20
            await c.wait_applied(indexes[-1])
            for n in c.nodes.values():
                e = entry(n, indexes[5])
                assert e is not None and e["data"] == b"x5" and e["kind"] == "append"
                assert [m["node_id"] for m in n.get_nodes()] == [1, 2, 3]
        finally:
            await c.stop_all()

    run(scenario(), 30)


def test_group_commit_and_status_metrics(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            syncs_before = lead.metrics.syncs
            futures = [lead.propose_append(b"g%d" % i) for i in range(500)]
            indexes = await asyncio.wait_for(asyncio.gather(*futures), 20)
            assert len(set(indexes)) == 500
            # proposals arriving together share appends and syncs (group commit)
            assert lead.metrics.syncs - syncs_before < 100
            await c.wait_applied(max(indexes))
            async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl:
                st = await cl.status()
                stats = await cl.log_stats()
            assert st["node_id"] == lead.node_id and st["role"] == "leader"
            assert st["leader_id"] == lead.node_id and st["num_nodes"] == 3
            assert st["commit_index"] >= max(indexes) and st["applied_index"] >= max(indexes)
            assert set(st["progress"]) == {i for i in c.nodes if i != lead.node_id}
            m = st["metrics"]
            assert m["proposals"] >= 500 and m["commit_latency"]["count"] >= 500
            assert m["leader_changes"] >= 1 and m["term"] == st["term"]
            assert set(m["replication_lag"]) == set(st["progress"])
            assert stats["last_index"] >= max(indexes) and stats["log_bytes"] > 0
            follower = next(n for n in c.nodes.values() if not n.is_leader)
            fst = status(follower)
            assert fst["role"] == "follower" and fst["progress"] == {}
        finally:
            await c.stop_all()

    run(scenario(), 60)
