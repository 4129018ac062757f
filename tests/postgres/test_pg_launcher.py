"""The pgraft launcher (the C background worker) on a real PostgreSQL 15 server.

What it shows (pg_stat_activity, pgraft_launcher_status()), where the node's log goes (the
server log, through the launcher's pipe), where the node's data lives (next to the data
directory, never inside it; the 1.0 layout is refused with the commands that move it), what
a reload does (a changed Raft timing restarts the node, an invalid one keeps it), and that an
immediate shutdown or a crash restart leaves neither a node nor a core file behind.

One server (node 1 of a one-member cluster) serves the module; tests that change its
configuration put it back.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support.postgres import (
    PgCluster,
    PgServer,
    as_pg_user,
    cleaned_up_cluster,
    free_ports,
    pg_user,
    wait_for,
)

SIGQUIT_BIT = 1 << (signal.SIGQUIT - 1)


@pytest.fixture(scope="module")
def cluster(pgraft_installed: str) -> Iterator[PgCluster]:
    with cleaned_up_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def server(cluster: PgCluster) -> PgServer:
    (port,) = free_ports(1)
    server = cluster.add(1, port, f"1=127.0.0.1:{port}")
    server.start()
    return server


def wait_node_leads(server: PgServer) -> None:
    """The node is up and leads its one-member cluster (so it handles signals itself)."""
    import pgraft

    def leads() -> bool:
        with pgraft.Client(f"127.0.0.1:{server.raft_port}", timeout=5) as client:
            return client.get_leader() == server.node_id

    wait_for(leads, timeout=60, what=f"node {server.node_id} to lead")


@pytest.fixture
def running(server: PgServer) -> PgServer:
    """The module's server, started with its normal configuration, its node leading."""
    server.write_conf()
    if not server.running():
        server.start()
    server.node_pid()
    wait_node_leads(server)
    return server


def launcher_row(server: PgServer) -> dict[str, object]:
    rows = server.sql("SELECT pid, backend_type, datname, state, wait_event_type, wait_event, "
                      "query FROM pg_stat_activity WHERE backend_type = 'pgraft launcher'")
    assert len(rows) == 1, rows
    keys = ("pid", "backend_type", "datname", "state", "wait_event_type", "wait_event", "query")
    return dict(zip(keys, rows[0], strict=True))


def as_postgres(path: Path) -> None:
    user = pg_user()
    os.chown(path, user.pw_uid, user.pw_gid)


def arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def core_files(where: Path) -> list[Path]:
    return [p for p in where.rglob("core*") if p.is_file() and re.fullmatch(r"core(\.\d+)?",
                                                                          p.name)]


def cores_land_in_cwd() -> bool:
    """Whether a crashing process of this machine writes its core file into its current
    directory (kernel.core_pattern "core", as here): then the tests can look for core files.
    With a pipe (systemd-coredump, apport) they rely on the node's signal disposition."""
    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read().strip()
    return not pattern.startswith("|") and "/" not in pattern


