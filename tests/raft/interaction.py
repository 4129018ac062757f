"""An interpreter for Raft interaction scripts (tests/raft/testdata/*.txt).

A script is a sequence of blocks::

    command arg key=value
    ----
    expected output
    <blank line>

The environment holds a set of RawNodes, each with a MemoryStorage (its "disk") and a queue of
messages in flight to it. Nothing happens unless a command says so: ``process-ready`` hands a
node's Ready to the environment (persist, queue messages, apply), ``deliver-msgs`` steps queued
messages, ``stabilize`` repeats both until nothing moves. See ``COMMANDS`` for the list.
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Callable
from typing import Any

from pgraft._impl import core
from pgraft.errors import PgraftError
from pgraft.raft import ConfChange, Config, MemoryStorage, RawNode, decode_conf_change
from pgraft.raft.types import LEADER

MSG_NAMES = {
    core.MSG_APP: "MsgApp", core.MSG_APP_RESP: "MsgAppResp", core.MSG_VOTE: "MsgVote",
    core.MSG_VOTE_RESP: "MsgVoteResp", core.MSG_PRE_VOTE: "MsgPreVote",
    core.MSG_PRE_VOTE_RESP: "MsgPreVoteResp", core.MSG_HEARTBEAT: "MsgHeartbeat",
    core.MSG_HEARTBEAT_RESP: "MsgHeartbeatResp", core.MSG_SNAP: "MsgSnap",
    core.MSG_SNAP_RESP: "MsgSnapResp", core.MSG_TIMEOUT_NOW: "MsgTimeoutNow",
    core.MSG_READ_INDEX: "MsgReadIndex", core.MSG_READ_INDEX_RESP: "MsgReadIndexResp",
}
NAME_TO_MSG = {v: k for k, v in MSG_NAMES.items()}


def address_of(node_id: int) -> tuple[str, int]:
    return f"10.0.0.{10 + node_id}", 7000 + node_id


def fmt_entry(e: Any) -> str:
    if e.type == core.ENTRY_CONF_CHANGE:
        cc, members = decode_conf_change(e.data)
        if members is not None:
            what = "bootstrap " + ",".join(str(m[0]) for m in members)
        elif cc.op == "add_learner":
            what = f"add_learner {cc.node_id} {cc.address}:{cc.port}"
        else:
            what = f"{cc.op} {cc.node_id}"
        return f"{e.index}/{e.term} conf[{what}]"
    return f"{e.index}/{e.term} {bytes(e.data).decode(errors='replace')!r}"


def fmt_msg(m: Any) -> str:
    t = m.type
    s = f"{m.src}->{m.dst} {MSG_NAMES.get(t, t)} term={m.term}"
    if t == core.MSG_APP:
        s += f" log={m.index}/{m.log_term} commit={m.commit}"
        if m.entries:
            s += " entries=[" + ", ".join(fmt_entry(e) for e in m.entries) + "]"
    elif t == core.MSG_APP_RESP:
        s += f" index={m.index}"
        if m.reject:
            s += f" rejected hint={m.reject_hint}/{m.log_term}"
    elif t in (core.MSG_VOTE, core.MSG_PRE_VOTE):
        s += f" log={m.index}/{m.log_term}"
        if m.context:
            s += f" ({bytes(m.context).decode()})"
    elif t in (core.MSG_VOTE_RESP, core.MSG_PRE_VOTE_RESP):
        s += " rejected" if m.reject else " granted"
    elif t in (core.MSG_HEARTBEAT, core.MSG_HEARTBEAT_RESP):
        s += f" round={m.index}"
        if t == core.MSG_HEARTBEAT:
            s += f" commit={m.commit}"
        if m.context:
            s += f" ctx={bytes(m.context).decode()}"
    elif t == core.MSG_SNAP:
        s += f" snapshot={m.index}/{m.log_term}"
    elif t == core.MSG_READ_INDEX:
        s += f" ctx={bytes(m.context).decode()}"
    elif t == core.MSG_READ_INDEX_RESP:
        s += f" index={m.index} ctx={bytes(m.context).decode()}"
        if m.reject:
            s += " rejected"
    return s


def fmt_membership(ms: Any) -> str:
    parts = []
    for i, m in ms.items():
        parts.append(f"{i}({m.address}:{m.port})" + ("" if m.role == "voter" else "[learner]"))
    s = " ".join(parts) if parts else "(empty)"
    if ms.removed:
        s += " removed=" + ",".join(str(i) for i in sorted(ms.removed))
    return s


class Node:
    def __init__(self, node_id: int, storage: MemoryStorage, opts: dict[str, Any]) -> None:
        self.id = node_id
        self.storage = storage
        self.opts = opts
        self.applied: list[Any] = []
        self.raw: RawNode | None = None
        self.start()

    def config(self) -> Config:
        o = self.opts
        return Config(self.id, election_ticks=int(o.get("election", 10)),
                      heartbeat_ticks=int(o.get("heartbeat", 1)),
                      pre_vote=o.get("pre-vote", "true") == "true",
                      check_quorum=o.get("check-quorum", "true") == "true",
                      max_msg_bytes=int(o.get("max-msg-bytes", 1 << 20)),
                      max_inflight=int(o.get("max-inflight", 256)),
                      promote_within=int(o.get("promote-within", 0)),
                      promote_ticks=int(o.get("promote-ticks", 2)),
                      auto_promote=o.get("auto-promote", "true") == "true",
                      applied=self.storage.snapshot_meta().index,
                      rand=random.Random(self.id))

    def start(self) -> None:
        self.raw = RawNode(self.config(), self.storage)
        self.applied = []


class Env:
    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self.queues: dict[int, list[Any]] = {}
        self.groups: list[set[int]] = []
        self.crashed: set[int] = set()
        self.out: list[str] = []
        self.pending_ready: dict[int, Any] = {}

    # ------------------------------------------------------------ helpers
    def p(self, line: str) -> None:
        self.out.append(line)

    def raw(self, node_id: int) -> RawNode:
        n = self.nodes[node_id]
        if node_id in self.crashed or n.raw is None:
            raise KeyError(f"node {node_id} is down")
        return n.raw

    def reachable(self, a: int, b: int) -> bool:
        if b in self.crashed:
            return False
        if not self.groups:
            return True
        ga = next((g for g in self.groups if a in g), None)
        gb = next((g for g in self.groups if b in g), None)
        return ga is gb

    def ids(self, args: list[str]) -> list[int]:
        ids = [int(a) for a in args if a.isdigit()]
        return ids or sorted(i for i in self.nodes if i not in self.crashed)

    # ---------------------------------------------------------- the loop
    def process_ready(self, node_id: int) -> bool:
        n = self.nodes[node_id]
        raw = self.raw(node_id)
        if not raw.has_ready():
            return False
        rd = raw.ready()
        self.p(f"> {node_id} handling Ready")
        if rd.soft_state is not None:
            lead = rd.soft_state.leader_id
            self.p(f"  soft: {rd.soft_state.role} lead={lead}")
        if rd.hard_state is not None:
            hs = rd.hard_state
            sync = " (sync)" if rd.must_sync else ""
            self.p(f"  hard: term={hs.term} vote={hs.vote} commit={hs.commit}{sync}")
        if rd.snapshot is not None:
            self.p(f"  snapshot: {rd.snapshot.index}/{rd.snapshot.term} "
                   f"{fmt_membership(rd.snapshot.membership)}")
            n.storage.apply_snapshot(rd.snapshot)
            n.applied = []
        for e in rd.entries:
            self.p(f"  persist: {fmt_entry(e)}")
        n.storage.append(rd.entries)
        if rd.hard_state is not None:
            n.storage.set_hard_state(rd.hard_state)
        for e in rd.committed_entries:
            self.p(f"  apply: {fmt_entry(e)}")
            n.applied.append(e)
        for rs in rd.read_states:
            state = "refused" if rs.refused else f"index={rs.index}"
            self.p(f"  read-state: ctx={bytes(rs.context).decode()} {state}")
        for m in rd.messages:
            self.p(f"  send: {fmt_msg(m)}")
            self.queues.setdefault(m.dst, []).append(m)
        raw.advance(rd)
        return True

    def deliver(self, node_id: int, types: set[int] | None = None,
                srcs: set[int] | None = None) -> bool:
        q = self.queues.get(node_id, [])
        keep, todo = [], []
        for m in q:
            wanted = (types is None or m.type in types) and (srcs is None or m.src in srcs)
            (todo if wanted else keep).append(m)
        self.queues[node_id] = keep
        if not todo:
            return False
        if node_id not in self.nodes:
            return False
        self.p(f"> {node_id} receiving messages")
        for m in todo:
            if not self.reachable(m.src, node_id):
                self.p(f"  dropped: {fmt_msg(m)}")
                continue
            self.p(f"  {fmt_msg(m)}")
            raw = self.raw(node_id)
            before = (raw.role, raw.term)
            raw.step(m)
            if (raw.role, raw.term) != before:
                self.p(f"  {node_id} is {raw.role} at term {raw.term}")
        return True

    def stabilize(self, ids: list[int]) -> None:
        for _ in range(1000):
            moved = False
            for i in ids:
                if i not in self.crashed:
                    moved |= self.process_ready(i)
            for i in ids:
                if i not in self.crashed:
                    moved |= self.deliver(i)
                elif self.queues.get(i):
                    for m in self.queues[i]:
                        self.p(f"> dropped (node {i} is down): {fmt_msg(m)}")
                    self.queues[i] = []
                    moved = True
            if not moved:
                return
        raise AssertionError("stabilize did not converge")

    # ---------------------------------------------------------- commands
    def run(self, line: str) -> str:
        self.out = []
        words = shlex.split(line)
        cmd, rest = words[0], words[1:]
        args = [w for w in rest if "=" not in w]
        kw = dict(w.split("=", 1) for w in rest if "=" in w)
        fn: Callable[[list[str], dict[str, str]], None] = COMMANDS[cmd].__get__(self)
        quiet = "quiet" in args
        args = [a for a in args if a != "quiet"]
        try:
            fn(args, kw)
            if quiet:
                self.out = []
        except PgraftError as exc:
            extra = ""
            if getattr(exc, "leader_id", None):
                extra = f" (leader_id={exc.leader_id} leader_address={exc.leader_address})"
            self.p(f"error: {type(exc).__name__}: {exc.message}{extra}")
        return "\n".join(self.out) if self.out else "ok"

    def c_add_nodes(self, args: list[str], kw: dict[str, str]) -> None:
        count = int(args[0])
        members = {i: address_of(i) for i in range(1, count + 1)}
        for i in members:
            s = MemoryStorage()
            RawNode.bootstrap(s, members)
            self.nodes[i] = Node(i, s, kw)
        self.p(f"bootstrapped {count} nodes: " + fmt_membership(self.nodes[1].raw.membership))

    def c_add_empty_node(self, args: list[str], kw: dict[str, str]) -> None:
        i = int(args[0])
        self.nodes[i] = Node(i, MemoryStorage(), kw)
        self.p(f"started empty node {i}")

    def c_campaign(self, args: list[str], kw: dict[str, str]) -> None:
        self.raw(int(args[0])).campaign()

    def c_propose(self, args: list[str], kw: dict[str, str]) -> None:
        index, term = self.raw(int(args[0])).propose(args[1].encode())
        self.p(f"proposed at {index}/{term}")

    def c_propose_conf_change(self, args: list[str], kw: dict[str, str]) -> None:
        node = int(args[2])
        address, port = address_of(node)
        cc = ConfChange(args[1], node, kw.get("address", address), int(kw.get("port", port)))
        index, term = self.raw(int(args[0])).propose_membership_change(cc)
        self.p(f"proposed at {index}/{term}")

    def c_read_index(self, args: list[str], kw: dict[str, str]) -> None:
        self.raw(int(args[0])).read_index(args[1].encode())

    def c_transfer_leadership(self, args: list[str], kw: dict[str, str]) -> None:
        self.raw(int(args[0])).transfer_leadership(int(args[1]))

    def c_tick(self, args: list[str], kw: dict[str, str]) -> None:
        count = int(args[1]) if len(args) > 1 else 1
        self._tick(int(args[0]), count)

    def _tick(self, node_id: int, count: int) -> None:
        raw = self.raw(node_id)
        for _ in range(count):
            before = (raw.role, raw.term)
            raw.tick()
            if (raw.role, raw.term) != before:
                self.p(f"{node_id} is {raw.role} at term {raw.term}")

    def c_tick_election(self, args: list[str], kw: dict[str, str]) -> None:
        for i in self.ids(args):
            raw = self.raw(i)
            n = raw.cfg.election_ticks if raw.role == LEADER else raw.raft.randomized_timeout
            self._tick(i, max(0, n - raw.raft.election_elapsed))

    def c_tick_heartbeat(self, args: list[str], kw: dict[str, str]) -> None:
        for i in self.ids(args):
            raw = self.raw(i)
            self._tick(i, raw.cfg.heartbeat_ticks)

    def c_process_ready(self, args: list[str], kw: dict[str, str]) -> None:
        for i in self.ids(args):
            self.process_ready(i)

    def c_deliver_msgs(self, args: list[str], kw: dict[str, str]) -> None:
        """deliver-msgs [ID...] [type=T,...] [from=ID,...]: step the messages queued to each
        node (only those of the types / from the senders given); the others stay queued."""
        types = {NAME_TO_MSG[t] for t in kw["type"].split(",")} if "type" in kw else None
        srcs = {int(i) for i in kw["from"].split(",")} if "from" in kw else None
        for i in self.ids(args):
            self.deliver(i, types, srcs)

    def c_stabilize(self, args: list[str], kw: dict[str, str]) -> None:
        self.stabilize(self.ids(args))

    def c_drop(self, args: list[str], kw: dict[str, str]) -> None:
        """drop [FROM] TO: discard messages queued to TO (from FROM only if given)."""
        src = int(args[0]) if len(args) == 2 else None
        dst = int(args[-1])
        q = self.queues.get(dst, [])
        keep = []
        for m in q:
            if src is None or m.src == src:
                self.p(f"dropped: {fmt_msg(m)}")
            else:
                keep.append(m)
        self.queues[dst] = keep

    def c_partition(self, args: list[str], kw: dict[str, str]) -> None:
        groups: list[set[int]] = [set()]
        for a in args:
            if a == "|":
                groups.append(set())
            else:
                groups[-1].add(int(a))
        rest = set(self.nodes) - set().union(*groups)
        if rest:
            groups[0] |= rest
        self.groups = groups
        self.p("partitioned: " + " | ".join(" ".join(map(str, sorted(g))) for g in groups))

    def c_heal(self, args: list[str], kw: dict[str, str]) -> None:
        self.groups = []

    def c_crash(self, args: list[str], kw: dict[str, str]) -> None:
        i = int(args[0])
        raw = self.raw(i)
        lost = raw.log.last_index() - self.nodes[i].storage.last_index()
        self.crashed.add(i)
        self.nodes[i].raw = None
        self.queues[i] = []
        self.p(f"crashed {i} (unpersisted entries lost: {max(lost, 0)})")

    def c_restart(self, args: list[str], kw: dict[str, str]) -> None:
        i = int(args[0])
        self.crashed.discard(i)
        self.nodes[i].start()
        raw = self.nodes[i].raw
        hs = self.nodes[i].storage.hard_state()
        self.p(f"restarted {i}: term={hs.term} vote={hs.vote} commit={hs.commit} "
               f"last={raw.log.last_index()} membership: {fmt_membership(raw.membership)}")

    def c_compact(self, args: list[str], kw: dict[str, str]) -> None:
        i, index = int(args[0]), int(args[1])
        n = self.nodes[i]
        n.storage.compact(index, self.raw(i).membership)
        self.p(f"compacted {i} through {index}")

    def c_raft_log(self, args: list[str], kw: dict[str, str]) -> None:
        raw = self.raw(int(args[0]))
        ents = raw.log.all_entries()
        if raw.log.snapshot_index():
            self.p(f"snapshot {raw.log.snapshot_index()}")
        for e in ents:
            self.p(fmt_entry(e))
        if not ents:
            self.p("log is empty")

    def c_raft_state(self, args: list[str], kw: dict[str, str]) -> None:
        for i in sorted(self.nodes):
            if i in self.crashed:
                self.p(f"{i}: down")
                continue
            raw = self.raw(i)
            st = raw.status()
            self.p(f"{i}: {st.role} term={st.term} lead={st.leader_id} last={st.last_index} "
                   f"commit={st.commit} applied={st.applied}")

    def c_status(self, args: list[str], kw: dict[str, str]) -> None:
        st = self.raw(int(args[0])).status()
        self.p(f"{st.node_id}: {st.role} term={st.term} vote={st.vote} lead={st.leader_id} "
               f"commit={st.commit} applied={st.applied} last={st.last_index}")
        for i, pr in st.progress.items():
            kind = " learner" if pr.learner else ""
            self.p(f"  {i}: {pr.state} match={pr.match} next={pr.next}{kind}")
        if st.transferee:
            self.p(f"  transferring to {st.transferee}")

    def c_membership(self, args: list[str], kw: dict[str, str]) -> None:
        for i in self.ids(args):
            self.p(f"{i}: {fmt_membership(self.raw(i).membership)}")

    def c_applied(self, args: list[str], kw: dict[str, str]) -> None:
        """What each node's state machine applied since it started (non-empty entries)."""
        for i in self.ids(args):
            ents = [fmt_entry(e) for e in self.nodes[i].applied if len(e.data)]
            self.p(f"{i}: " + (", ".join(ents) if ents else "(nothing)"))


COMMANDS = {name[2:].replace("_", "-"): fn for name, fn in vars(Env).items()
            if name.startswith("c_")}


def run_script(text: str) -> tuple[str, str]:
    """Run a script; return (rewritten text, first mismatch description or "")."""
    env = Env()
    lines = text.split("\n")
    out: list[str] = []
    mismatch = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            out.append(line)
            i += 1
            continue
        cmd = line
        i += 1
        if i >= len(lines) or lines[i] != "----":
            raise ValueError(f"line {i}: expected ---- after {cmd!r}")
        i += 1
        expected = []
        while i < len(lines) and lines[i] != "":
            expected.append(lines[i])
            i += 1
        got = env.run(cmd)
        if not mismatch and got != "\n".join(expected):
            mismatch = (f"command {cmd!r} (line {i - len(expected) - 1}):\n--- expected\n"
                        + "\n".join(expected) + "\n--- got\n" + got)
        out.extend([cmd, "----", got])
    return "\n".join(out), mismatch
