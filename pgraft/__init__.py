"""pgraft: Raft consensus for PostgreSQL clusters.

The face of the package: :func:`connect` and :class:`AsyncClient` (asyncio), :class:`Client`
(blocking), :class:`NodeInfo`, the errors, and ``IMPLEMENTATION``: ``"compiled"`` when the
Cython hot paths are in use, ``"pure"`` when the pure-Python twins are (extension missing, or
``PGRAFT_PUREPYTHON=1``; ``FALLBACK_REASON`` says why).

Everything but the errors is imported on first use (PEP 562): importing any submodule runs this
file first, and ``import pgraft.client.sync`` -- what the SQL functions run in a PostgreSQL
backend -- must not pay for asyncio, uvloop or the durable log.
"""

from __future__ import annotations

from .errors import (
    AuthenticationFailed,
    CommitTimeout,
    ConnectionFailed,
    DecodeError,
    Interrupted,
    InterruptedWrite,
    InvalidArgument,
    LeadershipTransferInProgress,
    MemberRefused,
    MembershipChangeInProgress,
    NodeExists,
    NotLeaderError,
    OutcomeUnknown,
    Overloaded,
    PayloadTooLarge,
    PgraftError,
    ProtocolError,
    StorageCorrupted,
    StorageError,
    StorageFormatError,
    StorageFull,
    Timeout,
    Unavailable,
    UnknownNode,
)

__version__ = "1.2.0"

__all__ = [
    "FALLBACK_REASON",
    "IMPLEMENTATION",
    "AsyncClient",
    "Client",
    "NodeInfo",
    "AuthenticationFailed",
    "CommitTimeout",
    "ConnectionFailed",
    "DecodeError",
    "Interrupted",
    "InterruptedWrite",
    "InvalidArgument",
    "LeadershipTransferInProgress",
    "MemberRefused",
    "MembershipChangeInProgress",
    "NodeExists",
    "NotLeaderError",
    "OutcomeUnknown",
    "Overloaded",
    "PayloadTooLarge",
    "PgraftError",
    "ProtocolError",
    "StorageCorrupted",
    "StorageError",
    "StorageFormatError",
    "StorageFull",
    "Timeout",
    "Unavailable",
    "UnknownNode",
    "__version__",
    "connect",
]

TYPE_CHECKING = False  # typing only for the type checker: see pgraft/errors.py
if TYPE_CHECKING:
    from typing import Any

    from ._impl import FALLBACK_REASON, IMPLEMENTATION
    from .client import AsyncClient, Client, NodeInfo, connect

# name -> (module, attribute) of what is imported on first use.
_LAZY = {
    "IMPLEMENTATION": ("pgraft._impl", "IMPLEMENTATION"),
    "FALLBACK_REASON": ("pgraft._impl", "FALLBACK_REASON"),
    "connect": ("pgraft.client.aio", "connect"),
    "AsyncClient": ("pgraft.client.aio", "AsyncClient"),
    "Client": ("pgraft.client.sync", "Client"),
    "NodeInfo": ("pgraft.client._nodeinfo", "NodeInfo"),
}


def __getattr__(name: str) -> Any:
    if name == "Node":
        import warnings

        warnings.warn("pgraft.Node is deprecated: use pgraft.NodeInfo (the name Node is the "
                      "node runtime's, pgraft.node.Node)", DeprecationWarning, stacklevel=2)
        name = "NodeInfo"
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'pgraft' has no attribute {name!r}")
    # __import__, not importlib.import_module: importing importlib (and warnings with it)
    # would cost the SQL functions' first call for nothing.
    value = getattr(__import__(where[0], fromlist=[where[1]]), where[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
