"""A Jepsen-style chaos campaign against real ``pgraft serve`` processes.

Concurrent clients run ``kv_put``/``kv_get`` on a few keys and ``append``s while a nemesis,
driven by a seed, injects faults: kill -9 of a random node or of the leader, SIGSTOP/SIGCONT
pauses longer than the election timeout, network partitions (majority/minority, isolated
leader, bridge) that drop real packets between per-node network namespaces, loss of the writes
a killed node had not synced, and membership changes (add a node -- it joins as a learner and is
promoted --, remove a follower, remove the leader) at the same time. Every operation is recorded
with monotonic invocation and completion times and an outcome (ok / fail / info = unknown).

After the run every fault is healed, and the campaign checks:

* every key's register history is linearizable (``chaos_checker.check_register``);
* every acknowledged append is in the final log exactly once, at its index, in real-time order,
  and no append reported failed is there;
* all members converge: the same membership, the same log (entry by entry), the same KV
  values, the same commit/applied index; no node exited by itself.

Run ``python tests/chaos/chaos_campaign.py --duration 1800 --seed 42`` (or ``make chaos``);
the exit code is 0 only when no anomaly was found. The seed fixes the fault schedule and the
clients' choices, not the timing, so a failing seed reproduces the same kinds of faults in the
same order; the history file (JSON lines) holds everything that happened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
for _p in (_HERE, _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from chaos_checker import FAIL, INFO, OK, Anomaly, Op, check_appends, check_registers  # noqa: E402
from chaos_disk import cachestat_available, log_has_unsynced, lose_unsynced  # noqa: E402
from chaos_net import NODE_PORT, NetNamespaces, netns_available  # noqa: E402

import pgraft  # noqa: E402
from pgraft.errors import (  # noqa: E402
    ConnectionFailed,
    InvalidArgument,
    LeadershipTransferInProgress,
    MembershipChangeInProgress,
    NodeExists,
    NotLeaderError,
    OutcomeUnknown,
    Overloaded,
    PgraftError,
    StorageFull,
    Unavailable,
    UnknownNode,
)
from pgraft.localcluster import LocalCluster, NodeProcess  # noqa: E402

FAULT_KINDS = ("kill", "kill-leader", "pause", "pause-leader", "partition-halves",
               "partition-leader", "partition-bridge", "lose-unsynced", "membership")

# Errors a write gets only before its proposal entered the log: it certainly did not happen.
# Unavailable (no leader, node not running, connection failed before the request was sent) and
# StorageFull are raised only then; OutcomeUnknown (node stopped or failed, entry overwritten,
# connection lost after sending, commit timeout) and anything else leave the outcome unknown.
DEFINITE_FAILURES = (NotLeaderError, Overloaded, LeadershipTransferInProgress, InvalidArgument,
                     MembershipChangeInProgress, NodeExists, UnknownNode, Unavailable,
                     StorageFull)


def definite_failure(exc: BaseException) -> bool:
    """True when a write that raised ``exc`` certainly did not take effect (by class only)."""
    return isinstance(exc, DEFINITE_FAILURES) and not isinstance(exc, OutcomeUnknown)


def leader_confirmed(lead: int, voters: list[int], named: dict[int, int | None]) -> bool:
    """``lead`` is the leader if a majority of its voters (those that answered, and the
    silent ones counted against it) name it."""
    agree = sum(1 for v in voters if named.get(v) == lead)
    return bool(voters) and agree * 2 > len(voters)


class ChaosCluster(LocalCluster):
    """A LocalCluster whose node ``i`` lives in network namespace ``i`` (when ``net``)."""

    def __init__(self, size: int, net: NetNamespaces | None, **options: Any) -> None:
        self.net = net
        super().__init__(size, **options)

    def _add(self, node_id: int, bootstrap: bool) -> NodeProcess:
        if self.net is None:
            return super()._add(node_id, bootstrap)
        host = self.net.add_node(node_id)
        node = NodeProcess(node_id=node_id, host=host, port=NODE_PORT,
                           data_dir=os.path.join(self.base_dir, f"node{node_id}"),
                           log_path=os.path.join(self.base_dir, f"node{node_id}.log"),
                           bootstrap=bootstrap)
        self.nodes[node_id] = node
        return node

    def command(self, node_id: int) -> list[str]:
        cmd = super().command(node_id)
        return cmd if self.net is None else self.net.exec_prefix(node_id) + cmd


DEFAULT_NODE_ARGS = ("--snapshot-entries", "2000", "--snapshot-keep", "200",
                     "--segment-size", "262144")


DEFAULT_FAILPOINTS = "log.sync=delay:15ms"


@dataclass
class Config:
    seed: int
    duration: float = 60.0
    nodes: int = 5
    keys: int = 3
    key_epoch: float = 30.0
    workers: int = 6
    faults: tuple[str, ...] = FAULT_KINDS
    election_ms: int = 500
    heartbeat_ms: int = 50
    op_timeout: float = 2.0
    #: Extra `pgraft serve` flags. The default snapshots and compacts often, so that faults
    #: also hit snapshot writes, compaction and InstallSnapshot (nodes added after compaction
    #: and restarted nodes that fell behind catch up from a snapshot).
    node_args: tuple[str, ...] = DEFAULT_NODE_ARGS
    #: PGRAFT_FAILPOINTS of every node. The default holds each log sync back a little, so
    #: that a node frozen at a random instant has unsynced entries and the lose-unsynced
    #: fault really drops some (with fast group commit it almost never caught any).
    failpoints: str = DEFAULT_FAILPOINTS
    out_dir: str | None = None
    keep: bool = False
    quiet: bool = False


@dataclass
class Result:
    anomalies: list[Anomaly]
    ops: Counter[str]
    faults: Counter[str]
    membership: Counter[str]
    history_path: str
    elapsed: float
    network: str
    skipped_faults: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.anomalies


class Campaign:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.ops: list[Op] = []
        self.events: list[dict[str, Any]] = []
        self.anomalies: list[Anomaly] = []
        self.notes: list[str] = []
        self.faults: Counter[str] = Counter()
        self.membership: Counter[str] = Counter()
        self.retired: set[int] = set()
        self.down: set[int] = set()  # killed by the nemesis, not restarted yet
        self.leader_hint: int | None = None
        self.lock = asyncio.Lock()
        self.t0 = time.monotonic()
        self.end = self.t0 + cfg.duration
        self.op_seq = 0
        self.skipped: dict[str, str] = {}
        self.net: NetNamespaces | None = None
        self.cluster: ChaosCluster | None = None
        self.base_dir = ""
        self.next_id = cfg.nodes + 1

    # ------------------------------------------------------------------ utilities
    def log(self, text: str) -> None:
        if not self.cfg.quiet:
            print(f"[{time.monotonic() - self.t0:7.2f}s] {text}", flush=True)

    def event(self, kind: str, **info: Any) -> dict[str, Any]:
        ev = {"event": kind, "time": time.monotonic(), **info}
        self.events.append(ev)
        return ev

    @property
    def c(self) -> ChaosCluster:
        assert self.cluster is not None
        return self.cluster

    def alive_ids(self) -> list[int]:
        return [i for i, n in self.c.nodes.items()
                if i not in self.retired and n.running and not n.paused]

    def member_ids(self) -> list[int]:
        return [i for i in self.c.nodes if i not in self.retired]

    async def ask(self, node_id: int, method: str, *args: Any, timeout: float = 1.0) -> Any:
        client = await pgraft.connect(self.c.address(node_id), timeout=timeout)
        try:
            return await getattr(client, method)(*args, timeout=timeout)
        finally:
            await client.close()

    async def find_leader(self, among: list[int] | None = None) -> int | None:
        """The node that says it leads and that a majority of *its* voters name as leader.

        The majority is counted among the voters of the claimed leader's own membership, not
        among the processes the harness runs: a node whose add or removal had an unknown
        outcome keeps running (it is retired only once the final membership is known), and
        such nodes outside the cluster must not be able to outvote its members."""
        ids = among if among is not None else self.alive_ids()

        async def one(i: int) -> int | None:
            try:
                return await self.ask(i, "get_leader", timeout=0.5)
            except PgraftError:
                return None
        named = dict(zip(ids, await asyncio.gather(*(one(i) for i in ids)), strict=True))
        for lead, _count in Counter(n for n in named.values() if n).most_common():
            if lead not in ids:
                continue
            try:
                if not await self.ask(lead, "is_leader", timeout=0.5):
                    continue
                view = await self.ask(lead, "get_nodes", timeout=0.5)
            except PgraftError:
                continue
            voters = [n.node_id for n in view if n.role == "voter"]
            if leader_confirmed(lead, voters, named):
                return lead
        return None

    # ---------------------------------------------------------------------- setup
    def setup(self) -> None:
        cfg = self.cfg
        why = netns_available()
        if why is None:
            self.net = NetNamespaces()
            self.network = f"network namespaces ({self.net.subnet}.0/24, blackhole routes)"
        else:
            self.network = f"loopback (no partitions: {why})"
            for k in FAULT_KINDS:
                if k.startswith("partition"):
                    self.skipped[k] = why
        why = cachestat_available()
        if why is not None:
            self.skipped["lose-unsynced"] = why
        parent = cfg.out_dir or tempfile.gettempdir()
        os.makedirs(parent, exist_ok=True)
        self.base_dir = tempfile.mkdtemp(prefix=f"pgraft-chaos-{cfg.seed}-", dir=parent)
        self.history_path = os.path.join(self.base_dir, "history.jsonl")
        self.cluster = self._cluster(base_dir=self.base_dir,
                                     election_timeout_ms=cfg.election_ms,
                                     heartbeat_interval_ms=cfg.heartbeat_ms, keep=True,
                                     call_timeout=3.0, extra_args=list(cfg.node_args))
        if cfg.failpoints:
            self.cluster.env["PGRAFT_FAILPOINTS"] = cfg.failpoints
        self.cluster.start(timeout=60)

    def _cluster(self, **options: Any) -> ChaosCluster:
        """The cluster under test (chaos_ha.py runs its nodes in HA mode)."""
        return ChaosCluster(self.cfg.nodes, self.net, **options)

    def teardown(self, keep_dir: bool) -> None:
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()
        if self.net is not None:
            self.net.close()
        if not keep_dir and self.base_dir:
            # Keep the history file (small) next to nothing else.
            for name in os.listdir(self.base_dir):
                path = os.path.join(self.base_dir, name)
                if path != self.history_path:
                    if os.path.isdir(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(path)

    # -------------------------------------------------------------------- clients
    def key_for(self, rng: random.Random) -> str:
        epoch = int((time.monotonic() - self.t0) // self.cfg.key_epoch)
        return f"e{epoch}k{rng.randrange(self.cfg.keys)}"

    async def worker(self, w: int) -> None:
        rng = random.Random(self.cfg.seed * 7919 + w)
        conns: dict[int, Any] = {}
        n = 0
        try:
            while time.monotonic() < self.end:
                n += 1
                r = rng.random()
                f = "get" if r < 0.45 else ("put" if r < 0.85 else "append")
                candidates = self.member_ids()
                if not candidates:
                    await asyncio.sleep(0.1)
                    continue
                hint = self.leader_hint
                if hint in candidates and (f != "get" or rng.random() < 0.5):
                    node = hint
                else:
                    node = rng.choice(candidates)
                client = conns.get(node)
                if client is None or client.closed:
                    try:
                        client = await pgraft.connect(self.c.address(node), timeout=1.0)
                    except PgraftError:
                        await asyncio.sleep(0.05)  # nothing was sent: no operation
                        continue
                    conns[node] = client
                self.op_seq += 1
                if f == "append":
                    value: Any = f"a{w}-{n}"
                    key = None
                elif f == "put":
                    value, key = f"v{w}-{n}", self.key_for(rng)
                else:
                    value, key = None, self.key_for(rng)
                op = Op(self.op_seq, w, f, key, value, time.monotonic(), node=node)
                self.ops.append(op)
                try:
                    t = self.cfg.op_timeout
                    if f == "append":
                        pad = rng.choice((8, 200, 1500, 4500, 9000))
                        data = value.encode() + b"|" + bytes([97 + n % 26]) * pad
                        op.result = await asyncio.wait_for(client.append(data, timeout=t),
                                                           t + 2)
                    elif f == "put":
                        await asyncio.wait_for(client.kv_put(key, value, timeout=t), t + 2)
                    else:
                        op.result = await asyncio.wait_for(client.kv_get(key, timeout=t),
                                                           t + 2)
                    op.type = OK
                    if f != "get":
                        self.leader_hint = node
                except (PgraftError, TimeoutError) as exc:
                    definite = definite_failure(exc)
                    op.type = FAIL if definite else INFO
                    op.error = f"{type(exc).__name__}: {exc}"
                    if isinstance(exc, NotLeaderError) and exc.leader_id:
                        self.leader_hint = exc.leader_id
                    elif self.leader_hint == node:
                        self.leader_hint = None
                    if isinstance(exc, ConnectionFailed | TimeoutError):
                        conns.pop(node, None)
                        with contextlib.suppress(Exception):
                            await client.close()
                op.complete = time.monotonic()
                await asyncio.sleep(rng.uniform(0.005, 0.03))
        finally:
            for client in conns.values():
                with contextlib.suppress(Exception):
                    await client.close()

    # -------------------------------------------------------------------- nemesis
    async def pick_target(self, leader: bool, rng: random.Random) -> int | None:
        alive = self.alive_ids()
        if not alive:
            return None
        if leader:
            lead = await self.find_leader()
            if lead is not None and lead in alive:
                return lead
        return rng.choice(alive)

    async def restart(self, node_id: int) -> None:
        if node_id in self.retired or self.c.nodes[node_id].running:
            self.down.discard(node_id)
            return
        try:
            await asyncio.to_thread(self.c.start_node, node_id, wait=True, timeout=30)
        except PgraftError as exc:
            self.anomalies.append(Anomaly("restart-failed", f"node {node_id}: {exc.message}"))
        self.down.discard(node_id)

    async def fault(self, kind: str, rng: random.Random) -> None:
        hold = rng.uniform(1.0, 4.0)
        c = self.c
        if kind in ("kill", "kill-leader", "lose-unsynced"):
            async with self.lock:
                target = await self.pick_target(kind == "kill-leader" or rng.random() < 0.5,
                                                rng)
                if target is None:
                    return
                self.down.add(target)
                if kind == "lose-unsynced":
                    # Crash at a moment when the power-loss model would drop entries: freeze
                    # the node at random instants until its log has unsynced records (a dry
                    # run of the model; bounded), then kill it frozen.
                    caught = 0
                    data_dir = c.nodes[target].data_dir
                    for attempt in range(1, 201):
                        c.pause(target)
                        if await asyncio.to_thread(log_has_unsynced, data_dir):
                            dry = await asyncio.to_thread(lose_unsynced, data_dir, apply=False)
                            if dry.entries_lost:
                                caught = attempt
                                break
                        c.resume(target)
                        await asyncio.sleep(rng.uniform(0.002, 0.02))
                    self.faults["lose-unsynced:frozen-with-unsynced-entries"] += bool(caught)
                await asyncio.to_thread(c.kill, target)
                detail = ""
                if kind == "lose-unsynced":
                    report = await asyncio.to_thread(lose_unsynced, c.nodes[target].data_dir)
                    detail = str(report)
                    self.faults["lose-unsynced:entries-lost"] += report.entries_lost
                    if report.hard_state_reverted:
                        self.faults["lose-unsynced:hard-state-reverted"] += 1
            ev = self.event(kind, node=target, detail=detail)
            self.log(f"fault {kind}: node {target} {detail}")
            try:
                await asyncio.sleep(hold)
            finally:
                async with self.lock:
                    await self.restart(target)
                ev["healed"] = time.monotonic()
        elif kind in ("pause", "pause-leader"):
            hold = rng.uniform(2.0, 6.0) * self.cfg.election_ms / 1000
            async with self.lock:
                target = await self.pick_target(kind == "pause-leader", rng)
                if target is None:
                    return
                c.pause(target)
            ev = self.event(kind, node=target, hold=hold)
            self.log(f"fault {kind}: node {target} for {hold:.1f}s")
            try:
                await asyncio.sleep(hold)
            finally:
                async with self.lock:
                    node = c.nodes[target]
                    if node.running and node.paused:
                        c.resume(target)
                ev["healed"] = time.monotonic()
        else:
            assert self.net is not None
            ids = self.member_ids()
            rng.shuffle(ids)
            if len(ids) < 3:
                return
            if kind == "partition-halves":
                k = (len(ids) - 1) // 2
                groups = [ids[:k], ids[k:]]
                self.net.partition(groups)
            elif kind == "partition-leader":
                lead = await self.find_leader() or ids[0]
                groups = [[lead], [i for i in ids if i != lead]]
                self.net.partition(groups)
            else:  # bridge: two sides that only the bridge node connects
                bridge, rest = ids[0], ids[1:]
                k = len(rest) // 2
                groups = [rest[:k], [bridge], rest[k:]]
                self.net.partition([rest[:k], rest[k:]])
            ev = self.event(kind, groups=groups)
            self.log(f"fault {kind}: {groups}")
            try:
                await asyncio.sleep(hold)
            finally:
                self.net.heal()
                ev["healed"] = time.monotonic()
        self.faults[kind] += 1

    async def nemesis(self) -> None:
        rng = random.Random(self.cfg.seed * 31 + 1)
        kinds = [k for k in self.cfg.faults if k != "membership" and k not in self.skipped]
        if not kinds:
            return
        round_: list[str] = []
        while time.monotonic() < self.end - 2:
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            if time.monotonic() >= self.end - 2:
                break
            if not round_:  # every kind once per round, in a seeded order
                round_ = list(kinds)
                rng.shuffle(round_)
            await self.fault(round_.pop(), rng)

    async def membership_nemesis(self) -> None:
        rng = random.Random(self.cfg.seed * 31 + 2)
        while time.monotonic() < self.end - 5:
            await asyncio.sleep(rng.uniform(4.0, 10.0))
            if time.monotonic() >= self.end - 5:
                break
            lead = await self.find_leader()
            if lead is None:
                continue
            try:
                view = await self.ask(lead, "get_nodes", timeout=2.0)
            except PgraftError:
                continue
            ids = [n.node_id for n in view]
            choices = []
            if len(ids) < self.cfg.nodes + 1 and self.next_id <= 250:
                choices.append("add")
            if len(ids) > max(3, self.cfg.nodes - 1):
                choices += ["remove-follower", "remove-leader"]
            if not choices:
                continue
            action = rng.choice(choices)
            if action == "add":
                await self.add_node(lead)
            else:
                target = lead if action == "remove-leader" else rng.choice(
                    [i for i in ids if i != lead] or [lead])
                await self.remove_node(lead, target, action)

    async def add_node(self, lead: int) -> None:
        new = self.next_id
        self.next_id += 1
        async with self.lock:
            try:
                node = await asyncio.to_thread(self.c.start_empty, new, wait=True, timeout=30)
            except PgraftError as exc:
                self.anomalies.append(Anomaly("start-failed", f"node {new}: {exc.message}"))
                return
        outcome, err = await self.change(lead, "add_node", new, node.host, node.port)
        self.membership[f"add:{outcome}"] += 1
        self.event("membership", action="add", node=new, leader=lead, outcome=outcome,
                   error=err)
        self.log(f"membership: add node {new} via {lead}: {outcome} {err or ''}")
        if outcome == FAIL:
            async with self.lock:
                await self.retire(new)

    async def remove_node(self, lead: int, target: int, action: str) -> None:
        outcome, err = await self.change(lead, "remove_node", target)
        self.membership[f"{action}:{outcome}"] += 1
        self.event("membership", action=action, node=target, leader=lead, outcome=outcome,
                   error=err)
        self.log(f"membership: {action} node {target} via {lead}: {outcome} {err or ''}")
        if outcome == OK:
            await asyncio.sleep(0.5)
            async with self.lock:
                await self.retire(target)

    async def retire(self, node_id: int) -> None:
        """Stop a node that left the cluster and free its data (its log file stays)."""
        self.retired.add(node_id)
        await asyncio.to_thread(self.c.stop, node_id)
        await asyncio.to_thread(shutil.rmtree, self.c.nodes[node_id].data_dir, True)

    async def change(self, lead: int, method: str, *args: Any) -> tuple[str, str | None]:
        try:
            client = await pgraft.connect(self.c.address(lead), timeout=2.0)
        except PgraftError as exc:  # nothing was sent
            return FAIL, f"{type(exc).__name__}: {exc.message}"
        try:
            await getattr(client, method)(*args, timeout=5.0)
            return OK, None
        except PgraftError as exc:
            return (FAIL if definite_failure(exc) else INFO), f"{type(exc).__name__}: {exc.message}"
        finally:
            await client.close()

    # ---------------------------------------------------------------- final phase
    async def heal_all(self) -> None:
        if self.net is not None:
            self.net.heal()
        async with self.lock:
            for i, node in self.c.nodes.items():
                if i in self.retired:
                    continue
                if node.running and node.paused:
                    self.c.resume(i)
                if not node.running:
                    if i not in self.down:
                        self.anomalies.append(Anomaly(
                            "node-exited", f"node {i} exited by itself (code "
                            f"{node.proc.returncode if node.proc else None}); its log ends "
                            f"with:\n{node.log_tail(15)}"))
                    await self.restart(i)

    async def wait_for(self, what: str, check: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                result = await check()
                if result:
                    return result
            except PgraftError as exc:
                last = exc
            await asyncio.sleep(0.2)
        self.anomalies.append(Anomaly("no-convergence", f"{what} within {timeout:.0f}s after "
                                      f"healing" + (f" (last error: {last})" if last else "")))
        return None

    async def final_checks(self) -> None:
        await self.heal_all()
        lead = await self.wait_for("a leader", self.find_leader, 30)
        if lead is None:
            return

        async def final_append() -> int | None:
            leader = await self.find_leader()
            if leader is None:
                return None
            self.op_seq += 1
            op = Op(self.op_seq, -1, "append", None, f"final-{self.op_seq}", time.monotonic(),
                    node=leader)
            self.ops.append(op)
            try:
                op.result = await self.ask(leader, "append", op.value.encode() + b"|",
                                           timeout=3.0)
                op.type = OK
            except PgraftError as exc:
                op.type, op.error = (FAIL if definite_failure(exc) else INFO), str(exc)
            op.complete = time.monotonic()
            return op.result if op.type == OK else None

        if await self.wait_for("a committed append", final_append, 30) is None:
            return
        lead = await self.find_leader() or lead
        view = await self.ask(lead, "get_nodes", timeout=3.0)
        members = sorted(n.node_id for n in view)
        async with self.lock:
            for i in list(self.c.nodes):
                if i not in members and i not in self.retired:
                    await self.retire(i)
        for i in members:
            if i in self.retired or i not in self.c.nodes:
                self.anomalies.append(Anomaly("membership", f"node {i} is a member but was "
                                              f"removed by an acknowledged change"))
                return

        async def converged() -> dict[int, dict[str, Any]] | None:
            stats = {}
            for i in members:
                s = await self.ask(i, "status", timeout=2.0)
                stats[i] = s
            shape = {(s["commit_index"], s["applied_index"], s["last_index"])
                     for s in stats.values()}
            if len(shape) != 1:
                return None
            commit, applied, last = next(iter(shape))
            views = set()
            for i in members:
                v = await self.ask(i, "get_nodes", timeout=2.0)
                views.add(tuple((n.node_id, n.address, n.port, n.role) for n in v))
            if len(views) != 1 or commit != last or applied != last:
                return None
            if {x[0] for x in next(iter(views))} != set(members):
                return None
            if any(x[3] != "voter" for x in next(iter(views))):
                return None  # a learner not promoted yet
            return stats

        stats = await self.wait_for(f"convergence of nodes {members} (membership, commit, "
                                    "applied and last index, every node a voter)",
                                    converged, 60)
        if stats is None:
            return
        self.final_members = members
        await self.check_kv(members)
        await self.check_log(members, stats)

    async def check_kv(self, members: list[int]) -> None:
        keys = sorted({o.key for o in self.ops if o.key is not None})
        for key in keys:
            seen = {}
            for i in members:
                self.op_seq += 1
                op = Op(self.op_seq, -2, "get", key, None, time.monotonic(), node=i)
                try:
                    op.result = await self.ask(i, "kv_get", key, timeout=3.0)
                    op.type = OK
                    self.ops.append(op)
                    seen[i] = op.result
                except PgraftError as exc:
                    self.anomalies.append(Anomaly("final-read-failed",
                                                  f"kv_get {key} on node {i}: {exc}"))
                op.complete = time.monotonic()
            if len(set(seen.values())) > 1:
                self.anomalies.append(Anomaly("kv-divergence", f"key {key}: {seen}"))

    async def check_log(self, members: list[int], stats: dict[int, dict[str, Any]]) -> None:
        last = next(iter(stats.values()))["last_index"]
        first = max(s["first_index"] for s in stats.values())
        logs: dict[int, list[tuple[int, int, bytes]]] = {}
        for i in members:
            client = await pgraft.connect(self.c.address(i), timeout=5.0)
            try:
                entries = []
                for lo in range(first, last + 1, 256):
                    batch = await asyncio.gather(*(client.get_entry(j, timeout=5.0)
                                                   for j in range(lo, min(last, lo + 255) + 1)))
                    for e in batch:
                        if e is None:
                            entries.append((-1, -1, "missing", b"", None))
                            continue
                        data = bytes(e["data"])
                        pid = (data.split(b"|", 1)[0].decode("utf-8", "replace")
                               if e["kind"] == "append" else None)
                        entries.append((e["term"], e["type"], e["kind"],
                                        hashlib.blake2b(data, digest_size=16).digest(), pid))
                logs[i] = entries
            finally:
                await client.close()
        ref_id = members[0]
        ref = logs[ref_id]
        for i in members[1:]:
            if logs[i] != ref:
                at = next(k for k, (a, b) in enumerate(zip(ref, logs[i], strict=False))
                          if a != b) + first if len(ref) == len(logs[i]) else "length"
                self.anomalies.append(Anomaly("log-divergence", f"nodes {ref_id} and {i} "
                                              f"differ at index {at}"))
        final_log: dict[int, str | None] = {}
        for k, entry in enumerate(ref):
            final_log[first + k] = entry[4]
        appends = [o for o in self.ops if o.f == "append"
                   and not (o.type == OK and o.result is not None and o.result < first)]
        stats_a, anomalies = check_appends(appends, final_log)
        self.append_stats = stats_a
        self.anomalies += anomalies
        self.log_len = last
        snaps = [s.get("snapshot") or {} for s in stats.values()]
        self.notes.append(
            f"compaction: the final node processes took {sum(x.get('taken', 0) for x in snaps)} "
            f"and installed {sum(x.get('installed', 0) for x in snaps)} snapshots; the logs "
            f"start at index {first} of {last} (appends below it are covered by snapshots, "
            "not checked in the log)")

    # ------------------------------------------------------------------------ run
    async def run_async(self) -> None:
        tasks = [asyncio.create_task(self.worker(w)) for w in range(self.cfg.workers)]
        nem = [asyncio.create_task(self.nemesis())]
        if "membership" in self.cfg.faults:
            nem.append(asyncio.create_task(self.membership_nemesis()))
        try:
            await asyncio.gather(*tasks)
            for t in nem:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(t, 15)
        finally:
            for t in tasks + nem:
                t.cancel()
            for t in tasks + nem:
                with contextlib.suppress(BaseException):
                    await t
        self.log("load stopped; healing and checking")
        await self.final_checks()

    def write_history(self) -> None:
        with open(self.history_path, "w") as f:
            f.write(json.dumps({"config": {k: v for k, v in vars(self.cfg).items()},
                                "network": self.network, "t0": self.t0}) + "\n")
            for o in self.ops:
                f.write(json.dumps(o.to_json()) + "\n")
            for ev in self.events:
                f.write(json.dumps(ev, default=str) + "\n")
            for a in self.anomalies:
                f.write(json.dumps({"anomaly": a.kind, "detail": a.detail, "ops": a.ops})
                        + "\n")

    def run(self) -> Result:
        started = time.monotonic()
        ok = False
        try:
            self.setup()
            self.t0 = time.monotonic()
            self.end = self.t0 + self.cfg.duration
            asyncio.run(self.run_async())
            for o in self.ops:  # operations cut off by the end of the run
                if o.complete is None and o.type == OK:
                    o.type = INFO
            results, anomalies = check_registers(self.ops)
            self.anomalies += anomalies
            self.register_results = results
            ok = not self.anomalies
        finally:
            if self.base_dir:
                self.write_history()
            self.teardown(keep_dir=self.cfg.keep or not ok)
        ops: Counter[str] = Counter(f"{o.f}:{o.type}" for o in self.ops if o.process >= 0)
        return Result(self.anomalies, ops, self.faults, self.membership, self.history_path,
                      time.monotonic() - started, self.network, self.skipped, self.notes)


def summary(cfg: Config, r: Result) -> str:
    lines = [f"chaos campaign: seed {cfg.seed}, {cfg.duration:.0f}s of load, {cfg.nodes} nodes, "
             f"{cfg.workers} clients, {cfg.keys} keys per {cfg.key_epoch:.0f}s epoch; "
             f"network: {r.network}; {r.elapsed:.0f}s in all",
             f"node flags: {' '.join(cfg.node_args) or '(defaults)'}; "
             f"PGRAFT_FAILPOINTS={cfg.failpoints or '(none)'}"]
    total = sum(r.ops.values())
    lines.append(f"operations: {total}  " + "  ".join(f"{k}={v}" for k, v in sorted(r.ops.items())))
    lines.append("faults: " + ("  ".join(f"{k}={v}" for k, v in sorted(r.faults.items()))
                               or "none"))
    lines.append("membership changes: " + ("  ".join(f"{k}={v}" for k, v in
                                                    sorted(r.membership.items())) or "none"))
    for k, why in sorted(r.skipped_faults.items()):
        lines.append(f"fault kind {k} skipped: {why}")
    lines.extend(r.notes)
    lines.append(f"anomalies: {len(r.anomalies)}")
    for a in r.anomalies[:20]:
        lines.append(f"  - {a}")
    if r.anomalies:
        lines.append(f"FAILED: reproduce with seed {cfg.seed} (make chaos SEED={cfg.seed} "
                     f"DURATION={cfg.duration:.0f}); history: {r.history_path} (data "
                     f"directories and node logs kept next to it)")
    else:
        lines.append(f"history: {r.history_path}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float,
                   default=float(os.environ.get("CHAOS_DURATION", "1800")),
                   help="seconds of load and faults (default 1800, env CHAOS_DURATION)")
    p.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "0")) or None,
                   help="seed of the fault schedule and the clients (default: random, env "
                        "CHAOS_SEED)")
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--keys", type=int, default=3)
    p.add_argument("--faults", default=",".join(FAULT_KINDS),
                   help=f"comma-separated fault kinds (default all: {','.join(FAULT_KINDS)})")
    p.add_argument("--out-dir", default=os.environ.get("CHAOS_OUT_DIR"),
                   help="where the run directory (history, and on failure the data) goes")
    p.add_argument("--node-args", default=os.environ.get("CHAOS_NODE_ARGS",
                                                        " ".join(DEFAULT_NODE_ARGS)),
                   help="extra `pgraft serve` flags (default: frequent snapshots and "
                        f"compaction: {' '.join(DEFAULT_NODE_ARGS)!r}; env CHAOS_NODE_ARGS)")
    p.add_argument("--failpoints", default=os.environ.get("CHAOS_FAILPOINTS",
                                                         DEFAULT_FAILPOINTS),
                   help="PGRAFT_FAILPOINTS of every node (default "
                        f"{DEFAULT_FAILPOINTS!r}: syncs held back so that lose-unsynced drops "
                        "entries; '' for none; env CHAOS_FAILPOINTS)")
    p.add_argument("--keep", action="store_true", help="keep data directories and logs")
    p.add_argument("--quiet", action="store_true")
    ns = p.parse_args(argv)
    seed = ns.seed or random.SystemRandom().randrange(1, 1 << 31)
    faults = tuple(k.strip() for k in ns.faults.split(",") if k.strip())
    unknown = set(faults) - set(FAULT_KINDS)
    if unknown:
        p.error(f"unknown fault kinds: {sorted(unknown)}")
    cfg = Config(seed=seed, duration=ns.duration, nodes=ns.nodes, workers=ns.workers,
                 keys=ns.keys, faults=faults, node_args=tuple(shlex.split(ns.node_args)),
                 failpoints=ns.failpoints,
                 out_dir=ns.out_dir, keep=ns.keep, quiet=ns.quiet)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    result = Campaign(cfg).run()
    print(summary(cfg, result), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
