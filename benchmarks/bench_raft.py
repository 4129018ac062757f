"""Leader cost per replicated entry in the Raft core alone (no I/O, no event loop).

Two scenarios on a 3-node leader, ``--batch`` entries per AppendEntries:

- ``propose`` (default): every round the leader proposes ``--batch`` entries, takes the Ready
  (entries to persist, AppendEntries to both followers), persists them in a MemoryStorage and
  advances; then it steps one MsgAppResp from each follower and takes the Ready that carries
  the commit and the committed entries. This is the path every client append takes.
- ``stream``: the leader streams a log written before it was elected (entries of an older
  term) to its followers: every round steps one MsgAppResp from each follower and takes the
  Ready with the next batches. This is catch-up replication.

The followers' acknowledgements are built before the clock starts (decoding them is the
codec's cost, not the core's). Prints microseconds per replicated entry (each entry counts
once per follower).

    python benchmarks/bench_raft.py [--scenario propose|stream] [--entries 200000]
                                    [--batch 64] [--size 64] [--setup-only] [--core-sources]

``--core-sources`` runs the Raft core's ``.py`` sources with the compiled codec: the build as it
was before the core was compiled (``PGRAFT_PUREPYTHON=1`` runs the sources and the pure codec).

``--setup-only`` builds everything and stops before the loop: run under callgrind with and
without it, the difference is the loop's instructions (benchmarks/raft_core.py does this).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pgraft  # noqa: E402
from pgraft import _impl  # noqa: E402

if "--core-sources" in sys.argv:  # before pgraft.raft is first imported
    _impl.import_sources_of("pgraft.raft", os.path.join(os.path.dirname(pgraft.__file__), "raft"))

import pgraft.raft.core  # noqa: E402
from pgraft._impl import core  # noqa: E402
from pgraft.node.process import GC_THRESHOLD  # noqa: E402
from pgraft.raft import Config, MemoryStorage, RawNode  # noqa: E402
from pgraft.raft.types import HardState, Ready  # noqa: E402

FOLLOWERS = (2, 3)


def _three_nodes() -> MemoryStorage:
    """The storage of node 1 of a freshly bootstrapped 3-node cluster."""
    st = MemoryStorage()
    RawNode.bootstrap(st, {1: ("127.0.0.1", 7001), 2: ("127.0.0.1", 7002),
                           3: ("127.0.0.1", 7003)})
    return st


def _persist(st: MemoryStorage, rd: Ready) -> None:
    st.append(rd.entries)
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)


def _elect(st: MemoryStorage, per_msg: int) -> RawNode:
    node = RawNode(Config(1, max_msg_bytes=per_msg, max_inflight=4), st)
    node.campaign()
    for _ in range(3):
        rd = node.ready()
        _persist(st, rd)
        node.advance(rd)
        for f in FOLLOWERS:
            node.step(core.Message(core.MSG_PRE_VOTE_RESP, f, 1, node.term + 1))
            node.step(core.Message(core.MSG_VOTE_RESP, f, 1, node.term))
    assert node.role == "leader", node.role
    rd = node.ready()
    _persist(st, rd)
    node.advance(rd)
    return node


def _acks(term: int, first: int, last: int, batch: int) -> list[tuple[object, ...]]:
    """One MsgAppResp per follower for every ``batch`` entries from ``first`` to ``last``."""
    rounds = []
    acked = first
    while acked < last:
        nxt = min(acked + batch, last)
        rounds.append(tuple(core.Message(core.MSG_APP_RESP, f, 1, term, index=nxt)
                            for f in FOLLOWERS))
        acked = nxt
    return rounds


def stream(entries: int, batch: int, payload: bytes) -> tuple[Callable[[], None], int]:
    st = _three_nodes()
    st.append([core.Entry(i, 1, core.ENTRY_NORMAL, payload) for i in range(2, entries + 2)])
    st.set_hard_state(HardState(1, 0, 1))
    node = _elect(st, batch * (len(payload) + core.RECORD_HEADER_SIZE))
    last = node.log.last_index()
    # the followers accept the probe at index 1; from then on the leader pipelines
    rounds = _acks(node.term, 1, last, batch)
    step, ready, advance = node.step, node.ready, node.advance

    def run() -> None:
        for acks in rounds:
            for m in acks:
                step(m)
            advance(ready())

    return run, len(FOLLOWERS) * (last - 1)


def propose(entries: int, batch: int, payload: bytes) -> tuple[Callable[[], None], int]:
    st = _three_nodes()
    node = _elect(st, batch * (len(payload) + core.RECORD_HEADER_SIZE))
    start = node.log.last_index()
    # the followers take the leader's empty entry before the clock runs
    for m in _acks(node.term, start - 1, start, 1)[0]:
        node.step(m)
    node.advance(node.ready())
    rounds = _acks(node.term, start, start + entries, batch)  # `batch` proposals per round
    step, ready, advance, propose_one = node.step, node.ready, node.advance, node.propose
    # _persist inlined, with the bound methods taken once: the loop measures the core
    append, set_hard_state = st.append, st.set_hard_state

    def run() -> None:
        for acks in rounds:
            for _ in range(batch):
                propose_one(payload)
            rd = ready()
            append(rd.entries)
            if rd.hard_state is not None:
                set_hard_state(rd.hard_state)
            advance(rd)
            for m in acks:
                step(m)
            rd = ready()
            if rd.hard_state is not None:
                set_hard_state(rd.hard_state)
            advance(rd)

    return run, len(FOLLOWERS) * entries


SCENARIOS = {"propose": propose, "stream": stream}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), default="propose")
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64, help="payload bytes per entry")
    ap.add_argument("--setup-only", action="store_true",
                    help="stop before the measured loop (for instruction counts)")
    ap.add_argument("--core-sources", action="store_true",
                    help="the Raft core's .py sources with the compiled codec")
    ns = ap.parse_args()
    if ns.scenario == "propose" and ns.entries % ns.batch:
        ap.error("--entries must be a multiple of --batch for the propose scenario")
    run, replicated = SCENARIOS[ns.scenario](ns.entries, ns.batch, b"x" * ns.size)
    built = "core interpreted" if pgraft.raft.core.__file__.endswith(".py") else "core compiled"
    label = f"{pgraft.IMPLEMENTATION}, {built}"
    # as a node runs (pgraft.node.process): the long-lived set-up frozen, a higher threshold
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    if ns.setup_only:
        print(f"{label}: {replicated} replicated entries set up, loop not run")
        return
    t0 = time.perf_counter()
    run()
    dt = time.perf_counter() - t0
    per = dt / replicated * 1e6
    print(f"{label}: {replicated} entries replicated ({ns.scenario}, "
          f"2 followers, {ns.batch}/message) in {dt:.3f}s: {per:.3f} us per replicated entry")


if __name__ == "__main__":
    main()