def assert_core_files_detectable(where: Path) -> None:
    """A process killed by SIGQUIT under the same limits leaves a core file in ``where``:
    so the absence of core files below means something."""
    probe = where / "core-probe"
    probe.mkdir()
    as_postgres(probe)
    as_pg_user(["sh", "-c", "ulimit -c unlimited; exec python3 -c 'import os, signal; "
                "os.kill(os.getpid(), signal.SIGQUIT)'"], cwd=probe, check=False)
    found = core_files(probe)
    for p in found:
        p.unlink()
    probe.rmdir()
    assert found, ("a SIGQUIT did not leave a core file although kernel.core_pattern "
                   "writes them into the current directory: the core file checks would "
                   "prove nothing")


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for init to reap it counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def sigquit_cannot_dump_core(pid: int) -> bool:
    """The process ignores or handles SIGQUIT (/proc/PID/status SigIgn, SigCgt)."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    return bool((int(fields["SigIgn"], 16) | int(fields["SigCgt"], 16)) & SIGQUIT_BIT)


# --------------------------------------------------------------------------- visibility
def test_launcher_in_pg_stat_activity(running: PgServer) -> None:
    node = running.node_pid()

    def idle() -> dict[str, object] | None:
        row = launcher_row(running)
        return row if row["wait_event_type"] == "Extension" else None

    row = wait_for(idle, timeout=10, what="the launcher waiting (wait_event_type Extension)")
    assert row["backend_type"] == "pgraft launcher"
    assert row["wait_event"] == "Extension"
    assert row["datname"] is None  # connected to no database
    assert row["query"] == f"node 1 running (PID {node})"
    assert row["state"] == "idle"


def test_launcher_status(running: PgServer) -> None:
    node = running.node_pid()
    status = running.launcher_status()
    assert status["launcher_pid"] == launcher_row(running)["pid"]
    assert status["node_pid"] == node
    assert status["state"] == "running"
    assert status["started_at"] is not None
    assert status["next_start"] is None
    restarts = status["restarts"]
    assert isinstance(restarts, int)

    os.kill(node, signal.SIGKILL)
    new = wait_for(lambda: [p for p in running.node_pids() if p != node], timeout=30,
                   what="the launcher to restart the node")
    after = wait_for(lambda: (s := running.launcher_status())["state"] == "running" and s,
                     timeout=30, what="the status to say running again")
    assert after["node_pid"] == new[0]
    assert after["restarts"] == restarts + 1
    assert after["last_exit"] == "was terminated by signal 9: Killed"
    assert after["last_exit_at"] is not None
    assert after["started_at"] > after["last_exit_at"]  # type: ignore[operator]
    assert after["launcher_pid"] == status["launcher_pid"]


def test_node_log_lines_in_the_server_log(running: PgServer) -> None:
    """The node's records reach the server log through the launcher: with PostgreSQL's
    log_line_prefix ("%m [%p] ", %p the launcher), level, and "pgraft node 1: "."""
    launcher = running.launcher_status()["launcher_pid"]
    pattern = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[(\d+)\] LOG:  "
                         r"pgraft node 1: pgraft\.node: node 1 listening on 127\.0\.0\.1:",
                         re.MULTILINE)
    wait_for(lambda: launcher in {int(m.group(1)) for m in pattern.finditer(running.log())},
             timeout=30, what="the node's 'listening' record in the server log")
    assert "--log-format launcher" in running.log()


def test_node_records_are_parsed(running: PgServer) -> None:
    """Levels, the two escapes and lines that are no record, through an interpreter wrapper
    that writes a few lines before it runs the real node. The wrapper also records the
    signals it was exec'd with ignored: SIGQUIT must be one (contract)."""
    real = running.scalar("SHOW pgraft.python")
    wrapper = running.dir / "python-wrapper"
    sigign = running.dir / "wrapper-sigign"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"grep '^SigIgn:' /proc/$$/status > {sigign}\n"
        "cat >&2 <<'RECORDS'\n"
        "plain line from the wrapper\n"
        "DEBUG:test: a debug record\n"
        "INFO:test: backslash \\\\ and\\nsecond line\n"
        "WARNING:test: a warning\n"
        "CRITICAL:test: the last problem\\nline two \\t kept\n"
        "RECORDS\n"
        f"exec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    running.stop()
    running.write_conf({"pgraft.python": str(wrapper)})
    try:
        running.start()
        running.node_pid()
        wait_for(lambda: "line two" in running.log(), timeout=30, what="the records")
        log = running.log()
        assert "LOG:  pgraft node 1: plain line from the wrapper\n" in log
        assert "a debug record" not in log  # DEBUG1, below log_min_messages
        # PostgreSQL writes a multi-line message with a tab after each newline
        assert "LOG:  pgraft node 1: test: backslash \\ and\n\tsecond line\n" in log
        assert "WARNING:  pgraft node 1: test: a warning\n" in log
        assert "WARNING:  pgraft node 1: test: the last problem\n\tline two \\t kept\n" in log
        status = running.launcher_status()
        assert status["last_error"] == "test: the last problem\nline two \\t kept"
        assert int(sigign.read_text().split()[1], 16) & SIGQUIT_BIT, sigign.read_text()
    finally:
        running.stop()
        running.write_conf()


