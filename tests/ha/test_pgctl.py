"""pgraft.ha.pgctl and pgraft.ha.pgconf: the configuration text (pure), the data directory
without a server, and real PostgreSQL 15 servers: a primary, a replica made with
pg_basebackup, a promotion, the fenced old primary rewound and following the new one."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from pgraft.errors import (
    InvalidArgument,
    PostgresCommandFailed,
    PostgresDirectoryRefused,
    PostgresStateConflict,
)
from pgraft.ha import pgconf
from pgraft.ha.pgctl import PgControl
from pgraft.ha.types import PG_MISSING, PG_PRIMARY, PG_REPLICA, PG_STOPPED, PgObservation
from pgraft.localcluster import wait_until
from tests.ha.conftest import PG_BINDIR, PG_USER, Workspace

REPLICATION_USER = "replicator"
# Characters a password file and a conninfo must escape.
REPLICATION_PASSWORD = "s3cret:pass\\word 'q'"

#: Small servers: the whole file stays well under a minute on 2 cores. log_statement=all
#: shows that the replication role's password never reaches the log.
TEST_SETTINGS: dict[str, pgconf.Setting] = {
    **pgconf.ha_base_settings(),
    "shared_buffers": "16MB",
    "max_connections": 20,
    "fsync": False,
    "max_wal_size": "64MB",
    "wal_keep_size": "64MB",
    "log_statement": "all",
}
HBA = pgconf.local_hba_lines() + pgconf.replication_hba_lines(REPLICATION_USER, ["127.0.0.1"])


def control(tmp: Path, name: str = "data", **kw: object) -> PgControl:
    args: dict[str, object] = {"bindir": PG_BINDIR, "port": 5999,
                               "listen_addresses": "127.0.0.1",
                               "socket_dir": str(tmp / "sock"), "log_path": str(tmp / "pg.log"),
                               "superuser": "postgres", **kw}
    return PgControl(str(tmp / name), **args)  # type: ignore[arg-type]


def fake_cluster(path: Path, conf: str = "") -> None:
    """The two files that make a directory a cluster to directory_state, and a conf."""
    (path / "global").mkdir(parents=True)
    (path / "PG_VERSION").write_text("15\n")
    (path / "global" / "pg_control").write_bytes(b"\0" * 16)
    (path / "postgresql.conf").write_text(conf)


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(path.rglob("*"))}


# --- pure: the configuration text ----------------------------------------------------------


def test_quote_setting() -> None:
    assert pgconf.quote_setting(True) == "on"
    assert pgconf.quote_setting(False) == "off"
    assert pgconf.quote_setting(20) == "20"
    assert pgconf.quote_setting(0.5) == "0.5"
    assert pgconf.quote_setting("16MB") == "'16MB'"
    assert pgconf.quote_setting("it's a\\b") == "'it''s a\\\\b'"
    for bad in ("a\nb", "a\rb", "a\0b", float("nan"), None, ["x"]):
        with pytest.raises(InvalidArgument):
            pgconf.quote_setting(bad)  # type: ignore[arg-type]


def test_render_conf_puts_the_fixed_settings_last_and_refuses_reserved_names() -> None:
    text = pgconf.render_conf({"work_mem": "4MB", "pgraft.node_id": 3, "hot_standby": True},
                              {"port": 5433})
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert body == ["hot_standby = on", "pgraft.node_id = 3", "work_mem = '4MB'", "port = 5433"]
    for reserved in ("port", "PORT", "hba_file", "include", "data_directory"):
        with pytest.raises(InvalidArgument):
            pgconf.render_conf({reserved: 1}, {})
    for bad_name in ("work mem", "x;y", "", "a.b.c"):
        with pytest.raises(InvalidArgument):
            pgconf.render_conf({bad_name: 1}, {})


def test_with_include_leaves_exactly_one_include_at_the_end() -> None:
    once = pgconf.with_include("shared_buffers = 128MB\n")
    assert once == f"shared_buffers = 128MB\n\n{pgconf.INCLUDE_LINE}\n"
    assert pgconf.with_include(once) == once
    copied = (f"{pgconf.INCLUDE_LINE}\nport = 1\n  include_if_exists 'pgraft.conf'  # old\n"
              "# include_if_exists = 'pgraft.conf'\n")
    again = pgconf.with_include(copied)
    assert again.count("'pgraft.conf'") == 2  # the commented-out line stays a comment
    assert again.endswith(f"\n{pgconf.INCLUDE_LINE}\n")
    assert "port = 1" in again
    assert pgconf.with_include("") == f"\n{pgconf.INCLUDE_LINE}\n"


def test_replication_hba_lines() -> None:
    assert pgconf.replication_hba_lines("rep", ["10.0.0.1", "::1", "10.0.0.1", "db2.example"]
                                        ) == [
        "host replication rep 10.0.0.1/32 scram-sha-256",
        "host postgres rep 10.0.0.1/32 scram-sha-256",
        "host replication rep ::1/128 scram-sha-256",
        "host postgres rep ::1/128 scram-sha-256",
        "host replication rep db2.example scram-sha-256",
        "host postgres rep db2.example scram-sha-256",
    ]
    assert pgconf.replication_hba_lines("Rep User", ["127.0.0.1"])[0] == (
        'host replication "Rep User" 127.0.0.1/32 scram-sha-256')
    for user, address in (("", "127.0.0.1"), ('a"b', "127.0.0.1"), ("rep", "not an addr"),
                          ("rep", "10.0.0.1/8")):
        with pytest.raises(InvalidArgument):
            pgconf.replication_hba_lines(user, [address])


def test_base_settings_are_what_replication_and_rewind_need() -> None:
    base = pgconf.ha_base_settings()
    assert base["wal_level"] == "replica" and base["hot_standby"] is True
    assert base["wal_log_hints"] is True and base["full_page_writes"] is True
    assert int(base["max_wal_senders"]) >= 4 and int(base["max_replication_slots"]) >= 4
    pgconf.render_conf(base, {})  # every value is writable


# --- the directory, no server -------------------------------------------------------------


def test_socket_path_over_the_unix_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="107"):
        control(tmp_path, socket_dir="/tmp/" + "s" * 100)
    with pytest.raises(InvalidArgument):
        control(tmp_path, port=0)


def test_directory_state(tmp_path: Path) -> None:
    ctl = control(tmp_path)
    assert ctl.directory_state() == "missing"
    assert ctl.system_identifier() is None
    (tmp_path / "data").mkdir()
    assert ctl.directory_state() == "empty"
    assert ctl.observe().role == PG_MISSING
    (tmp_path / "data" / "notes.txt").write_text("mine")
    assert ctl.directory_state() == "not-a-cluster"
    assert ctl.observe().error
    (tmp_path / "file").write_text("x")
    assert control(tmp_path, "file").directory_state() == "not-a-cluster"
    fake_cluster(tmp_path / "other")
    assert control(tmp_path, "other").directory_state() == "cluster"


def test_binaries_problem_names_what_is_missing(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("postgres", "initdb", "pg_ctl", "pg_controldata"):
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    (bindir / "pg_rewind").write_text("not executable")
    problem = control(tmp_path, bindir=str(bindir)).binaries_problem()
    assert problem is not None
    lacks = problem.split(" lacks ")[1].split(" (")[0]
    assert lacks == "pg_basebackup, pg_rewind"
    assert "does not exist" in str(control(tmp_path, bindir=str(tmp_path / "no")
                                           ).binaries_problem())
    if os.path.isdir(PG_BINDIR):
        assert control(tmp_path).binaries_problem() is None


def test_initdb_and_basebackup_refuse_a_used_directory_and_touch_nothing(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.txt").write_text("precious")
    (data / "sub").mkdir()
    (data / "sub" / "more").write_bytes(b"\1\2")
    before = snapshot(data)
    ctl = control(tmp_path)
    with pytest.raises(PostgresDirectoryRefused, match="not missing or empty"):
        ctl.basebackup(host="127.0.0.1", port=1, user="r", password="p", slot=None)
    with pytest.raises(PostgresDirectoryRefused):
        ctl.initdb()
    fake_cluster(tmp_path / "cluster")
    with pytest.raises(PostgresDirectoryRefused):
        control(tmp_path, "cluster").basebackup(host="127.0.0.1", port=1, user="r",
                                                password="p", slot="pgraft_node_2")
    assert snapshot(data) == before
    assert not (tmp_path / "sock").exists()  # not even the password file was written


def test_write_config_files_and_the_include(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fake_cluster(data, f"max_connections = 100\n{pgconf.INCLUDE_LINE}\n\n{pgconf.INCLUDE_LINE}\n")
    ctl = control(tmp_path, port=6543)
    ctl.write_config({"work_mem": "8MB", "primary_conninfo": "host=h password='a b'"},
                     ["local all all peer", "host all all 127.0.0.1/32 scram-sha-256"])
    conf = (data / "pgraft.conf").read_text()
    assert "work_mem = '8MB'" in conf
    assert "primary_conninfo = 'host=h password=''a b'''" in conf
    assert "port = 6543" in conf and "listen_addresses = '127.0.0.1'" in conf
    assert f"unix_socket_directories = '{tmp_path / 'sock'}'" in conf
    assert f"hba_file = '{data / 'pgraft_hba.conf'}'" in conf
    assert (data / "pgraft_hba.conf").read_text() == (
        "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n")
    main = (data / "postgresql.conf").read_text()
    assert main.count(pgconf.INCLUDE_LINE) == 1 and main.endswith(pgconf.INCLUDE_LINE + "\n")
    assert main.startswith("max_connections = 100\n")
    for name in ("pgraft.conf", "pgraft_hba.conf", "postgresql.conf"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    assert not [p for p in data.iterdir() if p.name.endswith(".tmp")]
    ctl.set_standby(True)
    assert (data / "standby.signal").exists()
    ctl.set_standby(True)
    ctl.set_standby(False)
    assert not (data / "standby.signal").exists()
    with pytest.raises(InvalidArgument):
        ctl.write_config({"port": 1}, [])
    with pytest.raises(InvalidArgument):
        ctl.write_config({}, ["two\nlines"])
    with pytest.raises(PostgresDirectoryRefused):
        control(tmp_path, "nothing").write_config({}, [])


def test_start_refuses_a_cluster_without_the_pgraft_configuration(tmp_path: Path) -> None:
    fake_cluster(tmp_path / "data", "port = 5432\n")
    with pytest.raises(PostgresDirectoryRefused, match="no pgraft configuration") as info:
        control(tmp_path).start()
    assert "write_config" in info.value.hint


def test_move_aside_keeps_the_data(tmp_path: Path) -> None:
    fake_cluster(tmp_path / "data", "port = 1\n")
    before = snapshot(tmp_path / "data")
    ctl = control(tmp_path)
    moved = ctl.move_aside("diverged")
    assert re.fullmatch(re.escape(str(tmp_path / "data")) + r"\.pgraft-diverged-\d{8}T\d{6}",
                        moved)
    assert ctl.directory_state() == "missing"
    assert snapshot(Path(moved)) == before
    fake_cluster(tmp_path / "data")
    second = ctl.move_aside("diverged")  # the same second: a suffix, nothing overwritten
    assert second != moved and os.path.isdir(second) and os.path.isdir(moved)
    with pytest.raises(InvalidArgument):
        ctl.move_aside("../x")
    with pytest.raises(PostgresDirectoryRefused):
        ctl.move_aside("gone")


def test_the_newest_history_file_names_the_timeline_a_replica_switched_to(
        tmp_path: Path) -> None:
    fake_cluster(tmp_path / "data")
    ctl = control(tmp_path)
    wal = tmp_path / "data" / "pg_wal"
    wal.mkdir(exist_ok=True)
    assert ctl.newest_history_timeline() is None
    for name in ("00000002.history", "0000000A.history", "000000010000000000000003",
                 "00000010.history.partial", "junk.history"):
        (wal / name).write_text("")
    assert ctl.newest_history_timeline() == 10


def test_a_stale_postmaster_pid_is_not_a_running_server(tmp_path: Path) -> None:
    """postmaster.pid left by a killed postmaster, its PID now another process's (ours)."""
    fake_cluster(tmp_path / "data")
    (tmp_path / "data" / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}/data\n")
    ctl = control(tmp_path, bindir=str(tmp_path / "nobin"))
    assert ctl.running_pid() is None and not ctl.is_running()
    ctl.stop()  # nothing to stop
    ctl.fence()
    obs = ctl.observe()
    assert obs.role == PG_STOPPED and obs.system_id is None  # pg_control unreadable
    with pytest.raises(PostgresCommandFailed, match="cannot run pg_controldata") as info:
        ctl.control_data()
    assert "lacks" in info.value.hint or "does not exist" in info.value.hint


