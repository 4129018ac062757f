"""Snapshots with real ``pgraft serve`` processes: kill -9 in the middle of writing a snapshot,
and the data directory staying bounded under many appends.

The disk bound (stated in README "Snapshots and compaction") for one node's data directory is

    2 * segment_size + (snapshot_keep + 2 * snapshot_entries) * record_bytes
      + 2 * snapshot_file_bytes + 64 KiB

(record_bytes = 28-byte header + 1 tag byte + payload): after a snapshot at index S the log
keeps the entries after S - snapshot_keep, rounded out to whole segments (one partly used
segment in front, the preallocated tail segment behind), plus the entries applied while the
next snapshot is written; one snapshot file, two while a new one replaces it; small files.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pgraft
from pgraft.errors import PgraftError
from pgraft.node.snapfile import SNAP_DIR
from tests.support.cluster import cluster_factory_fixture, wait_until  # noqa: F401


def _disk_bytes(path: str) -> int:
    """Bytes allocated on disk under ``path`` (segments are preallocated: st_blocks counts)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            total += max(st.st_blocks * 512, 0) if not name.endswith(".sock") else 0
    return total


def test_kill9_while_writing_a_snapshot_keeps_the_old_one(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    args = ["--snapshot-entries", "300", "--snapshot-keep", "20", "--segment-size", "65536",
            "--snapshot-bytes", "0"]
    c = cluster_factory(1, extra_args=args)
    c.wait_for_leader(30)
    with c.client_for(1, 10.0) as cl:
        for i in range(350):
            cl.kv_put(f"k{i}", f"v{i}")
        wait_until("a first snapshot", lambda: cl.log_stats()["snapshot_index"] > 0, 20, 0.05)
        first = cl.log_stats()["snapshot_index"]
    c.stop(1)
    snap_dir = os.path.join(c.nodes[1].data_dir, SNAP_DIR)
    before = sorted(os.listdir(snap_dir))
    assert len(before) == 1 and before[0].endswith(".snap")

    c.env["PGRAFT_TEST_CRASH_POINT"] = "snapshot-write"
    c.start_node(1)
    c.wait_for_leader(30)
    acked: list[int] = []
    try:
        with c.client_for(1, 5.0) as cl:
            for i in range(350, 1000):
                cl.kv_put(f"k{i}", f"v{i}")
                acked.append(i)
    except PgraftError:
        pass
    wait_until("the node killed at the crash point", lambda: not c.nodes[1].running, 20, 0.05)
    leftovers = sorted(os.listdir(snap_dir))
    assert any(n.endswith(".tmp") for n in leftovers), leftovers
    assert before[0] in leftovers
    assert acked, "no write was acknowledged before the crash"

    del c.env["PGRAFT_TEST_CRASH_POINT"]
    c.start_node(1)
    c.wait_for_leader(30)
    with c.client_for(1, 10.0) as cl:
        stats = cl.log_stats()
        # the old snapshot, then the log tail (a newer snapshot may follow at once)
        assert stats["snapshot_index"] >= first
        with open(c.nodes[1].log_path) as f:
            third_start = f.read().split("==== start #3")[1]
        assert f"restored the snapshot at index {first} " in third_start, third_start
        assert not any(n.endswith(".tmp") for n in os.listdir(snap_dir))
        for i in list(range(0, 350, 7)) + acked:
            assert cl.kv_get(f"k{i}") == f"v{i}"
        for i in range(1000, 1400):
            cl.kv_put(f"k{i}", f"v{i}")
        wait_until("a newer snapshot", lambda: cl.log_stats()["snapshot_index"] > first, 20,
                   0.05)
    assert len([n for n in os.listdir(snap_dir) if n.endswith(".snap")]) == 1


def test_many_appends_keep_the_data_directory_bounded(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    entries = int(os.environ.get("PGRAFT_TEST_SNAPSHOT_ENTRIES", "1000"))
    keep, segment, payload = 500, 256 * 1024, 100
    appends = int(os.environ.get("PGRAFT_TEST_SNAPSHOT_APPENDS", "100000"))
    args = ["--snapshot-entries", str(entries), "--snapshot-keep", str(keep),
            "--segment-size", str(segment), "--snapshot-bytes", "0"]
    c = cluster_factory(3, extra_args=args)
    leader = c.wait_for_leader(30)
    dirs = [n.data_dir for n in c.nodes.values()]
    peak = {d: 0 for d in dirs}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for d in dirs:
                peak[d] = max(peak[d], _disk_bytes(d))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    async def load() -> int:
        data = b"p" * payload
        async with await pgraft.connect(c.nodes[leader].address, timeout=30) as cl:
            last = 0
            for _ in range(0, appends, 500):
                res = await asyncio.gather(*(cl.append(data) for _i in range(500)))
                last = max(res)
            return last

    started = time.monotonic()
    try:
        last = asyncio.run(load())
        c.wait_applied(last, timeout=60)
    finally:
        stop.set()
        sampler.join(5)
    elapsed = time.monotonic() - started
    snap_bytes = 0
    for d in dirs:
        sd = os.path.join(d, SNAP_DIR)
        snap_bytes = max([snap_bytes] + [os.path.getsize(os.path.join(sd, n))
                                         for n in os.listdir(sd)])
    record = 28 + 1 + payload
    bound = 2 * segment + (keep + 2 * entries) * record + 2 * snap_bytes + 64 * 1024
    with c.client_for(leader, 5.0) as cl:
        stats = cl.log_stats()
    print(f"\n{appends} appends in {elapsed:.1f}s; peak data dir bytes {sorted(peak.values())}"
          f"; bound {bound}; log {stats}")
    assert stats["snapshot_index"] >= last - 2 * entries
    assert stats["last_index"] - stats["first_index"] < keep + 2 * entries + segment // record
    for d, p in peak.items():
        assert 0 < p <= bound, (d, p, bound)
