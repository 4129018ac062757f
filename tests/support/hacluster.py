"""HA clusters for the tests: pgraft nodes in HA mode (``pgraft serve --postgres``), each
running its own PostgreSQL 15 server, all on loopback.

The nodes run as the ``postgres`` OS user from the venv the installer made in /opt/pgraft
(tests/postgres/conftest.py's ``pgraft_installed``), each in ``<base>/n<ID>/`` with its Raft
state in ``raft/``, PostgreSQL's data directory in ``pg/`` and its output in ``node.log``.
Clients connect over TCP as ``postgres`` (the pg_hba file the tests give trusts 127.0.0.1,
as in the README's walkthrough). :meth:`HaCluster.cleanup` kills, by PID, everything still
running from the base directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

import pgraft
from pgraft.localcluster import free_port
from tests.support.postgres import PG_OS_USER, PREFIX, pg_bindir, pg_user, wait_for
from tests.support.procs import processes_mentioning

if TYPE_CHECKING:
    from tests.chaos.chaos_net import NetNamespaces

ELECTION_TIMEOUT_MS = 1000
HEARTBEAT_MS = 100
CLIENT_HBA = "host all all 127.0.0.1/32 trust\n"


def http_code(port: int, path: str, host: str = "127.0.0.1", timeout: float = 3.0) -> int:
    """The status code of ``GET path`` on an HTTP endpoint (a node's, Patroni's), 0 when
    nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


class HaNode:
    def __init__(self, cluster: HaCluster, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        net = cluster.net
        #: In a network namespace of its own (partition tests) or on 127.0.0.1.
        self.address = net.add_node(node_id) if net is not None else "127.0.0.1"
        self.prefix = net.exec_prefix(node_id) if net is not None else []
        self.dir = cluster.base / f"n{node_id}"
        self.raft_dir = self.dir / "raft"
        self.pgdata = self.dir / "pg"
        self.logfile = self.dir / "node.log"
        if net is not None:  # a namespace of its own: every port is free there
            self.raft_port, self.pg_port, self.http_port = 7000, 5432, 8008
        else:
            self.raft_port, self.pg_port, self.http_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        user = pg_user()
        self.dir.mkdir()
        os.chown(self.dir, user.pw_uid, user.pw_gid)

    # ------------------------------------------------------------------ process
    def argv(self, initial_cluster: str | None, extra: list[str]) -> list[str]:
        argv = [str(Path(PREFIX) / "venv" / "bin" / "pgraft"), "serve",
                "--id", str(self.node_id), "--address", self.address,
                "--port", str(self.raft_port), "--data-dir", str(self.raft_dir),
                "--election-timeout", str(ELECTION_TIMEOUT_MS),
                "--heartbeat-interval", str(HEARTBEAT_MS),
                "--postgres", str(self.pgdata), "--pg-port", str(self.pg_port),
                "--pg-bin", str(pg_bindir()), "--pg-hba", str(self.cluster.hba_file),
                "--http-port", str(self.http_port), *extra]
        if initial_cluster:
            argv += ["--initial-cluster", initial_cluster]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", PG_OS_USER, "--", *argv]
        return [*self.prefix, *argv]

    def start(self, initial_cluster: str | None = None, extra: list[str] | None = None) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(self.argv(initial_cluster, extra or []), cwd=self.dir,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid if os.geteuid() != 0 else self.node_pid(), sig)

    def node_pid(self) -> int:
        """The node process itself (under runuser when we are root)."""
        assert self.proc is not None
        marker = f"--data-dir {self.raft_dir} "
        for pid in processes_mentioning(marker):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
                if argv and not argv[0].endswith((b"runuser", b"ip")):
                    return pid
        return self.proc.pid

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Signal the node and its postmaster (kill -9 of both, SIGSTOP of both...)."""
        pids = [self.node_pid(), self.postmaster_pid()]
        for pid in pids:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        if sig == signal.SIGKILL and self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ clients
    def client(self, timeout: float = 5.0) -> pgraft.Client:
        return pgraft.Client(f"{self.address}:{self.raft_port}", timeout=timeout)

    def ha_status(self) -> list[dict[str, Any]]:
        with self.client() as c:
            return c.ha_status()

    def connect(self, autocommit: bool = True, **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(host=self.address, port=self.pg_port, user="postgres",
                               dbname="postgres", autocommit=autocommit, connect_timeout=3,
                               **kw)

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else []

    def scalar(self, query: str, params: Any = None) -> Any:
        rows = self.sql(query, params)
        return rows[0][0] if rows else None


class HaCluster:
    def __init__(self, net: NetNamespaces | None = None) -> None:
        self.net = net
        self.base = Path(tempfile.mkdtemp(prefix="pgraft-ha-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.hba_file = self.base / "client_hba.conf"
        clients = CLIENT_HBA if net is None else f"host all all {net.subnet}.0/24 trust\n"
        self.hba_file.write_text(clients)
        os.chmod(self.hba_file, 0o644)
        self.nodes: dict[int, HaNode] = {}

    def add(self, node_id: int) -> HaNode:
        node = HaNode(self, node_id)
        self.nodes[node_id] = node
        return node

    def initial_cluster(self) -> str:
        return ",".join(f"{i}={n.address}:{n.raft_port}" for i, n in sorted(self.nodes.items()))

    def start(self, size: int = 3) -> None:
        for i in range(1, size + 1):
            self.add(i)
        spec = self.initial_cluster()
        for node in self.nodes.values():
            node.start(spec)

    # ------------------------------------------------------------------ waiting
    def status(self, among: list[int] | None = None) -> list[dict[str, Any]]:
        """ha_status from the first running node that answers."""
        last: Exception | None = None
        for i in among or sorted(self.nodes):
            node = self.nodes[i]
            if not node.running():
                continue
            try:
                return node.ha_status()
            except Exception as exc:  # try the next node
                last = exc
        raise AssertionError(f"no node answered ha_status: {last}")

    def primary(self, among: list[int] | None = None) -> HaNode:
        """The one node that says it is a primary with a valid lease."""
        rows = self.status(among)
        primaries = [r for r in rows if r["pg_role"] == "primary"
                     and (r["lease_remaining_ms"] or 0) > 0]
        if len(primaries) != 1:
            raise AssertionError(f"not exactly one primary: {rows}")
        return self.nodes[primaries[0]["node_id"]]

    def wait_primary(self, timeout: float = 90, among: list[int] | None = None) -> HaNode:
        return wait_for(lambda: self.primary(among), timeout=timeout, what="one primary",
                        interval=0.2)

    def streaming(self, node_id: int) -> bool:
        rows = {r["node_id"]: r for r in self.status()}
        row = rows.get(node_id)
        return bool(row and row["pg_role"] == "replica"
                    and str(row["state"]).startswith("streaming"))

    def wait_streaming(self, ids: list[int], timeout: float = 120) -> None:
        wait_for(lambda: all(self.streaming(i) for i in ids), timeout=timeout,
                 what=f"nodes {ids} streaming", interval=0.3)

    def logs(self) -> str:
        return "\n".join(f"===== node {i} =====\n{n.log()[-6000:]}"
                         for i, n in sorted(self.nodes.items()))

    def cleanup(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.stop(timeout=30)
        for pid in processes_mentioning(str(self.base)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Postmasters started by a node: their command line names PGDATA under base.
        wait_for(lambda: not processes_mentioning(str(self.base)), timeout=30,
                 what="every process of the HA cluster to exit")
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def ha_cluster(net: NetNamespaces | None = None) -> Iterator[HaCluster]:
    cluster = HaCluster(net)
    try:
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.cleanup()
