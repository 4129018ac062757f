"""How long a new member takes to list itself after its addition commits, on a log of a given
length: compare.py's add-member measurement alone, repeatable against another source tree.

    python benchmarks/add_member.py --log-entries 5000 --adds 5
    python benchmarks/add_member.py --log-entries 5000 --tree ../wt-before   # another version

A 3-node cluster (``--election-timeout 1000 --heartbeat-interval 100``, compare.py's settings)
is filled with ``--log-entries`` appends of 64 bytes (256 in flight), then ``--adds`` times a
node is started empty, added on the leader and removed again (the timing is
``compare_pgraft.bench_add_member``'s). Prints one JSON line: p50 in milliseconds of each of
its measures, and the tree and log length. The numbers of one run are comparable only with
runs interleaved with it on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-entries", type=int, default=5000)
    parser.add_argument("--adds", type=int, default=5)
    parser.add_argument("--tree", default=str(HERE.parent),
                        help="the source tree the cluster and the client run from")
    ns = parser.parse_args()
    tree = str(Path(ns.tree).resolve())
    # the tree's pgraft, and this directory's benchmark helpers
    sys.path[:0] = [tree, str(HERE)]
    import compare_pgraft  # noqa: PLC0415 (after the path is set)

    import pgraft  # noqa: PLC0415
    from pgraft.localcluster import LocalCluster  # noqa: PLC0415

    async def fill(address: str) -> None:
        client = await pgraft.connect(address, timeout=10)
        gate = asyncio.Semaphore(256)

        async def one() -> None:
            async with gate:
                await client.append(b"x" * 64)

        await asyncio.gather(*(one() for _ in range(ns.log_entries)))
        await client.close()

    with tempfile.TemporaryDirectory(prefix="pgraft-add-member-") as base, \
            LocalCluster(3, base_dir=base + "/cluster", election_timeout_ms=1000,
                         heartbeat_interval_ms=100) as cluster:
        cluster.start(timeout=60)
        leader = cluster.wait_for_leader(timeout=60)
        if ns.log_entries:
            compare_pgraft._run(lambda: fill(cluster.address(leader)))
        result = compare_pgraft.bench_add_member(cluster, ns.adds)
    print(json.dumps({"tree": tree, "log_entries": ns.log_entries, "adds": ns.adds,
                      **{name: round(value["p50"], 1) for name, value in result.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
