"""A seeded, randomized simulation of a pgraft cluster, checking Raft's safety properties.

Every run is a pure function of its seed. The network drops, duplicates, delays and reorders
messages and can be partitioned (what is sent across a partition is lost; what was already in
flight still arrives); nodes crash (losing whatever a Ready had not persisted yet) and restart
from their storage; the leader proposes entries and membership changes (new empty nodes join
as learners and are promoted automatically, members — the leader too — are removed); nodes
compact their logs so that others catch up by snapshot. Half of the runs are calm (no crashes,
no membership changes) so that leaders live long enough for the read checks below to meet
deposed leaders: a partition often cuts the leader off and slows its timer down (a starved
process), so that it keeps leading its old term while the majority elects a new leader.

Checked after every step:

* Election Safety: at most one leader per term.
* Log Matching: two persisted entries with the same index and term carry the same data and
  follow entries of the same term (so, inductively, the logs are identical up to there).
* Leader Completeness: a leader of term T holds every entry committed in a term before T.
* State Machine Safety: every node applies the same entry at each index.
* Read linearizability: clients issue ReadIndex reads on leaders and followers, interleaved
  with writes; every index a read is answered with is at least the index of every write
  acknowledged (applied on the node it was proposed on) before the read was invoked, across
  leaders and terms. Read contexts deliberately collide: every node numbers its reads alike
  from a small set (as per-process counters would), reusing a number once nothing about its
  previous read from that node is in flight, so that an answer is never mistaken for
  another's. Heartbeat responses (what confirms a read) are often late by up to several
  election timeouts, and duplicated.

After the faults stop, the cluster must converge: one leader, every member has applied the
leader's whole log and agrees on the membership.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

from pgraft._impl import core
from pgraft.errors import PgraftError
from pgraft.raft import ConfChange, Config, MemoryStorage, RawNode
from pgraft.raft.membership import EMPTY
from pgraft.raft.types import LEADER

MSG_SNAP = core.MSG_SNAP
MSG_HEARTBEAT_RESP = core.MSG_HEARTBEAT_RESP
MSG_READ_INDEX = core.MSG_READ_INDEX
MSG_READ_INDEX_RESP = core.MSG_READ_INDEX_RESP

READ_CONTEXTS = (b"0", b"1")  # every node numbers its reads alike, lowest free number first
READ_PATIENCE = 300  # steps a client waits for the answer to a read before it gives up
LATE_CHANCE, LATE_DELAY = 0.3, 600  # heartbeat responses: how many are late, by how much
HEAL_CHANCE = 0.1  # of a heal when partitions toggle: partitions outlast election timeouts
SLOW_CLOCK = 0.1  # how often a cut-off leader's timer fires, relative to the others


class SimNode:
    def __init__(self, node_id: int, storage: MemoryStorage, sim: Simulation) -> None:
        self.id = node_id
        self.storage = storage
        self.sim = sim
        self.raw: RawNode | None = None
        self.applied = 0
        self.applied_membership = EMPTY
        self.speed = 1.0  # how often its timer fires, relative to the others
        # A Ready whose sync is still running: the runtime syncs a busy leader, and a
        # follower's large batch, in a worker thread while its loop goes on stepping messages
        # (and a leader taking proposals; pgraft/node/node.py, step 5)
        self.outstanding: Any = None
        self.start()

    def start(self) -> None:
        self.outstanding = None  # what was not persisted yet is lost with the crash
        snap = self.storage.snapshot_meta()
        self.raw = RawNode(Config(self.id, election_ticks=10, heartbeat_ticks=2,
                                  pre_vote=self.sim.pre_vote, check_quorum=True,
                                  max_msg_bytes=400, max_inflight=8, promote_within=4,
                                  promote_ticks=2, applied=snap.index,
                                  rand=random.Random(self.sim.rand.random())),
                           self.storage)
        self.applied = snap.index
        self.applied_membership = snap.membership or EMPTY


class SafetyViolation(AssertionError):
    pass


class Simulation:
    def __init__(self, seed: int, size: int = 3, steps: int = 3000,
                 pre_vote: bool | None = None) -> None:
        self.seed = seed
        self.rand = random.Random(seed)
        self.steps = steps
        self.pre_vote = self.rand.random() < 0.8 if pre_vote is None else pre_vote
        # half of the runs have no crashes or membership changes, so that leaders live long
        # enough for deposed ones to meet late heartbeat responses while clients read
        self.calm = self.rand.random() < 0.5
        members = {i: (f"10.0.0.{i}", 7000 + i) for i in range(1, size + 1)}
        self.nodes: dict[int, SimNode] = {}
        for i in members:
            s = MemoryStorage()
            RawNode.bootstrap(s, members)
            self.nodes[i] = SimNode(i, s, self)
        self.next_id = size + 1
        self.down: set[int] = set()
        self.groups: list[set[int]] = []
        self.net: list[tuple[int, int, Any]] = []  # (deliver after, seq, message)
        self.time = 0
        self.seq = 0
        self.faults = True
        # global knowledge for the checks
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.entries: dict[tuple[int, int], tuple[bytes, int, int]] = {}
        self.applied: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self.commit_term: dict[int, int] = {}  # index -> lowest term it was known committed
        self.checked_leaders: set[tuple[int, int]] = set()
        self.commit_seen: dict[tuple[int, int], int] = {}
        self.proposals = 0
        self.log: list[str] = []
        # clients: proposed write data -> the node it was proposed on; the highest index of a
        # write acknowledged so far; outstanding reads (node, context) -> (floor, invoked at)
        self.writes: dict[bytes, int] = {}
        self.acked_index = 0
        self.reads: dict[tuple[int, bytes], tuple[int, int]] = {}
        self.reads_answered = 0

    # ------------------------------------------------------------ network
    def reachable(self, a: int, b: int) -> bool:
        if not self.groups:
            return True
        ga = next((g for g in self.groups if a in g), None)
        gb = next((g for g in self.groups if b in g), None)
        return ga is gb

    def send(self, m: Any) -> None:
        r = self.rand
        if self.faults and (r.random() < 0.05 or not self.reachable(m.src, m.dst)):
            if m.type == MSG_SNAP:
                self.report_snapshot(m, False)  # the snapshot stream broke
            return  # dropped
        late = m.type == MSG_HEARTBEAT_RESP  # a late one must not confirm a newer read
        copies = 2 if self.faults and r.random() < (0.1 if late else 0.03) else 1
        for _ in range(copies):
            delay = r.randrange(6) if self.faults else 0
            if self.faults and late and r.random() < LATE_CHANCE:
                delay = r.randrange(10, LATE_DELAY)
            self.seq += 1
            self.net.append((self.time + delay, self.seq, m))

    def deliver_one(self) -> None:
        now = self.time if self.faults else 1 << 62
        ready = [k for k, (t, _, _) in enumerate(self.net) if t <= now]
        if not ready:
            return
        k = self.rand.choice(ready) if self.faults else ready[0]
        _, _, m = self.net.pop(k)
        # a partition drops what is sent across it (in send), not what was past it already
        if m.dst in self.down or m.dst not in self.nodes:
            if m.type == MSG_SNAP:
                self.report_snapshot(m, False)
            return
        raw = self.nodes[m.dst].raw
        assert raw is not None
        raw.step(m)
        if m.type == MSG_SNAP:
            self.report_snapshot(m, True)

    def report_snapshot(self, m: Any, ok: bool) -> None:
        """What the runtime's snapshot sender tells the leader once a stream ends."""
        src = self.nodes.get(m.src)
        if src is not None and src.raw is not None:
            src.raw.report_snapshot(m.dst, ok)

    # ------------------------------------------------------------- nodes
    def handle_ready(self, n: SimNode, crash_chance: float) -> None:
        raw = n.raw
        assert raw is not None
        if n.outstanding is not None:
            rd, n.outstanding = n.outstanding, None
            self.persist(n, rd)
            return
        if not raw.has_ready():
            return
        rd = raw.ready()
        for m in rd.messages:  # allowed before persisting (see Ready)
            self.send(m)
        if crash_chance and self.rand.random() < crash_chance:
            if self.rand.random() < 0.5:
                # the runtime may apply committed entries before its sync (see Ready): crash
                # after applying them, with the Ready's entries not durable yet
                for e in rd.committed_entries:
                    self.check_apply(n, e)
            self.crash(n.id)
            return
        if self.rand.random() < (0.5 if raw.role == LEADER else 0.3):
            n.outstanding = rd  # syncing in a thread: persisted and advanced by a later step
            return
        self.persist(n, rd)

    def persist(self, n: SimNode, rd: Any) -> None:
        """The rest of a Ready: make it durable, apply, advance."""
        raw = n.raw
        assert raw is not None
        st = n.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
            n.applied = rd.snapshot.index
            n.applied_membership = rd.snapshot.membership or EMPTY
        if rd.entries:
            st.append(rd.entries)
            self.check_persisted(n, rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        for e in rd.committed_entries:
            self.check_apply(n, e)
        for rs in rd.read_states:
            self.check_read(n, rs)
        raw.advance(rd)

    def crash(self, node_id: int) -> None:
        for key in [k for k in self.reads if k[0] == node_id]:
            del self.reads[key]  # its clients give up
        self.down.add(node_id)
        self.nodes[node_id].raw = None
        self.log.append(f"t={self.time} crash {node_id}")

    def restart(self, node_id: int) -> None:
        self.down.discard(node_id)
        self.nodes[node_id].start()
        self.log.append(f"t={self.time} restart {node_id}")

    def leader(self) -> SimNode | None:
        best = None
        for i, n in self.nodes.items():
            if i not in self.down and n.raw is not None and n.raw.role == LEADER and (
                    best is None or n.raw.term > best.raw.term):
                best = n
        return best

    # ------------------------------------------------------------- checks
    def fail(self, what: str) -> None:
        tail = "\n".join(self.log[-25:])
        raise SafetyViolation(f"seed {self.seed}: {what}\nrecent events:\n{tail}")

    def check_persisted(self, n: SimNode, ents: list[Any]) -> None:
        st = n.storage
        for e in ents:
            prev = st.term(e.index - 1) if e.index - 1 >= st.first_index() - 1 else -1
            key = (e.index, e.term)
            val = (bytes(e.data), e.type, prev)
            old = self.entries.get(key)
            if old is None:
                self.entries[key] = val
            elif old[:2] != val[:2] or (old[2] != prev and prev != -1 and old[2] != -1):
                self.fail(f"Log Matching: node {n.id} entry {key} is {val}, elsewhere {old}")

    def check_apply(self, n: SimNode, e: Any) -> None:
        if e.index != n.applied + 1:
            self.fail(f"node {n.id} applied {e.index} after {n.applied}")
        n.applied = e.index
        val = (e.term, bytes(e.data))
        old = self.applied.setdefault(e.index, val)
        if old != val:
            self.fail(f"State Machine Safety: node {n.id} applied {val} at {e.index}, "
                      f"another node applied {old}")
        if e.type == 1:
            n.applied_membership = n.applied_membership.apply_entry_data(e.data)
        elif self.writes.get(val[1]) == n.id:  # the write's client hears it succeeded
            del self.writes[val[1]]
            self.acked_index = max(self.acked_index, e.index)
            self.log.append(f"t={self.time} write {val[1]!r} acknowledged at index {e.index}")

    def check_read(self, n: SimNode, rs: Any) -> None:
        invoked = self.reads.pop((n.id, bytes(rs.context)), None)
        if invoked is None or rs.refused:
            return  # its client gave up (or retries later)
        floor, at = invoked
        self.reads_answered += 1
        if rs.index < floor:
            self.fail(f"Read linearizability: node {n.id} answered the read "
                      f"{bytes(rs.context)!r} invoked at t={at} with index {rs.index}, but a "
                      f"write at index {floor} was acknowledged before")

    def read(self, n: SimNode) -> None:
        """A client asks node ``n`` for a linearizable read, with a context free on ``n``."""
        for key in [k for k, (_, at) in self.reads.items() if at + READ_PATIENCE < self.time]:
            del self.reads[key]
        ctx = next((c for c in READ_CONTEXTS if not self.context_busy(n.id, c)), None)
        if ctx is None:
            return
        with contextlib.suppress(PgraftError):
            n.raw.read_index(ctx)
            self.reads[(n.id, ctx)] = (self.acked_index, self.time)
            self.log.append(f"t={self.time} {n.id} reads {ctx!r} (floor {self.acked_index})")

    def context_busy(self, node_id: int, ctx: bytes) -> bool:
        """Could an answer for ``ctx`` still reach ``node_id`` from an earlier read?"""
        if (node_id, ctx) in self.reads:
            return True
        msgs = [m for _, _, m in self.net]
        for other in self.nodes.values():
            raw = other.raw
            if raw is None:
                continue
            req = raw.raft.readonly.pending.get(ctx)
            if req is not None and req.origin == node_id:
                return True
            msgs += raw.raft.msgs + raw.raft.msgs_after
            if other.outstanding is not None:  # handed out in a Ready not yet persisted
                msgs += other.outstanding.messages
            if other.id == node_id and any(rs.context == ctx for rs in raw.raft.read_states):
                return True
            if (other.id == node_id and other.outstanding is not None
                    and any(rs.context == ctx for rs in other.outstanding.read_states)):
                return True
        return any(m.context == ctx and (
            (m.type == MSG_READ_INDEX and m.src == node_id)
            or (m.type == MSG_READ_INDEX_RESP and m.dst == node_id)) for m in msgs)

    def check_step(self) -> None:
        for i, n in self.nodes.items():
            raw = n.raw
            if raw is None or raw.role != LEADER:
                continue
            other = self.leaders.setdefault(raw.term, i)
            if other == i and (i, raw.term) not in self.checked_leaders:
                self.log.append(f"t={self.time} {i} leads term {raw.term}")
            if other != i:
                self.fail(f"Election Safety: nodes {other} and {i} both lead term {raw.term}")
            log = raw.log
            start = max(log.snapshot_index() + 1, 1)
            if (i, raw.term) not in self.checked_leaders:
                self.checked_leaders.add((i, raw.term))
                for idx, ct in self.commit_term.items():
                    if ct < raw.term and idx >= start:
                        t = log.term(idx)
                        if t is None or t != self.applied.get(idx, (t,))[0]:
                            self.fail(f"Leader Completeness: leader {i} of term {raw.term} "
                                      f"lacks entry {idx} committed in term {ct}")
            seen = self.commit_seen.get((i, raw.term), 0)
            self.commit_seen[(i, raw.term)] = log.committed
            for idx in range(max(start, seen + 1), log.committed + 1):
                if idx not in self.commit_term:
                    self.commit_term[idx] = raw.term
                if idx in self.applied and log.term(idx) != self.applied[idx][0]:
                    self.fail(f"leader {i} has term {log.term(idx)} at committed {idx}")

    # ------------------------------------------------------------ actions
    def members(self) -> list[int]:
        ld = self.leader()
        if ld is None:
            return []
        return list(ld.raw.membership)

    def act(self) -> None:
        r = self.rand
        x = r.random()
        up = [i for i in self.nodes if i not in self.down]
        if not up:
            self.restart(r.choice(sorted(self.down)))
            return
        if r.random() < 0.06:  # clients read all the time, on any node
            self.read(self.nodes[r.choice(up)])
        if x < 0.35:
            self.deliver_one()
        elif x < 0.55:
            self.nodes[r.choices(up, [self.nodes[i].speed for i in up])[0]].raw.tick()
        elif x < 0.85:
            crash = 0.003 if self.faults and not self.calm else 0.0
            self.handle_ready(self.nodes[r.choice(up)], crash)
        elif x < 0.92:
            ld = self.leader()
            if ld is not None:
                self.proposals += 1
                data = f"v{self.proposals}".encode()
                with contextlib.suppress(PgraftError):
                    ld.raw.propose(data)
                    self.writes[data] = ld.id
        elif x < 0.94:
            if not self.calm:
                self.change_membership()
        elif x < 0.96:
            i = r.choice(up)
            if r.random() < 0.5:
                self.read(self.nodes[i])
            else:
                self.compact(self.nodes[i])
        elif x < 0.965:
            ld = self.leader()
            if ld is not None:
                voters = [v for v in ld.raw.membership.voters if v != ld.id]
                if voters:
                    with contextlib.suppress(PgraftError):
                        ld.raw.transfer_leadership(r.choice(voters))
        elif not self.faults:
            pass
        elif x < 0.975:
            if self.groups:
                if r.random() < HEAL_CHANCE:
                    self.groups = []
                    for n in self.nodes.values():
                        n.speed = 1.0
                    self.log.append(f"t={self.time} heal")
            else:
                ids = list(self.nodes)
                r.shuffle(ids)
                cut = r.randrange(1, len(ids))
                ld = self.leader()
                if ld is not None and r.random() < 0.5:
                    # cut the leader off, with its timer slowed down (a starved process): a
                    # deposed leader that serves reads for long; ReadIndex must not depend
                    # on timing
                    ids.remove(ld.id)
                    ids.insert(0, ld.id)
                    cut = r.randrange(1, (len(ids) + 1) // 2)
                    ld.speed = SLOW_CLOCK
                self.groups = [set(ids[:cut]), set(ids[cut:])]
                self.log.append(f"t={self.time} partition {self.groups}")
        elif x < 0.98:
            if len(up) > 1 and not self.calm:
                self.crash(r.choice(up))
        elif x < 0.99 and self.down:
            self.restart(r.choice(sorted(self.down)))

    def change_membership(self) -> None:
        ld = self.leader()
        if ld is None:
            return
        r = self.rand
        m = ld.raw.membership
        try:
            if len(m) < 6 and r.random() < 0.6:
                new = self.next_id
                cc = ConfChange("add_node", new, f"10.0.0.{new}", 7000 + new)
                ld.raw.propose_membership_change(cc)
                self.next_id += 1
                self.nodes[new] = SimNode(new, MemoryStorage(), self)
                self.log.append(f"t={self.time} {ld.id} adds {new}")
            elif len(m.voters) > 3 or (m.learners and r.random() < 0.5):
                victim = r.choice(list(m))
                ld.raw.propose_membership_change(ConfChange("remove", victim))
                self.log.append(f"t={self.time} {ld.id} removes {victim}")
        except PgraftError:
            pass

    def compact(self, n: SimNode) -> None:
        """Snapshot at the applied index (the state machine's membership there) and drop the
        log prefix it covers, so that lagging or new nodes need MsgSnap."""
        st = n.storage
        if n.applied > st.first_index() + 2:
            st.compact(n.applied, n.applied_membership)
            self.log.append(f"t={self.time} {n.id} compacts to {n.applied}")

    # --------------------------------------------------------------- runs
    def run(self) -> None:
        for _ in range(self.steps):
            self.time += 1
            self.act()
            self.check_step()
        self.converge()

    def converge(self) -> None:
        self.faults = False
        self.groups = []
        self.log.append(f"t={self.time} faults stop")
        for i in sorted(self.down):
            self.restart(i)
        for _round in range(3000):
            self.time += 1
            for n in self.nodes.values():
                n.raw.tick()
                for _ in range(4):
                    self.handle_ready(n, 0.0)
                    while self.net:
                        self.deliver_one()
                        self.check_step()
                self.check_step()
            if self.converged():
                return
        self.fail("the cluster did not converge after faults stopped: " + "; ".join(
            f"{i}:{n.raw.role} t={n.raw.term} last={n.raw.log.last_index()} "
            f"applied={n.applied} m={sorted(n.raw.membership)}" for i, n in self.nodes.items()))

    def converged(self) -> bool:
        leaders = [n for n in self.nodes.values() if n.raw.role == LEADER]
        if len(leaders) != 1:
            return False
        ld = leaders[0]
        if ld.outstanding is not None or ld.raw.has_ready():
            return False
        m = ld.raw.membership
        if m.learners or ld.id not in m:
            return False  # a learner must have been promoted once caught up
        last = ld.raw.log.last_index()
        if ld.raw.log.committed != last:
            return False
        for i in m:
            n = self.nodes[i]
            if n.applied != last or n.raw.membership != m or n.applied_membership != m:
                return False
        return True
