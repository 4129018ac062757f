"""pgraft.* settings: invalid values stop the server from starting, or are refused on reload,
with a message that names the setting; an unconfigured server starts without a node and the
SQL functions say so clearly."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.support.postgres import PgServer, cleaned_up_cluster, free_ports, wait_for


@pytest.fixture(scope="module")
def server(pgraft_installed: str) -> Iterator[PgServer]:
    with cleaned_up_cluster() as cluster:
        (port,) = free_ports(1)
        yield cluster.add(1, port, f"1=127.0.0.1:{port}")


INVALID_AT_START = [
    ({"pgraft.port": 70000}, 'parameter "pgraft.port"'),
    ({"pgraft.port": 0}, 'parameter "pgraft.port"'),
    ({"pgraft.node_id": -1}, 'parameter "pgraft.node_id"'),
    ({"pgraft.address": "bad host!"}, 'parameter "pgraft.address"'),
    ({"pgraft.address": "0.0.0.0"}, 'parameter "pgraft.address"'),
    ({"pgraft.initial_cluster": "1=127.0.0.1:7001,1=127.0.0.1:7002"},
     'parameter "pgraft.initial_cluster"'),
    ({"pgraft.initial_cluster": "1=127.0.0.1"}, 'parameter "pgraft.initial_cluster"'),
    ({"pgraft.initial_cluster": "x=127.0.0.1:7001"}, 'parameter "pgraft.initial_cluster"'),
    ({"pgraft.initial_cluster": "1=127.0.0.1:99999"}, 'parameter "pgraft.initial_cluster"'),
    ({"pgraft.initial_cluster": "2=127.0.0.1:7002,3=127.0.0.1:7003"},
     "pgraft.initial_cluster does not list this node"),
    ({"pgraft.election_timeout": "soon"}, 'parameter "pgraft.election_timeout"'),
    ({"pgraft.election_timeout": 200, "pgraft.heartbeat_interval": 300},
     "pgraft.heartbeat_interval (300 ms) must be shorter than pgraft.election_timeout"),
    ({"pgraft.snapshot_entries": 5}, 'parameter "pgraft.snapshot_entries"'),
    ({"pgraft.snapshot_entries": -1}, 'parameter "pgraft.snapshot_entries"'),
    ({"pgraft.snapshot_bytes": "100kB"}, 'parameter "pgraft.snapshot_bytes"'),
    ({"pgraft.snapshot_keep": "many"}, 'parameter "pgraft.snapshot_keep"'),
    ({"pgraft.python": "python3"}, 'parameter "pgraft.python"'),
    # pgraft 1.0's relative default: a set value must be absolute now
    ({"pgraft.data_dir": "pgraft"}, 'parameter "pgraft.data_dir"'),
    ({"pgraft.data_dir": "/tmp/" + "d" * 120}, "too long for the node's Unix socket path"),
    ({"pgraft.data_dir": "{data}/raft"}, "is inside the PostgreSQL data directory"),
    ({"pgraft.data_dir": "{data}"}, "is inside the PostgreSQL data directory"),
    ({"pgraft.request_timeout": 0}, 'parameter "pgraft.request_timeout"'),
    ({"pgraft.request_timeout": "2d"}, 'parameter "pgraft.request_timeout"'),
    ({"pgraft.no_such_setting": "1"}, 'parameter "pgraft.no_such_setting"'),
    ({"pgraft.secret_file": "secret"}, 'parameter "pgraft.secret_file"'),
    ({"pgraft.secret_file": "/nonexistent/secret"}, 'parameter "pgraft.secret_file"'),
    ({"pgraft.secret_file": "/etc/hostname"}, "run chmod 600 /etc/hostname"),
    ({"pgraft.tls_cert": "/etc/hostname"}, "must be set together"),
    ({"pgraft.ha_lease_file": "lease"}, 'parameter "pgraft.ha_lease_file"'),
    # HA mode: the node that runs the server is its node; the launcher must not start one
    ({"pgraft.ha_lease_file": "/tmp/lease"},
     "pgraft.node_id (1) and pgraft.ha_lease_file cannot both be set"),
]


@pytest.mark.parametrize(("overrides", "message"), INVALID_AT_START,
                         ids=[next(iter(o)) + "=" + str(next(iter(o.values())))
                              for o, _ in INVALID_AT_START])
def test_invalid_setting_stops_server_start(server: PgServer, overrides: dict[str, object],
                                            message: str) -> None:
    server.stop()
    server.logfile.unlink(missing_ok=True)
    server.write_conf({key: value.format(data=server.data) if isinstance(value, str) else value
                       for key, value in overrides.items()})
    try:
        proc = server.start(check=False)
        assert proc.returncode != 0, "the server started with an invalid pgraft setting"
        log = server.log()
        assert message in log, log[-3000:]
        assert not server.node_pids()
    finally:
        server.stop("immediate")
        server.write_conf()


def test_invalid_setting_refused_on_reload(server: PgServer) -> None:
    server.write_conf()
    server.start()
    pid = server.node_pid()
    port_before = server.scalar("SHOW pgraft.port")
    server.write_conf({"pgraft.initial_cluster": "1=127.0.0.1:7001,,2=x:1",
                       "pgraft.port": 70000})
    server.reload()
    wait_for(lambda: 'invalid value for parameter "pgraft.initial_cluster"' in server.log(),
             timeout=30, what="the reload to be refused in the server log")
    wait_for(lambda: 'parameter "pgraft.port"' in server.log(), timeout=30,
             what="the port to be refused in the server log")
    assert server.running()
    assert server.scalar("SHOW pgraft.port") == port_before
    assert server.node_pids() == [pid], "a refused reload must not disturb the node"
    server.write_conf()
    server.reload()


def test_valid_change_needs_restart(server: PgServer) -> None:
    """The node's identity and address are postmaster settings (the Raft timing and
    snapshot settings are not: test_pg_launcher.py reloads them)."""
    if not server.running():
        server.write_conf()
        server.start()
    pid = server.node_pid()
    server.write_conf({"pgraft.port": server.raft_port + 1})
    server.reload()
    wait_for(lambda: 'parameter "pgraft.port" cannot be changed without '
             "restarting the server" in server.log(), timeout=30,
             what="PostgreSQL to say the setting needs a restart")
    assert server.node_pids() == [pid]
    server.write_conf()
    server.reload()


def test_setting_contexts(server: PgServer) -> None:
    if not server.running():
        server.write_conf()
        server.start()
    contexts = dict(server.sql("SELECT name, context FROM pg_settings "
                               "WHERE name LIKE 'pgraft.%'"))
    sighup = {"pgraft.election_timeout", "pgraft.heartbeat_interval",
              "pgraft.snapshot_entries", "pgraft.snapshot_bytes", "pgraft.snapshot_keep"}
    assert {n for n, c in contexts.items() if c == "sighup"} == sighup
    assert contexts["pgraft.request_timeout"] == "user"
    assert {n for n, c in contexts.items() if c == "postmaster"} == \
        set(contexts) - sighup - {"pgraft.request_timeout"}
    assert len(contexts) == 17
    row = server.sql("SELECT setting, unit, boot_val, min_val, max_val FROM pg_settings "
                     "WHERE name = 'pgraft.request_timeout'")
    assert row == [("10000", "ms", "10000", "1", "86400000")]
    assert server.scalar("SHOW pgraft.data_dir") == ""
    assert server.scalar("SHOW pgraft.ha_lease_file") == ""


def test_unconfigured_server_starts_without_node(server: PgServer) -> None:
    server.stop()
    server.write_conf({"pgraft.node_id": None, "pgraft.initial_cluster": None})
    try:
        server.start()
        wait_for(lambda: "pgraft.node_id is not set; no pgraft node is started" in server.log(),
                 timeout=30, what="the launcher to log that no node is configured")
        assert not server.node_pids()
        server.sql("CREATE EXTENSION IF NOT EXISTS pgraft CASCADE")
        with pytest.raises(psycopg.Error) as info:
            server.sql("SELECT * FROM pgraft_get_nodes()")
        err = info.value
        assert err.sqlstate == "08006"
        assert err.diag.message_primary == ("cannot list nodes: the pgraft node of this server "
                                            "is not running or not reachable")
        assert "pgraft.node_id" in (err.diag.message_hint or "")
        assert "Traceback" not in str(err)
        assert server.scalar("SELECT pgraft_socket_path()") == \
            f"{server.data}.pgraft/node.sock"
    finally:
        server.stop()
        server.write_conf()


def test_secret_file_is_passed_to_the_node(server: PgServer) -> None:
    """pgraft.secret_file reaches the node: TCP clients must prove the secret, the SQL
    functions (Unix socket, the node's own OS user) work without it (README: Security)."""
    import os
    import pwd
    import secrets

    import pgraft

    secret = server.dir / "cluster.secret"
    secret.write_text(secrets.token_hex(32) + "\n")
    os.chmod(secret, 0o600)
    pg = pwd.getpwnam("postgres")
    if os.geteuid() == 0:
        os.chown(secret, pg.pw_uid, pg.pw_gid)
    mine = server.dir / "client.secret"  # the same secret, owned by the test's user
    mine.write_text(secret.read_text())
    os.chmod(mine, 0o600)
    server.stop()
    server.write_conf({"pgraft.secret_file": str(secret)})
    try:
        server.start()
        pid = server.node_pid()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f"--secret-file\0{secret}\0".encode() in f.read()
        server.sql("CREATE EXTENSION IF NOT EXISTS pgraft CASCADE")
        wait_for(lambda: server.scalar("SELECT pgraft_get_leader()") == 1, timeout=30,
                 what="the node to lead")
        with pytest.raises(pgraft.AuthenticationFailed):
            pgraft.Client(f"127.0.0.1:{server.raft_port}", timeout=5).get_term()
        with pgraft.Client(f"127.0.0.1:{server.raft_port}", timeout=5,
                           secret_file=str(mine)) as c:
            assert c.get_term() >= 1
    finally:
        server.stop()
        server.write_conf()
