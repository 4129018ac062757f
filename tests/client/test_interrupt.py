"""pgraft.Client's cancellable waits: ``interrupt=`` and ``interrupt_interval=``.

The SQL functions pass a callable that says whether PostgreSQL has a cancel or a
statement_timeout pending; the client must ask it between slices of every wait, never before
the first slice has passed, and leave the connection usable.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fake_node import Conn, FakeNode

import pgraft
from pgraft._impl import core
from pgraft.errors import (
    CommitTimeout,
    Interrupted,
    InterruptedWrite,
    InvalidArgument,
    OutcomeUnknown,
    PgraftError,
    Timeout,
)
from pgraft.protocol import MAX_FRAME_SIZE, encode_control

INTERVAL = 0.02


async def never(args: dict[str, Any], conn: Conn) -> None:
    await asyncio.Event().wait()  # no answer, ever


class Stopper:
    """An ``interrupt`` callable that says stop on its ``after``-th call (never if None)."""

    def __init__(self, after: int | None = None) -> None:
        self.after = after
        self.calls: list[float] = []

    def __call__(self) -> bool:
        self.calls.append(time.monotonic())
        return self.after is not None and len(self.calls) >= self.after


@pytest.mark.parametrize("after", [1, 5])
def test_an_interrupted_read_raises_interrupted_and_keeps_the_connection(
        fake: FakeNode, after: int) -> None:
    fake.handlers["kv_get"] = never
    stop = Stopper(after)
    with pgraft.Client(fake.unix_path, timeout=10.0, interrupt=stop,
                       interrupt_interval=INTERVAL) as c:
        assert c.get_term() == 3 and stop.calls == []  # answered at once: never asked
        start = time.monotonic()
        with pytest.raises(Interrupted) as info:
            c.kv_get("k")
        elapsed = time.monotonic() - start
        err = info.value
        assert len(stop.calls) == after
        assert stop.calls[0] - start >= INTERVAL * 0.9  # not before the first slice passed
        assert after * INTERVAL * 0.9 <= elapsed < 5.0  # one slice per call, not the timeout
        assert not isinstance(err, OutcomeUnknown | Timeout)
        assert err.sqlstate == "57014" and err.code == "interrupted"
        assert "interrupted by the caller" in err.message and "kv_get" in err.message
        assert err.hint
        # The connection stays; the next call works on it.
        assert not c.closed
        assert c.get_term() == 3
        assert fake.connections == 1


def test_an_interrupted_write_has_an_unknown_outcome(fake: FakeNode) -> None:
    fake.handlers["kv_put"] = never
    fake.handlers["append"] = never
    stop = Stopper(3)
    with pgraft.Client(fake.unix_path, interrupt=stop, interrupt_interval=INTERVAL) as c:
        with pytest.raises(InterruptedWrite) as info:
            c.kv_put("k", "v")
        err = info.value
        assert isinstance(err, OutcomeUnknown) and isinstance(err, Interrupted)
        assert not isinstance(err, Timeout | CommitTimeout)
        assert err.sqlstate == "40003" == CommitTimeout.sqlstate
        assert err.code == "interrupted_write"
        assert "outcome is unknown" in err.message and "interrupted by the caller" in err.message
        assert "may still commit" in err.hint and "read" in err.hint
        assert len(stop.calls) == 3
        stop.calls.clear()
        with pytest.raises(InterruptedWrite, match="append"):
            c.append(b"x")
        assert fake.requests[-2:] == [("kv_put", {"key": "k", "value": "v", "timeout": 10.0}),
                                      ("append", {"data": b"x", "timeout": 10.0})]
        assert c.get_term() == 3 and fake.connections == 1


def test_no_interrupt_call_when_the_answer_is_immediate(fake: FakeNode) -> None:
    # A generous slice: the property is "never before the first slice has passed", and a busy
    # test machine must not make an immediate answer look slow.
    stop = Stopper(1)
    with pgraft.Client(fake.unix_path, interrupt=stop, interrupt_interval=1.0) as c:
        assert c.get_term() == 3  # connect + handshake + call
        assert c.kv_put("k", "v") is True and c.kv_get("k") == "v"
        assert c.append(b"x") == 1 and c.get_nodes()
    with pgraft.Client(fake.address, interrupt=stop, interrupt_interval=1.0) as c:
        assert c.get_term() == 3  # over TCP too
    assert stop.calls == []


def test_the_late_answer_of_an_interrupted_call_is_dropped(fake: FakeNode) -> None:
    gate = fake.gate()

    async def late(args: dict[str, Any], conn: Conn) -> str:
        await gate.wait()
        return "late"

    fake.handlers["kv_get"] = late
    with pgraft.Client(fake.unix_path, interrupt=Stopper(2), interrupt_interval=INTERVAL) as c:
        with pytest.raises(Interrupted):
            c.kv_get("k")
        gate.open()
        fake.wait_for(lambda: "kv_get" in fake.answered)
        time.sleep(0.05)  # the late answer is in the client's socket now
        assert c.get_term() == 3  # its own answer, not the late one
        assert c.kv_list_keys() == []
        assert fake.connections == 1


def test_every_slice_asks_and_the_deadline_still_holds(fake: FakeNode) -> None:
    fake.handlers["kv_get"] = never
    fake.handlers["kv_put"] = never
    stop = Stopper(None)  # never says stop
    with pgraft.Client(fake.unix_path, interrupt=stop, interrupt_interval=INTERVAL) as c:
        start = time.monotonic()
        with pytest.raises(Timeout) as info:
            c.kv_get("k", timeout=0.2)
        elapsed = time.monotonic() - start
        assert not isinstance(info.value, Interrupted | OutcomeUnknown)
        # asked about every slice until the deadline (timeout + the answer's grace period)
        assert 0.2 <= elapsed < 2.0
        assert len(stop.calls) >= 5
        gaps = [b - a for a, b in zip(stop.calls, stop.calls[1:], strict=False)]
        assert min(gaps) >= INTERVAL * 0.9
        with pytest.raises(CommitTimeout):
            c.kv_put("k", "v", timeout=0.1)
        assert c.get_term() == 3 and fake.connections == 1


def test_an_error_of_interrupt_propagates_and_closes_the_connection(fake: FakeNode) -> None:
    answer = fake.handlers["kv_get"]
    fake.handlers["kv_get"] = never

    def broken() -> bool:
        raise ZeroDivisionError("the check failed")

    c = pgraft.Client(fake.unix_path, interrupt=broken, interrupt_interval=INTERVAL)
    assert c.get_term() == 3
    with pytest.raises(ZeroDivisionError):
        c.kv_get("k")
    assert c.closed  # what was in flight on the stream is unknown
    fake.handlers["kv_get"] = answer
    assert c.kv_get("k") is None and fake.connections == 2  # on a new connection
    c.close()


@pytest.mark.parametrize("op", ["get_term", "kv_put"])
def test_waiting_for_the_handshake_is_interrupted_too(op: str) -> None:
    # A listening socket that accepts and never answers the handshake (a paused node).
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        stop = Stopper(2)
        c = pgraft.Client(f"127.0.0.1:{port}", timeout=10.0, interrupt=stop,
                          interrupt_interval=INTERVAL)
        start = time.monotonic()
        with pytest.raises(Interrupted) as info:
            c.kv_put("k", "v") if op == "kv_put" else c.get_term()
        assert time.monotonic() - start < 2.0
        # nothing was sent: even a write certainly did not happen
        assert type(info.value) is Interrupted
        assert "while connecting" in info.value.message and "nothing was changed" in \
            info.value.message
        assert c.closed and len(stop.calls) == 2


# ------------------------------------------------------ a node that stops reading
class Stalling:
    """A Unix-socket node that answers the handshake and then reads nothing more, until
    ``serve`` is set: then it answers every request with ``3``."""

    def __init__(self, path: str) -> None:
        self.serve = threading.Event()
        self.closed = threading.Event()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _frames(self, conn: socket.socket, decoder: Any) -> Iterator[Any]:
        while True:
            data = conn.recv(1 << 20)
            if not data:
                self.closed.set()
                return
            yield from decoder.feed(data)

    def _conn(self, conn: socket.socket) -> None:
        decoder = core.FrameDecoder(MAX_FRAME_SIZE)
        frames = self._frames(conn, decoder)
        try:
            next(frames)  # the hello
            conn.sendall(encode_control({"hello": "ok", "node_id": 1, "version": 1}))
            if not self.serve.is_set():
                self.serve.wait(30)
                for _ in frames:  # drain what the stalled client sent, until it closes
                    pass
                return
            for req in frames:
                conn.sendall(encode_control({"id": req["id"], "ok": True, "result": 3}))
        except (OSError, StopIteration, PgraftError):
            self.closed.set()

    def close(self) -> None:
        self.serve.set()
        self.srv.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def stalling() -> Iterator[tuple[str, Stalling]]:
    with tempfile.TemporaryDirectory(prefix="pgraft-stall-") as tmp:
        path = os.path.join(tmp, "node.sock")
        node = Stalling(path)
        try:
            yield path, node
        finally:
            node.close()


def test_a_write_interrupted_while_sending_certainly_did_not_happen(
        stalling: tuple[str, Stalling]) -> None:
    path, node = stalling
    stop = Stopper(3)
    c = pgraft.Client(path, timeout=10.0, interrupt=stop, interrupt_interval=INTERVAL)
    start = time.monotonic()
    # Far more than a Unix socket buffers: the send blocks once the node stops reading.
    with pytest.raises(Interrupted) as info:
        c.append(b"x" * (16 << 20))
    assert time.monotonic() - start < 5.0
    # Only part of the frame went out: the node cannot decode it, the write did not happen,
    # and the stream is unusable.
    assert type(info.value) is Interrupted and info.value.sqlstate == "57014"
    assert "before the request was sent" in info.value.message
    assert c.closed and len(stop.calls) == 3
    node.serve.set()
    assert node.closed.wait(10)
    assert c.get_term() == 3  # a new connection
    c.close()


# --------------------------------------------------------------------- arguments
@pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf"), "0.02", True, None])
def test_bad_interrupt_intervals(interval: Any) -> None:
    with pytest.raises(InvalidArgument, match="interrupt_interval") as info:
        pgraft.Client("127.0.0.1:7001", interrupt=Stopper(), interrupt_interval=interval)
    assert "interrupt_interval=0.02" in info.value.hint


@pytest.mark.parametrize("interrupt", [True, "cancel", 1])
def test_interrupt_must_be_callable(interrupt: Any) -> None:
    with pytest.raises(InvalidArgument, match="interrupt must be a callable"):
        pgraft.Client("127.0.0.1:7001", interrupt=interrupt)


def test_the_errors_are_public_and_rebuilt_from_the_wire() -> None:
    from pgraft.errors import from_wire

    assert pgraft.Interrupted is Interrupted and pgraft.InterruptedWrite is InterruptedWrite
    assert {"Interrupted", "InterruptedWrite"} <= set(pgraft.__all__)
    for cls in (Interrupted, InterruptedWrite):
        err = from_wire(cls("m").to_wire())
        assert type(err) is cls and err.sqlstate == cls.sqlstate and err.hint
