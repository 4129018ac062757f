"""The client side of ``docs/protocol.md`` as a sans-I/O state machine, in the manner of h11.

:class:`ClientProtocol` never touches a socket, a clock or an event loop: the shell (the asyncio
client in :mod:`pgraft.client.aio`, the blocking one in :mod:`pgraft.client.sync`) writes the
bytes it is given, feeds it the bytes it reads, tells it when a call's deadline passed or the
connection was lost, and acts on the events it returns::

    proto = ClientProtocol("127.0.0.1:7001")
    sock.sendall(proto.hello())
    for event in proto.receive_data(sock.recv(65536)):
        ...  # Send (write it), Ready, Reply, Failed, Closed (drop the connection)

It knows the handshake (with the cluster-secret proof of :mod:`pgraft.auth`), assigns request
ids, matches answers to them, rebuilds the node's errors with :func:`pgraft.errors.from_wire`,
and knows which ops write: a write that fails without an answer raises
:class:`~pgraft.errors.OutcomeUnknown` (its entry may have been appended), one that times out
:class:`~pgraft.errors.CommitTimeout`, one whose wait the caller interrupted
:class:`~pgraft.errors.InterruptedWrite`; a read gets :class:`~pgraft.errors.ConnectionFailed`,
:class:`~pgraft.errors.Timeout` or :class:`~pgraft.errors.Interrupted`.
"""

from __future__ import annotations

from .._impl import core
from ..errors import (
    CommitTimeout,
    ConnectionFailed,
    Interrupted,
    InterruptedWrite,
    OutcomeUnknown,
    PayloadTooLarge,
    PgraftError,
    ProtocolError,
    Timeout,
    from_wire,
)
from ..protocol import (
    HELLO_ERROR,
    HELLO_OK,
    MAX_FRAME_SIZE,  # read when a protocol is created, so a test can lower it here
    PROTOCOL_VERSION,
    WRITE_OPS,
    client_hello,
    encode_control,
)

TYPE_CHECKING = False  # typing only for the type checker: see pgraft/errors.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


_SAME_VERSION = "use the same pgraft version on both sides"


def wait_limit(timeout: float) -> float:
    """How long a shell waits for the answer to a call sent with ``timeout``: the node answers
    Timeout itself when ``timeout`` passes; its answer gets a moment to arrive."""
    return timeout + min(1.0, 0.05 + timeout * 0.1)


def interrupted(op: str, target: str, *, sent: bool, connecting: bool = False) -> Interrupted:
    """The error of call ``op`` to node ``target`` whose wait the caller interrupted:
    :class:`~pgraft.errors.InterruptedWrite` for a write whose request was ``sent`` (it may
    still commit), :class:`~pgraft.errors.Interrupted` otherwise (nothing changed)."""
    if not sent:
        where = "while connecting" if connecting else "before the request was sent"
        return Interrupted(f"{op}: the wait for node {target} was interrupted by the caller "
                           f"{where}; nothing was changed")
    if op in WRITE_OPS:
        return InterruptedWrite(
            f"{op}: the wait for the answer of node {target} was interrupted by the caller; "
            "its outcome is unknown (the write was sent and may still take effect)")
    return Interrupted(f"{op}: the wait for the answer of node {target} was interrupted by "
                       "the caller")


# ------------------------------------------------------------------------ events
class Event:
    """Something the shell must act on."""

    __slots__ = ()

    def __repr__(self) -> str:
        slots: tuple[str, ...] = self.__slots__
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in slots)
        return f"{type(self).__name__}({fields})"