def test_a_failing_node_is_restarted_with_backoff(server: PgServer) -> None:
    failing = server.dir / "failing-python"
    failing.write_text("#!/bin/sh\necho 'ERROR:test: cannot start' >&2\nexit 1\n")
    failing.chmod(0o755)
    server.stop()
    server.write_conf({"pgraft.python": str(failing)})
    try:
        server.start()
        status = wait_for(lambda: (s := server.launcher_status())["restarts"] >= 2  # type: ignore[operator]
                          and s["state"] == "waiting" and s, timeout=30,
                          what="the launcher to retry the failing node twice")
        assert status["node_pid"] is None
        assert status["next_start"] is not None
        assert status["last_exit"] == "exited with exit code 1"
        assert status["last_error"] == "test: cannot start"
        log = server.log()
        assert "WARNING:  pgraft node 1: test: cannot start" in log
        assert "exited with exit code 1; it will be restarted" in log
        assert "restarting the pgraft node in 500 ms" in log
        assert "restarting the pgraft node in 1000 ms" in log
        assert launcher_row(server)["query"] in ("waiting to restart node 1",
                                                 *(f"node 1 running (PID {p})"
                                                   for p in server.node_pids()))
    finally:
        server.stop()
        server.write_conf()


def test_an_interpreter_that_cannot_run_is_the_last_error(server: PgServer) -> None:
    server.stop()
    server.write_conf({"pgraft.python": str(server.dir / "no-such-python")})
    try:
        server.start()
        status = wait_for(lambda: (s := server.launcher_status())["last_error"] and s,
                          timeout=30, what="the launcher to give up on the interpreter")
        assert status["last_error"] == (f'cannot run pgraft.python "{server.dir}/no-such-python"'
                                        ": No such file or directory")
        assert status["state"] == "waiting"
        assert "HINT:  Run `pgraft postgres install`" in server.log()
        assert not server.node_pids()
    finally:
        server.stop()
        server.write_conf()


# --------------------------------------------------------------------------- data dir
def test_data_dir_defaults_to_a_sibling_of_pgdata(running: PgServer) -> None:
    node = running.node_pid()
    expected = Path(f"{running.data}.pgraft")
    assert arg(running.node_argv(node), "--data-dir") == str(expected)
    st = expected.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == pg_user().pw_uid
    assert not (running.data / "pgraft").exists()
    wait_for(lambda: (expected / "node.sock").exists(), timeout=30, what="the node's socket")
    running.sql("CREATE EXTENSION IF NOT EXISTS pgraft CASCADE")
    assert running.scalar("SELECT pgraft_socket_path()") == str(expected / "node.sock")
    assert running.scalar("SHOW pgraft.data_dir") == ""


def test_data_dir_inside_pgdata_is_refused_at_start(server: PgServer) -> None:
    server.stop()
    server.logfile.unlink(missing_ok=True)
    server.write_conf({"pgraft.data_dir": f"{server.data}/pg_raft"})
    try:
        proc = server.start(check=False)
        assert proc.returncode != 0
        log = server.log()
        assert 'invalid value for parameter "pgraft.data_dir"' in log, log[-3000:]
        assert f'DETAIL:  pgraft.data_dir "{server.data}/pg_raft" is inside the PostgreSQL ' \
               f'data directory "{server.data}".' in log
        assert "HINT:  The node's data must be outside the data directory" in log
        assert not server.node_pids()
    finally:
        server.stop("immediate")
        server.write_conf()


def test_data_dir_reaching_into_pgdata_by_a_symlink_is_refused(server: PgServer) -> None:
    """Through a symbolic link, and before anything is created inside the data directory."""
    server.stop()
    inside = server.data / "raft"
    inside.mkdir()
    as_postgres(inside)
    link = server.dir / "raft-link"
    link.symlink_to(inside)
    configured = link / "node"  # does not exist yet
    server.write_conf({"pgraft.data_dir": str(configured)})
    try:
        server.start()
        message = (f'WARNING:  pgraft launcher: not starting pgraft node 1: its data directory '
                   f'"{configured}" is inside the PostgreSQL data directory')
        wait_for(lambda: message in server.log(), timeout=30, what="the refusal")
        assert f'"{configured}" resolves to "{inside}/node", inside "{server.data}".' \
            in server.log()
        status = wait_for(lambda: (s := server.launcher_status())["state"] == "stopped" and s,
                          timeout=10, what="the status to say stopped")
        assert "is inside the PostgreSQL data directory" in str(status["last_error"])
        assert status["node_pid"] is None
        assert launcher_row(server)["query"] == \
            "node 1 not started: see pgraft_launcher_status()"
        assert not server.node_pids()
        assert not (inside / "node").exists()
    finally:
        server.stop()
        server.write_conf()
        link.unlink()
        inside.rmdir()


