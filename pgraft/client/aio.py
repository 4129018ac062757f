"""The asyncio client: ``await pgraft.connect(...)``, a thin ``asyncio.Protocol`` shell over
:class:`~pgraft.client._proto.ClientProtocol`::

    async with await pgraft.connect("127.0.0.1:7001") as c:
        index = await c.append(b"payload")
        await c.add_node(4, "127.0.0.1", 7004)

Many calls may be in flight on one connection: each request carries an id and the protocol
matches the answers. Requests written in one event-loop iteration go out in one write. Every
call takes ``timeout=`` (seconds); the node is told the same timeout and answers
:class:`~pgraft.errors.Timeout` when it passes, and the client gives up on its own shortly
after (one timer for all calls, :class:`~pgraft.deadlines.DeadlineWheel`), so a stopped node
never hangs a caller.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ..checks import check_data, check_timeout
from ..deadlines import DeadlineWheel
from ..errors import ConnectionFailed, PgraftError
from ..protocol import APPEND_BATCH_MAX, FEATURE_APPEND_BATCH, WRITE_BATCH_FRAMES
from . import _ops
from ._appendbatch import GATHER_PAYLOAD_MAX, BatchWaiter
from ._nodeinfo import NodeInfo
from ._proto import ClientProtocol, Closed, Event, Failed, Ready, Reply, Send, wait_limit
from ._target import (
    DEFAULT_TIMEOUT,
    Security,
    Target,
    connect_timeout_error,
    dial_error,
    load_security,
    parse_target,
)

__all__ = ["AsyncClient", "connect"]

#: Granularity (seconds) of the client's own call deadlines.
_DEADLINE_RESOLUTION = 0.02


class _Transport(asyncio.Protocol):
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
                 security: Security | None = None) -> None:
        self._target = target
        self._security = security
        self._display = display if display is not None else str(target)
        self._timeout = timeout
        self._wait = wait_limit(timeout)  # how long a call with the default timeout waits
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._io = _Transport(self)
        self._proto = ClientProtocol(self._display,
                                     secret=security.secret if security is not None else None)
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._waiters: dict[int, asyncio.Future[Any] | BatchWaiter] = {}
        self._batch: list[bytes] | None = None
        # Appends gathered after the first request of this event-loop iteration, and whether
        # the node takes them as one append_batch request (pgraft.client._appendbatch).
        self._gathered: list[tuple[bytes, asyncio.Future[Any]]] | None = None
        self._batching = False
        # Calls are expired by one timer (a timer per call costs more than the rest of a
        # pipelined call); answered calls are skipped (_expire).
        self._deadlines: DeadlineWheel[tuple[int, float]] = DeadlineWheel(
            self._loop, _DEADLINE_RESOLUTION, self._expire)
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
        return self._proto.closed

    @property
    def in_flight(self) -> int:
        """Number of calls waiting for their answer."""
        gathered = sum(len(w.futures) - 1 for w in self._waiters.values()
                       if type(w) is BatchWaiter)
        return len(self._waiters) + gathered + len(self._gathered or ())

    async def _open(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._dial()
                self._write(self._proto.hello())
                await self._ready
        except TimeoutError:
            self._abort(lambda: ConnectionFailed(f"connecting to node {self.target} was "
                                                 "closed by the client"))
            raise connect_timeout_error(self.target, timeout) from None
        except BaseException:
            self._abort(lambda: ConnectionFailed(f"connection to node {self.target} was "
                                                 "abandoned while connecting"))
            raise

    async def _dial(self) -> None:
        target = self._target
        security = self._security
        try:
            if target.path is not None:
                transport, _ = await self._loop.create_unix_connection(
                    lambda: self._io, target.path)
            elif security is not None and security.ssl is not None:
                assert target.host is not None and target.port is not None
                transport, _ = await self._loop.create_connection(
                    lambda: self._io, target.host, target.port, ssl=security.ssl,
                    server_hostname=target.host)
            else:
                assert target.host is not None and target.port is not None
                transport, _ = await self._loop.create_connection(
                    lambda: self._io, target.host, target.port)
        except OSError as exc:
            raise dial_error(target, exc) from None
        self._transport = transport  # type: ignore[assignment]
        if target.path is None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        """Close the connection. Calls still in flight fail with ConnectionFailed (writes
        with OutcomeUnknown: they were sent)."""
        transport, self._transport = self._transport, None
        self._handle(self._proto.close())
        if transport is not None:
            transport.close()
            # Let connection_lost run so that nothing refers to the socket afterwards.
            await asyncio.sleep(0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._waiters)} in flight"
        return f"<pgraft.AsyncClient node {self.node_id} at {self.target}, {state}>"

    # ------------------------------------------------------------ protocol events
    def _on_data(self, data: bytes) -> None:
        self._handle(self._proto.receive_data(data))

    def _on_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._handle(self._proto.connection_lost(exc))

    def _handle(self, events: list[Event]) -> None:
        waiters = self._waiters
        for event in events:
            if type(event) is Reply:
                fut = waiters.pop(event.rid, None)
                if fut is not None and not fut.done():
                    fut.set_result(event.result)
            elif type(event) is Failed:
                fut = waiters.pop(event.rid, None)
                if fut is not None and not fut.done():
                    fut.set_exception(event.error)
            elif type(event) is Send:
                self._write(event.data)
            elif type(event) is Ready:
                self.node_id = event.node_id
                self._batching = FEATURE_APPEND_BATCH in event.features
                if not self._ready.done():
                    self._ready.set_result(None)
            elif type(event) is Closed:
                self._on_closed(event.error)

    def _on_closed(self, error: PgraftError) -> None:
        self._deadlines.close()
        gathered, self._gathered = self._gathered, None
        for _, fut in gathered or ():
            if not fut.done():  # not sent: nothing was changed
                fut.set_exception(ConnectionFailed(
                    f"append: the connection to node {self.target} closed before the request "
                    f"was sent ({error.message}); nothing was changed",
                    hint="connect again (pgraft.connect) and retry"))
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # whoever awaits it still gets it; nobody else must
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()

    def _abort(self, failure: Callable[[], PgraftError]) -> None:
        self._handle(self._proto.abort(failure))
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()

    def _expire(self, call: tuple[int, float]) -> None:
        rid, limit = call
        # Every call's deadline comes due, most of them long after the answer: a call that is
        # not waited for here is not pending in the protocol either (both forget it in the
        # same step), so the protocol need not be asked.
        if rid not in self._waiters:
            return
        failed = self._proto.expire(rid, limit)
        if failed is not None:
            self._handle([failed])

    # ---------------------------------------------------------------- writing
    def _write(self, frame: bytes) -> None:
        assert self._transport is not None
        self._transport.write(frame)

    def _send(self, frame: bytes) -> None:
        """Write a request: the first one of an event-loop iteration at once, the ones that
        follow it in the same iteration together in one ``writelines`` when it ends, or as
        soon as ``WRITE_BATCH_FRAMES`` of them have gathered (see pgraft.protocol)."""
        transport = self._transport
        if transport is None:
            raise self._proto.failure() or ConnectionFailed(
                f"the connection to node {self.target} is closed")
        batch = self._batch
        if batch is None:
            transport.write(frame)
            self._batch = []
            self._loop.call_soon(self._flush_batch)
        else:
            batch.append(frame)
            if len(batch) >= WRITE_BATCH_FRAMES:
                self._batch = []
                transport.writelines(batch)

    def _flush_batch(self) -> None:
        if self._gathered:
            self._send_gathered()
        batch, self._batch = self._batch, None
        if batch and self._transport is not None:
            self._transport.writelines(batch)

    def _gather(self, data: bytes) -> asyncio.Future[Any]:
        """An append made after the first request of this iteration: wait for the batch."""
        if self._transport is None:
            raise self._proto.failure() or ConnectionFailed(
                f"the connection to node {self.target} is closed")
        fut: asyncio.Future[Any] = self._loop.create_future()
        gathered = self._gathered
        if gathered is None:
            gathered = self._gathered = []
        gathered.append((data, fut))
        if len(gathered) >= APPEND_BATCH_MAX:
            self._send_gathered()
        return fut

    def _send_gathered(self) -> None:
        """Send the gathered appends (those whose callers still wait) as one append_batch."""
        gathered, self._gathered = self._gathered, None
        live = [(data, fut) for data, fut in gathered or () if not fut.done()]
        if not live:
            return
        futures = [fut for _, fut in live]
        waiter = BatchWaiter(futures, self._display)
        try:
            rid, frame = self._proto.send_request(
                "append_batch", {"data": [data for data, _ in live]}, self._timeout)
        except PgraftError as exc:  # closed, or over the frame limit: nothing was sent
            waiter.set_exception(exc)
            return
        self._waiters[rid] = waiter
        self._deadlines.add((rid, self._timeout), self._wait)
        try:
            self._send(frame)
        except PgraftError as exc:  # the transport is gone: nothing was sent
            del self._waiters[rid]
            self._proto.forget(rid)
            waiter.set_exception(exc)

    async def _call(self, call: _ops.Call, timeout: float | None) -> Any:
        if timeout is None:
            limit, wait = self._timeout, self._wait
        else:
            limit = check_timeout(timeout)
            wait = wait_limit(limit)
        op, args, shape = call
        rid, frame = self._proto.send_request(op, args, limit)
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._waiters[rid] = fut
        self._deadlines.add((rid, limit), wait)
        try:
            self._send(frame)
            if self._io.paused:
                waiter: asyncio.Future[None] = self._loop.create_future()
                self._io.drain_waiters.append(waiter)
                await waiter
            result = await fut
        finally:
            if self._waiters.pop(rid, None) is not None:  # cancelled or never sent
                self._proto.forget(rid)
        return shape(result, self._display)

    # ------------------------------------------------------------------ log
    async def append(self, data: bytes, *, timeout: float | None = None) -> int:
        """Append ``data`` to the replicated log; return its index once committed and applied.

        Raises NotLeaderError on a follower, PayloadTooLarge past the node's limit.
        Concurrent appends with the default timeout travel together (``append_batch``, see
        pgraft.client._appendbatch); each still gets its own index or error.
        """
        if timeout is None and self._batch is not None and self._batching:
            data = check_data(data)
            if len(data) <= GATHER_PAYLOAD_MAX:
                return await self._gather(data)  # type: ignore[no-any-return]
        return await self._call(_ops.append(data), timeout)

    async def get_entry(self, index: int, *,
                        timeout: float | None = None) -> dict[str, Any] | None:
        """The log entry at ``index`` as ``{"index", "term", "type", "data"}``, or None when it
        is absent or compacted into a snapshot."""
        return await self._call(_ops.get_entry(index), timeout)

    async def log_stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """``{first_index, last_index, commit_index, applied_index, snapshot_index,
        log_bytes}`` of the node's log."""
        return await self._call(_ops.log_stats(), timeout)

    # ------------------------------------------------------------- membership
    async def add_node(self, node_id: int, address: str, port: int, *,
                       timeout: float | None = None) -> bool:
        """Add a node (as a learner; the leader promotes it to voter once caught up).

        Call it on the leader only: it returns True once the change is committed. Raises
        NotLeaderError on a follower, NodeExists for an id in use or used before,
        MembershipChangeInProgress while another change is pending.
        """
        return await self._call(_ops.add_node(node_id, address, port),
                                timeout)

    async def remove_node(self, node_id: int, *, timeout: float | None = None) -> bool:
        """Remove a node; True once the change is committed. A removed leader steps down.

        Raises NotLeaderError on a follower, UnknownNode for an id that is not a member.
        """
        return await self._call(_ops.remove_node(node_id), timeout)

    async def get_nodes(self, *, timeout: float | None = None) -> list[NodeInfo]:
        """The members as this node sees them, ordered by node id."""
        return await self._call(_ops.get_nodes(), timeout)

    async def get_leader(self, *, timeout: float | None = None) -> int | None:
        """Id of the leader this node knows of, or None during an election."""
        return await self._call(_ops.get_leader(), timeout)

    async def leader_address(self, *, timeout: float | None = None) -> str | None:
        """``"host:port"`` of the leader this node knows of, or None."""
        return await self._call(_ops.leader_address(), timeout)

    async def leader_info(self, *, timeout: float | None = None) -> dict[str, Any]:
        """``{"leader_id": int or None, "address": "host:port" or None}`` in one call."""
        return await self._call(_ops.leader_info(), timeout)

    async def get_term(self, *, timeout: float | None = None) -> int:
        """This node's current Raft term."""
        return await self._call(_ops.get_term(), timeout)

    async def is_leader(self, *, timeout: float | None = None) -> bool:
        """Whether this node is the leader now."""
        return await self._call(_ops.is_leader(), timeout)

    async def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The node's status: node_id, role, term, leader_id, commit/applied/first/last/
        snapshot index, log_bytes, num_nodes, per-peer progress and metrics."""
        return await self._call(_ops.status(), timeout)

    async def transfer_leadership(self, node_id: int, *, timeout: float | None = None) -> bool:
        """Hand leadership to voter ``node_id``; True once it is leader. Call on the leader."""
        return await self._call(_ops.transfer_leadership(node_id),
                                timeout)

    # --------------------------------------------------------------------- KV
    async def kv_put(self, key: str, value: str, *, timeout: float | None = None) -> bool:
        """Set ``key`` to ``value``; True once committed. Call on the leader."""
        return await self._call(_ops.kv_put(key, value), timeout)

    async def kv_get(self, key: str, *, timeout: float | None = None) -> str | None:
        """The value of ``key`` or None (linearizable read through the leader's ReadIndex)."""
        return await self._call(_ops.kv_get(key), timeout)

    async def kv_delete(self, key: str, *, timeout: float | None = None) -> bool:
        """Delete ``key``; True if it existed. Call on the leader."""
        return await self._call(_ops.kv_delete(key), timeout)

    async def kv_list_keys(self, *, timeout: float | None = None) -> list[str]:
        """All keys, sorted (linearizable)."""
        return await self._call(_ops.kv_list_keys(), timeout)

    async def ha_status(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """One row per member in HA mode: node_id, pg_role, timeline, received_lsn,
        replayed_lsn (integers), lag_bytes, lease_remaining_ms, epoch, state. Answered by
        any node (it asks the others); HaNotEnabled when the nodes run without PostgreSQL."""
        return await self._call(_ops.ha_status(), timeout)


    # -------------------------------------------------------------- member to member (HA)
    async def ha_observe(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The node's own PostgreSQL observation (pgraft.ha.types.PgObservation.to_wire)."""
        return await self._call(_ops.ha_observe(), timeout)

    async def ha_propose(self, command: list[Any], *, timeout: float | None = None) -> bool:
        """Ask the leader to propose a member's HA command; True if it took effect."""
        return await self._call(_ops.ha_propose(command), timeout)

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
    client certificate to present). See docs/security.md.
    Raises InvalidArgument for an unusable target or security file, ConnectionFailed when the
    node cannot be reached, AuthenticationFailed when either side fails to prove the secret.
    """
    limit = check_timeout(timeout)
    security = load_security(secret_file, tls_ca, tls_cert, tls_key)
    client = AsyncClient(parse_target(target), limit, security=security)
    await client._open(limit)
    return client
