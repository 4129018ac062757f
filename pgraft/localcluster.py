"""Real ``pgraft serve`` processes on loopback: :class:`LocalCluster` and :class:`NodeProcess`,
plus :func:`free_port` and :func:`wait_until`. Shipped in the package (as asyncpg ships
``cluster.py``) because ``pgraft demo``, the process-level tests, the fault campaign and the
benchmarks all drive clusters with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from .client import Client, NodeInfo
from .errors import PgraftError, Timeout

__all__ = ["LocalCluster", "NodeProcess", "free_port", "wait_until"]

_T = TypeVar("_T")
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now and was not handed out before by this process."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError("no free TCP port found")


def wait_until(what: str, check: Callable[[], _T | None], timeout: float,
               interval: float = 0.05, *,
               retry_on: tuple[type[BaseException], ...] = (PgraftError,),
               truthy: bool = False) -> _T:
    """Call ``check`` until it returns something other than None/False (with ``truthy``: a
    true value); raise Timeout naming ``what`` (and the last error ``check`` raised) after
    ``timeout`` seconds. Errors of the ``retry_on`` classes count as "not yet". The one wait
    loop of the tests, the demos and the benchmarks."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if (result if truthy else result is not None and result is not False):
                return result  # type: ignore[return-value]
        except retry_on as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise Timeout(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def _die_with_parent() -> None:
    # Linux: the node gets SIGKILL if the process that started it dies, so that a crashed test
    # run or demo never leaves node processes behind.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


#: The signals that a Ctrl-C or a ``kill`` of the demo (or of a test run) turns into an exception.
_INTERRUPTS = frozenset({signal.SIGINT, signal.SIGTERM})


@contextlib.contextmanager
def _interrupts_held() -> Iterator[frozenset[int] | None]:
    """Hold SIGINT/SIGTERM back (``pthread_sigmask``) for the block; one that arrives
    meanwhile is delivered when it ends, after the block did its work.

    Python raises ``KeyboardInterrupt`` at whatever bytecode runs when the signal comes. In a
    few places that loses either the process or the interrupt: inside ``subprocess.Popen``
    after the fork but before the ``Popen`` object is returned, the node runs on unknown to
    :meth:`LocalCluster.close` (and recreates its data directory after the base directory was
    removed); inside an ``os.register_at_fork`` callback that ``Popen`` runs (logging's lock
    release), the interpreter prints "Exception ignored" and the Ctrl-C is gone. Yields the
    signal mask to restore in a child forked inside the block (None when nothing was held:
    no ``pthread_sigmask``, or not the main thread, whose handlers raise)."""
    if (not hasattr(signal, "pthread_sigmask")
            or threading.current_thread() is not threading.main_thread()):
        yield None
        return
    previous = frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, ()))
    try:
        # An interrupt that is already pending is raised here, before the block starts.
        signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
        yield previous
    finally:
        # Delivers (raises) what came in meanwhile.
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _node_preexec(mask: frozenset[int] | None) -> Callable[[], None] | None:
    """The ``preexec_fn`` of a node: the signal mask of before :func:`_interrupts_held` (a
    child inherits the blocked one, and a node must get SIGTERM/SIGINT), and on Linux
    :func:`_die_with_parent`."""
    linux = sys.platform.startswith("linux")
    if mask is None:
        return _die_with_parent if linux else None

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if linux:
            _die_with_parent()
    return setup