def test_the_1_0_layout_is_refused_with_the_commands_that_move_it(server: PgServer) -> None:
    """A 1.0 node kept its data in <PGDATA>/pgraft: the launcher does not start a fresh node
    next to it, says how to move it, and starts the node once it was moved and reloaded."""
    server.write_conf()
    if not server.running():
        server.start()
    server.node_pid()
    server.stop()
    new = Path(f"{server.data}.pgraft")
    old = server.data / "pgraft"
    as_pg_user(["mv", str(new), str(old)], cwd=server.dir)  # as 1.0 had it
    bootstraps = server.log().count("bootstrapped a new cluster")
    try:
        server.start()
        wait_for(lambda: "(the pgraft 1.0 layout)" in server.log(), timeout=30,
                 what="the launcher to refuse the 1.0 layout")
        log = server.log()
        assert (f'WARNING:  pgraft launcher: not starting pgraft node 1: its data is in '
                f'"{old}", inside the PostgreSQL data directory (the pgraft 1.0 layout)') in log
        assert f"HINT:  Move it as the PostgreSQL OS user (the node is not running): " \
               f"mv {old} {new}, then reload the configuration (pg_ctl reload) to start " \
               f"the node." in log
        assert not server.node_pids()
        assert not new.exists()
        status = wait_for(lambda: (s := server.launcher_status())["state"] == "stopped" and s,
                          timeout=10, what="the status to say stopped")
        assert "pgraft 1.0 layout" in str(status["last_error"])

        # what the hint says
        as_pg_user(["mv", str(old), str(new)], cwd=server.dir)
        server.reload()
        node = server.node_pid()
        assert arg(server.node_argv(node), "--data-dir") == str(new)
        wait_for(lambda: server.launcher_status()["state"] == "running", timeout=10,
                 what="the status to say running")
        # the node came back with its state: no new cluster was bootstrapped
        wait_for(lambda: "pgraft node 1: pgraft.node: node 1 listening" in
                 server.log().split("(the pgraft 1.0 layout)")[-1], timeout=30,
                 what="the node to listen")
        assert server.log().count("bootstrapped a new cluster") == bootstraps
    finally:
        if old.exists() and not new.exists():
            as_pg_user(["mv", str(old), str(new)], cwd=server.dir)
        server.stop()


# --------------------------------------------------------------------------- reload
def test_reload_of_the_election_timeout_restarts_the_node(running: PgServer) -> None:
    old = running.node_pid()
    before = running.launcher_status()
    assert arg(running.node_argv(old), "--election-timeout") == "1000"
    running.write_conf({"pgraft.election_timeout": 1500, "pgraft.snapshot_keep": 4000})
    try:
        running.reload()
        new = wait_for(lambda: [p for p in running.node_pids() if p != old], timeout=60,
                       what="the launcher to restart the node with the new setting")[0]
        argv = running.node_argv(new)
        assert arg(argv, "--election-timeout") == "1500"
        assert arg(argv, "--snapshot-keep") == "4000"
        assert arg(argv, "--heartbeat-interval") == "100"
        with pytest.raises(ProcessLookupError):
            os.kill(old, 0)
        log = running.log()
        assert ("LOG:  pgraft launcher: restarting pgraft node 1 with the changed settings: "
                "pgraft.election_timeout 1000 ms -> 1500 ms, pgraft.snapshot_keep 5000 -> "
                "4000\n") in log
        assert f"pgraft launcher: stopping pgraft node (PID {old}): its settings changed" in log
        after = wait_for(lambda: (s := running.launcher_status())["node_pid"] == new and s,
                         timeout=10, what="the status to show the new node")
        assert after["restarts"] == before["restarts"] + 1  # type: ignore[operator]
        assert after["last_exit"] == "exited with exit code 0"  # a graceful stop
        assert running.scalar("SHOW pgraft.election_timeout") == "1500ms"
    finally:
        running.write_conf()
        running.reload()
    back = wait_for(lambda: [p for p in running.node_pids()
                             if arg(running.node_argv(p), "--election-timeout") == "1000"],
                    timeout=60, what="the node back on the old setting")
    assert len(back) == 1


