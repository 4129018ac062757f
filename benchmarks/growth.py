"""Curves of how cost grows: real ``pgraft serve`` clusters on loopback (fsync on), measured
from this separate client process, one cluster at a time.

    python benchmarks/growth.py --json benchmarks/results/growth.json \\
        --markdown benchmarks/results/growth.md          # or: make bench-growth
    python benchmarks/growth.py --quick --json /tmp/g.json   # a smoke run, tiny counts

Five series, each point on a fresh cluster (``--only`` picks series):

1. ``cluster_size``: writes/s (closed loop, ``--in-flight`` on one connection) and sequential
   append p50/p99 against the number of nodes (``--sizes``, 64-byte values);
2. ``payload``: the same against the payload size (``--payloads``, 3 nodes);
3. ``connections``: writes/s and p50/p99 against the number of client connections
   (``--connections``), each an ``AsyncClient`` with one request in flight, all on one event
   loop (the nodes get ``--max-connections`` / ``--max-connections-per-address`` above it);
4. ``log_length``: a log of N entries (``--log-sizes`` up to ``--max-log``) is written into
   every node's data directory while the nodes are stopped, with pgraft's own storage
   (``pgraft.node.storage.DiskStorage``: the records, hard state and durable watermark a node
   writes itself, 64-byte ``append`` entries of the current term, all committed). Then: the
   whole cluster is started (time to the first accepted write and until every node applied
   the log), the leader's RSS (``/proc/PID/status``), and one node restarted alone (time from
   its process start until it answers ``log_stats`` with the whole log applied). By default the
   nodes run with snapshots off (``--log-snapshots off``), so the log is all kept; with
   ``default`` a node snapshots and compacts while it applies (the kept range is reported);
5. ``catchup``: one follower stopped, N entries appended (``--catchup-entries``, closed loop),
   the follower started again: time from its process start until its applied index reaches the
   leader's commit index (node defaults: a leader that compacted sends a snapshot; reported).

Every loop is bounded by a count and by ``--point-seconds`` (waits: ``--wait-seconds``); a
point that fails is recorded with its error and the run goes on. The default run was estimated
at 10 to 16 minutes on the 2-vCPU development VM, most of it the 10M-entry log (about 2.8 GB
written into three data directories, each node applying it twice); ``--quick`` (sizes 3,5,7;
all payloads; 1, 10 and 1000 connections; logs of 1k and 10k; 0 and 1k missed; tiny counts)
takes about a minute. Writes ``--json``,
``--markdown`` and, when matplotlib is installed (``make bench-growth`` installs it), PNG plots
``<json stem>.<series>.png`` next to the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from compare_common import log, summary  # noqa: E402

import pgraft  # noqa: E402
from pgraft._impl import core  # noqa: E402
from pgraft.errors import PgraftError  # noqa: E402
from pgraft.localcluster import LocalCluster, wait_until  # noqa: E402
from pgraft.node.storage import DiskStorage  # noqa: E402
from pgraft.raft.types import HardState  # noqa: E402
from pgraft.state import encode_append  # noqa: E402

SERIES = ("cluster_size", "payload", "connections", "log_length", "catchup")
LOG_LADDER = (10_000, 100_000, 1_000_000, 10_000_000)
SMALL_PAYLOAD = 64
#: Entries written per DiskStorage.append when filling a log (one Python list at a time).
FILL_BATCH = 10_000
#: Node flags that turn snapshots (and so compaction) off.
NO_SNAPSHOTS = ["--snapshot-entries", "0", "--snapshot-bytes", "0"]
POLL_S = 0.01

Op = Callable[[], Awaitable[Any]]


# ------------------------------------------------------------------------ load loops
async def closed_loop_count(ops: list[Op], total: int, max_seconds: float) -> dict[str, Any]:
    """Run ``total`` calls with one worker per entry of ``ops`` (each keeps one call of its op
    in flight; a new one starts as soon as one finishes), stopping early at ``max_seconds``.
    Returns writes/s over the calls that succeeded, their latencies (``samples_s``, seconds),
    the failures and whether the time cap cut the run."""
    started = done = failed = 0
    first_error: str | None = None
    samples: list[float] = []
    deadline = time.perf_counter() + max_seconds

    async def worker(op: Op) -> None:
        nonlocal started, done, failed, first_error
        while started < total and time.perf_counter() < deadline:
            started += 1
            t0 = time.perf_counter()
            try:
                await op()
            except Exception as exc:  # counted, not fatal: the point reports it
                failed += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.001)
                continue
            samples.append(time.perf_counter() - t0)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(op) for op in ops))
    elapsed = time.perf_counter() - t0
    return {"writes": done, "failed": failed, "first_error": first_error, "seconds": elapsed,
            "writes_per_s": done / elapsed if elapsed > 0 else 0.0, "in_flight": len(ops),
            "time_capped": done + failed < total, "samples_s": samples}


def _latency(run: dict[str, Any]) -> dict[str, Any] | None:
    samples = run.pop("samples_s")
    return summary(samples) if samples else None


async def append_point(address: str, payload: bytes, latency_count: int,
                       throughput_count: int, in_flight: int,
                       max_seconds: float) -> dict[str, Any]:
    """Sequential appends (after a warm-up), then a closed loop of ``in_flight`` on one
    connection."""
    client = await pgraft.connect(address, timeout=30)
    try:
        async def op() -> None:
            await client.append(payload)

        await closed_loop_count([op], min(50, latency_count), max_seconds)  # warm-up
        seq = await closed_loop_count([op], latency_count, max_seconds)
        thr = await closed_loop_count([op] * in_flight, throughput_count, max_seconds)
    finally:
        await client.close()
    seq_latency = _latency(seq)
    thr.pop("samples_s")
    return {"payload_bytes": len(payload), "latency_ms": seq_latency,
            "sequential": seq, "throughput": thr,
            "mib_per_s": thr["writes_per_s"] * len(payload) / 2**20}


async def open_clients(address: str, count: int, batch: int = 50) -> list[pgraft.AsyncClient]:
    """``count`` connections to ``address``, opened ``batch`` at a time."""
    clients: list[pgraft.AsyncClient] = []
    try:
        while len(clients) < count:
            n = min(batch, count - len(clients))
            clients += await asyncio.gather(*(pgraft.connect(address, timeout=30)
                                              for _ in range(n)))
    except BaseException:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        raise
    return clients


async def connections_point(address: str, connections: int, total: int,
                            max_seconds: float) -> dict[str, Any]:
    """``connections`` clients, one append in flight each, ``total`` appends in all."""
    t0 = time.perf_counter()
    clients = await open_clients(address, connections)
    opened = time.perf_counter() - t0
    try:
        ops: list[Op] = [functools.partial(c.append, b"c" * SMALL_PAYLOAD) for c in clients]
        await closed_loop_count(ops, min(total, 10 * connections, 2000), max_seconds)
        run = await closed_loop_count(ops, total, max_seconds)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {"connections": connections, "connect_seconds": opened,
            "latency_ms": _latency(run), "throughput": run}


# --------------------------------------------------------------------------- clusters
@contextlib.contextmanager
def started_cluster(size: int, base_dir: str, extra_args: list[str] | None = None,
                    timeout: float = 60.0) -> Iterator[tuple[LocalCluster, int]]:
    """A started LocalCluster in ``base_dir`` and its leader; stopped and removed after."""
    cluster = LocalCluster(size, base_dir=base_dir, extra_args=extra_args)
    try:
        cluster.start(timeout=timeout)
        yield cluster, cluster.wait_for_leader(timeout=timeout)
    except BaseException:
        cluster.dump_logs(lines=15)
        raise
    finally:
        cluster.close()
        shutil.rmtree(base_dir, ignore_errors=True)


def guarded(what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one point; an error is recorded in the result (the run goes on)."""
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # recorded in the point; the next point runs
        log(f"  {what} FAILED: {type(exc).__name__}: {exc}")
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["point_seconds"] = time.perf_counter() - t0
    return out


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS, its anonymous and file-backed parts and the peak (VmHWM) of ``pid``, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def node_pid(cluster: LocalCluster, node_id: int) -> int:
    proc = cluster.nodes[node_id].proc
    if proc is None or proc.poll() is not None:
        raise RuntimeError(f"node {node_id} is not running")
    return proc.pid