@dataclass
class NodeProcess:
    """One node process of a :class:`LocalCluster`."""

    node_id: int
    host: str
    port: int
    data_dir: str
    log_path: str
    bootstrap: bool
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0
    extra_args: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        """``host:port`` of the node (peers and clients)."""
        return f"{self.host}:{self.port}"

    @property
    def socket_path(self) -> str:
        """The node's Unix socket for local clients."""
        return os.path.join(self.data_dir, "node.sock")

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        return self.proc.pid if self.proc is not None and self.running else None

    @property
    def running(self) -> bool:
        """True while the process exists (also when paused)."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the node's log."""
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class LocalCluster:
    """Real ``pgraft serve`` processes on loopback, each with its own data directory and log.

    Nodes ``1..size`` bootstrap together (``--initial-cluster``); :meth:`start_empty` adds a
    node that starts without membership and waits until a leader adds it. Every wait has a
    timeout; :meth:`close` stops all processes (SIGTERM, then SIGKILL) and removes the base
    directory unless ``keep`` is set.
    """

    def __init__(self, size: int = 3, *, base_dir: str | None = None,
                 election_timeout_ms: int | None = None,
                 heartbeat_interval_ms: int | None = None, host: str = "127.0.0.1",
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 keep: bool = False, call_timeout: float = 5.0) -> None:
        self._own_dir = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="pgraft-cluster-")
        self.host = host
        self.election_timeout_ms = election_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.extra_args = list(extra_args or [])
        self.keep = keep
        self.call_timeout = call_timeout
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [_REPO_ROOT] + ([self.env["PYTHONPATH"]] if self.env.get("PYTHONPATH") else []))
        self.env.update(env or {})
        self.nodes: dict[int, NodeProcess] = {}
        for node_id in range(1, size + 1):
            self._add(node_id, bootstrap=True)
        self.initial_cluster = ",".join(f"{n.node_id}={n.address}"
                                        for n in self.nodes.values())

    def _add(self, node_id: int, bootstrap: bool) -> NodeProcess:
        data_dir = os.path.join(self.base_dir, f"node{node_id}")
        node = NodeProcess(node_id=node_id, host=self.host, port=free_port(self.host),
                           data_dir=data_dir,
                           log_path=os.path.join(self.base_dir, f"node{node_id}.log"),
                           bootstrap=bootstrap)
        self.nodes[node_id] = node
        return node

    # ----------------------------------------------------------------- processes
    def command(self, node_id: int) -> list[str]:
        """The command line that starts ``node_id``."""
        node = self.nodes[node_id]
        cmd = [sys.executable, "-m", "pgraft", "serve", "--id", str(node_id), "--address",
               node.host, "--port", str(node.port), "--data-dir", node.data_dir]
        if node.bootstrap:
            cmd += ["--initial-cluster", self.initial_cluster]
        if self.election_timeout_ms is not None:
            cmd += ["--election-timeout", str(self.election_timeout_ms)]
        if self.heartbeat_interval_ms is not None:
            cmd += ["--heartbeat-interval", str(self.heartbeat_interval_ms)]
        return cmd + self.extra_args + node.extra_args

    def start(self, wait: bool = True, timeout: float = 30.0) -> LocalCluster:
        """Start every node that is not running; with ``wait``, until each answers clients."""
        for node_id, node in self.nodes.items():
            if not node.running:
                self.start_node(node_id, wait=False)
        if wait:
            for node_id in self.nodes:
                self.wait_ready(node_id, timeout)
        return self

    def start_node(self, node_id: int, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Start (or start again) the process of ``node_id``."""
        node = self.nodes[node_id]
        if node.running:
            raise PgraftError(f"node {node_id} is already running (pid {node.pid})")
        os.makedirs(node.data_dir, exist_ok=True)
        node.starts += 1
        with open(node.log_path, "ab") as log:
            log.write(f"==== start #{node.starts}: {' '.join(self.command(node_id))}\n"
                      .encode())
            log.flush()
            # No interrupt between the fork and recording the process: close() must know it.
            with _interrupts_held() as mask:
                node.proc = subprocess.Popen(
                    self.command(node_id), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=self.env, cwd=self.base_dir,
                    preexec_fn=_node_preexec(mask))
        node.paused = False
        if wait:
            self.wait_ready(node_id, timeout)

    def start_empty(self, node_id: int, *, wait: bool = True,
                    timeout: float = 30.0) -> NodeProcess:
        """Start a new node without ``--initial-cluster`` (the seed's node 4): it waits until
        the leader adds it. Returns it; add it with ``add_node(node_id, host, port)``."""
        if node_id in self.nodes:
            raise PgraftError(f"node {node_id} already exists in this local cluster")
        node = self._add(node_id, bootstrap=False)
        self.start_node(node_id, wait=wait, timeout=timeout)
        return node

    def wait_ready(self, node_id: int, timeout: float = 30.0) -> None:
        """Wait until ``node_id`` completes a client handshake (raises if it exits)."""
        node = self.nodes[node_id]

        def ready() -> bool:
            if not node.running:
                code = node.proc.returncode if node.proc is not None else None
                raise PgraftError(f"node {node_id} exited with code {code} while starting; "
                                  f"its log ends with:\n{node.log_tail(20)}")
            with Client(node.address, timeout=1.0) as c:
                c.get_term()
            return True

        try:
            wait_until(f"node {node_id} to accept clients", ready, timeout, 0.05)
        except PgraftError as exc:
            if "exited with code" in exc.message:
                raise
            raise Timeout(f"{exc.message}; its log ends with:\n{node.log_tail(20)}") from None

    def send_signal(self, node_id: int, sig: int) -> None:
        """Send ``sig`` to the node's process (by pid)."""
        node = self.nodes[node_id]
        if node.proc is None or not node.running:
            raise PgraftError(f"node {node_id} is not running")
        os.kill(node.proc.pid, sig)

    def kill(self, node_id: int, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Kill the node's process (default ``kill -9``) and wait until it has exited."""
        node = self.nodes[node_id]
        if node.proc is None or not node.running:
            return
        if node.paused and sig != signal.SIGKILL:
            self.resume(node_id)
        os.kill(node.proc.pid, sig)
        node.proc.wait(timeout)
        node.paused = False

    def stop(self, node_id: int, timeout: float = 15.0) -> int | None:
        """Stop the node with SIGTERM (SIGKILL after ``timeout``); returns its exit code."""
        node = self.nodes[node_id]
        if node.proc is None:
            return None
        if node.running:
            if node.paused:
                self.resume(node_id)
            os.kill(node.proc.pid, signal.SIGTERM)
            try:
                node.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(node.proc.pid, signal.SIGKILL)
                node.proc.wait(10)
        return node.proc.returncode

    def restart(self, node_id: int, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Stop the node if it runs, then start it again with the same command line."""
        self.stop(node_id)
        self.start_node(node_id, wait=wait, timeout=timeout)

    def pause(self, node_id: int) -> None:
        """SIGSTOP the node (it keeps its sockets but answers nothing)."""
        self.send_signal(node_id, signal.SIGSTOP)
        self.nodes[node_id].paused = True

    def resume(self, node_id: int) -> None:
        """SIGCONT a paused node."""
        self.send_signal(node_id, signal.SIGCONT)
        self.nodes[node_id].paused = False

    def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL) and remove the directory unless kept."""
        for node in self.nodes.values():
            if node.proc is not None and node.running:
                with contextlib.suppress(OSError):
                    if node.paused:
                        os.kill(node.proc.pid, signal.SIGCONT)
                    os.kill(node.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in self.nodes.values():
            if node.proc is None:
                continue
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.kill(node.proc.pid, signal.SIGKILL)
                node.proc.wait(10)
        if self._own_dir and not self.keep:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------- clients
    def address(self, node_id: int) -> str:
        """``host:port`` of ``node_id``."""
        return self.nodes[node_id].address

    def client(self, node_id: int, timeout: float | None = None) -> Client:
        """A synchronous client of ``node_id`` (close it, or use ``with``)."""
        return Client(self.address(node_id), timeout=timeout or self.call_timeout)

    @contextlib.contextmanager
    def connected(self, node_id: int, timeout: float | None = None) -> Iterator[Client]:
        """``with cluster.connected(1) as c:`` a client that is closed afterwards."""
        c = self.client(node_id, timeout)
        try:
            yield c
        finally:
            c.close()

    def running_ids(self) -> list[int]:
        """Ids of the nodes whose process runs and is not paused."""
        return [i for i, n in self.nodes.items() if n.running and not n.paused]

    def _ask(self, node_id: int, method: str, timeout: float = 1.0) -> Any:
        with Client(self.address(node_id), timeout=timeout) as c:
            return getattr(c, method)()

    def leader(self, among: list[int] | None = None) -> int | None:
        """The leader if exactly one running node says it leads and a majority of the
        running nodes name it; else None."""
        ids = among if among is not None else self.running_ids()
        claims, named = [], []
        for node_id in ids:
            try:
                if self._ask(node_id, "is_leader"):
                    claims.append(node_id)
                named.append(self._ask(node_id, "get_leader"))
            except PgraftError:
                continue
        if len(claims) != 1:
            return None
        agree = sum(1 for n in named if n == claims[0])
        return claims[0] if agree * 2 > len(ids) else None

    def wait_for_leader(self, timeout: float = 30.0, among: list[int] | None = None,
                        exclude: int | None = None) -> int:
        """Wait until :meth:`leader` names a node (other than ``exclude``); return its id."""
        def found() -> int | None:
            leader = self.leader(among)
            return leader if leader is not None and leader != exclude else None
        return wait_until("a leader", found, timeout, 0.05)

    def nodes_seen_by(self, node_id: int, timeout: float = 2.0) -> list[NodeInfo]:
        """The membership as ``node_id`` lists it."""
        with Client(self.address(node_id), timeout=timeout) as c:
            return c.get_nodes()

    def wait_for_membership(self, expected: dict[int, str | None], timeout: float = 30.0,
                            on: list[int] | None = None) -> dict[int, list[NodeInfo]]:
        """Wait until every node in ``on`` (default: running) lists exactly the ids of
        ``expected`` (with the given role, unless None) and they all agree on addresses and
        roles. Returns each node's list."""
        def check() -> dict[int, list[NodeInfo]] | None:
            ids = on if on is not None else self.running_ids()
            views = {}
            for node_id in ids:
                views[node_id] = self.nodes_seen_by(node_id)
            for view in views.values():
                if {n.node_id for n in view} != set(expected):
                    return None
                for n in view:
                    if expected[n.node_id] is not None and n.role != expected[n.node_id]:
                        return None
            shapes = {tuple((n.node_id, n.address, n.port, n.role) for n in v)
                      for v in views.values()}
            return views if len(shapes) == 1 else None
        return wait_until(f"membership {sorted(expected)} on every node", check, timeout, 0.1)

    def dump_logs(self, stream: TextIO | None = None, lines: int = 60) -> None:
        """Print the tail of every node's log (for failing tests and demos)."""
        out = stream or sys.stderr
        for node in self.nodes.values():
            print(f"----- node {node.node_id} ({node.log_path}) -----", file=out)
            print(node.log_tail(lines), file=out)
