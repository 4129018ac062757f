"""Real PostgreSQL 15 servers for the tests, each in its own temporary directory.

The servers run as the ``postgres`` OS user (initdb and pg_ctl through ``runuser``), listen
only on a Unix socket inside their directory (no TCP port to collide with), and load pgraft
with ``shared_preload_libraries``. The pgraft node of each server uses a free loopback port.
Everything a test starts is stopped by :meth:`PgCluster.cleanup`, which also kills, by PID,
any process still running from the cluster's directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from pgraft.localcluster import free_port, wait_until
from tests.support.procs import processes_mentioning

PG_OS_USER = "postgres"
PG_CONFIG = os.environ.get("PGRAFT_PG_CONFIG", "/usr/lib/postgresql/15/bin/pg_config")
PREFIX = os.environ.get("PGRAFT_PREFIX", "/opt/pgraft")
# The tree installed into PREFIX: this checkout, unless PGRAFT_SOURCE names another.
SOURCE_ROOT = Path(os.environ.get("PGRAFT_SOURCE") or Path(__file__).resolve().parents[2])
# The election timeout used by the tests: short enough to keep failovers quick, long enough
# that a loaded 2-core machine running four PostgreSQL servers does not elect needlessly.
ELECTION_TIMEOUT_MS = 1000
HEARTBEAT_MS = 100

_T = TypeVar("_T")


def wait_for(check: Callable[[], _T], *, timeout: float, what: str,
             interval: float = 0.1) -> _T:
    """Call ``check`` until it returns a truthy value (returned) or ``timeout`` passes;
    exceptions from ``check`` count as "not yet" (pgraft.localcluster.wait_until)."""
    return wait_until(what, check, timeout, interval, retry_on=(Exception,), truthy=True)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that are free on 127.0.0.1 right now."""
    return [free_port() for _ in range(n)]


