"""Storage faults on real node processes: I/O errors (failpoints) and a full file system.

An I/O error on the log or the hard state stops the node with a message naming the file; the
node refuses to start on that data directory until an operator clears the record
(``pgraft storage clear-failure``). A full file system makes a node stop acknowledging until
space is freed: a leader is replaced by a healthy node, nothing acknowledged is lost, and the
node resumes by itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from pgraft.errors import NotLeaderError, PgraftError, StorageFull
from pgraft.node.storage import FAILED_MARKER as STORAGE_FAILED_FILE
from tests.support.cluster import (  # noqa: F401  (fixtures)
    Cluster,
    cluster_factory_fixture,
    cluster_fixture,
    requires_node,
    wait_until,
)

pytestmark = [pytest.mark.cluster, requires_node]

TWINS = [pytest.param("compiled", id="compiled"), pytest.param("pure", id="pure")]


def _twin_env(c: Cluster, twin: str) -> None:
    if twin == "pure":
        c.env["PGRAFT_PUREPYTHON"] = "1"
    else:
        c.env.pop("PGRAFT_PUREPYTHON", None)


def _start_with_failpoints(c: Cluster, node_id: int, failpoints: str) -> None:
    saved = dict(c.env)
    c.env["PGRAFT_FAILPOINTS"] = failpoints
    try:
        c.start_node(node_id)
    finally:
        c.env = saved


def _log_of(c: Cluster, node_id: int) -> str:
    with open(c.nodes[node_id].log_path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _append_some(c: Cluster, leader: int, n: int, tag: str) -> dict[int, bytes]:
    acked = {}
    with c.client(leader) as cl:
        for i in range(n):
            payload = f"{tag}-{i}".encode()
            acked[cl.append(payload)] = payload
    return acked


def _check_log(c: Cluster, node_id: int, acked: dict[int, bytes]) -> None:
    with c.client(node_id) as cl:
        for index, payload in acked.items():
            entry = cl.get_entry(index)
            assert entry is not None and entry["data"] == payload, (node_id, index, entry)


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("point", ["log.sync", "log.msync", "hardstate.save"])
def test_io_error_stops_the_node_until_an_operator_clears_it(
        cluster_factory: object, twin: str, point: str) -> None:
    c: Cluster = cluster_factory(3, start=False)  # type: ignore[operator]
    _twin_env(c, twin)
    c.start(timeout=60)
    leader = c.wait_for_leader(timeout=60)
    acked = _append_some(c, leader, 5, "before")
    victim = c.follower_of(leader)
    c.stop(victim)
    # A few calls pass (start-up), then every one fails with EIO.
    _start_with_failpoints(c, victim, f"{point}=eio@3")
    node = c.nodes[victim]
    with c.client(leader) as cl:
        deadline = time.monotonic() + 30
        n = 0
        while node.running and time.monotonic() < deadline:
            # a term change makes the hard state save at once; appends make syncs
            index = cl.append(f"during-{n}".encode())
            acked[index] = f"during-{n}".encode()
            n += 1
    wait_until(f"node {victim} to exit after the I/O error", lambda: not node.running, 30,
               0.05)
    assert node.proc is not None and node.proc.returncode == 1
    text = _log_of(c, victim)
    assert os.strerror(errno.EIO) in text, text[-3000:]
    marker = os.path.join(node.data_dir, STORAGE_FAILED_FILE)
    assert os.path.exists(marker)
    # It refuses to start on that data directory, saying what to do.
    c.start_node(victim, wait=False)
    wait_until(f"node {victim} to refuse to start", lambda: not node.running, 30, 0.05)
    assert node.proc is not None and node.proc.returncode == 1
    text = _log_of(c, victim)
    assert "pgraft storage clear-failure" in text
    # The operator clears the record; the node starts and catches up.
    out = subprocess.run([sys.executable, "-m", "pgraft", "storage", "clear-failure",
                          "--data-dir", node.data_dir], capture_output=True, text=True,
                         timeout=60, env=c.env)
    assert out.returncode == 0, out.stderr
    assert "cleared" in out.stdout and not os.path.exists(marker)
    c.start_node(victim, timeout=30)
    acked.update(_append_some(c, leader, 5, "after"))
    last = max(acked)
    c.wait_applied(last, on=[victim])
    for node_id in c.nodes:
        _check_log(c, node_id, acked)


@contextlib.contextmanager
def small_filesystem(path: str, size: str) -> Iterator[str]:
    """A size-limited tmpfs mounted at ``path`` (root only), unmounted afterwards."""
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                   check=True, capture_output=True, timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)


def _fill(path: str) -> str:
    """Fill the file system of ``path`` with a ballast file; returns its path."""
    ballast = os.path.join(path, "ballast")
    chunk = b"\xa5" * 65536
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\xa5" * 512)
    return ballast


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_disk_full_leader_hands_over_and_recovers(cluster_factory: object) -> None:
    c: Cluster = cluster_factory(3, start=False,  # type: ignore[operator]
                                 extra_args=["--segment-size", "131072"])
    full = 1
    mount = tempfile.mkdtemp(prefix="pgraft-full-")
    os.rmdir(mount)
    c.nodes[full].data_dir = os.path.join(mount, "node1")
    with small_filesystem(mount, "6m"):
        try:
            c.start(timeout=60)
            leader = c.wait_for_leader(timeout=60)
            if leader != full:
                with c.client(leader) as cl:
                    cl.transfer_leadership(full)
                assert c.wait_for_leader(timeout=30) == full
            acked = _append_some(c, full, 20, "before")
            ballast = _fill(mount)
            # Keep writing through whoever leads: the full node runs out of its preallocated
            # room, stops acknowledging, and a healthy node takes over.
            full_errors: list[StorageFull] = []
            deadline = time.monotonic() + 60
            n = 0
            target = full
            new_leader = None
            while time.monotonic() < deadline:
                payload = f"load-{n}-".encode() + b"x" * 4000
                n += 1
                try:
                    with c.client(target, 3.0) as cl:
                        index = cl.append(payload, timeout=2.0)
                    acked[index] = payload
                except StorageFull as exc:  # refused before it entered the log
                    full_errors.append(exc)
                except NotLeaderError as exc:
                    if exc.leader_id:
                        target = exc.leader_id
                except PgraftError:
                    pass  # e.g. a commit timeout while the leader is stuck
                if full_errors or target != full:
                    new_leader = c.leader(among=[i for i in c.nodes if i != full])
                    if new_leader is not None:
                        break
            assert new_leader is not None and new_leader != full, \
                "no healthy node took over from the leader whose disk is full"
            with c.client(full) as cl:
                st = cl.status()
            assert st["disk_full"] and st["role"] != "leader"
            # The healthy majority goes on: writes and linearizable reads.
            acked.update(_append_some(c, new_leader, 10, "while-full"))
            with c.client(new_leader) as cl:
                assert cl.kv_put("k", "v") is True
                assert cl.kv_get("k") == "v"
            with c.client(full) as cl:  # local reads on the full node still answer
                assert {n.node_id for n in cl.get_nodes()} == {1, 2, 3}
            # Space back: the node resumes by itself and catches up.
            os.unlink(ballast)
            def resumed() -> bool | None:
                with c.client(full) as cl:
                    return not cl.status()["disk_full"] or None
            wait_until("the full node to resume", resumed, 30, 0.1)
            last = max(acked)
            c.wait_applied(last, on=[1, 2, 3])
            for node_id in c.nodes:
                _check_log(c, node_id, acked)
        finally:
            c.close()


def _find_record(data_dir: str, payload: bytes) -> tuple[str, int]:
    """(segment path, offset) of the log record whose data starts with ``payload``."""
    logdir = os.path.join(data_dir, "log")
    for name in sorted(os.listdir(logdir)):
        path = os.path.join(logdir, name)
        with open(path, "rb") as f:
            blob = f.read()
        at = blob.find(payload)
        if at >= 0:
            return path, at
    raise AssertionError(f"no record holding {payload!r} in {logdir}")


def test_damaged_synced_record_is_corruption_not_a_torn_tail(cluster: Cluster) -> None:
    """A flipped byte in a synced record whose payload holds whole zero sectors: the node
    refuses to start, naming the file and offset, and keeps every record (it used to cut the
    record and everything after it as a 'torn tail')."""
    c = cluster
    leader = c.wait_for_leader()
    victim = c.follower_of(leader)
    marker = b"zero-sectors:"
    acked = _append_some(c, leader, 3, "before")
    with c.client(leader) as cl:
        acked[cl.append(marker + bytes(8192))] = marker + bytes(8192)
    acked.update(_append_some(c, leader, 20, "after"))
    c.wait_applied(max(acked), on=[victim])
    assert c.stop(victim) == 0  # a clean stop saves the synced watermark
    node = c.nodes[victim]
    path, offset = _find_record(node.data_dir, marker)
    size_before = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(offset + 2)
        byte = f.read(1)
        f.seek(offset + 2)
        f.write(bytes([byte[0] ^ 0x40]))
    c.start_node(victim, wait=False)
    wait_until(f"node {victim} to refuse its damaged log", lambda: not node.running, 30, 0.05)
    assert node.proc is not None and node.proc.returncode == 1
    text = _log_of(c, victim)
    assert os.path.basename(path) in text and "offset" in text, text[-2000:]
    assert os.path.getsize(path) == size_before  # nothing was cut
    logdir = os.path.dirname(path)
    blobs = b""
    for name in os.listdir(logdir):
        with open(os.path.join(logdir, name), "rb") as f:
            blobs += f.read()
    assert all(f"after-{i}".encode() in blobs for i in range(20))
