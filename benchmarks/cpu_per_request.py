"""CPU work per append at N in flight, per process: the client, the leader, the followers.

Wall-clock throughput on a shared 2-vCPU machine is noisy. This runs the 256-in-flight load of
``benchmarks/cluster.py`` (one ``AsyncClient``, ``N`` coroutines calling ``append`` of 64 bytes
on it, uvloop) against a 3-node local cluster, and reports user+sys CPU microseconds per append
of every process over the measured window, and the nodes' Ready batches, syncs and messages per
1000 appends (CPU per append depends on how the load was batched)::

    python benchmarks/cpu_per_request.py --count 100000 --runs 3
    python benchmarks/cpu_per_request.py --nodes-tree ../wt-before --client-tree ../wt-before

``--nodes-tree`` / ``--client-tree`` name the source trees the cluster and the client run from
(default: this tree), so a client of one version can be measured against nodes of another.
``--profile-client PATH`` writes the client's cProfile stats of the measured window;
``--profile-nodes DIR`` runs every node under cProfile and leaves ``DIR/node<ID>.prof`` and
``DIR/leader`` there.

CPU seconds are less noisy than wall-clock time but not steady either: on a busy machine (or
two vCPUs sharing a core) every process's CPU time per append grows with the load around it,
its own cluster's included. Compare medians of interleaved runs, or count instructions:
``--callgrind DIR`` runs every node under ``valgrind --tool=callgrind`` (with rare ticks and no
deadline sweeps, so that per-second work does not depend on how slowly the run went) and leaves
``DIR/node<ID>.out`` and ``DIR/leader`` there; run it with two ``--count`` values and divide the
difference of the counts by the difference of the counts of appends to get instructions per
append without the start-up (batching still differs a little from run to run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent

# The client process: connect, warm up, report ready, wait for "go", run, report CPU.
_CLIENT = r"""
import asyncio, json, os, resource, sys
tree, address, count, in_flight, warmup, profile, timeout = sys.argv[1:8]
sys.path.insert(0, tree)
import pgraft, uvloop
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
PAYLOAD = b"x" * 64

async def load(client, total, in_flight):
    remaining = total
    async def worker():
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await client.append(PAYLOAD)
    await asyncio.gather(*(worker() for _ in range(in_flight)))

async def main():
    client = await pgraft.connect(address, timeout=float(timeout))
    await load(client, int(warmup), int(in_flight))
    print("ready", flush=True)
    sys.stdin.readline()
    prof = None
    if profile:
        import cProfile
        prof = cProfile.Profile()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = asyncio.get_running_loop().time()
    if prof is not None:
        prof.enable()
    await load(client, int(count), int(in_flight))
    if prof is not None:
        prof.disable()
    t1 = asyncio.get_running_loop().time()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    await client.close()
    if prof is not None:
        prof.dump_stats(profile)
    print(json.dumps({"user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                      "seconds": t1 - t0, "impl": pgraft.IMPLEMENTATION,
                      "file": pgraft.__file__}), flush=True)