class Send(Event):
    """Write ``data`` to the connection (the answer to the node's authentication challenge)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Ready(Event):
    """The handshake is done: requests may be sent. ``features``: what the node named in its
    hello answer (``pgraft.protocol.NODE_FEATURES``; none from a node of an earlier release)."""

    __slots__ = ("node_id", "features")

    def __init__(self, node_id: int | None, features: frozenset[str] = frozenset()) -> None:
        self.node_id = node_id
        self.features = features


class Reply(Event):
    """Call ``rid`` succeeded with ``result``."""

    __slots__ = ("rid", "result")

    def __init__(self, rid: int, result: Any) -> None:
        self.rid = rid
        self.result = result


class Failed(Event):
    """Call ``rid`` failed with ``error`` (the node's error, a timeout, a lost connection)."""

    __slots__ = ("rid", "error")

    def __init__(self, rid: int, error: PgraftError) -> None:
        self.rid = rid
        self.error = error


class Closed(Event):
    """The connection is unusable (lost, refused, or it broke the protocol); drop it. Comes
    once, after the ``Failed`` of every call that was in flight."""

    __slots__ = ("error",)

    def __init__(self, error: PgraftError) -> None:
        self.error = error


# ---------------------------------------------------------------------- protocol
_NEW, _GREETING, _READY = "new", "greeting", "ready"


class ClientProtocol:
    """One client connection's protocol state. ``target`` names the node in error messages;
    ``secret``: prove the cluster secret and require the node to prove it."""

    def __init__(self, target: str, *, secret: bytes | None = None,
                 max_frame_size: int | None = None) -> None:
        self.target = target
        self.max_frame_size = MAX_FRAME_SIZE if max_frame_size is None else max_frame_size
        self._decoder = core.FrameDecoder(self.max_frame_size)
        self._auth: Any = None  # pgraft.auth.ClientAuth until the node's challenge
        if secret is not None:
            from ..auth import ClientAuth  # hashlib, hmac, secrets: only with a secret

            self._auth = ClientAuth(secret, "client")
        self._state = _NEW
        self._pending: dict[int, str] = {}  # request id -> op, of the calls in flight
        self._next_id = 1
        self._failure: Callable[[], PgraftError] | None = None
        self.node_id: int | None = None
        """Id of the node (from its hello answer)."""
        self.features: frozenset[str] = frozenset()
        """The features the node named in its hello answer."""

    # ------------------------------------------------------------------ state
    @property
    def ready(self) -> bool:
        """The handshake is done and the connection is usable."""
        return self._state is _READY and self._failure is None

    @property
    def closed(self) -> bool:
        """The connection failed or was closed; nothing more can be sent."""
        return self._failure is not None

    @property
    def in_flight(self) -> int:
        """Calls sent and not answered, failed or forgotten yet."""
        return len(self._pending)

    def failure(self) -> PgraftError | None:
        """A fresh error saying why the connection is closed (None while it is open)."""
        return self._failure() if self._failure is not None else None

    # -------------------------------------------------------------- outgoing
    def hello(self) -> bytes:
        """The first frame to send."""
        if self._state is not _NEW:
            raise RuntimeError("hello() is sent once, first")
        self._state = _GREETING
        fields = self._auth.hello_fields() if self._auth is not None else {}
        return encode_control(client_hello(**fields))

    def send_request(self, op: str, args: dict[str, Any], timeout: float) -> tuple[int, bytes]:
        """Register a call and return its request id and frame. ``args`` gets the ``timeout``
        (the node enforces it too). Raises the connection's failure once it is closed, and
        PayloadTooLarge (registering nothing) for a frame over the limit."""
        failure = self._failure
        if failure is not None:
            raise failure()
        if self._state is not _READY:
            raise RuntimeError("send_request() before the handshake finished (wait for Ready)")
        rid = self._next_id
        self._next_id = rid + 1
        args["timeout"] = timeout
        frame = encode_control({"id": rid, "op": op, "args": args})
        if len(frame) - 4 > self.max_frame_size:
            raise PayloadTooLarge(f"{op} request of {len(frame)} bytes exceeds the frame limit "
                                  f"of {self.max_frame_size} bytes", hint="send smaller payloads")
        self._pending[rid] = op
        return rid, frame

    def forget(self, rid: int) -> None:
        """The caller gave up on ``rid`` (cancelled): a late answer to it is ignored."""
        self._pending.pop(rid, None)

    def expire(self, rid: int, timeout: float) -> Failed | None:
        """Call ``rid`` (sent with ``timeout``) got no answer in time: its failure, or None if
        it was answered meanwhile. The connection stays usable; a late answer is ignored."""
        op = self._pending.pop(rid, None)
        if op is None:
            return None
        if op in WRITE_OPS:
            return Failed(rid, CommitTimeout(
                f"{op} got no answer from node {self.target} within {timeout:g}s; its outcome "
                "is unknown (it may still take effect)",
                hint="check the node with `pgraft status` and read the state back before "
                     "retrying"))
        return Failed(rid, Timeout(
            f"{op} got no answer from node {self.target} within {timeout:g}s",
            hint="check the node with `pgraft status`; retry with a larger timeout if the "
                 "cluster is healthy"))

    def interrupt(self, rid: int) -> Failed | None:
        """The caller stopped waiting for call ``rid`` (sent): its failure, or None if it was
        answered meanwhile. The connection stays usable; a late answer is ignored."""
        op = self._pending.pop(rid, None)
        if op is None:
            return None
        return Failed(rid, interrupted(op, self.target, sent=True))

    # -------------------------------------------------------------- incoming
    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the connection; the events they complete, in order."""
        events: list[Event] = []
        if self._failure is not None:
            return events
        try:
            objs = self._decoder.feed(data)
        except PgraftError as exc:
            reason = exc.message
            return self.abort(lambda: ProtocolError(
                f"node {self.target} sent a malformed frame ({reason}); the connection was "
                "dropped and the outcome of calls in flight is unknown",
                hint="is that address a pgraft node of a compatible version?"))
        pending = self._pending
        for obj in objs:
            if self._failure is not None:
                break
            if self._state is not _READY:
                self._on_hello(obj, events)
                continue
            # The hot path of _on_response, inlined: the answer to a call in flight.
            if obj.__class__ is dict:
                rid = obj.get("id")
                if rid.__class__ is int and obj.get("ok") is True:
                    if pending.pop(rid, None) is not None:
                        events.append(Reply(rid, obj.get("result")))
                    continue
            self._on_response(obj, events)
        return events

    def _on_hello(self, obj: Any, events: list[Event]) -> None:
        auth = self._auth
        if auth is not None and not (isinstance(obj, dict) and obj.get("hello") == HELLO_ERROR):
            # The node's challenge (docs/security.md): check its proof, answer with ours.
            self._auth = None
            try:
                proof = auth.answer(obj)
            except PgraftError as exc:
                refused = exc
                events += self.abort(lambda: refused)
                return
            events.append(Send(encode_control(proof)))
            return
        if not isinstance(obj, dict) or obj.get("hello") not in (HELLO_OK, HELLO_ERROR):
            events += self.abort(lambda: ProtocolError(
                f"{self.target} did not answer the pgraft handshake",
                hint="is that address a pgraft node (and not e.g. PostgreSQL's port)?"))
            return
        if obj["hello"] == HELLO_ERROR:
            err = obj.get("error")
            wire = err if isinstance(err, dict) else {"message": str(err)}
            events += self.abort(lambda: from_wire(wire))
            return
        version = obj.get("version")
        if version != PROTOCOL_VERSION:
            events += self.abort(lambda: ProtocolError(
                f"node {self.target} speaks protocol version {version!r}, this client speaks "
                f"{PROTOCOL_VERSION}", hint=_SAME_VERSION))
            return
        node_id = obj.get("node_id")
        self.node_id = node_id if node_id.__class__ is int else None
        named = obj.get("features")
        if isinstance(named, list):
            self.features = frozenset(f for f in named if isinstance(f, str))
        self._state = _READY
        events.append(Ready(self.node_id, self.features))

    def _on_response(self, obj: Any, events: list[Event]) -> None:
        rid: Any = obj.get("id") if obj.__class__ is dict else None
        ok = obj.get("ok") if rid.__class__ is int else None
        if ok.__class__ is not bool:  # msgpack gives exact ints and bools
            shown = repr(obj)[:80]
            events += self.abort(lambda: ProtocolError(
                f"node {self.target} sent a response that is not a pgraft response: {shown}; "
                "the connection was dropped", hint=_SAME_VERSION))
            return
        if self._pending.pop(rid, None) is None:
            return  # an answer to a call that expired or was forgotten here
        if ok:
            events.append(Reply(rid, obj.get("result")))
            return
        err = obj.get("error")
        if not isinstance(err, dict):
            err = {"code": "protocol_error", "message": f"node {self.target} sent a failed "
                   f"response without an error: {err!r}"}
        events.append(Failed(rid, from_wire(err)))

    # -------------------------------------------------------------- failures
    def connection_lost(self, exc: BaseException | None = None) -> list[Event]:
        """The connection ended (EOF, reset): every call in flight fails."""
        if self._failure is not None:
            return []
        reason = f" ({exc})" if exc else ""
        target = self.target
        if self._state is not _READY:
            return self.abort(lambda: ConnectionFailed(
                f"connection to pgraft node at {target} was closed by the node during the "
                f"handshake{reason}",
                hint="the node may be stopping or have refused this client; see its log"))
        return self.abort(lambda: ConnectionFailed(
            f"connection to pgraft node at {target} was closed by the node{reason}; the "
            "outcome of calls in flight is unknown",
            hint="the node may have stopped or restarted; check it with `pgraft status` and "
                 "retry on a new connection"))

    def close(self) -> list[Event]:
        """The client closes the connection: every call in flight fails."""
        target = self.target
        events = self.abort(lambda: ConnectionFailed(
            f"the client closed its connection to node {target} while the call was in flight; "
            "its outcome is unknown", hint="keep the client open until every call has returned"))
        self._failure = lambda: ConnectionFailed(
            f"the client's connection to node {target} is closed",
            hint="connect again (pgraft.connect) to make more calls")
        return events

    def abort(self, failure: Callable[[], PgraftError]) -> list[Event]:
        """Fail the connection with errors made by ``failure`` (one per call in flight, and
        for every later call); the shell must drop the connection. Idempotent."""
        if self._failure is not None:
            return []
        self._failure = failure
        pending, self._pending = self._pending, {}
        events: list[Event] = []
        for rid, op in pending.items():
            err = failure()
            if op in WRITE_OPS:
                err = OutcomeUnknown(
                    f"{err.message}; the write was sent, so it may have taken effect",
                    hint="read the state back (pgraft_kv_get, pgraft_get_nodes, the log) "
                         "before retrying the write")
            events.append(Failed(rid, err))
        events.append(Closed(failure()))
        return events