def test_an_invalid_reload_keeps_the_node(running: PgServer) -> None:
    node = running.node_pid()
    argv = running.node_argv(node)
    running.write_conf({"pgraft.election_timeout": 200, "pgraft.heartbeat_interval": 300})
    try:
        running.reload()
        message = ("LOG:  pgraft launcher: ignoring the changed settings "
                   "(pgraft.election_timeout 1000 ms -> 200 ms, pgraft.heartbeat_interval "
                   "100 ms -> 300 ms): pgraft.heartbeat_interval (300 ms) must be shorter than "
                   "pgraft.election_timeout (200 ms)\n")
        wait_for(lambda: message in running.log(), timeout=30, what="the refusal in the log")
        assert ("DETAIL:  The pgraft node keeps running with pgraft.election_timeout = 1000 ms "
                "and pgraft.heartbeat_interval = 100 ms.") in running.log()
        assert running.node_pids() == [node]
        assert running.node_argv(node) == argv
        status = running.launcher_status()
        assert "must be shorter than pgraft.election_timeout" in str(status["last_error"])
        assert status["node_pid"] == node
    finally:
        running.write_conf()
        running.reload()
    # back to what the node runs with: nothing to restart
    wait_for(lambda: running.scalar("SHOW pgraft.election_timeout") == "1s", timeout=30,
             what="the reload back")
    assert running.node_pids() == [node]


# --------------------------------------------------------------------------- shutdowns
def test_immediate_shutdown_leaves_no_node_and_no_core(server: PgServer) -> None:
    server.stop()
    server.write_conf()
    detect = cores_land_in_cwd()
    if detect:
        assert_core_files_detectable(server.dir)
    server.start(core_files=True)
    node = server.node_pid()
    assert sigquit_cannot_dump_core(node), "the node would dump core on SIGQUIT"
    server.stop("immediate")
    wait_for(lambda: gone(node), timeout=15,
             what="the node to go away after an immediate shutdown")
    assert not server.node_pids()
    if detect:
        assert not core_files(server.dir)
    server.start()


def test_crash_restart_leaves_no_node_and_no_core(server: PgServer) -> None:
    """kill -9 of a backend: the postmaster SIGQUITs every process, reinitializes, and the
    new launcher starts a new node; the old one is gone, without a core file."""
    server.stop()
    server.write_conf()
    detect = cores_land_in_cwd()
    server.start(core_files=True)
    node = server.node_pid()
    launcher = server.launcher_status()["launcher_pid"]
    conn = server.connect()
    backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    os.kill(backend, signal.SIGKILL)
    with contextlib.suppress(Exception):
        conn.close()
    wait_for(lambda: "all server processes terminated; reinitializing" in server.log(),
             timeout=60, what="the crash restart")
    new = wait_for(lambda: [p for p in server.node_pids() if p != node], timeout=60,
                   what="a new node after the crash restart")
    wait_for(lambda: gone(node), timeout=15, what="the old node to be gone")
    assert server.node_pids() == new
    status = wait_for(lambda: (s := server.launcher_status())["state"] == "running" and s,
                      timeout=30, what="the new launcher running")
    assert status["launcher_pid"] != launcher
    if detect:
        assert not core_files(server.dir)
    server.stop()


