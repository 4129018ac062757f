"""Seeded randomized simulation of the Raft core (see tests/raft/sim.py for what is checked).

``PGRAFT_SIM_RUNS=N`` runs N seeds (default 500: about 15 s on a 2-core machine; use 2000 or
more for a deeper search: on the core before the ReadIndex round fix, 10 of 2000 seeds
answered a stale read, 3 of them within the first 500 -- counted before the simulation began
to leave a leader's Ready outstanding, which changed every seed's course);
``PGRAFT_SIM_SEED=S`` replays one seed. A failure names its seed.
"""

from __future__ import annotations

import os
import time

from tests.raft.sim import Simulation

RUNS = int(os.environ.get("PGRAFT_SIM_RUNS", "500"))
SEED = os.environ.get("PGRAFT_SIM_SEED")


def _seeds() -> list[int]:
    if SEED is not None:
        return [int(SEED)]
    return list(range(RUNS))


def test_simulation() -> None:
    start = time.monotonic()
    reads = 0
    for seed in _seeds():
        size = 3 if seed % 2 == 0 else 5
        sim = Simulation(seed, size=size)
        try:
            sim.run()
        except Exception as exc:
            raise AssertionError(
                f"simulation failed for seed {seed} (replay: PGRAFT_SIM_SEED={seed} "
                f"pytest tests/raft/test_simulation.py): {exc}") from exc
        reads += sim.reads_answered
    print(f"{len(_seeds())} seeds ({reads} reads answered) in {time.monotonic() - start:.1f}s")
