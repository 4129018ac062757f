"""The HA failover benchmark of benchmarks/ha.py against Patroni, for a side-by-side table.

Three PostgreSQL 15 servers on loopback run by Patroni (PyPI) with etcd 3.4 (Debian's
etcd-server) as its DCS, at Patroni's defaults (ttl 30 s, loop_wait 10 s, retry_timeout
10 s) unless ``--ttl``/``--loop-wait`` say otherwise. The same client as benchmarks/ha.py
writes a row every 10 ms through libpq's multi-host ``target_session_attrs=read-write``. Each
round kills the leader's Patroni process and its postmaster with SIGKILL and measures the
time to the first commit acknowledged by another server; then the killed node is restarted
(``use_pg_rewind``) and the next round waits until all three run again.

Needs root (the servers run as the postgres OS user), etcd-server and a Patroni venv the
postgres user can run (``--patroni``, default /opt/patroni-bench/venv/bin/patroni)::

    sudo apt-get install etcd-server
    sudo /usr/bin/python3.11 -m venv /opt/patroni-bench/venv
    sudo /opt/patroni-bench/venv/bin/pip install 'patroni[etcd]' 'psycopg[binary]'
    sudo .venv/bin/python benchmarks/ha_patroni.py --kills 5 \\
        --json benchmarks/results/ha_patroni.json --markdown benchmarks/results/ha_patroni.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ha import Writer  # noqa: E402

from pgraft.localcluster import free_port  # noqa: E402
from tests.support.hacluster import http_code  # noqa: E402
from tests.support.postgres import pg_bindir, wait_for  # noqa: E402
from tests.support.procs import processes_mentioning  # noqa: E402


class PatroniNode:
    def __init__(self, base: Path, node_id: int, etcd: str, ttl: int, loop_wait: int,
                 patroni: str) -> None:
        self.node_id = node_id
        self.name = name = f"p{node_id}"
        self.dir = base / name
        self.pg_port = free_port()
        self.api_port = free_port()
        self.patroni = patroni
        self.proc: subprocess.Popen[bytes] | None = None
        user = pwd.getpwnam("postgres")
        self.dir.mkdir()
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.config = self.dir / "patroni.yml"
        self.config.write_text(f"""scope: bench
name: {name}
restapi:
  listen: 127.0.0.1:{self.api_port}
  connect_address: 127.0.0.1:{self.api_port}
etcd3:
  hosts: {etcd}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: 10
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_log_hints: "on"
  initdb:
    - encoding: UTF8
    - locale: C
postgresql:
  listen: 127.0.0.1:{self.pg_port}
  connect_address: 127.0.0.1:{self.pg_port}
  data_dir: {self.dir / "pg"}
  bin_dir: {pg_bindir()}
  pgpass: {self.dir / "pgpass"}
  authentication:
    superuser:
      username: postgres
      password: bench
    replication:
      username: replicator
      password: bench
    rewind:
      username: postgres
      password: bench
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 md5
    - host all all 127.0.0.1/32 trust
""")
        os.chown(self.config, user.pw_uid, user.pw_gid)
        self.user = user

    def start(self) -> None:
        with open(self.dir / "patroni.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                 "--init-groups", "--", self.patroni, str(self.config)],
                cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def code(self, path: str) -> int:
        return http_code(self.api_port, path, timeout=2)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.dir / "pg" / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        for pid in (self.proc.pid if self.proc else None, self.postmaster_pid()):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)


class Cluster:
    """Enough of HaCluster's interface for :class:`ha.Writer` (``nodes`` with ``pg_port``)."""

    def __init__(self, nodes: dict[int, PatroniNode]) -> None:
        self.nodes = nodes

    def leader(self) -> PatroniNode:
        leaders = [n for n in self.nodes.values() if n.code("/primary") == 200]
        if len(leaders) != 1:
            raise AssertionError(f"{len(leaders)} leaders")
        return leaders[0]

    def steady(self) -> PatroniNode:
        lead = wait_for(self.leader, timeout=180, what="a Patroni leader", interval=0.2)
        wait_for(lambda: all(n.code("/replica") == 200 for n in self.nodes.values()
                             if n is not lead), timeout=300, what="two running replicas",
                 interval=0.5)
        # /replica says "running as a replica", not "streaming": ask the leader.
        wait_for(lambda: streaming(lead) == 2, timeout=300, what="two streaming replicas",
                 interval=0.5)
        return lead


