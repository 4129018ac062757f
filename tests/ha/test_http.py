"""The HTTP endpoints (pgraft.ha.http) against a real server on loopback: status codes per
situation, the HTTP handling (HEAD, OPTIONS, keep-alive, bounds, bad requests), /metrics and
/cluster. The server runs on an event loop in a thread; the tests speak http.client and raw
sockets to it and change the fake node's view between requests."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from pgraft.ha.health import HealthView
from pgraft.ha.http import HttpServer, parse_size
from pgraft.ha.types import PG_PRIMARY, PG_REPLICA, PG_STOPPED, PG_UNKNOWN, PgObservation
from pgraft.localcluster import wait_until
from pgraft.node.metrics import Histogram

TIMEOUT = 5.0

PRIMARY_PG = PgObservation(role=PG_PRIMARY, timeline=3, received_lsn=0x16B374D48,
                           replayed_lsn=0x16B374D48, system_id=7)
# lag: upstream - replayed = 5000 bytes
REPLICA_PG = PgObservation(role=PG_REPLICA, timeline=3, received_lsn=0x3000 + 5000,
                           replayed_lsn=0x3000, upstream_lsn=0x3000 + 5000, streaming=True,
                           upstream_node=1)


def primary_view(**changes: Any) -> HealthView:
    hist = Histogram()
    for seconds in (0.0004, 0.0009, 0.002, 0.002, 0.3):
        hist.observe(seconds)
    view = HealthView(
        node_id=1, running=True, ha_mode=True, raft_role="leader", raft_term=7,
        raft_leader=1, commit_index=120, applied_index=118, pg=PRIMARY_PG, lease_valid=True,
        lease_remaining_ms=2500, epoch=4, primary_id=1, failovers=2,
        members=[{"node_id": 1, "address": "127.0.0.1", "port": 7001, "pg_role": "primary"},
                 {"node_id": 2, "address": "127.0.0.1", "port": 7002, "pg_role": "replica"}],
        commit_latency=hist, peer_lag={2: 3, 3: 0})
    return dataclasses.replace(view, **changes)


def replica_view(**changes: Any) -> HealthView:
    base = primary_view(node_id=2, raft_role="follower", pg=REPLICA_PG, lease_valid=False,
                        lease_remaining_ms=None, peer_lag={})
    return dataclasses.replace(base, **changes)


class FakeNode:
    """The HealthSource: returns ``view``, or raises ``error`` when set."""

    def __init__(self) -> None:
        self.view = primary_view()
        self.error: Exception | None = None
        self.calls = 0

    def __call__(self) -> HealthView:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.view


class Running:
    """An HttpServer on its own event loop thread (asyncio's, or uvloop's as in a node)."""

    def __init__(self, node: FakeNode, loop_kind: str = "asyncio", **kwargs: Any) -> None:
        self.loop = uvloop.new_event_loop() if loop_kind == "uvloop" \
            else asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = HttpServer("127.0.0.1", 0, node, loop=self.loop, **kwargs)
        self.call(self.server.start())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def connections(self) -> int:
        async def count() -> int:
            return len(self.server._connections)
        return int(self.call(count()))

    def stop(self) -> None:
        try:
            self.call(self.server.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(TIMEOUT)
            self.loop.close()


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture(params=["asyncio", "uvloop"])
def running(node: FakeNode, request: pytest.FixtureRequest) -> Iterator[Running]:
    r = Running(node, request.param)
    try:
        yield r
    finally:
        r.stop()


def get(r: Running, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", r.server.port, timeout=TIMEOUT)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def status(r: Running, path: str) -> int:
    return get(r, path)[0]


def raw(r: Running, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", r.server.port), timeout=TIMEOUT) as s:
        s.sendall(data)
        return read_all(s)


def read_all(s: socket.socket, limit: int = 64 << 20) -> bytes:
    """Until the server closes; bounded by ``limit`` bytes and the socket's timeout."""
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = s.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    raise AssertionError(f"the server sent over {limit} bytes without closing")


