"""Faults on real node processes: kill -9 of the leader under load, pauses, bad peers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import pgraft
from pgraft._impl import core
from pgraft.errors import PgraftError
from tests.support.cluster import (  # noqa: F401  (fixtures)
    Cluster,
    cluster_factory_fixture,
    cluster_fixture,
    requires_node,
    wait_until,
)

pytestmark = [pytest.mark.cluster, requires_node]


class AppendStream:
    """Appends unique payloads from several concurrent callers on one connection (in a
    thread) and records every acknowledged (index, payload) until stopped or cut off."""

    def __init__(self, address: str, workers: int = 8) -> None:
        self.address = address
        self.workers = workers
        self.acked: list[tuple[int, bytes]] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        client = await pgraft.connect(self.address, timeout=5)
        counter = iter(range(10**9))

        async def worker(w: int) -> None:
            while not self.stop.is_set():
                payload = f"w{w}-{next(counter)}".encode()
                try:
                    index = await client.append(payload, timeout=3)
                except PgraftError as exc:
                    self.errors.append(exc)
                    return
                self.acked.append((index, payload))

        try:
            await asyncio.gather(*(worker(w) for w in range(self.workers)))
        finally:
            await client.close()

    def __enter__(self) -> AppendStream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the append stream did not stop"


def test_kill_leader_during_appends_keeps_every_acknowledged_entry(cluster: Cluster) -> None:
    c = cluster
    old = c.wait_for_leader()
    with AppendStream(c.address(old)) as stream:
        wait_until("200 acknowledged appends", lambda: len(stream.acked) >= 200, 60)
        c.kill(old)  # kill -9 in the middle of the stream
        wait_until("the stream to notice", lambda: len(stream.errors) == stream.workers, 30)
    acked = list(stream.acked)
    assert len({i for i, _ in acked}) == len(acked), "two appends acknowledged at one index"
    new = c.wait_for_leader(exclude=old, timeout=30)
    with c.client(new) as cl:
        after = cl.append(b"new leader accepts writes")
        for index, payload in acked:
            entry = cl.get_entry(index)
            assert entry is not None and entry["data"] == payload, index
        assert after > max(i for i, _ in acked)
    # The old leader comes back as a follower and converges on the same log.
    c.start_node(old)
    c.wait_applied(after, on=[1, 2, 3])
    with c.client(old) as cl:
        for index, payload in acked[-20:]:
            assert cl.get_entry(index)["data"] == payload


def test_paused_leader_is_replaced_and_steps_down(cluster: Cluster) -> None:
    c = cluster
    old = c.wait_for_leader()
    c.pause(old)
    rest = [i for i in (1, 2, 3) if i != old]
    new = c.wait_for_leader(among=rest, exclude=old, timeout=30)
    with c.client(new) as cl:
        index = cl.append(b"while the old leader sleeps")
    c.resume(old)
    c.wait_applied(index, on=[1, 2, 3])
    c.wait_for_leader()  # exactly one leader again, named by a majority
    with c.client(old) as cl:
        assert cl.get_entry(index)["data"] == b"while the old leader sleeps"


def _raw(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    s.settimeout(5)
    return s


def _closed_by_node(s: socket.socket, timeout: float = 10.0) -> bool:
    """True once the node has closed the connection (EOF or reset) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if s.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            continue
    return False


GARBAGE = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not pgraft at all: absurd frame length
    b"\x00\x00\x00\x00",  # zero-length frame
    b"\x05\x00\x00\x00\x07abcd",  # unknown frame kind
    b"\x04\x00\x00\x00\x02\xc1\xc1\xc1",  # CONTROL frame with bad msgpack
    b"\x09\x00\x00\x00\x01" + b"\xff" * 8,  # RAFT frame before any handshake, malformed
]


def test_garbage_and_half_frames_are_dropped_and_the_node_keeps_serving(
        cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    target = c.address(leader)
    for junk in GARBAGE:
        with _raw(target) as s:
            s.sendall(junk)
            assert _closed_by_node(s), f"node kept a connection that sent {junk!r}"
    # A peer that handshakes, then sends garbage.
    with _raw(target) as s:
        s.sendall(core.encode_control({"hello": "peer", "node_id": 2, "version": 1}))
        s.sendall(b"\x20\x00\x00\x00\x01" + b"\x00" * 31)
        assert _closed_by_node(s)
    # A client that handshakes, then sends a truncated frame and closes mid-frame.
    with _raw(target) as s:
        s.sendall(core.encode_control({"hello": "client", "version": 1}))
        frame = core.encode_control({"id": 1, "op": "get_term", "args": {}})
        s.sendall(frame[: len(frame) // 2])
    # Closing mid-handshake too.
    with _raw(target) as s:
        s.sendall(core.encode_control({"hello": "client", "version": 1})[:3])
    # The node still serves clients and the cluster still commits.
    with c.client(leader) as cl:
        assert cl.append(b"still alive") >= 1
        assert len(cl.get_nodes()) == 3
    c.wait_for_membership({1: "voter", 2: "voter", 3: "voter"}, on=[1, 2, 3])


def test_client_with_bad_requests_gets_errors_not_a_crash(cluster: Cluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    decoder = core.FrameDecoder(64 * 1024 * 1024)
    with _raw(c.address(leader)) as s:
        s.sendall(core.encode_control({"hello": "client", "version": 1}))
        requests = [
            {"id": 1, "op": "no_such_op", "args": {}},
            {"id": 2, "op": "add_node", "args": {"node_id": -1, "address": "x", "port": 1}},
            {"id": 3, "op": "append", "args": {"data": "text, not bytes"}},
            {"id": 4, "op": "get_term", "args": {}},
        ]
        for req in requests:
            s.sendall(core.encode_control(req))
        answers: dict[int, dict] = {}
        deadline = time.monotonic() + 10
        while len(answers) < 5 and time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            for obj in decoder.feed(data):
                answers[obj.get("id", 0)] = obj
    assert answers[0]["hello"] == "ok"
    assert answers[1]["ok"] is False and answers[1]["error"]["code"] == "invalid_argument"
    assert answers[2]["ok"] is False and answers[2]["error"]["code"] == "invalid_argument"
    assert answers[3]["ok"] is False and answers[3]["error"]["code"] == "invalid_argument"
    assert answers[4]["ok"] is True and answers[4]["result"] >= 1