def pg_bindir() -> Path:
    out = subprocess.run([PG_CONFIG, "--bindir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def pg_user() -> pwd.struct_passwd:
    return pwd.getpwnam(PG_OS_USER)


def as_pg_user(cmd: list[str], *, cwd: str | Path, check: bool = True,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` as the PostgreSQL OS user (we are root in CI)."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", PG_OS_USER, "--", *cmd]
    proc = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def processes_under(path: str) -> list[int]:
    """PIDs of processes whose command line mentions ``path`` (our temporary directory)."""
    return processes_mentioning(path)


class PgServer:
    """One PostgreSQL server (= one pgraft node) in ``<base>/<name>``."""

    def __init__(self, base: Path, name: str, node_id: int, raft_port: int,
                 initial_cluster: str = "", extra: dict[str, Any] | None = None) -> None:
        self.base = base
        self.name = name
        self.dir = base / name
        self.data = self.dir / "data"
        self.logfile = self.dir / "server.log"
        self.node_id = node_id
        self.raft_port = raft_port
        self.initial_cluster = initial_cluster
        self.extra = dict(extra or {})
        self.pg_port = 5432  # only names the Unix socket file; no TCP listener
        self.bindir = pg_bindir()

    # ------------------------------------------------------------------ life cycle
    def settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "listen_addresses": "",
            "port": self.pg_port,
            "unix_socket_directories": str(self.dir),
            "shared_preload_libraries": "pgraft",
            "fsync": "on",
            "max_connections": 20,
            "shared_buffers": "16MB",
            "logging_collector": "off",
            "log_line_prefix": "%m [%p] ",
            "pgraft.node_id": self.node_id,
            "pgraft.address": "127.0.0.1",
            "pgraft.port": self.raft_port,
            "pgraft.initial_cluster": self.initial_cluster,
            "pgraft.election_timeout": ELECTION_TIMEOUT_MS,
            "pgraft.heartbeat_interval": HEARTBEAT_MS,
        }
        python = os.environ.get("PGRAFT_TEST_NODE_PYTHON")
        if python:
            s["pgraft.python"] = python
        s.update(self.extra)
        return s

    def init(self) -> None:
        user = pg_user()
        self.dir.mkdir(parents=True)
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        as_pg_user([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                    "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"], cwd=self.dir)
        conf = self.data / "postgresql.conf"
        with open(conf, "a") as f:
            f.write("\ninclude 'pgraft_test.conf'\n")
        self.write_conf()

    def write_conf(self, overrides: dict[str, Any] | None = None) -> None:
        """(Re)write the included settings file; ``None`` values drop a setting."""
        settings = self.settings()
        settings.update(overrides or {})
        lines = []
        for key, value in settings.items():
            if value is None:
                continue
            text = str(value).replace("'", "''")
            lines.append(f"{key} = '{text}'")
        path = self.data / "pgraft_test.conf"
        path.write_text("\n".join(lines) + "\n")
        user = pg_user()
        os.chown(path, user.pw_uid, user.pw_gid)

    def pg_ctl(self, *args: str, check: bool = True,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return as_pg_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
                          cwd=self.dir, check=check, timeout=timeout)

    def start(self, *, check: bool = True,
              core_files: bool = False) -> subprocess.CompletedProcess[str]:
        """``core_files``: pg_ctl -c, the server (and the node) may write core files."""
        extra = ["-c"] if core_files else []
        return self.pg_ctl("-l", str(self.logfile), "-w", "-t", "60", *extra, "start",
                           check=check)

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self.pg_ctl("-w", "-t", "60", "-m", mode, "stop")

    def restart(self) -> None:
        self.pg_ctl("-l", str(self.logfile), "-w", "-t", "60", "-m", "fast", "restart")

    def reload(self) -> None:
        self.pg_ctl("reload")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and \
            self.pg_ctl("status", check=False).returncode == 0

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ SQL
    def connect(self, user: str = "postgres", **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(host=str(self.dir), port=self.pg_port, user=user,
                               dbname="postgres", autocommit=True, connect_timeout=10, **kw)

    def sql(self, query: str, params: Iterable[Any] | None = None,
            user: str = "postgres") -> list[tuple[Any, ...]]:
        with self.connect(user) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else []

    def scalar(self, query: str, params: Iterable[Any] | None = None,
               user: str = "postgres") -> Any:
        rows = self.sql(query, params, user)
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------ the node
    @property
    def node_data_dir(self) -> Path:
        """The node's data directory: pgraft.data_dir, by default "<data directory>.pgraft"
        next to the PostgreSQL data directory."""
        configured = self.extra.get("pgraft.data_dir")
        return Path(configured) if configured else Path(f"{self.data}.pgraft")

    def node_pids(self) -> list[int]:
        """PIDs of this server's pgraft node process (normally exactly one). The tests keep
        every node data directory inside the server's directory."""
        marker = f"{self.dir}/"
        return [pid for pid in processes_under(marker) if self._is_node(pid)]

    @staticmethod
    def _is_node(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return b"serve" in argv and state != "Z"

    def node_pid(self, timeout: float = 30) -> int:
        pids = wait_for(self.node_pids, timeout=timeout,
                        what=f"the pgraft node of {self.name} to be running")
        return pids[0]

    @staticmethod
    def node_argv(pid: int) -> list[str]:
        """The command line of a running process (the node's, as the launcher wrote it)."""
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode() for a in f.read().split(b"\0")[:-1]]

    def launcher_status(self) -> dict[str, Any]:
        """The row of pgraft_launcher_status() (the C function, declared ad hoc when the
        extension's SQL script does not declare it)."""
        with self.connect() as conn:
            declared = conn.execute(
                "SELECT to_regprocedure('pg_catalog.pgraft_launcher_status()')").fetchone()
            name = "pg_catalog.pgraft_launcher_status"
            if declared is None or declared[0] is None:
                name = "public.pgraft_test_launcher_status"
                conn.execute(f"""
                    CREATE OR REPLACE FUNCTION {name}()
                    RETURNS TABLE(launcher_pid int, node_pid int, state text, restarts bigint,
                                  started_at timestamptz, last_exit text,
                                  last_exit_at timestamptz, next_start timestamptz,
                                  last_error text)
                    LANGUAGE C AS 'pgraft', 'pgraft_launcher_status'""")
            cur = conn.execute(f"SELECT * FROM {name}()")
            row = cur.fetchone()
            assert cur.description is not None and row is not None
            return {col.name: value for col, value in zip(cur.description, row, strict=True)}


class PgCluster:
    """A set of servers in one temporary directory, cleaned up as a whole."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pgraft-pg-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.servers: list[PgServer] = []

    def add(self, node_id: int, raft_port: int, initial_cluster: str = "",
            extra: dict[str, Any] | None = None, name: str | None = None) -> PgServer:
        server = PgServer(self.base, name or f"node{node_id}", node_id, raft_port,
                          initial_cluster, extra)
        server.init()
        self.servers.append(server)
        return server

    def cleanup(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop("fast")
        for server in self.servers:
            with contextlib.suppress(Exception):
                if server.running():
                    server.stop("immediate")
        # Anything still alive that belongs to this directory (a node that outlived its
        # server would be a bug: the test that checks for it runs before this cleanup).
        for pid in processes_under(str(self.base)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def cleaned_up_cluster() -> Iterator[PgCluster]:
    """A :class:`PgCluster` that is cleaned up afterwards, failing if any process it started
    is still running then (a node that outlived its server would be a bug)."""
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        base = str(cluster.base)
        cluster.cleanup()
        assert not processes_under(base), f"processes left behind in {base}"


def leader_of(servers: Iterable[PgServer]) -> PgServer:
    """The server whose node every running server agrees is the leader."""
    running = [s for s in servers if s.running()]
    leaders = {s.scalar("SELECT pgraft_get_leader()") for s in running}
    if len(leaders) != 1 or None in leaders:
        raise AssertionError(f"no agreed leader yet: {leaders}")
    (leader_id,) = leaders
    for s in running:
        if s.node_id == leader_id:
            return s
    raise AssertionError(f"leader {leader_id} is not one of the running servers")


def wait_leader(servers: Iterable[PgServer], timeout: float = 60) -> PgServer:
    servers = list(servers)
    return wait_for(lambda: leader_of(servers), timeout=timeout, what="an agreed leader")


def member_ids(server: PgServer) -> list[int]:
    return [row[0] for row in server.sql("SELECT node_id FROM pgraft_get_nodes() ORDER BY 1")]
