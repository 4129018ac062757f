"""The HTTP endpoints of a node without PostgreSQL (``--http-port`` without ``--postgres``):
health and metrics answer; no node claims to be a primary or a replica."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from pgraft.localcluster import free_port
from tests.support.cluster import Cluster, cluster_factory_fixture  # noqa: F401  (fixture)


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def test_http_without_postgres(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory(3, start=False)
    ports = {}
    for i, node in c.nodes.items():
        ports[i] = free_port()
        node.extra_args = ["--http-port", str(ports[i])]
    c.start(timeout=60)
    leader = c.wait_for_leader(timeout=60)
    for i, port in ports.items():
        assert get(port, "/health")[0] == 200
        assert get(port, "/primary")[0] == 503
        assert get(port, "/replica")[0] == 503
        code, body = get(port, "/cluster")
        assert code == 200
        view = json.loads(body)
        assert view["node_id"] == i and view["raft"]["leader"] == leader
    code, body = get(ports[leader], "/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    role = {s.labels["role"]: s.value for s in families["pgraft_raft_role"].samples}
    assert role["leader"] == 1
    assert families["pgraft_raft_term"].samples[0].value >= 1
    assert "pgraft_commit_latency_seconds" in families
    assert get(ports[leader], "/nope")[0] == 404
