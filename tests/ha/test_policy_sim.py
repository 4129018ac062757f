"""The HA policy under a seeded fault simulation (tests/ha/hasim.py): no two valid leases,
promotion only after expiry on every clock within the bound, the most up-to-date replica."""

from __future__ import annotations

import os

import pytest

from pgraft.ha.lease import LeaseSettings
from tests.ha.hasim import Simulation, Violation

_REPLAY = os.environ.get("PGRAFT_HA_SIM_SEED")
SEEDS = [int(_REPLAY)] if _REPLAY else list(range(40))


@pytest.mark.parametrize("seed", SEEDS)
def test_lease_safety_under_faults(seed: int) -> None:
    sim = Simulation(seed, nodes=3 if seed % 2 else 5, duration=60.0).run()
    assert sim.log, "nothing was ever committed"


def test_failovers_happen_in_the_simulation() -> None:
    """The faults really move the primary (else the safety checks above prove little)."""
    total = sum(Simulation(seed, duration=60.0).run().promotions for seed in range(10))
    assert total >= 5


class _TooShortExpiry(LeaseSettings):
    """A broken policy: others wait only the nominal duration, ignoring drift and margin."""

    @property
    def expiry_span(self) -> float:
        return self.duration * (1 - self.max_clock_drift)


def test_the_checker_catches_a_lease_that_others_let_expire_too_early() -> None:
    caught = 0
    for seed in range(30):
        try:
            Simulation(seed, duration=40.0, settings=_TooShortExpiry(max_clock_drift=0.05)).run()
        except Violation:
            caught += 1
    assert caught > 0


def test_single_run_is_deterministic() -> None:
    a = Simulation(7, duration=20.0).run()
    b = Simulation(7, duration=20.0).run()
    assert a.log == b.log and a.trace == b.trace