def log_stats(cluster: LocalCluster, node_id: int) -> dict[str, Any]:
    with cluster.client(node_id, 10.0) as c:
        return dict(c.log_stats())


def raise_fd_limit(needed: int) -> None:
    """Raise this process's open-file limit (the nodes inherit it) to at least ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"{needed} open files are needed, the hard limit is {hard} "
                         "(raise it: ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# ------------------------------------------------------------------- series 1 to 3
def series_cluster_size(ns: argparse.Namespace, base: str) -> list[dict[str, Any]]:
    points = []
    for size in ns.sizes:
        log(f"cluster_size: {size} nodes ({ns.latency_count} sequential, "
            f"{ns.throughput_count} at {ns.in_flight} in flight)")

        def run(size: int = size) -> dict[str, Any]:
            with started_cluster(size, os.path.join(base, f"size{size}")) as (cl, leader):
                return asyncio.run(append_point(
                    cl.address(leader), b"s" * SMALL_PAYLOAD, ns.latency_count,
                    ns.throughput_count, ns.in_flight, ns.point_seconds))

        points.append({"nodes": size, **guarded(f"{size} nodes", run)})
    return points


def series_payload(ns: argparse.Namespace, base: str) -> list[dict[str, Any]]:
    points = []
    for size in ns.payloads:
        log(f"payload: {size} B ({ns.latency_count} sequential, "
            f"{ns.payload_throughput_count} at {ns.in_flight} in flight)")

        def run(size: int = size) -> dict[str, Any]:
            with started_cluster(3, os.path.join(base, f"payload{size}")) as (cl, leader):
                return asyncio.run(append_point(
                    cl.address(leader), b"p" * size, ns.latency_count,
                    ns.payload_throughput_count, ns.in_flight, ns.point_seconds))

        points.append({"nodes": 3, **guarded(f"{size} B", run)})
    return points


def series_connections(ns: argparse.Namespace, base: str) -> list[dict[str, Any]]:
    raise_fd_limit(max(ns.connections) + 512)
    points = []
    for conns in ns.connections:
        limit = str(conns + 64)  # the peers' connections count too
        extra = ["--max-connections", limit, "--max-connections-per-address", limit]
        log(f"connections: {conns} ({ns.connections_count} appends)")

        def run(conns: int = conns, extra: list[str] = extra) -> dict[str, Any]:
            with started_cluster(3, os.path.join(base, f"conns{conns}"), extra) as (cl, leader):
                return asyncio.run(connections_point(cl.address(leader), conns,
                                                     ns.connections_count, ns.point_seconds))

        points.append({"nodes": 3, "node_args": extra, **guarded(f"{conns} connections", run)})
    return points


# ------------------------------------------------------------------ series 4: log length
def stop_all(cluster: LocalCluster, leader: int) -> None:
    """SIGTERM the followers, then the leader (which then has no one to hand over to)."""
    for node_id in [i for i in cluster.nodes if i != leader] + [leader]:
        cluster.stop(node_id)


def settle(cluster: LocalCluster, leader: int, timeout: float) -> int:
    """One write, then wait until every node applied all of the leader's log; its last index."""
    with cluster.client(leader, 10.0) as c:
        c.append(b"settle")
        last = int(c.log_stats()["last_index"])
    for node_id in cluster.nodes:
        wait_until(f"node {node_id} to apply index {last}",
                   functools.partial(applied_through, cluster, node_id, last), timeout)
    return last


