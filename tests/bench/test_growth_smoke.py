"""Smoke test of ``benchmarks/growth.py``: every series with tiny counts on real node processes
(one cluster at a time), then the report (JSON, Markdown and, where matplotlib is installed,
the plots; ``make bench-growth`` installs it)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("numpy") is None, reason="numpy is missing"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only (/proc)"),
]


@pytest.fixture()
def growth(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import growth as module

    return module


def test_every_series_and_the_report(growth, tmp_path: Path) -> None:
    out = tmp_path / "growth.json"
    md = tmp_path / "growth.md"
    args = ["--json", str(out), "--markdown", str(md), "--sizes", "3",
            "--payloads", "64,4096", "--connections", "1,100", "--latency-count", "20",
            "--throughput-count", "300", "--payload-throughput-count", "200",
            "--connections-count", "300", "--max-log", "2000", "--log-sizes", "2000,5000",
            "--catchup-entries", "0,300", "--catchup-repeats", "1",
            "--point-seconds", "20", "--wait-seconds", "60"]
    assert growth.main(args) == 0
    report = json.loads(out.read_text())
    series = report["series"]
    assert set(series) == set(growth.SERIES)
    for points in series.values():
        assert points and all("error" not in p for p in points), points
    size = series["cluster_size"][0]
    assert size["nodes"] == 3 and size["throughput"]["writes"] == 300
    assert size["sequential"]["writes"] == 20 and size["latency_ms"]["p50"] > 0
    assert [p["payload_bytes"] for p in series["payload"]] == [64, 4096]
    conns = series["connections"]
    assert [p["connections"] for p in conns] == [1, 100]
    assert conns[1]["throughput"]["in_flight"] == 100 and conns[1]["throughput"]["failed"] == 0
    # --max-log drops the larger size; snapshots are off, so the whole log is kept.
    (logp,) = series["log_length"]
    assert logp["entries"] == 2000 and logp["kept_entries"] >= 2000
    assert logp["leader_log_stats"]["snapshot_index"] == 0
    assert logp["leader_rss_kib"]["VmRSS"] > 0
    assert logp["cold_start"]["first_write_s"] > 0 and logp["node_restart"]["loaded_s"] > 0
    assert [p["missed"] for p in series["catchup"]] == [0, 300]
    assert series["catchup"][1]["runs"][0]["appended"] == 300
    text = md.read_text()
    assert text.startswith("`python benchmarks/growth.py --json ")
    for heading in ("## Cluster size", "## Payload size", "## Client connections",
                    "## Log length", "## Catch-up"):
        assert heading in text
    if importlib.util.find_spec("matplotlib") is not None:
        names = {Path(p).name for p in report["plots"]}
        assert names == {f"growth.{s}.png" for s in growth.SERIES}
        for name in names:
            assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
