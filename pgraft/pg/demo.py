"""``make demo``: the seed's walkthrough on real PostgreSQL 15 servers, in SQL.

It makes sure PostgreSQL 15, plpython3 and pgraft's extension are installed (the
``system-deps`` script and ``pgraft postgres install``; both do nothing when all is in
place), creates three PostgreSQL servers on loopback that bootstrap pgraft nodes 1-3 and a
fourth one whose node starts empty, waits for a leader, runs
``SELECT pgraft_add_node(4, '127.0.0.1', 7004)`` on the leader only, prints
``SELECT * FROM pgraft_get_nodes()`` from every server, shows a follower refusing the same
call, and then stops and removes everything it created.

The servers run as the ``postgres`` OS user in a temporary directory under /tmp and listen on
Unix sockets only; the pgraft nodes use TCP ports 7001-7004 when those are free.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import Timeout
from ..localcluster import free_port, wait_until

PG_CONFIG = "/usr/lib/postgresql/15/bin/pg_config"
PREFIX = "/opt/pgraft"
PG_OS_USER = "postgres"
SEED_PORTS = (7001, 7002, 7003, 7004)

_T = TypeVar("_T")


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


def say(text: str = "") -> None:
    print(text, flush=True)


def wait_for(check: Callable[[], _T], timeout: float, what: str) -> _T:
    try:
        return wait_until(what, check, timeout, 0.1, retry_on=(Exception,), truthy=True)
    except Timeout as exc:
        raise DemoError(exc.message) from None


def ports_free(ports: Sequence[int]) -> bool:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def pick_ports() -> list[int]:
    if ports_free(SEED_PORTS):
        return list(SEED_PORTS)
    return [free_port() for _ in SEED_PORTS]


def psql_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows the way psql prints them."""
    def text(v: Any) -> str:
        if isinstance(v, bool):
            return "t" if v else "f"
        return "" if v is None else str(v)

    cells = [[text(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [" " + " | ".join(c.center(w) for c, w in zip(columns, widths, strict=True)),
             "-" + "-+-".join("-" * w for w in widths) + "-"]
    for row in cells:
        lines.append(" " + " | ".join(
            v.rjust(w) if v.lstrip("-").isdigit() else v.ljust(w)
            for v, w in zip(row, widths, strict=True)).rstrip())
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


class Server:
    """One PostgreSQL server with pgraft preloaded, run as the postgres OS user."""

    def __init__(self, base: Path, node_id: int, raft_port: int, initial_cluster: str,
                 bindir: Path) -> None:
        self.node_id = node_id
        self.name = f"node{node_id}"
        self.dir = base / self.name
        self.data = self.dir / "data"
        self.raft_port = raft_port
        self.initial_cluster = initial_cluster
        self.bindir = bindir
        self.started = False

    def _run(self, *cmd: str) -> None:
        full = list(cmd)
        if os.geteuid() == 0:
            full = ["runuser", "-u", PG_OS_USER, "--", *full]
        proc = subprocess.run(full, cwd=self.dir, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise DemoError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}\n"
                            f"{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return "\n".join((self.dir / "server.log").read_text().splitlines()[-15:])
        except OSError:
            return ""

    def create(self) -> None:
        user = pwd.getpwnam(PG_OS_USER)
        self.dir.mkdir()
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C")
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": str(self.dir),
            "shared_preload_libraries": "pgraft",
            "max_connections": "10",
            "shared_buffers": "16MB",
            "pgraft.node_id": str(self.node_id),
            "pgraft.address": "127.0.0.1",
            "pgraft.port": str(self.raft_port),
            "pgraft.initial_cluster": self.initial_cluster,
        }
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# pgraft demo\n")
            for key, value in settings.items():
                f.write(f"{key} = '{value}'\n")

    def start(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.dir / "server.log"), "-w", "-t", "60", "start")
        self.started = True

    def stop(self) -> None:
        if self.started:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                      "-m", "fast", "stop")
            self.started = False

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(host=str(self.dir), user="postgres", dbname="postgres",
                               autocommit=True, connect_timeout=10)

    def query(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str],
                                                                             list[tuple]]:
        with self.connect() as conn:
            cur = conn.execute(sql, params)
            if cur.description is None:
                return [], []
            return [d.name for d in cur.description], cur.fetchall()

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        rows = self.query(sql, params)[1]
        return rows[0][0] if rows else None