def applied_through(cluster: LocalCluster, node_id: int, index: int) -> bool:
    return int(log_stats(cluster, node_id)["applied_index"]) >= index


def read_tail(data_dir: str, node_id: int) -> tuple[int, int, HardState]:
    """(last index, its term, hard state) of a stopped node's storage."""
    storage = DiskStorage(data_dir, node_id)
    try:
        last = storage.last_index()
        return last, storage.term(last), storage.hard_state()
    finally:
        storage.close()


def fill_log(data_dir: str, node_id: int, count: int, term: int) -> float:
    """Append ``count`` committed 64-byte ``append`` entries of ``term`` to the stopped node's
    log with its own storage class; returns the seconds it took (close() syncs and saves the
    hard state with the durable watermark, as a node's clean stop does)."""
    data = encode_append(b"g" * SMALL_PAYLOAD)
    entry, normal = core.Entry, core.ENTRY_NORMAL
    t0 = time.perf_counter()
    storage = DiskStorage(data_dir, node_id)
    try:
        hs = storage.hard_state()
        nxt = storage.last_index() + 1
        top = nxt + count - 1
        while nxt <= top:
            hi = min(top, nxt + FILL_BATCH - 1)
            storage.append([entry(i, term, normal, data) for i in range(nxt, hi + 1)])
            nxt = hi + 1
        storage.set_hard_state(HardState(hs.term, hs.vote, top))
    finally:
        storage.close()
    return time.perf_counter() - t0


def fill_cluster(cluster: LocalCluster, count: int) -> dict[str, Any]:
    """Give every (stopped) node the same log: ``count`` more entries after its current tail,
    which must be the same on all nodes."""
    tails = {i: read_tail(n.data_dir, i) for i, n in cluster.nodes.items()}
    shapes = {(last, term) for last, term, _hs in tails.values()}
    if len(shapes) != 1:
        raise RuntimeError(f"the nodes' logs differ before the fill: {tails}")
    last, term = shapes.pop()
    seconds = {i: fill_log(n.data_dir, i, count, term) for i, n in cluster.nodes.items()}
    return {"entries_added": count, "first_added": last + 1, "last_index": last + count,
            "term": term, "seconds_per_node": seconds,
            "entries_per_s": count * len(seconds) / sum(seconds.values())}


async def _connected(address: str, client: pgraft.AsyncClient | None) -> pgraft.AsyncClient:
    if client is not None and not client.closed:
        return client
    return await pgraft.connect(address, timeout=2.0)


async def watch_load(address: str, target: int, t0: float, deadline: float) -> dict[str, Any]:
    """Poll one node: seconds from ``t0`` until it first answers ``log_stats`` and until its
    applied index reaches ``target`` (None: not within the deadline)."""
    client: pgraft.AsyncClient | None = None
    out: dict[str, Any] = {"answer_s": None, "loaded_s": None}
    try:
        while time.perf_counter() < deadline:
            try:
                client = await _connected(address, client)
                stats = await client.log_stats(timeout=10.0)
            except PgraftError:
                await asyncio.sleep(POLL_S)
                continue
            now = time.perf_counter() - t0
            if out["answer_s"] is None:
                out["answer_s"] = now
            if stats["applied_index"] >= target:
                out["loaded_s"] = now
                out["log_stats"] = stats
                return out
            await asyncio.sleep(POLL_S)
    finally:
        if client is not None:
            await client.close()
    return out