def streaming(node: PatroniNode) -> int:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=node.pg_port, user="postgres",
                         dbname="postgres", connect_timeout=3) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_replication "
                           "WHERE state = 'streaming'").fetchone()
    return int(row[0]) if row else 0


def run(kills: int, ttl: int, loop_wait: int, patroni: str) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="pgraft-patroni-", dir="/tmp"))
    os.chmod(base, 0o755)
    client_port, peer_port = free_port(), free_port()
    etcd = subprocess.Popen(
        ["etcd", "--data-dir", str(base / "etcd"), "--listen-client-urls",
         f"http://127.0.0.1:{client_port}", "--advertise-client-urls",
         f"http://127.0.0.1:{client_port}", "--listen-peer-urls",
         f"http://127.0.0.1:{peer_port}", "--initial-advertise-peer-urls",
         f"http://127.0.0.1:{peer_port}", "--initial-cluster",
         f"default=http://127.0.0.1:{peer_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = {i: PatroniNode(base, i, f"127.0.0.1:{client_port}", ttl, loop_wait, patroni)
             for i in (1, 2, 3)}
    for i, node in nodes.items():
        node.start()
        if i == 1:  # let the first one bootstrap, the others clone it
            wait_for(lambda n=node: n.code("/primary") == 200, timeout=180,
                     what="Patroni's first leader", interval=0.5)
    cluster = Cluster(nodes)
    rounds = []
    ok = False
    try:
        lead = cluster.steady()
        with subprocess.Popen(["psql", "-h", "127.0.0.1", "-p", str(lead.pg_port), "-U",
                               "postgres", "-c", "CREATE TABLE bench_ha (id bigint PRIMARY KEY)"],
                              stdout=subprocess.DEVNULL) as p:
            p.wait(30)
        writer = Writer(cluster)  # type: ignore[arg-type]
        writer.start()
        try:
            for k in range(kills):
                old = cluster.steady()
                wait_for(lambda: len(writer.acks) > 20, timeout=30, what="writes flowing")
                time.sleep(0.5)
                killed_at = time.monotonic()
                old.kill()
                got = wait_for(lambda o=old, t=killed_at: writer.first_ack_after(t, o.pg_port),
                               timeout=180, what="a commit on a new primary", interval=0.02)
                new = next(n for n in nodes.values() if n.pg_port == got[1])
                rounds.append({"round": k + 1, "old_primary": old.name,
                               "new_primary": new.name,
                               "seconds_to_writable": round(got[0] - killed_at, 3)})
                print(f"round {k + 1}: {old.name} -> {new.name} in "
                      f"{got[0] - killed_at:.3f} s", flush=True)
                old.start()
        finally:
            writer.stop.set()
            writer.join(10)
        ok = True
    finally:
        for node in nodes.values():
            with contextlib.suppress(Exception):
                node.kill()
        etcd.kill()
        etcd.wait(10)
        for pid in processes_mentioning(str(base)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if ok:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base} (Patroni logs: */patroni.log)", file=sys.stderr)
    times = sorted(r["seconds_to_writable"] for r in rounds)
    return {"system": "patroni", "kills": kills, "ttl_s": ttl, "loop_wait_s": loop_wait,
            "retry_timeout_s": 10, "rounds": rounds,
            "p50_s": round(statistics.median(times), 3), "max_s": max(times),
            "min_s": min(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--ttl", type=int, default=30)
    parser.add_argument("--loop-wait", type=int, default=10)
    parser.add_argument("--patroni", default="/opt/patroni-bench/venv/bin/patroni")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    ns = parser.parse_args()
    result = run(ns.kills, ns.ttl, ns.loop_wait, ns.patroni)
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    if ns.json:
        Path(ns.json).write_text(json.dumps(result, indent=2) + "\n")
    if ns.markdown:
        lines = ["| round | old primary | new primary | seconds |", "|---|---|---|---|"]
        lines += [f"| {r['round']} | {r['old_primary']} | {r['new_primary']} | "
                  f"{r['seconds_to_writable']:.3f} |" for r in result["rounds"]]
        Path(ns.markdown).write_text(
            f"Patroni {ns.ttl=}, {ns.loop_wait=}: p50 {result['p50_s']:.2f} s, max "
            f"{result['max_s']:.2f} s over {ns.kills} kills\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
