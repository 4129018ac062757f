"""HA failover benchmark: time to a writable primary after kill -9, and add-node to replica.

Three pgraft nodes in HA mode on loopback, each running PostgreSQL 15 (tests/support/
hacluster.py; run as root, the servers run as the postgres OS user, like ``make test``). A
client thread inserts a row every 10 ms through libpq's multi-host connection string with
``target_session_attrs=read-write``, reconnecting after every error, as an application
would. Each round kills the primary's node process *and* its postmaster with SIGKILL, and
measures the time from the kill to the first commit acknowledged by another server. Then the
old node is restarted, rejoins as a replica (pg_rewind), and the next round starts once all
three stream again.

Also measured: the rows the old primary acknowledged that the new primary does not have
(asynchronous replication's loss window), and the time from ``pgraft_add_node()`` to a
streaming replica for a fourth node with an empty directory.

    sudo .venv/bin/python benchmarks/ha.py --kills 10 --json benchmarks/results/ha.json \\
        --markdown benchmarks/results/ha.md
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from pgraft.ha.lease import LeaseSettings  # noqa: E402
from pgraft.pg import install as pg_install  # noqa: E402
from tests.support.hacluster import HaCluster, ha_cluster  # noqa: E402
from tests.support.postgres import PG_CONFIG, PREFIX, SOURCE_ROOT, wait_for  # noqa: E402


class Writer(threading.Thread):
    """Inserts a row every ``interval`` through a multi-host read-write connection."""

    def __init__(self, cluster: HaCluster, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        nodes = sorted(cluster.nodes.values(), key=lambda n: n.node_id)
        self.conninfo = (f"host={','.join('127.0.0.1' for _ in nodes)} "
                         f"port={','.join(str(n.pg_port) for n in nodes)} user=postgres "
                         "dbname=postgres target_session_attrs=read-write connect_timeout=1")
        self.interval = interval
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acks: list[tuple[float, int, int]] = []   # (time, id, server port)
        self.next_id = 1

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = psycopg.connect(self.conninfo, autocommit=True)
                row_id = self.next_id
                self.next_id += 1
                row = conn.execute("INSERT INTO bench_ha VALUES (%s) RETURNING "
                                   "inet_server_port()", (row_id,)).fetchone()
                assert row is not None
                with self.lock:
                    self.acks.append((time.monotonic(), row_id, int(row[0])))
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        if conn is not None:
            conn.close()

    def first_ack_after(self, t: float, port_not: int) -> tuple[float, int] | None:
        with self.lock:
            for when, _row_id, port in self.acks:
                if when > t and port != port_not:
                    return when, port
        return None

    def acked_by(self, port: int, before: float) -> set[int]:
        with self.lock:
            return {row_id for when, row_id, p in self.acks if p == port and when <= before}


def steady(cluster: HaCluster) -> None:
    primary = cluster.wait_primary(timeout=120)
    cluster.wait_streaming([i for i in cluster.nodes if i != primary.node_id], timeout=180)


def run(kills: int) -> dict[str, Any]:
    rc = pg_install.main(["--pg-config", PG_CONFIG, "--prefix", PREFIX,
                          "--source", str(SOURCE_ROOT)])
    if rc != 0:
        raise SystemExit("pgraft postgres install failed")
    rounds = []
    with ha_cluster() as cluster:
        cluster.start(3)
        steady(cluster)
        cluster.primary().sql("CREATE TABLE bench_ha (id bigint PRIMARY KEY)")
        writer = Writer(cluster)
        writer.start()
        try:
            for k in range(kills):
                steady(cluster)
                wait_for(lambda: len(writer.acks) > 20, timeout=30, what="writes flowing")
                old = cluster.primary()
                time.sleep(0.5)  # a steady stream of writes before the kill
                killed_at = time.monotonic()
                old.kill_all(signal.SIGKILL)
                got = wait_for(lambda o=old, t=killed_at: writer.first_ack_after(t, o.pg_port),
                               timeout=60, what="a commit on a new primary", interval=0.01)
                new_port = got[1]
                new = next(n for n in cluster.nodes.values() if n.pg_port == new_port)
                acked = writer.acked_by(old.pg_port, killed_at + 1)
                have = {r[0] for r in new.sql("SELECT id FROM bench_ha WHERE id = ANY(%s)",
                                              (sorted(acked),))}
                lost = len(acked - have)
                rounds.append({"round": k + 1, "old_primary": old.node_id,
                               "new_primary": new.node_id,
                               "seconds_to_writable": round(got[0] - killed_at, 3),
                               "acked_rows_lost": lost})
                print(f"round {k + 1}: node {old.node_id} -> {new.node_id} in "
                      f"{got[0] - killed_at:.3f} s, {lost} acknowledged rows lost",
                      flush=True)
                old.start()
        finally:
            writer.stop.set()
            writer.join(10)
        steady(cluster)
        primary = cluster.primary()
        node4 = cluster.add(4)
        node4.start()
        started = time.monotonic()
        primary.sql("SELECT pgraft_add_node(4, '127.0.0.1', %s)", (node4.raft_port,))
        wait_for(lambda: cluster.streaming(4), timeout=180, what="node 4 streaming",
                 interval=0.05)
        add_seconds = time.monotonic() - started
        size = primary.scalar("SELECT pg_size_pretty(pg_database_size('postgres'))")
    times = sorted(r["seconds_to_writable"] for r in rounds)
    lease = LeaseSettings()
    return {
        "kills": kills, "rounds": rounds,
        "p50_s": round(statistics.median(times), 3),
        "p99_s": round(times[min(len(times) - 1, int(0.99 * len(times)))], 3),
        "max_s": max(times), "min_s": min(times),
        "lease_duration_ms": int(lease.duration * 1000),
        "lease_renew_interval_ms": int(lease.renew_interval * 1000),
        "max_clock_drift": lease.max_clock_drift,
        "expiry_span_ms": int(lease.expiry_span * 1000),
        "election_timeout_ms": 1000,
        "acked_rows_lost_total": sum(r["acked_rows_lost"] for r in rounds),
        "add_node_to_streaming_s": round(add_seconds, 3), "database_size": size,
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "| measure | value |", "|---|---|",
        f"| kills of the primary's node + postmaster (SIGKILL) | {r['kills']} |",
        f"| time to writable primary, p50 | {r['p50_s']:.2f} s |",
        f"| time to writable primary, p99 (= max of {r['kills']}) | {r['p99_s']:.2f} s |",
        f"| time to writable primary, min | {r['min_s']:.2f} s |",
        f"| acknowledged rows the new primary lacked (all rounds) | "
        f"{r['acked_rows_lost_total']} |",
        f"| add-node to streaming replica ({r['database_size']} database) | "
        f"{r['add_node_to_streaming_s']:.2f} s |",
        "",
        f"Settings: lease {r['lease_duration_ms']} ms, renewed every "
        f"{r['lease_renew_interval_ms']} ms, clock drift bound {r['max_clock_drift']:g} "
        f"(others wait {r['expiry_span_ms']} ms after the last renewal they applied), "
        f"election timeout {r['election_timeout_ms']} ms; client writes every 10 ms "
        "through libpq multi-host `target_session_attrs=read-write`.",
        "",
        "| round | old primary | new primary | seconds | acked rows lost |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {x['round']} | {x['old_primary']} | {x['new_primary']} | "
              f"{x['seconds_to_writable']:.3f} | {x['acked_rows_lost']} |"
              for x in r["rounds"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    ns = parser.parse_args()
    result = run(ns.kills)
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    if ns.json:
        Path(ns.json).write_text(json.dumps(result, indent=2) + "\n")
    if ns.markdown:
        Path(ns.markdown).write_text(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