async def first_write(addresses: list[str], t0: float, deadline: float) -> float | None:
    """Seconds from ``t0`` until one of ``addresses`` accepted an append."""
    clients: dict[str, pgraft.AsyncClient] = {}
    try:
        while time.perf_counter() < deadline:
            for address in addresses:
                try:
                    clients[address] = await _connected(address, clients.get(address))
                    await clients[address].append(b"first", timeout=10.0)
                    return time.perf_counter() - t0
                except PgraftError:
                    continue
            await asyncio.sleep(POLL_S)
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)
    return None


async def watch_cold_start(addresses: dict[int, str], target: int, t0: float,
                           deadline: float) -> dict[str, Any]:
    """Watch every node load while a writer tries appends on all of them."""
    write = asyncio.ensure_future(first_write(list(addresses.values()), t0, deadline))
    nodes = await asyncio.gather(*(watch_load(a, target, t0, deadline)
                                   for a in addresses.values()))
    return {"first_write_s": await write, "nodes": dict(zip(addresses, nodes, strict=True))}


def cold_start(cluster: LocalCluster, target: int, timeout: float) -> dict[str, Any]:
    """Start every node at once; time the first write and every node's full apply."""
    t0 = time.perf_counter()
    for node_id in cluster.nodes:
        cluster.start_node(node_id, wait=False)
    addresses = {i: cluster.address(i) for i in cluster.nodes}
    out = asyncio.run(watch_cold_start(addresses, target, t0, t0 + timeout))
    loaded = [n["loaded_s"] for n in out["nodes"].values()]
    out["all_loaded_s"] = None if None in loaded else max(loaded)
    return out


def restart_one(cluster: LocalCluster, node_id: int, target: int,
                timeout: float) -> dict[str, Any]:
    """Stop ``node_id`` (SIGTERM), start it again; time until it applied ``target``."""
    t_stop = time.perf_counter()
    cluster.stop(node_id)
    stop_s = time.perf_counter() - t_stop
    t0 = time.perf_counter()
    cluster.start_node(node_id, wait=False)
    out = asyncio.run(watch_load(cluster.address(node_id), target, t0, t0 + timeout))
    out["stop_s"] = stop_s
    out["node_id"] = node_id
    if out["loaded_s"] is not None:
        out["rss_kib"] = rss_kib(node_pid(cluster, node_id))
    return out


def log_point(ns: argparse.Namespace, base: str, entries: int) -> dict[str, Any]:
    extra = NO_SNAPSHOTS if ns.log_snapshots == "off" else []
    with started_cluster(3, os.path.join(base, f"log{entries}"), extra) as (cluster, leader):
        settle(cluster, leader, ns.wait_seconds)
        stop_all(cluster, leader)
        log(f"  filling {entries:,} entries into each of 3 data directories")
        fill = fill_cluster(cluster, entries)
        target = fill["last_index"]
        log("  starting all 3 nodes")
        cold = cold_start(cluster, target, ns.wait_seconds)
        if cold["all_loaded_s"] is None:
            raise RuntimeError(f"not every node applied {target} within {ns.wait_seconds} s: "
                               f"{cold['nodes']}")
        leader = cluster.wait_for_leader(timeout=ns.wait_seconds)
        rss = {i: rss_kib(node_pid(cluster, i)) for i in cluster.nodes}
        stats = log_stats(cluster, leader)
        log(f"  restarting node {leader} (the leader) alone")
        one = restart_one(cluster, leader, int(stats["commit_index"]), ns.wait_seconds)
        if one["loaded_s"] is None:
            raise RuntimeError(f"node {leader} did not apply its log within "
                               f"{ns.wait_seconds} s after a restart")
        return {"entries": entries, "fill": fill, "cold_start": cold, "leader": leader,
                "leader_rss_kib": rss[leader], "rss_kib": rss, "leader_log_stats": stats,
                "node_restart": one, "snapshots": ns.log_snapshots,
                "kept_entries": stats["last_index"] - stats["first_index"] + 1}


def series_log_length(ns: argparse.Namespace, base: str) -> list[dict[str, Any]]:
    points = []
    for entries in ns.log_sizes:
        log(f"log_length: {entries:,} entries (snapshots {ns.log_snapshots})")
        points.append(guarded(f"{entries} entries",
                              functools.partial(log_point, ns, base, entries)))
        points[-1].setdefault("entries", entries)
    return points


# --------------------------------------------------------------------- series 5: catch-up
def follower_of(cluster: LocalCluster, leader: int) -> int:
    return max(i for i in cluster.nodes if i != leader)


