"""Leader cost per replicated entry: step one MsgAppResp, take the next Ready, advance.

A 3-node leader streams a pre-written log to its followers, 64 entries per MsgApp; every
round acknowledges one message from each follower and takes the Ready that carries the next
batches (and the commit). Prints microseconds per replicated entry. The acknowledgements are
built before the clock starts, so the loop measures the core alone.

    python benchmarks/bench_raft.py [--entries 200000] [--batch 64]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pgraft  # noqa: E402
from pgraft._impl import core  # noqa: E402
from pgraft.raft import Config, MemoryStorage, RawNode  # noqa: E402
from pgraft.raft.types import HardState  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64, help="payload bytes per entry")
    ns = ap.parse_args()
    st = MemoryStorage()
    RawNode.bootstrap(st, {1: ("127.0.0.1", 7001), 2: ("127.0.0.1", 7002),
                           3: ("127.0.0.1", 7003)})
    payload = b"x" * ns.size
    st.append([core.Entry(i, 1, core.ENTRY_NORMAL, payload) for i in range(2, ns.entries + 2)])
    st.set_hard_state(HardState(1, 0, 1))
    per_msg = ns.batch * (ns.size + core.RECORD_HEADER_SIZE)
    node = RawNode(Config(1, max_msg_bytes=per_msg, max_inflight=4), st)
    node.campaign()
    for _ in range(3):
        rd = node.ready()
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        node.advance(rd)
        for f in (2, 3):
            node.step(core.Message(core.MSG_PRE_VOTE_RESP, f, 1, node.term + 1))
            node.step(core.Message(core.MSG_VOTE_RESP, f, 1, node.term))
    assert node.role == "leader", node.role
    rd = node.ready()
    st.append(rd.entries)
    node.advance(rd)
    last = node.log.last_index()
    term = node.term
    # the followers accept the probe at index 1; from then on the leader pipelines. Their
    # acknowledgements are made before the clock starts: decoding them is the codec's cost,
    # not the core's
    rounds = []
    acked = 1
    while acked < last:
        nxt = min(acked + ns.batch, last)
        rounds.append(tuple(core.Message(core.MSG_APP_RESP, f, 1, term, index=nxt)
                            for f in (2, 3)))
        acked = nxt
    replicated = 2 * (last - 1)
    step, ready, advance = node.step, node.ready, node.advance
    # the pre-built log and acknowledgements are long-lived: keep the collector from walking
    # them again and again (it would time the heap's size, not the core)
    gc.collect()
    gc.freeze()
    t0 = time.perf_counter()
    for acks in rounds:
        for m in acks:
            step(m)
        advance(ready())
    dt = time.perf_counter() - t0
    per = dt / replicated * 1e6
    print(f"{pgraft.IMPLEMENTATION}: {replicated} entries replicated (2 followers, "
          f"{ns.batch}/message) in {dt:.3f}s: {per:.3f} us per replicated entry")


if __name__ == "__main__":
    main()
