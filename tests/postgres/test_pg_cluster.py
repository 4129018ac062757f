"""The seed's walkthrough and its guarantees in SQL, on real PostgreSQL 15 servers.

Three servers bootstrap a cluster (nodes 1-3); a fourth starts empty and is added with one
call on the leader. The tests run in file order on one set of servers (module fixture):
walkthrough, follower refusal, privileges, bad input, log and KV, then the faults (kill -9 of
a node, a whole server stopped, pg_ctl restart, immediate stop, no leader).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from tests.support.postgres import (
    PgCluster,
    PgServer,
    cleaned_up_cluster,
    free_ports,
    leader_of,
    member_ids,
    wait_for,
)


@dataclass
class Setup:
    cluster: PgCluster
    first: list[PgServer]  # nodes 1-3, bootstrapped together
    fourth: PgServer  # node 4, started empty
    spare_port: int  # raft port for a node that has no server (node 5)

    @property
    def servers(self) -> list[PgServer]:
        return [*self.first, self.fourth]

    def leader(self, timeout: float = 60) -> PgServer:
        """The leader all running member servers agree on (node 4 only once it is added)."""

        def agreed() -> PgServer:
            running = [s for s in self.servers if s.running()]
            if self.fourth.running() and not member_ids(self.fourth):
                running.remove(self.fourth)
            return leader_of(running)

        return wait_for(agreed, timeout=timeout, what="an agreed leader")

    def by_id(self, node_id: int) -> PgServer:
        return next(s for s in self.servers if s.node_id == node_id)


@pytest.fixture(scope="module")
def pg(pgraft_installed: str) -> Iterator[Setup]:
    with cleaned_up_cluster() as cluster:
        ports = free_ports(5)
        initial = ",".join(f"{i}=127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3))
        first = [cluster.add(i, ports[i - 1], initial) for i in (1, 2, 3)]
        fourth = cluster.add(4, ports[3], "")
        setup = Setup(cluster, first, fourth, ports[4])
        for s in setup.servers:
            s.start()
        for s in setup.servers:
            s.sql("CREATE EXTENSION pgraft CASCADE")
        yield setup


def nodes(server: PgServer) -> list[tuple[int, str, int]]:
    return [(r[0], r[1], r[2]) for r in
            server.sql("SELECT node_id, address, port FROM pgraft_get_nodes() ORDER BY 1")]


def expect_error(server: PgServer, query: str, params: list[object] | None = None,
                 user: str = "postgres") -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        server.sql(query, params, user=user)
    assert "Traceback" not in info.value.diag.message_primary
    return info.value


def ensure_node4(pg: Setup) -> None:
    leader = pg.leader()
    if 4 not in member_ids(leader):
        assert leader.scalar("SELECT pgraft_add_node(4, '127.0.0.1', %s)",
                             [pg.fourth.raft_port]) is True
    wait_for(lambda: all(member_ids(s) == [1, 2, 3, 4] for s in pg.servers), timeout=30,
             what="node 4 on every server")


# --------------------------------------------------------------------------- the seed
def test_seed_walkthrough(pg: Setup) -> None:
    # Initial state: 3 nodes, one leader; membership {1, 2, 3} on all of them.
    leader = pg.leader()
    for s in pg.first:
        assert member_ids(s) == [1, 2, 3]
        assert s.scalar("SELECT pgraft_get_leader()") == leader.node_id
    assert member_ids(pg.fourth) == []  # started empty, waiting to be added

    # One command, on the leader only.
    assert leader.scalar("SELECT pgraft_add_node(4, '127.0.0.1', %s)",
                         [pg.fourth.raft_port]) is True

    # It appears on ALL nodes, the new one included: identical membership.
    expected = [(i, "127.0.0.1", s.raft_port) for i, s in
                zip((1, 2, 3, 4), pg.servers, strict=True)]
    for s in pg.servers:
        wait_for(lambda s=s: nodes(s) == expected, timeout=30,
                 what=f"node 4 in pgraft_get_nodes() on {s.name}")
    # The new node catches up and is promoted to voter; everyone agrees on the leader.
    for s in pg.servers:
        wait_for(lambda s=s: s.sql("SELECT role FROM pgraft_get_nodes() WHERE node_id = 4")
                 == [("voter",)], timeout=30, what=f"node 4 promoted to voter on {s.name}")
    assert {s.scalar("SELECT pgraft_get_leader()") for s in pg.servers} == {leader.node_id}
    rows = leader.sql("SELECT node_id, is_leader FROM pgraft_get_nodes() WHERE is_leader")
    assert rows == [(leader.node_id, True)]
    status = pg.fourth.sql("SELECT * FROM pgraft_get_cluster_status()")
    assert len(status) == 1
    node_id, term, leader_id, state, num_nodes, commit, applied, last = status[0]
    assert (node_id, leader_id, state, num_nodes) == (4, leader.node_id, "follower", 4)
    assert term >= 1 and 0 < applied <= commit <= last


def test_follower_refuses_with_sqlstate_and_hint(pg: Setup) -> None:
    ensure_node4(pg)
    leader = pg.leader()
    before = nodes(leader)
    for s in pg.servers:
        if s is leader:
            continue
        assert s.scalar("SELECT pgraft_is_leader()") is False
        err = expect_error(s, "SELECT pgraft_add_node(5, '127.0.0.1', 7005)")
        assert err.sqlstate == "25006"
        assert err.diag.message_primary == \
            f"cannot add node: this node ({s.node_id}) is not the leader"
        assert err.diag.message_hint == (f"The leader is node {leader.node_id} at "
                                         f"127.0.0.1:{leader.raft_port}; run the command there.")
        err = expect_error(s, "SELECT pgraft_kv_put('k', 'v')")
        assert err.sqlstate == "25006"
        assert err.diag.message_primary == \
            f"cannot put key: this node ({s.node_id}) is not the leader"
    for s in pg.servers:
        assert nodes(s) == before


# --------------------------------------------------------------------------- privileges
def test_privileges(pg: Setup) -> None:
    leader = pg.leader()
    leader.sql("CREATE ROLE app LOGIN")
    leader.sql("CREATE ROLE monitor LOGIN IN ROLE pg_monitor")
    leader.sql("CREATE ROLE ops LOGIN IN ROLE pgraft_admin")
    before = nodes(leader)

    # A plain role can do nothing, not even read, nor call the internals directly.
    for query in ("SELECT pgraft_add_node(5, '127.0.0.1', 7005)",
                  "SELECT pgraft_remove_node(4)", "SELECT pgraft_kv_put('k', 'v')",
                  "SELECT pgraft_log_append('\\x00')", "SELECT * FROM pgraft_get_nodes()",
                  "SELECT pg_catalog._pgraft_call('1.1', 'x', 'add_node', "
                  "ARRAY['5', '127.0.0.1', '7005'], NULL, 1000)",
                  "SELECT pg_catalog._pgraft_result('{\"ok\": true}')"):
        err = expect_error(leader, query, user="app")
        assert err.sqlstate == "42501", query  # insufficient_privilege

    # A monitoring role reads the cluster's shape, but changes nothing and reads no data.
    assert [r[0] for r in leader.sql("SELECT node_id FROM pgraft_get_nodes() ORDER BY 1",
                                     user="monitor")] == [n[0] for n in before]
    assert leader.scalar("SELECT pgraft_get_leader()", user="monitor") == leader.node_id
    assert leader.sql("SELECT * FROM pgraft_log_get_stats()", user="monitor")
    assert leader.sql("SELECT * FROM pgraft_get_cluster_status()", user="monitor")
    for query in ("SELECT pgraft_add_node(5, '127.0.0.1', 7005)",
                  "SELECT pgraft_kv_put('k', 'v')", "SELECT pgraft_kv_get('k')",
                  "SELECT pgraft_transfer_leadership(2)"):
        err = expect_error(leader, query, user="monitor")
        assert err.sqlstate == "42501", query

    # pgraft_admin may write.
    assert leader.scalar("SELECT pgraft_kv_put('owner', 'ops')", user="ops") is True
    assert leader.scalar("SELECT pgraft_kv_get('owner')", user="ops") == "ops"
    assert nodes(leader) == before


MONITOR_FUNCTIONS = {"pgraft_socket_path()", "pgraft_get_nodes()", "pgraft_get_leader()",
                     "pgraft_get_term()", "pgraft_is_leader()", "pgraft_get_cluster_status()",
                     "pgraft_log_get_stats()", "pgraft_get_version()", "pgraft_stat_peers()",
                     "pgraft_launcher_status()", "pgraft_ha_status()"}


def test_every_function_is_closed_to_public_and_builds_no_sql(pg: Setup) -> None:
    """Issue 9: no function of the extension is executable by a plain role; pg_monitor may
    execute only the read-only ones; no function builds SQL from its arguments, and hostile
    strings travel as data."""
    leader = pg.leader()
    funcs = leader.sql(
        "SELECT p.oid::regprocedure::text, p.prosrc, "
        "       has_function_privilege('app', p.oid, 'EXECUTE'), "
        "       has_function_privilege('monitor', p.oid, 'EXECUTE') "
        "FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass "
        "  AND d.objid = p.oid AND d.deptype = 'e' "
        "JOIN pg_extension e ON e.oid = d.refobjid WHERE e.extname = 'pgraft'")
    assert len(funcs) >= 15
    assert [f for f, _, app, _ in funcs if app] == []
    assert {f for f, _, _, mon in funcs if mon} == MONITOR_FUNCTIONS
    for name, body, _, _ in funcs:
        # the only SQL a function runs is a literal (plpy.execute("...")), never one built
        # with %, format(), + or an f-string from its arguments
        calls = re.findall(r"plpy\.(?:execute|prepare|cursor)\(", body or "")
        literal = re.findall(r'plpy\.(?:execute|prepare|cursor)\(\s*(?:"[^"%{]*"\s*)+\)',
                             body or "")
        assert len(calls) == len(literal), name
        assert "EXECUTE format" not in (body or "") and "quote_" not in (body or ""), name
    hostile = "'; DROP TABLE pgraft_canary; --"
    leader.sql("CREATE TABLE pgraft_canary (x int)")
    try:
        assert leader.scalar("SELECT pgraft_kv_put(%s, %s)", [hostile, hostile],
                             user="ops") is True
        assert leader.scalar("SELECT pgraft_kv_get(%s)", [hostile], user="ops") == hostile
        assert hostile in [r[0] for r in leader.sql("SELECT * FROM pgraft_kv_list_keys()",
                                                     user="ops")]
        assert leader.scalar("SELECT pgraft_kv_delete(%s)", [hostile], user="ops") is True
        err = expect_error(leader, "SELECT pgraft_add_node(5, %s, 7005)", [hostile], user="ops")
        assert err.sqlstate == "22023"
        index = leader.scalar("SELECT pgraft_log_append(convert_to(%s, 'UTF8'))", [hostile],
                              user="ops")
        assert index >= 1
        assert leader.scalar("SELECT count(*) FROM pgraft_canary") == 0  # still there
    finally:
        leader.sql("DROP TABLE pgraft_canary")


# --------------------------------------------------------------------------- bad input
BAD_INPUT = [
    ("SELECT pgraft_add_node(NULL, '127.0.0.1', 7005)", "22004",
     "cannot add node: node_id must not be NULL"),
    ("SELECT pgraft_add_node(5, NULL, 7005)", "22004",
     "cannot add node: address must not be NULL"),
    ("SELECT pgraft_add_node(5, '127.0.0.1', NULL)", "22004",
     "cannot add node: port must not be NULL"),
    ("SELECT pgraft_add_node(0, '127.0.0.1', 7005)", "22023", "cannot add node: node_id"),
    ("SELECT pgraft_add_node(-3, '127.0.0.1', 7005)", "22023", "cannot add node: node_id"),
    ("SELECT pgraft_add_node(2, '127.0.0.1', 7005)", "42710", "cannot add node: "),
    ("SELECT pgraft_add_node(5, 'not a host!', 7005)", "22023", "cannot add node: address"),
    ("SELECT pgraft_add_node(5, '', 7005)", "22023", "cannot add node: address"),
    ("SELECT pgraft_add_node(5, '0.0.0.0', 7005)", "22023", "cannot add node: address"),
    ("SELECT pgraft_add_node(5, '127.0.0.1', 0)", "22023", "cannot add node: port"),
    ("SELECT pgraft_add_node(5, '127.0.0.1', 65536)", "22023", "cannot add node: port"),
    ("SELECT pgraft_add_node(5, '127.0.0.1', -1)", "22023", "cannot add node: port"),
    ("SELECT pgraft_remove_node(NULL)", "22004",
     "cannot remove node: node_id must not be NULL"),
    ("SELECT pgraft_remove_node(99)", "42704", "cannot remove node: "),
    ("SELECT pgraft_remove_node(0)", "22023", "cannot remove node: node_id"),
    ("SELECT pgraft_transfer_leadership(99)", "42704", "cannot transfer leadership: "),
    ("SELECT pgraft_transfer_leadership(NULL)", "22004",
     "cannot transfer leadership: node_id must not be NULL"),
    ("SELECT pgraft_kv_put(NULL, 'v')", "22004", "cannot put key: key must not be NULL"),
    ("SELECT pgraft_kv_put('k', NULL)", "22004", "cannot put key: value must not be NULL"),
    ("SELECT pgraft_kv_put('', 'v')", "22023", "cannot put key: key"),
    ("SELECT pgraft_kv_put('big', repeat('x', 9000000))", "54000", "cannot put key: "),
    ("SELECT pgraft_kv_get(NULL)", "22004", "cannot get key: key must not be NULL"),
    ("SELECT pgraft_kv_delete(NULL)", "22004", "cannot delete key: key must not be NULL"),
    ("SELECT pgraft_log_append(NULL)", "22004",
     "cannot append to the log: data must not be NULL"),
    ("SELECT pgraft_log_append(decode(repeat('00', 9000000), 'hex'))", "54000",
     "cannot append to the log: "),
    ("SELECT pgraft_replicate_entry(NULL)", "22004",
     "cannot replicate entry: data must not be NULL"),
    ("SELECT pgraft_log_get_entry(NULL)", "22004",
     "cannot read log entry: index must not be NULL"),
    ("SELECT pgraft_log_get_entry(0)", "22023", "cannot read log entry: index"),
]


def test_bad_input_is_a_specific_error_and_changes_nothing(pg: Setup) -> None:
    ensure_node4(pg)
    leader = pg.leader()
    members = nodes(leader)
    keys = [r[0] for r in leader.sql("SELECT pgraft_kv_list_keys()")]
    term, last = leader.sql("SELECT current_term, last_index "
                            "FROM pgraft_get_cluster_status()")[0]
    for query, sqlstate, message in BAD_INPUT:
        err = expect_error(leader, query)
        assert (err.sqlstate, err.diag.message_primary[:len(message)]) == (sqlstate, message), \
            f"{query}: {err.sqlstate} {err.diag.message_primary}"
        assert err.diag.message_hint, f"{query}: no HINT"
    for s in pg.servers:
        assert nodes(s) == members
    assert [r[0] for r in leader.sql("SELECT pgraft_kv_list_keys()")] == keys
    term2, last2 = leader.sql("SELECT current_term, last_index "
                              "FROM pgraft_get_cluster_status()")[0]
    if term2 == term:  # no election meanwhile: nothing was appended to the log
        assert last2 == last


# --------------------------------------------------------------------------- log and KV
def test_log_and_kv(pg: Setup) -> None:
    ensure_node4(pg)
    leader = pg.leader()
    index = leader.scalar("SELECT pgraft_log_append(%s)", [b"\x00seed\xff"])
    assert index >= 1
    assert leader.scalar("SELECT pgraft_log_get_entry(%s)", [index]) == b"\x00seed\xff"
    assert leader.scalar("SELECT pgraft_replicate_entry('hello')") is True
    stats = leader.sql("SELECT * FROM pgraft_log_get_stats()")[0]
    first_index, last_index, commit_index, applied_index, snapshot_index, log_bytes = stats
    assert first_index <= index < last_index and commit_index >= index + 1
    assert applied_index >= index + 1 and snapshot_index >= 0 and log_bytes > 0
    for s in pg.servers:  # replicated: every node has the entry
        wait_for(lambda s=s: s.scalar("SELECT pgraft_log_get_entry(%s)", [index])
                 == b"\x00seed\xff", timeout=30, what=f"entry {index} on {s.name}")
    assert leader.scalar("SELECT pgraft_kv_put('leader_key', 'node-a')") is True
    assert leader.scalar("SELECT pgraft_kv_get('leader_key')") == "node-a"
    assert leader.scalar("SELECT pgraft_kv_get('absent')") is None
    assert "leader_key" in [r[0] for r in leader.sql("SELECT pgraft_kv_list_keys()")]
    assert leader.scalar("SELECT pgraft_kv_delete('leader_key')") is True
    assert leader.scalar("SELECT pgraft_kv_delete('leader_key')") is False
    assert leader.scalar("SELECT pgraft_kv_get('leader_key')") is None
    assert leader.scalar("SELECT pgraft_get_term()") >= 1
    assert leader.scalar("SELECT pgraft_get_version()")


def test_transfer_leadership(pg: Setup) -> None:
    ensure_node4(pg)
    leader = pg.leader()
    target = next(s for s in pg.first if s is not leader)
    assert leader.scalar("SELECT pgraft_transfer_leadership(%s)", [target.node_id]) is True
    assert wait_for(lambda: pg.leader() is target, timeout=30,
                    what=f"node {target.node_id} to lead")
    assert target.scalar("SELECT pgraft_is_leader()") is True


# --------------------------------------------------------------------------- faults
def test_kill9_node_is_restarted_by_the_launcher(pg: Setup) -> None:
    ensure_node4(pg)
    for victim in (next(s for s in pg.servers if s is not pg.leader()), pg.leader()):
        old = victim.node_pid()
        os.kill(old, signal.SIGKILL)
        new = wait_for(lambda v=victim, o=old: [p for p in v.node_pids() if p != o],
                       timeout=30, what=f"the launcher to restart the node of {victim.name}")
        assert len(new) == 1
        assert f"pgraft node (PID {old}) was terminated by signal 9" in victim.log()
        # SQL keeps working on that server once the node is back, and the cluster heals.
        wait_for(lambda v=victim: member_ids(v) == [1, 2, 3, 4], timeout=30,
                 what=f"SQL on {victim.name} after the restart")
        leader = pg.leader()
        assert leader.scalar("SELECT pgraft_kv_put('after_kill', %s)", [victim.name]) is True
        wait_for(lambda v=victim, n=leader.node_id: v.scalar("SELECT pgraft_get_leader()") == n,
                 timeout=30, what=f"{victim.name} to follow the leader again")


def test_automatic_recovery_of_a_stopped_server(pg: Setup) -> None:
    """The seed: node 3 is down while the leader adds a node; it catches up on restart."""
    ensure_node4(pg)
    leader = pg.leader()
    down = next(s for s in pg.servers if s is not leader and s.node_id != 4)
    node_pid = down.node_pid()
    down.stop()
    wait_for(lambda: not down.node_pids(), timeout=10,
             what="the node to stop with its server")
    with pytest.raises(ProcessLookupError):
        os.kill(node_pid, 0)

    leader = pg.leader()
    assert leader.scalar("SELECT pgraft_add_node(5, '127.0.0.1', %s)",
                         [pg.spare_port]) is True
    assert leader.scalar("SELECT pgraft_kv_put('while_down', 'yes')") is True
    index = leader.scalar("SELECT pgraft_log_append('\\x42')")
    up = [s for s in pg.servers if s.running()]
    for s in up:
        wait_for(lambda s=s: 5 in member_ids(s), timeout=30, what=f"node 5 on {s.name}")

    down.start()
    wait_for(lambda: member_ids(down) == [1, 2, 3, 4, 5], timeout=60,
             what=f"{down.name} to catch up on the membership change")
    assert nodes(down) == nodes(leader)
    wait_for(lambda: down.scalar("SELECT pgraft_log_get_entry(%s)", [index]) == b"\x42",
             timeout=30, what=f"{down.name} to catch up on the log")

    # Node 5 has no server; remove it again (one change at a time, from the leader).
    leader = pg.leader()
    wait_for(lambda: leader.scalar("SELECT pgraft_remove_node(5)"), timeout=30,
             what="removing node 5")
    for s in pg.servers:
        wait_for(lambda s=s: member_ids(s) == [1, 2, 3, 4], timeout=30,
                 what=f"node 5 gone on {s.name}")


def test_pg_ctl_restart(pg: Setup) -> None:
    ensure_node4(pg)
    victim = next(s for s in pg.servers if s is not pg.leader())
    old = victim.node_pid()
    victim.restart()
    new = victim.node_pid()
    assert new != old
    with pytest.raises(ProcessLookupError):
        os.kill(old, 0)
    wait_for(lambda: member_ids(victim) == [1, 2, 3, 4], timeout=30,
             what=f"SQL on {victim.name} after pg_ctl restart")
    leader = pg.leader()
    assert leader.scalar("SELECT pgraft_kv_put('after_restart', 'ok')") is True
    wait_for(lambda: victim.scalar("SELECT pgraft_get_leader()") == leader.node_id,
             timeout=30, what=f"{victim.name} to follow the leader")
    log = victim.log()
    assert "pgraft launcher: stopping pgraft node" in log
    assert "pgraft launcher: exiting" in log


def test_immediate_stop_leaves_no_node_behind(pg: Setup) -> None:
    ensure_node4(pg)
    victim = next(s for s in pg.servers if s is not pg.leader())
    old = victim.node_pid()
    victim.stop("immediate")
    wait_for(lambda: not victim.node_pids(), timeout=15,
             what="the node to go away after an immediate stop")
    victim.start()
    assert victim.node_pid() != old
    wait_for(lambda: member_ids(victim) == [1, 2, 3, 4], timeout=30,
             what=f"{victim.name} back after the immediate stop")


def test_no_leader_is_a_clear_error_and_the_cluster_recovers(pg: Setup) -> None:
    ensure_node4(pg)
    leader = pg.leader()
    other = next(s for s in pg.servers if s is not leader)
    rest = [s for s in pg.servers if s not in (leader, other)]
    before = nodes(rest[0])
    leader.stop()
    other.stop()
    # 2 of 4 voters: no quorum, so no leader can be elected.
    for s in rest:
        wait_for(lambda s=s: s.scalar("SELECT pgraft_get_leader()") is None, timeout=30,
                 what=f"{s.name} to see that there is no leader")
    started = time.monotonic()
    err = expect_error(rest[0], "SELECT pgraft_add_node(6, '127.0.0.1', 7006)")
    assert time.monotonic() - started < 15
    assert err.sqlstate in ("25006", "57P03"), err.diag.message_primary
    assert err.diag.message_primary.startswith("cannot add node: ")
    assert err.diag.message_hint
    assert nodes(rest[0]) == before

    leader.start()
    other.start()
    new_leader = pg.leader()
    assert new_leader.scalar("SELECT pgraft_kv_put('recovered', 'yes')") is True
    for s in pg.servers:
        wait_for(lambda s=s: nodes(s) == before, timeout=30, what=f"{s.name} healed")
    assert leader_of(pg.servers) is new_leader
