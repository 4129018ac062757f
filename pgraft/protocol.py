"""The wire contract of ``docs/protocol.md``, defined once for the node and the clients.

A frame is ``u32 length (little-endian, counting the kind byte) | u8 kind | body``; a CONTROL
body is msgpack (bytes as bin). The frame *decoder* is the compiled hot path
(``pgraft._impl.core.FrameDecoder``); the CONTROL *encoder* is here, because one reused msgpack
``Packer`` plus a struct header is faster than the codec's ``encode_control`` (which builds a
packer per call) and produces the same bytes.

This module is imported by the synchronous client inside PostgreSQL backends: it must stay
light (no asyncio, no frame codec, nothing the handshake does not need).
"""

from __future__ import annotations

import struct

import msgpack

# typing is imported for the type checker only: at run time it would cost the first pgraft
# call of a PostgreSQL session more than the rest of the client (pgraft/client/sync.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Version spoken in the hello of peers and clients; both sides must agree.
PROTOCOL_VERSION = 1
#: The node's Unix socket for local clients, inside its data directory.
SOCKET_NAME = "node.sock"
#: Default cap on one frame (length field, kind byte included), in bytes (DESIGN rule 7).
MAX_FRAME_SIZE = 64 * 1024 * 1024
#: Most frames a client or a node hands the socket in one write. Requests (answers) made in one
#: event-loop iteration are written together, but a burst of 256 answers would come back as
#: one burst of 256 requests, and client and node would take turns working instead of working
#: at once: written in runs of this many, the other side starts on the first while this one
#: makes the rest (256 appends in flight: about 1.4x the throughput of one write per burst).
WRITE_BATCH_FRAMES = 32
#: The asyncio client sends the appends of one event-loop iteration after its first as one
#: ``append_batch`` request of at most this many payloads (one request to decode, one waiter,
#: one deadline and one answer on the node for all of them, instead of one of each per append).
APPEND_BATCH_MAX = 64
#: Most payloads one ``append_batch`` request may carry (the node refuses more).
APPEND_BATCH_LIMIT = 1024
#: The features a node names in its hello answer (``"features"``): a client uses a request
#: only a node that names it understands (a node of an earlier release names none).
FEATURE_APPEND_BATCH = "append_batch"
NODE_FEATURES = (FEATURE_APPEND_BATCH,)
#: Frame kinds.
FRAME_RAFT = 1
FRAME_CONTROL = 2

#: The hello kinds of the connecting side, and the answers of the node.
HELLO_CLIENT = "client"
HELLO_PEER = "peer"
HELLO_OK = "ok"
HELLO_ERROR = "error"
HELLO_CHALLENGE = "challenge"

#: Requests that propose a log entry: one that fails without an answer, or is not committed
#: in time, has an unknown outcome (the client raises OutcomeUnknown / CommitTimeout, the
#: node answers CommitTimeout).
WRITE_OPS = frozenset(("append", "append_batch", "kv_put", "kv_delete", "add_node",
                       "remove_node", "ha_propose"))

_HEAD = struct.Struct("<IB")
# Not thread-safe in general, but ``pack`` runs as one C call under the GIL (no ``default=``
# hook calls back into Python), and a failed pack resets the buffer, so sharing it is safe.
_packer = msgpack.Packer(use_bin_type=True)


def encode_control(obj: Any) -> bytes:
    """The whole CONTROL frame of ``obj``: header and msgpack body."""
    body = _packer.pack(obj)
    return _HEAD.pack(len(body) + 1, FRAME_CONTROL) + body


def client_hello(**fields: Any) -> dict[str, Any]:
    """The first frame of a client connection (``fields``: the authentication offer)."""
    return {"hello": HELLO_CLIENT, "version": PROTOCOL_VERSION, **fields}


# The node's most frequent answer, ``{"id": N, "ok": true, "result": INT or true}``, is packed
# with one struct call: both integers as msgpack uint64 (valid msgpack that every decoder reads
# as the same ints), so the frame has a fixed length and its constant pieces are prebuilt.
_U64 = 1 << 64
_OK_INT_BODY = 1 + 3 + 9 + 3 + 1 + 7 + 9  # map3, "id", uint64, "ok", true, "result", uint64
_OK_TRUE_BODY = 1 + 3 + 9 + 3 + 1 + 7 + 1  # ... "result", true
_OK_INT = struct.Struct(">10sQ12sQ")
_OK_TRUE = struct.Struct(">10sQ12s")
_OK_INT_HEAD = _HEAD.pack(_OK_INT_BODY + 1, FRAME_CONTROL) + b"\x83\xa2id\xcf"
_OK_TRUE_HEAD = _HEAD.pack(_OK_TRUE_BODY + 1, FRAME_CONTROL) + b"\x83\xa2id\xcf"
_OK_INT_MID = b"\xa2ok\xc3\xa6result\xcf"
_OK_TRUE_TAIL = b"\xa2ok\xc3\xa6result\xc3"


def encode_result(rid: int, result: Any) -> bytes:
    """The frame of ``{"id": rid, "ok": true, "result": result}`` (the hot path of writes)."""
    if 0 <= rid < _U64:
        if result.__class__ is int and 0 <= result < _U64:
            return _OK_INT.pack(_OK_INT_HEAD, rid, _OK_INT_MID, result)
        if result is True:
            return _OK_TRUE.pack(_OK_TRUE_HEAD, rid, _OK_TRUE_TAIL)
    return encode_control({"id": rid, "ok": True, "result": result})


def encode_error(rid: Any, error: dict[str, Any]) -> bytes:
    """The frame of a failed request: ``error`` is ``PgraftError.to_wire()``."""
    return encode_control({"id": rid, "ok": False, "error": error})
