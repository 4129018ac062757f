"""The blocking client, ``pgraft.Client``: one plain socket, one call at a time::

    with pgraft.Client("/var/lib/pgraft/node.sock") as c:
        print(c.get_nodes())

This is what the SQL functions call inside PostgreSQL backends, one call per statement, so it
is built for a cheap first call: a blocking socket (TCP, TLS or the node's Unix socket) over
the sans-I/O :class:`~pgraft.client._proto.ClientProtocol`, no event loop, no threads, no
signal handling; a call over the Unix socket imports neither asyncio nor uvloop, nor typing,
socket.py or ssl (tests/client/test_cold_import.py).

The client connects on first use and keeps the connection. Before each call it reads whatever
arrived meanwhile without waiting: a late answer is dropped, and a connection the node has
closed (it restarted, say) is replaced by a new one before the request is sent, so the call
does not fail for it. ``timeout=`` bounds connecting, and the wait for the answer (the node is
told the same timeout and answers Timeout itself).

Waits can be cut short by the caller. ``interrupt=`` is a callable that returns True when the
caller must stop waiting (in a PostgreSQL backend: a cancel request or statement_timeout is
pending). The client then blocks (connecting, sending, waiting for the answer) in slices of at
most ``interrupt_interval`` seconds and calls ``interrupt()`` between them, never before the
first slice of a call has passed: a call answered within it never calls it. When it returns
True, the call raises :class:`~pgraft.errors.Interrupted` (a read, or a call whose request was
not sent: nothing changed) or :class:`~pgraft.errors.InterruptedWrite` (a write that was sent:
it may still commit). The connection stays usable and the late answer is dropped, unless the
request had gone out only in part (then the connection is closed; the node cannot have it).
"""

from __future__ import annotations

import _socket
import os
import sys
import time

from ..checks import check_timeout
from ..errors import ConnectionFailed, InvalidArgument, PgraftError
from . import _ops
from ._proto import ClientProtocol, Closed, Event, Failed, Reply, Send, interrupted, wait_limit
from ._target import (
    DEFAULT_TIMEOUT,
    Target,
    connect_timeout_error,
    dial_error,
    load_security,
    parse_target,
)

TYPE_CHECKING = False  # typing only for the type checker: see pgraft/errors.py
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any

    from ._nodeinfo import NodeInfo

__all__ = ["Client"]

_READ_SIZE = 256 * 1024
_NEVER = float("inf")
#: Default of ``interrupt_interval``: how often a wait asks ``interrupt()``, in seconds.
DEFAULT_INTERRUPT_INTERVAL = 0.02


class _Expired(Exception):
    """The deadline of a blocking read passed."""


class _Interrupted(Exception):
    """``interrupt()`` said that the caller must stop waiting."""


def _refuse_inside_event_loop() -> None:
    # A blocking call would stall every task of the loop. asyncio is only looked up: when it
    # was never imported, no loop can be running.
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise PgraftError("pgraft.Client cannot be used inside a running event loop",
                      hint="use `await pgraft.connect(...)` in asynchronous code")