# --------------------------------------------------------------------------- pg_upgrade
def test_pg_upgrade_with_pgraft_preloaded_starts_no_node(cluster: PgCluster) -> None:
    """pg_upgrade 15 -> 15 with pgraft in shared_preload_libraries of both servers (and a
    configured node): both run in binary-upgrade mode, where pgraft starts no node."""
    port_old, port_new = free_ports(2)
    old = cluster.add(2, port_old, f"2=127.0.0.1:{port_old}", name="upgrade-old")
    old.start()
    old.node_pid()
    old.sql("CREATE EXTENSION pgraft CASCADE")
    old.stop()
    new = cluster.add(3, port_new, f"3=127.0.0.1:{port_new}", name="upgrade-new")
    bindir = str(new.bindir)
    nodes_seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            nodes_seen.extend(old.node_pids() + new.node_pids())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    cmd = [f"{bindir}/pg_upgrade", "-b", bindir, "-B", bindir, "-d", str(old.data),
           "-D", str(new.data), "-p", str(free_ports(1)[0]), "-P", str(free_ports(1)[0]),
           "--retain"]
    try:
        proc = as_pg_user(cmd, cwd=new.dir, check=False, timeout=600)
    finally:
        done.set()
        watcher.join()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not nodes_seen, f"pg_upgrade started a pgraft node: {nodes_seen}"
    logs = "".join(p.read_text(errors="replace")
                   for p in (new.data / "pg_upgrade_output.d").rglob("*.log"))
    assert "pgraft launcher" not in logs
    assert "pgraft" not in "".join(line for line in logs.splitlines(keepends=True)
                                   if "WARNING" in line or "FATAL" in line)
    # the upgraded server runs its node
    new.start()
    new.node_pid()
    assert new.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pgraft'")
    new.stop()
    with contextlib.suppress(subprocess.SubprocessError):
        old.stop()


# --------------------------------------------------------------------------- SQL functions
C_FUNCTIONS = {
    # declared ad hoc here; the extension script declares them in pg_catalog (contract)
    "pgraft_test_library_version()": "RETURNS text AS 'pgraft', 'pgraft_library_version'",
    "pgraft_test_request_timeout()": "RETURNS int AS 'pgraft', 'pgraft_request_timeout'",
    "pgraft_test_result(jsonb)": "RETURNS jsonb AS 'pgraft', 'pgraft_result'",
}


@pytest.fixture
def sqlfuncs(running: PgServer) -> PgServer:
    running.sql("CREATE EXTENSION IF NOT EXISTS plpython3u")
    for signature, body in C_FUNCTIONS.items():
        running.sql(f"CREATE OR REPLACE FUNCTION public.{signature} {body} LANGUAGE C")
    # stands in for the bridge: waits (in Python, where PostgreSQL does not process
    # interrupts) until pgraft_interrupts_pending() says a cancel is pending
    running.sql("""
        CREATE OR REPLACE FUNCTION public.pgraft_test_wait_for_interrupt() RETURNS jsonb
        LANGUAGE plpython3u AS $$
import ctypes, json, time
pending = ctypes.CDLL(None).pgraft_interrupts_pending
pending.restype = ctypes.c_int
deadline = time.monotonic() + 20
while not pending() and time.monotonic() < deadline:
    time.sleep(0.01)
return json.dumps({"ok": False, "interrupted": True, "message": "cannot put key: interrupted",
                   "detail": "The write may or may not have been committed.",
                   "hint": "Read the key back before retrying."})
$$""")
    return running


def test_library_version_is_the_control_files(sqlfuncs: PgServer) -> None:
    control = (Path(__file__).resolve().parents[2] / "postgres" / "pgraft.control").read_text()
    match = re.search(r"^default_version\s*=\s*'([^']+)'", control, re.MULTILINE)
    assert match
    assert sqlfuncs.scalar("SELECT pgraft_test_library_version()") == match.group(1)


def test_request_timeout(sqlfuncs: PgServer) -> None:
    with sqlfuncs.connect() as conn:
        assert conn.execute("SELECT pgraft_test_request_timeout()").fetchone() == (10000,)
        conn.execute("SET pgraft.request_timeout = '2.5s'")
        assert conn.execute("SELECT pgraft_test_request_timeout()").fetchone() == (2500,)
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SET pgraft.request_timeout = 0")
        assert info.value.sqlstate == "22023"


