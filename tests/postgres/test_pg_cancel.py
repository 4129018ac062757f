"""pgraft SQL calls honour pg_cancel_backend(), statement_timeout and pgraft.request_timeout.

Three servers; the node processes of the two followers are stopped with SIGSTOP, so that the
leader can neither commit a write nor confirm a linearizable read: every call below would
wait for the whole request timeout if PostgreSQL's interrupts were not seen while waiting.
A long election timeout keeps the leader in place (and its lease valid) meanwhile.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from tests.support.postgres import (
    PgServer,
    cleaned_up_cluster,
    free_ports,
    wait_for,
    wait_leader,
)

# Far beyond anything the test waits for: a call that returns, returns because of the
# interrupt, not because of this timeout.
REQUEST_TIMEOUT = "120s"


@dataclass
class Paused:
    leader: PgServer
    followers: list[PgServer]


@pytest.fixture(scope="module")
def paused(pgraft_installed: str) -> Iterator[Paused]:
    with cleaned_up_cluster() as cluster:
        ports = free_ports(3)
        initial = ",".join(f"{i}=127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3))
        servers = [cluster.add(i, ports[i - 1], initial,
                               extra={"pgraft.election_timeout": 20000,
                                      "pgraft.heartbeat_interval": 200,
                                      "pgraft.request_timeout": REQUEST_TIMEOUT})
                   for i in (1, 2, 3)]
        for s in servers:
            s.start()
        for s in servers:
            s.sql("CREATE EXTENSION pgraft CASCADE")
        leader = wait_leader(servers, timeout=90)
        assert leader.scalar("SELECT pgraft_kv_put('k', 'before')") is True
        followers = [s for s in servers if s is not leader]
        pids = [s.node_pid() for s in followers]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield Paused(leader, followers)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)


def failing(server: PgServer, *statements: str) -> tuple[psycopg.Error, float]:
    """Run ``statements`` on one connection; the last must fail: its error and how long it
    took."""
    with server.connect() as conn:
        for sql in statements[:-1]:
            conn.execute(sql)
        started = time.monotonic()
        with pytest.raises(psycopg.Error) as info:
            conn.execute(statements[-1])
        return info.value, time.monotonic() - started


def test_statement_timeout_stops_a_write_whose_outcome_is_then_unknown(
        paused: Paused) -> None:
    err, took = failing(paused.leader, "SET statement_timeout = '300ms'",
                        "SELECT pgraft_kv_put('k', 'during')")
    assert err.sqlstate == "57014"
    assert err.diag.message_primary == "canceling statement due to statement timeout"
    assert "outcome is unknown" in (err.diag.message_detail or "")
    assert (err.diag.message_hint or "").startswith("Check with a read")
    assert took < 10, took  # not the 120 s request timeout


def test_statement_timeout_stops_a_read(paused: Paused) -> None:
    err, took = failing(paused.leader, "SET statement_timeout = '300ms'",
                        "SELECT pgraft_kv_get('k')")
    assert err.sqlstate == "57014"
    assert err.diag.message_primary == "canceling statement due to statement timeout"
    assert err.diag.message_detail is None
    assert took < 10, took


def test_pg_cancel_backend_stops_a_waiting_call(paused: Paused) -> None:
    leader = paused.leader
    outcome: dict[str, object] = {}
    with leader.connect() as conn:
        pid = conn.info.backend_pid
        conn.execute("SELECT pgraft_get_term()")  # the session's bridge is set up

        def run() -> None:
            try:
                conn.execute("SELECT pgraft_kv_get('k')")
            except psycopg.Error as exc:
                outcome["error"] = exc
            outcome["done"] = time.monotonic()

        worker = threading.Thread(target=run)
        worker.start()
        wait_for(lambda: leader.scalar(
            "SELECT state = 'active' AND query LIKE '%%pgraft_kv_get%%' "
            "FROM pg_stat_activity WHERE pid = %s", [pid]), timeout=30,
            what="the call to be waiting")
        cancelled_at = time.monotonic()
        assert leader.scalar("SELECT pg_cancel_backend(%s)", [pid]) is True
        worker.join(timeout=30)
        assert not worker.is_alive(), "the call ignored pg_cancel_backend()"
        err = outcome["error"]
        assert isinstance(err, psycopg.Error) and err.sqlstate == "57014"
        assert err.diag.message_primary == "canceling statement due to user request"
        assert float(outcome["done"]) - cancelled_at < 5  # type: ignore[arg-type]
        # the session (and its pgraft client) still works
        assert conn.execute("SELECT pgraft_get_term() > 0").fetchone() == (True,)


def test_a_cancel_during_the_first_call_of_a_session_is_postgresql_s_own_error(
        paused: Paused) -> None:
    """Cancelled while the session sets pgraft up (its first call runs a query to find the
    socket): PostgreSQL's cancel error as it is, not PL/Python's "spiexceptions..." text."""
    err, _ = failing(paused.leader, "SET statement_timeout = '1ms'",
                     "SELECT pgraft_get_term()")
    assert err.sqlstate == "57014"
    assert err.diag.message_primary == "canceling statement due to statement timeout"


def test_request_timeout_is_user_settable(paused: Paused) -> None:
    err, took = failing(paused.leader, "SET pgraft.request_timeout = '500ms'",
                        "SELECT pgraft_kv_get('k')")
    assert err.sqlstate == "57014"
    assert err.diag.message_primary.startswith("cannot get key: ")
    assert "raise pgraft.request_timeout (now 500 ms)" in (err.diag.message_hint or "")
    assert took < 10, took
