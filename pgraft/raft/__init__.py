"""The Raft core of pgraft: a deterministic, sans-I/O state machine (docs/design.md rule 1).

The runtime drives a :class:`RawNode` (rawnode.py: the Ready bookkeeping) with ticks, messages
and client calls and carries out the :class:`Ready` it produces (see :class:`Ready` for the
persistence contract and :mod:`pgraft.raft.membership` for when a configuration takes effect);
:class:`Raft` (core.py) is the state machine behind it, where every decision is made.
"""

from .core import CAMPAIGN_TRANSFER, Config, Raft
from .log import RaftLog
from .membership import (
    ADD_LEARNER,
    LEARNER,
    PROMOTE,
    REMOVE,
    VOTER,
    ConfChange,
    Member,
    Membership,
    decode_conf_change,
    encode_conf_change,
)
from .progress import Progress
from .rawnode import RawNode
from .storage import Compacted, MemoryStorage, Storage
from .types import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    PROBE,
    REPLICATE,
    SNAPSHOT,
    HardState,
    ProgressStatus,
    ReadState,
    Ready,
    SnapshotMeta,
    SoftState,
    Status,
)

__all__ = [
    "ADD_LEARNER", "CAMPAIGN_TRANSFER", "CANDIDATE", "FOLLOWER", "LEADER", "LEARNER",
    "PRE_CANDIDATE", "PROBE", "PROMOTE", "REMOVE", "REPLICATE", "SNAPSHOT", "VOTER",
    "Compacted", "ConfChange", "Config", "HardState", "Member", "Membership", "MemoryStorage",
    "Progress", "Raft", "RaftLog", "RawNode", "ReadState", "Ready", "SnapshotMeta", "SoftState",
    "Status", "ProgressStatus", "Storage", "decode_conf_change", "encode_conf_change",
]
