"""A seeded simulation of the HA lease policy (pgraft.ha.policy) under faults.

Real time advances in fixed steps. Every node has its own monotonic clock whose rate is
redrawn now and then within the assumed bound (1 ± ρ), and runs the real
:class:`~pgraft.ha.policy.LeasePolicy` and :class:`~pgraft.ha.records.HaState`. Raft is
abstracted to what the policy relies on: one log, appended to by a leader that reaches a
majority, applied by every node in order after a delay; a leader that is paused, crashed or
cut off is replaced after an election delay. Faults: pauses (the clock keeps counting),
crashes (the node restarts with empty memory and replays the log), partitions (one node cut
off both ways), message delays, clock-rate changes.

After every step the checker asserts:

1. no two nodes hold a valid lease at once (each judged by its own clock and its own applied
   state — what it would use to accept a commit);
2. a promotion takes effect only after the previous holder's lease has expired on every clock
   within the bound (the real time since the start of the last renewal that took effect is at
   least ``duration / (1 - ρ)``);
3. the promoted node was the most up-to-date eligible replica the leader could hear.

A failing run raises :class:`Violation` naming the seed; ``PGRAFT_HA_SIM_SEED=N`` replays it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgraft.ha.lease import LeaseSettings
from pgraft.ha.policy import Bootstrap, LeasePolicy, Promote, Renew, Transfer
from pgraft.ha.records import HaState, encode
from pgraft.ha.types import PG_MISSING, PG_PRIMARY, PG_REPLICA, PgObservation

STEP = 0.01


class Violation(AssertionError):
    pass


@dataclass
class SimNode:
    node_id: int
    policy: LeasePolicy
    clock: float
    rate: float
    ha: HaState = field(default_factory=HaState)
    applied: int = 0
    seen_at: float | None = None
    paused_until: float = 0.0
    down_until: float = 0.0
    lsn: int = 0
    pg_primary: bool = False   # its PostgreSQL runs as primary (promoted)

    def up(self, t: float) -> bool:
        return t >= self.paused_until and t >= self.down_until


class Simulation:
    def __init__(self, seed: int, *, nodes: int = 3, duration: float = 60.0,
                 settings: LeaseSettings | None = None,
                 policy_factory: Callable[[int, LeaseSettings], LeasePolicy] = LeasePolicy
                 ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.settings = settings or LeaseSettings()
        self.rho = self.settings.max_clock_drift
        self.duration = duration
        self.factory = policy_factory
        self.t = 0.0
        self.nodes = {i: self._new_node(i) for i in range(1, nodes + 1)}
        self.log: list[list[Any]] = []
        self.truth = HaState()          # the log applied at commit time
        self.leader: int | None = None
        self.election_at = 0.5
        self.isolated: dict[int, float] = {}  # node -> until
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.renew_starts: dict[int, float] = {}  # lease_index -> real time its renewal began
        self.promotions = 0
        self.trace: list[str] = []

    def _new_node(self, i: int) -> SimNode:
        return SimNode(i, self.factory(i, self.settings), clock=self.rng.uniform(0, 1000),
                       rate=self._rate())

    def _rate(self) -> float:
        return 1 + self.rng.uniform(-self.rho, self.rho)

    # ------------------------------------------------------------------ plumbing
    def at(self, delay: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self.events, (self.t + delay, self._seq, fn))

    def connected(self, a: int, b: int) -> bool:
        return a == b or (self.isolated.get(a, 0) <= self.t and self.isolated.get(b, 0) <= self.t)

    def delay(self) -> float:
        return self.rng.choice((0.001, 0.002, 0.005, 0.02)) if self.rng.random() < 0.95 \
            else self.rng.uniform(0.05, 0.4)

    def fail(self, what: str) -> None:
        tail = "\n".join(self.trace[-25:])
        raise Violation(f"seed {self.seed} at t={self.t:.3f}s: {what}\n(replay: "
                        f"PGRAFT_HA_SIM_SEED={self.seed})\nlast events:\n{tail}")

    def note(self, text: str) -> None:
        self.trace.append(f"{self.t:8.3f} {text}")

    # ------------------------------------------------------------------ the log
    def majority_with(self, leader: int) -> bool:
        n = sum(1 for i, x in self.nodes.items() if x.up(self.t) and self.connected(leader, i))
        return n * 2 > len(self.nodes)

    def commit(self, proposer: int, cmd: list[Any]) -> bool | None:
        """Append at the leader now; None if there is no leader able to commit."""
        lead = self.leader
        if lead is None or not self.nodes[lead].up(self.t) or not self.connected(proposer, lead) \
                or not self.majority_with(lead):
            return None
        index = len(self.log) + 1
        before = (self.truth.epoch, self.truth.primary_id)
        kind, took = self.truth.apply(index, encode(cmd))
        self.log.append(cmd)
        self.note(f"commit #{index} {cmd} -> {took}")
        if kind == "promote" and took:
            self.check_promotion(before, cmd)
        return took

    def apply_pending(self, node: SimNode) -> None:
        while node.applied < len(self.log):
            node.applied += 1
            before = node.ha.lease_index
            node.ha.apply(node.applied, encode(self.log[node.applied - 1]))
            if node.ha.lease_index != before:
                node.seen_at = node.clock
            if node.ha.primary_id != node.node_id:
                node.policy.drop_lease() if node.ha.epoch else None
                if node.pg_primary:
                    node.pg_primary = False
                    self.note(f"node {node.node_id} demoted (epoch {node.ha.epoch})")

    # ------------------------------------------------------------------ checks
    def check_promotion(self, before: tuple[int, int | None], cmd: list[Any]) -> None:
        self.promotions += 1
        _, node_id, _new_epoch, _epoch, lease_index, _ = cmd
        start = self.renew_starts.get(lease_index)
        if start is not None and (self.t - start) * (1 - self.rho) < self.settings.duration:
            self.fail(f"node {node_id} promoted {self.t - start:.3f}s after the start of the "
                      f"renewal at index {lease_index}: the old lease may still be valid on a "
                      "clock within the bound")

    def check_single_holder(self) -> None:
        holders = [i for i, x in self.nodes.items()
                   if x.down_until <= self.t and x.policy.lease_valid(x.clock, x.ha)]
        if len(holders) > 1:
            self.fail(f"nodes {holders} hold a valid lease at once")

    # ------------------------------------------------------------------ behaviour
    def report(self, node: SimNode) -> PgObservation:
        if node.ha.epoch == 0 or self.truth.system_id is None and not node.pg_primary:
            return PgObservation(role=PG_MISSING)
        role = PG_PRIMARY if node.pg_primary else PG_REPLICA
        return PgObservation(role=role, timeline=1, received_lsn=node.lsn,
                             replayed_lsn=node.lsn, system_id=42)

    def step_node(self, node: SimNode) -> None:
        if not node.up(self.t):
            return
        self.apply_pending(node) if self.connected(node.node_id, self.leader or 0) else None
        ha = node.ha
        renew = node.policy.holder_step(node.clock, ha, self.report(node)
                                        if node.pg_primary else PgObservation(role=PG_REPLICA))
        if renew is not None:
            self.send_renewal(node, renew)
        if node.policy.lease_valid(node.clock, ha):
            if not node.pg_primary:
                node.pg_primary = True
                self.note(f"node {node.node_id} promotes its PostgreSQL (epoch {ha.epoch})")
                if self.truth.system_id is None:
                    self.commit(node.node_id, ["initialized", node.node_id, ha.epoch, 42, 1])
            node.lsn += self.rng.randint(0, 3)   # commits on the primary
        if self.leader == node.node_id and node.applied == len(self.log):
            self.leader_step(node)

    def send_renewal(self, node: SimNode, renew: Renew) -> None:
        real_start = self.t
        cmd = ["renew", node.node_id, renew.epoch]

        def arrive() -> None:
            took = self.commit(node.node_id, cmd)
            if took:
                self.renew_starts[len(self.log)] = real_start

            def answer() -> None:
                # A paused node gets the answer when it resumes (the event re-queues).
                if node.down_until > self.t and node.policy is not policy:
                    return
                if not node.up(self.t):
                    self.at(STEP, answer)
                    return
                if node.policy is policy:
                    node.policy.renewed(renew.started_at, renew.epoch, bool(took),
                                        renew.duration)

            self.at(self.delay(), answer)

        policy = node.policy
        self.at(self.delay(), arrive)

    def leader_step(self, node: SimNode) -> None:
        pol, ha = node.policy, node.ha
        reports = None
        if pol.needs_reports(node.clock, ha, node.seen_at):
            reports = {i: self.report(x) for i, x in self.nodes.items()
                       if x.up(self.t) and self.connected(node.node_id, i)}
        action = pol.leader_step(node.clock, ha, node.seen_at, can_bootstrap=True,
                                 reports=reports, primary_reachable=True)
        if isinstance(action, Bootstrap):
            self.commit(node.node_id, ["bootstrap", node.node_id, "u", "p",
                                       self.settings.to_record()])
        elif isinstance(action, Promote):
            assert reports is not None
            chosen = reports[action.node_id].received_lsn or 0
            for i, r in reports.items():
                if i != ha.primary_id and r.role == PG_REPLICA and (r.received_lsn or 0) > chosen:
                    self.fail(f"promoting node {action.node_id} at LSN {chosen} while node {i} "
                              f"has {r.received_lsn}")
            self.commit(node.node_id, ["promote", action.node_id, action.new_epoch,
                                       action.epoch, action.lease_index, action.reason])
        elif isinstance(action, Transfer):
            pass  # leadership placement does not matter to safety

    def replicate(self) -> None:
        primary = next((x for x in self.nodes.values() if x.pg_primary), None)
        if primary is None or not primary.up(self.t):
            return
        for x in self.nodes.values():
            if x is not primary and x.up(self.t) and self.connected(x.node_id, primary.node_id) \
                    and self.rng.random() < 0.5:
                x.lsn = max(x.lsn, primary.lsn - self.rng.randint(0, 5))

    # ------------------------------------------------------------------ faults
    def nemesis(self) -> None:
        r = self.rng.random()
        ids = list(self.nodes)
        victim = self.rng.choice(ids)
        x = self.nodes[victim]
        if r < 0.004:
            x.paused_until = self.t + self.rng.uniform(0.1, 6.0)
            self.note(f"pause node {victim} until {x.paused_until:.2f}")
        elif r < 0.006:
            x.down_until = self.t + self.rng.uniform(0.2, 4.0)
            self.note(f"crash node {victim} until {x.down_until:.2f}")
            x.policy = self.factory(victim, self.settings)
            x.ha, x.applied, x.seen_at, x.pg_primary = HaState(), 0, None, False
        elif r < 0.009:
            self.isolated[victim] = self.t + self.rng.uniform(0.2, 6.0)
            self.note(f"isolate node {victim} until {self.isolated[victim]:.2f}")
        elif r < 0.012:
            x.rate = self._rate()

    def elect(self) -> None:
        lead = self.leader
        healthy = lead is not None and self.nodes[lead].up(self.t) and self.majority_with(lead)
        if healthy:
            return
        if self.election_at > self.t:
            return
        candidates = [i for i, x in self.nodes.items() if x.up(self.t) and self.majority_with(i)]
        if candidates:
            self.leader = self.rng.choice(candidates)
            self.note(f"node {self.leader} becomes Raft leader")
        self.election_at = self.t + self.rng.uniform(0.3, 2.0)

    # ------------------------------------------------------------------ run
    def run(self, faults: bool = True) -> Simulation:
        end = self.duration
        heal_at = end - 15.0   # the last 15 s without new faults: a primary must come back
        while self.t < end:
            self.t += STEP
            for x in self.nodes.values():
                x.clock += STEP * x.rate
            while self.events and self.events[0][0] <= self.t:
                _, _, fn = heapq.heappop(self.events)
                fn()
            if faults and self.t < heal_at:
                self.nemesis()
            self.elect()
            for i in self.rng.sample(list(self.nodes), len(self.nodes)):
                self.step_node(self.nodes[i])
            self.replicate()
            self.check_single_holder()
        if not any(x.policy.lease_valid(x.clock, x.ha) for x in self.nodes.values()):
            self.fail("no node holds the lease 15 s after the last fault")
        return self
