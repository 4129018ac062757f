"""pgraft for ``benchmarks/compare.py``: 3 ``python -m pgraft serve`` processes on loopback
(:class:`pgraft.demo.LocalCluster`, fsync on: every node fdatasyncs its log before it
acknowledges) and the client in this separate process (``pgraft.connect`` on uvloop).

The kill -9 measurement is ``benchmarks/cluster.py``'s (:func:`cluster.bench_failover`): a client
that opens connections to the survivors after the kill, the killed node restarted and caught up
before the next kill.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

import cluster as cluster_bench
from compare_common import PAYLOAD, closed_loop, log, summary

import pgraft
from pgraft.errors import MembershipChangeInProgress
from pgraft.localcluster import LocalCluster


def _run(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro_fn())


async def latency(address: str, count: int, max_seconds: float) -> list[float]:
    """Sequential appends of 64 bytes (``count`` or ``max_seconds``, whichever comes first,
    after a warm-up of 50); the samples in seconds."""
    client = await pgraft.connect(address, timeout=10)
    try:
        for _ in range(min(50, count)):
            await client.append(PAYLOAD)
        samples = []
        stop = time.perf_counter() + max_seconds
        for _ in range(count):
            t0 = time.perf_counter()
            await client.append(PAYLOAD)
            t1 = time.perf_counter()
            samples.append(t1 - t0)
            if t1 > stop:
                break
    finally:
        await client.close()
    return samples


async def throughput(address: str, window: int, seconds: float) -> dict[str, Any]:
    """Appends with ``window`` in flight on one connection for ``seconds``."""
    client = await pgraft.connect(address, timeout=30)
    try:
        for _ in range(20):
            await client.append(PAYLOAD)
        return await closed_loop(lambda: client.append(PAYLOAD), window, seconds)
    finally:
        await client.close()


async def _retry(call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    while True:
        try:
            return await call()
        except MembershipChangeInProgress:
            await asyncio.sleep(0.002)


async def _add_one(cluster: LocalCluster, leader: int, node_id: int) -> dict[str, float]:
    """Time ``add_node`` on the leader (the new node was started empty beforehand, as pgraft
    intends) until every node, the new one too, lists it, and until all list it as voter;
    also, from the moment the call returned (the change committed), until every existing
    member lists it and until the new member lists itself."""
    ids = cluster.running_ids()
    clients = {i: await pgraft.connect(cluster.address(i), timeout=10) for i in ids}
    node = cluster.nodes[node_id]
    try:
        t0 = time.perf_counter()
        await _retry(lambda: clients[leader].add_node(node_id, node.host, node.port))
        t_api = time.perf_counter()

        async def watch(client: Any) -> tuple[float, float]:
            """When this node first lists the new node, and when it lists it as voter. Each
            node is polled by its own task: a slow one (the new node, catching up) does not
            delay the others' times."""
            listed = None
            while True:
                role = {n.node_id: n.role for n in await client.get_nodes()}.get(node_id)
                now = time.perf_counter()
                if listed is None and role is not None:
                    listed = now
                if role == "voter":
                    return listed or now, now
                if now - t0 > 60:
                    raise TimeoutError(f"node {node_id} not listed as voter everywhere after "
                                       "60 s")
                await asyncio.sleep(0.0005)

        seen = dict(zip(clients, await asyncio.gather(*(watch(c) for c in clients.values())),
                        strict=True))
        others = [listed for i, (listed, _) in seen.items() if i != node_id]
        return {"api": t_api - t0, "listed": max(listed for listed, _ in seen.values()) - t0,
                "voter": max(voter for _, voter in seen.values()) - t0,
                "members_after_commit": max(others) - t_api,
                "self_after_commit": seen[node_id][0] - t_api}
    finally:
        for c in clients.values():
            await c.close()


async def _remove(address: str, node_id: int) -> None:
    client = await pgraft.connect(address, timeout=30)
    try:
        await _retry(lambda: client.remove_node(node_id))
    finally:
        await client.close()


def bench_add_member(cluster: LocalCluster, count: int, first_id: int = 100) -> dict[str, Any]:
    """``count`` times: start a node empty (not timed), ``add_node`` on the leader, wait until
    every node lists it; then remove it and stop its process (not timed)."""
    api, listed, voter, members, itself = [], [], [], [], []
    for i in range(count):
        node_id = first_id + i
        cluster.start_empty(node_id, timeout=60)
        leader = cluster.wait_for_leader(timeout=60)
        r = _run(lambda leader=leader, node_id=node_id: _add_one(cluster, leader, node_id))
        api.append(r["api"])
        listed.append(r["listed"])
        voter.append(r["voter"])
        members.append(r["members_after_commit"])
        itself.append(r["self_after_commit"])
        log(f"  pgraft add {i + 1}/{count}: add_node {1000 * r['api']:.1f} ms, listed "
            f"everywhere {1000 * r['listed']:.1f} ms, voter everywhere {1000 * r['voter']:.1f} ms")
        leader = cluster.wait_for_leader(timeout=60)
        _run(lambda leader=leader, node_id=node_id: _remove(cluster.address(leader), node_id))
        cluster.stop(node_id)
        del cluster.nodes[node_id]
    return {"listed_everywhere_ms": summary(listed), "member_add_call_ms": summary(api),
            "voter_everywhere_ms": summary(voter),
            "members_list_it_after_commit_ms": summary(members),
            "new_member_lists_itself_after_commit_ms": summary(itself)}


def run_all(base_dir: str, *, latency_count: int, latency_max_s: float, windows: list[int],
            window_seconds: float, adds: int, kills: int, election_timeout_ms: int,
            heartbeat_interval_ms: int) -> dict[str, Any]:
    """Every pgraft measurement on one 3-node cluster."""
    out: dict[str, Any] = {"version": pgraft.__version__,
                           "implementation": pgraft.IMPLEMENTATION}
    with LocalCluster(3, base_dir=os.path.join(base_dir, "cluster"),
                      election_timeout_ms=election_timeout_ms,
                      heartbeat_interval_ms=heartbeat_interval_ms) as cluster:
        cluster.start(timeout=60)
        leader = cluster.wait_for_leader(timeout=60)
        address = cluster.address(leader)
        log(f"pgraft ({pgraft.IMPLEMENTATION}): latency ({latency_count} sequential appends on "
            f"the leader, node {leader}, at most {latency_max_s:g} s)")
        samples = _run(lambda: latency(address, latency_count, latency_max_s))
        out["latency_samples_s"] = samples
        out["latency_ms"] = summary(samples, cdf=True)
        if adds:
            log(f"pgraft: add member ({adds} times)")
            out["add_member"] = bench_add_member(cluster, adds)
        out["throughput"] = []
        address = cluster.address(cluster.wait_for_leader(timeout=60))
        for w in windows:
            r = _run(lambda w=w: throughput(address, w, window_seconds))
            log(f"  pgraft {w} in flight: {r['writes_per_s']:,.0f} appends/s "
                f"(client CPU {r['client_cpu']:.0%}, machine CPU {r['machine_cpu_busy'] or 0:.0%} "
                f"busy, {r['failed']} failed)")
            out["throughput"].append(r)
        if kills:
            log(f"pgraft: failover ({kills} leader kills)")
            out["failover_ms"] = cluster_bench.bench_failover(cluster, kills)
    return out
