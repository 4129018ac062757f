"""The pgraft client: ``await pgraft.connect(...)`` and its synchronous twin ``pgraft.Client``.

Both speak the client side of ``docs/protocol.md`` to one node, over TCP (``"host:port"``) or
over the node's Unix socket (``<data-dir>/node.sock``, or the data directory itself)::

    async with await pgraft.connect("127.0.0.1:7001") as c:
        index = await c.append(b"payload")
        await c.add_node(4, "127.0.0.1", 7004)

    with pgraft.Client("/var/lib/pgraft/node.sock") as c:
        print(c.get_nodes())

Many calls may be in flight on one connection: each request carries an id, one protocol object
reads the connection and resolves the waiting futures. Every call takes ``timeout=`` (seconds);
the node is told the same timeout and answers :class:`~pgraft.errors.Timeout` when it passes,
and the client gives up on its own shortly after, so a stopped node never hangs a caller.
Arguments are validated before anything is sent (:class:`~pgraft.errors.InvalidArgument`);
errors raised by the node are rebuilt with :func:`pgraft.errors.from_wire`, so a write on a
follower raises :class:`~pgraft.errors.NotLeaderError` with ``leader_id``/``leader_address``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import signal
import socket
import ssl
import struct
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, TypeVar

from .deadlines import DeadlineWheel
from .errors import (
    CommitTimeout,
    ConnectionFailed,
    InvalidArgument,
    OutcomeUnknown,
    PayloadTooLarge,
    PgraftError,
    ProtocolError,
    Timeout,
    from_wire,
)
from .validate import check_address

#: Requests that propose a log entry: failing without an answer leaves their outcome unknown.
WRITE_OPS = frozenset(("append", "kv_put", "kv_delete", "add_node", "remove_node"))

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_FRAME_SIZE",
    "AsyncClient",
    "Client",
    "Node",
    "Target",
    "connect",
    "parse_target",
]

_FRAME_HEAD = struct.Struct("<IB")
#: Granularity (seconds) of the client's own call deadlines.
_DEADLINE_RESOLUTION = 0.02
#: Default timeout of a call and of connecting, in seconds.
DEFAULT_TIMEOUT = 10.0
#: Largest frame the client sends or accepts (the node's default cap, docs/protocol.md).
MAX_FRAME_SIZE = 64 * 1024 * 1024
#: Highest node id / log index the wire format carries.
MAX_ID = 2**63 - 1
PROTOCOL_VERSION = 1
SOCKET_NAME = "node.sock"

_T = TypeVar("_T")
_TARGET_HINT = ("give HOST:PORT (for example 127.0.0.1:7001) or the path of a node's Unix "
                "socket (<data-dir>/node.sock)")


_packer: Any = None


def _encode_control(obj: Any) -> bytes:
    """A whole CONTROL frame (docs/protocol.md): u32 length, kind 2, msgpack body; one reused
    Packer (msgpack is imported on first use, like the frame codec)."""
    global _packer
    if _packer is None:
        import msgpack

        _packer = msgpack.Packer(use_bin_type=True)
    body = _packer.pack(obj)
    return _FRAME_HEAD.pack(len(body) + 1, 2) + body


def _codec() -> ModuleType:
    # Imported on first use so that ``import pgraft`` never depends on the frame codec.
    from ._impl import core

    return core


# ----------------------------------------------------------------------------- values
@dataclass(frozen=True, slots=True)
class Node:
    """One cluster member as a node sees it: ``role`` is ``'voter'`` or ``'learner'``."""

    node_id: int
    address: str
    port: int
    role: str
    is_leader: bool

    @property
    def endpoint(self) -> str:
        """``"address:port"`` (IPv6 addresses in brackets)."""
        return format_endpoint(self.address, self.port)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a node listens for clients: a TCP ``host``/``port`` or a Unix socket ``path``."""

    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        assert self.host is not None and self.port is not None
        return format_endpoint(self.host, self.port)