def catchup_once(cluster: LocalCluster, missed: int, ns: argparse.Namespace) -> dict[str, Any]:
    leader = cluster.wait_for_leader(timeout=ns.wait_seconds)
    follower = follower_of(cluster, leader)
    before = log_stats(cluster, follower)
    cluster.stop(follower)
    fill: dict[str, Any] = {"writes": 0, "failed": 0}
    if missed:
        async def write() -> dict[str, Any]:
            client = await pgraft.connect(cluster.address(leader), timeout=30)
            try:
                op = functools.partial(client.append, b"m" * SMALL_PAYLOAD)
                return await closed_loop_count([op] * ns.in_flight, missed, ns.point_seconds)
            finally:
                await client.close()

        fill = asyncio.run(write())
        fill.pop("samples_s")
        if fill["writes"] < missed:
            raise RuntimeError(f"only {fill['writes']} of {missed} appends succeeded "
                               f"({fill['first_error']})")
    target = int(log_stats(cluster, leader)["commit_index"])
    t0 = time.perf_counter()
    cluster.start_node(follower, wait=False)
    out = asyncio.run(watch_load(cluster.address(follower), target, t0, t0 + ns.wait_seconds))
    if out["loaded_s"] is None:
        raise RuntimeError(f"node {follower} did not reach index {target} within "
                           f"{ns.wait_seconds} s")
    leader_stats = log_stats(cluster, leader)
    after = out.pop("log_stats")
    return {"follower": follower, "missed": missed, "appended": fill["writes"],
            "target_index": target, "answer_s": out["answer_s"],
            "caught_up_s": out["loaded_s"],
            "snapshot_installed": after["snapshot_index"] > before["snapshot_index"],
            "follower_snapshot_index": after["snapshot_index"],
            "leader_first_index": leader_stats["first_index"]}


def catchup_point(ns: argparse.Namespace, cluster: LocalCluster, missed: int) -> dict[str, Any]:
    runs = []
    for r in range(ns.catchup_repeats):
        runs.append(catchup_once(cluster, missed, ns))
        log(f"  {missed:,} missed, run {r + 1}/{ns.catchup_repeats}: caught up in "
            f"{runs[-1]['caught_up_s'] * 1000:.0f} ms")
    times = [x["caught_up_s"] for x in runs]
    answers = [x["answer_s"] for x in runs]
    return {"missed": missed, "runs": runs, "caught_up_s": _spread(times),
            "answer_s": _spread(answers),
            "snapshot_installed": sum(bool(x["snapshot_installed"]) for x in runs)}


def _spread(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
            "n": int(a.size)}


def series_catchup(ns: argparse.Namespace, base: str) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    log(f"catchup: {ns.catchup_entries} entries missed, {ns.catchup_repeats} runs each")

    def run_all() -> dict[str, Any]:
        with started_cluster(3, os.path.join(base, "catchup")) as (cluster, _leader):
            for missed in ns.catchup_entries:
                points.append({"missed": missed, **guarded(
                    f"{missed} missed", functools.partial(catchup_point, ns, cluster, missed))})
        return {}

    failed = guarded("catch-up cluster", run_all)
    if "error" in failed:
        points.append({"missed": None, **failed})
    return points


# ---------------------------------------------------------------------------- report
def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f} ms" if v >= 100 else f"{v:.2f} ms"


def _s(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f} s" if v < 100 else f"{v:,.0f} s"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:g} {unit}" if n % size == 0 else f"{n / size:.1f} {unit}"
    return f"{n} B"


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.0f} MiB"


def _rate(p: dict[str, Any]) -> str:
    t = p["throughput"]
    capped = " (time cap)" if t["time_capped"] else ""
    failed = f", {t['failed']} failed" if t["failed"] else ""
    return f"{t['writes_per_s']:,.0f}/s{capped}{failed}"


def _lat(p: dict[str, Any], key: str) -> str:
    lat = p.get("latency_ms")
    return _ms(lat[key]) if lat else "-"


def _err(p: dict[str, Any], cols: int) -> str:
    return " | ".join(["failed: " + p["error"].replace("|", "/")[:120]] + ["-"] * (cols - 1))


def md_appends(points: list[dict[str, Any]], key: str, label: Callable[[Any], str],
               mib: bool = False) -> list[str]:
    head = f"| {key} | writes/s | " + ("MiB/s | " if mib else "") + \
        "sequential p50 | p99 | writes / sequential |"
    lines = [head, "|---:|---:|" + ("---:|" if mib else "") + "---:|---:|---:|"]
    cols = 5 if mib else 4
    for p in points:
        name = label(p)
        if "error" in p:
            lines.append(f"| {name} | {_err(p, cols)} |")
            continue
        extra = f" {p['mib_per_s']:,.1f} |" if mib else ""
        lines.append(f"| {name} | {_rate(p)} |{extra} {_lat(p, 'p50')} | {_lat(p, 'p99')} | "
                     f"{p['throughput']['writes']:,} / {p['sequential']['writes']:,} |")
    return lines


