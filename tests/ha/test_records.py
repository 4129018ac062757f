"""The HA log commands: compare-and-set semantics, snapshots, bad input."""

from __future__ import annotations

import pytest

from pgraft.errors import InvalidArgument, StorageCorrupted
from pgraft.ha.lease import LeaseSettings
from pgraft.ha.records import HaState, check_command, encode
from pgraft.state import AppliedState, encode_ha


def applied(*commands: list[object]) -> tuple[HaState, list[bool]]:
    ha = HaState()
    results = [ha.apply(i, encode(c))[1] for i, c in enumerate(commands, start=1)]
    return ha, results


def test_bootstrap_happens_once() -> None:
    ha, took = applied(["bootstrap", 1, "u", "p"], ["bootstrap", 2, "u", "q"])
    assert took == [True, False]
    assert (ha.epoch, ha.primary_id, ha.lease_index, ha.repl_password) == (1, 1, 1, "p")


def test_only_the_primary_of_the_current_epoch_renews() -> None:
    ha, took = applied(["bootstrap", 1, "u", "p"], ["renew", 2, 1], ["renew", 1, 0],
                       ["renew", 1, 1])
    assert took == [True, False, False, True]
    assert ha.lease_index == 4


def test_a_renewal_that_lands_first_makes_the_promotion_fail() -> None:
    # The leader saw the lease granted at index 1 expire; a renewal committed at 2 first.
    ha, took = applied(["bootstrap", 1, "u", "p"], ["renew", 1, 1],
                       ["promote", 2, 2, 1, 1, "expired"])
    assert took == [True, True, False]
    assert (ha.epoch, ha.primary_id) == (1, 1)


def test_a_promotion_moves_the_epoch_and_stale_renewals_fail() -> None:
    ha, took = applied(["bootstrap", 1, "u", "p"], ["promote", 2, 2, 1, 1, "expired"],
                       ["renew", 1, 1], ["promote", 3, 2, 1, 1, "again"],
                       ["renew", 2, 2])
    assert took == [True, True, False, False, True]
    assert (ha.epoch, ha.primary_id, ha.failovers, ha.lease_index) == (2, 2, 1, 5)
    assert ha.timeline is None


def test_initialized_and_timeline_come_from_the_primary() -> None:
    ha, took = applied(["bootstrap", 1, "u", "p"], ["initialized", 2, 1, 77, 1],
                       ["initialized", 1, 1, 77, 1], ["initialized", 1, 1, 78, 1],
                       ["timeline", 1, 1, 2], ["timeline", 3, 1, 3])
    assert took == [True, False, True, False, True, False]
    assert (ha.system_id, ha.timeline) == (77, 2)


def test_snapshot_round_trip_through_the_applied_state() -> None:
    state = AppliedState()
    state.apply_normal(1, 1, encode_ha(["bootstrap", 1, "u", "p"]))
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


def test_an_undecodable_committed_command_is_corruption() -> None:
    with pytest.raises(StorageCorrupted, match="entry 5"):
        HaState().apply(5, b"\xc1")


def test_lease_spans_follow_the_clock_assumption() -> None:
    s = LeaseSettings(duration=2.0, max_clock_drift=0.01, margin=0.1)
    # Others wait long enough that even the slowest clock has seen the holder's span end.
    assert s.expiry_span / (1 + 0.01) >= s.holder_span / (1 - 0.01)
    with pytest.raises(InvalidArgument, match="half"):
        LeaseSettings(duration=1.0, renew_interval=0.6).validate()