def ensure_installed(root: Path | None) -> None:
    """system-deps + `pgraft postgres install` (each a no-op when everything is in place)."""
    if root is not None and (root / "scripts" / "install-system-deps.sh").is_file():
        proc = subprocess.run([str(root / "scripts" / "install-system-deps.sh")],
                              stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise DemoError("the system packages are missing (see above)")
    if not os.access(PG_CONFIG, os.X_OK):
        raise DemoError(f"{PG_CONFIG} is missing; run `make system-deps` as root")
    from . import install as pg_install

    args = ["--pg-config", PG_CONFIG, "--prefix", PREFIX]
    if root is not None:
        args += ["--source", str(root)]
    if pg_install.main(args) != 0:
        raise DemoError("`pgraft postgres install` failed (see above)")


def new_cluster(prefix: str, *, empty_nodes: int = 0) -> tuple[Path, list[Server]]:
    """A new directory under /tmp (reachable by the postgres user) and Server objects, not yet
    created: nodes 1-3 bootstrap a cluster on loopback, the next ``empty_nodes`` start empty."""
    bindir = Path(subprocess.run([PG_CONFIG, "--bindir"], capture_output=True, text=True,
                                 check=True).stdout.strip())
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(base, 0o755)
    ports = pick_ports()
    initial = ",".join(f"{i}=127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3))
    servers = [Server(base, i, ports[i - 1], initial, bindir) for i in (1, 2, 3)]
    servers += [Server(base, i, ports[i - 1], "", bindir) for i in range(4, 4 + empty_nodes)]
    return base, servers


def agreed_leader(servers: Sequence[Server]) -> Server:
    """The server whose node every one of ``servers`` names as leader (raises until they
    agree; use with :func:`wait_for`)."""
    ids = {s.scalar("SELECT pgraft_get_leader()") for s in servers}
    if len(ids) == 1 and None not in ids:
        return next(s for s in servers if s.node_id in ids)
    raise DemoError(f"no agreed leader yet: {ids}")


def run_demo() -> None:
    base, servers = new_cluster("pgraft-demo-", empty_nodes=1)
    try:
        say(f"Creating 4 PostgreSQL 15 servers in {base} (pgraft ports "
            f"{', '.join(str(s.raft_port) for s in servers)}); nodes 1-3 form the cluster, node 4 "
            "starts empty.")
        for s in servers:
            s.create()
            s.start()
            s.query("CREATE EXTENSION pgraft CASCADE")
        first = servers[:3]
        leader = wait_for(lambda: agreed_leader(first), 60, "a leader")
        say()
        say("Initial state: 3 nodes")
        for s in first:
            say(f"\n{s.name}$ SELECT * FROM pgraft_get_nodes();")
            say(psql_table(*s.query("SELECT * FROM pgraft_get_nodes()")))
        say("\n-- Step 1: find the leader (on any node)")
        say(f"{first[0].name}$ SELECT pgraft_get_leader();")
        say(psql_table(["pgraft_get_leader"], [(leader.node_id,)]))
        say(f"\n-- Step 2/3: on the leader ({leader.name}) ONLY: add node 4")
        say(f"{leader.name}$ SELECT pgraft_add_node(4, '127.0.0.1', {servers[3].raft_port});")
        started = time.monotonic()
        result = leader.scalar("SELECT pgraft_add_node(4, '127.0.0.1', %s)", [servers[3].raft_port])
        took = (time.monotonic() - started) * 1000
        say(psql_table(["pgraft_add_node"], [(result,)]))
        say(f"(committed in {took:.1f} ms)")
        def lists_four(server: Server) -> Callable[[], bool]:
            return lambda: len(server.query("SELECT * FROM pgraft_get_nodes()")[1]) == 4

        for s in servers:
            wait_for(lists_four(s), 30, f"node 4 on {s.name}")
        say("\nResult: membership on ALL nodes, none of them touched by hand")
        for s in servers:
            say(f"\n{s.name}$ SELECT * FROM pgraft_get_nodes();")
            say(psql_table(*s.query("SELECT * FROM pgraft_get_nodes()")))
        follower = next(s for s in first if s is not leader)
        say(f"\n-- A follower refuses membership changes: {follower.name}")
        say(f"{follower.name}$ SELECT pgraft_add_node(5, '127.0.0.1', 7005);")
        import psycopg

        try:
            follower.query("SELECT pgraft_add_node(5, '127.0.0.1', 7005)")
            raise DemoError(f"{follower.name} accepted a membership change as a follower")
        except psycopg.Error as exc:
            say(f"ERROR:  {exc.diag.message_primary}")
            if exc.diag.message_hint:
                say(f"HINT:  {exc.diag.message_hint}")
            say(f"(SQLSTATE {exc.sqlstate})")
    finally:
        say("\nStopping the servers (each launcher stops its pgraft node) and cleaning up.")
        for s in servers:
            with contextlib.suppress(DemoError, subprocess.TimeoutExpired):
                s.stop()
        shutil.rmtree(base, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pgraft.pg.demo",
        description="The seed walkthrough on 4 real PostgreSQL 15 servers.")
    parser.add_argument("--no-install", action="store_true",
                        help="do not run system-deps / pgraft postgres install first")
    ns = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("pgraft demo: run as root (it installs packages if needed and runs PostgreSQL "
              "as the postgres OS user): sudo make demo", file=sys.stderr)
        return 1
    root = Path(__file__).resolve().parents[2]
    source = root if (root / "postgres" / "pgraft.c").is_file() else None

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        if not ns.no_install:
            ensure_installed(source)
        run_demo()
    except DemoError as exc:
        print(f"pgraft demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pgraft demo: interrupted; cleaned up", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
