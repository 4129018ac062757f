"""Outbound peer links of one node: one connection per peer, bounded queues, backoff.

Every node dials every peer it knows (one outbound connection per peer, used only for writing
RAFT frames; handshake: ``docs/protocol.md``). Bounds (docs/design.md rule 7): each peer has a
queue bounded in frames and bytes, and the oldest frames are dropped when it is full — a dead
or slow peer costs bounded memory, and Raft retransmits whatever was lost.

:class:`Peers` is also the directory of what is known about peers apart from the log: the
addresses that dialling peers announced, and the peers the identity gate refused (both
reported by :class:`pgraft.node.listener.Listener` through :class:`PeerDirectory`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol, cast

from .._impl import core
from ..auth import ClientAuth
from ..errors import (
    AuthenticationFailed,
    DecodeError,
    MemberRefused,
    PgraftError,
    ProtocolError,
    from_wire,
)
from ..protocol import MAX_FRAME_SIZE, PROTOCOL_VERSION, encode_control
from ..tls import describe_ssl_error
from .listener import PeerGate, set_nodelay
from .metrics import Metrics
from .security import LoadedSecurity

log = logging.getLogger("pgraft.transport")

_Message = Any  # pgraft._impl.core.Message


class PeerEvents(Protocol):
    """What the peer links report to (the Node)."""

    def report_unreachable(self, peer_id: int) -> None: ...


# --------------------------------------------------------------------------- links
class _Outbound(asyncio.Protocol):
    """The dialling side of a peer connection: it sends the hello, waits for ``ok``, then only
    writes."""

    def __init__(self, link: PeerLink) -> None:
        self._link = link
        self._decoder = core.FrameDecoder(link.owner.max_frame)
        self.transport: asyncio.Transport | None = None
        loop = link.owner.loop
        self.hello: asyncio.Future[Any] = loop.create_future()
        self.closed: asyncio.Future[Exception | None] = loop.create_future()
        self.paused = False
        secret = link.owner.secret
        self._auth = ClientAuth(secret, "peer", link.owner.node_id, link.peer_id) \
            if secret is not None else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        set_nodelay(transport)
        transport.set_write_buffer_limits(high=self._link.owner.max_write_buffer)
        hello: dict[str, Any] = {"hello": "peer", "node_id": self._link.owner.node_id,
                                 "version": PROTOCOL_VERSION}
        advertise = self._link.owner.advertise
        if advertise is not None:
            # Optional extension of the peer hello: where the dialling node listens.
            hello["address"], hello["port"] = advertise
        if self._auth is not None:
            hello.update(self._auth.hello_fields())
        gate = self._link.owner.peer_gate
        if gate is not None:
            hello.update(gate.hello_fields())
        transport.write(encode_control(hello))

    def data_received(self, data: bytes) -> None:
        try:
            items = self._decoder.feed(data)
        except DecodeError as exc:
            self._fail(ProtocolError(f"malformed frame from peer: {exc.message}"))
            return
        for item in items:
            if not self.hello.done():
                auth = self._auth
                if auth is not None and not (isinstance(item, dict)
                                             and item.get("hello") == "error"):
                    # The node's challenge: check its proof, answer with ours; its "ok" or
                    # refusal comes next.
                    self._auth = None
                    try:
                        proof = auth.answer(item)
                    except AuthenticationFailed as exc:
                        self._fail(exc)
                        return
                    assert self.transport is not None
                    self.transport.write(encode_control(proof))
                    continue
                self.hello.set_result(item)
            else:
                self._fail(ProtocolError("unexpected frame on an outbound peer connection"))
                return

    def _fail(self, exc: Exception) -> None:
        if not self.hello.done():
            self.hello.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._link.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.hello.done():
            self.hello.set_exception(exc or ConnectionResetError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(exc)


class PeerLink:
    """The one outbound connection to a peer, with reconnect + exponential backoff with jitter
    and a bounded queue of encoded frames."""

    def __init__(self, owner: Peers, peer_id: int, address: str, port: int) -> None:
        self.owner = owner
        self.peer_id = peer_id
        self.address = address
        self.port = port
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.dropped = 0
        self.connected = False
        self._proto: _Outbound | None = None
        self._closing = False
        self._wake = asyncio.Event()
        self._reported_failure = False
        self._task = owner.loop.create_task(self._run(), name=f"pgraft-peer-{peer_id}")

    @property
    def endpoint(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else \
            f"{self.address}:{self.port}"

    def enqueue(self, frame: bytes) -> None:
        owner = self.owner
        self.queue.append(frame)
        self.queued_bytes += len(frame)
        while len(self.queue) > 1 and (len(self.queue) > owner.max_queue_frames
                                       or self.queued_bytes > owner.max_queue_bytes):
            old = self.queue.popleft()
            self.queued_bytes -= len(old)
            self.dropped += 1
            owner.metrics.messages_dropped += 1

    def flush(self) -> None:
        proto = self._proto
        if not self.connected or proto is None or proto.paused or not self.queue:
            return
        transport = proto.transport
        if transport is None or transport.is_closing():
            # Lost or aborted, and _run has not seen it yet (uvloop raises on a write to a
            # closed handle): keep the queue for the next connection.
            return
        queue = self.queue
        self.owner.metrics.bytes_sent += self.queued_bytes
        if len(queue) == 1:
            transport.write(queue[0])
        else:
            transport.writelines(queue)
        queue.clear()
        self.queued_bytes = 0

    def update_address(self, address: str, port: int) -> None:
        if (address, port) != (self.address, self.port):
            self.address, self.port = address, port
            if self._proto is not None and self._proto.transport is not None:
                self._proto.transport.abort()

    async def _run(self) -> None:
        owner = self.owner
        loop = owner.loop
        attempt = 0
        while not self._closing:
            proto: _Outbound | None = None
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Outbound(self), self.address, self.port, ssl=owner.client_ssl,
                        server_hostname=self.address if owner.client_ssl is not None
                        else None),
                    owner.connect_timeout)
                assert proto is not None  # create_connection returned its protocol
                reply = await asyncio.wait_for(proto.hello, owner.connect_timeout)
                if (isinstance(reply, dict) and isinstance(reply.get("error"), dict)
                        and reply["error"].get("code") == MemberRefused.code):
                    refused = from_wire(reply["error"])  # the peer refuses us: say why
                    owner.report_refused(self.peer_id, refused)
                    raise refused
                if not isinstance(reply, dict) or reply.get("hello") != "ok":
                    reason = reply.get("error", {}).get("message") if isinstance(
                        reply, dict) else reply
                    raise ProtocolError(f"handshake refused: {reason}")
                if reply.get("node_id") != self.peer_id:
                    raise ProtocolError(f"{self.endpoint} is node {reply.get('node_id')}, "
                                        f"not node {self.peer_id}")
                gate = owner.peer_gate
                refusal = gate.check_peer(self.peer_id, reply) if gate is not None else None
                if refusal is not None:
                    owner.report_refused(self.peer_id, refusal)
                    raise refusal
                owner.refused.pop(self.peer_id, None)
            except asyncio.CancelledError:
                if proto is not None and proto.transport is not None:
                    proto.transport.abort()
                raise
            except (TimeoutError, OSError, PgraftError, ConnectionError) as exc:
                if proto is not None and proto.transport is not None:
                    proto.transport.abort()
                if not self._reported_failure and not isinstance(exc, MemberRefused):
                    self._reported_failure = True  # (report_refused logged a refusal)
                    if isinstance(exc, AuthenticationFailed | ssl.SSLError):
                        log.warning("node %d: peer %d at %s refused: %s", owner.node_id,
                                    self.peer_id, self.endpoint,
                                    exc.message if isinstance(exc, PgraftError)
                                    else describe_ssl_error(exc))
                    else:
                        log.info("node %d: peer %d at %s unreachable: %s", owner.node_id,
                                 self.peer_id, self.endpoint, exc or type(exc).__name__)
                attempt += 1
                await self._backoff(attempt)
                continue
            assert proto is not None  # the handshake above succeeded on it
            attempt = 0
            self._reported_failure = False
            self._proto = proto
            self.connected = True
            owner.metrics.peer_connects += 1
            log.info("node %d: connected to peer %d at %s", owner.node_id, self.peer_id,
                     self.endpoint)
            self.flush()
            try:
                exc2 = await proto.closed
            except asyncio.CancelledError:
                if proto.transport is not None:
                    proto.transport.abort()
                self.connected = False
                raise
            self.connected = False
            self._proto = None
            owner.metrics.peer_disconnects += 1
            if not self._closing:
                log.info("node %d: disconnected from peer %d at %s%s", owner.node_id,
                         self.peer_id, self.endpoint, f": {exc2}" if exc2 else "")
                owner.events.report_unreachable(self.peer_id)
                attempt = 1
                await self._backoff(attempt)

    async def _backoff(self, attempt: int) -> None:
        owner = self.owner
        delay = min(owner.backoff_max, owner.backoff_base * (2 ** min(attempt - 1, 16)))
        delay *= random.uniform(0.5, 1.0)
        if self._wake.is_set():  # kicked during the attempt that just failed: retry at once
            self._wake.clear()
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)
        self._wake.clear()

    def kick(self) -> None:
        """Retry a connection now instead of waiting out the backoff."""
        self._wake.set()

    async def close(self) -> None:
        self._closing = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.abort()
        self.connected = False
        self.queue.clear()
        self.queued_bytes = 0

# ------------------------------------------------------------------------------- peers
class Peers:
    """The outbound peer links of one node, and what is known about peers apart from the log.

    :meth:`attach` names who hears of a lost connection (the Node) before anything is sent."""

    events: PeerEvents

    def __init__(self, node_id: int, metrics: Metrics, *,
                 max_frame: int = MAX_FRAME_SIZE,
                 max_queue_frames: int = 4096, max_queue_bytes: int = 64 * 1024 * 1024,
                 max_write_buffer: int = 4 * 1024 * 1024, connect_timeout: float = 2.0,
                 backoff_base: float = 0.02, backoff_max: float = 1.0,
                 advertise: tuple[str, int] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 security: LoadedSecurity | None = None,
                 peer_gate: PeerGate | None = None) -> None:
        self.node_id = node_id
        #: Admits peers by cluster id and incarnation (None: every peer is admitted).
        self.peer_gate = peer_gate
        #: Peers refused by the gate, with the reason (shown by status; logged once each).
        self.refused: dict[int, PgraftError] = {}
        #: Cluster secret (None: no authentication) and TLS context (README: Security).
        self.secret = security.secret if security is not None else None
        self.client_ssl = security.client_ssl if security is not None else None
        self.metrics = metrics
        self.max_frame = max_frame
        self.max_queue_frames = max_queue_frames
        self.max_queue_bytes = max_queue_bytes
        self.max_write_buffer = max_write_buffer
        self.connect_timeout = connect_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.loop = loop or asyncio.get_running_loop()
        self.links: dict[int, PeerLink] = {}
        #: Where this node tells its peers it listens (sent in the peer hello).
        self.advertise = advertise
        #: Addresses that dialling peers announced in their hello: a node that was just added
        #: learns where the leader is before its log tells it.
        self.hints: dict[int, tuple[str, int]] = {}
        #: This node has no membership yet (the Node keeps it current): until it has one, every
        #: peer that dials it is dialled back at once (see dialled_by).
        self.waiting_to_join = True
        self._encode = core.encode_message

    def attach(self, events: PeerEvents) -> None:
        """``events`` hears of every lost connection (called once, before any link exists)."""
        self.events = events

    # ------------------------------------------------------ what the listener reports
    def report_refused(self, peer_id: int, refusal: PgraftError) -> None:
        """A peer failed the gate: say so once per reason, loudly (an operator must act)."""
        previous = self.refused.get(peer_id)
        self.refused[peer_id] = refusal
        if previous is None or previous.message != refusal.message:
            log.error("node %d: refused peer %d: %s (hint: %s)", self.node_id, peer_id,
                      refusal.message, refusal.hint)

    def admitted(self, peer_id: int) -> None:
        """A peer passed the gate: forget an earlier refusal."""
        self.refused.pop(peer_id, None)

    def announced(self, peer_id: int, address: str, port: int) -> None:
        """A peer that dialled us said where it listens."""
        self.hints[peer_id] = (address, port)

    def dialled_by(self, peer_id: int) -> None:
        """A peer just dialled us, so it is evidently up: dial it back now rather than when the
        backoff ends (up to backoff_max later). Its replies to us travel on that link: waiting
        for it delayed elections after a restart by up to a second."""
        link = self.links.get(peer_id)
        if link is not None and not link.connected:
            link.kick()
        elif link is None and self.waiting_to_join and peer_id in self.hints:
            # A node waiting to be added learns its peers from those that dial it; its first
            # reply (to the leader's probe) needs this link, so dial now instead of when that
            # reply is queued: the join is a few round trips shorter.
            address, port = self.hints[peer_id]
            self.links[peer_id] = PeerLink(self, peer_id, address, port)

    # ---------------------------------------------------------------- peers
    def set_peers(self, peers: dict[int, tuple[str, int]]) -> None:
        """Dial exactly ``peers`` (id -> (address, port)); this node's own id is skipped."""
        for peer_id in list(self.links):
            if peer_id not in peers:
                link = self.links.pop(peer_id)
                self.loop.create_task(link.close())
        for peer_id, (address, port) in peers.items():
            if peer_id == self.node_id:
                continue
            existing = self.links.get(peer_id)
            if existing is None:
                self.links[peer_id] = PeerLink(self, peer_id, address, port)
            else:
                existing.update_address(address, port)

    def send(self, messages: Iterable[_Message]) -> None:
        """Queue ``messages`` on their peers' links and write them out (one write per peer)."""
        links = self.links
        touched: list[PeerLink] = []
        encode = self._encode
        metrics = self.metrics
        for msg in messages:
            link = links.get(msg.dst)
            if link is None:
                hint = self.hints.get(msg.dst)
                if hint is None or msg.dst == self.node_id:
                    metrics.messages_dropped += 1
                    continue
                link = links[msg.dst] = PeerLink(self, msg.dst, hint[0], hint[1])
            frame = encode(msg)
            if len(frame) - 4 > self.max_frame:
                log.error("node %d: dropped a %d-byte message to peer %d: over the frame cap of %d",
                          self.node_id,
                          len(frame), msg.dst, self.max_frame)
                metrics.messages_dropped += 1
                continue
            if not link.queue:
                touched.append(link)
            link.enqueue(frame)
            metrics.messages_sent += 1
        for link in touched:
            link.flush()

    def peer_connected(self, peer_id: int) -> bool:
        link = self.links.get(peer_id)
        return link is not None and link.connected

    # -------------------------------------------------------------- shutdown
    async def close(self) -> None:
        links = list(self.links.values())
        self.links.clear()
        for link in links:
            await link.close()
