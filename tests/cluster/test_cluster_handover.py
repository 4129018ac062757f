"""A graceful stop (SIGTERM) of the leader hands the leadership over, on real node processes;
when nobody can take it, the stop waits a bounded time.

The election timeout is long (5 s): the followers hear the leader's heartbeats until it stops
and each waits at least one election timeout (randomized: one to two) after the last one
before it campaigns. A new leader sooner than that is something only a handover achieves."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from tests.support.cluster import (  # noqa: F401  (fixtures)
    ELECTION_TIMEOUT_MS,
    Cluster,
    cluster_factory_fixture,
    requires_node,
    wait_until,
)

pytestmark = [pytest.mark.cluster, requires_node]

ELECTION_MS = 5000
HEARTBEAT_MS = 100


def test_sigterm_of_the_leader_hands_over(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory(3, election_timeout_ms=ELECTION_MS, heartbeat_interval_ms=HEARTBEAT_MS)
    leader = c.wait_for_leader(timeout=60)
    with c.client(leader, 10) as cl:
        index = cl.append(b"before the handover")
        term = cl.get_term()
    c.wait_applied(index)  # both followers caught up and answering
    others = [i for i in c.nodes if i != leader]

    started = time.monotonic()
    c.send_signal(leader, signal.SIGTERM)
    new = c.wait_for_leader(timeout=0.5 * ELECTION_MS / 1000, among=others)
    took = time.monotonic() - started
    assert took < ELECTION_MS / 1000
    assert new in others
    proc = c.nodes[leader].proc
    assert proc is not None
    assert proc.wait(15) == 0
    old_log = c.nodes[leader].log_tail(60)
    assert f"node {leader} is stopping: handing the leadership over to node {new}" in old_log
    assert f"node {leader}: node {new} took over the leadership in" in old_log
    assert old_log.rstrip().endswith(f"node {leader} stopped")
    with c.client(new, 10) as cl:
        assert cl.get_term() > term
        assert cl.get_entry(index)["data"] == b"before the handover"
        assert cl.append(b"after the handover") > index

    # a follower stops as before: no handover
    follower = next(i for i in others if i != new)
    assert c.stop(follower) == 0
    assert "handing the leadership over" not in c.nodes[follower].log_tail(60)


def test_sigterm_waits_for_a_handover_at_most_about_two_election_timeouts(
        cluster_factory: Callable[..., Cluster]) -> None:
    """The followers are paused (their connections stay up, nothing answers): the leader's
    stop gives the handover up after at most about two election timeouts, and exits 0."""
    c = cluster_factory(3)  # the tests' short election timeout
    leader = c.wait_for_leader(timeout=60)
    with c.client(leader, 10) as cl:
        c.wait_applied(cl.append(b"x"))
    others = [i for i in c.nodes if i != leader]
    for i in others:
        c.pause(i)
    election_s = ELECTION_TIMEOUT_MS / 1000
    started = time.monotonic()
    assert c.stop(leader, timeout=30) == 0
    took = time.monotonic() - started
    assert took < 2 * election_s + 3.0, took
    log = c.nodes[leader].log_tail(60)
    assert "stopping without a leadership handover" in log
    assert f"node {leader} stopped" in log
    for i in others:
        c.resume(i)
    c.wait_for_leader(timeout=30, among=others)


def test_a_second_sigterm_ends_the_wait(cluster_factory: Callable[..., Cluster]) -> None:
    """The followers are paused right before the leader's SIGTERM: it hands over to one that
    answered in this check-quorum round and would wait an election timeout for it, but a
    second SIGTERM ends the wait."""
    c = cluster_factory(3, election_timeout_ms=3000, heartbeat_interval_ms=20)
    leader = c.wait_for_leader(timeout=60)
    with c.client(leader, 10) as cl:
        c.wait_applied(cl.append(b"x"))
    others = [i for i in c.nodes if i != leader]
    for i in others:
        c.pause(i)
    c.send_signal(leader, signal.SIGTERM)

    def outcome() -> str | None:
        text = c.nodes[leader].log_tail(20)
        for line in ("handing the leadership over", "no other voter has answered recently"):
            if line in text:
                return line
        return None

    if wait_until("the handover to start", outcome, 2, 0.01) != "handing the leadership over":
        # a check-quorum round passed between the followers' last answers and the SIGTERM
        # (a chance of about a heartbeat in an election timeout): nobody to wait for
        pytest.skip("the followers were not recently active when the SIGTERM came")
    started = time.monotonic()
    c.send_signal(leader, signal.SIGTERM)
    proc = c.nodes[leader].proc
    assert proc is not None
    assert proc.wait(15) == 0
    assert time.monotonic() - started < 1.5  # not the election timeout the transfer may take
    log = c.nodes[leader].log_tail(20)
    assert "stop signal again: stopping without waiting for the leadership handover" in log
    assert log.rstrip().endswith(f"node {leader} stopped")
    for i in others:
        c.resume(i)
