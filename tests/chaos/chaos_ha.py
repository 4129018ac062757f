"""The chaos campaign (chaos_campaign.py) against an HA cluster: every node runs PostgreSQL.

The nodes are ``pgraft serve --postgres`` processes, run as the ``postgres`` OS user (with
``setpriv``, which execs: the PID the nemesis kills or pauses is the node's), from the venv
the installer made (/opt/pgraft). The campaign's own clients, nemesis and checks run
unchanged:

- the KV and append workers;
- kill -9 (of the node alone: its postmaster keeps running and must fence itself), SIGSTOP
  pauses, partitions in network namespaces;
- membership changes: an added node clones a replica, a removed one is detached.

Beside them a PostgreSQL writer inserts a row every 20 ms through libpq's multi-host
``target_session_attrs=read-write`` and records, for every acknowledged row, the timeline of
the server that acknowledged it. After the run it checks:

* **one primary at a time.** The acknowledgements, in real-time order, never go back to a
  lower timeline. A deposed primary that still acknowledged a commit after a newer primary
  had would show as exactly that.
* **what asynchronous replication lost.** Rows acknowledged but missing on the final primary
  are counted and reported; they are not an anomaly.

``lose-unsynced`` is left out: it rewrites a node's files from outside, under a PostgreSQL
server that is not part of that model.

    sudo .venv/bin/python tests/chaos/chaos_ha.py --duration 300 --seed 7     # make chaos-ha
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
for _p in (_HERE, _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import psycopg  # noqa: E402
from chaos_campaign import (  # noqa: E402
    FAULT_KINDS,
    Anomaly,
    Campaign,
    ChaosCluster,
    Config,
    Result,
    summary,
)
from chaos_net import NetNamespaces  # noqa: E402

import pgraft  # noqa: E402
from pgraft.localcluster import NodeProcess, free_port  # noqa: E402
from tests.support.procs import processes_mentioning  # noqa: E402

PG_OS_USER = "postgres"
PREFIX = os.environ.get("PGRAFT_PREFIX", "/opt/pgraft")
PG_BIN = os.environ.get("PGRAFT_PG_BIN", "/usr/lib/postgresql/15/bin")
HA_FAULTS = tuple(k for k in FAULT_KINDS if k != "lose-unsynced")


@dataclass
class PgPlace:
    pgdata: str
    pg_port: int
    http_port: int


class HaChaosCluster(ChaosCluster):
    """A ChaosCluster whose nodes run in HA mode as the postgres OS user."""

    def __init__(self, size: int, net: NetNamespaces | None, **options: Any) -> None:
        self.pg: dict[int, PgPlace] = {}
        self.user = pwd.getpwnam(PG_OS_USER)
        super().__init__(size, net, **options)
        os.chmod(self.base_dir, 0o755)
        self.hba_file = os.path.join(self.base_dir, "client_hba.conf")
        clients = "127.0.0.1/32" if net is None else f"{net.subnet}.0/24"
        with open(self.hba_file, "w") as f:
            f.write(f"host all all {clients} trust\n")
        os.chmod(self.hba_file, 0o644)
        # The node's Python is the installed venv's, not this checkout's.
        self.env.pop("PYTHONPATH", None)

    def _add(self, node_id: int, bootstrap: bool) -> NodeProcess:
        node = super()._add(node_id, bootstrap)
        in_ns = self.net is not None
        self.pg[node_id] = PgPlace(
            pgdata=os.path.join(self.base_dir, f"node{node_id}.pg"),
            pg_port=5432 if in_ns else free_port(),
            http_port=8008 if in_ns else free_port())
        return node

    def command(self, node_id: int) -> list[str]:
        base = ChaosCluster.command(self, node_id)
        prefix: list[str] = []
        if self.net is not None:  # ["ip", "netns", "exec", NS] + the LocalCluster command
            prefix, base = base[:4], base[4:]
        assert base[1:4] == ["-m", "pgraft", "serve"], base
        place = self.pg[node_id]
        node_cmd = [os.path.join(PREFIX, "venv", "bin", "pgraft"), "serve", *base[4:],
                    "--postgres", place.pgdata, "--pg-port", str(place.pg_port),
                    "--pg-bin", PG_BIN, "--pg-hba", self.hba_file,
                    "--http-port", str(place.http_port)]
        # setpriv execs (runuser would fork): the PID the nemesis signals is the node's.
        return [*prefix, "setpriv", f"--reuid={self.user.pw_uid}",
                f"--regid={self.user.pw_gid}", "--init-groups", "--", *node_cmd]

    def start_node(self, node_id: int, *, wait: bool = True, timeout: float = 30.0) -> None:
        node = self.nodes[node_id]
        for path in (node.data_dir, self.pg[node_id].pgdata):
            os.makedirs(path, exist_ok=True)
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        # The log file is opened by this process (root), and written by the node's stdout.
        super().start_node(node_id, wait=wait, timeout=max(timeout, 60.0))

    def close(self) -> None:
        try:
            super().close()
        finally:
            # Postmasters of nodes that were killed (they outlive their node by design).
            for pid in processes_mentioning(self.base_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def pg_endpoint(self, node_id: int) -> tuple[str, int]:
        return self.nodes[node_id].host, self.pg[node_id].pg_port


@dataclass
class Ack:
    time: float
    row_id: int
    timeline: int
    node_id: int


@dataclass
class PgWriter:
    """Inserts a row every ``interval`` through a multi-host read-write connection to the
    current members, reconnecting after every error (bounded by ``stop``)."""

    cluster: HaChaosCluster
    members: Any  # () -> list[int]
    interval: float = 0.02
    acks: list[Ack] = field(default_factory=list)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    next_id: int = 1

    def conninfo(self) -> str:
        ids = sorted(self.members())
        hosts = [self.cluster.pg_endpoint(i) for i in ids]
        return (f"host={','.join(h for h, _ in hosts)} port={','.join(str(p) for _, p in hosts)}"
                " user=postgres dbname=postgres target_session_attrs=read-write "
                "connect_timeout=2")

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        by_endpoint: dict[tuple[str, int], int] = {}
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    by_endpoint = {self.cluster.pg_endpoint(i): i for i in self.members()}
                    conn = psycopg.connect(self.conninfo(), autocommit=True)
                row_id = self.next_id
                self.next_id += 1
                row = conn.execute(
                    "INSERT INTO chaos_rows VALUES (%s) RETURNING "
                    "pg_walfile_name(pg_current_wal_lsn())", (row_id,)).fetchone()
                assert row is not None
                node = by_endpoint.get((conn.info.host, conn.info.port), 0)
                self.acks.append(Ack(time.monotonic(), row_id, int(row[0][:8], 16), node))
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        if conn is not None:
            conn.close()


def check_timelines(acks: list[Ack]) -> list[Anomaly]:
    """Acknowledgements in real-time order never go back to a lower timeline."""
    out = []
    highest: Ack | None = None
    for ack in sorted(acks, key=lambda a: a.time):
        if highest is not None and ack.timeline < highest.timeline:
            out.append(Anomaly("two-primaries", (
                f"row {ack.row_id} was acknowledged by node {ack.node_id} on timeline "
                f"{ack.timeline} {ack.time - highest.time:.3f}s after row {highest.row_id} "
                f"had been acknowledged by node {highest.node_id} on timeline "
                f"{highest.timeline}")))
        if highest is None or ack.timeline > highest.timeline:
            highest = ack
    return out


class HaCampaign(Campaign):
    writer: PgWriter

    def _cluster(self, **options: Any) -> ChaosCluster:
        return HaChaosCluster(self.cfg.nodes, self.net, **options)

    async def run_async(self) -> None:
        self.writer = PgWriter(self.c, self.member_ids)  # type: ignore[arg-type]
        primary = await self.wait_for("a PostgreSQL primary", self.find_primary, 120)
        if primary is None:
            return
        host, port = self.c.pg_endpoint(primary)  # type: ignore[attr-defined]
        with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=5) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS chaos_rows (id bigint PRIMARY KEY)")
        thread = threading.Thread(target=self.writer.run, daemon=True)
        thread.start()
        try:
            await super().run_async()
        finally:
            self.writer.stop.set()
            await asyncio.to_thread(thread.join, 10)
        await self.check_rows()

    async def find_primary(self) -> int | None:
        for i in self.alive_ids():
            try:
                rows = await self.ask(i, "ha_status", timeout=2.0)
            except pgraft.PgraftError:
                continue
            primaries = [r["node_id"] for r in rows
                         if r["pg_role"] == "primary" and (r["lease_remaining_ms"] or 0) > 0]
            if len(primaries) == 1:
                return int(primaries[0])
        return None

    async def check_rows(self) -> None:
        acks = self.writer.acks
        self.anomalies += check_timelines(acks)
        primary = await self.wait_for("a PostgreSQL primary after healing", self.find_primary,
                                      120)
        if primary is None:
            self.anomalies.append(Anomaly("no-primary", "no PostgreSQL primary within 120 s "
                                          "after the faults healed"))
            return
        host, port = self.c.pg_endpoint(primary)  # type: ignore[attr-defined]
        with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=5) as conn:
            present = {r[0] for r in conn.execute("SELECT id FROM chaos_rows").fetchall()}
        lost = sorted({a.row_id for a in acks} - present)
        timelines = sorted({a.timeline for a in acks})
        self.notes.append(
            f"PostgreSQL: {len(acks)} rows acknowledged on timelines {timelines}, "
            f"{self.writer.errors} failed attempts, {len(lost)} acknowledged rows missing on "
            f"the final primary (node {primary}; asynchronous replication's loss window)")


def run(cfg: Config) -> Result:
    campaign = HaCampaign(cfg)
    return campaign.run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float,
                   default=float(os.environ.get("CHAOS_DURATION", "300")))
    p.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "0")) or None)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--faults", default=",".join(HA_FAULTS))
    p.add_argument("--out-dir", default=os.environ.get("CHAOS_OUT_DIR"))
    p.add_argument("--keep", action="store_true")
    p.add_argument("--quiet", action="store_true")
    ns = p.parse_args(argv)
    seed = ns.seed or random.SystemRandom().randrange(1, 1 << 31)
    faults = tuple(k.strip() for k in ns.faults.split(",") if k.strip())
    unknown = set(faults) - set(HA_FAULTS)
    if unknown:
        p.error(f"unknown fault kinds for an HA cluster: {sorted(unknown)}")
    cfg = ha_config(Config(seed=seed, duration=ns.duration, nodes=ns.nodes,
                           workers=ns.workers, faults=faults, out_dir=ns.out_dir,
                           keep=ns.keep, quiet=ns.quiet))
    result = run(cfg)
    print(summary(cfg, result), flush=True)
    return 0 if result.ok else 1


def ha_config(cfg: Config) -> Config:
    """The campaign's settings for HA: a 1000 ms election timeout (PostgreSQL's startup on
    two cores must not cost elections), no failpoints, and no snapshot churn beyond the
    default test settings."""
    return replace(cfg, election_ms=1000, heartbeat_ms=100, failpoints="",
                   op_timeout=3.0, faults=tuple(k for k in cfg.faults if k in HA_FAULTS))


if __name__ == "__main__":
    sys.exit(main())
