"""The :class:`~pgraft.ha.health.HealthView` of a running node (the HTTP endpoints' source),
with or without HA mode."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .health import HealthView
from .lease import lease_clock
from .types import PG_UNKNOWN, PgObservation

if TYPE_CHECKING:
    from ..node.node import Node


def health_view(node: Node) -> HealthView:
    raw = node.raw
    st = raw.status()
    state = node.state
    ha = state.ha
    controller: Any = node.ha
    role = st.role
    if role != "leader" and not state.members.is_voter(node.node_id) \
            and node.node_id in state.members:
        role = "learner"
    peer_lag = {}
    if st.role == "leader":
        peer_lag = {i: max(0, st.last_index - p.match) for i, p in st.progress.items()
                    if i != node.node_id}
    members: list[dict[str, Any]] = [
        {"node_id": i, "address": m.address, "port": m.port, "raft_role": m.role,
         "is_leader": i == st.leader_id,
         "pg_endpoint": None if i not in ha.endpoints
         else f"{ha.endpoints[i].host}:{ha.endpoints[i].pg_port}",
         "is_primary": i == ha.primary_id}
        for i, m in state.members.items()]
    if controller is None:
        pg = PgObservation(role=PG_UNKNOWN)
        lease_valid, remaining = False, None
    else:
        now = lease_clock()
        pg = controller.obs
        lease_valid = controller.policy.lease_valid(now, ha)
        remaining = int(controller.policy.lease_remaining(now, ha) * 1000) if lease_valid \
            else None
    return HealthView(
        node_id=node.node_id, running=node.running, ha_mode=controller is not None,
        raft_role=role, raft_term=st.term, raft_leader=st.leader_id or None,
        commit_index=st.commit, applied_index=state.applied_index, pg=pg,
        lease_valid=lease_valid, lease_remaining_ms=remaining, epoch=ha.epoch,
        primary_id=ha.primary_id, failovers=ha.failovers, members=members,
        commit_latency=node.metrics.commit_latency, peer_lag=peer_lag)
