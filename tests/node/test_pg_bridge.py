"""pgraft.pg.bridge, the SQL functions' Python side, against real node processes (no
PostgreSQL: the bridge is plain Python; tests/postgres runs it inside PL/Python)."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from pgraft import __version__
from pgraft.localcluster import LocalCluster
from pgraft.pg.bridge import OPS, Bridge, major_minor, peer_rows, sentence, version_problem

VERSION = major_minor(__version__)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(3, base_dir=str(tmp_path_factory.mktemp("bridge"))) as c:
        c.start()
        c.wait_for_leader()
        yield c


def leader_bridge(cluster: LocalCluster, **kw: object) -> Bridge:
    leader = cluster.wait_for_leader()
    return Bridge(cluster.nodes[leader].socket_path, **kw)  # type: ignore[arg-type]


def test_every_op_names_a_client_method() -> None:
    from pgraft.client.sync import Client

    for op, (method, _params) in OPS.items():
        assert callable(getattr(Client, method)), op


def test_calls_return_outcomes(cluster: LocalCluster) -> None:
    bridge = leader_bridge(cluster)
    assert bridge.call("x", "kv_put", ["k", "v"], None, 5000) == {"ok": True, "result": True}
    assert bridge.call("x", "kv_get", ["k"], None, 5000) == {"ok": True, "result": "v"}
    index = bridge.call("x", "append", None, b"\x00\xff", 5000)["result"]
    assert bridge.call("x", "get_entry", [str(index)], None, 5000)["result"] == "00ff"
    nodes = bridge.call("x", "get_nodes", None, None, 5000)["result"]
    assert sorted(n["node_id"] for n in nodes) == [1, 2, 3]
    status = bridge.call("x", "status", None, None, 5000)["result"]
    assert status["role"] == "leader" and status["num_nodes"] == 3
    assert bridge.call("x", "version", None, None, 5000)["result"] == __version__


def test_stat_peers_on_the_leader_tracks_replication(cluster: LocalCluster) -> None:
    bridge = leader_bridge(cluster)
    rows = bridge.call("x", "stat_peers", None, None, 5000)["result"]
    me = bridge.call("x", "get_leader", None, None, 5000)["result"]
    assert sorted(r["node_id"] for r in rows) == sorted({1, 2, 3} - {me})
    for row in rows:
        assert row["replication_state"] == "replicate"
        assert row["match_index"] is not None and row["lag_entries"] >= 0
        assert row["role"] == "voter"


def test_null_argument_is_named_with_a_hint() -> None:
    out = Bridge("/nonexistent/node.sock").call("cannot add node", "add_node",
                                                ["4", None, "7004"], None, 1000)
    assert out == {"ok": False, "sqlstate": "22004",
                   "message": "cannot add node: address must not be NULL",
                   "detail": None, "hint": "Pass a value for address."}


def test_node_not_running_is_a_connection_failure_with_a_hint(tmp_path: object) -> None:
    out = Bridge(f"{tmp_path}/node.sock").call("cannot get the term", "get_term", None,
                                               None, 1000)
    assert out["ok"] is False and out["sqlstate"] == "08006"
    assert out["message"] == ("cannot get the term: the pgraft node of this server is not "
                              "running or not reachable")
    assert "pgraft_launcher_status()" in out["hint"] and out["hint"].endswith(".")


def test_follower_refuses_writes_naming_itself(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    follower = next(i for i in (1, 2, 3) if i != leader)
    out = Bridge(cluster.nodes[follower].socket_path).call(
        "cannot put key", "kv_put", ["k", "v"], None, 5000)
    assert out["sqlstate"] == "25006"
    assert out["message"] == f"cannot put key: this node ({follower}) is not the leader"
    assert out["hint"][0].isupper() and out["hint"].endswith(".")


def test_an_interrupted_read_and_write(cluster: LocalCluster) -> None:
    """While the followers are paused a read or write cannot finish; a pending interrupt
    stops the wait, and for a write the outcome says it is unknown."""
    leader = cluster.wait_for_leader()
    followers = [i for i in (1, 2, 3) if i != leader]
    calls = {"n": 0}

    def interrupt() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    bridge = leader_bridge(cluster, interrupt=interrupt)
    assert bridge.call("x", "get_term", None, None, 5000)["ok"]
    assert calls["n"] == 0  # a quick answer never asks
    for f in followers:
        cluster.send_signal(f, signal.SIGSTOP)
    try:
        read = bridge.call("cannot get key", "kv_get", ["k"], None, 30000)
        calls["n"] = 0
        write = bridge.call("cannot put key", "kv_put", ["k", "w"], None, 30000)
    finally:
        for f in followers:
            cluster.send_signal(f, signal.SIGCONT)
    assert read["ok"] is False and read["interrupted"] is True and read["detail"] is None
    assert write["interrupted"] is True and "outcome is unknown" in write["detail"]
    cluster.wait_for_leader()
    # the client is still usable
    assert leader_bridge(cluster).call("x", "get_term", None, None, 5000)["ok"]


def test_versions_must_agree() -> None:
    assert version_problem(VERSION, VERSION, __version__) is None
    old_sql = version_problem("1.0", VERSION, "1.1.0")
    assert old_sql is not None and old_sql["hint"] == (
        "Run ALTER EXTENSION pgraft UPDATE in this database.")
    # by number, not as text: an extension 1.9 is older than a package 1.10
    assert "ALTER EXTENSION pgraft UPDATE" in version_problem("1.9", "1.10", "1.10.0")["hint"]
    assert "Install the pgraft package" in version_problem("1.10", "1.9", "1.9.0")["hint"]
    old_lib = version_problem("1.1", "1.0", "1.1.0")
    assert old_lib is not None and "Restart PostgreSQL" in old_lib["hint"]
    assert old_lib["sqlstate"] == "55000"
    refused = Bridge("/nonexistent", refused=old_sql)
    assert refused.call("x", "get_term", None, None, 1000) is old_sql


def test_sentence_style() -> None:
    assert sentence("the leader is node 3") == "The leader is node 3."
    assert sentence("Done.") == "Done."
    assert sentence("") is None and sentence(None) is None


def test_peer_rows_on_a_follower_have_no_replication_columns() -> None:
    status = {"node_id": 2, "last_index": 10, "progress": {},
              "peers": {1: {"connected": True}},
              "membership": [{"node_id": 1, "address": "h", "port": 1, "role": "voter"},
                             {"node_id": 2, "address": "h", "port": 2, "role": "voter"}]}
    assert peer_rows(status) == [{
        "node_id": 1, "address": "h", "port": 1, "role": "voter", "connected": True,
        "replication_state": None, "match_index": None, "next_index": None,
        "lag_entries": None, "recent_active": None}]
