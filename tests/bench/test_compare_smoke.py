"""Smoke test of ``benchmarks/compare.py``: the etcd and PySyncObj drivers with tiny counts (no
member adds: etcd accepts one only after its members have been connected for 5 s), then
the report (JSON, Markdown, plots). Skipped where etcd, grpcio, PySyncObj or matplotlib is not
installed (``make bench-compare`` installs them)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

missing = [m for m in ("grpc", "pysyncobj", "matplotlib", "numpy")
           if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)}"),
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed "
                       "(apt-get install etcd-server)"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
]


@pytest.fixture()
def compare(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import compare as module

    return module


def test_etcd_and_pysyncobj_drivers_and_report(compare, tmp_path: Path) -> None:
    rc = compare.main(["--systems", "etcd,pysyncobj", "--no-install", "--out-dir",
                       str(tmp_path), "--latency-count", "10", "--latency-max-seconds", "0.5",
                       "--windows", "1,16", "--pysyncobj-windows", "1,256",
                       "--window-seconds", "0.2", "--adds", "0", "--kills", "1",
                       "--floor-count", "20", "--election-timeout", "300",
                       "--heartbeat-interval", "30"])
    assert rc == 0
    report = json.loads((tmp_path / "compare.json").read_text())
    res = report["results"]
    assert set(res) == {"etcd", "pysyncobj"}
    assert res["etcd"]["version"].startswith("3.")
    for system in ("etcd", "pysyncobj"):
        r = res[system]
        assert r["latency_ms"]["n"] >= 1 and r["latency_ms"]["p50"] > 0
        assert [t["in_flight"] for t in r["throughput"]] == \
            ([1, 16] if system == "etcd" else [1, 256])
        assert all(t["writes"] > 0 and t["failed"] == 0 for t in r["throughput"])
        assert "add_member" not in r  # --adds 0: member adds are left to --quick runs
        assert r["failover_ms"]["n"] == 1 and r["failover_ms"]["p50"] > 0
    assert report["floor"]["floor_ms"] > 0
    assert report["floor"]["floor_one_disk_ms"] > 0
    # Without pgraft no target can be judged; the table says so instead of guessing.
    assert all(v["met"] is None for v in report["verdicts"])
    text = (tmp_path / "compare.md").read_text()
    assert "no fsync" in text and "fsync on" in text and "not measured" in text
    assert "floor on one disk" in text
    for name in ("compare.latency_cdf.png", "compare.throughput.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
