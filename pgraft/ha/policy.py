"""The HA decisions, sans I/O: who renews, who may commit, whom to promote.

No clock, no sockets, no PostgreSQL: the caller passes its monotonic time and what it
observed, and carries out the returned action (pgraft.ha.controller in a node, the seeded
simulation in tests/ha/test_policy_sim.py). The arithmetic behind the lease is in
pgraft.ha.lease, the log commands in pgraft.ha.records.

Two roles, both in :class:`LeasePolicy`:

- **the holder** (the node the log names as primary) renews every ``renew_interval`` while
  its PostgreSQL runs as primary (or is being restarted in place, for at most
  ``restart_grace``); it may accept commits only while :meth:`LeasePolicy.lease_valid`;
- **the Raft leader** bootstraps the first primary, and when the primary's lease has expired
  on its clock (by ``expiry_span`` since it applied the last renewal) promotes the most
  up-to-date eligible replica, naming the epoch and renewal it saw expire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .lease import LeaseSettings, expired_for_others
from .records import HaState
from .types import PG_MISSING, PG_PRIMARY, PG_REPLICA, PgObservation


@dataclass(frozen=True)
class Renew:
    """Propose ``["renew", node, epoch]``; report the outcome with
    :meth:`LeasePolicy.renewed` (``started_at`` is the local time the renewal counts from,
    ``duration`` how long it is counted on: the cluster's recorded lease)."""

    epoch: int
    started_at: float
    duration: float


@dataclass(frozen=True)
class Bootstrap:
    """Propose ``["bootstrap", node, ...]``: this node becomes the first primary."""

    node_id: int


@dataclass(frozen=True)
class Promote:
    """Propose ``["promote", node_id, new_epoch, epoch, lease_index, reason]``."""

    node_id: int
    new_epoch: int
    epoch: int
    lease_index: int
    reason: str
    received_lsn: int | None


@dataclass(frozen=True)
class Transfer:
    """Hand Raft leadership to the primary's node (so that "the leader" is the primary)."""

    node_id: int


LeaderAction = Bootstrap | Promote | Transfer


def eligible(ha: HaState, node_id: int, report: PgObservation) -> bool:
    """Whether ``report`` shows a replica that may become primary: a replica of this
    cluster's PostgreSQL (same system identifier), on the current timeline when the log knows
    it, with a known position, and not the primary whose lease expired."""
    if node_id == ha.primary_id or report.role != PG_REPLICA or report.received_lsn is None:
        return False
    if ha.system_id is not None and report.system_id != ha.system_id:
        return False
    return ha.timeline is None or report.timeline is None or report.timeline == ha.timeline


def choose_replica(ha: HaState, reports: Mapping[int, PgObservation],
                   prefer: int | None = None) -> tuple[int, int] | None:
    """(node id, received LSN) of the most up-to-date eligible replica; among equals
    ``prefer`` (the leader itself: no leadership transfer needed), then the lowest id.

    A replica on an older timeline than the log's is never chosen: its LSN is not comparable
    with the current timeline's, and promoting it would discard what the current timeline
    committed (and could reuse its timeline id). The observation reports the newest timeline
    a replica has switched to, from its timeline history files, so a replica whose upstream
    died still counts as on the current timeline."""
    best: tuple[int, int] | None = None
    for node_id in sorted(reports):
        report = reports[node_id]
        if not eligible(ha, node_id, report):
            continue
        lsn = report.received_lsn
        assert lsn is not None
        if (best is None or lsn > best[1]
                or (lsn == best[1] and node_id == prefer and best[0] != prefer)):
            best = (node_id, lsn)
    return best


class LeasePolicy:
    """One node's HA decisions (holder side and leader side)."""

    def __init__(self, node_id: int, settings: LeaseSettings) -> None:
        settings.validate()
        self.node_id = node_id
        #: This node's settings; the lease arithmetic uses :meth:`settings_for` (the
        #: cluster's recorded duration, drift bound and margin once bootstrapped).
        self.settings = settings
        self._deadline = float("-inf")
        self._deadline_epoch = 0
        self._renew_started: float | None = None  # a renewal in flight
        self._last_renew_start = float("-inf")
        self._pg_down_since: float | None = None

    def settings_for(self, ha: HaState) -> LeaseSettings:
        return self.settings.for_cluster(ha.lease)

    # ------------------------------------------------------------------ holder side
    def lease_valid(self, now: float, ha: HaState) -> bool:
        """Whether this node may accept commits now: the log names it primary and a renewal
        of this epoch that it started less than ``duration`` ago has committed."""
        return (ha.primary_id == self.node_id and ha.epoch == self._deadline_epoch
                and now < self._deadline)

    def lease_remaining(self, now: float, ha: HaState) -> float:
        """Seconds left on this node's lease (0 when it holds none)."""
        return max(0.0, self._deadline - now) if self.lease_valid(now, ha) else 0.0

    def deadline(self, ha: HaState) -> float | None:
        """The local time until which this node's lease is valid (None: it holds none)."""
        if ha.primary_id != self.node_id or ha.epoch != self._deadline_epoch:
            return None
        return self._deadline

    def holder_step(self, now: float, ha: HaState, pg: PgObservation) -> Renew | None:
        """The renewal to propose now, if any.

        While PostgreSQL runs as primary, every ``renew_interval``. While it does not (just
        promoted, bootstrapping, being restarted in place), for at most ``restart_grace``;
        then the holder stays silent for as long again, so that the leader may promote a
        replica, and tries again after that if nobody was (a primary whose server could not
        start for a while, with no replica to take over, comes back by itself)."""
        s = self.settings_for(ha)
        if ha.primary_id != self.node_id or ha.epoch == 0:
            self._pg_down_since = None
            return None
        if pg.role == PG_PRIMARY:
            self._pg_down_since = None
        else:
            if self._pg_down_since is None:
                self._pg_down_since = now
            down = now - self._pg_down_since
            if down > s.restart_grace:
                if down <= 2 * s.restart_grace:
                    return None  # silent: the cluster may fail over now
                self._pg_down_since = now  # nobody took over: try again
        if self._renew_started is not None:
            if now - self._renew_started < s.duration:
                return None
            self._renew_started = None  # never answered: count it lost
        if now - self._last_renew_start < s.renew_interval:
            return None
        self._renew_started = self._last_renew_start = now
        return Renew(ha.epoch, now, s.duration)

    def renewed(self, started_at: float, epoch: int, took_effect: bool,
                duration: float | None = None) -> None:
        """The outcome of the renewal started at ``started_at`` (False: refused by the log,
        failed, or unknown); ``duration``: the :class:`Renew`'s."""
        if self._renew_started == started_at:
            self._renew_started = None
        if not took_effect:
            return
        deadline = started_at + (self.settings.duration if duration is None else duration)
        if epoch != self._deadline_epoch:
            self._deadline_epoch, self._deadline = epoch, deadline
        elif deadline > self._deadline:
            self._deadline = deadline

    def drop_lease(self) -> None:
        """Forget the lease (another node was promoted, or this node stops)."""
        self._deadline = float("-inf")
        self._renew_started = None

    # ------------------------------------------------------------------ leader side
    def lease_expired(self, now: float, ha: HaState, seen_at: float) -> bool:
        """Whether the primary's lease has expired on every clock within the bound, judged
        by this node, which applied the lease's last renewal at local ``seen_at``."""
        return expired_for_others(self.settings_for(ha), seen_at, now)

    def leader_step(self, now: float, ha: HaState, seen_at: float | None, *,
                    can_bootstrap: bool, reports: Mapping[int, PgObservation] | None,
                    primary_reachable: bool) -> LeaderAction | None:
        """What the Raft leader (with its term's entries applied) does now. ``reports``:
        fresh observations from the members that answered (None: not collected yet; the
        caller collects them when this returns None with :meth:`needs_reports`)."""
        if ha.epoch == 0:
            return Bootstrap(self.node_id) if can_bootstrap else None
        if seen_at is None or not self.lease_expired(now, ha, seen_at):
            if (ha.primary_id is not None and ha.primary_id != self.node_id
                    and primary_reachable):
                return Transfer(ha.primary_id)
            return None
        if reports is None:
            return None
        if ha.system_id is None:
            # The first primary never finished initdb: start over on a node with nothing.
            empty = sorted(i for i, r in reports.items()
                           if r.role == PG_MISSING and i != ha.primary_id)
            if not empty:
                return None
            target = self.node_id if self.node_id in empty else empty[0]
            return Promote(target, ha.epoch + 1, ha.epoch, ha.lease_index,
                           "the first primary's lease expired before it was initialized", None)
        choice = choose_replica(ha, reports, prefer=self.node_id)
        if choice is None:
            return None
        node_id, lsn = choice
        return Promote(node_id, ha.epoch + 1, ha.epoch, ha.lease_index,
                       f"the lease of node {ha.primary_id} (epoch {ha.epoch}) expired", lsn)

    def needs_reports(self, now: float, ha: HaState, seen_at: float | None) -> bool:
        """Whether :meth:`leader_step` would act on reports: the lease has expired."""
        return ha.epoch != 0 and seen_at is not None and self.lease_expired(now, ha, seen_at)
