"""The Raft core compiled against the same sources interpreted, per replicated entry.

    python benchmarks/raft_core.py --json benchmarks/results/raft_core.json \
        --markdown benchmarks/results/raft_core.md

Runs ``benchmarks/bench_raft.py`` (a 3-node leader in the Raft core alone; its ``propose``
and ``stream`` scenarios) on three builds: ``compiled`` (core and codec compiled),
``sources`` (the core's ``.py`` sources on the compiled codec, as before the core was
compiled) and ``pure`` (``PGRAFT_PUREPYTHON=1``), with 1 entry per AppendEntries (every entry
pays the whole per-message path) and with 64. Two measures:

- **instructions** (valgrind's callgrind): the run's total minus the same run stopped before
  the loop (``--setup-only``), per replicated entry. Deterministic: the ratio does not move
  with this VM's noisy clock. Skipped, with a note, if valgrind is not installed.
- **time**: the median of several runs of the loop alone (``time.perf_counter``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCH = HERE / "bench_raft.py"
# build -> (environment, extra bench_raft.py arguments, what its output line starts with)
IMPLEMENTATIONS: dict[str, tuple[dict[str, str], list[str], str]] = {
    "compiled": ({}, [], "compiled, core compiled"),
    "sources": ({}, ["--core-sources"], "compiled, core interpreted"),
    "pure": ({"PGRAFT_PUREPYTHON": "1"}, [], "pure, core interpreted"),
}


def _env(implementation: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PGRAFT_PUREPYTHON"}
    env.update(IMPLEMENTATIONS[implementation][0])
    env["PYTHONPATH"] = str(ROOT)
    return env


def _bench_args(implementation: str, scenario: str, entries: int, batch: int) -> list[str]:
    return [str(BENCH), "--scenario", scenario, "--entries", str(entries), "--batch", str(batch),
            *IMPLEMENTATIONS[implementation][1]]


def _check_implementation(implementation: str, out: str) -> None:
    expected = IMPLEMENTATIONS[implementation][2]
    if not out.startswith(expected + ":"):
        raise SystemExit(f"raft_core: expected {expected!r}, got {out.strip()!r}; build the "
                         "extensions first (make build)")


def time_per_entry(implementation: str, scenario: str, entries: int, batch: int,
                   runs: int) -> float:
    """Median microseconds per replicated entry over ``runs`` runs of the loop."""
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, *_bench_args(implementation, scenario, entries,
                                                           batch)],
                             env=_env(implementation), capture_output=True, text=True,
                             check=True, timeout=600).stdout
        _check_implementation(implementation, out)
        found = re.search(r"([0-9.]+) us per replicated entry", out)
        assert found is not None, out
        samples.append(float(found.group(1)))
    return statistics.median(samples)


def _callgrind_total(implementation: str, args: list[str]) -> tuple[int, int]:
    """(instructions of the whole run, entries it replicates or would)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
             sys.executable, *args],
            env=_env(implementation), capture_output=True, text=True, check=True, timeout=1800)
    _check_implementation(implementation, run.stdout)
    found = re.search(r"refs:\s+([0-9,]+)", run.stderr)
    if found is None:
        raise SystemExit(f"raft_core: no instruction count in valgrind's output:\n"
                         f"{run.stderr[-2000:]}")
    replicated = re.search(r"(\d+) (?:entries replicated|replicated entries)", run.stdout)
    assert replicated is not None, run.stdout
    return int(found.group(1).replace(",", "")), int(replicated.group(1))


def instructions_per_entry(implementation: str, scenario: str, entries: int,
                           batch: int) -> float:
    args = _bench_args(implementation, scenario, entries, batch)
    whole, replicated = _callgrind_total(implementation, args)
    setup, _ = _callgrind_total(implementation, [*args, "--setup-only"])
    return (whole - setup) / replicated


def _cell(row: dict[str, float | int | str], build: str, instructions: bool) -> str:
    text = f"{float(row[build + '_us']):.2f} µs"
    if instructions:
        text += f" ({float(row[build + '_instructions']):,.0f})"
    return text


def _ratio(row: dict[str, float | int | str], base: str, instructions: bool) -> str:
    text = f"{float(row['time_ratio_' + base]):.2f}x"
    if instructions:
        text += f" ({float(row['instruction_ratio_' + base]):.2f}x)"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--entries", type=int, default=100_000, help="entries timed per run")
    ap.add_argument("--callgrind-entries", type=int, default=10_000,
                    help="entries per run under callgrind (it is ~50x slower)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per point (median)")
    ns = ap.parse_args()
    have_valgrind = shutil.which("valgrind") is not None
    rows: list[dict[str, float | int | str]] = []
    for scenario in ("propose", "stream"):
        for batch in (1, 64):
            row: dict[str, float | int | str] = {"scenario": scenario, "entries_per_message": batch}
            scale = 1 if batch == 1 else 8  # batched entries are cheap: run more of them
            for implementation in IMPLEMENTATIONS:
                row[f"{implementation}_us"] = time_per_entry(
                    implementation, scenario, ns.entries * scale, batch, ns.runs)
                if have_valgrind:
                    row[f"{implementation}_instructions"] = instructions_per_entry(
                        implementation, scenario, ns.callgrind_entries * scale, batch)
            for base in ("sources", "pure"):
                row[f"time_ratio_{base}"] = float(row[f"{base}_us"]) / float(row["compiled_us"])
                if have_valgrind:
                    row[f"instruction_ratio_{base}"] = (float(row[f"{base}_instructions"])
                                                        / float(row["compiled_instructions"]))
            print(row, flush=True)
            rows.append(row)
    report = {"machine": f"{platform.machine()}, CPython {platform.python_version()}",
              "valgrind": have_valgrind, "rows": rows}
    if ns.json:
        ns.json.write_text(json.dumps(report, indent=2) + "\n")
    table = ["| scenario | entries per AppendEntries | compiled | sources | pure "
             "| compiled vs sources | compiled vs pure |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        table.append(f"| {row['scenario']} | {row['entries_per_message']} "
                     f"| {_cell(row, 'compiled', have_valgrind)} "
                     f"| {_cell(row, 'sources', have_valgrind)} "
                     f"| {_cell(row, 'pure', have_valgrind)} "
                     f"| {_ratio(row, 'sources', have_valgrind)} "
                     f"| {_ratio(row, 'pure', have_valgrind)} |")
    text = "\n".join(table)
    print(text)
    if ns.markdown:
        ns.markdown.write_text(
            "# The Raft core, compiled vs pure\n\n"
            "`python benchmarks/raft_core.py --json benchmarks/results/raft_core.json "
            "--markdown benchmarks/results/raft_core.md`\n\n"
            f"Machine: {report['machine']}. Per replicated entry (an entry counts once per "
            f"follower): time, the median of {ns.runs} runs, and in brackets callgrind's count "
            "of instructions of the loop alone (the run minus the same run stopped before the "
            "loop)" + ("" if have_valgrind else " -- not measured: valgrind is not installed")
            + ". compiled: the compiled core and codec; sources: the core's .py sources with the "
            "compiled codec (the build before the core was compiled); pure: "
            "PGRAFT_PUREPYTHON=1, sources and pure codec.\n\n"
            + text + "\n")


if __name__ == "__main__":
    main()
