"""The floor probes of ``benchmarks/cluster.py`` that the comparison's verdicts are judged
against: what they time, and that they leave nothing behind."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture()
def cluster_bench(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import cluster as module

    return module


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fdatasync: Linux only")
def test_a_commits_syncs_on_one_disk_wait_for_the_leader_and_a_follower(
        cluster_bench, tmp_path: Path) -> None:
    r = cluster_bench.floor_commit_on_one_disk(str(tmp_path), 30)
    assert r["n"] == 30 and r["nodes"] == 3
    # A round ends when both the leader's sync and a follower's are done, so it never ends
    # before the leader's own sync of the same round.
    assert r["p50"] >= r["leader_sync_p50"] > 0
    assert r["max"] >= r["p99"] >= r["p50"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fdatasync: Linux only")
def test_a_lone_node_commits_when_its_own_sync_is_done(cluster_bench, tmp_path: Path) -> None:
    r = cluster_bench.floor_commit_on_one_disk(str(tmp_path), 20, nodes=1)
    assert r["nodes"] == 1 and r["p50"] == r["leader_sync_p50"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fdatasync: Linux only")
def test_the_probes_threads_end_cleanly(cluster_bench, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe once aborted its barriers while its threads were still leaving the last
    # round's wait: they died with BrokenBarrierError (printed into the comparison's log).
    died: list[type[BaseException]] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_type))
    for _ in range(10):
        cluster_bench.floor_commit_on_one_disk(str(tmp_path), 20)
    assert died == []


def test_the_floors_add_two_round_trips(cluster_bench) -> None:
    floor = {"fdatasync_64b_ms": {"p50": 0.2}, "loopback_rtt_ms": {"p50": 0.05},
             "commit_syncs_one_disk_ms": {"p50": 0.5}}
    assert cluster_bench.floor_ms(floor) == pytest.approx(0.3)
    assert cluster_bench.floor_one_disk_ms(floor) == pytest.approx(0.6)