asyncio.run(main())
"""

_TICK = os.sysconf("SC_CLK_TCK")
#: Node counters reported per 1000 appends: how the load was batched, which CPU per append
#: depends on (fewer, larger Ready batches cost less per append).
_COUNTERS = ("ready_batches", "syncs", "messages_sent", "messages_received")


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, sys) CPU seconds of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def node_counters(cluster: Any, node_id: int) -> dict[str, int]:
    with cluster.client(node_id, 600.0) as c:
        metrics = c.status()["metrics"]
    return {k: int(metrics[k]) for k in _COUNTERS}


def load_cluster_class(tree: str) -> Any:
    sys.path.insert(0, tree)
    try:
        from pgraft.localcluster import LocalCluster  # after the restructure
    except ImportError:
        from pgraft.demo import LocalCluster  # type: ignore[no-redef]  # before it
    return LocalCluster


def run_once(cluster_cls: Any, ns: argparse.Namespace, base: str) -> dict[str, Any]:
    callgrind = ns.callgrind
    profile = ns.profile_nodes
    # Under callgrind, rare ticks and no deadline sweeps: what a node does per second rather
    # than per append (heartbeats, ticks, expiring answered requests) would otherwise be
    # counted in proportion to how slowly the run went.
    cluster = cluster_cls(3, base_dir=base,
                          election_timeout_ms=20_000 if callgrind else None,
                          heartbeat_interval_ms=2_000 if callgrind else None)
    if profile or callgrind:
        plain = cluster.command

        def command(node_id: int) -> list[str]:
            cmd = plain(node_id)
            if callgrind:
                out = os.path.join(os.path.abspath(callgrind), f"node{node_id}.out")
                return ["valgrind", "--tool=callgrind", "--quiet",
                        f"--callgrind-out-file={out}"] + cmd
            out = os.path.join(os.path.abspath(profile), f"node{node_id}.prof")
            return [cmd[0], "-m", "cProfile", "-o", out] + cmd[1:]

        cluster.command = command
    with cluster:
        cluster.start(timeout=300 if callgrind else 60)
        leader = cluster.wait_for_leader(timeout=300 if callgrind else 60)
        client = subprocess.Popen(
            [sys.executable, "-c", _CLIENT, os.path.abspath(ns.client_tree),
             cluster.address(leader), str(ns.count), str(ns.in_flight), str(ns.warmup),
             ns.profile_client or "", "3600" if callgrind else "30"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert client.stdin is not None and client.stdout is not None
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("the client did not start")
        pids = {i: n.proc.pid for i, n in cluster.nodes.items()}
        m0 = {i: node_counters(cluster, i) for i in pids}
        before = {i: proc_cpu(p) for i, p in pids.items()}
        client.stdin.write("go\n")
        client.stdin.flush()
        out = json.loads(client.stdout.readline())
        after = {i: proc_cpu(p) for i, p in pids.items()}
        m1 = {i: node_counters(cluster, i) for i in pids}
        client.wait(30)
        if profile or callgrind:
            Path(profile or callgrind, "leader").write_text(f"{leader}\n")
            for node in cluster.nodes.values():  # SIGTERM: cProfile writes on a clean exit
                node.proc.terminate()
            for node in cluster.nodes.values():
                node.proc.wait(300)
    n = ns.count
    res: dict[str, Any] = {"appends_per_s": n / out["seconds"], "impl": out["impl"],
                           "client_file": out["file"],
                           "client_us": (out["user"] + out["sys"]) / n * 1e6,
                           "client_user_us": out["user"] / n * 1e6}
    followers = []
    for i in pids:
        du = after[i][0] - before[i][0]
        ds = after[i][1] - before[i][1]
        if i == leader:
            res["leader_us"] = (du + ds) / n * 1e6
            res["leader_user_us"] = du / n * 1e6
        else:
            followers.append((du + ds) / n * 1e6)
    res["followers_us"] = sorted(followers)
    res["per_1000_appends"] = {
        ("leader" if i == leader else f"node{i}"): {
            k: round((m1[i][k] - m0[i][k]) * 1000 / n, 1) for k in _COUNTERS} for i in pids}
    res["total_us"] = res["client_us"] + res["leader_us"] + sum(followers)
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes-tree", default=str(HERE))
    parser.add_argument("--client-tree", default=str(HERE))
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--profile-client", metavar="PATH")
    parser.add_argument("--profile-nodes", metavar="DIR")
    parser.add_argument("--callgrind", metavar="DIR")
    parser.add_argument("--json", action="store_true", help="one JSON line per run")
    ns = parser.parse_args(argv)
    cluster_cls = load_cluster_class(os.path.abspath(ns.nodes_tree))
    for _ in range(ns.runs):
        with tempfile.TemporaryDirectory(prefix="pgraft-cpu-") as base:
            t0 = time.perf_counter()
            res = run_once(cluster_cls, ns, base)
            res["wall_s"] = time.perf_counter() - t0
        if ns.json:
            print(json.dumps(res), flush=True)
        else:
            print(f"client {res['client_us']:6.1f} us  leader {res['leader_us']:6.1f} us  "
                  f"followers {res['followers_us'][0]:5.1f}/{res['followers_us'][1]:5.1f} us  "
                  f"total {res['total_us']:6.1f} us/append  "
                  f"({res['appends_per_s']:,.0f}/s, {res['impl']})", flush=True)
            for who, counters in sorted(res["per_1000_appends"].items()):
                print(f"    {who}: " + ", ".join(f"{k} {v:g}" for k, v in counters.items())
                      + " per 1000 appends", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