def test_upstream_lookup() -> None:
    from pgraft.ha.pgctl import _upstream

    nodes = {("10.0.0.1", 5432): 1, ("10.0.0.2", 5433): 2}
    assert _upstream(nodes, "10.0.0.2", 5433, None) == 2
    assert _upstream(nodes, None, None, "host=10.0.0.1 port=5432 user=r") == 1
    assert _upstream(nodes, "10.9.9.9", 1, "host=10.9.9.9 port=1") is None
    assert _upstream({}, "10.0.0.1", 5432, None) is None


# --- real servers ------------------------------------------------------------------------


def wait_observation(ws: Workspace, ctl: PgControl, what: str, check: object,
                     upstreams: dict[tuple[str, int], int] | None = None,
                     timeout: float = 30) -> PgObservation:
    def probe() -> PgObservation | None:
        obs = ws.run(ctl.observe, upstreams)
        return obs if check(obs) else None  # type: ignore[operator]

    return wait_until(what, probe, timeout, 0.1)


def count_rows(ctl: PgControl) -> int:
    return int(ctl.execute("SELECT count(*) FROM t")[0][0])


def slots(ctl: PgControl) -> dict[str, bool]:
    return {r[0]: r[1] for r in ctl.execute(
        "SELECT slot_name, active FROM pg_replication_slots")}


