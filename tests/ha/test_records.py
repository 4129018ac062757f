"""The HA log commands: compare-and-set semantics, snapshots, bad input."""

from __future__ import annotations

import pytest

from pgraft.errors import InvalidArgument
from pgraft.ha.lease import LeaseSettings
from pgraft.ha.records import HaState, check_command, encode
from pgraft.state import AppliedState, encode_ha

LEASE = [2000, 10_000, 100]


def applied(*commands: list[object]) -> tuple[HaState, list[bool]]:
    ha = HaState()
    results = [ha.apply(i, encode(c))[1] for i, c in enumerate(commands, start=1)]
    return ha, results


def test_bootstrap_happens_once() -> None:
    ha, took = applied(["bootstrap", 1, "u", "p", LEASE], ["bootstrap", 2, "u", "q", LEASE])
    assert took == [True, False]
    assert (ha.epoch, ha.primary_id, ha.lease_index, ha.repl_password) == (1, 1, 1, "p")


def test_only_the_primary_of_the_current_epoch_renews() -> None:
    ha, took = applied(["bootstrap", 1, "u", "p", LEASE], ["renew", 2, 1], ["renew", 1, 0],
                       ["renew", 1, 1])
    assert took == [True, False, False, True]
    assert ha.lease_index == 4


def test_a_renewal_that_lands_first_makes_the_promotion_fail() -> None:
    # The leader saw the lease granted at index 1 expire; a renewal committed at 2 first.
    ha, took = applied(["bootstrap", 1, "u", "p", LEASE], ["renew", 1, 1],
                       ["promote", 2, 2, 1, 1, "expired"])
    assert took == [True, True, False]
    assert (ha.epoch, ha.primary_id) == (1, 1)


def test_a_promotion_moves_the_epoch_and_stale_renewals_fail() -> None:
    ha, took = applied(["bootstrap", 1, "u", "p", LEASE], ["promote", 2, 2, 1, 1, "expired"],
                       ["renew", 1, 1], ["promote", 3, 2, 1, 1, "again"],
                       ["renew", 2, 2])
    assert took == [True, True, False, False, True]
    assert (ha.epoch, ha.primary_id, ha.failovers, ha.lease_index) == (2, 2, 1, 5)
    assert ha.timeline is None


def test_initialized_and_timeline_come_from_the_primary() -> None:
    ha, took = applied(["bootstrap", 1, "u", "p", LEASE], ["initialized", 2, 1, 77, 1],
                       ["initialized", 1, 1, 77, 1], ["initialized", 1, 1, 78, 1],
                       ["timeline", 1, 1, 2], ["timeline", 3, 1, 3])
    assert took == [True, False, True, False, True, False]
    assert (ha.system_id, ha.timeline) == (77, 2)


def test_snapshot_round_trip_through_the_applied_state() -> None:
    state = AppliedState()
    state.apply_normal(1, 1, encode_ha(["bootstrap", 1, "u", "p", LEASE]))
    state.apply_normal(2, 1, encode_ha(["endpoint", 1, "127.0.0.1", 5432, 8008]))
    copy = AppliedState()
    seen: list[tuple[str, bool]] = []
    copy.on_ha = lambda kind, took: seen.append((kind, took))
    copy.restore(state.snapshot())
    assert copy.ha == state.ha and seen == [("restore", True)]


@pytest.mark.parametrize("command", [[], ["nope"], ["renew", 1], "renew", ["promote", 1, 2, 3]])
def test_bad_commands_are_refused_with_a_reason(command: object) -> None:
    with pytest.raises(InvalidArgument):
        check_command(command)


def test_a_malformed_committed_command_has_no_effect_instead_of_stopping_the_node() -> None:
    # A member's bad ha_propose (or another version's command) reached the log: every node
    # must go on applying (an exception here stopped every Ready loop at that index).
    ha = HaState()
    assert ha.apply(5, b"\xc1") == ("invalid", False)
    assert ha.apply(6, encode(["endpoint", None, "h", "x", None])) == ("invalid", False)
    assert ha == HaState()


@pytest.mark.parametrize("command", [
    ["endpoint", None, "h", 5432, None], ["endpoint", 1, "h", "x", None],
    ["endpoint", 1, "", 5432, None], ["endpoint", 1, "h", 70000, None],
    ["renew", True, 1], ["renew", 1, "1"], ["timeline", 1, 1, 0],
    ["bootstrap", 1, "u", "p", [2000, 10_000]], ["promote", 2, 2, 1, 1, None]])
def test_commands_with_arguments_of_the_wrong_type_are_refused(command: list[object]) -> None:
    with pytest.raises(InvalidArgument, match="argument"):
        check_command(command)


def test_a_renewal_by_a_removed_primary_has_no_effect() -> None:
    ha = HaState()
    ha.apply(1, encode(["bootstrap", 1, "u", "p", LEASE]), voters=(1, 2, 3))
    assert ha.apply(2, encode(["renew", 1, 1]), voters=(1, 2, 3)) == ("renew", True)
    assert ha.apply(3, encode(["renew", 1, 1]), voters=(2, 3)) == ("renew", False)
    assert ha.lease_index == 2


def test_the_bootstrap_records_the_lease_arithmetic_of_the_cluster() -> None:
    ha, _ = applied(["bootstrap", 1, "u", "p", [5000, 20_000, 250]])
    assert ha.lease == (5000, 20_000, 250)
    mine = LeaseSettings()  # this node was started with the defaults (2000 ms)
    cluster = mine.for_cluster(ha.lease)
    assert (cluster.duration, cluster.max_clock_drift, cluster.margin) == (5.0, 0.02, 0.25)
    assert cluster.renew_interval == mine.renew_interval


def test_lease_spans_follow_the_clock_assumption() -> None:
    s = LeaseSettings(duration=2.0, max_clock_drift=0.01, margin=0.1)
    # Others wait long enough that even the slowest clock has seen the holder's span end.
    assert s.expiry_span / (1 + 0.01) >= s.holder_span / (1 - 0.01)
    with pytest.raises(InvalidArgument, match="half"):
        LeaseSettings(duration=1.0, renew_interval=0.6).validate()
