"""The TCP listener and the Unix socket server of one node: every inbound connection.

Wire format and handshake: ``docs/protocol.md``. Inbound connections are read-only for peers
(each peer writes on the connection it dialled: pgraft.node.peers) and request/response for
clients. The TCP port serves both peers and clients (the first CONTROL frame tells them apart);
``<data_dir>/node.sock`` serves clients. Before a connection is read: the admission limits
(connections in all, per address; the OS user of a Unix socket client); then the hello, the
cluster secret's challenge, TLS certificates, and for a peer the identity gate
(:class:`PeerGate`: cluster id and incarnation), so that a refused peer's messages never reach
the core.

Bounds (docs/design.md rule 7): every frame is capped by ``max_frame``, a handshake by
``HANDSHAKE_MAX_BYTES`` and ``handshake_timeout``, a client's requests in flight by
``max_client_inflight`` (pgraft.node.server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from typing import Any, Protocol, cast

from .._impl import core
from ..auth import RateLimitedLog, ServerChallenge, server_challenge
from ..errors import (
    AuthenticationFailed,
    DecodeError,
    Overloaded,
    PgraftError,
    ProtocolError,
    StorageError,
)
from ..protocol import (
    MAX_FRAME_SIZE,
    NODE_FEATURES,
    PROTOCOL_VERSION,
    WRITE_BATCH_FRAMES,
    encode_control,
    encode_result,
)
from .metrics import Metrics
from .security import HANDSHAKE_MAX_BYTES, LoadedSecurity, is_loopback

log = logging.getLogger("pgraft.transport")

#: Longest Unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
MAX_UNIX_PATH = 107

_Message = Any  # pgraft._impl.core.Message


class MessageSink(Protocol):
    """What the listener delivers peer traffic to (the Node)."""

    def receive_messages(self, messages: list[_Message]) -> None: ...


class ClientHandler(Protocol):
    """What the listener hands client requests to (pgraft.node.server.Server)."""

    def handle_request(self, conn: ClientConnection, request: Any) -> None: ...

    def connection_closed(self, conn: ClientConnection) -> None: ...


class PeerGate(Protocol):
    """Who may be a peer (pgraft.node.identity.NodeIdentity): the fields this node shows in
    the peer handshake, and the check of what a peer showed (a refusal, or None to admit it);
    what a check recorded must be durable (``persist``) before a message of the peer is
    stepped, so the listener answers a peer's handshake only then. Both sides of a peer
    connection check (pgraft.node.peers dials): the side that dials only sends on its link,
    and the peer's messages come in on the peer's own link, whose handshake waits."""

    def hello_fields(self) -> dict[str, str]: ...

    def check_peer(self, peer_id: int, fields: dict[str, Any]) -> PgraftError | None: ...

    @property
    def unsaved(self) -> bool: ...

    async def persist(self) -> None: ...


class PeerDirectory(Protocol):
    """What the listener tells the outbound side about peers (pgraft.node.peers.Peers)."""

    def report_refused(self, peer_id: int, refusal: PgraftError) -> None: ...

    def admitted(self, peer_id: int) -> None: ...

    def announced(self, peer_id: int, address: str, port: int) -> None: ...

    def dialled_by(self, peer_id: int) -> None: ...


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _describe(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "unix socket"


# ----------------------------------------------------------------------------- clients
class ClientConnection:
    """One client connection: responses are CONTROL frames; the first of an event-loop
    iteration is written at once, the rest of the iteration's together, in runs of at most
    ``WRITE_BATCH_FRAMES`` (see pgraft.protocol)."""

    __slots__ = ("_transport", "_out", "_scheduled", "_loop", "closed", "peer", "tasks",
                 "inflight")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._out: list[bytes] = []
        self._scheduled = False
        self.closed = False
        self.peer = _describe(transport)
        self.tasks: set[asyncio.Task[Any]] = set()
        #: Requests of this connection not answered yet (bounded: max_client_inflight).
        self.inflight = 0

    def send(self, obj: Any) -> None:
        if not self.closed:
            self._push(encode_control(obj))

    def send_result(self, rid: int, result: Any) -> None:
        """Send ``{"id": rid, "ok": true, "result": result}`` (the hot path of writes)."""
        if not self.closed:
            self._push(encode_result(rid, result))

    def _push(self, frame: bytes) -> None:
        # The first answer of an event-loop iteration is written at once (a lone answer does
        # not wait for the next iteration); the ones that follow it in the same iteration are
        # written together when it ends, or in runs of WRITE_BATCH_FRAMES before that.
        if self._scheduled:
            out = self._out
            out.append(frame)
            if len(out) >= WRITE_BATCH_FRAMES:
                self._out = []
                self._transport.writelines(out)
            return
        self._scheduled = True
        self._transport.write(frame)
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self.closed or not self._out:
            self._out.clear()
            return
        out = self._out
        self._out = []
        if len(out) == 1:
            self._transport.write(out[0])
        else:
            self._transport.writelines(out)

    def close(self) -> None:
        if not self.closed:
            self._flush()
            self.closed = True
            self._transport.close()


# ---------------------------------------------------------------------------- inbound
class _Inbound(asyncio.Protocol):
    """A connection accepted on the TCP port or the Unix socket."""

    def __init__(self, owner: Listener, allow_peers: bool) -> None:
        self._owner = owner
        self._allow_peers = allow_peers
        self._transport: asyncio.Transport | None = None
        self._decoder = core.FrameDecoder(owner.max_frame)
        self._mode: str | None = None  # None until the hello, then "peer" or "client"
        self._peer_id = 0
        self._client: ClientConnection | None = None
        self._where = "?"
        self._dropped = False
        self._auth: ServerChallenge | None = None  # while mode is "auth"
        self._hello_msg: dict[str, Any] = {}
        self._address: str | None = None  # remote IP, counted in owner._per_address
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._where = _describe(transport)
        set_nodelay(transport)
        owner = self._owner
        owner._inbound.add(self)
        refusal = owner._admit(self, transport)
        if refusal is not None:
            self._refuse(refusal)
            return
        self._timer = owner.loop.call_later(owner.handshake_timeout, self._handshake_expired)

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._mode in (None, "auth") and not self._dropped:
            self._drop(f"no handshake within {self._owner.handshake_timeout:g}s")

    def data_received(self, data: bytes) -> None:
        if self._dropped:
            return
        owner = self._owner
        try:
            items = self._decoder.feed(data)
        except DecodeError as exc:
            self._drop(f"malformed frame: {exc.message}")
            return
        if not items:
            if self._mode in (None, "auth") and self._decoder.pending_bytes > \
                    HANDSHAKE_MAX_BYTES:
                self._drop(f"handshake frame over {HANDSHAKE_MAX_BYTES} bytes")
            return
        mode = self._mode
        if mode == "recording":
            self._drop("frames sent before the handshake was answered")
            return
        if mode == "peer":
            owner.metrics.bytes_received += len(data)
            for item in items:
                if not isinstance(item, core.Message):
                    self._drop("CONTROL frame after a peer handshake")
                    return
                if item.src != self._peer_id or item.dst != owner.node_id:
                    self._drop(f"message from {item.src} to {item.dst} on the connection of "
                               f"peer {self._peer_id}")
                    return
            owner.metrics.messages_received += len(items)
            owner.sink.receive_messages(items)
            return
        if mode == "client":
            self._requests(items)
            return
        if self._decoder.pending_bytes > HANDSHAKE_MAX_BYTES:
            self._drop(f"handshake frame over {HANDSHAKE_MAX_BYTES} bytes")
            return
        if mode == "auth":
            if not self._proof(items[0]):
                return
        elif not self._hello(items[0]):
            return
        if self._mode == "auth":
            if len(items) > 1:
                self._refuse(AuthenticationFailed("frames sent before the authentication "
                                                  "challenge was answered"))
            return
        if len(items) > 1:
            rest = items[1:]
            if self._mode == "recording":
                self._drop("frames sent before the handshake was answered")
                return
            if self._mode == "client":
                self._requests(rest)
            else:
                for item in rest:
                    if not isinstance(item, core.Message):
                        self._drop("CONTROL frame after a peer handshake")
                        return
                owner.metrics.messages_received += len(rest)
                owner.sink.receive_messages(rest)

    def _hello(self, item: Any) -> bool:
        owner = self._owner
        transport = self._transport
        assert transport is not None
        if not isinstance(item, dict) or "hello" not in item:
            self._refuse("the first frame must be a CONTROL hello (docs/protocol.md)")
            return False
        if item.get("version") != PROTOCOL_VERSION:
            self._refuse(f"unsupported protocol version {item.get('version')!r}; this node "
                         f"speaks version {PROTOCOL_VERSION}")
            return False
        kind = item.get("hello")
        if kind == "peer":
            peer_id = item.get("node_id")
            if not self._allow_peers:
                self._refuse("peers connect over TCP, not the Unix socket")
                return False
            if isinstance(peer_id, bool) or not isinstance(peer_id, int) or peer_id <= 0:
                self._refuse(f"invalid peer node_id {peer_id!r}")
                return False
            if peer_id == owner.node_id:
                self._refuse(f"peer claims this node's own id {peer_id}")
                return False
            if owner.server_ssl is not None and not transport.get_extra_info("peercert"):
                self._refuse(AuthenticationFailed(
                    f"peer {peer_id} presented no TLS certificate",
                    hint="start every node with --tls-cert/--tls-key signed by the --tls-ca "
                         "of the others"))
                return False
            self._peer_id = peer_id
        elif kind != "client":
            self._refuse(f"unknown hello kind {kind!r}")
            return False
        self._hello_msg = item
        # The cluster secret: required over TCP; on the Unix socket the OS user is the
        # credential (README: Security), and a client that offers a proof still gets checked.
        secret = owner.secret
        if secret is not None and (self._allow_peers or "nonce" in item):
            try:
                self._auth = server_challenge(secret, item, owner.node_id)
            except AuthenticationFailed as exc:
                self._refuse(exc)
                return False
            self._mode = "auth"
            transport.write(encode_control(self._auth.challenge(PROTOCOL_VERSION)))
            return True
        self._accept()
        return True

    def _proof(self, item: Any) -> bool:
        auth = self._auth
        assert auth is not None
        self._auth = None
        try:
            auth.verify(item)
        except AuthenticationFailed as exc:
            self._refuse(exc)
            return False
        self._accept()
        return True

    def _accept(self) -> None:
        owner = self._owner
        transport = self._transport
        assert transport is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        item = self._hello_msg
        self._hello_msg = {}
        if item.get("hello") == "peer":
            peer_id = self._peer_id
            gate = owner.peer_gate
            if gate is not None:
                refusal = gate.check_peer(peer_id, item)
                if refusal is not None:
                    owner.peers.report_refused(peer_id, refusal)
                    self._refuse(refusal)
                    return
                if gate.unsaved:
                    # What it showed must be durable before it is answered (it sends nothing
                    # before the answer); the write runs on a worker thread meanwhile.
                    self._mode = "recording"
                    task = owner.loop.create_task(self._admit_when_recorded(gate, item))
                    owner._recording.add(task)
                    task.add_done_callback(owner._recording.discard)
                    return
            self._admit_peer(item)
            return
        self._mode = "client"
        self._client = ClientConnection(transport, owner.loop)
        owner.metrics.client_connections += 1
        transport.write(encode_control(
            {"hello": "ok", "node_id": owner.node_id, "version": PROTOCOL_VERSION,
             "features": list(NODE_FEATURES)}))

    async def _admit_when_recorded(self, gate: PeerGate, item: dict[str, Any]) -> None:
        owner = self._owner
        try:
            async with asyncio.timeout(owner.handshake_timeout):
                await gate.persist()
        except PgraftError as exc:  # the data directory cannot be written: refused, logged
            if not self._dropped:
                self._refuse(exc)
            return
        except TimeoutError:
            if not self._dropped:
                self._refuse(StorageError(
                    f"recording peer {self._peer_id} took over {owner.handshake_timeout:g}s",
                    hint="the data directory's disk is stalled; the peer dials again"))
            return
        except Exception as exc:  # a bug must not leave the connection waiting forever
            log.exception("node %d: recording peer %d failed", owner.node_id, self._peer_id)
            if not self._dropped:
                self._refuse(PgraftError(f"internal error while recording peer "
                                         f"{self._peer_id}: {exc}"))
            return
        if not self._dropped and self._transport is not None \
                and not self._transport.is_closing():
            self._admit_peer(item)

    def _admit_peer(self, item: dict[str, Any]) -> None:
        owner = self._owner
        transport = self._transport
        assert transport is not None
        peer_id = self._peer_id
        peers = owner.peers
        gate = owner.peer_gate
        if gate is not None:
            peers.admitted(peer_id)
        self._mode = "peer"
        address, port = item.get("address"), item.get("port")
        if (isinstance(address, str) and address and isinstance(port, int)
                and not isinstance(port, bool) and 0 < port < 65536):
            peers.announced(peer_id, address, port)
        peers.dialled_by(peer_id)  # it is evidently up: dial it back now
        ok: dict[str, Any] = {"hello": "ok", "node_id": owner.node_id,
                              "version": PROTOCOL_VERSION}
        if gate is not None:
            ok.update(gate.hello_fields())
        transport.write(encode_control(ok))
        log.debug("node %d: inbound peer %d connected from %s", owner.node_id, peer_id,
                  self._where)

    def _requests(self, items: list[Any]) -> None:
        client = self._client
        assert client is not None
        handler = self._owner.client_handler
        for item in items:
            if not isinstance(item, dict):
                self._drop("a client request must be a CONTROL map")
                return
            handler.handle_request(client, item)

    def _refuse(self, reason: str | PgraftError) -> None:
        transport = self._transport
        assert transport is not None
        if isinstance(reason, PgraftError):
            err = reason
        else:
            err = ProtocolError(reason, hint="connect with a pgraft client or node of the same "
                                             "version")
        self._owner.rlog.warning(err.code, "node %d: refused connection from %s: %s",
                                 self._owner.node_id, self._where, err.message)
        self._owner.metrics.frames_rejected += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport.write(encode_control({"hello": "error", "error": err.to_wire()}))
        self._dropped = True
        transport.close()

    def _drop(self, reason: str) -> None:
        transport = self._transport
        assert transport is not None
        who = f"peer {self._peer_id}" if self._mode == "peer" else (
            "client" if self._mode == "client" else "connection")
        self._owner.rlog.warning("dropped", "node %d: dropped %s from %s: %s",
                                 self._owner.node_id, who, self._where, reason)
        self._owner.metrics.frames_rejected += 1
        self._dropped = True
        transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._inbound.discard(self)
        self._owner._release(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._mode == "auth" and not self._dropped:
            self._owner.rlog.warning(
                "authentication_failed", "node %d: connection from %s closed during "
                "authentication (the other side holds a different cluster secret?)",
                self._owner.node_id, self._where)
        if not self._dropped and self._decoder.pending_bytes:
            who = f"peer {self._peer_id}" if self._mode == "peer" else (
                "client" if self._mode == "client" else "connection")
            log.warning("node %d: %s from %s closed in the middle of a frame (%d bytes "
                        "discarded)", self._owner.node_id, who, self._where,
                        self._decoder.pending_bytes)
            self._owner.metrics.frames_rejected += 1
        if self._client is not None:
            self._client.closed = True
            self._owner.client_handler.connection_closed(self._client)
            self._client = None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


# ---------------------------------------------------------------------------- listener
class Listener:
    """The TCP listener and the Unix socket of one node."""

    def __init__(self, node_id: int, host: str, port: int, sink: MessageSink,
                 client_handler: ClientHandler, metrics: Metrics, peers: PeerDirectory, *,
                 unix_path: str | None = None, max_frame: int = MAX_FRAME_SIZE,
                 loop: asyncio.AbstractEventLoop | None = None,
                 security: LoadedSecurity | None = None,
                 peer_gate: PeerGate | None = None) -> None:
        self.node_id = node_id
        #: Admits peers by cluster id and incarnation (None: every peer is admitted).
        self.peer_gate = peer_gate
        #: Told of refused, admitted and announcing peers (pgraft.node.peers.Peers).
        self.peers = peers
        #: Cluster secret (None: no authentication) and TLS context (README: Security).
        self.secret = security.secret if security is not None else None
        self.server_ssl = security.server_ssl if security is not None else None
        limits = security.config if security is not None else None
        self.max_connections = limits.max_connections if limits else 1024
        self.max_connections_per_address = limits.max_connections_per_address if limits \
            else 64
        self.handshake_timeout = limits.handshake_timeout if limits else 10.0
        self._per_address: dict[str, int] = {}
        self.rlog = RateLimitedLog(log)
        self.host = host
        self.port = port
        self.sink = sink
        self.client_handler = client_handler
        self.metrics = metrics
        self.unix_path = unix_path
        self.max_frame = max_frame
        self.loop = loop or asyncio.get_running_loop()
        self._inbound: set[_Inbound] = set()
        self._recording: set[asyncio.Task[None]] = set()  # handshakes waiting for a record
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        loop = self.loop
        server = await loop.create_server(lambda: _Inbound(self, True), self.host, self.port,
                                          reuse_address=True, backlog=1024,
                                          ssl=self.server_ssl,
                                          ssl_handshake_timeout=self.handshake_timeout
                                          if self.server_ssl is not None else None)
        self._servers.append(server)
        if self.secret is None and not is_loopback(self.host):
            log.warning("node %d listens on %s without a cluster secret: anyone who can reach "
                        "this port can read the cluster and change its membership; use this "
                        "only on a trusted network, or start it with --secret-file (see "
                        "README: Security)", self.node_id, self.host)
        if self.port == 0:
            self.port = server.sockets[0].getsockname()[1]
        if self.unix_path is not None:
            path = self.unix_path
            if len(os.fsencode(path)) > MAX_UNIX_PATH:
                raise StorageError(f"Unix socket path {path} is longer than {MAX_UNIX_PATH} "
                                   "bytes", hint="use a shorter data directory path")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
            sock.listen(1024)
            sock.setblocking(False)
            userver = await loop.create_unix_server(lambda: _Inbound(self, False), sock=sock)
            self._servers.append(userver)

    # ------------------------------------------------------------ admission
    def _admit(self, conn: _Inbound, transport: asyncio.Transport) -> PgraftError | None:
        """Count a new inbound connection; the error to refuse it with when over a limit, or
        when a Unix socket client is another OS user."""
        if len(self._inbound) > self.max_connections:
            return Overloaded(f"node {self.node_id} has {self.max_connections} connections "
                              "open, its limit", hint="close idle clients, or raise "
                                                      "--max-connections")
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            address = str(peer[0])
            count = self._per_address.get(address, 0)
            if count >= self.max_connections_per_address:
                return Overloaded(f"{count} connections from {address} are open, the limit "
                                  "per address", hint="reuse connections, or raise "
                                                      "--max-connections-per-address")
            self._per_address[address] = count + 1
            conn._address = address
            return None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
                uid = struct.unpack("3i", creds)[1]
                if uid not in (os.geteuid(), 0):
                    return AuthenticationFailed(
                        f"uid {uid} may not use the socket of node {self.node_id}",
                        hint="connect as the node's OS user, or over TCP with the secret")
        return None

    def _release(self, conn: _Inbound) -> None:
        address = conn._address
        if address is not None:
            conn._address = None
            count = self._per_address.get(address, 0) - 1
            if count > 0:
                self._per_address[address] = count
            else:
                self._per_address.pop(address, None)

    # -------------------------------------------------------------- shutdown
    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self._inbound):
            conn.abort()
        for task in list(self._recording):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)
