"""Side by side on this machine, in one run: pgraft, etcd and PySyncObj, each as a 3-node cluster
on loopback, one system at a time.

    python benchmarks/compare.py            # or: make bench-compare
    python benchmarks/compare.py --quick    # a smoke run with tiny counts (not a measurement)

For each system: sequential write latency (64-byte values) p50/p99/p99.9, writes/s with 1, 16
and 256 in flight (PySyncObj: more windows, to find its best), time from adding a member until
every member lists it, and time from ``kill -9`` of the leader to the next successful write
(pgraft and etcd with the same election timeout and heartbeat interval). Also this machine's
floor: fdatasync of 64 bytes plus two 64-byte loopback round trips (``benchmarks/cluster.py``'s
probes), and pgraft's p50 as a multiple of it.

- pgraft: ``python -m pgraft serve`` processes (fsync on), client ``pgraft.connect`` in this
  process (``compare_pgraft.py``);
- etcd: Debian 12's ``etcd-server`` (3.4), defaults (WAL fsync on), client grpcio in this
  process (``compare_etcd.py``);
- PySyncObj from PyPI, defaults (in memory, no fsync), the load generated inside its leader
  process (``compare_pysyncobj.py``).

Writes ``compare.json``, ``compare.md``, ``compare.latency_cdf.png`` and
``compare.throughput.png`` into ``--out-dir`` (default ``benchmarks/results``); a full run of all
three systems also puts the table into ``docs/performance.md`` (between its markers).
Installs what is missing first (``apt-get install etcd-server`` as root; ``pip install
pysyncobj grpcio matplotlib`` into this interpreter) unless ``--no-install``. Every process it
starts is stopped by its pid, also on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

SYSTEMS = ("pgraft", "etcd", "pysyncobj")
LABELS = {"pgraft": "pgraft", "etcd": "etcd", "pysyncobj": "PySyncObj"}
COLORS = {"pgraft": "#1f77b4", "etcd": "#2ca02c", "pysyncobj": "#d62728"}
_PY_DEPS = {"pysyncobj": "pysyncobj", "grpc": "grpcio", "matplotlib": "matplotlib",
            "numpy": "numpy"}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------- installing
def _install_etcd() -> None:
    """``apt-get install etcd-server`` (and ``apt-get update`` if the first try fails).

    On a machine with an init system the package would start its own etcd service on the
    default ports; a temporary policy-rc.d (only if none exists) keeps it from doing so."""
    if os.geteuid() != 0:
        raise SystemExit("etcd is not installed; run `sudo apt-get install etcd-server` "
                         "(Debian 12 ships etcd 3.4) and start again")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\n# written by pgraft benchmarks/compare.py while it "
                          "installs etcd-server\nexit 101\n")
        policy.chmod(0o755)
        made_policy = True
    try:
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "etcd-server"]
        log("installing etcd-server with apt-get")
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL,
                           check=True)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    finally:
        if made_policy:
            policy.unlink()


def ensure_dependencies(systems: list[str], install: bool) -> None:
    """Install what the chosen systems and the report need, or say what is missing."""
    needed = ["numpy", "matplotlib"] + (["grpc"] if "etcd" in systems else []) + \
        (["pysyncobj"] if "pysyncobj" in systems else [])
    missing = [_PY_DEPS[m] for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        if not install:
            raise SystemExit(f"missing Python packages: {' '.join(missing)} "
                             f"(`{sys.executable} -m pip install {' '.join(missing)}`)")
        log(f"installing {' '.join(missing)} with pip")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", *missing], check=True)
        importlib.invalidate_caches()
    if "etcd" in systems and shutil.which("etcd") is None:
        if not install:
            raise SystemExit("etcd is not installed (`apt-get install etcd-server`)")
        _install_etcd()


# ------------------------------------------------------------------------------- floor
def floor_fdatasync_prealloc(directory: str, count: int) -> dict[str, float]:
    """pwrite of 64 B into a file whose blocks were written (zeros) and synced beforehand, then
    fdatasync: a durable write that changes no metadata, as in a log with preallocated
    segments (pgraft's and etcd's). ``cluster.floor_fdatasync`` appends to a growing file
    instead, so each of its syncs also commits the new file size."""
    from compare_common import summary

    path = os.path.join(directory, "fdatasync-prealloc-probe")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    samples = []
    try:
        os.write(fd, b"\0" * (64 * count + 4096))
        os.fsync(fd)
        data = b"x" * 64
        for i in range(count):
            t0 = time.perf_counter()
            os.pwrite(fd, data, 64 * i)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return summary(samples)


def measure_floor(base: str, count: int) -> dict[str, Any]:
    """Both fdatasync probes and the loopback round trip; ``floor_ms`` = the lower fdatasync
    p50 + two round trip p50s: a client-seen durable commit on three nodes needs at least one
    fdatasync (the leader's and a follower's run in parallel) and two round trips (client ->
    leader -> follower and back)."""
    import cluster as cluster_bench

    f = {"fdatasync_64b_ms": floor_fdatasync_prealloc(base, count),
         "fdatasync_64b_append_ms": cluster_bench.floor_fdatasync(base, count),
         "loopback_rtt_ms": cluster_bench.floor_loopback_rtt(count),
         "fdatasync_3_writers_ms": cluster_bench.floor_fdatasync_concurrent(base, 3),
         "commit_syncs_one_disk_ms": cluster_bench.floor_commit_on_one_disk(base, count)}
    f["floor_ms"] = (min(f["fdatasync_64b_ms"]["p50"], f["fdatasync_64b_append_ms"]["p50"])
                     + 2 * f["loopback_rtt_ms"]["p50"])
    # The benchmarks' three nodes share this machine's one disk: a commit waits for the
    # leader's sync and a follower's, made at the same time on it.
    f["floor_one_disk_ms"] = (f["commit_syncs_one_disk_ms"]["p50"]
                              + 2 * f["loopback_rtt_ms"]["p50"])
    return f


# ------------------------------------------------------------------------------ report
def _fmt_ms(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f} ms"
    if v >= 10:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def _fmt_rate(v: float) -> str:
    return f"{v:,.0f}/s"


def _rate_at(r: dict[str, Any], window: int) -> float | None:
    for t in r.get("throughput", []):
        if t["in_flight"] == window:
            return float(t["writes_per_s"])
    return None


def _best(r: dict[str, Any]) -> dict[str, Any] | None:
    runs = r.get("throughput", [])
    return max(runs, key=lambda t: t["writes_per_s"]) if runs else None


def setups(config: dict[str, Any], versions: dict[str, Any]) -> dict[str, dict[str, str]]:
    """What each system ran with: durability, client, timeouts (for the table and JSON)."""
    et, hb = config["election_timeout_ms"], config["heartbeat_interval_ms"]
    return {
        "pgraft": {
            "version": f"pgraft {versions.get('pgraft') or ''} "
                       f"({versions.get('pgraft_impl') or 'compiled'})".strip(),
            "durability": "fsync on: every node fdatasyncs its log before it acknowledges "
                          "(leader counts itself once its write is durable)",
            "short": "fsync on",
            "client": "separate process, `pgraft.connect` (asyncio + uvloop), one TCP "
                      "connection",
            "timeouts": f"--election-timeout {et} --heartbeat-interval {hb} (ms)",
        },
        "etcd": {
            "version": f"etcd {versions.get('etcd') or '(Debian 12 etcd-server)'}",
            "durability": "defaults: fsync on (WAL fdatasync before commit; "
                          "--unsafe-no-fsync off)",
            "short": "fsync on, defaults",
            "client": "separate process, grpcio (etcd's gRPC KV.Put, as etcdctl), one "
                      "HTTP/2 channel",
            "timeouts": f"--election-timeout {et} --heartbeat-interval {hb} (ms)",
        },
        "pysyncobj": {
            "version": f"PySyncObj {versions.get('pysyncobj') or ''}".strip(),
            "durability": "defaults: in memory only, no journal, no fsync",
            "short": "no fsync, defaults",
            "client": "none: writes (ReplDict.set) issued inside the leader process",
            "timeouts": "defaults: election timeout random 400-1400 ms, append entries "
                        "every 100 ms, tick 50 ms",
        },
    }


def verdicts(results: dict[str, Any], floor_ms: float | None) -> list[dict[str, Any]]:
    """The performance targets, each with the numbers it was judged on (None when not
    measured)."""
    pg, et, ps = (results.get(s, {}) for s in SYSTEMS)
    out = []

    def add(name: str, value: float | None, bound: float | None, text: str) -> None:
        met = None if value is None or bound is None else value <= bound
        out.append({"target": name, "value": value, "bound": bound, "met": met,
                    "detail": text})

    p50 = pg.get("latency_ms", {}).get("p50")
    p99 = pg.get("latency_ms", {}).get("p99")
    e50 = et.get("latency_ms", {}).get("p50")
    add("pgraft sequential p50 <= 0.3x etcd's", p50, None if e50 is None else 0.3 * e50,
        "" if p50 is None or e50 is None else
        f"{_fmt_ms(p50)} vs etcd {_fmt_ms(e50)} = {p50 / e50:.2f}x")
    add("pgraft sequential p50 <= 1.5x the machine floor", p50,
        None if floor_ms is None else 1.5 * floor_ms,
        "" if p50 is None or floor_ms is None else
        f"{_fmt_ms(p50)} vs floor {_fmt_ms(floor_ms)} = {p50 / floor_ms:.2f}x")
    add("pgraft sequential p99 <= 3x its p50", p99, None if p50 is None else 3 * p50,
        "" if p50 is None or p99 is None else
        f"p99 {_fmt_ms(p99)} vs p50 {_fmt_ms(p50)} = {p99 / p50:.2f}x")
    r256 = _rate_at(pg, 256)
    best = _best(ps)
    # "value <= bound" form: PySyncObj's best * 3 <= pgraft's rate.
    met_value = None if best is None else 3 * best["writes_per_s"]
    out.append({"target": "pgraft writes/s at 256 in flight >= 3x PySyncObj's best window",
                "value": r256, "bound": met_value,
                "met": None if r256 is None or met_value is None else r256 >= met_value,
                "detail": "" if r256 is None or best is None else
                f"{_fmt_rate(r256)} vs PySyncObj {_fmt_rate(best['writes_per_s'])} at "
                f"{best['in_flight']} in flight = {r256 / best['writes_per_s']:.2f}x"})
    add_member = pg.get("add_member", {})
    members = add_member.get("members_list_it_after_commit_ms", {}).get("p50")
    itself = add_member.get("new_member_lists_itself_after_commit_ms", {}).get("p50")
    add("after add_node commits, every existing member lists the new node, p50 <= 5 ms",
        members, 5.0, "" if members is None else f"{_fmt_ms(members)}")
    add("after add_node commits, the new member lists itself, p50 <= 10 ms", itself, 10.0,
        "" if itself is None else f"{_fmt_ms(itself)}")
    f_pg = pg.get("failover_ms", {}).get("p50")
    f_et = et.get("failover_ms", {}).get("p50")
    add("pgraft failover (kill -9 leader -> next write, p50) <= etcd's", f_pg, f_et,
        "" if f_pg is None or f_et is None else
        f"{_fmt_ms(f_pg)} vs etcd {_fmt_ms(f_et)} = {f_pg / f_et:.2f}x")
    return out


def markdown(report: dict[str, Any]) -> str:
    res, cfg = report["results"], report["config"]
    systems = [s for s in SYSTEMS if s in res]
    setup = report["setups"]
    lines = []
    if cfg["quick"]:
        lines += ["**QUICK RUN (`--quick`): tiny counts, smoke numbers only, not a "
                  "measurement.**", ""]
    lines += [f"3 nodes each on loopback, one system at a time, same machine and run "
              f"({report['machine']['cpus']} CPUs, {report['machine']['platform']}, "
              f"Python {report['machine']['python']}); {report['config']['payload_bytes']}-byte "
              "values.", ""]
    head = "| | " + " | ".join(setup[s]["version"] for s in systems) + " |"
    lines += [head, "|---|" + "---|" * len(systems)]

    def row(name: str, cells: list[str]) -> None:
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    row("**durability**", [setup[s]["durability"] for s in systems])
    row("client", [setup[s]["client"] for s in systems])
    row("election timeout / heartbeat", [setup[s]["timeouts"] for s in systems])
    for key, name in (("p50", "sequential write p50"), ("p99", "sequential write p99"),
                      ("p99_9", "sequential write p99.9")):
        row(name, [_fmt_ms(res[s]["latency_ms"][key]) for s in systems])
    row("(sequential writes measured)", [str(res[s]["latency_ms"]["n"]) for s in systems])
    for w in cfg["windows"]:
        cells = []
        for s in systems:
            v = _rate_at(res[s], w)
            cells.append("-" if v is None else _fmt_rate(v))
        row(f"writes/s, {w} in flight", cells)
    cells = []
    for s in systems:
        b = _best(res[s])
        cells.append("-" if b is None else f"{_fmt_rate(b['writes_per_s'])} at {b['in_flight']}")
    row("best writes/s (window)", cells)
    row("add a member -> listed by every member, p50",
        [_fmt_ms(res[s]["add_member"]["listed_everywhere_ms"]["p50"])
         if "add_member" in res[s] else "-" for s in systems])
    row("(the add call itself returned, p50)",
        [_fmt_ms(res[s]["add_member"]["member_add_call_ms"]["p50"])
         if "add_member" in res[s] else "-" for s in systems])
    for key, name in (("members_list_it_after_commit_ms",
                       "after the add committed: every existing member lists it, p50"),
                      ("new_member_lists_itself_after_commit_ms",
                       "after the add committed: the new member lists itself, p50")):
        row(name, [_fmt_ms(res[s]["add_member"][key]["p50"])
                   if key in res[s].get("add_member", {}) else "-" for s in systems])
    row("kill -9 leader -> next write accepted, p50 / max",
        [f"{_fmt_ms(res[s]['failover_ms']['p50'])} / {_fmt_ms(res[s]['failover_ms']['max'])} "
         f"({res[s]['failover_ms']['n']} kills)" if "failover_ms" in res[s] else "-"
         for s in systems])

    floor = report.get("floor")
    if floor:
        lines += ["", "| this machine's floor (same run: measured before and after the "
                  "systems, the lower counts) | p50 | p99 |", "|---|---|---|",
                  f"| pwrite 64 B into preallocated space + fdatasync (same file system as "
                  f"the data directories) | {_fmt_ms(floor['fdatasync_64b_ms']['p50'])} | "
                  f"{_fmt_ms(floor['fdatasync_64b_ms']['p99'])} |",
                  f"| append 64 B to a growing file + fdatasync (also commits the file size) | "
                  f"{_fmt_ms(floor['fdatasync_64b_append_ms']['p50'])} | "
                  f"{_fmt_ms(floor['fdatasync_64b_append_ms']['p99'])} |",
                  f"| loopback TCP round trip of 64 B to another process | "
                  f"{_fmt_ms(floor['loopback_rtt_ms']['p50'])} | "
                  f"{_fmt_ms(floor['loopback_rtt_ms']['p99'])} |",
                  f"| **floor** = the lower fdatasync p50 + 2 x round trip p50 | "
                  f"{_fmt_ms(floor['floor_ms'])} | |"]
        conc = floor.get("fdatasync_3_writers_ms")
        if conc:
            lines += [f"| the same pwrite + fdatasync in 3 processes at once (three nodes' logs "
                      f"on one disk): {conc['syncs_per_s_each']:,.0f} syncs/s each, "
                      f"{conc['syncs_per_s_total']:,.0f}/s in all | {_fmt_ms(conc['p50'])} | "
                      f"{_fmt_ms(conc['p99'])} |"]
        one_disk = floor.get("commit_syncs_one_disk_ms")
        if one_disk:
            lines += [f"| a commit's syncs on this one disk: the same pwrite + fdatasync of 3 "
                      f"nodes started at once, until the leader's and a follower's are done "
                      f"(the leader's own: p50 {_fmt_ms(one_disk['leader_sync_p50'])}) | "
                      f"{_fmt_ms(one_disk['p50'])} | {_fmt_ms(one_disk['p99'])} |",
                      f"| **floor on one disk** = a commit's syncs p50 + 2 x round trip p50 | "
                      f"{_fmt_ms(floor['floor_one_disk_ms'])} | |"]
        if "pgraft" in res:
            ratio = report["ratios"]["pgraft_p50_over_floor"]
            lines += ["", f"pgraft's sequential p50 is **{ratio:.2f}x** the floor"
                      + (f" and **{report['ratios']['pgraft_p50_over_floor_one_disk']:.2f}x** "
                         "the floor on one disk." if one_disk else ".")]
        if one_disk and "etcd" in res:
            e50 = res["etcd"]["latency_ms"]["p50"]
            below = 0.3 * e50 < floor["floor_one_disk_ms"]
            lines += ["", f"0.3x etcd's p50 is {_fmt_ms(0.3 * e50)}: "
                      + ("below" if below else "above")
                      + f" the floor on one disk ({_fmt_ms(floor['floor_one_disk_ms'])})"
                      + (", so no system can reach it on this machine." if below else ".")]
    for system, why in report.get("failed", {}).items():
        lines += ["", f"**{LABELS[system]} was not measured: it failed partway ({why}). "
                      "Its column is missing; the other systems' numbers stand.**"]
    lines += ["", "| target | numbers | met |", "|---|---|---|"]
    for v in report["verdicts"]:
        mark = "not measured" if v["met"] is None else ("**met**" if v["met"] else "**missed**")
        lines.append(f"| {v['target']} | {v['detail'] or '-'} | {mark} |")
    lines += ["", "Notes:",
              "- Add a member: pgraft starts the new node empty first and then times "
              "`add_node` on the leader until every node (the new one too) lists it; etcd's "
              "new member can only start after `MemberAdd` (it needs the member list it "
              "returns), so its time includes starting the etcd process; PySyncObj starts the "
              "new node first and times `addNodeToCluster` (needs "
              "`dynamicMembershipChange=True`, the one setting changed, on a separate cluster).",
              "- Failover: the time from `kill -9` of the leader until a write started on a "
              "survivor succeeds; the client opens its connections after the kill. The killed "
              "node is restarted and caught up before the next kill.",
              "- Throughput: closed loop, a new write starts as soon as one finishes; pgraft and "
              "etcd on one connection from one client process "
              "(its CPU share is in compare.json)."]
    return "\n".join(lines) + "\n"


def plots(report: dict[str, Any], samples: dict[str, list[float]], out_dir: Path) -> list[str]:
    """The latency CDFs of all systems on one chart, and writes/s against writes in flight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    res = report["results"]
    quick = " (QUICK RUN: smoke numbers)" if report["config"]["quick"] else ""
    paths = []

    fig, ax = plt.subplots(figsize=(8, 5))
    for s in SYSTEMS:
        if s not in samples:
            continue
        a = np.sort(np.asarray(samples[s]) * 1000.0)
        y = np.arange(1, a.size + 1) / a.size
        ax.plot(a, y, label=f"{LABELS[s]} (p50 {_fmt_ms(res[s]['latency_ms']['p50'])}, "
                f"{report['setups'][s]['short']})",
                color=COLORS[s], drawstyle="steps-post")
    floor = report.get("floor")
    if floor:
        ax.axvline(floor["floor_ms"], color="grey", linestyle="--",
                   label=f"machine floor (fdatasync + 2 round trips) {_fmt_ms(floor['floor_ms'])}")
        if "floor_one_disk_ms" in floor:
            ax.axvline(floor["floor_one_disk_ms"], color="grey", linestyle=":",
                       label="floor on one disk (3 nodes' syncs at once + 2 round trips) "
                             f"{_fmt_ms(floor['floor_one_disk_ms'])}")
    ax.set_xscale("log")
    ax.set_xlabel("sequential write latency, 64-byte values (ms, log scale)")
    ax.set_ylabel("fraction of writes")
    ax.set_title(f"Write latency CDF, 3 nodes on loopback{quick}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    p = out_dir / "compare.latency_cdf.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(str(p))

    fig, ax = plt.subplots(figsize=(8, 5))
    for s in SYSTEMS:
        runs = res.get(s, {}).get("throughput", [])
        if not runs:
            continue
        xs = [t["in_flight"] for t in runs]
        ys = [t["writes_per_s"] for t in runs]
        ax.plot(xs, ys, marker="o", color=COLORS[s],
                label=f"{LABELS[s]} ({report['setups'][s]['short']})")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_yscale("log")
    ax.set_xlabel("writes in flight")
    ax.set_ylabel("writes/s (log scale)")
    ax.set_title(f"Throughput vs writes in flight, 3 nodes on loopback{quick}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    p = out_dir / "compare.throughput.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(str(p))
    return paths


DOC = HERE.parent / "docs" / "performance.md"
_BEGIN, _END = "<!-- compare-table:begin -->", "<!-- compare-table:end -->"


def update_doc(path: Path, table: str) -> None:
    """Put the table of a full run between the markers of ``path`` (the README's section)."""
    try:
        doc = path.read_text()
    except OSError:
        return
    if _BEGIN not in doc or _END not in doc:
        return
    head, rest = doc.split(_BEGIN, 1)
    tail = rest.split(_END, 1)[1]
    path.write_text(f"{head}{_BEGIN}\n{table}{_END}{tail}")
    log(f"updated the table in {path}")


# -------------------------------------------------------------------------------- main
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated subset of pgraft,etcd,pysyncobj (default: all)")
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--no-install", action="store_true",
                   help="fail instead of installing missing packages")
    p.add_argument("--latency-count", type=int, default=5000)
    p.add_argument("--latency-max-seconds", type=float, default=20.0,
                   help="stop the sequential writes after this long (PySyncObj's ~100 ms "
                        "writes would otherwise take minutes)")
    p.add_argument("--windows", type=_ints, default=[1, 16, 256],
                   help="writes in flight for every system (default 1,16,256)")
    p.add_argument("--pysyncobj-windows", type=_ints,
                   default=[1, 16, 256, 1024, 4096, 16384, 65536],
                   help="PySyncObj's windows (its best is searched; its command queue holds "
                        "100000)")
    p.add_argument("--window-seconds", type=float, default=5.0)
    p.add_argument("--adds", type=int, default=5, help="member additions per system")
    p.add_argument("--kills", type=int, default=10, help="leader kills per system")
    p.add_argument("--election-timeout", type=int, default=1000, metavar="MS",
                   help="pgraft's and etcd's election timeout (default 1000: both defaults)")
    p.add_argument("--heartbeat-interval", type=int, default=100, metavar="MS",
                   help="pgraft's and etcd's heartbeat interval (default 100: both defaults)")
    p.add_argument("--floor-count", type=int, default=2000)
    p.add_argument("--no-update-doc", dest="update_doc", action="store_false",
                   help="do not put the table of a full run into docs/performance.md")
    ns = p.parse_args(argv)
    if ns.quick:
        ns.latency_count, ns.latency_max_seconds, ns.window_seconds = 200, 2.0, 0.5
        ns.pysyncobj_windows = [1, 256, 4096]
        ns.adds, ns.kills, ns.floor_count = 1, 1, 100
    ns.systems = [s.strip().lower() for s in ns.systems.split(",") if s.strip()]
    for s in ns.systems:
        if s not in SYSTEMS:
            p.error(f"unknown system {s!r} (choose from {', '.join(SYSTEMS)})")
    return ns



def _run_system(system: str, directory: str, ns: argparse.Namespace, common: dict[str, Any],
                timeouts: dict[str, Any]) -> dict[str, Any]:
    if system == "pgraft":
        import compare_pgraft

        return compare_pgraft.run_all(directory, windows=ns.windows, **common, **timeouts)
    if system == "etcd":
        import compare_etcd

        return compare_etcd.run_all(directory, windows=ns.windows, **common, **timeouts)
    import compare_pysyncobj

    return compare_pysyncobj.run_all(directory, windows=ns.pysyncobj_windows, **common)


def run(ns: argparse.Namespace) -> dict[str, Any]:
    """Measure every chosen system (one at a time) and the floor; write the outputs."""
    started = time.perf_counter()
    results: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}
    versions: dict[str, Any] = {}
    failed: dict[str, str] = {}
    floor: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="pgraft-compare-") as base:
        log(f"floor: fdatasync of 64 B in {base} and a loopback round trip")
        floor_runs = [measure_floor(base, ns.floor_count)]
        common = {"latency_count": ns.latency_count, "latency_max_s": ns.latency_max_seconds,
                  "window_seconds": ns.window_seconds, "adds": ns.adds, "kills": ns.kills}
        timeouts = {"election_timeout_ms": ns.election_timeout,
                    "heartbeat_interval_ms": ns.heartbeat_interval}
        for system in ns.systems:
            t0 = time.perf_counter()
            d = os.path.join(base, system)
            os.makedirs(d)
            try:
                r = _run_system(system, d, ns, common, timeouts)
            except Exception as exc:  # one system failing must not lose the others' numbers
                failed[system] = f"{type(exc).__name__}: {exc}"[:600]
                log(f"{LABELS[system]} FAILED after {time.perf_counter() - t0:.0f} s: "
                    f"{failed[system]}")
                continue
            if system == "pgraft":
                versions["pgraft_impl"] = r.get("implementation")
            samples[system] = r.pop("latency_samples_s")
            versions[system] = r.get("version")
            r["seconds"] = time.perf_counter() - t0
            results[system] = r
            log(f"{LABELS[system]} done in {r['seconds']:.0f} s")
        log("floor again, after the systems")
        floor_runs.append(measure_floor(base, ns.floor_count))
        # The lower floor of the two counts (the one less disturbed by whatever else ran).
        floor = {**min(floor_runs, key=lambda f: f["floor_ms"]), "runs": floor_runs}

    config = {"quick": ns.quick, "systems": ns.systems, "latency_count": ns.latency_count,
              "latency_max_seconds": ns.latency_max_seconds, "windows": ns.windows,
              "pysyncobj_windows": ns.pysyncobj_windows, "window_seconds": ns.window_seconds,
              "adds": ns.adds, "kills": ns.kills, "election_timeout_ms": ns.election_timeout,
              "heartbeat_interval_ms": ns.heartbeat_interval, "floor_count": ns.floor_count,
              "payload_bytes": 64}
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "config": config,
        "setups": {s: v for s, v in setups(config, versions).items() if s in results},
        "floor": floor,
        "results": results,
        "failed": failed,
        "ratios": {},
    }
    if "pgraft" in results and floor:
        report["ratios"]["pgraft_p50_over_floor"] = (results["pgraft"]["latency_ms"]["p50"]
                                                     / floor["floor_ms"])
        report["ratios"]["pgraft_p50_over_floor_one_disk"] = (
            results["pgraft"]["latency_ms"]["p50"] / floor["floor_one_disk_ms"])
    if "pgraft" in results and "etcd" in results:
        report["ratios"]["pgraft_p50_over_etcd_p50"] = (
            results["pgraft"]["latency_ms"]["p50"] / results["etcd"]["latency_ms"]["p50"])
    report["verdicts"] = verdicts(results, floor["floor_ms"] if floor else None)
    report["seconds"] = time.perf_counter() - started

    out = Path(ns.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (out / "compare.md").write_text(text)
    report["plots"] = plots(report, samples, out)
    if not ns.quick and ns.update_doc and set(results) == set(SYSTEMS):
        update_doc(DOC, text)
    print(text)
    log(f"wrote {out / 'compare.json'}, {out / 'compare.md'}, {', '.join(report['plots'])} "
        f"in {report['seconds']:.0f} s")
    return report


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    ensure_dependencies(ns.systems, not ns.no_install)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        report = run(ns)
    except KeyboardInterrupt:
        log("interrupted: every process started was stopped")
        return 130
    finally:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
