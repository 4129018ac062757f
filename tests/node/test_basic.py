"""Election, replication and apply on an in-process 3-node cluster."""

from __future__ import annotations

from node_helpers import Cluster, run


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
                e = n.get_entry(indexes[5])
                assert e is not None and e["data"] == b"x5" and e["kind"] == "append"
                assert [m["node_id"] for m in n.get_nodes()] == [1, 2, 3]
        finally:
            await c.stop_all()

    run(scenario(), 30)
