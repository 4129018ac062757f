"""Where the CPU goes per committed append: py-spy samples of the leader, a follower and the
client of a 3-node local cluster (fsync on) under the ``benchmarks/cluster.py`` load.

    python benchmarks/profile_cluster.py --in-flight 256 --seconds 10 --out /tmp/prof
    python benchmarks/profile_cluster.py --in-flight 1 --seconds 10 --out /tmp/prof-seq

The client (one ``AsyncClient``, ``--in-flight`` coroutines appending 64 bytes, uvloop) runs
in its own process. Once it is warm, ``py-spy record`` samples all three processes at
``--rate`` Hz for ``--seconds`` (collapsed stacks in ``OUT/<role>.txt``, idle samples
dropped), and the script prints, per process, the share of its busy samples spent in each
function itself (self) and under it (inclusive), plus CPU microseconds per append measured
from /proc over the same window. Needs py-spy (``pip install py-spy``) and root or
ptrace permission.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from benchmarks.cpu_per_request import proc_cpu  # noqa: E402
from pgraft.localcluster import LocalCluster  # noqa: E402

_CLIENT = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[1])
import pgraft, uvloop
address, in_flight, seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
PAYLOAD = b"x" * 64

async def main():
    client = await pgraft.connect(address, timeout=30.0)
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    done = 0
    async def worker():
        nonlocal done
        while loop.time() < stop:
            await client.append(PAYLOAD)
            done += 1
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    await client.close()
    print(done, flush=True)

uvloop.run(main())
"""


def parse_collapsed(path: Path) -> tuple[collections.Counter[str], collections.Counter[str],
                                          int]:
    """(self samples, inclusive samples, total) per function from py-spy's raw format."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                  + ")" if " (" in f else f for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return own, inclusive, total


def report(role: str, path: Path, top: int) -> str:
    own, inclusive, total = parse_collapsed(path)
    lines = [f"### {role}: {total} busy samples", "", "| self | inclusive | function |",
             "|---:|---:|---|"]
    names = [n for n, _ in own.most_common(top)]
    for name in names:
        lines.append(f"| {100 * own[name] / total:.1f}% | {100 * inclusive[name] / total:.1f}% "
                     f"| `{name}` |")
    lines += ["", "| inclusive | function |", "|---:|---|"]
    for name, count in inclusive.most_common(top + 12):
        lines.append(f"| {100 * count / total:.1f}% | `{name}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--in-flight", type=int, default=256)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", required=True, help="directory for the collapsed stacks")
    ns = p.parse_args(argv)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    pyspy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    with tempfile.TemporaryDirectory(prefix="pgraft-prof-") as base, \
            LocalCluster(3, base_dir=base) as cluster:
        cluster.start(timeout=60)
        leader = cluster.wait_for_leader(timeout=60)
        follower = next(n for n in cluster.nodes if n != leader)
        address = cluster.nodes[leader].address
        run_for = ns.seconds + 4.0
        client = subprocess.Popen([sys.executable, "-c", _CLIENT, str(HERE), address,
                                   str(ns.in_flight), str(run_for)], stdout=subprocess.PIPE,
                                  text=True)
        time.sleep(1.5)  # warm-up: connections made, batches at their steady size
        pids = {"leader": cluster.nodes[leader].pid,
                "follower": cluster.nodes[follower].pid, "client": client.pid}
        before = {role: proc_cpu(pid) for role, pid in pids.items()}
        with cluster.client(leader, 30.0) as c:
            applied0 = int(c.status()["applied_index"])
        t0 = time.monotonic()
        spies = [subprocess.Popen([pyspy, "record", "--pid", str(pid), "--rate", str(ns.rate),
                                   "--duration", str(int(ns.seconds)), "--format", "raw",
                                   "--nonblocking", "--output", str(out / f"{role}.txt")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for role, pid in pids.items()]
        for spy in spies:
            spy.wait(timeout=ns.seconds + 60)
        elapsed = time.monotonic() - t0
        after = {role: proc_cpu(pid) for role, pid in pids.items()}
        with cluster.client(leader, 30.0) as c:
            applied1 = int(c.status()["applied_index"])
        client.wait(timeout=run_for + 60)
    appends = max(1, applied1 - applied0)
    cpu = {role: 1e6 * (sum(after[role]) - sum(before[role])) / appends for role in pids}
    print(f"## {ns.in_flight} in flight: {appends / elapsed:,.0f} appends/s while sampled; "
          "CPU per append (us, py-spy's own overhead included): "
          + ", ".join(f"{role} {us:.1f}" for role, us in cpu.items()) + "\n")
    for role in pids:
        print(report(role, out / f"{role}.txt", ns.top))
    (out / "cpu.json").write_text(json.dumps({"in_flight": ns.in_flight, "cpu_us": cpu,
                                              "rate": appends / elapsed}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