def conninfo_to(ctl: PgControl, me: int) -> str:
    return make_conninfo(host="127.0.0.1", port=ctl.port, user=REPLICATION_USER,
                         password=REPLICATION_PASSWORD, application_name=f"pgraft_node_{me}")


@pytest.mark.postgres
def test_primary_replica_promotion_and_rewind(workspace: Workspace) -> None:
    ws = workspace
    a, b = ws.make("a"), ws.make("b")
    upstreams = {("127.0.0.1", a.port): 1, ("127.0.0.1", b.port): 2}

    # node 1: a new primary
    ws.run(lambda: a.initdb(sync=False), timeout=120)
    assert ws.run(a.directory_state) == "cluster"
    ws.run(a.write_config, TEST_SETTINGS, HBA)
    ws.run(a.start)
    ws.run(a.wait_ready, 30)
    with pytest.raises(PostgresStateConflict):
        ws.run(a.start)
    obs = ws.run(a.observe)
    assert obs.role == PG_PRIMARY and obs.timeline == 1 and obs.error is None
    assert obs.received_lsn and obs.received_lsn > 0 and obs.replayed_lsn == obs.received_lsn
    assert obs.system_id == ws.run(a.system_identifier) and obs.system_id

    # the replication role (its password never in the log, though every statement is) and
    # the slots: missing ones created, unwanted inactive pgraft ones dropped, others kept
    ws.run(a.ensure_replication_role, REPLICATION_USER, REPLICATION_PASSWORD)
    ws.run(a.ensure_replication_role, REPLICATION_USER, REPLICATION_PASSWORD)  # idempotent
    granted = ws.run(a.execute, """
        SELECT r.rolreplication, r.rolcanlogin, r.rolsuper,
               pg_has_role(%(u)s, 'pg_checkpoint', 'MEMBER'),
               has_function_privilege(%(u)s, 'pg_read_binary_file(text, bigint, bigint,
                                      boolean)', 'EXECUTE'),
               has_function_privilege(%(u)s, 'pg_ls_dir(text, boolean, boolean)', 'EXECUTE'),
               has_database_privilege(%(u)s, 'postgres', 'CONNECT')
        FROM pg_roles r WHERE r.rolname = %(u)s""", {"u": REPLICATION_USER})
    assert granted == [(True, True, False, True, True, True, True)]
    ws.run(a.execute, "SELECT pg_create_physical_replication_slot('other_slot')")
    ws.run(a.ensure_slots, {"pgraft_node_2", "pgraft_node_3"})
    ws.run(a.ensure_slots, {"pgraft_node_2"})
    assert ws.run(slots, a) == {"pgraft_node_2": False, "other_slot": False}
    ws.run(a.execute, "CREATE TABLE t (x text)")
    ws.run(a.execute, "INSERT INTO t VALUES (%s)", ("before the copy",))

    # node 2: a copy through the slot, streaming from node 1
    ws.run(lambda: b.basebackup(host="127.0.0.1", port=a.port, user=REPLICATION_USER,
                                password=REPLICATION_PASSWORD, slot="pgraft_node_2",
                                timeout=60), timeout=90)
    assert ws.run(b.directory_state) == "cluster"
    assert not [n for n in os.listdir(b.socket_dir) if n.startswith("pgraft-pgpass-")]
    ws.run(b.write_config, {**TEST_SETTINGS, "primary_conninfo": conninfo_to(a, 2),
                            "primary_slot_name": "pgraft_node_2"}, HBA)
    assert Path(b.pgdata, "postgresql.conf").read_text().count(pgconf.INCLUDE_LINE) == 1
    ws.run(b.set_standby, True)
    ws.run(b.start)
    ws.run(b.wait_ready, 30)
    ws.run(a.execute, "INSERT INTO t VALUES ('streamed')")
    rep = wait_observation(ws, b, "node 2 streams from node 1",
                           lambda o: o.streaming and o.upstream_lsn, upstreams)
    assert rep.role == PG_REPLICA and rep.timeline == 1 and rep.upstream_node == 1
    assert rep.system_id == obs.system_id and rep.lag_bytes is not None
    assert rep.received_lsn and rep.replayed_lsn and rep.received_lsn >= rep.replayed_lsn
    wait_until("the insert reaches node 2", lambda: ws.run(count_rows, b) == 2 or None, 30)
    ws.run(a.ensure_slots, set())  # the active slot and the foreign one stay
    assert ws.run(slots, a) == {"pgraft_node_2": True, "other_slot": False}

    # node 2 promoted: timeline 2
    ws.run(b.promote, 30)
    new = ws.run(b.observe)
    assert new.role == PG_PRIMARY and new.timeline == 2, new
    ws.run(b.ensure_slots, {"pgraft_node_1"})

    # node 1 still takes a write (the split brain the HA layer fences), then is fenced
    ws.run(a.execute, "INSERT INTO t VALUES ('diverged')")
    ws.run(a.fence)
    wait_until("node 1 is fenced", lambda: not ws.run(a.is_running) or None, 30)
    assert ws.run(a.observe).role == PG_STOPPED
    assert ws.run(a.control_data)["Database cluster state"] == "in production"

    # rewound against node 2 (crash recovery first), then its replica on timeline 2
    out = ws.run(lambda: a.rewind(host="127.0.0.1", port=b.port, user=REPLICATION_USER,
                                  password=REPLICATION_PASSWORD, timeout=120), timeout=150)
    assert "crash recovery" in out and "Done!" in out, out
    assert ws.run(a.control_data)["Database cluster state"] != "in production"
    ws.run(a.write_config, {**TEST_SETTINGS, "primary_conninfo": conninfo_to(b, 1),
                            "primary_slot_name": "pgraft_node_1"}, HBA)
    ws.run(a.set_standby, True)
    ws.run(a.start)
    ws.run(a.wait_ready, 30)
    follower = wait_observation(ws, a, "node 1 streams from node 2",
                                lambda o: o.streaming and o.timeline == 2, upstreams)
    assert follower.role == PG_REPLICA and follower.upstream_node == 2
    assert ws.run(a.execute, "SELECT x FROM t ORDER BY x") == [("before the copy",),
                                                               ("streamed",)]
    assert ws.run(slots, b) == {"pgraft_node_1": True}
    with pytest.raises(PostgresStateConflict):
        ws.run(lambda: a.rewind(host="127.0.0.1", port=b.port, user="x", password="y"))

    log = ws.log(a) + ws.log(b)
    assert "INSERT INTO t VALUES ('streamed')" in log  # statements are logged...
    assert REPLICATION_PASSWORD not in log and "SCRAM-SHA-256$" not in log  # ...not this

    # stopped: the observation still names the cluster; moved aside, the data is kept
    ws.run(a.stop)
    ws.run(a.stop)  # nothing to do
    stopped = ws.run(a.observe)
    assert stopped.role == PG_STOPPED and stopped.system_id == obs.system_id
    moved = ws.run(a.move_aside, "test")
    assert ws.run(a.directory_state) == "missing"
    aside = PgControl(moved, bindir=PG_BINDIR, port=a.port, listen_addresses="",
                      socket_dir=a.socket_dir, log_path=a.log_path, superuser=PG_USER)
    assert ws.run(aside.system_identifier) == obs.system_id

    # a server that cannot start: wait_ready says why, with the end of its log
    ws.run(b.stop, "fast")
    ws.run(b.write_config, {**TEST_SETTINGS, "shared_buffers": "lots"}, HBA)

    def start_and_wait() -> None:
        b.start()
        b.wait_ready(30)

    with pytest.raises(PostgresCommandFailed, match="shared_buffers"):
        ws.run(start_and_wait)
    assert not ws.run(b.is_running)