def format_endpoint(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ------------------------------------------------------------------------- validation
def check_node_id(node_id: Any, what: str = "node_id") -> int:
    """Return ``node_id`` if it is an int in 1..2**63-1, else raise InvalidArgument."""
    if isinstance(node_id, bool) or not isinstance(node_id, int):
        raise InvalidArgument(f"{what} must be an integer, got {type(node_id).__name__} "
                              f"{node_id!r}", hint="node ids are positive integers (1, 2, 3, ...)")
    if not 1 <= node_id <= MAX_ID:
        raise InvalidArgument(f"{what} must be at least 1, got {node_id}",
                              hint="node ids are positive integers (1, 2, 3, ...)")
    return node_id


def check_port(port: Any) -> int:
    """Return ``port`` if it is an int in 1..65535, else raise InvalidArgument."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidArgument(f"port must be an integer, got {type(port).__name__} {port!r}",
                              hint="use a TCP port number between 1 and 65535")
    if not 1 <= port <= 65535:
        raise InvalidArgument(f"port {port} is out of range",
                              hint="use a TCP port number between 1 and 65535")
    return port


def check_index(index: Any) -> int:
    """Return ``index`` if it is an int in 1..2**63-1, else raise InvalidArgument."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise InvalidArgument(f"index must be an integer, got {type(index).__name__} "
                              f"{index!r}", hint="log indexes start at 1")
    if not 1 <= index <= MAX_ID:
        raise InvalidArgument(f"index must be at least 1, got {index}",
                              hint="log indexes start at 1")
    return index


def check_key(key: Any) -> str:
    """Return ``key`` if it is a non-empty str, else raise InvalidArgument."""
    if not isinstance(key, str):
        raise InvalidArgument(f"key must be a str, got {type(key).__name__}",
                              hint="KV keys and values are text; decode bytes first")
    if not key:
        raise InvalidArgument("key must not be empty", hint="use a non-empty text key")
    return key


def check_value(value: Any) -> str:
    """Return ``value`` if it is a str, else raise InvalidArgument."""
    if not isinstance(value, str):
        raise InvalidArgument(f"value must be a str, got {type(value).__name__}",
                              hint="KV keys and values are text; decode bytes or serialize "
                                   "the value (e.g. json.dumps) first")
    return value


def check_data(data: Any) -> bytes:
    """Return ``data`` as bytes if it is bytes-like, else raise InvalidArgument."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    hint = "encode text first, e.g. data.encode()" if isinstance(data, str) else \
        "pass the payload as bytes"
    raise InvalidArgument(f"data must be bytes, got {type(data).__name__}", hint=hint)


def check_timeout(timeout: Any) -> float:
    """Return ``timeout`` as a float if it is a finite number > 0, else raise InvalidArgument."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidArgument(f"timeout must be a number of seconds, got "
                              f"{type(timeout).__name__} {timeout!r}",
                              hint="pass e.g. timeout=5.0")
    value = float(timeout)
    if not (value > 0 and math.isfinite(value)):
        raise InvalidArgument(f"timeout must be a positive, finite number of seconds, got "
                              f"{timeout!r}", hint="pass e.g. timeout=5.0")
    return value


def parse_target(target: Any) -> Target:
    """Parse ``"host:port"``, ``"[v6]:port"``, a Unix socket path or a data directory.

    A value containing ``/`` (or a :class:`os.PathLike`) is a path; when it names a
    directory, the node's socket ``node.sock`` inside it is meant.
    """
    if isinstance(target, Target):
        return target
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str):
        raise InvalidArgument(f"node target must be a str, got {type(target).__name__}",
                              hint=_TARGET_HINT)
    if not target:
        raise InvalidArgument("node target is empty", hint=_TARGET_HINT)
    if "/" in target or target.startswith((".", "~")):
        path = os.path.expanduser(target)
        if os.path.isdir(path):
            path = os.path.join(path, SOCKET_NAME)
        return Target(path=path)
    host, sep, port_text = target.rpartition(":")
    if not sep or not host:
        raise InvalidArgument(f"cannot parse node target {target!r}: no port", hint=_TARGET_HINT)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InvalidArgument(f"cannot parse node target {target!r}",
                              hint="write IPv6 addresses in brackets: [::1]:7001")
    if not port_text.isdigit():
        raise InvalidArgument(f"cannot parse node target {target!r}: port {port_text!r} is "
                              "not a number", hint=_TARGET_HINT)
    try:
        check_address(host)
    except InvalidArgument as exc:
        raise InvalidArgument(f"cannot parse node target {target!r}: {exc.message}",
                              hint=_TARGET_HINT) from None
    return Target(host=host, port=check_port(int(port_text)))


@dataclass(frozen=True, slots=True)
class _Security:
    """What a client proves and checks (README: Security): the cluster secret, TLS."""

    secret: bytes | None
    ssl: ssl.SSLContext | None
    server_hostname: str | None = None


def _load_security(secret_file: str | os.PathLike[str] | None,
                   tls_ca: str | os.PathLike[str] | None,
                   tls_cert: str | os.PathLike[str] | None,
                   tls_key: str | os.PathLike[str] | None) -> _Security | None:
    if secret_file is None and tls_ca is None and tls_cert is None and tls_key is None:
        return None
    secret = None
    if secret_file is not None:
        from .auth import load_secret

        secret = load_secret(os.fspath(secret_file))
    ctx = None
    if tls_ca is not None:
        from .tls import client_context

        ctx = client_context(os.fspath(tls_ca), os.fspath(tls_cert) if tls_cert else None,
                             os.fspath(tls_key) if tls_key else None)
    elif tls_cert is not None or tls_key is not None:
        raise InvalidArgument("a TLS client certificate needs tls_ca= too",
                              hint="give the CA that signed the node's certificate")
    return _Security(secret, ctx)


