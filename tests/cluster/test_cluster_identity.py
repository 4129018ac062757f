"""A node that lost its durable state, or belongs to another cluster, is refused by its peers
(real node processes on loopback)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pgraft.localcluster import free_port
from tests.support.cluster import (  # noqa: F401  (fixtures)
    ELECTION_TIMEOUT_MS,
    Cluster,
    cluster_factory_fixture,
    cluster_fixture,
    requires_node,
    wait_until,
)

pytestmark = [pytest.mark.cluster, requires_node]


def refused_by(c: Cluster, node_id: int) -> dict[int, str]:
    with c.client(node_id) as cl:
        return {int(k): v for k, v in cl.status()["refused_peers"].items()}


def test_wiped_node_is_refused_and_never_counted(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    with c.client(leader) as cl:
        for i in range(5):
            cl.append(b"before-%d" % i)
    wiped = c.follower_of(leader)
    other = next(i for i in c.nodes if i not in (leader, wiped))
    c.stop(wiped)
    shutil.rmtree(c.nodes[wiped].data_dir)
    # Same command line (--initial-cluster, state "new" by default): it bootstraps a fresh
    # log at term 1 with no vote, under the same cluster id -- and its peers refuse it.
    c.start_node(wiped)
    for peer in (leader, other):
        reason = wait_until(f"node {peer} to refuse node {wiped}",
                            lambda p=peer: refused_by(c, p).get(wiped), 15, 0.05)
        assert "different data directory" in reason
    assert wait_until(f"node {wiped} to be told why",
                      lambda: refused_by(c, wiped), 15, 0.05)
    assert "pgraft_remove_node" in c.nodes[wiped].log_tail(200) or \
        "remove node" in c.nodes[wiped].log_tail(200)
    # Without the leader, the two remaining voters would elect one at once if the wiped node
    # counted; it does not, so no leader appears within many election timeouts.
    c.kill(leader)
    deadline = time.monotonic() + 8 * ELECTION_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        with c.client(other) as cl:
            st = cl.status()
        assert st["role"] != "leader", "a leader was elected with the wiped node's vote"
        time.sleep(0.05)
    # The old leader back: a majority of real members again.
    c.start_node(leader)
    new_leader = c.wait_for_leader(among=[leader, other], timeout=30)
    # The operator's way out: remove the wiped node; its id is never reused.
    with c.client(new_leader) as cl:
        assert cl.remove_node(wiped) is True
        assert wiped not in {n.node_id for n in cl.get_nodes()}


def test_existing_state_starts_empty_and_joins_when_added(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    node4 = c.start_empty(4)
    # as if it had been given the initial cluster of an existing cluster
    c.stop(4)
    node4.extra_args = ["--initial-cluster", f"{c.initial_cluster},4=127.0.0.1:{node4.port}",
                        "--initial-cluster-state", "existing"]
    c.start_node(4)
    with c.client(4) as cl:
        st = cl.status()
        assert st["membership"] == [] and st["cluster_id"] is None
    with c.client(leader) as cl:
        assert cl.add_node(4, "127.0.0.1", node4.port) is True
        cluster_id = cl.status()["cluster_id"]
    # node 4 learns the cluster id from the leader's handshake and joins
    assert wait_until("node 4 to learn the cluster id",
                      lambda: c.client(4).status()["cluster_id"] == cluster_id or None,
                      15, 0.05)
    c.wait_for_membership({1: None, 2: None, 3: None, 4: None}, on=[4])


def test_node_of_another_cluster_is_refused(cluster: Cluster, tmp_path: object) -> None:
    c = cluster
    leader = c.wait_for_leader()
    port = free_port("127.0.0.1")
    data = os.path.join(str(tmp_path), "stranger")
    log_path = os.path.join(str(tmp_path), "stranger.log")
    # Node 9 of another cluster ("other-token") that lists this cluster's leader as a member.
    initial = f"9=127.0.0.1:{port},{leader}={c.address(leader)}"
    cmd = [sys.executable, "-m", "pgraft", "serve", "--id", "9", "--address", "127.0.0.1",
           "--port", str(port), "--data-dir", data, "--initial-cluster", initial,
           "--initial-cluster-token", "other-token"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        def refused() -> str | None:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            return text if "belongs to another cluster" in text else None
        text = wait_until("the stranger to be refused", refused, 20, 0.05)
        assert f"peer {leader}" in text or f"node {leader}" in text
        with c.client(leader) as cl:
            assert 9 not in {n.node_id for n in cl.get_nodes()}
            assert cl.status()["role"] == "leader"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
