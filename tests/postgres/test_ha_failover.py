"""HA mode under faults, with real PostgreSQL 15 servers: PostgreSQL alone crashing on the
primary (restarted in place), kill -9 of the primary's node and postmaster (failover, then the
old primary rejoins by pg_rewind), SIGSTOP past the lease (fenced after SIGCONT), and bad
input (a directory of another cluster, a non-empty directory, a missing binary).

One cluster for the module: the tests run in order, each leaving one primary behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.hacluster import HaCluster, HaNode, ha_cluster, http_code
from tests.support.postgres import as_pg_user, pg_bindir, pg_user, wait_for


@pytest.fixture(scope="module")
def cluster(pgraft_installed: str, request: pytest.FixtureRequest) -> Iterator[HaCluster]:
    with ha_cluster() as c:
        c.start(3)
        primary = c.wait_primary(timeout=120)
        c.wait_streaming([i for i in c.nodes if i != primary.node_id])
        primary.sql("CREATE TABLE acked (id bigint PRIMARY KEY)")
        failed = request.session.testsfailed
        yield c
        if request.session.testsfailed > failed:
            print(c.logs())  # shown with the failure report


def epoch_of(cluster: HaCluster) -> int:
    return max(r["epoch"] or 0 for r in cluster.status())


def test_postgres_alone_killed_on_the_primary_is_restarted_in_place(cluster: HaCluster) -> None:
    primary = cluster.primary()
    epoch = epoch_of(cluster)
    old_pid = primary.postmaster_pid()
    assert old_pid
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: primary.postmaster_pid() not in (None, old_pid)
             and primary.scalar("SELECT NOT pg_is_in_recovery()"), timeout=60,
             what="the primary's PostgreSQL to be restarted in place")
    primary.sql("INSERT INTO acked VALUES (0)")
    assert cluster.wait_primary(timeout=30).node_id == primary.node_id
    assert epoch_of(cluster) == epoch, "a PostgreSQL crash alone must not fail over"


def test_kill_9_of_the_primary_fails_over_and_the_old_primary_rejoins(
        cluster: HaCluster) -> None:
    old = cluster.primary()
    epoch = epoch_of(cluster)
    for i in range(1, 51):
        old.sql("INSERT INTO acked VALUES (%s)", (i,))
    survivors = [i for i in cluster.nodes if i != old.node_id]
    old.kill_all(signal.SIGKILL)
    new = cluster.wait_primary(timeout=60, among=survivors)
    assert new.node_id != old.node_id
    new.sql("INSERT INTO acked VALUES (1000)")
    assert epoch_of(cluster) == epoch + 1
    codes = {i: http_code(cluster.nodes[i].http_port, "/primary") for i in survivors}
    assert sorted(codes.values()) == [200, 503], codes
    # The old primary, restarted, becomes a replica of the new one by itself.
    old.start()
    wait_for(lambda: cluster.streaming(old.node_id), timeout=120,
             what=f"node {old.node_id} to rejoin as a streaming replica")
    wait_for(lambda: old.scalar("SELECT count(*) FROM acked WHERE id = 1000") == 1,
             timeout=30, what="the rejoined node to receive the new primary's rows")


def test_a_paused_primary_is_fenced_when_it_resumes(cluster: HaCluster) -> None:
    old = cluster.primary()
    conn = old.connect(autocommit=False)
    conn.execute("INSERT INTO acked VALUES (2000)")  # open transaction, not committed
    survivors = [i for i in cluster.nodes if i != old.node_id]
    old.kill_all(signal.SIGSTOP)
    try:
        new = cluster.wait_primary(timeout=60, among=survivors)
    finally:
        old.kill_all(signal.SIGCONT)
    assert new.node_id != old.node_id
    with pytest.raises(psycopg.Error) as info:
        conn.commit()
    assert info.value.sqlstate in ("25006", None) or "lease" in str(info.value)
    conn.close()
    assert new.scalar("SELECT count(*) FROM acked WHERE id = 2000") == 0
    wait_for(lambda: cluster.streaming(old.node_id), timeout=120,
             what=f"node {old.node_id} to rejoin after the pause")


def test_a_server_whose_commit_fence_is_overridden_is_stopped_and_refused(
        cluster: HaCluster) -> None:
    primary = cluster.primary()
    node = next(n for i, n in cluster.nodes.items()
                if i != primary.node_id and cluster.streaming(i))
    node.stop()
    auto = node.pgdata / "postgresql.auto.conf"
    before = auto.read_text()
    # What ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements' writes: it is
    # read after pgraft.conf, and the server would run without pgraft's commit check.
    auto.write_text(before + "shared_preload_libraries = 'pg_stat_statements'\n")
    node.start()

    def refused() -> str | None:
        row = {r["node_id"]: r for r in cluster.status()}.get(node.node_id)
        state = str(row["state"]) if row else ""
        return state if state.startswith("refused") else None

    state = wait_for(refused, timeout=60, what=f"node {node.node_id} to refuse its server")
    assert "commit fence" in state and "shared_preload_libraries" in state
    wait_for(lambda: node.postmaster_pid() is None or not _alive(node.postmaster_pid()),
             timeout=30, what="the unfenced server to be stopped")
    node.stop()
    auto.write_text(before)
    node.start()
    wait_for(lambda: cluster.streaming(node.node_id), timeout=120,
             what=f"node {node.node_id} to stream again once the override is gone")


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _tree(path: str) -> dict[str, int]:
    out = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            out[os.path.relpath(full, path)] = os.stat(full).st_size
    return out


def _add_and_expect_refusal(cluster: HaCluster, node: HaNode, words: str) -> None:
    primary = cluster.primary()
    node.start()
    assert primary.scalar("SELECT pgraft_add_node(%s, '127.0.0.1', %s)",
                          (node.node_id, node.raft_port)) is True

    def refused() -> bool:
        row = {r["node_id"]: r for r in cluster.status()}.get(node.node_id)
        return bool(row and str(row["state"]).startswith("refused") and words in row["state"])

    wait_for(refused, timeout=60, what=f"node {node.node_id} to refuse its directory")
    assert words in node.log()
    primary.sql("SELECT pgraft_remove_node(%s)", (node.node_id,))
    node.stop()


def test_a_non_empty_directory_for_a_new_replica_is_refused_and_kept(
        cluster: HaCluster) -> None:
    node = cluster.add(5)
    user = pg_user()
    node.pgdata.mkdir()
    (node.pgdata / "precious.txt").write_text("not PostgreSQL, but somebody's\n")
    os.chown(node.pgdata, user.pw_uid, user.pw_gid)
    before = _tree(str(node.pgdata))
    _add_and_expect_refusal(cluster, node, "holds no PostgreSQL data directory")
    assert _tree(str(node.pgdata)) == before


def test_another_clusters_data_directory_is_refused_and_kept(cluster: HaCluster) -> None:
    node = cluster.add(6)
    as_pg_user([str(pg_bindir() / "initdb"), "-D", str(node.pgdata), "--no-sync",
                "-E", "UTF8", "--locale=C"], cwd=node.dir)
    before = _tree(str(node.pgdata))
    _add_and_expect_refusal(cluster, node, "not this pgraft cluster's")
    assert _tree(str(node.pgdata)) == before


def test_a_missing_postgresql_binary_is_a_clear_error(pgraft_installed: str) -> None:
    with ha_cluster() as c:
        node = c.add(1)
        node.start(c.initial_cluster(), extra=["--pg-bin", str(node.dir / "no-such-bin")])
        assert node.proc is not None
        code = node.proc.wait(60)
        assert code == 1
        text = node.log()
        assert "cannot run PostgreSQL" in text and "no-such-bin" in text, text
        assert not node.pgdata.exists()


def test_data_dir_inside_pgdata_is_refused(pgraft_installed: str) -> None:
    with ha_cluster() as c:
        node = c.add(1)
        argv = node.argv(c.initial_cluster(), [])
        i = argv.index("--data-dir")
        argv[i + 1] = str(node.pgdata / "raft")
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        assert out.returncode != 0
        assert "overlap" in out.stderr + out.stdout
