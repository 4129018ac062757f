"""Membership through the runtime: the seed's walkthrough and its recovery story, removal,
leadership transfer. In-process nodes on one loop, real TCP, the real client."""

from __future__ import annotations

import pytest

import pgraft
from pgraft.errors import NotLeaderError
from pgraft.node.server import entry
from tests.support.inprocess import Cluster, eventually, run, wait_for


def views(c: Cluster) -> dict[int, list[tuple[int, str, int, str]]]:
    return {i: [(m["node_id"], m["address"], m["port"], m["role"]) for m in n.get_nodes()]
            for i, n in c.nodes.items()}


def identical(c: Cluster, ids: list[int], *, all_voters: bool = True) -> bool:
    """Every running node lists exactly ``ids`` (all voters, unless told otherwise)."""
    vs = views(c)
    first = vs[next(iter(vs))]
    if [m[0] for m in first] != ids:
        return False
    if all_voters and any(m[3] != "voter" for m in first):
        return False
    return all(v == first for v in vs.values())


def test_seed_walkthrough_add_node_on_leader(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            port4 = c.add_slot(4)
            await c.start(4, bootstrap=False)
            async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl:
                assert await cl.add_node(4, "127.0.0.1", port4, timeout=10) is True
                # the leader lists node 4 as soon as the call returns
                assert 4 in [n.node_id for n in await cl.get_nodes()]
            # every node, node 4 included, lists the same four members; node 4 is promoted
            await wait_for(lambda: identical(c, [1, 2, 3, 4]), 10, "identical membership")
            assert all(n.role == "voter" for n in (await _nodes(lead)))
            # node 4 replicates and applies what comes next
            index = await lead.propose_append(b"after-add")
            await c.wait_applied(index)
            e = entry(c.nodes[4], index)
            assert e is not None and e["data"] == b"after-add"
        finally:
            await c.stop_all()

    run(scenario(), 60)


async def _nodes(lead: object) -> list[pgraft.NodeInfo]:
    async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl:  # type: ignore[attr-defined]
        return await cl.get_nodes()


def test_add_on_follower_names_the_leader(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            follower = next(n for n in c.nodes.values() if not n.is_leader)
            for target in (f"127.0.0.1:{follower.port}",
                           f"{c.data_dir(follower.node_id)}/node.sock"):
                async with await pgraft.connect(target) as cl:
                    with pytest.raises(NotLeaderError) as info:
                        await cl.add_node(4, "127.0.0.1", 7004, timeout=5)
                    err = info.value
                    assert err.leader_id == lead.node_id
                    assert err.leader_address == f"127.0.0.1:{lead.port}"
                    assert f"this node ({follower.node_id}) is not the leader" in err.message
                    with pytest.raises(NotLeaderError):
                        await cl.append(b"x", timeout=5)
                    with pytest.raises(NotLeaderError):
                        await cl.kv_put("k", "v", timeout=5)
            # nothing changed
            assert identical(c, [1, 2, 3])
        finally:
            await c.stop_all()

    run(scenario(), 60)


def test_follower_down_through_two_adds_catches_up(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            down = next(i for i, n in c.nodes.items() if not n.is_leader)
            await c.stop(down)
            for new in (4, 5):
                port = c.add_slot(new)
                await c.start(new, bootstrap=False)
                async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl:
                    # a learner being promoted is a pending change: retry until accepted
                    await eventually(lambda n=new, p=port: cl.add_node(n, "127.0.0.1", p,
                                                                        timeout=5),
                                     20, f"add node {new}")
            await wait_for(lambda: identical(c, [1, 2, 3, 4, 5]), 15,
                           "membership of the running nodes")
            # the stopped follower restarts on its data dir (its --initial-cluster is ignored)
            await c.start(down)
            await wait_for(lambda: identical(c, [1, 2, 3, 4, 5]), 15,
                           "the restarted follower to list nodes 4 and 5")
        finally:
            await c.stop_all()

    run(scenario(), 90)


def test_remove_follower_then_leader(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 4)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            follower = next(i for i, n in c.nodes.items() if not n.is_leader)
            async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl:
                assert await cl.remove_node(follower, timeout=10) is True
            rest = sorted(i for i in c.nodes if i != follower)
            await c.stop(follower)
            await wait_for(lambda: identical(c, rest), 10, "the follower gone everywhere")
            # remove the leader itself: a new leader takes over among the others
            old = lead.node_id
            async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl:
                assert await cl.remove_node(old, timeout=10) is True
            others = {i for i in c.nodes if i != old}
            new_lead = await c.wait_leader(15, among=others)
            assert new_lead.node_id != old
            await c.stop(old)
            remaining = sorted(others)
            await wait_for(lambda: identical(c, remaining), 10, "the old leader gone")
            index = await eventually(lambda: new_lead.propose_append(b"after"), 10,
                                     "an append on the new leader")
            await c.wait_applied(index)
        finally:
            await c.stop_all()

    run(scenario(), 90)


def test_leadership_transfer(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            await lead.propose_append(b"before")
            target = next(i for i, n in c.nodes.items() if not n.is_leader)
            async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl:
                assert await cl.transfer_leadership(target, timeout=10) is True
            new_lead = await c.wait_leader(10)
            assert new_lead.node_id == target
            index = await new_lead.propose_append(b"after")
            await c.wait_applied(index)
        finally:
            await c.stop_all()

    run(scenario(), 60)
