"""Micro benchmarks of the hot paths: the compiled extensions against their pure-Python twins,
measured in one run on this machine.

    python benchmarks/micro.py --json benchmarks/results/micro.json \
        --markdown benchmarks/results/micro.md

Writes a JSON list of {"name", "compiled_ns", "fallback_ns"} (nanoseconds per operation,
median of several timed rounds) and, with --markdown, a table with the ratios and the
whole-log measurements of issue 2 (append+sync throughput, reopen time, append+sync latency
against raw write+fdatasync).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases_core  # noqa: E402
import cases_log  # noqa: E402

# (case list, compiled module name, pure module name)
SUITES = [
    (cases_core.CASES, "pgraft._core", "pgraft._core_py"),
    (cases_log.CASES, "pgraft._log", "pgraft._log_py"),
]


def time_per_op(fn: Callable[[], object], *, budget_s: float, rounds: int = 7) -> float:
    """Median nanoseconds per call of ``fn`` over ``rounds`` rounds sized to ``budget_s``."""
    fn()  # warm up (and let lazy setup happen outside the timed rounds)
    calls = 1
    while True:  # grow the round until it is long enough to time well
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter_ns() - t0
        if elapsed >= budget_s * 1e9 / rounds or calls >= 1 << 20:
            break
        calls *= 2
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - t0) / calls)
    return float(np.median(samples))


def run_micro(budget_s: float) -> list[dict[str, float | str]]:
    results: list[dict[str, float | str]] = []
    for cases, compiled_name, pure_name in SUITES:
        compiled: ModuleType = importlib.import_module(compiled_name)
        pure: ModuleType = importlib.import_module(pure_name)
        for name, make in cases:
            c_ns = time_per_op(make(compiled), budget_s=budget_s)
            p_ns = time_per_op(make(pure), budget_s=budget_s)
            results.append({"name": name, "compiled_ns": c_ns, "fallback_ns": p_ns})
            print(f"{name:40s} compiled {c_ns:12.1f} ns   pure {p_ns:14.1f} ns   "
                  f"x{p_ns / c_ns:7.1f}", flush=True)
    return results


def run_log_targets(n: int) -> dict[str, float]:
    """Issue 2's whole-log targets, compiled log only, in this run."""
    log = importlib.import_module("pgraft._log")
    out: dict[str, float] = {}
    out["append_sync_entries_per_s"] = cases_log.bench_append_sync_throughput(log, n=n, batch=1000)
    out["reopen_s"] = cases_log.bench_reopen(log, n=n)
    lat = np.array(cases_log.bench_append_sync_latency(log, n=2000), dtype=float)
    raw = np.array(cases_log.bench_raw_write_fdatasync(n=2000), dtype=float)
    out["append_sync_p50_ns"] = float(np.percentile(lat, 50))
    out["raw_write_fdatasync_p50_ns"] = float(np.percentile(raw, 50))
    out["append_sync_vs_raw"] = out["append_sync_p50_ns"] / out["raw_write_fdatasync_p50_ns"]
    for k, v in out.items():
        print(f"{k:32s} {v:14.3f}", flush=True)
    return out


def markdown(results: list[dict[str, float | str]], targets: dict[str, float] | None) -> str:
    lines = [
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}",
        "",
        "| operation | compiled | pure twin | compiled speed-up |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        c, p = float(r["compiled_ns"]), float(r["fallback_ns"])
        lines.append(f"| {r['name']} | {c / 1000:.2f} µs | {p / 1000:.2f} µs | {p / c:.1f}x |")
    if targets:
        t = targets
        lines += [
            "",
            "| whole-log measurement (compiled) | measured | target |",
            "|---|---:|---:|",
            f"| 1,000,000 × 64 B appends, batches of 1000, one sync() per batch | "
            f"{t['append_sync_entries_per_s']:,.0f} entries/s | ≥ 1,000,000 entries/s |",
            f"| reopen (recover) a 1,000,000-entry log | {t['reopen_s'] * 1000:.0f} ms "
            f"| ≤ 500 ms |",
            f"| one 64 B append + sync(), p50 | {t['append_sync_p50_ns'] / 1000:.1f} µs | "
            f"≤ 1.5x raw |",
            f"| raw write + fdatasync of 64 B, p50 "
            f"| {t['raw_write_fdatasync_p50_ns'] / 1000:.1f} µs | (floor) |",
            f"| append + sync() / raw | {t['append_sync_vs_raw']:.2f}x | ≤ 1.5x |",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the per-operation results here")
    ap.add_argument("--markdown", type=Path, help="write a Markdown table here")
    ap.add_argument("--budget", type=float, default=0.3, help="seconds per case and twin")
    ap.add_argument("--log-entries", type=int, default=1_000_000,
                    help="entries for the whole-log measurements (0 skips them)")
    args = ap.parse_args(argv)
    results = run_micro(args.budget)
    targets = run_log_targets(args.log_entries) if args.log_entries else None
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        cmd = "python benchmarks/micro.py " + " ".join(argv if argv is not None else sys.argv[1:])
        args.markdown.write_text(f"`{cmd}`\n\n" + markdown(results, targets))
        if targets:
            (args.markdown.with_suffix(".log.json")).write_text(json.dumps(targets, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
