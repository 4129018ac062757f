"""pgraft: Raft consensus for PostgreSQL clusters.

``pgraft.IMPLEMENTATION`` is ``"compiled"`` when the Cython hot paths are in use and
``"pure"`` when the pure-Python twins are (extension missing, or ``PGRAFT_PUREPYTHON=1``).
"""

from ._impl import FALLBACK_REASON, IMPLEMENTATION
from .errors import (
    AuthenticationFailed,
    CommitTimeout,
    ConnectionFailed,
    DecodeError,
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

__version__ = "0.1.0"

__all__ = [
    "FALLBACK_REASON",
    "IMPLEMENTATION",
    "AuthenticationFailed",
    "CommitTimeout",
    "ConnectionFailed",
    "DecodeError",
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
]

from .client import AsyncClient, Client, Node, connect  # noqa: E402

__all__ += ["AsyncClient", "Client", "Node", "connect"]
