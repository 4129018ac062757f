"""HA mode's fencing in the server (postgres/fence.c): with pgraft.ha_lease_file set, a
transaction that wrote commits only while the lease file's deadline is in the future.

No pgraft node runs here: the test writes the lease file itself, in the format the
`pgraft serve --postgres` node writes (16 bytes: b"PGRAFTL1", then the deadline as a
little-endian int64 in nanoseconds of CLOCK_MONOTONIC, updated in place at offset 8).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.postgres import PgServer, cleaned_up_cluster, free_ports, wait_for

HINT = ("Connect to the current primary: pgraft_get_leader() names it, or use "
        "target_session_attrs=read-write.")
MESSAGE = "cannot commit: this server no longer holds the pgraft primary lease"


class LeaseFile:
    """The lease file as the node keeps it: created once, renewed by a pwrite at offset 8."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self, seconds: float, magic: bytes = b"PGRAFTL1") -> None:
        """A new file (a new inode) whose lease runs ``seconds`` from now."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(magic + struct.pack("<q", self._deadline(seconds)))
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.path)

    def renew(self, seconds: float) -> int:
        """Set the deadline in place; a negative ``seconds`` sets one in the past."""
        deadline = self._deadline(seconds)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            assert os.pwrite(fd, struct.pack("<q", deadline), 8) == 8
        finally:
            os.close(fd)
        return deadline

    @staticmethod
    def _deadline(seconds: float) -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME) + int(seconds * 1e9)


@pytest.fixture(scope="module")
def ha(pgraft_installed: str) -> Iterator[tuple[PgServer, LeaseFile]]:
    """A server in HA mode without a node: pgraft preloaded, pgraft.ha_lease_file and
    pgraft.data_dir set, no pgraft.node_id (what `pgraft serve --postgres` writes)."""
    with cleaned_up_cluster() as cluster:
        (port,) = free_ports(1)
        base = cluster.base / "node1"
        lease = LeaseFile(base / "lease")
        server = cluster.add(1, port, extra={
            "pgraft.node_id": None,
            "pgraft.ha_lease_file": str(lease.path),
            "pgraft.data_dir": str(base / "raft"),
            "max_prepared_transactions": 2,
            "autovacuum": "off",  # its ANALYZE would write, and be refused, while fenced
        })
        lease.create(60)
        server.start()
        server.sql("CREATE EXTENSION pgraft CASCADE")
        server.sql("CREATE TABLE t (i int)")
        yield server, lease


def rows(server: PgServer) -> int:
    return int(server.scalar("SELECT count(*) FROM t"))


def refused(server: PgServer, query: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        server.sql(query)
    return info.value


def assert_fenced(err: psycopg.Error, message: str = MESSAGE) -> None:
    assert err.sqlstate == "25006", err  # read_only_sql_transaction
    assert err.diag.message_primary == message
    assert err.diag.message_hint == HINT


def test_a_held_lease_commits_an_expired_one_does_not(ha: tuple[PgServer, LeaseFile]) -> None:
    server, lease = ha
    lease.renew(60)
    before = rows(server)
    server.sql("INSERT INTO t VALUES (1)")
    assert rows(server) == before + 1

    lease.renew(-1.5)
    err = refused(server, "INSERT INTO t VALUES (2)")
    assert_fenced(err)
    detail = err.diag.message_detail or ""
    assert detail.startswith(f'The primary lease in "{lease.path}" expired ')
    assert int(detail.split(" expired ")[1].split(" ms ago")[0]) >= 1500
    # a read-only transaction is not checked
    assert rows(server) == before + 1
    assert server.scalar("SELECT 1") == 1

    lease.renew(60)  # the same file, updated in place: the backends' open file sees it
    server.sql("INSERT INTO t VALUES (3)")
    assert rows(server) == before + 2


def test_a_transaction_begun_under_the_lease_cannot_commit_after_it(
        ha: tuple[PgServer, LeaseFile]) -> None:
    server, lease = ha
    before = rows(server)
    deadline = lease.renew(60)
    with server.connect() as conn:
        conn.autocommit = False
        conn.execute("INSERT INTO t VALUES (10)")
        conn.execute("INSERT INTO t VALUES (11)")
        deadline = lease.renew(0.3)
        wait_for(lambda: time.clock_gettime_ns(time.CLOCK_BOOTTIME) > deadline, timeout=5,
                 what="the lease to run out", interval=0.05)
        with pytest.raises(psycopg.Error) as info:
            conn.commit()
        assert_fenced(info.value)
    assert rows(server) == before


def test_a_missing_or_foreign_lease_file_fences(ha: tuple[PgServer, LeaseFile]) -> None:
    server, lease = ha
    lease.renew(60)
    before = rows(server)
    with server.connect() as kept:  # a session whose backend has the file open
        kept.execute("INSERT INTO t VALUES (20)")
        # replaced by a rename: the backend reads the new file, not the one it has open
        lease.create(-1)
        with pytest.raises(psycopg.Error) as info:
            kept.execute("INSERT INTO t VALUES (19)")
        assert_fenced(info.value)
        lease.path.unlink()
        for attempt in (lambda: kept.execute("INSERT INTO t VALUES (21)"),
                        lambda: server.sql("INSERT INTO t VALUES (22)")):
            with pytest.raises(psycopg.Error) as info:
                attempt()
            assert_fenced(info.value)
            assert info.value.diag.message_detail == (
                f'The lease file "{lease.path}" could not be opened: No such file or directory.')

        lease.create(60, magic=b"NOTALEAS")
        err = refused(server, "INSERT INTO t VALUES (23)")
        assert_fenced(err)
        assert err.diag.message_detail == (
            f'The file "{lease.path}" does not start with "PGRAFTL1": it is not a pgraft lease '
            "file.")

        lease.create(60)  # a new file: the kept session reopens it
        kept.execute("INSERT INTO t VALUES (24)")
    assert rows(server) == before + 2


def test_two_phase_commit_is_fenced_at_prepare_and_at_commit_prepared(
        ha: tuple[PgServer, LeaseFile]) -> None:
    server, lease = ha
    before = rows(server)

    lease.renew(-1)
    with server.connect() as conn:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (30)")
        with pytest.raises(psycopg.Error) as info:
            conn.execute("PREPARE TRANSACTION 'pgraft_fence_a'")
        assert_fenced(info.value, "cannot prepare the transaction: this server no longer "
                                  "holds the pgraft primary lease")

    lease.renew(60)
    with server.connect() as conn:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (31)")
        conn.execute("PREPARE TRANSACTION 'pgraft_fence_b'")
    lease.renew(-1)
    err = refused(server, "COMMIT PREPARED 'pgraft_fence_b'")
    assert_fenced(err, "cannot commit the prepared transaction: this server no longer holds "
                       "the pgraft primary lease")
    assert server.scalar("SELECT count(*) FROM pg_prepared_xacts") == 1
    lease.renew(60)
    server.sql("COMMIT PREPARED 'pgraft_fence_b'")
    assert rows(server) == before + 1
    assert server.scalar("SELECT count(*) FROM pg_prepared_xacts") == 0


def test_ha_mode_starts_no_node_and_the_functions_find_its_socket(
        ha: tuple[PgServer, LeaseFile]) -> None:
    server, lease = ha
    status: dict[str, Any] = server.launcher_status()
    assert status["state"] == "ha mode"
    assert status["launcher_pid"] is None and status["node_pid"] is None
    assert status["last_error"] is None and status["restarts"] == 0
    assert server.scalar("SELECT count(*) FROM pg_stat_activity "
                         "WHERE backend_type = 'pgraft launcher'") == 0
    assert not server.node_pids()
    assert "pgraft launcher" not in server.log()
    # pgraft.data_dir without pgraft.node_id: the node's socket, whose node is not running
    node_dir = Path(str(server.extra["pgraft.data_dir"]))
    assert server.scalar("SELECT pgraft_socket_path()") == f"{node_dir}/node.sock"
    err = refused(server, "SELECT pgraft_get_leader()")
    assert err.sqlstate == "08006"
    assert "HA mode" in (err.diag.message_hint or "")
    assert server.scalar("SHOW pgraft.ha_lease_file") == str(lease.path)
