"""Whole-cluster benchmark: 3 ``pgraft serve`` processes on loopback (fsync on), measured from
this separate client process, against this machine's own floor measured in the same run.

    python benchmarks/cluster.py --json benchmarks/results/cluster.json \\
        --markdown benchmarks/results/cluster.md

Measures (the targets in brackets):

- sequential ``append`` of 64 bytes: p50 [<= 0.5 ms], p99 [<= 2 ms];
- appends/s with 256 in flight on one connection [>= 50,000/s];
- ``add_node`` to commit: p50 [<= 5 ms] (each added node is removed again, not timed);
- leader ``kill -9`` -> a new leader accepting writes, ``--election-timeout 150``, 20 kills:
  p99 [<= 600 ms] (the killed node is restarted and caught up before the next kill);
- the floor: ``fdatasync`` of 64 bytes written into already-written space on the file system
  of the data directories (what the log does; appending to a growing file is reported too), and
  a 64-byte loopback TCP round trip to another process; floor = the fdatasync p50 + two round
  trips. Also the floor on one disk: the three nodes' syncs of one commit started at once on
  this machine's one disk (``floor_commit_on_one_disk``) + two round trips.

``--quick`` runs every part with tiny counts (to check that the script works).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pgraft  # noqa: E402
from pgraft.errors import MembershipChangeInProgress, PgraftError  # noqa: E402
from pgraft.localcluster import LocalCluster, free_port, wait_until  # noqa: E402

PAYLOAD = b"x" * 64

TARGETS = {
    "append_p50_ms": ("<=", 0.5),
    "append_p99_ms": ("<=", 2.0),
    "throughput_per_s": (">=", 50_000),
    "add_node_p50_ms": ("<=", 5.0),
    "failover_p99_ms": ("<=", 600.0),
}


def pcts(samples_s: list[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds (numpy percentiles) of samples in seconds."""
    a = np.asarray(samples_s, dtype=float) * 1000.0
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "n": int(a.size)}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------- floor
def floor_fdatasync(directory: str, count: int) -> dict[str, float]:
    """Latency of write(64 B) + fdatasync in ``directory``, into space already written (zeros
    written and synced first): what the log's appends do, since it zeroes its segments ahead
    of the tail. Appending to a growing file instead also commits the new size to the journal
    on every sync (see ``floor_fdatasync_growing``)."""
    path = os.path.join(directory, "fdatasync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    samples = []
    try:
        os.write(fd, bytes(len(PAYLOAD) * count + 4096))
        os.fsync(fd)
        for i in range(count):
            t0 = time.perf_counter()
            os.pwrite(fd, PAYLOAD, i * len(PAYLOAD))
            os.fdatasync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return pcts(samples)


def floor_fdatasync_growing(directory: str, count: int) -> dict[str, float]:
    """Latency of write(64 B) + fdatasync appending to a file that grows with each write."""
    path = os.path.join(directory, "fdatasync-probe-growing")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    samples = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            os.write(fd, PAYLOAD)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return pcts(samples)


_SYNC_LOOP = r"""
import json, os, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, bytes(64 * 200_000)); os.fsync(fd)
print("ready", flush=True); sys.stdin.readline()
samples, i, stop = [], 0, time.perf_counter() + seconds
while time.perf_counter() < stop and i < 200_000:
    t0 = time.perf_counter()
    os.pwrite(fd, b"x" * 64, 64 * i)
    os.fdatasync(fd)
    samples.append(time.perf_counter() - t0)
    i += 1
os.close(fd); os.unlink(path)
print(json.dumps(samples), flush=True)
"""


def floor_fdatasync_concurrent(directory: str, writers: int = 3,
                               seconds: float = 3.0) -> dict[str, float]:
    """``writers`` processes at once, each in a loop of pwrite(64 B) + fdatasync into its own
    preallocated file in ``directory`` (three nodes' logs on one disk): the p50 of one sync
    then, and how many syncs per second each writer and all of them together got."""
    procs = [subprocess.Popen([sys.executable, "-c", _SYNC_LOOP,
                               os.path.join(directory, f"sync-probe-{i}"), str(seconds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for i in range(writers)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        runs = [json.loads(proc.communicate(timeout=seconds + 60)[0]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    every = [x for run in runs for x in run]
    out = pcts(every)
    out["writers"] = writers
    out["syncs_per_s_each"] = float(np.mean([len(run) / sum(run) for run in runs]))
    out["syncs_per_s_total"] = out["syncs_per_s_each"] * writers
    return out


def floor_commit_on_one_disk(directory: str, count: int, nodes: int = 3) -> dict[str, Any]:
    """The syncs of one durable commit of a ``nodes``-node cluster whose logs share this one
    disk (as the benchmarks' clusters do): ``count`` rounds, each starting a pwrite(64 B) +
    fdatasync into every node's own preallocated file at once (one thread per node: the
    leader's write and its followers' run in parallel in a real cluster), timed from the first
    start until the leader's sync and those of a majority's followers are done -- what a
    commit waits for, without the network. The p50 of the leader's own sync in these rounds is
    reported too: on a disk that serializes flushes, each sync of three at once takes longer
    than one alone."""
    paths = [os.path.join(directory, f"commit-probe-{i}") for i in range(nodes)]
    fds = [os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) for path in paths]
    need = nodes // 2  # followers whose sync the commit waits for, beside the leader's
    start = threading.Barrier(nodes + 1, timeout=30)
    finish = threading.Barrier(nodes + 1, timeout=30)
    started = [0.0] * nodes
    ended = [0.0] * nodes

    def node(k: int) -> None:
        fd = fds[k]
        for i in range(count):
            start.wait()
            started[k] = time.perf_counter()
            os.pwrite(fd, PAYLOAD, i * len(PAYLOAD))
            os.fdatasync(fd)
            ended[k] = time.perf_counter()
            finish.wait()

    commits: list[float] = []
    leader: list[float] = []
    threads = [threading.Thread(target=node, args=(k,), daemon=True) for k in range(nodes)]
    try:
        for fd in fds:
            os.write(fd, bytes(len(PAYLOAD) * count + 4096))
            os.fsync(fd)
        for t in threads:
            t.start()
        for _ in range(count):
            start.wait()
            finish.wait()
            quorum_follower = sorted(ended[1:])[need - 1] if need else ended[0]
            commits.append(max(ended[0], quorum_follower) - min(started))
            leader.append(ended[0] - started[0])
    except BaseException:
        # release the threads waiting at a barrier (only then: aborting a barrier the threads
        # are still leaving would fail their last wait)
        start.abort()
        finish.abort()
        raise
    finally:
        for t in threads:
            t.join(30)
        for fd, path in zip(fds, paths, strict=True):
            os.close(fd)
            os.unlink(path)
    out: dict[str, Any] = pcts(commits)
    out["nodes"] = nodes
    out["leader_sync_p50"] = pcts(leader)["p50"]
    return out


_ECHO = r"""
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept(); conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    data = conn.recv(65536)
    if not data:
        break
    conn.sendall(data)
"""


def floor_loopback_rtt(count: int) -> dict[str, float]:
    """Round trip of 64 bytes over loopback TCP to an echo server in another process."""
    proc = subprocess.Popen([sys.executable, "-c", _ECHO], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        samples = []
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(count):
                t0 = time.perf_counter()
                s.sendall(PAYLOAD)
                got = 0
                while got < len(PAYLOAD):
                    got += len(s.recv(65536))
                samples.append(time.perf_counter() - t0)
    finally:
        proc.kill()
        proc.wait(10)
    return pcts(samples)


# ----------------------------------------------------------------------- cluster
async def bench_append_latency(address: str, count: int) -> dict[str, float]:
    client = await pgraft.connect(address, timeout=10)
    try:
        for _ in range(min(50, count)):  # warm up connections and caches
            await client.append(PAYLOAD)
        samples = []
        for _ in range(count):
            t0 = time.perf_counter()
            await client.append(PAYLOAD)
            samples.append(time.perf_counter() - t0)
    finally:
        await client.close()
    return pcts(samples)


async def bench_throughput(address: str, total: int, in_flight: int) -> dict[str, float]:
    client = await pgraft.connect(address, timeout=30)
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await client.append(PAYLOAD)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        elapsed = time.perf_counter() - t0
    finally:
        await client.close()
    return {"appends_per_s": total / elapsed, "n": total, "in_flight": in_flight,
            "seconds": elapsed}


async def bench_add_node(address: str, count: int, first_id: int) -> dict[str, float]:
    client = await pgraft.connect(address, timeout=30)
    samples = []
    try:
        for i in range(count):
            node_id, port = first_id + i, free_port()
            while True:
                t0 = time.perf_counter()
                try:
                    await client.add_node(node_id, "127.0.0.1", port)
                except MembershipChangeInProgress:
                    await asyncio.sleep(0.005)
                    continue
                samples.append(time.perf_counter() - t0)
                break
            while True:  # undo it (not timed); the id is never reused
                try:
                    await client.remove_node(node_id)
                    break
                except MembershipChangeInProgress:
                    await asyncio.sleep(0.005)
    finally:
        await client.close()
    return pcts(samples)


async def _first_write(addresses: list[str], deadline: float) -> float:
    """The perf_counter time at which some node in ``addresses`` accepted an append."""
    clients: dict[str, pgraft.AsyncClient] = {}
    try:
        while time.perf_counter() < deadline:
            for address in addresses:
                if address not in clients or clients[address].closed:
                    try:
                        clients[address] = await pgraft.connect(address, timeout=0.5)
                    except PgraftError:
                        continue
            attempts = [c.append(PAYLOAD, timeout=1.0) for c in clients.values()]
            results = await asyncio.gather(*attempts, return_exceptions=True)
            if any(isinstance(r, int) for r in results):
                return time.perf_counter()
            await asyncio.sleep(0.002)
        raise PgraftError("no new leader accepted a write within the deadline")
    finally:
        for c in clients.values():
            await c.close()


def bench_failover(cluster: LocalCluster, kills: int) -> dict[str, float]:
    samples = []
    for k in range(kills):
        leader = cluster.wait_for_leader(timeout=60)
        survivors = [cluster.address(i) for i in cluster.nodes if i != leader]
        # Connections to the survivors are opened after the kill too (inside the timing):
        # a real client has to find the new leader as well.
        t0 = time.perf_counter()
        os.kill(cluster.nodes[leader].proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        elapsed = asyncio.run(_first_write(survivors, time.perf_counter() + 30)) - t0
        cluster.nodes[leader].proc.wait(10)  # type: ignore[union-attr]
        samples.append(elapsed)
        log(f"  kill {k + 1}/{kills}: node {leader} -> writes accepted after "
            f"{elapsed * 1000:.0f} ms")
        cluster.start_node(leader, timeout=60)
        new = cluster.wait_for_leader(timeout=60)
        with cluster.client(new) as c:
            last = c.log_stats()["last_index"]
        wait_until(f"node {leader} to catch up",
                   lambda n=leader, idx=last: _applied(cluster, n) >= idx, 60)
    return pcts(samples)


def _applied(cluster: LocalCluster, node_id: int) -> int:
    with cluster.client(node_id, 2.0) as c:
        return int(c.log_stats()["applied_index"])


# ------------------------------------------------------------------------ report
def verdicts(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    values = {
        "append_p50_ms": results["append_latency_ms"]["p50"],
        "append_p99_ms": results["append_latency_ms"]["p99"],
        "throughput_per_s": results["throughput"]["appends_per_s"],
        "add_node_p50_ms": results["add_node_commit_ms"]["p50"],
        "failover_p99_ms": results["failover_ms"]["p99"],
    }
    out = {}
    for name, (op, target) in TARGETS.items():
        value = values[name]
        out[name] = {"value": value, "target": f"{op} {target:g}",
                     "met": value <= target if op == "<=" else value >= target}
    return out


def floor_ms(floor: dict[str, Any]) -> float:
    """A client-seen durable commit on three nodes with a disk each: one fdatasync (the
    leader's and a follower's run in parallel) and two round trips (client -> leader ->
    follower and back)."""
    return float(floor["fdatasync_64b_ms"]["p50"] + 2 * floor["loopback_rtt_ms"]["p50"])


def floor_one_disk_ms(floor: dict[str, Any]) -> float:
    """The same on this machine, where the three nodes' logs share one disk: the commit's
    syncs measured at once (``floor_commit_on_one_disk``) and two round trips."""
    return float(floor["commit_syncs_one_disk_ms"]["p50"] + 2 * floor["loopback_rtt_ms"]["p50"])


def markdown(report: dict[str, Any]) -> str:
    r = report["results"]
    v = report["verdicts"]
    floor = r["floor"]
    rows = [
        ("sequential append 64 B, p50", f"{r['append_latency_ms']['p50']:.3f} ms",
         v["append_p50_ms"]),
        ("sequential append 64 B, p99", f"{r['append_latency_ms']['p99']:.3f} ms",
         v["append_p99_ms"]),
        (f"appends/s, {r['throughput']['in_flight']} in flight",
         f"{r['throughput']['appends_per_s']:,.0f}/s", v["throughput_per_s"]),
        ("add_node to commit, p50", f"{r['add_node_commit_ms']['p50']:.3f} ms",
         v["add_node_p50_ms"]),
        (f"leader kill -9 -> new leader accepting writes, p99 "
         f"({r['failover_ms']['n']} kills, election timeout "
         f"{report['config']['election_timeout_ms']} ms)",
         f"{r['failover_ms']['p99']:.0f} ms", v["failover_p99_ms"]),
    ]
    lines = ["| measurement | result | target | met |", "|---|---|---|---|"]
    for name, value, verdict in rows:
        lines.append(f"| {name} | {value} | {verdict['target']} | "
                     f"{'yes' if verdict['met'] else 'no'} |")
    lines += [
        "",
        "| machine floor (same run) | p50 | p99 |",
        "|---|---|---|",
        f"| write 64 B into written space + fdatasync | "
        f"{floor['fdatasync_64b_ms']['p50']:.3f} ms | {floor['fdatasync_64b_ms']['p99']:.3f} ms |",
        f"| append 64 B to a growing file + fdatasync | "
        f"{floor['fdatasync_64b_growing_file_ms']['p50']:.3f} ms | "
        f"{floor['fdatasync_64b_growing_file_ms']['p99']:.3f} ms |",
        f"| loopback TCP round trip, 64 B | {floor['loopback_rtt_ms']['p50']:.3f} ms | "
        f"{floor['loopback_rtt_ms']['p99']:.3f} ms |",
        f"| a commit's syncs on this one disk: 3 nodes' write 64 B + fdatasync at once, until "
        f"the leader's and a follower's are done | "
        f"{floor['commit_syncs_one_disk_ms']['p50']:.3f} ms | "
        f"{floor['commit_syncs_one_disk_ms']['p99']:.3f} ms |",
        "",
        f"append p50 / floor (fdatasync p50 + 2 x round trip p50 = {floor_ms(floor):.3f} ms) = "
        f"{report['ratios']['append_p50_over_floor']:.2f}",
        "",
        f"append p50 / floor on one disk (a commit's syncs p50 + 2 x round trip p50 = "
        f"{floor_one_disk_ms(floor):.3f} ms) = "
        f"{report['ratios']['append_p50_over_floor_one_disk']:.2f}",
        "",
        f"{report['machine']['cpus']} CPUs, Python {report['machine']['python']}, "
        f"pgraft {report['machine']['implementation']}"
        + (" (quick run: tiny counts, not a measurement)" if report["config"]["quick"] else ""),
    ]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, metavar="PATH", help="write results here")
    parser.add_argument("--markdown", metavar="PATH", help="also write a Markdown table")
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--latency-count", type=int, default=5000)
    parser.add_argument("--throughput-count", type=int, default=200_000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--add-count", type=int, default=50)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--election-timeout", type=int, default=150, metavar="MS",
                        help="election timeout of the kill -9 cluster (default 150)")
    parser.add_argument("--floor-count", type=int, default=2000)
    ns = parser.parse_args(argv)
    if ns.quick:
        ns.latency_count, ns.throughput_count, ns.add_count = 50, 2000, 3
        ns.kills, ns.floor_count = 2, 50
    try:
        import uvloop

        loop_name = "uvloop"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        loop_name = "asyncio"

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pgraft-bench-") as base:
        log("floor: fdatasync and loopback round trip")
        results["floor"] = {"fdatasync_64b_ms": floor_fdatasync(base, ns.floor_count),
                            "fdatasync_64b_growing_file_ms": floor_fdatasync_growing(
                                base, ns.floor_count),
                            "loopback_rtt_ms": floor_loopback_rtt(ns.floor_count),
                            "commit_syncs_one_disk_ms": floor_commit_on_one_disk(
                                base, ns.floor_count)}

        with LocalCluster(3, base_dir=os.path.join(base, "steady")) as cluster:
            cluster.start(timeout=60)
            leader = cluster.wait_for_leader(timeout=60)
            address = cluster.address(leader)
            log(f"append latency ({ns.latency_count} sequential appends on node {leader})")
            results["append_latency_ms"] = asyncio.run(
                bench_append_latency(address, ns.latency_count))
            log(f"throughput ({ns.throughput_count} appends, {ns.in_flight} in flight)")
            results["throughput"] = asyncio.run(
                bench_throughput(address, ns.throughput_count, ns.in_flight))
            log(f"add_node to commit ({ns.add_count} adds)")
            results["add_node_commit_ms"] = asyncio.run(
                bench_add_node(address, ns.add_count, first_id=100))

        with LocalCluster(3, base_dir=os.path.join(base, "failover"),
                          election_timeout_ms=ns.election_timeout) as cluster:
            cluster.start(timeout=60)
            log(f"failover ({ns.kills} leader kills, election timeout {ns.election_timeout} ms)")
            results["failover_ms"] = bench_failover(cluster, ns.kills)

    floor = results["floor"]
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "implementation": pgraft.IMPLEMENTATION,
                    "client_loop": loop_name},
        "config": {"quick": ns.quick, "latency_count": ns.latency_count,
                   "throughput_count": ns.throughput_count, "in_flight": ns.in_flight,
                   "add_count": ns.add_count, "kills": ns.kills,
                   "election_timeout_ms": ns.election_timeout, "floor_count": ns.floor_count,
                   "payload_bytes": len(PAYLOAD)},
        "results": results,
        "ratios": {"append_p50_over_floor": results["append_latency_ms"]["p50"]
                   / floor_ms(floor),
                   "append_p50_over_floor_one_disk": results["append_latency_ms"]["p50"]
                   / floor_one_disk_ms(floor)},
    }
    report["verdicts"] = verdicts(results)
    Path(ns.json).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.json).write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    if ns.markdown:
        Path(ns.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.markdown).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
