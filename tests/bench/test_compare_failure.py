"""``benchmarks/compare.py`` when a system fails partway: the run goes on, the report names
the failure, the exit code is 1, and the others' numbers stand (no system is started here:
the drivers are replaced, so this runs wherever numpy does)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numpy") is None,
                                reason="numpy is missing")


def test_a_failing_system_is_reported_and_the_others_kept(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import compare

    def fake_run(system: str, *args: Any) -> dict[str, Any]:
        if system == "pysyncobj":
            raise TimeoutError("timed out after 180s waiting for every PySyncObj node")
        return {"version": "3.4.23", "latency_samples_s": [0.001, 0.002],
                "latency_ms": {"p50": 1.5, "p99": 2.0, "p99_9": 2.0, "n": 2},
                "throughput": [{"in_flight": 1, "writes_per_s": 500.0, "writes": 10,
                                "failed": 0}],
                "failover_ms": {"p50": 1000.0, "max": 1200.0, "n": 1}}

    monkeypatch.setattr(compare, "_run_system", fake_run)
    monkeypatch.setattr(compare, "ensure_dependencies", lambda systems, install: None)
    monkeypatch.setattr(compare, "plots", lambda report, samples, out: [])
    rc = compare.main(["--systems", "etcd,pysyncobj", "--no-install", "--out-dir",
                       str(tmp_path), "--windows", "1", "--floor-count", "20"])
    assert rc == 1
    report = json.loads((tmp_path / "compare.json").read_text())
    assert set(report["results"]) == {"etcd"}
    assert report["failed"] == {
        "pysyncobj": "TimeoutError: timed out after 180s waiting for every PySyncObj node"}
    text = (tmp_path / "compare.md").read_text()
    assert "**PySyncObj was not measured: it failed partway (TimeoutError" in text
    assert "1.50 ms" in text  # etcd's p50 is still in the table
