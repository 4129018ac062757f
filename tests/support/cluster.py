"""Process-level test harness: real ``pgraft serve`` processes on loopback.

``Cluster`` (a :class:`pgraft.demo.LocalCluster`) starts N nodes as real processes on free
loopback ports, each with its own data directory and a log file, and offers
``wait_for_leader``, ``client_for``, ``kill`` (SIGKILL by default), ``stop`` (SIGTERM),
``restart``, ``start_empty`` (the seed's node 4), ``pause``/``resume`` (SIGSTOP/SIGCONT) and
waits on conditions with timeouts. The ``cluster_factory`` / ``cluster`` fixtures stop every
process they started (by pid) and print the nodes' logs when the test failed.

Use it from a test module in ``tests/``::

    from tests.support.cluster import cluster_factory_fixture, cluster_fixture  # noqa: F401
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgraft.errors import PgraftError
from pgraft.localcluster import LocalCluster, free_port, wait_until

__all__ = ["ELECTION_TIMEOUT_MS", "HEARTBEAT_MS", "Cluster", "cluster_factory_fixture",
           "cluster_fixture", "free_port", "node_available", "requires_node", "wait_until"]

#: Election timeout of test clusters (override with PGRAFT_TEST_ELECTION_MS).
ELECTION_TIMEOUT_MS = int(os.environ.get("PGRAFT_TEST_ELECTION_MS", "300"))
#: Heartbeat interval of test clusters (override with PGRAFT_TEST_HEARTBEAT_MS).
HEARTBEAT_MS = int(os.environ.get("PGRAFT_TEST_HEARTBEAT_MS", "50"))


def node_available() -> bool:
    """True when the node runtime (``pgraft.node`` with ``run``) can be imported."""
    if importlib.util.find_spec("pgraft.node") is None:
        return False
    try:
        node = importlib.import_module("pgraft.node")
    except Exception:
        return False
    return all(hasattr(node, name) for name in ("run", "add_serve_arguments",
                                                "config_from_args"))


requires_node = pytest.mark.skipif(not node_available(),
                                   reason="the node runtime (pgraft.node) is not available")


class Cluster(LocalCluster):
    """A :class:`LocalCluster` with test conveniences."""

    def client_for(self, node_id: int, timeout: float | None = None) -> Any:
        """A synchronous ``pgraft.Client`` of ``node_id`` (closed by the caller)."""
        return self.client(node_id, timeout)

    def leader_client(self, timeout: float = 30.0) -> tuple[int, Any]:
        """(leader id, a client of the leader) once a leader is known."""
        leader = self.wait_for_leader(timeout)
        return leader, self.client(leader)

    def wait_applied(self, index: int, on: list[int] | None = None,
                     timeout: float = 30.0) -> None:
        """Wait until every node in ``on`` (default: running) has applied ``index``."""
        def check() -> bool:
            for node_id in on if on is not None else self.running_ids():
                with self.client(node_id, 2.0) as c:
                    if c.log_stats()["applied_index"] < index:
                        return False
            return True
        wait_until(f"index {index} applied everywhere", check, timeout, 0.05)

    def role_of(self, node_id: int, member: int) -> str | None:
        """The role of ``member`` in the membership as ``node_id`` lists it."""
        for n in self.nodes_seen_by(node_id):
            if n.node_id == member:
                return n.role
        return None

    def follower_of(self, leader: int) -> int:
        """Some running node other than ``leader``."""
        return next(i for i in self.running_ids() if i != leader)


@pytest.fixture(name="cluster_factory")
def cluster_factory_fixture(request: pytest.FixtureRequest,
                    tmp_path: Any) -> Iterator[Callable[..., Cluster]]:
    """``make(size=3, start=True, **LocalCluster options) -> Cluster``; every process started
    is stopped at teardown, and the logs are printed if the test failed."""
    if not node_available():
        pytest.skip("the node runtime (pgraft.node) is not available")
    clusters: list[Cluster] = []
    failed_before = request.session.testsfailed

    def make(size: int = 3, *, start: bool = True, **options: Any) -> Cluster:
        options.setdefault("election_timeout_ms", ELECTION_TIMEOUT_MS)
        options.setdefault("heartbeat_interval_ms", HEARTBEAT_MS)
        base = tmp_path / f"cluster{len(clusters)}"
        base.mkdir()
        c = Cluster(size, base_dir=str(base), **options)
        clusters.append(c)
        if start:
            c.start(timeout=60)
        return c

    try:
        yield make
    finally:
        failed = request.session.testsfailed > failed_before
        for c in clusters:
            if failed:
                print(f"\n===== logs of the failed test {request.node.nodeid} =====",
                      file=sys.__stderr__)
                c.dump_logs(sys.__stderr__, 80)
            try:
                c.close()
            except PgraftError as exc:
                print(f"cluster cleanup: {exc}", file=sys.__stderr__)


@pytest.fixture(name="cluster")
def cluster_fixture(cluster_factory: Callable[..., Cluster]) -> Cluster:
    """A started 3-node cluster with an elected leader."""
    c = cluster_factory(3)
    c.wait_for_leader(timeout=60)
    return c