def md_connections(points: list[dict[str, Any]]) -> list[str]:
    lines = ["| connections | writes/s | p50 | p99 | writes | connecting took |",
             "|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        if "error" in p:
            lines.append(f"| {p['connections']} | {_err(p, 5)} |")
            continue
        lines.append(f"| {p['connections']:,} | {_rate(p)} | {_lat(p, 'p50')} | "
                     f"{_lat(p, 'p99')} | {p['throughput']['writes']:,} | "
                     f"{_s(p['connect_seconds'])} |")
    return lines


def md_log(points: list[dict[str, Any]]) -> list[str]:
    lines = ["| entries | log bytes (leader) | kept in the log | leader VmRSS (anon / file) "
             "| all 3 started: first write | all 3 applied | one node restarted: applied "
             "| its VmRSS | fill (3 dirs) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        if "error" in p:
            lines.append(f"| {p['entries']:,} | {_err(p, 8)} |")
            continue
        r, st, one = p["leader_rss_kib"], p["leader_log_stats"], p["node_restart"]
        kept = f"{p['kept_entries']:,} ({st['first_index']:,}..{st['last_index']:,})"
        fill_s = sum(p["fill"]["seconds_per_node"].values())
        lines.append(
            f"| {p['entries']:,} | {_bytes(int(st['log_bytes']))} | {kept} | "
            f"{_mib(r.get('VmRSS'))} ({_mib(r.get('RssAnon'))} / {_mib(r.get('RssFile'))}) | "
            f"{_s(p['cold_start']['first_write_s'])} | {_s(p['cold_start']['all_loaded_s'])} | "
            f"{_s(one['loaded_s'])} | {_mib(one.get('rss_kib', {}).get('VmRSS'))} | "
            f"{_s(fill_s)} |")
    return lines


def md_catchup(points: list[dict[str, Any]]) -> list[str]:
    lines = ["| entries missed | caught up: median (min .. max) | process start to answering, "
             "median | snapshot sent | runs |", "|---:|---:|---:|---:|---:|"]
    for p in points:
        name = "-" if p["missed"] is None else f"{p['missed']:,}"
        if "error" in p:
            lines.append(f"| {name} | {_err(p, 4)} |")
            continue
        c = p["caught_up_s"]
        lines.append(f"| {name} | {_s(c['median'])} ({_s(c['min'])} .. {_s(c['max'])}) | "
                     f"{_s(p['answer_s']['median'])} | {p['snapshot_installed']} of "
                     f"{c['n']} | {c['n']} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    cfg, m, series = report["config"], report["machine"], report["series"]
    lines = [f"`{report['command']}`", ""]
    if cfg["quick"]:
        lines += ["**Quick run: tiny counts, a smoke test of the script, not a measurement.**",
                  ""]
    lines += [f"{m['date']}; {m['cpus']} CPUs, {m['platform']}, Python {m['python']}, pgraft "
              f"{m['implementation']}, client loop {m['client_loop']}; `pgraft serve` processes "
              f"on loopback, fsync on, one cluster at a time; run took {_s(report['seconds'])}.",
              ""]
    if "cluster_size" in series:
        lines += [f"## Cluster size ({SMALL_PAYLOAD} B values, {cfg['in_flight']} in flight on "
                  "one connection; sequential = one at a time)", ""]
        lines += md_appends(series["cluster_size"], "nodes", lambda p: str(p["nodes"])) + [""]
    if "payload" in series:
        lines += [f"## Payload size (3 nodes, {cfg['in_flight']} in flight on one connection)",
                  ""]
        lines += md_appends(series["payload"], "payload",
                            lambda p: _bytes(p.get("payload_bytes", 0)), mib=True) + [""]
    if "connections" in series:
        lines += ["## Client connections (3 nodes, 64 B, one request in flight per "
                  "connection, all on one event loop; latency under that load)", ""]
        lines += md_connections(series["connections"]) + [""]
    if "log_length" in series:
        kept = ("snapshots off (`--snapshot-entries 0 --snapshot-bytes 0`): the whole log "
                "is kept" if cfg["log_snapshots"] == "off" else
                "node default snapshot settings: nodes snapshot and compact while applying")
        lines += ["## Log length (3 nodes, 64 B entries written into the stopped nodes' data "
                  f"directories with pgraft's DiskStorage; {kept})", ""]
        lines += md_log(series["log_length"]) + [""]
        lines += ["Times from the process start (`Popen`). \"applied\": the node answers "
                  "`log_stats` with its applied index at the log's end; \"first write\": an "
                  "append is accepted, which waits for an election (node default election "
                  "timeout, 1000 ms) and for the leader to apply the log. One node restarted: "
                  "the leader, stopped with SIGTERM (it hands over) and started alone while "
                  "the others run. VmRSS once every node applied the log; file-backed = shared "
                  "libraries and the log segments' mapped pages touched.", ""]
    if "catchup" in series:
        lines += ["## Catch-up (3 nodes, node defaults; one follower stopped with SIGTERM, "
                  "entries appended with 256 in flight, the follower started again)", ""]
        lines += md_catchup(series["catchup"]) + [""]
        lines += ["Time from the follower's process start until its applied index reaches "
                  "the leader's commit index (0 missed: the restart alone).", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots
def _ok(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in points if "error" not in p]


def plots(report: dict[str, Any], prefix: Path) -> list[str]:
    """PNG plots ``<prefix>.<series>.png`` (none if matplotlib is missing)."""
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not installed: no plots (make bench-growth installs it)")
        return []
    matplotlib.use("Agg")
    quick = " (QUICK RUN)" if report["config"]["quick"] else ""
    series = report["series"]
    made = []
    specs = [("cluster_size", "nodes", "nodes", "linear"),
             ("payload", "payload (bytes)", "payload_bytes", "log"),
             ("connections", "client connections", "connections", "log")]
    for name, xlabel, key, scale in specs:
        points = _ok(series.get(name, []))
        if points:
            made.append(_plot_appends(points, name, xlabel, key, scale, quick, prefix))
    if _ok(series.get("log_length", [])):
        made.append(_plot_log(_ok(series["log_length"]), quick, prefix))
    catchup = [p for p in _ok(series.get("catchup", [])) if p["missed"] is not None]
    if catchup:
        made.append(_plot_catchup(catchup, quick, prefix))
    return made


def _save(fig: Any, prefix: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = prefix.with_name(f"{prefix.name}.{name}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _plot_appends(points: list[dict[str, Any]], name: str, xlabel: str, key: str, scale: str,
                  quick: str, prefix: Path) -> str:
    import matplotlib.pyplot as plt

    xs = [p[key] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(xs, [p["throughput"]["writes_per_s"] for p in points], marker="o")
    left.set_ylabel("writes/s")
    left.set_title(f"Throughput vs {xlabel}{quick}")
    lat = [p for p in points if p.get("latency_ms")]
    for q, style in (("p50", "o-"), ("p99", "s--")):
        right.plot([p[key] for p in lat], [p["latency_ms"][q] for p in lat], style, label=q)
    label = "latency under load" if name == "connections" else "sequential append latency"
    right.set_ylabel(f"{label} (ms)")
    right.set_title(f"Latency vs {xlabel}{quick}")
    right.legend()
    for ax in (left, right):
        ax.set_xscale(scale)
        ax.set_xlabel(xlabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
    return _save(fig, prefix, name)


def _plot_log(points: list[dict[str, Any]], quick: str, prefix: Path) -> str:
    import matplotlib.pyplot as plt

    xs = [p["entries"] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, style in (("VmRSS", "o-"), ("RssAnon", "s--"), ("RssFile", "^:")):
        left.plot(xs, [p["leader_rss_kib"].get(key, 0) / 1024 for p in points], style,
                  label=key)
    left.set_ylabel("leader RSS (MiB)")
    left.set_title(f"Leader memory vs log length{quick}")
    left.legend()
    right.plot(xs, [p["cold_start"]["first_write_s"] for p in points], "o-",
               label="all 3 started: first write")
    right.plot(xs, [p["cold_start"]["all_loaded_s"] for p in points], "s--",
               label="all 3 started: all applied")
    right.plot(xs, [p["node_restart"]["loaded_s"] for p in points], "^:",
               label="one node restarted: applied")
    right.set_ylabel("seconds from process start")
    right.set_title(f"Restart time vs log length{quick}")
    right.legend()
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(xs, [_count(v) for v in xs])
        ax.set_xlabel("entries in the log")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
    return _save(fig, prefix, "log_length")


def _count(n: int) -> str:
    """10000 -> 10k, 1000000 -> 1M (axis labels)."""
    for unit, size in (("M", 10**6), ("k", 10**3)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n:,}"


def _plot_catchup(points: list[dict[str, Any]], quick: str, prefix: Path) -> str:
    import matplotlib.pyplot as plt

    xs = [p["missed"] for p in points]
    med = [p["caught_up_s"]["median"] for p in points]
    lo = [m - p["caught_up_s"]["min"] for m, p in zip(med, points, strict=True)]
    hi = [p["caught_up_s"]["max"] - m for m, p in zip(med, points, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=4, label="caught up (min..max)")
    ax.plot(xs, [p["answer_s"]["median"] for p in points], "s--",
            label="process start to answering")
    ax.set_xscale("symlog", linthresh=100)  # 0 (the restart alone) on the same axis
    ax.set_xticks(xs, [_count(x) for x in xs])
    ax.set_xlabel("entries missed")
    ax.set_ylabel("seconds from the follower's process start")
    ax.set_title(f"Follower catch-up vs entries missed{quick}")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, prefix, "catchup")


# ------------------------------------------------------------------------------ main
def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", required=True, metavar="PATH", help="write the results here")
    p.add_argument("--markdown", metavar="PATH", help="also write the Markdown tables here")
    p.add_argument("--quick", action="store_true",
                   help="tiny counts and sizes for every series (a smoke run, < 2 min)")
    p.add_argument("--only", default=",".join(SERIES),
                   help=f"comma-separated series to run (default all: {','.join(SERIES)})")
    p.add_argument("--sizes", type=_ints, default=[3, 5, 7], help="cluster sizes (3,5,7)")
    p.add_argument("--payloads", type=_ints, default=[64, 1024, 4096, 16384, 65536],
                   help="payload sizes in bytes (64,1024,4096,16384,65536)")
    p.add_argument("--connections", type=_ints, default=[1, 10, 100, 1000],
                   help="client connection counts (1,10,100,1000)")
    p.add_argument("--latency-count", type=int, default=5000,
                   help="sequential appends per point, series 1 and 2 (5000)")
    p.add_argument("--throughput-count", type=int, default=100_000,
                   help="appends per throughput point, series 1 (100000)")
    p.add_argument("--payload-throughput-count", type=int, default=15_000,
                   help="appends per throughput point, series 2 (15000: 0.9 GiB at 64 KiB)")
    p.add_argument("--in-flight", type=int, default=256,
                   help="appends in flight on one connection (256)")
    p.add_argument("--connections-count", type=int, default=20_000,
                   help="appends per point of series 3, over all connections (20000)")
    p.add_argument("--max-log", type=int, default=10_000_000,
                   help="the largest log of series 4 (10000000)")
    p.add_argument("--log-sizes", type=_ints, default=list(LOG_LADDER),
                   help="log lengths of series 4, those above --max-log dropped "
                        "(10000,100000,1000000,10000000)")
    p.add_argument("--log-snapshots", choices=["off", "default"], default="off",
                   help="series 4 nodes: 'off' keeps the whole log (default), 'default' "
                        "lets them snapshot and compact while they apply")
    p.add_argument("--catchup-entries", type=_ints, default=[0, 1000, 10_000, 100_000],
                   help="entries a follower misses, series 5 (0,1000,10000,100000; 0 = the "
                        "restart alone)")
    p.add_argument("--catchup-repeats", type=int, default=3, help="runs per point (3)")
    p.add_argument("--point-seconds", type=float, default=60.0,
                   help="time cap of every load loop (60)")
    p.add_argument("--wait-seconds", type=float, default=900.0,
                   help="time cap of every wait for a node to load or catch up (900)")
    ns = p.parse_args(argv)
    if ns.quick:
        ns.latency_count, ns.throughput_count, ns.payload_throughput_count = 100, 2000, 500
        ns.connections_count, ns.catchup_repeats = 1000, 1
        ns.connections = [1, 10, 1000]
        ns.log_sizes, ns.catchup_entries = [1000, 10_000], [0, 1000]
        ns.point_seconds, ns.wait_seconds = 10.0, 60.0
    ns.log_sizes = sorted({n for n in ns.log_sizes if n <= ns.max_log})
    ns.only = [s.strip() for s in ns.only.split(",") if s.strip()]
    for s in ns.only:
        if s not in SERIES:
            p.error(f"unknown series {s!r} (choose from {', '.join(SERIES)})")
    return ns


RUNNERS: dict[str, Callable[[argparse.Namespace, str], list[dict[str, Any]]]] = {
    "cluster_size": series_cluster_size, "payload": series_payload,
    "connections": series_connections, "log_length": series_log_length,
    "catchup": series_catchup}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "implementation": pgraft.IMPLEMENTATION,
            "date": time.strftime("%Y-%m-%d"), "client_loop": _use_uvloop()}


def _use_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def config_of(ns: argparse.Namespace) -> dict[str, Any]:
    keys = ("quick", "only", "sizes", "payloads", "connections", "latency_count",
            "throughput_count", "payload_throughput_count", "in_flight", "connections_count",
            "max_log", "log_sizes", "log_snapshots", "catchup_entries", "catchup_repeats",
            "point_seconds", "wait_seconds")
    return {k: getattr(ns, k) for k in keys}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the with-blocks stop every node


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    args = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/growth.py", *args])
    started = time.perf_counter()
    report: dict[str, Any] = {"command": command, "machine": machine(),
                              "config": config_of(ns), "series": {}}
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="pgraft-growth-") as base:
            for name in ns.only:
                t0 = time.perf_counter()
                report["series"][name] = RUNNERS[name](ns, base)
                log(f"{name} done in {time.perf_counter() - t0:.0f} s")
    except KeyboardInterrupt:
        log("interrupted: every node started was stopped")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    report["seconds"] = time.perf_counter() - started
    out = Path(ns.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    report["plots"] = plots(report, out.with_suffix(""))
    out.write_text(json.dumps(report, indent=1) + "\n")
    if ns.markdown:
        Path(ns.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.markdown).write_text(text)
    print(text)
    log(f"wrote {out}{', ' + ns.markdown if ns.markdown else ''}"
        f"{', ' + ', '.join(report['plots']) if report['plots'] else ''} "
        f"in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
