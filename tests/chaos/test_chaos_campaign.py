"""A short chaos campaign in the default test run: every fault kind, zero anomalies.

``PGRAFT_CHAOS_SECONDS`` sets its load time (default 90 s; the whole test takes about two
minutes), ``PGRAFT_CHAOS_SEED`` its seed (default: random, printed on failure). The long
campaign is ``make chaos``.
"""

from __future__ import annotations

import os
import random

import pytest
from chaos_campaign import FAULT_KINDS, Campaign, Config, summary

pytestmark = pytest.mark.cluster


def test_short_chaos_campaign(tmp_path) -> None:
    seed = int(os.environ.get("PGRAFT_CHAOS_SEED", "0")) or random.randrange(1, 1 << 31)
    duration = float(os.environ.get("PGRAFT_CHAOS_SECONDS", "90"))
    cfg = Config(seed=seed, duration=duration, faults=FAULT_KINDS, out_dir=str(tmp_path),
                 quiet=True)
    result = Campaign(cfg).run()
    report = summary(cfg, result)
    print(report)
    assert result.ok, report
    total = sum(result.ops.values())
    assert total > 100, report
    assert sum(v for k, v in result.ops.items() if k.endswith(":ok")) > 50, report
    assert sum(result.faults.values()) >= 5, report
