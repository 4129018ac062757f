"""PySyncObj for ``benchmarks/compare.py``: 3 ``SyncObj`` node processes on loopback, each with a
replicated dict (``pysyncobj.batteries.ReplDict``), and the load generated inside the leader
process, as PySyncObj's API intends (there is no client protocol: the application lives in the
node).

Configuration: ``SyncObjConf()`` defaults (no journal file, so nothing is written to disk, let
alone fsynced; commands batched per tick, ``autoTickPeriod`` 50 ms, election timeout drawn from
0.4-1.4 s, ``appendEntriesPeriod`` 100 ms). Only the cluster used for the membership test turns
on ``dynamicMembershipChange``, which membership changes require.

Run as a script, this file is one node: ``compare_pysyncobj.py node --self HOST:PORT --partners
A,B [--dynamic]``. It prints ``{"ready": true}`` on stdout once bound, then answers JSON-line
requests from stdin (``{"id", "op", ...}`` -> ``{"id", "ok", ...}``); see :func:`_handle`.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# ============================================================================ node side
_VALUE = b"v" * 64  # compare_common.PAYLOAD; not imported so that the node loads nothing else


def _node_status(obj: Any) -> dict[str, Any]:
    for _ in range(100):  # the tick thread may change the node sets while we copy them
        try:
            others = [n.address for n in obj.otherNodes]
            break
        except RuntimeError:
            time.sleep(0.001)
    leader = obj._getLeader()
    return {"leader": obj._isLeader(), "leader_addr": leader.address if leader else None,
            "nodes": sorted([obj.selfNode.address, *others]), "commit": obj.raftCommitIndex,
            "applied": obj.raftLastApplied, "ready": obj.isReady(), "term": obj.raftCurrentTerm}


def _latency(store: Any, count: int, max_seconds: float) -> dict[str, Any]:
    """Sequential ``set(..., sync=True)``; a write that fails (the leader changed: DISCARDED,
    NOT_LEADER, ...) is counted and left out of the samples."""
    from pysyncobj import SyncObjException

    warm = 0
    give_up = time.perf_counter() + 30
    while warm < min(20, count):
        try:
            store.set(f"k{warm}", _VALUE, sync=True, timeout=10)
            warm += 1
        except SyncObjException:
            if time.perf_counter() > give_up:
                raise
    samples = []
    failed = 0
    stop = time.perf_counter() + max_seconds
    for i in range(count):
        t0 = time.perf_counter()
        try:
            store.set(f"k{i & 1023}", _VALUE, sync=True, timeout=10)
        except SyncObjException:
            failed += 1
            continue
        t1 = time.perf_counter()
        samples.append(t1 - t0)
        if t1 > stop:
            break
    return {"samples": samples, "failed": failed}


def _throughput(store: Any, window: int, seconds: float) -> dict[str, Any]:
    """Keep ``window`` asynchronous ``set`` calls in flight: each callback (run by PySyncObj's
    tick thread) starts the next call until the deadline."""
    from compare_common import cpu_times, machine_busy
    from pysyncobj import FAIL_REASON

    lock = threading.Lock()
    finished = threading.Event()
    st = {"done": 0, "failed": 0, "outstanding": window, "n": 0}
    errors: list[int] = []
    deadline = time.perf_counter() + seconds

    def issue() -> None:
        with lock:
            st["n"] += 1
            key = f"k{st['n'] & 1023}"
        store.set(key, _VALUE, callback=on_result)

    def on_result(result: Any, err: int) -> None:
        with lock:
            if err == FAIL_REASON.SUCCESS:
                st["done"] += 1
            else:
                st["failed"] += 1
                if not errors:
                    errors.append(err)
            more = time.perf_counter() < deadline
            if not more:
                st["outstanding"] -= 1
                if st["outstanding"] == 0:
                    finished.set()
        if more:
            issue()

    busy0, cpu0, t0 = cpu_times(), time.process_time(), time.perf_counter()
    for _ in range(window):
        issue()
    if not finished.wait(seconds + 60):
        raise TimeoutError(f"{st['outstanding']} of {window} calls never completed")
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return {"in_flight": window, "writes_per_s": st["done"] / elapsed, "writes": st["done"],
            "failed": st["failed"], "first_error": f"FAIL_REASON {errors[0]}" if errors else None,
            "seconds": elapsed, "process_cpu": cpu / elapsed,
            "machine_cpu_busy": machine_busy(busy0, cpu_times())}


def _first_write(store: Any, max_seconds: float) -> dict[str, Any]:
    """Start an asynchronous ``set`` every 5 ms until one succeeds (commands on a follower are
    forwarded to the leader it knows; with ``commandsWaitLeader`` they wait for one)."""
    from pysyncobj import FAIL_REASON

    ok = threading.Event()

    def on_result(result: Any, err: int) -> None:
        if err == FAIL_REASON.SUCCESS:
            ok.set()

    deadline = time.perf_counter() + max_seconds
    while not ok.is_set():
        if time.perf_counter() > deadline:
            return {"written": False}
        store.set("failover", _VALUE, callback=on_result)
        ok.wait(0.005)
    return {"written": True}


def _membership(obj: Any, op: str, address: str, timeout: float) -> dict[str, Any]:
    from pysyncobj import FAIL_REASON

    done = threading.Event()
    outcome: list[int] = []

    def on_result(result: Any, err: int) -> None:
        outcome.append(err)
        done.set()

    call = obj.addNodeToCluster if op == "add" else obj.removeNodeFromCluster
    call(address, callback=on_result)
    if not done.wait(timeout):
        return {"applied": False, "fail_reason": None}
    return {"applied": outcome[0] == FAIL_REASON.SUCCESS, "fail_reason": outcome[0]}


def _handle(obj: Any, store: Any, req: dict[str, Any]) -> dict[str, Any]:
    op = req["op"]
    if op == "status":
        return _node_status(obj)
    if op == "latency":
        return _latency(store, int(req["count"]), float(req["max_seconds"]))
    if op == "throughput":
        return _throughput(store, int(req["window"]), float(req["seconds"]))
    if op == "first_write":
        return _first_write(store, float(req["max_seconds"]))
    if op in ("add", "remove"):
        return _membership(obj, op, req["address"], float(req.get("timeout", 30)))
    raise ValueError(f"unknown op {op!r}")


def node_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="compare_pysyncobj.py node")
    parser.add_argument("--self", required=True, dest="self_address")
    parser.add_argument("--partners", required=True)
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamicMembershipChange=True (needed to add members)")
    ns = parser.parse_args(argv)
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    out = sys.stdout
    store = ReplDict()
    conf = SyncObjConf(dynamicMembershipChange=True) if ns.dynamic else SyncObjConf()
    partners = [p for p in ns.partners.split(",") if p]
    obj = SyncObj(ns.self_address, partners, conf=conf, consumers=[store])
    obj.waitBinded()
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "exit":
            break
        try:
            reply = {"id": req["id"], "ok": True, **_handle(obj, store, req)}
        except Exception as exc:  # reported to the driver, which decides
            reply = {"id": req["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    obj.destroy()
    return 0


# ========================================================================== driver side
if __name__ != "__main__":
    from compare_common import Processes, free_port, log, log_tail, summary, wait_for


@dataclass
class SyncObjNode:
    address: str
    partners: list[str]
    log_path: str
    dynamic: bool
    proc: subprocess.Popen[bytes] | None = None
    replies: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    next_id: int = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class SyncObjCluster:
    """``size`` PySyncObj node processes on loopback, driven over their stdin/stdout."""

    def __init__(self, base_dir: str, size: int = 3, *, dynamic: bool = False) -> None:
        self.base_dir = base_dir
        self.dynamic = dynamic
        self.procs = Processes()
        addresses = [f"127.0.0.1:{free_port()}" for _ in range(size)]
        self.nodes: dict[str, SyncObjNode] = {}
        for i, a in enumerate(addresses):
            self.nodes[a] = SyncObjNode(
                address=a, partners=[p for p in addresses if p != a],
                log_path=os.path.join(base_dir, f"syncobj{i + 1}.log"), dynamic=dynamic)

    def start_node(self, node: SyncObjNode, timeout: float = 30.0) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "node", "--self", node.address,
               "--partners", ",".join(node.partners)] + (["--dynamic"] if node.dynamic else [])
        node.proc = self.procs.start(cmd, log_path=node.log_path, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        node.replies = queue.Queue()
        proc = node.proc

        def reader() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                node.replies.put(json.loads(line))
            node.replies.put({"eof": True})

        threading.Thread(target=reader, daemon=True).start()
        first = self._reply(node, timeout)
        if not first.get("ready"):
            raise RuntimeError(f"PySyncObj node {node.address} did not start: {first}; "
                               f"its log ends with:\n{log_tail(node.log_path)}")

    def _reply(self, node: SyncObjNode, timeout: float) -> dict[str, Any]:
        try:
            reply = node.replies.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"PySyncObj node {node.address} did not answer within "
                               f"{timeout:g}s") from None
        if reply.get("eof"):
            raise RuntimeError(f"PySyncObj node {node.address} exited; its log ends with:\n"
                               f"{log_tail(node.log_path)}")
        return reply

    def send(self, node: SyncObjNode, op: str, **args: Any) -> int:
        """Send a request; return its id (collect the answer with :meth:`receive`)."""
        if not node.running or node.proc is None or node.proc.stdin is None:
            raise RuntimeError(f"PySyncObj node {node.address} is not running")
        node.next_id += 1
        node.proc.stdin.write((json.dumps({"id": node.next_id, "op": op, **args}) + "\n")
                              .encode())
        node.proc.stdin.flush()
        return node.next_id

    def receive(self, node: SyncObjNode, request_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            reply = self._reply(node, max(0.001, deadline - time.monotonic()))
            if reply.get("id") == request_id:
                if not reply["ok"]:
                    raise RuntimeError(f"PySyncObj node {node.address}: {reply['error']}")
                return reply

    def call(self, node: SyncObjNode, op: str, timeout: float = 10.0,
             **args: Any) -> dict[str, Any]:
        return self.receive(node, self.send(node, op, **args), timeout)

    def start(self, timeout: float = 60.0) -> SyncObjNode:
        for node in self.nodes.values():
            self.start_node(node)
        return self.wait_for_leader(timeout)

    def leader(self) -> SyncObjNode | None:
        """The node that says it leads, if the other running nodes name it too and it has
        applied its entries (``isReady``)."""
        running = [n for n in self.nodes.values() if n.running]
        statuses = {n.address: self.call(n, "status", 5.0) for n in running}
        leaders = [a for a, s in statuses.items() if s["leader"]]
        if len(leaders) != 1 or not statuses[leaders[0]]["ready"]:
            return None
        named = sum(1 for s in statuses.values() if s["leader_addr"] == leaders[0])
        return self.nodes[leaders[0]] if named * 2 > len(running) else None

    def wait_for_leader(self, timeout: float = 60.0) -> SyncObjNode:
        result: SyncObjNode = wait_for("a PySyncObj leader", self.leader, timeout)
        return result

    def wait_settled(self, timeout: float = 180.0) -> SyncObjNode:
        """Wait until every running node names the same leader and has applied what the leader
        had committed (a node still connecting would otherwise see changes seconds late)."""
        def settled() -> SyncObjNode | None:
            leader = self.leader()
            if leader is None:
                return None
            commit = self.call(leader, "status", 5.0)["commit"]
            for n in self.nodes.values():
                if n.running:
                    st = self.call(n, "status", 5.0)
                    if st["leader_addr"] != leader.address or st["applied"] < commit:
                        return None
            return leader
        result: SyncObjNode = wait_for("every PySyncObj node to follow one leader", settled,
                                       timeout)
        return result

    def close(self) -> None:
        for node in self.nodes.values():
            if node.running and node.proc is not None and node.proc.stdin is not None:
                try:
                    node.proc.stdin.write(b'{"op": "exit"}\n')
                    node.proc.stdin.close()
                except OSError:
                    pass
        self.procs.close()

    def __enter__(self) -> SyncObjCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bench_add_member(cluster: SyncObjCluster, count: int) -> dict[str, Any]:
    """``count`` times: start a new node (partners: the current members), then time from
    ``addNodeToCluster`` on the leader until every node, the new one too, lists it. Each added
    node is removed and stopped again (not timed)."""
    listed, api = [], []
    for i in range(count):
        leader = cluster.wait_settled()
        existing = [n for n in cluster.nodes.values() if n.running]
        address = f"127.0.0.1:{free_port()}"
        new = SyncObjNode(address=address, partners=[n.address for n in existing],
                          log_path=os.path.join(cluster.base_dir, f"syncobj-added{i + 1}.log"),
                          dynamic=True)
        cluster.start_node(new)
        leader = cluster.wait_settled()
        t0 = time.perf_counter()
        reply = cluster.call(leader, "add", 30.0, address=address)
        t_api = time.perf_counter()
        if not reply["applied"]:
            raise RuntimeError(f"PySyncObj addNodeToCluster({address}) failed: {reply}")

        def everywhere(members: tuple[SyncObjNode, ...] = (*existing, new),
                       address: str = address) -> bool:
            ids = [(n, cluster.send(n, "status")) for n in members]
            return all(address in cluster.receive(n, rid, 5.0)["nodes"] for n, rid in ids)

        wait_for(f"PySyncObj node {address} listed everywhere", everywhere, 60, 0.001)
        t_listed = time.perf_counter()
        api.append(t_api - t0)
        listed.append(t_listed - t0)
        log(f"  PySyncObj add {i + 1}/{count}: addNodeToCluster {1000 * (t_api - t0):.1f} ms, "
            f"listed everywhere {1000 * (t_listed - t0):.1f} ms")
        reply = cluster.call(cluster.wait_for_leader(), "remove", 30.0, address=address)
        if not reply["applied"]:
            raise RuntimeError(f"PySyncObj removeNodeFromCluster({address}) failed: {reply}")
        assert new.proc is not None
        cluster.procs.stop(new.proc)
    return {"listed_everywhere_ms": summary(listed), "member_add_call_ms": summary(api)}


def bench_failover(cluster: SyncObjCluster, kills: int) -> dict[str, Any]:
    """``kills`` times: kill -9 the leader, then time until a write started on a survivor
    succeeds; restart the killed node (it has no state on disk: it rejoins empty and receives
    everything again) and wait until it has caught up."""
    samples = []
    for k in range(kills):
        victim = cluster.wait_settled()
        survivors = [n for n in cluster.nodes.values() if n is not victim]
        assert victim.proc is not None
        t0 = time.perf_counter()
        Processes.kill9(victim.proc)
        pending = {n.address: (n, cluster.send(n, "first_write", max_seconds=30))
                   for n in survivors}
        first = None
        while pending:
            for address, (n, rid) in list(pending.items()):
                try:
                    reply = n.replies.get_nowait()
                except queue.Empty:
                    continue
                if reply.get("eof"):
                    raise RuntimeError(f"PySyncObj node {address} exited; its log ends with:"
                                       f"\n{log_tail(n.log_path)}")
                if reply.get("id") != rid:
                    continue
                del pending[address]
                if reply.get("written") and first is None:
                    first = time.perf_counter()
            time.sleep(0.0002)
        if first is None:
            raise TimeoutError("no PySyncObj node accepted a write after the leader died")
        samples.append(first - t0)
        log(f"  PySyncObj kill {k + 1}/{kills}: {victim.address} -> writes accepted after "
            f"{(first - t0) * 1000:.0f} ms")
        cluster.start_node(victim)
        leader = cluster.wait_for_leader()
        target = cluster.call(leader, "status")["commit"]
        wait_for(f"{victim.address} to catch up",
                 lambda n=victim, t=target: cluster.call(n, "status")["applied"] >= t, 60)
    return summary(samples)


def run_all(base_dir: str, *, latency_count: int, latency_max_s: float, windows: list[int],
            window_seconds: float, adds: int, kills: int) -> dict[str, Any]:
    """Latency, throughput at each window and failover on a 3-node cluster with PySyncObj's
    defaults, then member adds on a second cluster with dynamicMembershipChange."""
    import importlib.metadata

    os.makedirs(base_dir, exist_ok=True)
    out: dict[str, Any] = {"version": importlib.metadata.version("pysyncobj")}
    with SyncObjCluster(base_dir, 3) as cluster:
        cluster.start()
        leader = cluster.wait_settled()
        log(f"PySyncObj: latency ({latency_count} sequential sync writes in the leader "
            f"{leader.address}, at most {latency_max_s:g} s)")
        r = cluster.call(leader, "latency", latency_max_s + 60, count=latency_count,
                         max_seconds=latency_max_s)
        out["latency_samples_s"] = r["samples"]
        out["latency_ms"] = summary(r["samples"], cdf=True)
        out["latency_failed"] = r["failed"]
        out["throughput"] = []
        for w in windows:
            leader = cluster.wait_settled()
            r = cluster.call(leader, "throughput", window_seconds + 90, window=w,
                             seconds=window_seconds)
            r.pop("id"), r.pop("ok")
            log(f"  PySyncObj {w} in flight: {r['writes_per_s']:,.0f} writes/s "
                f"(leader process CPU {r['process_cpu']:.0%}, machine CPU "
                f"{r['machine_cpu_busy'] or 0:.0%} busy, {r['failed']} failed)")
            out["throughput"].append(r)
        if kills:
            log(f"PySyncObj: failover ({kills} leader kills)")
            out["failover_ms"] = bench_failover(cluster, kills)
    if adds:
        add_dir = os.path.join(base_dir, "dynamic")
        os.makedirs(add_dir, exist_ok=True)
        with SyncObjCluster(add_dir, 3, dynamic=True) as cluster:
            cluster.start()
            log(f"PySyncObj: add member ({adds} times, dynamicMembershipChange=True)")
            out["add_member"] = bench_add_member(cluster, adds)
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "node":
        sys.exit(node_main(sys.argv[2:]))
    sys.exit("usage: compare_pysyncobj.py node --self HOST:PORT --partners A,B [--dynamic]")
