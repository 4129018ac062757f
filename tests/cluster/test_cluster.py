"""The seed's walkthrough and membership changes on real node processes (loopback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import pgraft
from pgraft.errors import (
    MembershipChangeInProgress,
    NodeExists,
    NotLeaderError,
    Timeout,
    Unavailable,
    UnknownNode,
)
from tests.support.cluster import (  # noqa: F401  (fixtures)
    Cluster,
    cluster_factory_fixture,
    cluster_fixture,
    requires_node,
    wait_until,
)
from tests.support.procs import processes_mentioning

pytestmark = [pytest.mark.cluster, requires_node]

ALL4 = {1: None, 2: None, 3: None, 4: None}


def add_when_possible(c: Cluster, leader: int, node_id: int, port: int,
                      timeout: float = 30.0) -> None:
    """add_node on the leader, retrying while a previous change (a promotion) is pending."""
    def attempt() -> bool | None:
        with c.client(leader, 10.0) as cl:
            try:
                return cl.add_node(node_id, "127.0.0.1", port)
            except MembershipChangeInProgress:
                return None
    assert wait_until(f"node {node_id} to be added", attempt, timeout, 0.1) is True


def test_seed_walkthrough(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    node4 = c.start_empty(4)
    # One call, on the leader only.
    with c.client(leader) as cl:
        assert cl.add_node(4, "127.0.0.1", node4.port) is True
    views = c.wait_for_membership(ALL4, on=[1, 2, 3, 4])
    assert len({tuple(v) for v in views.values()}) == 1  # identical everywhere
    entry = {n.node_id: n for n in views[1]}[4]
    assert (entry.address, entry.port) == ("127.0.0.1", node4.port)
    # Node 4 replicates and is promoted to voter once caught up.
    views = c.wait_for_membership({i: "voter" for i in (1, 2, 3, 4)}, on=[1, 2, 3, 4])
    assert [n.is_leader for n in views[4]].count(True) == 1
    with c.client(leader) as cl:
        index = cl.append(b"after node 4 joined")
    c.wait_applied(index, on=[1, 2, 3, 4])
    with c.client(4) as cl:
        assert cl.get_entry(index)["data"] == b"after node 4 joined"


def test_add_on_a_follower_is_refused_naming_the_leader(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    follower = c.follower_of(leader)
    with c.client(follower) as cl, pytest.raises(NotLeaderError) as info:
        cl.add_node(4, "127.0.0.1", 7004)
    err = info.value
    assert "not the leader" in err.message
    assert err.leader_id == leader
    assert err.leader_address == c.address(leader)
    assert f"node {leader}" in err.hint
    # Nothing changed anywhere.
    c.wait_for_membership({1: "voter", 2: "voter", 3: "voter"}, on=[1, 2, 3])


def test_automatic_recovery_of_a_node_that_was_down(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    down = c.follower_of(leader)
    c.kill(down)  # T+0s: node crashes
    node4 = c.start_empty(4)
    add_when_possible(c, leader, 4, node4.port)  # T+10s: add node 4
    node5 = c.start_empty(5)
    add_when_possible(c, leader, 5, node5.port)  # T+20s: add node 5
    up = [i for i in (1, 2, 3, 4, 5) if i != down]
    c.wait_for_membership({i: None for i in (1, 2, 3, 4, 5)}, on=up)
    c.start_node(down)  # T+30s: node restarts
    views = c.wait_for_membership({i: None for i in (1, 2, 3, 4, 5)}, on=[1, 2, 3, 4, 5],
                                  timeout=60)
    assert {n.node_id for n in views[down]} == {1, 2, 3, 4, 5}


def test_restart_of_the_whole_cluster_keeps_state(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    node4 = c.start_empty(4)
    with c.client(leader) as cl:
        assert cl.add_node(4, "127.0.0.1", node4.port)
        indexes = [cl.append(f"entry {i}".encode()) for i in range(20)]
        assert cl.kv_put("config", "v1")
        assert cl.kv_put("gone", "x")
        assert cl.kv_delete("gone")
    c.wait_for_membership({i: "voter" for i in (1, 2, 3, 4)}, on=[1, 2, 3, 4])
    for node_id in (1, 2, 3, 4):  # all at once, no clean shutdown
        c.kill(node_id)
    c.start(timeout=60)
    leader = c.wait_for_leader(timeout=60)
    views = c.wait_for_membership({i: "voter" for i in (1, 2, 3, 4)}, on=[1, 2, 3, 4])
    assert {n.port for n in views[4] if n.node_id == 4} == {node4.port}
    with c.client(leader) as cl:
        for i, index in enumerate(indexes):
            assert cl.get_entry(index)["data"] == f"entry {i}".encode()
        assert cl.kv_get("config") == "v1"
        assert cl.kv_get("gone") is None
        assert cl.kv_list_keys() == ["config"]
        assert cl.append(b"after restart") > indexes[-1]


def test_remove_a_follower(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    follower = c.follower_of(leader)
    with c.client(leader) as cl:
        assert cl.remove_node(follower) is True
    rest = [i for i in (1, 2, 3) if i != follower]
    c.wait_for_membership({i: "voter" for i in rest}, on=rest)
    c.stop(follower)
    with c.client(leader) as cl:
        index = cl.append(b"two voters")
        with pytest.raises(UnknownNode):
            cl.remove_node(follower)
    c.wait_applied(index, on=rest)


def test_remove_the_leader(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    with c.client(leader) as cl:
        assert cl.remove_node(leader) is True
    rest = [i for i in (1, 2, 3) if i != leader]
    new_leader = c.wait_for_leader(among=rest, exclude=leader)
    assert new_leader in rest
    c.wait_for_membership({i: "voter" for i in rest}, on=rest)
    with c.client(new_leader) as cl:
        assert cl.append(b"new leader") >= 1
    c.stop(leader)


def test_leadership_transfer(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    target = c.follower_of(leader)
    with c.client(leader, 15.0) as cl:
        assert cl.transfer_leadership(target) is True
    assert c.wait_for_leader() == target
    with c.client(target) as cl:
        assert cl.is_leader()
        assert cl.append(b"led by the target") >= 1
    # The old leader learns who leads from the target's heartbeats and says so.
    with c.client(leader) as cl:
        wait_until("the old leader to name the new one", lambda: cl.get_leader() == target, 30)
        with pytest.raises(NotLeaderError) as info:
            cl.append(b"old leader")
    assert info.value.leader_id == target


def test_bad_requests_change_nothing(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    with c.client(leader) as cl:
        with pytest.raises(NodeExists):
            cl.add_node(2, "127.0.0.1", 7999)
        with pytest.raises(UnknownNode):
            cl.remove_node(42)
        with pytest.raises(UnknownNode):
            cl.transfer_leadership(42)
    c.wait_for_membership({1: "voter", 2: "voter", 3: "voter"}, on=[1, 2, 3])


def test_no_quorum_gives_a_clear_error_not_a_hang(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    for other in [i for i in (1, 2, 3) if i != leader]:
        c.kill(other)
    with c.client(leader) as cl, pytest.raises((Timeout, Unavailable, NotLeaderError)):
        cl.append(b"no quorum", timeout=2.0)


def test_unix_socket_and_kv(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    with pgraft.Client(c.nodes[leader].data_dir) as cl:
        assert cl.kv_put("leader-key", "node") is True
    follower = c.follower_of(leader)
    with pgraft.Client(c.nodes[follower].socket_path) as cl:
        assert cl.kv_get("leader-key") == "node"  # linearizable read via the leader
        assert cl.kv_list_keys() == ["leader-key"]


def test_cli_against_real_nodes(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    follower = c.follower_of(leader)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pgraft", *args], capture_output=True,
                              text=True, timeout=60, env=c.env)

    proc = cli("nodes", "--node", c.address(follower))
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 5
    proc = cli("leader", "--json", "--node", c.address(follower))
    assert json.loads(proc.stdout)["leader_id"] == leader
    proc = cli("add-node", "4", "127.0.0.1", "7004", "--node", c.address(follower))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and f"node {leader}" in proc.stderr
    assert proc.stderr.count("\n") == 1
    proc = cli("status", "--node", c.address(leader))
    assert proc.returncode == 0 and "term" in proc.stdout


def test_pgraft_demo_end_to_end() -> None:
    from tests.support.cluster import node_available

    if not node_available():
        pytest.skip("the node runtime (pgraft.node) is not available")
    root = os.path.dirname(os.path.dirname(os.path.abspath(pgraft.__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.run([sys.executable, "-m", "pgraft", "demo", "--election-timeout", "300"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "All nodes have identical membership." in out
    assert "NotLeaderError" in out
    assert "promoted it to voter" in out
    assert "Traceback" not in proc.stderr



@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pgraft_demo_cleans_up_on_ctrl_c() -> None:
    from tests.support.cluster import node_available

    if not node_available():
        pytest.skip("the node runtime (pgraft.node) is not available")
    root = os.path.dirname(os.path.dirname(os.path.abspath(pgraft.__file__)))
    env = dict(os.environ, PYTHONPATH=root, PYTHONUNBUFFERED="1")
    # Unbuffered bytes: readline() takes no more than one line from the pipe, so everything
    # after "Step 1" is left for communicate() (a text-mode reader's read-ahead would be lost).
    proc = subprocess.Popen([sys.executable, "-m", "pgraft", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, bufsize=0, env=env)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        while not (seen and seen[-1].startswith("Step 1")):
            line = proc.stdout.readline().decode("utf-8", "replace")
            if not line:
                break
            seen.append(line)
        assert seen and seen[0].startswith("Starting a 3-node pgraft cluster in "), seen
        base_dir = seen[0].rsplit(" ", 1)[1].strip()
        assert seen[-1].startswith("Step 1"), "".join(seen)  # not ended before the Ctrl-C
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0].decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = "".join(seen) + rest
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "error: interrupted" in rest, out
    assert not os.path.exists(base_dir), out
    wait_until("the demo's nodes to be gone", lambda: not processes_mentioning(base_dir), 10)
