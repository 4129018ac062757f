"""Snapshot benchmark: real ``pgraft serve`` processes on loopback (fsync on).

    python benchmarks/snapshot.py [--state-mb 100] [--entries 1000000] [--json FILE]

Measures (issue 6's targets in brackets):

- **catch-up by snapshot**: a leader holds ``--state-mb`` MB of KV state, has snapshotted it
  and compacted its log (``--snapshot-keep 0``); an empty node is added; timed from
  ``add_node`` until the new node has applied the snapshot's index: snapshot bytes / time
  [>= 100 MB/s]. The leader's own log line gives the transfer time alone (sent + verified
  by the follower, before install).
- **restart to serving**: a single node with ``--entries`` entries of history
  (``--snapshot-entries 10000``, default keep 5000), stopped with SIGTERM and started
  again; timed from the process start (exec of the Python interpreter included) until it
  answers a client with ``applied_index == commit_index`` [<= 1 s]. The process start alone
  (``python -c 'import pgraft.node'``) is measured too, for reference.

``--quick`` uses 10 MB and 50,000 entries (to check that the script works).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pgraft  # noqa: E402
from pgraft.errors import PgraftError  # noqa: E402
from pgraft.localcluster import LocalCluster, wait_until  # noqa: E402

TARGETS = {"catchup_mb_per_s": (">=", 100.0), "restart_to_serving_s": ("<=", 1.0)}


def _stats(address: str) -> dict[str, Any] | None:
    try:
        with pgraft.Client(address, timeout=1.0) as c:
            return c.log_stats()
    except PgraftError:
        return None


def catch_up(base: str, state_mb: int) -> dict[str, Any]:
    value = "v" * (512 * 1024)
    puts = state_mb * 2
    c = LocalCluster(1, base_dir=os.path.join(base, "catchup"), keep=False,
                     extra_args=["--snapshot-entries", str(puts), "--snapshot-keep", "0",
                                 "--snapshot-bytes", "0", "--segment-size",
                                 str(16 * 1024 * 1024)])
    try:
        c.start(timeout=60)
        c.wait_for_leader(30)
        leader = c.nodes[1].address

        async def fill() -> None:
            async with await pgraft.connect(leader, timeout=60) as cl:
                for lo in range(0, puts, 8):
                    await asyncio.gather(*(cl.kv_put(f"key{i:06d}", value)
                                           for i in range(lo, min(puts, lo + 8))))

        t0 = time.monotonic()
        asyncio.run(fill())
        fill_s = time.monotonic() - t0
        wait_until("the leader's snapshot", lambda: (_stats(leader) or {}).get(
            "snapshot_index", 0) >= puts, 120, 0.05)
        with pgraft.Client(leader, timeout=10) as cl:
            st = cl.status()
        snap_bytes = st["snapshot"]["bytes"]
        snap_index = st["snapshot_index"]
        node = c.start_empty(2)
        addr2 = node.address
        t0 = time.monotonic()
        with pgraft.Client(leader, timeout=60) as cl:
            cl.add_node(2, node.host, node.port)
        wait_until("node 2 to apply the snapshot", lambda: (_stats(addr2) or {}).get(
            "applied_index", 0) >= snap_index, 300, 0.005)
        total_s = time.monotonic() - t0
        with pgraft.Client(addr2, timeout=10) as cl:
            assert cl.kv_get(f"key{puts - 1:06d}") == value
        text = Path(c.nodes[1].log_path).read_text()
        m = re.search(r"snapshot \d+ sent to node 2 \((\d+) bytes in ([\d.]+)s\)", text)
        transfer_s = float(m.group(2)) if m else None
        mb = snap_bytes / 1e6
        return {"state_mb": state_mb, "snapshot_bytes": snap_bytes, "fill_s": round(fill_s, 2),
                "add_to_applied_s": round(total_s, 3),
                "catchup_mb_per_s": round(mb / total_s, 1),
                "transfer_s": transfer_s,
                "transfer_mb_per_s": round(mb / transfer_s, 1) if transfer_s else None}
    finally:
        c.close()


def restart(base: str, entries: int) -> dict[str, Any]:
    c = LocalCluster(1, base_dir=os.path.join(base, "restart"), keep=False,
                     extra_args=["--snapshot-entries", "10000"])
    try:
        c.start(timeout=60)
        c.wait_for_leader(30)
        addr = c.nodes[1].address

        async def fill() -> int:
            async with await pgraft.connect(addr, timeout=60) as cl:
                last = 0
                data = b"e" * 64
                for _ in range(0, entries, 1000):
                    res = await asyncio.gather(*(cl.append(data) for _i in range(1000)))
                    last = max(res)
                return last

        t0 = time.monotonic()
        last = asyncio.run(fill())
        fill_s = time.monotonic() - t0
        before = _stats(addr)
        c.stop(1)
        node = c.nodes[1]
        disk = sum(f.stat().st_blocks * 512 for f in Path(node.data_dir).rglob("*")
                   if f.is_file())
        t0 = time.monotonic()
        c.start_node(1, wait=False)

        def serving() -> bool:
            st = _stats(addr)
            return st is not None and st["applied_index"] >= last and \
                st["applied_index"] == st["commit_index"]

        wait_until("the restarted node to serve", serving, 60, 0.002)
        restart_s = time.monotonic() - t0
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "import pgraft.node, uvloop"], check=True,
                       env=c.env)
        import_s = time.monotonic() - t0
        return {"entries": entries, "last_index": last, "fill_s": round(fill_s, 1),
                "appends_per_s": round(entries / fill_s), "before": before,
                "data_dir_bytes": disk, "restart_to_serving_s": round(restart_s, 3),
                "python_import_s": round(import_s, 3)}
    finally:
        c.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state-mb", type=int, default=100)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    ns = ap.parse_args(argv)
    if ns.quick:
        ns.state_mb, ns.entries = 10, 50_000
    base = tempfile.mkdtemp(prefix="pgraft-snapbench-")
    out: dict[str, Any] = {"catch_up": catch_up(base, ns.state_mb)}
    print(json.dumps(out["catch_up"]), flush=True)
    out["restart"] = restart(base, ns.entries)
    print(json.dumps(out["restart"]), flush=True)
    got = {"catchup_mb_per_s": out["catch_up"]["catchup_mb_per_s"],
           "restart_to_serving_s": out["restart"]["restart_to_serving_s"]}
    out["verdicts"] = {}
    for key, (op, target) in TARGETS.items():
        ok = got[key] >= target if op == ">=" else got[key] <= target
        out["verdicts"][key] = {"value": got[key], "target": f"{op} {target}", "met": ok}
        print(f"{key}: {got[key]} (target {op} {target}): {'met' if ok else 'NOT met'}")
    if ns.json:
        Path(ns.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