def split_response(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


# ----------------------------------------------------------------------------- status codes
def test_primary_with_lease(running: Running) -> None:
    for path in ("/primary", "/master", "/leader", "/"):
        assert status(running, path) == 200, path
    assert status(running, "/replica") == 503
    assert status(running, "/read-only") == 200
    assert status(running, "/readiness") == 200
    assert status(running, "/health") == 200
    code, headers, body = get(running, "/primary")
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    doc = json.loads(body)
    assert doc["state"] == "running"
    assert doc["role"] == "primary"
    assert doc["timeline"] == 3
    assert doc["epoch"] == 4
    assert doc["node_id"] == 1
    assert doc["lease_valid"] is True
    assert doc["xlog"] == {"location": 0x16B374D48}


def test_primary_without_lease(running: Running, node: FakeNode) -> None:
    node.view = primary_view(lease_valid=False, lease_remaining_ms=None)
    assert status(running, "/primary") == 503
    assert status(running, "/master") == 503
    assert status(running, "/read-only") == 503
    assert status(running, "/health") == 200
    code, _, body = get(running, "/primary")
    assert json.loads(body)["role"] == "primary"  # the body still tells what it is


def test_replica_streaming_or_not(running: Running, node: FakeNode) -> None:
    node.view = replica_view()
    assert status(running, "/replica") == 200
    assert status(running, "/read-only") == 200
    assert status(running, "/primary") == 503
    doc = json.loads(get(running, "/replica")[2])
    assert doc["role"] == "replica"
    assert doc["streaming"] is True
    assert doc["lag_bytes"] == 5000
    node.view = replica_view(pg=dataclasses.replace(REPLICA_PG, streaming=False))
    assert status(running, "/replica") == 503
    assert status(running, "/read-only") == 503
    node.view = replica_view(pg=PgObservation(role=PG_STOPPED, timeline=3))
    assert status(running, "/replica") == 503
    assert status(running, "/health") == 200


def test_replica_lag_thresholds(running: Running, node: FakeNode) -> None:
    node.view = replica_view()  # 5000 bytes behind
    assert status(running, "/replica?lag=5000") == 200
    assert status(running, "/replica?lag=4999") == 503
    assert status(running, "/replica?lag=4999B") == 503
    assert status(running, "/replica?lag=16kB") == 200
    assert status(running, "/replica?lag=1kb") == 503
    assert status(running, "/replica?lag=4.5KB") == 503   # 4608
    assert status(running, "/replica?lag=5KB") == 200     # 5120
    assert status(running, "/replica?lag=64MB") == 200
    assert status(running, "/replica?lag=1gb") == 200
    assert status(running, "/read-only?lag=4999") == 503
    assert status(running, "/read-only?lag=1MB") == 200
    # unknown lag: fine without a threshold, not with one
    node.view = replica_view(pg=dataclasses.replace(REPLICA_PG, upstream_lsn=None))
    assert status(running, "/replica") == 200
    assert status(running, "/replica?lag=1GB") == 503
    # a primary has no replication lag to check
    node.view = primary_view()
    assert status(running, "/read-only?lag=0") == 200


@pytest.mark.parametrize("value", ["abc", "10XB", "-1", "", "1e6", "1%200", "20MB%20x"])
def test_bad_lag_value(running: Running, node: FakeNode, value: str) -> None:
    node.view = replica_view()
    for path in ("/replica", "/read-only"):
        code, headers, body = get(running, f"{path}?lag={value}")
        assert code == 400
        assert headers["content-type"].startswith("text/plain")
        assert body.count(b"\n") == 1
        assert b"is not a size" in body and b"lag=16MB" in body


def test_parse_size() -> None:
    assert parse_size("0") == 0
    assert parse_size("123") == 123
    assert parse_size("12B") == 12
    assert parse_size("16kB") == 16 * 1024
    assert parse_size("16KB") == 16 * 1024
    assert parse_size("64MB") == 64 << 20
    assert parse_size("1GB") == 1 << 30
    assert parse_size("2tb") == 2 << 40
    assert parse_size("1.5kB") == 1536
    assert parse_size(" 7 MB ") == 7 << 20
    for bad in ("", "k", "1PB", "1.2.3", "-5", "9" * 30):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_without_ha_mode(running: Running, node: FakeNode) -> None:
    node.view = primary_view(ha_mode=False, pg=PgObservation(), lease_valid=False,
                             lease_remaining_ms=None)
    assert status(running, "/primary") == 503
    assert status(running, "/replica") == 503
    assert status(running, "/read-only") == 503
    assert status(running, "/health") == 200
    assert json.loads(get(running, "/health")[2])["role"] == PG_UNKNOWN
    # even an observation that says primary does not count without HA mode
    node.view = primary_view(ha_mode=False)
    assert status(running, "/primary") == 503


def test_stopping_node(running: Running, node: FakeNode) -> None:
    node.view = primary_view(running=False)
    assert status(running, "/health") == 503
    assert status(running, "/liveness") == 503
    assert status(running, "/primary") == 503
    assert json.loads(get(running, "/health")[2])["state"] == "stopped"


def test_source_raises(running: Running, node: FakeNode) -> None:
    node.error = RuntimeError("state lock\nbroken")
    for path in ("/primary", "/health", "/cluster", "/metrics"):
        code, headers, body = get(running, path)
        assert code == 503, path
        assert headers["content-type"].startswith("text/plain")
        assert body == b"node status unavailable: RuntimeError: state lock broken\n"
    node.error = None
    assert status(running, "/primary") == 200  # the server lives on


def test_unknown_path_and_method(running: Running) -> None:
    code, _, body = get(running, "/nope")
    assert code == 404
    for endpoint in (b"/primary", b"/replica", b"/read-only", b"/health", b"/cluster",
                     b"/metrics"):
        assert endpoint in body
    code, headers, body = get(running, "/primary", method="POST")
    assert code == 405
    assert headers["allow"] == "GET, HEAD, OPTIONS"


def test_source_called_once_per_request(running: Running, node: FakeNode) -> None:
    before = node.calls
    get(running, "/metrics")
    get(running, "/replica?lag=1MB")
    assert node.calls == before + 2


# ----------------------------------------------------------------------------- HTTP handling
def test_head_and_options(running: Running, node: FakeNode) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/primary")
        resp = conn.getresponse()
        get_body = resp.read()
        conn.request("HEAD", "/primary")
        resp = conn.getresponse()
        assert resp.status == 200
        assert int(resp.getheader("Content-Length", "")) == len(get_body)
        assert resp.read() == b""
        node.view = primary_view(lease_valid=False)
        conn.request("HEAD", "/primary")
        resp = conn.getresponse()
        assert resp.status == 503
        resp.read()
        conn.request("GET", "/health")  # the connection is still in sync
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    node.view = primary_view()
    # HAProxy's default check: "OPTIONS / HTTP/1.0", the answer read until close
    line, headers, body = split_response(raw(running, b"OPTIONS / HTTP/1.0\r\n\r\n"))
    assert line == "HTTP/1.1 200 OK"
    assert headers["content-length"] == "0"
    assert headers["allow"] == "GET, HEAD, OPTIONS"
    assert headers["connection"] == "close"
    assert body == b""
    line, _, _ = split_response(raw(running, b"OPTIONS /replica HTTP/1.0\r\n\r\n"))
    assert line == "HTTP/1.1 503 Service Unavailable"
    line, headers, body = split_response(raw(running, b"HEAD /metrics HTTP/1.0\r\n\r\n"))
    assert line == "HTTP/1.1 200 OK" and int(headers["content-length"]) > 0 and body == b""


def test_keep_alive(running: Running) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/primary")
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
        sock = conn.sock
        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
        assert conn.sock is sock  # no reconnect
        assert running.connections() == 1
    finally:
        conn.close()
    # HTTP/1.0 with keep-alive, and two pipelined requests in one write
    with socket.create_connection(("127.0.0.1", running.server.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                  b"GET /primary HTTP/1.0\r\n\r\n")
        data = read_all(s)  # the second answer closes (HTTP/1.0 without keep-alive)
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: keep-alive" in first
    assert rest.count(b"HTTP/1.1 200 OK") == 1
    # HTTP/1.1 "Connection: close" is honoured
    line, headers, _ = split_response(
        raw(running, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert line == "HTTP/1.1 200 OK" and headers["connection"] == "close"


def test_client_that_does_not_read(running: Running) -> None:
    """Pipelined requests whose answers are not read: the server stops reading (its write
    buffer is bounded), and answers all of them in order once the client reads."""
    n = 2000
    requests = b"GET /metrics HTTP/1.1\r\n\r\n" * (n - 1) \
        + b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"

    async def paused() -> bool:
        return any(c.paused for c in running.server._connections)

    with socket.create_connection(("127.0.0.1", running.server.port), timeout=TIMEOUT) as s:
        s.sendall(requests)
        wait_until("the server pauses the connection", lambda: running.call(paused()),
                   TIMEOUT, truthy=True)
        data = read_all(s)
    assert data.count(b"HTTP/1.1 200 OK") == n
    last = split_response(data[data.rindex(b"HTTP/1.1 200 OK"):])
    assert json.loads(last[2])["state"] == "running"  # /health's answer came last


def test_request_body_is_skipped(running: Running) -> None:
    with socket.create_connection(("127.0.0.1", running.server.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                  b"GET /primary HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = read_all(s)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    line, _, body = split_response(
        raw(running, b"GET /health HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"))
    assert line == "HTTP/1.1 413 Content Too Large" or line.startswith("HTTP/1.1 413")
    assert b"over the limit" in body
    line, _, _ = split_response(
        raw(running, b"GET /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"))
    assert line.startswith("HTTP/1.1 400")


def test_oversized_header(running: Running) -> None:
    big = b"GET /primary HTTP/1.1\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n"
    line, headers, body = split_response(raw(running, big))
    assert line == "HTTP/1.1 431 Request Header Fields Too Large"
    assert headers["connection"] == "close"
    assert b"over 8192 bytes" in body
    # a client that is still sending when the answer comes still gets to read it
    with socket.create_connection(("127.0.0.1", running.server.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /primary HTTP/1.1\r\nX-Big: " + b"a" * 500_000)
        line, _, _ = split_response(read_all(s))
        assert line.startswith("HTTP/1.1 431")
    # without the end of the head at all (the server must not wait for it)
    line, _, _ = split_response(raw(running, b"GET /" + b"x" * 9000))
    assert line.startswith("HTTP/1.1 431")
    assert status(running, "/primary") == 200  # the next connection is served


@pytest.mark.parametrize("request_bytes,code", [
    (b"garbage\r\n\r\n", 400),
    (b"\x00\x01\x02 \xff\xfe HTTP/1.1\r\n\r\n", 400),
    (b"GET /primary\r\n\r\n", 400),
    (b"GET /primary HTTP/x\r\n\r\n", 400),
    (b"GET primary HTTP/1.1\r\n\r\n", 400),
    (b"GET /primary HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /primary HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
    (b"GET /primary HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
    (b"GET /primary HTTP/2.0\r\n\r\n", 505),
])
def test_bad_requests(running: Running, request_bytes: bytes, code: int) -> None:
    line, headers, body = split_response(raw(running, request_bytes))
    assert line.startswith(f"HTTP/1.1 {code} ")
    assert headers["connection"] == "close"
    assert headers["content-type"].startswith("text/plain")
    assert body.endswith(b"\n") and body.count(b"\n") == 1 and len(body) > 10
    assert status(running, "/health") == 200


def test_lenient_forms(running: Running) -> None:
    # bare LF line ends (printf | nc), a leading empty line, an absolute target
    line, _, _ = split_response(raw(running, b"\r\nGET /primary HTTP/1.0\n\n"))
    assert line == "HTTP/1.1 200 OK"
    line, _, _ = split_response(raw(running, b"GET http://db1:8008/replica HTTP/1.0\r\n\r\n"))
    assert line.startswith("HTTP/1.1 503")


def test_idle_connection_closed(node: FakeNode) -> None:
    r = Running(node, idle_timeout=0.3)
    try:
        with socket.create_connection(("127.0.0.1", r.server.port), timeout=TIMEOUT) as s:
            assert read_all(s) == b""  # closed by the server, well before TIMEOUT
        # a request head that never completes: 408, not held open by trickled bytes
        with socket.create_connection(("127.0.0.1", r.server.port), timeout=TIMEOUT) as s:
            s.sendall(b"GET /primary HTTP/1.1\r\n")
            line, _, _ = split_response(read_all(s))
            assert line.startswith("HTTP/1.1 408")
        # after an answer on a keep-alive connection the timer starts again
        with socket.create_connection(("127.0.0.1", r.server.port), timeout=TIMEOUT) as s:
            s.sendall(b"GET /health HTTP/1.1\r\n\r\n")
            data = read_all(s)
            assert data.startswith(b"HTTP/1.1 200 OK") and data.count(b"HTTP/1.1") == 1
        wait_until("the server has no connections", lambda: r.connections() == 0, TIMEOUT)
    finally:
        r.stop()


def test_connection_limit(node: FakeNode) -> None:
    r = Running(node, max_connections=2)
    try:
        held = []
        for _ in range(2):
            c = http.client.HTTPConnection("127.0.0.1", r.server.port, timeout=TIMEOUT)
            c.request("GET", "/health")
            c.getresponse().read()
            held.append(c)
        line, _, body = split_response(raw(r, b"GET /health HTTP/1.1\r\n\r\n"))
        assert line == "HTTP/1.1 503 Service Unavailable"
        assert b"too many connections" in body
        held.pop().close()
        wait_until("a connection slot is free", lambda: r.connections() == 1, TIMEOUT)
        assert status(r, "/health") == 200
        for c in held:
            c.close()
    finally:
        r.stop()


def test_close_drops_keep_alive_connections(node: FakeNode) -> None:
    r = Running(node)
    with socket.create_connection(("127.0.0.1", r.server.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK")
        r.stop()
        assert read_all(s) == b""


# ----------------------------------------------------------------------------- /cluster
def test_cluster(running: Running, node: FakeNode) -> None:
    code, headers, body = get(running, "/cluster")
    assert code == 200 and headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["node_id"] == 1
    assert doc["members"] == primary_view().members
    assert doc["raft"] == {"role": "leader", "term": 7, "leader": 1, "commit_index": 120,
                           "applied_index": 118}
    pg = doc["postgres"]
    assert pg["role"] == "primary" and pg["timeline"] == 3
    assert pg["received_lsn"] == "1/6B374D48" and pg["replayed_lsn"] == "1/6B374D48"
    assert pg["lag_bytes"] is None and pg["streaming"] is False
    assert doc["lease"] == {"valid": True, "remaining_ms": 2500, "epoch": 4, "primary_id": 1}
    assert doc["failovers"] == 2
    node.view = replica_view()
    pg = json.loads(get(running, "/cluster")[2])["postgres"]
    assert pg["role"] == "replica" and pg["lag_bytes"] == 5000 and pg["streaming"] is True
    assert pg["replayed_lsn"] == "0/3000" and pg["upstream_node"] == 1
    # a node that is down still answers /cluster with 200 (Patroni does too)
    node.view = replica_view(running=False)
    assert status(running, "/cluster") == 200


# ----------------------------------------------------------------------------- /metrics
def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_primary(running: Running) -> None:
    code, headers, body = get(running, "/metrics")
    assert code == 200
    assert headers["content-type"].startswith("text/plain")
    s = samples(body.decode())
    assert s[("pgraft_raft_term", ())] == 7
    assert s[("pgraft_raft_role", (("role", "leader"),))] == 1
    assert s[("pgraft_raft_role", (("role", "follower"),))] == 0
    assert s[("pgraft_raft_role", (("role", "pre-candidate"),))] == 0
    assert s[("pgraft_raft_commit_index", ())] == 120
    assert s[("pgraft_raft_applied_index", ())] == 118
    assert s[("pgraft_peer_lag_entries", (("peer", "2"),))] == 3
    assert s[("pgraft_peer_lag_entries", (("peer", "3"),))] == 0
    assert s[("pgraft_postgres_role", (("role", "primary"),))] == 1
    assert s[("pgraft_postgres_role", (("role", "replica"),))] == 0
    assert s[("pgraft_postgres_timeline", ())] == 3
    assert ("pgraft_postgres_replication_lag_bytes", ()) not in s
    assert s[("pgraft_lease_valid", ())] == 1
    assert s[("pgraft_lease_remaining_seconds", ())] == 2.5
    assert s[("pgraft_ha_epoch", ())] == 4
    assert s[("pgraft_failovers_total", ())] == 2
    assert s[("pgraft_node_info", (("node_id", "1"),))] == 1
    # the histogram: cumulative buckets in seconds, sum, count
    assert s[("pgraft_commit_latency_seconds_bucket", (("le", "0.0001"),))] == 0
    assert s[("pgraft_commit_latency_seconds_bucket", (("le", "0.0005"),))] == 1
    assert s[("pgraft_commit_latency_seconds_bucket", (("le", "0.001"),))] == 2
    assert s[("pgraft_commit_latency_seconds_bucket", (("le", "0.002"),))] == 4
    assert s[("pgraft_commit_latency_seconds_bucket", (("le", "0.25"),))] == 4
    assert s[("pgraft_commit_latency_seconds_bucket", (("le", "0.5"),))] == 5
    assert s[("pgraft_commit_latency_seconds_bucket", (("le", "+Inf"),))] == 5
    assert s[("pgraft_commit_latency_seconds_count", ())] == 5
    assert s[("pgraft_commit_latency_seconds_sum", ())] == pytest.approx(0.3053)


def test_metrics_replica_and_plain_node(running: Running, node: FakeNode) -> None:
    node.view = replica_view()
    s = samples(get(running, "/metrics")[2].decode())
    assert s[("pgraft_raft_role", (("role", "follower"),))] == 1
    assert s[("pgraft_postgres_role", (("role", "replica"),))] == 1
    assert s[("pgraft_postgres_streaming", ())] == 1
    assert s[("pgraft_postgres_replication_lag_bytes", ())] == 5000
    assert s[("pgraft_lease_valid", ())] == 0
    assert ("pgraft_lease_remaining_seconds", ()) not in s
    assert not any(name == "pgraft_peer_lag_entries" for name, _ in s)
    # no PostgreSQL: no postgres series at all; no histogram when the node has none
    node.view = primary_view(ha_mode=False, pg=PgObservation(), commit_latency=None,
                             raft_role="learner")
    s = samples(get(running, "/metrics")[2].decode())
    assert s[("pgraft_ha_mode", ())] == 0
    assert s[("pgraft_raft_role", (("role", "learner"),))] == 1
    assert not any(name.startswith("pgraft_postgres_") for name, _ in s)
    assert not any(name.startswith("pgraft_commit_latency") for name, _ in s)


def test_metrics_openmetrics(running: Running) -> None:
    code, headers, body = get(running, "/metrics",
                              headers={"Accept": "application/openmetrics-text; "
                                                 "version=1.0.0"})
    assert code == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    names = {f.name for f in openmetrics_families(body.decode())}
    assert {"pgraft_raft_term", "pgraft_failovers", "pgraft_commit_latency_seconds"} <= names


def test_metrics_registry_per_server(node: FakeNode) -> None:
    a, b = Running(node), Running(node)
    try:
        assert status(a, "/metrics") == 200 and status(b, "/metrics") == 200
    finally:
        a.stop()
        b.stop()
