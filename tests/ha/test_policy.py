"""The lease policy's choices, one situation at a time (the simulation covers sequences)."""

from __future__ import annotations

from pgraft.ha.lease import LeaseSettings
from pgraft.ha.policy import Bootstrap, LeasePolicy, Promote, Transfer, choose_replica
from pgraft.ha.records import HaState
from pgraft.ha.types import PG_MISSING, PG_PRIMARY, PG_REPLICA, PG_STOPPED, PgObservation

SYSID = 7


def replica(lsn: int, timeline: int = 2, sysid: int = SYSID) -> PgObservation:
    return PgObservation(role=PG_REPLICA, timeline=timeline, received_lsn=lsn,
                         replayed_lsn=lsn, system_id=sysid)


def state(primary: int = 1, timeline: int = 2) -> HaState:
    return HaState(epoch=3, primary_id=primary, lease_index=40, system_id=SYSID,
                   timeline=timeline)


def test_the_most_up_to_date_replica_is_chosen_and_the_leader_wins_ties() -> None:
    reports = {2: replica(100), 3: replica(200), 4: replica(200)}
    assert choose_replica(state(), reports) == (3, 200)
    assert choose_replica(state(), reports, prefer=4) == (4, 200)


def test_the_old_primary_another_cluster_and_stopped_servers_are_not_eligible() -> None:
    reports = {1: replica(999), 2: replica(500, sysid=8),
               3: PgObservation(role=PG_STOPPED, system_id=SYSID), 4: replica(10)}
    assert choose_replica(state(), reports) == (4, 10)


def test_a_replica_on_a_newer_timeline_than_the_log_knows_is_not_eligible() -> None:
    assert choose_replica(state(timeline=2), {2: replica(100, timeline=3)}) is None


def test_a_replica_on_an_older_timeline_is_never_chosen() -> None:
    # Its LSN is not comparable with the current timeline's: promoting it would discard what
    # the current timeline committed. (The observation reports the newest timeline a replica
    # switched to, from its history files: tests/ha/test_pgctl.py.)
    reports = {2: replica(100, timeline=1), 3: replica(300, timeline=1)}
    assert choose_replica(state(timeline=2), reports) is None
    reports[4] = replica(150, timeline=2)
    assert choose_replica(state(timeline=2), reports) == (4, 150)


def test_the_leader_bootstraps_only_a_suitable_directory() -> None:
    pol = LeasePolicy(1, LeaseSettings())
    empty = HaState()
    assert pol.leader_step(0.0, empty, None, can_bootstrap=True, reports=None,
                           primary_reachable=False) == Bootstrap(1)
    assert pol.leader_step(0.0, empty, None, can_bootstrap=False, reports=None,
                           primary_reachable=False) is None


def test_the_leader_promotes_only_after_the_expiry_span() -> None:
    s = LeaseSettings()
    pol = LeasePolicy(2, s)
    ha = state(primary=1)
    reports = {2: replica(100), 3: replica(50)}
    before = pol.leader_step(s.expiry_span - 0.001, ha, 0.0, can_bootstrap=False,
                             reports=reports, primary_reachable=False)
    assert before is None
    after = pol.leader_step(s.expiry_span, ha, 0.0, can_bootstrap=False,
                            reports=reports, primary_reachable=False)
    assert after == Promote(2, 4, 3, 40, "the lease of node 1 (epoch 3) expired", 100)


def test_a_leader_that_is_not_the_primary_hands_leadership_over() -> None:
    pol = LeasePolicy(2, LeaseSettings())
    assert pol.leader_step(10.5, state(primary=1), 10.0, can_bootstrap=False, reports=None,
                           primary_reachable=True) == Transfer(1)


def test_the_holder_counts_from_before_it_proposed_and_only_once_committed() -> None:
    s = LeaseSettings()
    pol = LeasePolicy(1, s)
    ha = state(primary=1)
    renew = pol.holder_step(100.0, ha, PgObservation(role=PG_PRIMARY))
    assert renew is not None and renew.started_at == 100.0
    assert not pol.lease_valid(100.1, ha)          # not committed yet
    pol.renewed(renew.started_at, renew.epoch, True, renew.duration)
    assert pol.lease_valid(100.0 + s.duration - 0.001, ha)
    assert not pol.lease_valid(100.0 + s.duration, ha)


def test_a_refused_renewal_gives_no_lease_and_a_demoted_holder_drops_it() -> None:
    pol = LeasePolicy(1, LeaseSettings())
    ha = state(primary=1)
    renew = pol.holder_step(0.0, ha, PgObservation(role=PG_PRIMARY))
    assert renew is not None
    pol.renewed(renew.started_at, renew.epoch, False)
    assert not pol.lease_valid(0.1, ha)
    renew = pol.holder_step(1.0, ha, PgObservation(role=PG_PRIMARY))
    assert renew is not None
    pol.renewed(renew.started_at, renew.epoch, True)
    assert pol.lease_valid(1.1, ha)
    assert not pol.lease_valid(1.1, state(primary=2))


def test_a_primary_whose_postgres_stays_down_goes_silent_then_tries_again() -> None:
    s = LeaseSettings(restart_grace=5.0)
    pol = LeasePolicy(1, s)
    ha = state(primary=1)
    down = PgObservation(role=PG_MISSING)
    renewals = []
    t = 0.0
    while t < 16.0:
        r = pol.holder_step(t, ha, down)
        if r is not None:
            pol.renewed(r.started_at, r.epoch, True, r.duration)
            renewals.append(t)
        t += s.renew_interval
    # Renewing for the grace (restarting in place), silent for as long (the cluster may
    # promote a replica), then trying again: a primary whose server could not start for a
    # while, with nobody to take over, comes back by itself.
    assert renewals[0] == 0.0 and 4.5 <= max(r for r in renewals if r < 10) <= 5.0
    assert not [r for r in renewals if 5.5 <= r <= 10.0]
    assert [r for r in renewals if r > 10.0]


def test_the_cluster_lease_from_the_bootstrap_is_used_not_this_nodes_flags() -> None:
    pol = LeasePolicy(2, LeaseSettings(duration=2.0))
    ha = state(primary=1)
    ha.lease = (10_000, 10_000, 100)   # the cluster was bootstrapped with a 10 s lease
    assert not pol.lease_expired(3.0, ha, 0.0)
    assert pol.lease_expired(10.0 * 1.01 / 0.99 + 0.1, ha, 0.0)