class Client:
    """A blocking pgraft client with the same methods as :class:`~pgraft.AsyncClient`.

    It connects on first use and reconnects when the node has closed the connection; it starts
    no threads (host names are resolved in the calling thread). Cheap to create per call, and
    may be kept for reuse; not to be shared between threads. ``close()`` (or ``with``)
    releases the socket; the client may be used again afterwards.

    ``interrupt``: a callable returning True when the caller must stop waiting; it is called
    between slices of at most ``interrupt_interval`` seconds of any wait, never before the
    first slice of a call has passed (see :mod:`pgraft.client.sync`). What it raises
    propagates, and the connection is closed.
    """

    def __init__(self, target: str | os.PathLike[str] | Target, *,
                 timeout: float = DEFAULT_TIMEOUT,
                 interrupt: Callable[[], bool] | None = None,
                 interrupt_interval: float = DEFAULT_INTERRUPT_INTERVAL,
                 secret_file: str | os.PathLike[str] | None = None,
                 tls_ca: str | os.PathLike[str] | None = None,
                 tls_cert: str | os.PathLike[str] | None = None,
                 tls_key: str | os.PathLike[str] | None = None) -> None:
        self._target = parse_target(target)
        self._display = str(self._target)
        self._timeout = check_timeout(timeout)
        if interrupt is not None and not callable(interrupt):
            raise InvalidArgument(
                f"interrupt must be a callable or None, got {type(interrupt).__name__}",
                hint="pass a function that returns True when the caller must stop waiting")
        self._interrupt = interrupt
        self._interval = check_timeout(interrupt_interval, "interrupt_interval", "0.02")
        self._check_at = _NEVER  # when the current call's wait asks interrupt() next
        self._security = load_security(secret_file, tls_ca, tls_cert, tls_key)
        self._sock: _socket.socket | None = None
        self._proto: ClientProtocol | None = None
        self._node_id: int | None = None

    # ------------------------------------------------------------------ state
    @property
    def target(self) -> str:
        """The node this client talks to (``host:port`` or a socket path)."""
        return self._display

    @property
    def node_id(self) -> int | None:
        """Id of the connected node, or None before the first call."""
        return self._node_id

    @property
    def closed(self) -> bool:
        """True while no connection is open (before the first call, after :meth:`close`, or
        once the node closed it); the next call connects."""
        return self._sock is None or self._proto is None or self._proto.closed

    def close(self) -> None:
        """Close the connection (if any). The client may be used again."""
        sock, self._sock = self._sock, None
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.close()
        if sock is not None:
            sock.close()

    def __del__(self) -> None:
        # A forgotten client still releases its socket when it is collected.
        sock = getattr(self, "_sock", None)  # None also when __init__ raised
        if sock is not None:
            sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"connected to node {self._node_id}"
        return f"<pgraft.Client {self.target}, {state}>"

    # --------------------------------------------------------------- the call
    def _call(self, call: _ops.Call, timeout: float | None) -> Any:
        limit = self._timeout if timeout is None else check_timeout(timeout)
        _refuse_inside_event_loop()
        if self._interrupt is not None:
            self._check_at = time.monotonic() + self._interval  # the first slice is never cut
        try:
            if not self.closed:
                try:
                    self._catch_up()
                except _Interrupted:  # nothing was sent; the connection stays
                    raise interrupted(call[0], self._display, sent=False) from None
            if self.closed:
                try:
                    self._connect(limit)
                except _Interrupted:  # _connect closed the connection
                    raise interrupted(call[0], self._display, sent=False,
                                      connecting=True) from None
            return call[2](self._request(call, limit), self._display)
        except PgraftError:
            raise
        except BaseException:
            # KeyboardInterrupt, an error of interrupt() or an unexpected one: the stream's
            # state is unknown, so the connection cannot be reused.
            self.close()
            raise

    def _request(self, call: _ops.Call, limit: float) -> Any:
        proto = self._proto
        assert proto is not None
        op, args, _shape = call
        rid, frame = proto.send_request(op, args, limit)
        deadline = time.monotonic() + wait_limit(limit)
        try:
            events = self._send(frame, deadline)
        except _Interrupted:
            # Not all of the frame went out (if part of it did, _send closed the connection):
            # the node cannot have the request.
            proto.forget(rid)
            raise interrupted(call[0], self._display, sent=False) from None
        while True:
            try:
                outcome = self._handle(events, rid, deadline)
                if outcome is None:
                    events = self._read(deadline)
                    continue
            except _Expired:
                failed = proto.expire(rid, limit)
                assert failed is not None  # an answered or failed call returned below
                raise failed.error from None  # the connection stays; a late answer is dropped
            except _Interrupted:
                failed = proto.interrupt(rid)
                assert failed is not None
                raise failed.error from None  # the same: the connection stays
            if isinstance(outcome, Reply):
                return outcome.result
            raise outcome.error

    def _handle(self, events: list[Event], rid: int | None,
                deadline: float) -> Reply | Failed | None:
        """Act on ``events``; return the outcome of call ``rid`` if they hold it."""
        outcome: Reply | Failed | None = None
        for event in events:  # may grow: a failed Send appends its events
            if isinstance(event, Reply | Failed):
                if event.rid == rid:
                    outcome = event
            elif isinstance(event, Send):
                events.extend(self._send(event.data, deadline))
            elif isinstance(event, Closed):
                sock, self._sock = self._sock, None
                if sock is not None:
                    sock.close()
                if outcome is None and rid is not None:
                    outcome = Failed(rid, event.error)  # abort() reports rid first; a guard
        return outcome

    # ------------------------------------------------------------ connecting
    def _connect(self, limit: float) -> None:
        self.close()
        security = self._security
        proto = ClientProtocol(self._display,
                               secret=security.secret if security is not None else None)
        deadline = time.monotonic() + limit
        try:
            sock = self._dial(deadline)
        except TimeoutError:
            raise connect_timeout_error(self._display, limit) from None
        except OSError as exc:
            raise dial_error(self._target, exc) from None
        self._sock, self._proto = sock, proto
        try:
            events = self._send(proto.hello(), deadline)
            while True:
                self._handle(events, None, deadline)
                if proto.ready:
                    break
                failure = proto.failure()
                if failure is not None:
                    raise failure
                events = self._read(deadline)
        except _Expired:
            self.close()
            raise connect_timeout_error(self._display, limit) from None
        except (PgraftError, _Interrupted):
            self.close()
            raise
        self._node_id = proto.node_id

    def _dial(self, deadline: float) -> _socket.socket:
        target = self._target
        if target.path is not None:
            # The C socket type, not socket.py: the Unix socket is what the SQL functions use,
            # and socket.py (with enum and selectors) would cost their first call more than
            # connecting and the call together. Connecting to a Unix socket does not wait (a
            # full backlog fails with EAGAIN at once): there is nothing to cut short.
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.connect(target.path)
            except BaseException:
                sock.close()
                raise
            return sock
        import socket

        assert target.host is not None and target.port is not None
        # Resolves the name in this thread (getaddrinfo, which cannot be cut short) and tries
        # each address in turn, as socket.create_connection does, within the one deadline.
        tcp = None
        first_error: OSError | None = None
        for family, kind, protocol, _, address in socket.getaddrinfo(
                target.host, target.port, 0, socket.SOCK_STREAM):
            tcp = socket.socket(family, kind, protocol)
            try:
                self._connect_tcp(tcp, address, deadline)
                break
            except TimeoutError:
                tcp.close()
                raise  # the deadline passed: no time is left for another address
            except OSError as exc:
                tcp.close()
                tcp = None
                first_error = first_error or exc
            except BaseException:
                tcp.close()
                raise
        if tcp is None:
            raise first_error or OSError(f"no address found for {target.host}")
        try:
            tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            security = self._security
            if security is not None and security.ssl is not None:
                # The certificate must name the host as given.
                tcp = security.ssl.wrap_socket(tcp, server_hostname=target.host,
                                               do_handshake_on_connect=False)
                while True:
                    tcp.settimeout(self._slice_or_expire(deadline, TimeoutError))
                    try:
                        tcp.do_handshake()
                        break
                    except TimeoutError:
                        continue  # a slice passed; the handshake goes on where it stopped
        except BaseException:
            tcp.close()
            raise
        return tcp

    def _connect_tcp(self, sock: socket.socket, address: Any, deadline: float) -> None:
        """Connect ``sock`` without blocking and wait for it in slices; TimeoutError at
        ``deadline``."""
        import errno
        import select

        sock.setblocking(False)
        err = sock.connect_ex(address)
        if err == errno.EINPROGRESS:
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            while not poller.poll(int(self._slice_or_expire(deadline, TimeoutError) * 1000) + 1):
                pass
            err = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))  # the errno's subclass (ConnectionRefused...)

    # -------------------------------------------------------------------- I/O
    def _slice(self, deadline: float) -> float:
        """Seconds to block next: until ``deadline`` or the next interrupt check, whichever is
        first (<= 0 once the deadline passed). When a check is due, it calls ``interrupt()``
        and raises _Interrupted if the caller must stop waiting."""
        now = time.monotonic()
        remaining = deadline - now
        if remaining <= 0 or now < self._check_at:
            return min(remaining, self._check_at - now)
        interrupt = self._interrupt
        assert interrupt is not None  # _check_at is _NEVER without it
        if interrupt():
            raise _Interrupted
        now = time.monotonic()
        self._check_at = now + self._interval
        return min(deadline - now, self._interval)

    def _slice_or_expire(self, deadline: float, expired: type[Exception]) -> float:
        """:meth:`_slice`, raising ``expired`` once the deadline passed."""
        remaining = self._slice(deadline)
        if remaining <= 0:
            raise expired("timed out")
        return remaining

    def _send(self, data: bytes, deadline: float) -> list[Event]:
        """Write ``data``; the events of a failed write (none when it went out). Raises
        _Interrupted if the caller stops waiting before all of it went out, having closed the
        connection if part of it did."""
        sock, proto = self._sock, self._proto
        assert proto is not None
        if sock is None:
            return proto.connection_lost()
        out: bytes | memoryview = data
        started = False  # some of ``data`` may be on the wire
        try:
            while True:
                remaining = self._slice(deadline)
                sock.settimeout(max(remaining, 0.001))
                try:
                    sent = sock.send(out)
                except TimeoutError:
                    # A plain socket sent nothing; TLS may have written part of a record, and
                    # must be retried with the same bytes.
                    started = started or hasattr(sock, "pending")
                    if remaining > 0 and time.monotonic() < deadline:
                        continue  # a slice passed with the socket's buffer full
                    raise
                if sent == len(out):
                    return []
                out = memoryview(out)[sent:]
                started = True
        except _Interrupted:
            if started:  # part of a frame on the wire: the stream is unusable
                self.close()
            raise
        except OSError as exc:  # a timeout too: part of a frame may be out, the stream is lost
            return proto.connection_lost(exc)

    def _read(self, deadline: float) -> list[Event]:
        """The events of one read; raises _Expired at ``deadline``, _Interrupted if the
        caller stops waiting."""
        sock, proto = self._sock, self._proto
        assert proto is not None
        if sock is None:  # dropped on a Closed event: nothing more will come
            raise proto.failure() or ConnectionFailed(
                f"the connection to node {self._display} is closed")
        while True:
            remaining = self._slice_or_expire(deadline, _Expired)
            try:
                sock.settimeout(remaining)
                data = sock.recv(_READ_SIZE)
            except TimeoutError:
                continue  # a slice passed with nothing to read
            except OSError as exc:
                return proto.connection_lost(exc)
            if not data:
                return proto.connection_lost()
            return proto.receive_data(data)

    def _catch_up(self) -> None:
        """Before a call on a kept connection: take in what arrived since the last call (late
        answers; the node closing the connection) without waiting for more."""
        import select  # only for a kept connection: the first call of a session has none

        sock, proto = self._sock, self._proto
        assert sock is not None and proto is not None
        poller = select.poll()  # not select.select: a backend's socket fd may exceed 1023
        poller.register(sock, select.POLLIN)
        pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted
        deadline = time.monotonic() + self._timeout
        while not self.closed:
            if not poller.poll(0) and not (pending is not None and pending()):
                return
            try:
                self._handle(self._read(deadline), None, deadline)
            except _Expired:  # half a TLS record and then nothing: the stream is unusable
                self.close()

    # ------------------------------------------------------------------ log
    def append(self, data: bytes, *, timeout: float | None = None) -> int:
        """Append ``data`` to the replicated log; its index once committed and applied."""
        return self._call(_ops.append(data), timeout)

    def get_entry(self, index: int, *, timeout: float | None = None) -> dict[str, Any] | None:
        """The log entry at ``index`` (``{"index", "term", "type", "data"}``) or None."""
        return self._call(_ops.get_entry(index), timeout)

    def log_stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """First, last, commit, applied and snapshot index and log_bytes of the node's log."""
        return self._call(_ops.log_stats(), timeout)

    # ------------------------------------------------------------- membership
    def add_node(self, node_id: int, address: str, port: int, *,
                 timeout: float | None = None) -> bool:
        """Add a node as a learner; True once committed. Call on the leader."""
        return self._call(_ops.add_node(node_id, address, port),
                          timeout)

    def remove_node(self, node_id: int, *, timeout: float | None = None) -> bool:
        """Remove a node; True once committed. Call on the leader."""
        return self._call(_ops.remove_node(node_id), timeout)

    def get_nodes(self, *, timeout: float | None = None) -> list[NodeInfo]:
        """The members as this node sees them, ordered by node id."""
        return self._call(_ops.get_nodes(), timeout)

    def get_leader(self, *, timeout: float | None = None) -> int | None:
        """Id of the leader this node knows of, or None during an election."""
        return self._call(_ops.get_leader(), timeout)

    def leader_address(self, *, timeout: float | None = None) -> str | None:
        """``"host:port"`` of the leader this node knows of, or None."""
        return self._call(_ops.leader_address(), timeout)

    def leader_info(self, *, timeout: float | None = None) -> dict[str, Any]:
        """``{"leader_id": int or None, "address": "host:port" or None}`` in one call."""
        return self._call(_ops.leader_info(), timeout)

    def get_term(self, *, timeout: float | None = None) -> int:
        """This node's current Raft term."""
        return self._call(_ops.get_term(), timeout)

    def is_leader(self, *, timeout: float | None = None) -> bool:
        """Whether this node is the leader now."""
        return self._call(_ops.is_leader(), timeout)

    def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The node's status (see :meth:`AsyncClient.status <pgraft.AsyncClient.status>`)."""
        return self._call(_ops.status(), timeout)

    def transfer_leadership(self, node_id: int, *, timeout: float | None = None) -> bool:
        """Hand leadership to voter ``node_id``; True once it is leader. Call on the leader."""
        return self._call(_ops.transfer_leadership(node_id),
                          timeout)

    # --------------------------------------------------------------------- KV
    def kv_put(self, key: str, value: str, *, timeout: float | None = None) -> bool:
        """Set ``key`` to ``value``; True once committed. Call on the leader."""
        return self._call(_ops.kv_put(key, value), timeout)

    def kv_get(self, key: str, *, timeout: float | None = None) -> str | None:
        """The value of ``key`` or None (linearizable read)."""
        return self._call(_ops.kv_get(key), timeout)

    def kv_delete(self, key: str, *, timeout: float | None = None) -> bool:
        """Delete ``key``; True if it existed. Call on the leader."""
        return self._call(_ops.kv_delete(key), timeout)

    def kv_list_keys(self, *, timeout: float | None = None) -> list[str]:
        """All keys, sorted (linearizable)."""
        return self._call(_ops.kv_list_keys(), timeout)

    def ha_status(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """One row per member in HA mode (see :meth:`AsyncClient.ha_status
        <pgraft.AsyncClient.ha_status>`); HaNotEnabled when the nodes run without PostgreSQL."""
        return self._call(_ops.ha_status(), timeout)

    # -------------------------------------------------------------- member to member (HA)
    def ha_observe(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The node's own PostgreSQL observation (see :meth:`AsyncClient.ha_observe
        <pgraft.AsyncClient.ha_observe>`)."""
        return self._call(_ops.ha_observe(), timeout)

    def ha_propose(self, command: list[Any], *, timeout: float | None = None) -> bool:
        """Ask the leader to propose a member's HA command; True if it took effect."""
        return self._call(_ops.ha_propose(command), timeout)
