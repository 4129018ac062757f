"""`pgraft serve` as real processes (tests/support/cluster.py): clean exit on SIGTERM, refusal
of a locked or foreign data directory, the ignored --initial-cluster after bootstrap, and the
log lines an operator relies on."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from tests.support.cluster import (
    Cluster,
    cluster_factory_fixture,  # noqa: F401
    cluster_fixture,  # noqa: F401
    requires_node,
    wait_until,
)

pytestmark = [requires_node]


def _serve(args: list[str], cluster: Cluster, timeout: float = 30.0
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgraft", "serve", *args],
                          capture_output=True, text=True, timeout=timeout, env=cluster.env,
                          cwd=cluster.base_dir)


def test_sigterm_exit_locked_and_foreign_data_dirs(cluster: Cluster) -> None:
    leader = cluster.wait_for_leader(30)
    follower = cluster.follower_of(leader)
    node = cluster.nodes[follower]
    # another process on a running node's data directory is refused
    port = node.port
    res = _serve(["--id", str(follower), "--address", "127.0.0.1", "--port", "1",
                  "--data-dir", node.data_dir], cluster)
    assert res.returncode != 0
    assert "locked by another running node" in res.stdout + res.stderr
    # SIGTERM: clean exit, code 0
    assert cluster.stop(follower) == 0
    assert "stopped" in node.log_tail(5)
    # another node id on this data directory is refused
    res = _serve(["--id", "77", "--address", "127.0.0.1", "--port", str(port),
                  "--data-dir", node.data_dir], cluster)
    assert res.returncode != 0
    assert f"belongs to node {follower}, not node 77" in res.stdout + res.stderr
    # restarting with a different --initial-cluster: reported, not obeyed
    node.extra_args = []
    original = cluster.initial_cluster
    cluster.initial_cluster = original + ",9=127.0.0.1:7999"
    try:
        cluster.start_node(follower, timeout=30)
    finally:
        cluster.initial_cluster = original
    wait_until("the ignored --initial-cluster to be logged",
               lambda: "ignoring --initial-cluster" in node.log_tail(200), 10, 0.05)
    cluster.wait_for_membership({1: "voter", 2: "voter", 3: "voter"}, timeout=30)


def test_operator_log_lines(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory(3)
    leader = c.wait_for_leader(30)
    new = c.start_empty(4)
    with c.client(leader, 10) as cl:
        assert cl.add_node(4, new.host, new.port) is True
    c.wait_for_membership({1: "voter", 2: "voter", 3: "voter", 4: "voter"}, timeout=30)
    lead_log = c.nodes[leader].log_tail(400)
    assert "-> leader in term" in lead_log
    assert "node 4 added at" in lead_log
    assert "connected to peer 4" in lead_log
    new_log = new.log_tail(400)
    assert "no members yet: waiting to be added" in new_log
    assert "node 4 is now a voter" in new_log
    c.kill(4)
    wait_until("the disconnection to be logged",
               lambda: "disconnected from peer 4" in c.nodes[leader].log_tail(400), 10, 0.05)
