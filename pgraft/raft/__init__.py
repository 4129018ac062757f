"""The Raft core of pgraft: a deterministic, sans-I/O state machine (docs/design.md rule 1).

The runtime drives a :class:`RawNode` (rawnode.py: the Ready bookkeeping) with ticks, messages
and client calls and carries out the :class:`Ready` it produces (see :class:`Ready` for the
persistence contract and :mod:`pgraft.raft.membership` for when a configuration takes effect);
:class:`Raft` (core.py) is the state machine behind it, where every decision is made.
"""

import os as _os

from .. import _impl

if _impl.IMPLEMENTATION == "pure":
    # the compiled modules beside these sources need the compiled codec: run the sources
    _impl.import_sources_of(__name__, _os.path.dirname(__file__))

from .core import CAMPAIGN_TRANSFER, Config, Raft  # noqa: E402 (after the choice above)
from .log import RaftLog  # noqa: E402
from .membership import (  # noqa: E402
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
from .progress import Progress  # noqa: E402
from .rawnode import RawNode  # noqa: E402
from .storage import Compacted, MemoryStorage, Storage  # noqa: E402
from .types import (  # noqa: E402
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
