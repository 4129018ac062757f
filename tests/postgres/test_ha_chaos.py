"""A short chaos campaign against an HA cluster (tests/chaos/chaos_ha.py): the campaign's
clients, nemesis and checks with PostgreSQL under every node, plus a PostgreSQL writer whose
acknowledgements must never go back to an older timeline. ``PGRAFT_HA_CHAOS_SECONDS`` sets
its load time (default 45 s), ``PGRAFT_CHAOS_SEED`` its seed. The long one: make chaos-ha."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))

from chaos_campaign import Config, summary  # noqa: E402
from chaos_ha import HA_FAULTS, ha_config, run  # noqa: E402


def test_short_ha_chaos_campaign(pgraft_installed: str) -> None:
    seed = int(os.environ.get("PGRAFT_CHAOS_SEED", "0")) or random.randrange(1, 1 << 31)
    duration = float(os.environ.get("PGRAFT_HA_CHAOS_SECONDS", "45"))
    cfg = ha_config(Config(seed=seed, duration=duration, nodes=3, workers=4,
                           faults=HA_FAULTS, quiet=True))
    # out_dir None: the run directory goes to /tmp (the nodes run as the postgres OS user,
    # who cannot enter pytest's private tmp_path); after a clean run only its history
    # file is left there.
    result = run(cfg)
    report = summary(cfg, result)
    print(report)
    assert result.ok, report
    assert sum(result.faults.values()) >= 3, report
    assert any(n.startswith("PostgreSQL:") for n in result.notes), report
