"""HA mode across a network partition: every node in a network namespace of its own (as in the
chaos harness), the primary cut off from the two others while clients still reach it.

The cut-off primary must stop accepting commits before the majority's new primary accepts
any: a client writing to the old primary sees its last acknowledged commit before the first
commit acknowledged by the new one, and then SQLSTATE 25006 (the server's lease check). After
the partition heals, the old primary rejoins as a replica.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.chaos.chaos_net import NetNamespaces, netns_available
from tests.support.hacluster import HaCluster, HaNode, ha_cluster
from tests.support.postgres import wait_for


@pytest.fixture
def net() -> Iterator[NetNamespaces]:
    why = netns_available()
    if why is not None:
        pytest.fail(f"network namespaces are needed for the partition test: {why}")
    namespaces = NetNamespaces()
    try:
        yield namespaces
    finally:
        namespaces.close()


class Writer(threading.Thread):
    """Commits a row every 20 ms on one server, recording when each commit was
    acknowledged and the SQLSTATE of each refusal (bounded: stops after ``limit`` s)."""

    def __init__(self, node: HaNode, first_id: int, limit: float = 90.0) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.next_id = first_id
        self.limit = limit
        self.stop = threading.Event()
        self.acked: list[float] = []
        self.refused: list[tuple[float, str | None]] = []

    def run(self) -> None:
        end = time.monotonic() + self.limit
        conn: psycopg.Connection[Any] | None = None
        while not self.stop.is_set() and time.monotonic() < end:
            try:
                if conn is None or conn.closed:
                    conn = self.node.connect()
                conn.execute("INSERT INTO part_rows VALUES (%s)", (self.next_id,))
                self.next_id += 1
                self.acked.append(time.monotonic())
            except psycopg.Error as exc:
                self.refused.append((time.monotonic(), exc.sqlstate))
                if conn is not None and conn.closed:
                    conn = None
            self.stop.wait(0.02)
        if conn is not None:
            conn.close()


def test_a_cut_off_primary_stops_committing_before_the_majority_promotes(
        pgraft_installed: str, net: NetNamespaces) -> None:
    with ha_cluster(net) as cluster:
        run(cluster, net)


def run(cluster: HaCluster, net: NetNamespaces) -> None:
    cluster.start(3)
    old = cluster.wait_primary(timeout=120)
    others = [i for i in cluster.nodes if i != old.node_id]
    cluster.wait_streaming(others)
    old.sql("CREATE TABLE part_rows (id bigint PRIMARY KEY)")
    on_old = Writer(old, 1)
    on_old.start()
    wait_for(lambda: len(on_old.acked) >= 5, timeout=30, what="commits on the primary")
    net.partition([[old.node_id], others])
    try:
        new = cluster.wait_primary(timeout=60, among=others)
        assert new.node_id != old.node_id
        on_new = Writer(new, 1_000_000, limit=30)
        on_new.start()
        wait_for(lambda: len(on_new.acked) >= 3, timeout=30, what="commits on the new primary")
        on_new.stop.set()
        on_new.join(10)
        on_old.stop.set()
        on_old.join(10)
        assert on_old.acked and on_new.acked
        assert on_old.acked[-1] < on_new.acked[0], (
            "the cut-off primary acknowledged a commit after the new primary's first")
        fenced = [state for when, state in on_old.refused if when > on_old.acked[-1]]
        assert fenced and fenced[0] == "25006", on_old.refused[-5:]
    finally:
        on_old.stop.set()
        net.heal()
    wait_for(lambda: cluster.streaming(old.node_id), timeout=120,
             what=f"node {old.node_id} to rejoin as a replica after the partition healed")
