"""What the HTTP endpoints read of a node: one immutable snapshot per request.

The node builds a :class:`HealthView` when asked (a :data:`HealthSource`); the HTTP server
(:mod:`.http`) and the Prometheus export (:mod:`.promexport`) only read it, so they never touch
the node's state and can be tested with a hand-made view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..node.metrics import Histogram
from .types import PgObservation

#: Raft roles as the core names them.
RAFT_ROLES = ("leader", "follower", "candidate", "pre-candidate", "learner")


@dataclass(frozen=True)
class HealthView:
    """One node at one moment, as the load balancer endpoints and /metrics see it."""

    node_id: int
    running: bool                 # the node runs (False while stopping)
    ha_mode: bool                 # started with --postgres
    raft_role: str                # one of RAFT_ROLES
    raft_term: int
    raft_leader: int | None
    commit_index: int
    applied_index: int
    pg: PgObservation             # role PG_UNKNOWN when not ha_mode
    lease_valid: bool             # this node holds a valid primary lease on its own clock
    lease_remaining_ms: int | None
    epoch: int
    primary_id: int | None        # the primary the log names
    failovers: int                # failovers this node has seen applied
    #: /cluster "members" rows (node_id, address, port, raft role, pg_role, timeline, LSNs,
    #: lag_bytes, state ...): JSON-serializable values.
    members: list[dict[str, Any]] = field(default_factory=list)
    commit_latency: Histogram | None = None  # commit latency, seconds
    peer_lag: dict[int, int] = field(default_factory=dict)  # peer -> entries behind (leader)


#: Called once per HTTP request; must be cheap and must not block.
HealthSource = Callable[[], HealthView]
