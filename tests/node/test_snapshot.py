"""Snapshots, compaction and InstallSnapshot on in-process clusters (real TCP on loopback).

Small snapshot thresholds and small log segments make compaction drop segments after a few
hundred entries, so each scenario exercises the real code paths in a few seconds."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pgraft.errors import Unavailable
from pgraft.node import Node
from pgraft.node.server import log_stats, status
from pgraft.node.snapfile import SNAP_DIR
from pgraft.node.snapxfer import MSG_SNAP
from tests.support.inprocess import Cluster, run, wait_for

SNAP_OPTS: dict[str, Any] = {"snapshot_entries": 200, "snapshot_keep": 50,
                             "segment_size": 16 * 1024, "snapshot_bytes": 0}


async def _fill(lead: Node, n: int, prefix: str, value_size: int = 100) -> int:
    """``n`` KV puts (and as many appends), in batches; returns the last index."""
    last = 0
    for lo in range(0, n, 100):
        futs = []
        for i in range(lo, min(n, lo + 100)):
            futs.append(lead.propose_kv_put(f"{prefix}{i}", f"{i}:" + "v" * value_size))
            futs.append(lead.propose_append(b"a%d" % i))
        res = await asyncio.wait_for(asyncio.gather(*futs), 30)
        last = max(r for r in res if r is not True)
    return last


def _view(n: Node) -> tuple[Any, Any, Any]:
    members = [(m["node_id"], m["address"], m["port"], m["role"]) for m in n.get_nodes()]
    return members, dict(n.state.kv), n.state.members.removed


async def _wait_identical(c: Cluster, timeout: float = 30.0) -> None:
    lead = await c.wait_leader(timeout)
    last = await lead.propose_append(b"barrier")
    await c.wait_applied(last, timeout)

    def same() -> bool:
        views = [_view(n) for n in c.nodes.values()]
        return all(v == views[0] for v in views)

    await wait_for(same, timeout, "identical membership and KV on every node")


async def _wait_compacted(nodes: list[Node], timeout: float = 20.0) -> None:
    await wait_for(lambda: all(log_stats(n)["first_index"] > 1
                               and log_stats(n)["snapshot_index"] > 0 for n in nodes),
                   timeout, "a snapshot and a compacted log")


def test_new_node_after_compaction_catches_up_by_snapshot(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3, **SNAP_OPTS)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            await _fill(lead, 600, "k")
            await _wait_compacted(list(c.nodes.values()))
            assert log_stats(lead)["first_index"] > 1
            # node 4 starts empty and is added: the entries it needs are gone from every log
            c.add_slot(4)
            n4 = await c.start(4, bootstrap=False)
            await lead.add_node(4, "127.0.0.1", c.ports[4])
            await wait_for(lambda: n4.snapshots.stats.installed >= 1, 20, "node 4 installs")
            await _wait_identical(c)
            assert lead.snapshots.stats.sent >= 1
            await wait_for(lambda: any(m["node_id"] == 4 and m["role"] == "voter"
                                       for m in lead.get_nodes()), 20, "node 4 promoted")
            assert n4.state.kv["k599"].startswith("599:")
            st = status(n4)
            assert st["snapshot_index"] > 0 and st["first_index"] > 1
            # the installed snapshot is on disk, and a restart of node 4 comes back from it
            await c.stop(4)
            n4 = await c.start(4, bootstrap=False)
            assert n4.state.applied_index >= log_stats(n4)["snapshot_index"] > 0
            await _wait_identical(c)
        finally:
            await c.stop_all()

    run(scenario(), 90)


def test_follower_down_through_compaction(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3, **SNAP_OPTS)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            await _fill(lead, 50, "a")
            down = next(i for i in c.nodes if i != lead.node_id)
            await c.stop(down, crash=True)
            await _fill(lead, 600, "b")
            await lead.propose_kv_delete("a3")
            running = list(c.nodes.values())
            await _wait_compacted(running)
            await c.start(down)
            await wait_for(lambda: c.nodes[down].snapshots.stats.installed >= 1, 20,
                           "the follower installs a snapshot")
            await _wait_identical(c)
            assert "a3" not in c.nodes[down].state.kv and "b599" in c.nodes[down].state.kv
        finally:
            await c.stop_all()

    run(scenario(), 90)


def test_slightly_lagging_follower_catches_up_from_the_log(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3, **{**SNAP_OPTS, "snapshot_keep": 2000,
                                        "snapshot_entries": 300})
        try:
            await c.start_all()
            lead = await c.wait_leader()
            await _fill(lead, 100, "a")
            down = next(i for i in c.nodes if i != lead.node_id)
            await c.stop(down)
            await _fill(lead, 300, "b")  # 600 entries: snapshots, but within keep
            await wait_for(lambda: log_stats(lead)["snapshot_index"] > 0, 20, "a snapshot")
            await c.start(down)
            await _wait_identical(c)
            assert c.nodes[down].snapshots.stats.installed == 0
            assert lead.snapshots.stats.sent == 0
        finally:
            await c.stop_all()

    run(scenario(), 90)


def test_snapshot_transfer_cut_mid_stream(tmpdir_short: str) -> None:
    """Small chunks and a window of 2: the connection carrying the transfer is aborted twice
    and one chunk is dropped; the transfer resumes and node 4 ends identical."""

    async def scenario() -> None:
        opts = {**SNAP_OPTS, "snapshot_chunk": 8 * 1024, "snapshot_window": 2}
        c = Cluster(tmpdir_short, 3, **opts)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            await _fill(lead, 800, "k", value_size=400)  # a ~400 KB state: ~50 chunks
            await _wait_compacted([lead])
            c.add_slot(4)
            n4 = await c.start(4, bootstrap=False)
            snaps4 = n4.snapshots
            assert snaps4 is not None
            real = snaps4.on_message
            seen = {"chunks": 0, "cuts": 0, "dropped": 0}

            def faulty(m: Any) -> None:
                if m.type == MSG_SNAP:
                    seen["chunks"] += 1
                    if seen["chunks"] == 5 and not seen["dropped"]:
                        seen["dropped"] += 1
                        return  # lost chunk: the next one is a gap
                    if seen["chunks"] in (12, 30):
                        seen["cuts"] += 1
                        # the connection the chunks come on: the leader's link to node 4
                        link = lead.peers.links[4]
                        if link._proto is not None and link._proto.transport is not None:
                            link._proto.transport.abort()
                        return
                real(m)

            snaps4.on_message = faulty  # type: ignore[method-assign]
            await lead.add_node(4, "127.0.0.1", c.ports[4])
            await wait_for(lambda: snaps4.stats.installed >= 1, 45, "node 4 installs")
            assert seen["cuts"] == 2 and seen["dropped"] == 1
            await _wait_identical(c)
            size = snaps4.store.current.size  # type: ignore[union-attr]
            assert size > 300_000
            # resumed, not restarted from zero every time: at most a few windows resent
            assert snaps4.stats.received_bytes < size + 8 * (8 * 1024 * 2)
        finally:
            await c.stop_all()

    run(scenario(), 120)


def test_restart_from_snapshot_and_tail(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3, **SNAP_OPTS)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            await _fill(lead, 500, "k")
            await _wait_compacted(list(c.nodes.values()))
            before = {i: _view(n) for i, n in c.nodes.items()}
            stats = {i: log_stats(n) for i, n in c.nodes.items()}
            await c.stop_all()
            for i in before:
                await c.start(i)
            for i, n in c.nodes.items():
                st = log_stats(n)
                assert st["snapshot_index"] >= stats[i]["snapshot_index"] > 0
                assert st["first_index"] >= stats[i]["first_index"] > 1
            await _wait_identical(c)
            for i, n in c.nodes.items():
                members, kv, removed = _view(n)
                assert kv == before[i][1] or len(kv) >= len(before[i][1])
                assert all(kv[k] == v for k, v in before[i][1].items())
            # only the current snapshot is kept
            for i in c.nodes:
                names = os.listdir(os.path.join(c.data_dir(i), SNAP_DIR))
                assert len([x for x in names if x.endswith(".snap")]) == 1, names
        finally:
            await c.stop_all()

    run(scenario(), 90)


async def _add_node(lead: Node, node_id: int, port: int, timeout: float = 10.0) -> None:
    """add_node, retried while the new leader has not yet committed an entry of its term
    (until then it refuses membership changes with Unavailable: nothing was proposed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await lead.add_node(node_id, "127.0.0.1", port)
            return
        except Unavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.02)


def test_removed_ids_survive_a_snapshot(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3, **SNAP_OPTS)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            c.add_slot(4)
            await c.start(4, bootstrap=False)
            await _add_node(lead, 4, c.ports[4])
            await lead.remove_node(4)
            await c.stop(4)
            await _fill(lead, 400, "k")
            await _wait_compacted(list(c.nodes.values()))
            await c.stop_all()
            for i in (1, 2, 3):
                await c.start(i)
            lead = await c.wait_leader()
            for n in c.nodes.values():
                assert 4 in n.state.members.removed
                assert 4 in n.raw.membership.removed  # type: ignore[union-attr]
            try:
                await _add_node(lead, 4, c.ports[4])
            except Exception as exc:
                assert type(exc).__name__ == "NodeExists"
            else:
                raise AssertionError("a removed id was accepted again")
        finally:
            await c.stop_all()

    run(scenario(), 90)
