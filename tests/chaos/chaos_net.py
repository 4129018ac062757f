"""A private network for chaos runs: one Linux network namespace per node, real packet loss.

Layout (as root)::

    root namespace:  bridge pgc<pid>br  10.X.Y.254/24   <- the harness's clients
                       |  veth pgc<pid>v<i> (host end)
    namespace pgc<pid>n<i>:  eth0 10.X.Y.<i>/24, lo      <- node i listens on 10.X.Y.i:7000

A partition between nodes i and j installs a ``blackhole`` route to j's address in i's
namespace and one to i's in j's: every packet between them is dropped by the kernel
(established connections stall and retransmit, new connections fail), while the clients on the
bridge still reach every node -- so a node cut off in a minority keeps answering clients,
which is how stale reads would show. ``heal`` removes the routes. Everything created is
removed by :meth:`close` (deleting a namespace deletes its veth pair); namespaces left behind
by a harness that was killed are found by the pid in their name and removed by the next run.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterable

__all__ = ["NetNamespaces", "netns_available"]

_PREFIX = "pgc"
NODE_PORT = 7000


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=20)


def netns_available() -> str | None:
    """None when namespaces can be used here; else why not."""
    if os.geteuid() != 0:
        return "not root"
    probe = f"{_PREFIX}probe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns add` failed: {getattr(exc, 'stderr', '') or exc}"
    _ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Remove namespaces and bridges of chaos runs whose process is gone."""
    removed = []
    out = _ip("netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{_PREFIX}(\d+)n\d+", name)
        if m and not _alive(int(m.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    links = _ip("-o", "link", "show", check=False).stdout
    for m in re.finditer(rf"\d+: ({_PREFIX}(\d+)br)[:@]", links):
        if not _alive(int(m.group(2))):
            _ip("link", "del", m.group(1), check=False)
            removed.append(m.group(1))
    return removed


class NetNamespaces:
    """The bridge, a namespace per node, and the partition routes."""

    def __init__(self) -> None:
        remove_stale()
        self.tag = f"{_PREFIX}{os.getpid()}"
        self.bridge = f"{self.tag}br"
        self.subnet = self._pick_subnet()
        self.nodes: dict[int, str] = {}  # node id -> namespace
        self.blocked: set[tuple[int, int]] = set()
        self._closed = False
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            _ip("link", "del", self.bridge, check=False)
            raise

    @staticmethod
    def _pick_subnet() -> str:
        used = _ip("-4", "addr", check=False).stdout + _ip("-4", "route", check=False).stdout
        pid = os.getpid()
        for k in range(200):
            a, b = 100 + (pid + k) % 100, (pid // 100 + k) % 250
            net = f"10.{a}.{b}"
            if f"{net}." not in used:
                return net
        raise RuntimeError("no free 10.x.y.0/24 subnet for the chaos network")

    def host_of(self, node_id: int) -> str:
        if not 1 <= node_id <= 250:
            raise ValueError(f"node id {node_id} out of range for the chaos network")
        return f"{self.subnet}.{node_id}"

    def namespace(self, node_id: int) -> str:
        return f"{self.tag}n{node_id}"

    def add_node(self, node_id: int) -> str:
        """Create node ``node_id``'s namespace (once); returns its address."""
        if node_id in self.nodes:
            return self.host_of(node_id)
        ns = self.namespace(node_id)
        veth = f"{self.tag}v{node_id}"
        _ip("netns", "add", ns)
        self.nodes[node_id] = ns
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", self.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{self.host_of(node_id)}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return self.host_of(node_id)

    def exec_prefix(self, node_id: int) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(node_id)]

    # ------------------------------------------------------------------ partitions
    def _route(self, op: str, src: int, dst: int) -> None:
        if src in self.nodes:
            _ip("-n", self.nodes[src], "route", op, "blackhole", f"{self.host_of(dst)}/32",
                check=False)

    def block(self, a: int, b: int) -> None:
        """Drop every packet between nodes ``a`` and ``b`` (both directions)."""
        pair = (min(a, b), max(a, b))
        if a == b or pair in self.blocked:
            return
        self.blocked.add(pair)
        self._route("add", a, b)
        self._route("add", b, a)

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Cut every pair of nodes that are in different groups."""
        gs = [set(g) for g in groups]
        for i, g in enumerate(gs):
            for h in gs[i + 1:]:
                for a in g:
                    for b in h:
                        self.block(a, b)

    def heal(self) -> None:
        for a, b in sorted(self.blocked):
            self._route("del", a, b)
            self._route("del", b, a)
        self.blocked.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.heal()
        for ns in self.nodes.values():
            _ip("netns", "del", ns, check=False)
        self.nodes.clear()
        _ip("link", "del", self.bridge, check=False)
