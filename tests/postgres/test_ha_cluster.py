"""HA mode with real PostgreSQL 15 servers: bootstrap from empty directories, replication,
the seed's add-node for data, and removal.

One cluster for the whole module (a bootstrap costs an initdb and two base backups); the
tests run in order and each leaves the cluster as the next expects it.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from tests.support.hacluster import HaCluster, ha_cluster, http_code
from tests.support.postgres import wait_for


@pytest.fixture(scope="module")
def cluster(pgraft_installed: str, request: pytest.FixtureRequest) -> Iterator[HaCluster]:
    with ha_cluster() as c:
        c.start(3)
        failed = request.session.testsfailed
        yield c
        if request.session.testsfailed > failed:
            print(c.logs())  # shown with the failure report


def test_bootstrap_of_three_from_empty_directories(cluster: HaCluster) -> None:
    primary = cluster.wait_primary(timeout=120)
    others = [i for i in cluster.nodes if i != primary.node_id]
    cluster.wait_streaming(others)
    rows = {r["node_id"]: r for r in cluster.status()}
    assert [rows[i]["pg_role"] for i in sorted(rows)].count("primary") == 1
    assert all(r["epoch"] == 1 for r in rows.values())
    # One physical slot per replica on the primary, each in use.
    slots = dict(primary.sql("SELECT slot_name, active FROM pg_replication_slots"))
    assert slots == {f"pgraft_node_{i}": True for i in others}
    # The replicas are PostgreSQL standbys of the same cluster.
    sysid = primary.scalar("SELECT system_identifier FROM pg_control_system()")
    for i in others:
        node = cluster.nodes[i]
        assert node.scalar("SELECT pg_is_in_recovery()") is True
        assert node.scalar("SELECT system_identifier FROM pg_control_system()") == sysid


def test_writes_through_the_primary_reach_the_replicas(cluster: HaCluster) -> None:
    primary = cluster.primary()
    primary.sql("CREATE TABLE ha_rows (id int PRIMARY KEY, note text)")
    primary.sql("INSERT INTO ha_rows SELECT g, 'row ' || g FROM generate_series(1, 100) g")
    for i, node in cluster.nodes.items():
        if i == primary.node_id:
            continue
        wait_for(lambda n=node: n.scalar("SELECT count(*) FROM ha_rows") == 100,
                 timeout=30, what=f"node {i} to have the 100 rows")
    with pytest.raises(Exception, match="read-only"):
        cluster.nodes[next(i for i in cluster.nodes if i != primary.node_id)].sql(
            "INSERT INTO ha_rows VALUES (1000, 'on a replica')")


def test_raft_leadership_follows_the_primary(cluster: HaCluster) -> None:
    primary = cluster.primary()
    wait_for(lambda: primary.scalar("SELECT pgraft_get_leader()") == primary.node_id,
             timeout=30, what="the Raft leader to be the primary's node")


def test_http_endpoints_tell_the_primary_from_the_replicas(cluster: HaCluster) -> None:
    primary = cluster.primary()
    for i, node in cluster.nodes.items():
        expected = (200, 503) if i == primary.node_id else (503, 200)
        wait_for(lambda n=node, e=expected: (http_code(n.http_port, "/primary"),
                                              http_code(n.http_port, "/replica")) == e,
                 timeout=20, what=f"node {i}'s /primary and /replica to answer {expected}")
        assert http_code(node.http_port, "/read-only") == 200
        assert http_code(node.http_port, "/health") == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{primary.http_port}/cluster",
                                timeout=3) as r:
        body = json.load(r)
    assert body["lease"]["primary_id"] == primary.node_id and body["lease"]["valid"]


def test_the_seed_for_data_add_node_builds_a_streaming_replica(cluster: HaCluster) -> None:
    primary = cluster.primary()
    node4 = cluster.add(4)
    node4.start()   # an empty PGDATA, no initial cluster: it waits to be added
    assert primary.scalar("SELECT pgraft_add_node(4, '127.0.0.1', %s)",
                          (node4.raft_port,)) is True
    wait_for(lambda: cluster.streaming(4), timeout=120, what="node 4 streaming", interval=0.3)
    wait_for(lambda: node4.scalar("SELECT count(*) FROM ha_rows") == 100, timeout=30,
             what="node 4 to hold the rows written before it was added")
    primary.sql("INSERT INTO ha_rows VALUES (101, 'after node 4')")
    wait_for(lambda: node4.scalar("SELECT count(*) FROM ha_rows") == 101, timeout=30,
             what="node 4 to receive a new row")
    rows = primary.sql("SELECT node_id, pg_role FROM pgraft_ha_status() ORDER BY 1")
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert [r[1] for r in rows].count("primary") == 1


def test_ha_status_on_the_command_line(cluster: HaCluster,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from pgraft.cli.main import main

    replica = next(n for i, n in cluster.nodes.items() if i != cluster.primary().node_id)
    assert main(["--node", f"127.0.0.1:{replica.raft_port}", "ha", "status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["node_id"] for r in rows] == [1, 2, 3, 4]
    primary = next(r for r in rows if r["pg_role"] == "primary")
    assert "/" in primary["received_lsn"] and primary["lease_remaining_ms"] > 0
    assert main(["--node", f"127.0.0.1:{replica.raft_port}", "ha", "status"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split("|")[0].strip() == "node_id"
    assert "streaming from node" in table


def test_remove_node_detaches_it_and_drops_its_slot(cluster: HaCluster) -> None:
    primary = cluster.primary()
    assert primary.scalar("SELECT pgraft_remove_node(4)") is True
    wait_for(lambda: primary.scalar("SELECT count(*) FROM pg_replication_slots "
                                    "WHERE slot_name = 'pgraft_node_4'") == 0,
             timeout=60, what="node 4's slot to be dropped")
    cluster.nodes[4].stop()
    # Node 4's data directory is still there (nothing is deleted).
    assert (cluster.nodes[4].pgdata / "PG_VERSION").exists()