@pytest.mark.parametrize(("outcome", "result"), [
    ({"ok": True, "result": {"a": [1, "x"]}}, {"a": [1, "x"]}),
    ({"ok": True, "result": 5}, 5),
    ({"ok": True, "result": "text"}, "text"),
    ({"ok": True, "result": None}, None),
    ({"ok": True}, None),
])
def test_result_of_a_success(sqlfuncs: PgServer, outcome: dict[str, object],
                             result: object) -> None:
    assert sqlfuncs.scalar("SELECT pgraft_test_result(%s)", [Jsonb(outcome)]) == result


@pytest.mark.parametrize(("outcome", "sqlstate", "detail", "hint"), [
    ({"ok": False, "sqlstate": "25006", "message": "cannot add node: not the leader",
      "detail": None, "hint": "The leader is node 1."}, "25006", None, "The leader is node 1."),
    ({"ok": False, "sqlstate": "40003", "message": "m", "detail": "D.", "hint": None},
     "40003", "D.", None),
    ({"ok": False, "sqlstate": "4000", "message": "m"}, "XX000", None, None),
    ({"ok": False, "sqlstate": "40o03", "message": "m"}, "XX000", None, None),
    ({"ok": False, "sqlstate": "00000", "message": "m"}, "XX000", None, None),
    ({"ok": False, "message": "m"}, "XX000", None, None),
])
def test_result_of_an_error(sqlfuncs: PgServer, outcome: dict[str, object], sqlstate: str,
                            detail: str | None, hint: str | None) -> None:
    with pytest.raises(psycopg.Error) as info:
        sqlfuncs.sql("SELECT pgraft_test_result(%s)", [Jsonb(outcome)])
    err = info.value
    assert err.sqlstate == sqlstate
    assert err.diag.message_primary == outcome["message"]
    assert err.diag.message_detail == detail
    assert err.diag.message_hint == hint


@pytest.mark.parametrize("outcome", [None, [1], {"result": 1}, {"ok": "yes"},
                                     {"ok": False, "message": 7}])
def test_a_malformed_outcome_is_an_internal_error(sqlfuncs: PgServer, outcome: object) -> None:
    with pytest.raises(psycopg.Error) as info:
        sqlfuncs.sql("SELECT pgraft_test_result(%s)",
                     [None if outcome is None else Jsonb(outcome)])
    assert info.value.sqlstate == "XX000"
    assert info.value.diag.message_primary.startswith("malformed pgraft outcome: ")


def test_interrupted_without_a_pending_interrupt_is_57014(sqlfuncs: PgServer) -> None:
    outcome = {"ok": False, "interrupted": True, "message": "cannot get key: interrupted",
               "detail": None, "hint": "Retry it."}
    with pytest.raises(psycopg.Error) as info:
        sqlfuncs.sql("SELECT pgraft_test_result(%s)", [Jsonb(outcome)])
    err = info.value
    assert err.sqlstate == "57014"
    assert err.diag.message_primary == "cannot get key: interrupted"
    assert err.diag.message_detail is None
    assert err.diag.message_hint == "Retry it."


def test_interrupted_by_a_statement_timeout(sqlfuncs: PgServer) -> None:
    """The pending cancel is processed by _pgraft_result and raised with PostgreSQL's own
    SQLSTATE and message, and the bridge's detail and hint."""
    with sqlfuncs.connect() as conn:
        conn.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT pgraft_test_result(pgraft_test_wait_for_interrupt())")
        err = info.value
        assert err.sqlstate == "57014"
        assert err.diag.message_primary == "canceling statement due to statement timeout"
        assert err.diag.message_detail == "The write may or may not have been committed."
        assert err.diag.message_hint == "Read the key back before retrying."
        # the session goes on
        conn.execute("RESET statement_timeout")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_interrupts_pending_is_exported(sqlfuncs: PgServer) -> None:
    """The bridge finds the symbol with ctypes.CDLL(None): 0 while nothing is pending."""
    sqlfuncs.sql("""
        CREATE OR REPLACE FUNCTION public.pgraft_test_pending() RETURNS int
        LANGUAGE plpython3u AS $$
import ctypes
return ctypes.CDLL(None).pgraft_interrupts_pending()
$$""")
    assert sqlfuncs.scalar("SELECT pgraft_test_pending()") == 0