# ------------------------------------------------------------------------ the protocol
class _Protocol(asyncio.Protocol):
    """Feeds bytes from the transport to its client; keeps write flow control."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self.paused = False
        self.drain_waiters: deque[asyncio.Future[None]] = deque()

    def data_received(self, data: bytes) -> None:
        self._client._on_data(data)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        self._wake_writers()
        self._client._on_lost(exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_writers()

    def _wake_writers(self) -> None:
        while self.drain_waiters:
            waiter = self.drain_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


class AsyncClient:
    """A connection to one pgraft node (asyncio). Create it with :func:`connect`.

    All methods are coroutines taking ``timeout=`` in seconds (default: the ``timeout``
    given to :func:`connect`). Calls may run concurrently on one client.
    """

    def __init__(self, target: Target, timeout: float, *, display: str | None = None,
                 security: _Security | None = None) -> None:
        self._target = target
        self._security = security
        self._display = display if display is not None else str(target)
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._protocol = _Protocol(self)
        self._decoder: Any = None
        self._hello: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        #: Request ids of the writes in ``_pending``: when they fail without an answer their
        #: outcome is unknown (OutcomeUnknown), which is not true of reads.
        self._write_rids: set[int] = set()
        self._next_id = 1
        self._failure: Callable[[], PgraftError] | None = None
        self._closing = False
        self._batch: list[bytes] | None = None
        # Calls are expired by one timer (a timer per call costs more than the rest of a
        # pipelined call); answered calls are skipped by _expire.
        self._deadlines: DeadlineWheel[tuple[int, str, float]] = DeadlineWheel(
            self._loop, _DEADLINE_RESOLUTION, lambda call: self._expire(*call))
        self._auth: Any = None  # pgraft.auth.ClientAuth until the node's challenge
        self.node_id: int | None = None
        """Id of the node this client is connected to (from the handshake)."""

    # ------------------------------------------------------------------ connection
    @property
    def target(self) -> str:
        """The node this client talks to, as given (``host:port`` or a socket path)."""
        return self._display

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by :meth:`close`, the node, or an error)."""
        return self._failure is not None

    @property
    def in_flight(self) -> int:
        """Number of calls waiting for their answer."""
        return len(self._pending)

    async def _open(self, timeout: float) -> None:
        core = _codec()
        self._decoder = core.FrameDecoder(MAX_FRAME_SIZE)
        try:
            async with asyncio.timeout(timeout):
                await self._dial()
                hello_msg: dict[str, Any] = {"hello": "client", "version": PROTOCOL_VERSION}
                security = self._security
                if security is not None and security.secret is not None:
                    from .auth import ClientAuth

                    self._auth = ClientAuth(security.secret, "client")
                    hello_msg.update(self._auth.hello_fields())
                self._write(core.encode_control(hello_msg))
                hello = await self._hello
        except TimeoutError:
            self._abort(lambda: ConnectionFailed(f"connecting to node {self.target} was "
                                                 "closed by the client"))
            raise ConnectionFailed(
                f"cannot connect to pgraft node at {self.target}: no answer within "
                f"{timeout:g}s",
                hint="the node may be stopped, paused or overloaded, or a firewall drops the "
                     "packets; check that `pgraft serve` runs there") from None
        except BaseException:
            self._abort(lambda: ConnectionFailed(f"connection to node {self.target} was "
                                                 "abandoned while connecting"))
            raise
        self.node_id = hello.get("node_id")

    async def _dial(self) -> None:
        target = self._target
        try:
            security = self._security
            if target.path is not None:
                transport, _ = await self._loop.create_unix_connection(
                    lambda: self._protocol, target.path)
            elif security is not None and security.ssl is not None:
                assert target.host is not None and target.port is not None
                transport, _ = await self._loop.create_connection(
                    lambda: self._protocol, target.host, target.port, ssl=security.ssl,
                    server_hostname=security.server_hostname or target.host)
            else:
                assert target.host is not None and target.port is not None
                transport, _ = await self._loop.create_connection(
                    lambda: self._protocol, target.host, target.port)
        except FileNotFoundError:
            raise ConnectionFailed(
                f"cannot connect to pgraft node: socket {target.path} does not exist",
                hint="is the node running with that --data-dir? its socket is "
                     "<data-dir>/node.sock") from None
        except PermissionError:
            raise ConnectionFailed(
                f"cannot connect to pgraft node at {target}: permission denied",
                hint="the socket belongs to the node's OS user; run as that user or "
                     "connect over TCP") from None
        except ssl.SSLError as exc:
            from .tls import describe_ssl_error

            raise ConnectionFailed(
                f"cannot connect to pgraft node at {target}: {describe_ssl_error(exc)}",
                hint="check tls_ca= (the CA that signed the node's certificate) and that the "
                     "certificate names the address you connect to") from None
        except ConnectionRefusedError:
            raise ConnectionFailed(
                f"cannot connect to pgraft node at {target}: connection refused",
                hint="is `pgraft serve` running there? check the address and port "
                     "(default 127.0.0.1:7001, or set PGRAFT_NODE)") from None
        except socket.gaierror as exc:
            raise ConnectionFailed(
                f"cannot connect to pgraft node at {target}: cannot resolve host "
                f"{target.host!r} ({exc.strerror})",
                hint="check the host name, or use an IP address") from None
        except OSError as exc:
            raise ConnectionFailed(
                f"cannot connect to pgraft node at {target}: "
                f"{exc.strerror or exc.__class__.__name__}",
                hint="check that the node is running and reachable from here") from None
        self._transport = transport  # type: ignore[assignment]
        if target.path is None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        """Close the connection. Calls still in flight fail with ConnectionFailed."""
        if self._failure is None:
            self._closing = True
            self._fail_all(lambda: ConnectionFailed(
                f"the client closed its connection to node {self.target} while the call was "
                "in flight; its outcome is unknown",
                hint="keep the client open until every call has returned"))
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            # Let connection_lost run so that nothing refers to the socket afterwards.
            await asyncio.sleep(0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._pending)} in flight"
        return f"<pgraft.AsyncClient node {self.node_id} at {self.target}, {state}>"

    # -------------------------------------------------------------- incoming data
    def _on_data(self, data: bytes) -> None:
        try:
            objs = self._decoder.feed(data)
        except PgraftError as exc:
            reason = exc.message
            self._abort(lambda: ProtocolError(
                f"node {self.target} sent a malformed frame ({reason}); the connection was "
                "dropped and the outcome of calls in flight is unknown",
                hint="is that address a pgraft node of a compatible version?"))
            return
        for obj in objs:
            if self._failure is not None:
                return
            if not self._hello.done():
                self._on_hello(obj)
            else:
                self._on_response(obj)

    def _on_hello(self, obj: Any) -> None:
        auth = self._auth
        if auth is not None and not (isinstance(obj, dict) and obj.get("hello") == "error"):
            # The node's challenge (README: Security): check its proof, answer with ours.
            self._auth = None
            try:
                proof = auth.answer(obj)
            except PgraftError as exc:
                refused = exc
                self._abort(lambda: refused)
                return
            self._write(_encode_control(proof))
            return
        if not isinstance(obj, dict) or obj.get("hello") not in ("ok", "error"):
            self._abort(lambda: ProtocolError(
                f"{self.target} did not answer the pgraft handshake",
                hint="is that address a pgraft node (and not e.g. PostgreSQL's port)?"))
            return
        if obj["hello"] == "error":
            err = obj.get("error")
            wire = err if isinstance(err, dict) else {"message": str(err)}
            self._abort(lambda: from_wire(wire))
            return
        if obj.get("version") != PROTOCOL_VERSION:
            version = obj.get("version")
            self._abort(lambda: ProtocolError(
                f"node {self.target} speaks protocol version {version!r}, this client "
                f"speaks {PROTOCOL_VERSION}", hint="use the same pgraft version on both sides"))
            return
        self._hello.set_result(obj)

    def _on_response(self, obj: Any) -> None:
        rid = obj.get("id") if isinstance(obj, dict) else None
        if isinstance(rid, bool) or not isinstance(rid, int) or not isinstance(obj.get("ok"),
                                                                               bool):
            shown = repr(obj)[:80]
            self._abort(lambda: ProtocolError(
                f"node {self.target} sent a response that is not a pgraft response: {shown}; "
                "the connection was dropped", hint="use the same pgraft version on both sides"))
            return
        fut = self._pending.pop(rid, None)
        if fut is None or fut.done():
            return  # an answer to a call that timed out or was cancelled here
        if obj["ok"]:
            fut.set_result(obj.get("result"))
            return
        err = obj.get("error")
        if not isinstance(err, dict):
            err = {"code": "protocol_error", "message": f"node {self.target} sent a failed "
                   f"response without an error: {err!r}"}
        fut.set_exception(from_wire(err))

    def _on_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._failure is not None:
            return
        reason = f" ({exc})" if exc else ""
        target = self.target

        def failure() -> PgraftError:
            return ConnectionFailed(
                f"connection to pgraft node at {target} was closed by the node{reason}; the "
                "outcome of calls in flight is unknown",
                hint="the node may have stopped or restarted; check it with `pgraft status` "
                     "and retry on a new connection")

        self._fail_all(failure)

    # ------------------------------------------------------------------ failures
    def _fail_all(self, failure: Callable[[], PgraftError]) -> None:
        self._failure = failure
        self._deadlines.close()
        if not self._hello.done():
            self._hello.set_exception(failure())
            self._hello.exception()  # whoever awaits it still gets it; nobody else must
        pending, self._pending = self._pending, {}
        writes, self._write_rids = self._write_rids, set()
        for rid, fut in pending.items():
            if not fut.done():
                err = failure()
                if rid in writes:
                    err = OutcomeUnknown(
                        f"{err.message}; the write was sent, so it may have taken effect",
                        hint="read the state back (pgraft_kv_get, pgraft_get_nodes, the log) "
                             "before retrying the write")
                fut.set_exception(err)

    def _abort(self, failure: Callable[[], PgraftError]) -> None:
        if self._failure is None:
            self._fail_all(failure)
        if self._transport is not None:
            self._transport.abort()
            self._transport = None

    def _write(self, frame: bytes) -> None:
        assert self._transport is not None
        self._transport.write(frame)

    def _send(self, frame: bytes) -> None:
        """Write a request: the first one of an event-loop iteration at once, the ones that
        follow it in the same iteration together in one ``writelines`` when it ends."""
        transport = self._transport
        if transport is None:
            failure = self._failure
            raise failure() if failure is not None else ConnectionFailed(
                f"the connection to node {self.target} is closed")
        batch = self._batch
        if batch is None:
            transport.write(frame)
            self._batch = []
            self._loop.call_soon(self._flush_batch)
        else:
            batch.append(frame)

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch and self._transport is not None:
            self._transport.writelines(batch)

    # ---------------------------------------------------------------------- calls
    async def _call(self, op: str, args: dict[str, Any], timeout: float | None) -> Any:
        limit = self._timeout if timeout is None else check_timeout(timeout)
        if self._failure is not None:
            raise self._failure()
        rid = self._next_id
        self._next_id += 1
        args["timeout"] = limit
        frame = _encode_control({"id": rid, "op": op, "args": args})
        if len(frame) - 4 > MAX_FRAME_SIZE:
            raise PayloadTooLarge(f"{op} request of {len(frame)} bytes exceeds the frame limit "
                                  f"of {MAX_FRAME_SIZE} bytes", hint="send smaller payloads")
        fut: asyncio.Future[Any] = self._loop.create_future()
        pending = self._pending
        pending[rid] = fut
        write = op in WRITE_OPS
        if write:
            self._write_rids.add(rid)
        # The node answers Timeout itself at ``limit``; give its answer a moment to arrive.
        self._deadlines.add((rid, op, limit), limit + min(1.0, 0.05 + limit * 0.1))
        try:
            self._send(frame)
            if self._protocol.paused:
                waiter: asyncio.Future[None] = self._loop.create_future()
                self._protocol.drain_waiters.append(waiter)
                await waiter
            return await fut
        finally:
            pending.pop(rid, None)
            if write:
                self._write_rids.discard(rid)

    def _expire(self, rid: int, op: str, limit: float) -> None:
        fut = self._pending.pop(rid, None)
        if fut is not None and not fut.done():
            if op in WRITE_OPS:
                fut.set_exception(CommitTimeout(
                    f"{op} got no answer from node {self.target} within {limit:g}s; its "
                    "outcome is unknown (it may still take effect)",
                    hint="check the node with `pgraft status` and read the state back before "
                         "retrying"))
            else:
                fut.set_exception(Timeout(
                    f"{op} got no answer from node {self.target} within {limit:g}s",
                    hint="check the node with `pgraft status`; retry with a larger timeout "
                         "if the cluster is healthy"))

    # ------------------------------------------------------------------ log
    async def append(self, data: bytes, *, timeout: float | None = None) -> int:
        """Append ``data`` to the replicated log; return its index once committed and applied.

        Raises NotLeaderError on a follower, PayloadTooLarge past the node's limit.
        """
        return int(await self._call("append", {"data": check_data(data)}, timeout))

    async def get_entry(self, index: int, *,
                        timeout: float | None = None) -> dict[str, Any] | None:
        """The log entry at ``index`` as ``{"index", "term", "type", "data"}``, or None when it
        is absent or compacted into a snapshot."""
        result = await self._call("get_entry", {"index": check_index(index)}, timeout)
        return dict(result) if result is not None else None

    async def log_stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """``{first_index, last_index, commit_index, applied_index, snapshot_index,
        log_bytes}`` of the node's log."""
        return dict(await self._call("log_stats", {}, timeout))

    # ------------------------------------------------------------- membership
    async def add_node(self, node_id: int, address: str, port: int, *,
                       timeout: float | None = None) -> bool:
        """Add a node (as a learner; the leader promotes it to voter once caught up).

        Call it on the leader only: it returns True once the change is committed. Raises
        NotLeaderError on a follower, NodeExists for an id in use or used before,
        MembershipChangeInProgress while another change is pending.
        """
        args = {"node_id": check_node_id(node_id), "address": check_address(address),
                "port": check_port(port)}
        return bool(await self._call("add_node", args, timeout))

    async def remove_node(self, node_id: int, *, timeout: float | None = None) -> bool:
        """Remove a node; True once the change is committed. A removed leader steps down.

        Raises NotLeaderError on a follower, UnknownNode for an id that is not a member.
        """
        return bool(await self._call("remove_node", {"node_id": check_node_id(node_id)},
                                     timeout))

    async def get_nodes(self, *, timeout: float | None = None) -> list[Node]:
        """The members as this node sees them, ordered by node id."""
        result = await self._call("get_nodes", {}, timeout)
        try:
            nodes = [Node(node_id=int(n["node_id"]), address=str(n["address"]),
                          port=int(n["port"]), role=str(n["role"]),
                          is_leader=bool(n["is_leader"])) for n in result]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"node {self.target} sent a malformed member list ({exc!r})",
                                hint="use the same pgraft version on both sides") from None
        return sorted(nodes, key=lambda n: n.node_id)

    async def _leader(self, timeout: float | None) -> dict[str, Any]:
        result = await self._call("get_leader", {}, timeout)
        if not isinstance(result, dict):
            raise ProtocolError(f"node {self.target} sent a malformed get_leader answer: "
                                f"{result!r}")
        return result

    async def get_leader(self, *, timeout: float | None = None) -> int | None:
        """Id of the leader this node knows of, or None during an election."""
        leader = (await self._leader(timeout)).get("leader_id")
        return int(leader) if leader else None

    async def leader_address(self, *, timeout: float | None = None) -> str | None:
        """``"host:port"`` of the leader this node knows of, or None."""
        return (await self._leader(timeout)).get("address") or None

    async def leader_info(self, *, timeout: float | None = None) -> dict[str, Any]:
        """``{"leader_id": int or None, "address": "host:port" or None}`` in one call."""
        leader = await self._leader(timeout)
        leader_id = leader.get("leader_id")
        return {"leader_id": int(leader_id) if leader_id else None,
                "address": leader.get("address") or None}

    async def get_term(self, *, timeout: float | None = None) -> int:
        """This node's current Raft term."""
        return int(await self._call("get_term", {}, timeout))

    async def is_leader(self, *, timeout: float | None = None) -> bool:
        """Whether this node is the leader now."""
        return bool(await self._call("is_leader", {}, timeout))

    async def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The node's status: node_id, role, term, leader_id, commit/applied/first/last/
        snapshot index, log_bytes, num_nodes, per-peer progress and metrics."""
        return dict(await self._call("status", {}, timeout))

    async def transfer_leadership(self, node_id: int, *, timeout: float | None = None) -> bool:
        """Hand leadership to voter ``node_id``; True once it is leader. Call on the leader."""
        return bool(await self._call("transfer_leadership",
                                     {"node_id": check_node_id(node_id)}, timeout))

    # --------------------------------------------------------------------- KV
    async def kv_put(self, key: str, value: str, *, timeout: float | None = None) -> bool:
        """Set ``key`` to ``value``; True once committed. Call on the leader."""
        return bool(await self._call("kv_put", {"key": check_key(key),
                                                "value": check_value(value)}, timeout))

    async def kv_get(self, key: str, *, timeout: float | None = None) -> str | None:
        """The value of ``key`` or None (linearizable read through the leader's ReadIndex)."""
        result = await self._call("kv_get", {"key": check_key(key)}, timeout)
        return None if result is None else str(result)

    async def kv_delete(self, key: str, *, timeout: float | None = None) -> bool:
        """Delete ``key``; True if it existed. Call on the leader."""
        return bool(await self._call("kv_delete", {"key": check_key(key)}, timeout))

    async def kv_list_keys(self, *, timeout: float | None = None) -> list[str]:
        """All keys, sorted (linearizable)."""
        return [str(k) for k in await self._call("kv_list_keys", {}, timeout)]


async def connect(target: str | os.PathLike[str] | Target, *,
                  timeout: float = DEFAULT_TIMEOUT,
                  secret_file: str | os.PathLike[str] | None = None,
                  tls_ca: str | os.PathLike[str] | None = None,
                  tls_cert: str | os.PathLike[str] | None = None,
                  tls_key: str | os.PathLike[str] | None = None) -> AsyncClient:
    """Connect to a pgraft node and complete the client handshake.

    ``target`` is ``"host:port"`` (``"[::1]:7001"`` for IPv6), the path of a node's Unix socket,
    or its data directory. ``timeout`` bounds connecting and is the default of every call.
    ``secret_file``: prove the cluster secret (and require the node to prove it);
    ``tls_ca``: connect over TLS and verify the node's certificate (``tls_cert``/``tls_key``: a
    client certificate to present). See README: Security.
    Raises InvalidArgument for an unusable target or security file, ConnectionFailed when the
    node cannot be reached, AuthenticationFailed when either side fails to prove the secret.
    """
    limit = check_timeout(timeout)
    security = _load_security(secret_file, tls_ca, tls_cert, tls_key)
    client = AsyncClient(parse_target(target), limit, security=security)
    await client._open(limit)
    return client


# ------------------------------------------------------------------ synchronous twin
def _new_loop_uninterrupted() -> asyncio.AbstractEventLoop:
    """``asyncio.new_event_loop()`` with SIGINT/SIGTERM held for the microseconds it takes: a
    KeyboardInterrupt inside it leaves a half-built loop whose finalizer fails at exit. A
    signal that arrives meanwhile is delivered as soon as the loop exists."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        return asyncio.new_event_loop()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Client:
    """A synchronous pgraft client with the same methods as :class:`AsyncClient`.

    It runs a private event loop in the calling thread, starts no threads of its own (host
    names are resolved in the calling thread) and connects on first use; after the node has
    closed the connection, the next call connects again. It is cheap to create per call and
    may be kept for reuse. Do not call it from inside a running event loop (use
    :func:`connect` there). ``close()`` (or ``with``) releases the socket and the loop.
    """

    def __init__(self, target: str | os.PathLike[str] | Target, *,
                 timeout: float = DEFAULT_TIMEOUT,
                 secret_file: str | os.PathLike[str] | None = None,
                 tls_ca: str | os.PathLike[str] | None = None,
                 tls_cert: str | os.PathLike[str] | None = None,
                 tls_key: str | os.PathLike[str] | None = None) -> None:
        self._target = parse_target(target)
        self._timeout = check_timeout(timeout)
        self._security = _load_security(secret_file, tls_ca, tls_cert, tls_key)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: AsyncClient | None = None

    @property
    def target(self) -> str:
        """The node this client talks to (``host:port`` or a socket path)."""
        return str(self._target)

    @property
    def node_id(self) -> int | None:
        """Id of the connected node, or None before the first call."""
        return self._client.node_id if self._client is not None else None

    def _run(self, make: Callable[[], Coroutine[Any, Any, _T]], timeout: float | None) -> _T:
        if timeout is not None:
            check_timeout(timeout)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise PgraftError("pgraft.Client cannot be used inside a running event loop",
                              hint="use `await pgraft.connect(...)` in asynchronous code")
        if self._loop is None or self._loop.is_closed():
            self._loop = _new_loop_uninterrupted()
        loop = self._loop
        try:
            if self._client is None or self._client.closed:
                self._client = None
                self._client = loop.run_until_complete(self._connect())
            return loop.run_until_complete(make())
        except PgraftError:
            raise
        except BaseException:
            # Interrupted (KeyboardInterrupt, cancellation): the connection state is unknown.
            self._drop()
            raise

    async def _connect(self) -> AsyncClient:
        target = self._target
        security = self._security
        if target.host is not None:
            target = await self._resolve(target)
            if security is not None and security.ssl is not None:
                # The certificate names the host as given, not the address it resolved to.
                security = _Security(security.secret, security.ssl, self._target.host)
        client = AsyncClient(target, self._timeout, display=str(self._target),
                             security=security)
        await client._open(self._timeout)
        return client

    async def _resolve(self, target: Target) -> Target:
        # asyncio resolves host names in a thread pool; resolve here instead so the client
        # never starts a thread (it runs inside PostgreSQL backends).
        assert target.host is not None
        try:
            ipaddress.ip_address(target.host)
            return target
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConnectionFailed(
                f"cannot connect to pgraft node at {target}: cannot resolve host "
                f"{target.host!r} ({exc.strerror})",
                hint="check the host name, or use an IP address") from None
        return Target(host=str(infos[0][4][0]), port=target.port)

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None and client._transport is not None:
            client._abort(lambda: ConnectionFailed("the client was interrupted"))

    def close(self) -> None:
        """Close the connection and the private event loop. The client may be used again."""
        loop, self._loop = self._loop, None
        client, self._client = self._client, None
        if loop is None or loop.is_closed():
            return
        try:
            if client is not None and not loop.is_running():
                loop.run_until_complete(client.close())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def __del__(self) -> None:
        # A forgotten client still releases its socket and loop when it is collected.
        loop = getattr(self, "_loop", None)  # None also when __init__ raised
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                self.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pgraft.Client {self.target}>"

    # ---------------------------------------------------------- same methods
    def append(self, data: bytes, *, timeout: float | None = None) -> int:
        """See :meth:`AsyncClient.append`."""
        data = check_data(data)
        return self._run(lambda: self._c().append(data, timeout=timeout), timeout)

    def get_entry(self, index: int, *, timeout: float | None = None) -> dict[str, Any] | None:
        """See :meth:`AsyncClient.get_entry`."""
        check_index(index)
        return self._run(lambda: self._c().get_entry(index, timeout=timeout), timeout)

    def log_stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """See :meth:`AsyncClient.log_stats`."""
        return self._run(lambda: self._c().log_stats(timeout=timeout), timeout)

    def add_node(self, node_id: int, address: str, port: int, *,
                 timeout: float | None = None) -> bool:
        """See :meth:`AsyncClient.add_node`."""
        check_node_id(node_id)
        check_address(address)
        check_port(port)
        return self._run(lambda: self._c().add_node(node_id, address, port, timeout=timeout),
                         timeout)

    def remove_node(self, node_id: int, *, timeout: float | None = None) -> bool:
        """See :meth:`AsyncClient.remove_node`."""
        check_node_id(node_id)
        return self._run(lambda: self._c().remove_node(node_id, timeout=timeout), timeout)

    def get_nodes(self, *, timeout: float | None = None) -> list[Node]:
        """See :meth:`AsyncClient.get_nodes`."""
        return self._run(lambda: self._c().get_nodes(timeout=timeout), timeout)

    def get_leader(self, *, timeout: float | None = None) -> int | None:
        """See :meth:`AsyncClient.get_leader`."""
        return self._run(lambda: self._c().get_leader(timeout=timeout), timeout)

    def leader_address(self, *, timeout: float | None = None) -> str | None:
        """See :meth:`AsyncClient.leader_address`."""
        return self._run(lambda: self._c().leader_address(timeout=timeout), timeout)

    def leader_info(self, *, timeout: float | None = None) -> dict[str, Any]:
        """See :meth:`AsyncClient.leader_info`."""
        return self._run(lambda: self._c().leader_info(timeout=timeout), timeout)

    def get_term(self, *, timeout: float | None = None) -> int:
        """See :meth:`AsyncClient.get_term`."""
        return self._run(lambda: self._c().get_term(timeout=timeout), timeout)

    def is_leader(self, *, timeout: float | None = None) -> bool:
        """See :meth:`AsyncClient.is_leader`."""
        return self._run(lambda: self._c().is_leader(timeout=timeout), timeout)

    def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        """See :meth:`AsyncClient.status`."""
        return self._run(lambda: self._c().status(timeout=timeout), timeout)

    def transfer_leadership(self, node_id: int, *, timeout: float | None = None) -> bool:
        """See :meth:`AsyncClient.transfer_leadership`."""
        check_node_id(node_id)
        return self._run(lambda: self._c().transfer_leadership(node_id, timeout=timeout),
                         timeout)

    def kv_put(self, key: str, value: str, *, timeout: float | None = None) -> bool:
        """See :meth:`AsyncClient.kv_put`."""
        check_key(key)
        check_value(value)
        return self._run(lambda: self._c().kv_put(key, value, timeout=timeout), timeout)

    def kv_get(self, key: str, *, timeout: float | None = None) -> str | None:
        """See :meth:`AsyncClient.kv_get`."""
        check_key(key)
        return self._run(lambda: self._c().kv_get(key, timeout=timeout), timeout)

    def kv_delete(self, key: str, *, timeout: float | None = None) -> bool:
        """See :meth:`AsyncClient.kv_delete`."""
        check_key(key)
        return self._run(lambda: self._c().kv_delete(key, timeout=timeout), timeout)

    def kv_list_keys(self, *, timeout: float | None = None) -> list[str]:
        """See :meth:`AsyncClient.kv_list_keys`."""
        return self._run(lambda: self._c().kv_list_keys(timeout=timeout), timeout)

    def _c(self) -> AsyncClient:
        assert self._client is not None
        return self._client
