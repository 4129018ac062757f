"""The HTTP port of a node (``--http-port``): Patroni's load balancer endpoints and /metrics.

Status codes are what HAProxy and friends read, with Patroni's meaning, so their
configurations carry over (``option httpchk OPTIONS /primary``, ``http-check expect status
200``):

=====================================  ================================================
endpoint                               200 when (else 503)
=====================================  ================================================
``/``, ``/primary``, ``/master``,      HA mode, PostgreSQL runs as primary and this node
``/leader``                            holds a valid lease
``/replica[?lag=MAX]``                 HA mode, a streaming replica (lag at most MAX)
``/read-only[?lag=MAX]``,              either of the two above
``/readiness[?lag=MAX]``
``/health``, ``/liveness``             the node runs (also without PostgreSQL)
``/cluster``                           always: JSON of the node, its PostgreSQL, the lease
``/metrics``                           always: Prometheus text (:mod:`.promexport`)
=====================================  ================================================

MAX is bytes or a size with a unit (``16kB``, ``64MB``, ``1GB``; 1024-based, case-insensitive).
The status endpoints answer with the same JSON (Patroni's member status: ``state``, ``role``,
``timeline``, ``xlog`` ... plus pgraft's ``node_id``, ``epoch``, ``lease_valid``).

Methods: GET; HEAD (headers only); OPTIONS (what HAProxy's ``option httpchk`` sends by
default: the status of GET, no body). HTTP/1.0 and 1.1 with keep-alive.

Bounds (docs/design.md rule 7): a request's line and headers at most ``max_request_bytes``
(431 and close), a request body at most as much (413), each request head complete within
``idle_timeout`` of the connection's previous answer (else closed: no slowloris), at most
``max_connections`` connections (the rest get 503 and are closed). Writes to a client that
does not read pause the reading of its connection. The health source is called once per
request; an exception there is a 503, never a dead server.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import re
import socket
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from ..auth import RateLimitedLog
from .health import HealthSource, HealthView
from .promexport import MetricsExporter
from .types import PG_PRIMARY, PG_REPLICA, PG_UNKNOWN, format_lsn

log = logging.getLogger("pgraft.http")

#: Path -> endpoint kind.
ROUTES: dict[str, str] = {
    "/": "primary", "/primary": "primary", "/master": "primary", "/leader": "primary",
    "/replica": "replica",
    "/read-only": "read-only", "/readiness": "read-only",
    "/health": "health", "/liveness": "health",
    "/cluster": "cluster",
    "/metrics": "metrics",
}
ENDPOINTS = ("/primary", "/master", "/leader", "/replica", "/read-only", "/readiness",
             "/health", "/liveness", "/cluster", "/metrics")
METHODS = ("GET", "HEAD", "OPTIONS")
ALLOW = ", ".join(METHODS)

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(r"HTTP/(\d)\.(\d)")
_SIZE = re.compile(r"\s*(\d{1,20}(?:\.\d{0,20})?|\.\d{1,20})\s*([A-Za-z]*)\s*")
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}

#: Longest wait for a client's FIN after the last answer (then the connection is dropped).
LINGER_SECONDS = 2.0

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"


# ----------------------------------------------------------------------------- what it says
def parse_size(text: str) -> int:
    """``"16MB"`` -> 16777216: bytes, or a number with B, kB, MB, GB or TB (1024-based,
    case-insensitive; Patroni's ``parse_int(value, 'B')``). ValueError says why not."""
    m = _SIZE.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _SIZE_UNITS:
        raise ValueError(f"lag={text!r} is not a size: give bytes or a number with B, kB, MB, "
                         "GB or TB (e.g. lag=16MB)")
    return int(round(float(m.group(1)) * _SIZE_UNITS[unit]))


def is_primary(view: HealthView) -> bool:
    """The node may take writes: its PostgreSQL is primary and it holds the lease."""
    return (view.running and view.ha_mode and view.pg.role == PG_PRIMARY
            and view.lease_valid)


def is_replica(view: HealthView, max_lag: int | None = None) -> bool:
    """A streaming replica, at most ``max_lag`` bytes behind when given (unknown lag fails)."""
    pg = view.pg
    if not (view.running and view.ha_mode and pg.role == PG_REPLICA and pg.streaming):
        return False
    if max_lag is None:
        return True
    lag = pg.lag_bytes
    return lag is not None and lag <= max_lag


def member_status(view: HealthView) -> dict[str, Any]:
    """The body of every status endpoint: Patroni's member status, plus pgraft's fields."""
    pg = view.pg
    role = pg.role if view.ha_mode else PG_UNKNOWN
    body: dict[str, Any] = {
        "state": "running" if view.running else "stopped",
        "role": role,
        "timeline": pg.timeline,
        "epoch": view.epoch,
        "node_id": view.node_id,
        "primary_id": view.primary_id,
        "lease_valid": view.lease_valid,
        "ha_mode": view.ha_mode,
        "raft": {"role": view.raft_role, "term": view.raft_term, "leader": view.raft_leader},
    }
    # Patroni's "xlog" (integers), which some scripts read.
    if role == PG_PRIMARY:
        body["xlog"] = {"location": pg.received_lsn}
    elif role == PG_REPLICA:
        body["xlog"] = {"received_location": pg.received_lsn,
                        "replayed_location": pg.replayed_lsn}
        body["streaming"] = pg.streaming
        body["lag_bytes"] = pg.lag_bytes
    return body


def cluster_status(view: HealthView) -> dict[str, Any]:
    """The ``/cluster`` body."""
    pg = view.pg
    return {
        "node_id": view.node_id,
        "state": "running" if view.running else "stopped",
        "ha_mode": view.ha_mode,
        "members": view.members,
        "raft": {"role": view.raft_role, "term": view.raft_term, "leader": view.raft_leader,
                 "commit_index": view.commit_index, "applied_index": view.applied_index},
        "postgres": {"role": pg.role if view.ha_mode else PG_UNKNOWN,
                     "timeline": pg.timeline,
                     "received_lsn": format_lsn(pg.received_lsn),
                     "replayed_lsn": format_lsn(pg.replayed_lsn),
                     "lag_bytes": pg.lag_bytes, "streaming": pg.streaming,
                     "upstream_node": pg.upstream_node, "error": pg.error},
        "lease": {"valid": view.lease_valid, "remaining_ms": view.lease_remaining_ms,
                  "epoch": view.epoch, "primary_id": view.primary_id},
        "failovers": view.failovers,
    }


# ----------------------------------------------------------------------------- requests
@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    version: tuple[int, int]
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = TEXT_TYPE
    close: bool = False
    allow: bool = False  # send an Allow header (OPTIONS, 405)


class BadRequest(Exception):
    """A request that cannot be answered normally; ``status`` says how it is refused."""

    def __init__(self, status: int, message: str, *, close: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


def text(status: int, message: str, *, close: bool = False) -> Response:
    return Response(status, (message.replace("\n", " ") + "\n").encode(), TEXT_TYPE, close)


def parse_head(head: bytes, max_body: int) -> tuple[Request, int]:
    """The request line and headers (without the blank line) -> (request, body length)."""
    lines = head.decode("latin-1").split("\n")
    parts = lines[0].rstrip("\r").split()
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line: expected 'METHOD /path HTTP/1.1'")
    method, target, version_text = parts
    if not _TOKEN.fullmatch(method):
        raise BadRequest(400, "malformed request line: the method is not a token")
    vm = _VERSION.fullmatch(version_text)
    if vm is None:
        raise BadRequest(400, f"malformed request line: {version_text[:20]!r} is not an HTTP "
                              "version (HTTP/1.0 or HTTP/1.1)")
    version = (int(vm.group(1)), int(vm.group(2)))
    if version[0] != 1:
        raise BadRequest(505, f"HTTP/{version[0]}.{version[1]} is not supported: use HTTP/1.1")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        line = raw.rstrip("\r")
        if line[:1] in (" ", "\t"):
            raise BadRequest(400, "malformed header: folded header lines are not accepted")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise BadRequest(400, f"malformed header line {line[:40]!r}: expected 'Name: value'")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if "transfer-encoding" in headers:
        raise BadRequest(400, "request bodies with Transfer-Encoding are not accepted")
    length = 0
    if "content-length" in headers:
        values = {v.strip() for v in headers["content-length"].split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise BadRequest(400, "malformed Content-Length header")
        length = int(values.pop())
        if length > max_body:
            raise BadRequest(413, f"request body of {length} bytes is over the limit of "
                                  f"{max_body} bytes (these endpoints take no body)")
    if target.startswith(("http://", "https://")):  # absolute form (through a proxy)
        split = urlsplit(target)
        path, query = split.path or "/", split.query
    elif target.startswith("/"):
        path, _, query = target.partition("?")
        path = path.partition("#")[0]
    else:
        raise BadRequest(400, f"malformed request target {target[:40]!r}: expected a path "
                              "such as /primary")
    request = Request(method, path, parse_qs(query, keep_blank_values=True), version, headers)
    return request, length


# ----------------------------------------------------------------------------- the server
class HttpServer:
    """The HTTP endpoints of one node, on plain asyncio (uvloop when the node runs on it)."""

    def __init__(self, host: str, port: int, source: HealthSource, *,
                 loop: asyncio.AbstractEventLoop | None = None, max_request_bytes: int = 8192,
                 idle_timeout: float = 10.0, max_connections: int = 256) -> None:
        self.host = host
        self._port = port
        self.source = source
        self.max_request_bytes = max_request_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._loop = loop
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._admitted = 0  # connections within max_connections (the rest are refused)
        self._exporter = MetricsExporter()
        self.rlog = RateLimitedLog(log)

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when 0 was given)."""
        return self._port

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def start(self) -> None:
        server = await self.loop.create_server(lambda: _Connection(self), self.host,
                                               self._port, reuse_address=True, backlog=128)
        self._server = server
        if self._port == 0:
            self._port = server.sockets[0].getsockname()[1]
        log.info("HTTP endpoints on %s:%d", self.host or "*", self._port)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for conn in list(self._connections):
            conn.abort()
        await server.wait_closed()

    # ------------------------------------------------------------ answering
    def answer(self, request: Request) -> Response:
        """The response to one parsed request (never raises)."""
        try:
            return self._answer(request)
        except Exception as exc:  # a bug here must not kill the connection handling
            log.exception("HTTP %s %s failed", request.method, request.path)
            return text(500, f"internal error: {type(exc).__name__}: {exc}")

    def _answer(self, request: Request) -> Response:
        if request.method not in METHODS:
            resp = text(405, f"method {request.method} is not allowed: use {ALLOW}")
            resp.allow = True
            return resp
        kind = ROUTES.get(request.path)
        if kind is None:
            return text(404, f"no endpoint {request.path[:60]}; endpoints: "
                             + " ".join(ENDPOINTS))
        max_lag: int | None = None
        if kind in ("replica", "read-only") and "lag" in request.query:
            try:
                max_lag = parse_size(request.query["lag"][0])
            except ValueError as exc:
                return text(400, str(exc))
        try:
            view = self.source()
        except Exception as exc:
            self.rlog.warning("health source", "HTTP %s: the health source failed: %s: %s",
                              request.path, type(exc).__name__, exc)
            log.debug("health source failure", exc_info=True)
            return text(503, f"node status unavailable: {type(exc).__name__}: {exc}")
        if kind == "metrics":
            body, ctype = self._exporter.render(view, request.headers.get("accept"))
            return Response(200, body, ctype)
        if kind == "cluster":
            return _json(200, cluster_status(view))
        if kind == "primary":
            ok = is_primary(view)
        elif kind == "replica":
            ok = is_replica(view, max_lag)
        elif kind == "read-only":
            ok = is_primary(view) or is_replica(view, max_lag)
        else:  # health
            ok = view.running
        return _json(200 if ok else 503, member_status(view))

    def encode(self, request: Request | None, resp: Response, keep_alive: bool) -> bytes:
        """Status line, headers and (except for HEAD and OPTIONS) the body."""
        method = request.method if request is not None else "GET"
        body = resp.body
        # HEAD announces the length GET would send; OPTIONS sends none (the client would
        # wait for a body otherwise).
        length = 0 if method == "OPTIONS" else len(body)
        lines = [
            f"HTTP/1.1 {resp.status} {HTTPStatus(resp.status).phrase}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            "Server: pgraft",
            "Cache-Control: no-store",
            f"Content-Type: {resp.content_type}",
            f"Content-Length: {length}",
        ]
        if resp.allow or method == "OPTIONS":
            lines.append(f"Allow: {ALLOW}")
        if not keep_alive:
            lines.append("Connection: close")
        elif request is not None and request.version < (1, 1):
            lines.append("Connection: keep-alive")
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if method in ("HEAD", "OPTIONS"):
            return out
        return out + body


def _json(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj, default=str).encode(), JSON_TYPE)


class _Connection(asyncio.Protocol):
    """One client connection: requests are answered in order, synchronously, as they come
    complete (the health source does not block), so pipelined requests need no queue."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.discard = 0         # body bytes of the last request still to skip
        self.paused = False      # the client does not read our answers
        self.closing = False
        self.admitted = False
        self.timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast: uvloop's transports are not asyncio.Transport subclasses
        self.transport = transport = cast(asyncio.Transport, transport)
        server = self.server
        server._connections.add(self)
        if server._admitted >= server.max_connections:
            server.rlog.warning("http connections", "HTTP: %d connections open, the limit; "
                                "refusing a new one", server.max_connections)
            self._send(None, text(503, f"too many connections (limit "
                                       f"{server.max_connections})", close=True), False)
            return
        self.admitted = True
        server._admitted += 1
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # one write per answer: no Nagle delay
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server._connections.discard(self)
        if self.admitted:
            self.admitted = False
            self.server._admitted -= 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def data_received(self, data: bytes) -> None:
        if self.closing:  # lingering after the last answer: what the client still sends
            return
        self.buf += data
        self._process()

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
            self._process()

    # ------------------------------------------------------------ requests
    def _process(self) -> None:
        server = self.server
        limit = server.max_request_bytes
        answered = False
        while not self.closing and not self.paused:
            if self.discard:
                n = min(self.discard, len(self.buf))
                del self.buf[:n]
                self.discard -= n
                if self.discard:
                    break
            # RFC 9112 2.2: empty lines before a request line are ignored.
            while self.buf[:1] in (b"\r", b"\n"):
                del self.buf[:1]
            m = _HEAD_END.search(self.buf)
            if m is None:
                if len(self.buf) > limit:
                    self._refuse(431, f"request line and headers over {limit} bytes")
                break
            if m.start() > limit:
                self._refuse(431, f"request line and headers over {limit} bytes")
                break
            head = bytes(self.buf[:m.start()])
            del self.buf[:m.end()]
            answered = True
            try:
                request, self.discard = parse_head(head, limit)
            except BadRequest as exc:
                self._send(None, text(exc.status, exc.message, close=exc.close),
                           not exc.close)
                continue
            resp = server.answer(request)
            self._send(request, resp, request.keep_alive and not resp.close)
        if answered and not self.closing:
            self._arm_timer()

    def _refuse(self, status: int, message: str) -> None:
        self._send(None, text(status, message, close=True), False)

    def _send(self, request: Request | None, resp: Response, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        transport.write(self.server.encode(request, resp, keep_alive))
        if not keep_alive:
            self._linger()

    def _linger(self) -> None:
        """Close after the last answer without losing it: a close while the client still
        sends (an oversized head, a request sent on a refused connection) makes the kernel
        reset the connection, and the client may never read the answer. So: send FIN, drop
        what still comes, close at the client's FIN or after a short while (Apache's and
        nginx's lingering close)."""
        transport = self.transport
        assert transport is not None
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.timer = self.server.loop.call_later(min(self.server.idle_timeout, LINGER_SECONDS),
                                                 self._end_linger)

    def _end_linger(self) -> None:
        self.timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size():
            transport.abort()  # the client does not even read its answer
        else:
            transport.close()

    # ------------------------------------------------------------ idle connections
    def _arm_timer(self) -> None:
        """Each request head must be complete within idle_timeout of the connection's start
        or of its previous answer; partial data does not extend it."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.server.loop.call_later(self.server.idle_timeout, self._idle)

    def _idle(self) -> None:
        self.timer = None
        if self.closing or self.transport is None:
            return
        if self.paused:  # the client stopped reading: nothing more can be said
            self.abort()
        elif self.buf.strip(b"\r\n") or self.discard:
            self._refuse(408, f"request not complete within {self.server.idle_timeout:g} s")
        else:
            self.closing = True
            self.transport.close()

    def eof_received(self) -> bool:
        return False  # the client is done: close (also ends a lingering close)

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
