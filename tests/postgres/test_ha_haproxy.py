"""HAProxy in front of an HA cluster, configured as the README says: one port that reaches
the primary (`/primary` health check), one that reaches the replicas (`/replica?lag=`), and
the write port follows a failover by itself."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgraft.localcluster import free_port
from tests.support.hacluster import HaCluster, ha_cluster
from tests.support.postgres import wait_for

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def haproxy_config(cluster: HaCluster, write_port: int, read_port: int) -> str:
    """The README's configuration, on loopback, with shorter check intervals."""
    servers = "\n".join(f"    server n{i} 127.0.0.1:{n.pg_port} check port {n.http_port}"
                        for i, n in sorted(cluster.nodes.items()))
    defaults = "    default-server inter 300ms fall 2 rise 2 on-marked-down shutdown-sessions"
    return f"""global
    maxconn 100

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s

listen primary
    bind 127.0.0.1:{write_port}
    option httpchk OPTIONS /primary
    http-check expect status 200
{defaults}
{servers}

listen replicas
    bind 127.0.0.1:{read_port}
    balance roundrobin
    option httpchk OPTIONS /replica?lag=16MB
    http-check expect status 200
{defaults}
{servers}
"""


@pytest.fixture
def haproxy_cluster(pgraft_installed: str, tmp_path: Path) -> Iterator[tuple[HaCluster, int,
                                                                             int]]:
    if not Path(HAPROXY).exists():
        pytest.fail(f"{HAPROXY} is missing: run `make system-deps` (it installs haproxy)")
    with ha_cluster() as cluster:
        cluster.start(3)
        primary = cluster.wait_primary(timeout=120)
        cluster.wait_streaming([i for i in cluster.nodes if i != primary.node_id])
        write_port, read_port = free_port(), free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(haproxy_config(cluster, write_port, read_port))
        check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield cluster, write_port, read_port
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def through(port: int) -> tuple[int, bool]:
    """(the server's port, whether it is in recovery) of a fresh connection via HAProxy."""
    conn: psycopg.Connection[Any]
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True, connect_timeout=3) as conn:
        row = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


def test_haproxy_sends_writes_to_the_primary_and_follows_a_failover(
        haproxy_cluster: tuple[HaCluster, int, int]) -> None:
    cluster, write_port, read_port = haproxy_cluster
    old = cluster.primary()
    replica_ports = {n.pg_port for i, n in cluster.nodes.items() if i != old.node_id}
    assert wait_for(lambda: through(write_port) == (old.pg_port, False), timeout=30,
                    what="the write port to reach the primary")
    assert wait_for(lambda: through(read_port)[0] in replica_ports and through(read_port)[1],
                    timeout=30, what="the read port to reach a replica")
    old.kill_all(signal.SIGKILL)
    new = cluster.wait_primary(timeout=60, among=[i for i in cluster.nodes
                                                  if i != old.node_id])
    wait_for(lambda: through(write_port) == (new.pg_port, False), timeout=30,
             what="the write port to follow the failover to the new primary")
    with psycopg.connect(host="127.0.0.1", port=write_port, user="postgres",
                         dbname="postgres", autocommit=True, connect_timeout=3) as conn:
        conn.execute("CREATE TABLE via_haproxy (id int)")
        conn.execute("INSERT INTO via_haproxy VALUES (1)")
