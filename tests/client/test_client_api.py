"""pgraft.connect / pgraft.Client against a fake node: arguments, protocol, errors, timeouts.

Behaviour both clients share runs on each of them (the ``open_client`` fixture); what only one
of them has (many calls in flight, reconnecting, no event loop) is tested on that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from drivers import Driver
from fake_node import CloseConnection, Conn, FakeNode, SendRaw

import pgraft
from pgraft.client import Target, _proto, parse_target
from pgraft.errors import (
    CommitTimeout,
    ConnectionFailed,
    InvalidArgument,
    NodeExists,
    NotLeaderError,
    OutcomeUnknown,
    PayloadTooLarge,
    PgraftError,
    ProtocolError,
    Timeout,
    Unavailable,
    UnknownNode,
)
from pgraft.protocol import WRITE_BATCH_FRAMES, encode_control

OpenClient = Callable[..., Driver]


def run(coro: Any, limit: float = 30.0) -> Any:
    """Run a coroutine with an overall limit so a broken test never hangs the suite."""
    async def guarded() -> Any:
        async with asyncio.timeout(limit):
            return await coro
    return asyncio.run(guarded())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def never(args: dict[str, Any], conn: Conn) -> None:
    await asyncio.Event().wait()  # no answer, ever


# ------------------------------------------------------------------ targets
@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:7001", Target(host="127.0.0.1", port=7001)),
    ("localhost:1", Target(host="localhost", port=1)),
    ("node4.example.com:65535", Target(host="node4.example.com", port=65535)),
    ("[::1]:7001", Target(host="::1", port=7001)),
    ("/tmp/x/node.sock", Target(path="/tmp/x/node.sock")),
    ("./node.sock", Target(path="./node.sock")),
])
def test_parse_target(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


def test_parse_target_directory_means_its_socket(tmp_path: Any) -> None:
    assert parse_target(str(tmp_path)) == Target(path=str(tmp_path / "node.sock"))
    assert parse_target(tmp_path) == Target(path=str(tmp_path / "node.sock"))


@pytest.mark.parametrize("text", ["", "7001", "host", "host:", ":7001", "host:port",
                                  "host:0", "host:70000", "::1:7001", "bad_host!:7001",
                                  "0.0.0.0:7001", "300.1.1.1:7001", 7001])
def test_parse_target_rejects(text: Any) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_target(text)
    assert info.value.hint


def test_target_is_an_immutable_value() -> None:
    t = Target(host="::1", port=7001)
    assert t == Target("::1", 7001) and hash(t) == hash(Target("::1", 7001))
    assert t != Target(path="/x") and str(t) == "[::1]:7001"
    assert repr(t) == "Target(host='::1', port=7001, path=None)"
    with pytest.raises(AttributeError):
        t.port = 1  # type: ignore[misc]


# --------------------------------------------------------------- validation
BAD_CALLS = [
    ("add_node", (0, "127.0.0.1", 7004), "node_id must be at least 1"),
    ("add_node", (-3, "127.0.0.1", 7004), "node_id must be at least 1"),
    ("add_node", (True, "127.0.0.1", 7004), "node_id must be an integer"),
    ("add_node", ("4", "127.0.0.1", 7004), "node_id must be an integer"),
    ("add_node", (2**63, "127.0.0.1", 7004), "node_id must be at least 1"),
    ("add_node", (4, "127.0.0.1", 0), "port 0 is out of range"),
    ("add_node", (4, "127.0.0.1", 65536), "port 65536 is out of range"),
    ("add_node", (4, "127.0.0.1", "7004"), "port must be an integer"),
    ("add_node", (4, "", 7004), "empty"),
    ("add_node", (4, " 10.0.0.1", 7004), "surrounding spaces"),
    ("add_node", (4, "10.0.0.256", 7004), "neither a valid host name"),
    ("add_node", (4, "no_underscores", 7004), "neither a valid host name"),
    ("add_node", (4, "-bad.example", 7004), "neither a valid host name"),
    ("add_node", (4, "a" * 64 + ".example", 7004), "neither a valid host name"),
    ("add_node", (4, "0.0.0.0", 7004), "cannot be dialled"),
    ("add_node", (4, "::", 7004), "cannot be dialled"),
    ("add_node", (4, 10, 7004), "address must be a string"),
    ("remove_node", (0,), "node_id must be at least 1"),
    ("transfer_leadership", (None,), "node_id must be an integer"),
    ("append", ("text",), "data must be bytes"),
    ("append", (None,), "data must be bytes"),
    ("kv_put", (b"k", "v"), "key must be a str"),
    ("kv_put", ("", "v"), "key must not be empty"),
    ("kv_put", ("k", b"v"), "value must be a str"),
    ("kv_get", (1,), "key must be a str"),
    ("kv_delete", (None,), "key must be a str"),
    ("get_entry", (0,), "index must be at least 1"),
    ("get_entry", (1.5,), "index must be an integer"),
]


@pytest.mark.parametrize("method, args, message", BAD_CALLS)
def test_client_validates_arguments(fake: FakeNode, open_client: OpenClient, method: str,
                                    args: tuple[Any, ...], message: str) -> None:
    c = open_client(fake.address)
    with pytest.raises(InvalidArgument, match=message) as info:
        c.call(method, *args)
    assert info.value.hint
    assert fake.requests == []  # nothing was sent


@pytest.mark.parametrize("method, args, message", BAD_CALLS)
def test_sync_client_validates_before_connecting(method: str, args: tuple[Any, ...],
                                                 message: str) -> None:
    # No node at all: validation happens before connecting.
    with pgraft.Client(f"127.0.0.1:{free_port()}") as c, \
            pytest.raises(InvalidArgument, match=message):
        getattr(c, method)(*args)


def test_oversized_key_is_refused_locally(fake: FakeNode, open_client: OpenClient) -> None:
    c = open_client(fake.address)
    with pytest.raises(PayloadTooLarge, match="key of 65537 bytes"):
        c.call("kv_put", "k" * (64 * 1024 + 1), "v")
    assert fake.requests == []


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "5", True])
def test_bad_timeouts(fake: FakeNode, timeout: Any) -> None:
    async def main() -> None:
        with pytest.raises(InvalidArgument, match="timeout"):
            await pgraft.connect(fake.address, timeout=timeout)
        async with await pgraft.connect(fake.address) as c:
            with pytest.raises(InvalidArgument, match="timeout"):
                await c.get_term(timeout=timeout)
    run(main())
    with pytest.raises(InvalidArgument, match="timeout"):
        pgraft.Client(fake.address, timeout=timeout)
    with pgraft.Client(fake.address) as c, pytest.raises(InvalidArgument, match="timeout"):
        c.get_term(timeout=timeout)


def test_valid_addresses_are_accepted(fake: FakeNode, open_client: OpenClient) -> None:
    c = open_client(fake.address)
    for i, address in enumerate(["10.0.0.14", "fd00::14", "node4", "node-4.example.com",
                                 "node4.example.com."], start=10):
        assert c.call("add_node", i, address, 7004) is True
    assert [args["address"] for op, args in fake.requests] == [
        "10.0.0.14", "fd00::14", "node4", "node-4.example.com", "node4.example.com."]


# ------------------------------------------------------------------ results
def test_every_call_round_trips(fake: FakeNode, open_client: OpenClient) -> None:
    c = open_client(fake.address, timeout=5)
    assert c.node_id is None  # both connect on first use here (see drivers.py)
    assert c.call("append", b"one") == 1
    assert c.node_id == 1
    assert c.call("append", bytearray(b"two")) == 2
    assert c.call("append", memoryview(b"three")) == 3
    assert c.call("get_entry", 2) == {"index": 2, "term": 3, "type": 0, "data": b"two"}
    assert c.call("get_entry", 99) is None
    stats = c.call("log_stats")
    assert stats["last_index"] == 3 and stats["commit_index"] == 3
    assert c.call("add_node", 4, "127.0.0.1", 7004) is True
    nodes = c.call("get_nodes")
    assert [n.node_id for n in nodes] == [1, 2, 3, 4]
    assert nodes[3] == pgraft.NodeInfo(4, "127.0.0.1", 7004, "learner", False)
    assert nodes[0].is_leader and nodes[0].endpoint == "127.0.0.1:7001"
    assert c.call("remove_node", 4) is True
    assert c.call("get_leader") == 1
    assert c.call("leader_address") == "127.0.0.1:7001"
    assert c.call("leader_info") == {"leader_id": 1, "address": "127.0.0.1:7001"}
    assert c.call("get_term") == 3
    assert c.call("is_leader") is True
    status = c.call("status")
    assert status["node_id"] == 1 and status["role"] == "leader"
    assert status["progress"][2]["state"] == "replicate"
    assert c.call("kv_put", "b", "2") is True
    assert c.call("kv_put", "a", "1") is True
    assert c.call("kv_get", "a") == "1"
    assert c.call("kv_get", "missing") is None
    assert c.call("kv_list_keys") == ["a", "b"]
    assert c.call("kv_delete", "a") is True
    assert c.call("kv_delete", "a") is False
    assert c.call("transfer_leadership", 2) is True
    ops = [op for op, _ in fake.requests]
    assert "transfer_leadership" in ops
    # Every request tells the node its timeout.
    assert all(args["timeout"] == 5 for _, args in fake.requests)
    assert fake.connections == 1  # one connection for all calls


def test_unix_socket_and_data_directory(fake: FakeNode, open_client: OpenClient) -> None:
    assert fake.unix_path is not None
    assert open_client(fake.unix_path).call("get_term") == 3
    assert open_client(os.path.dirname(fake.unix_path)).call("is_leader")
    assert open_client(fake.unix_path).call("get_leader") == 1


def test_server_errors_are_rebuilt(fake: FakeNode, follower: FakeNode,
                                   open_client: OpenClient) -> None:
    c = open_client(follower.address)
    with pytest.raises(NotLeaderError) as info:
        c.call("add_node", 4, "127.0.0.1", 7004)
    err = info.value
    assert err.leader_id == 2 and err.leader_address == "127.0.0.1:7002"
    assert "not the leader" in str(err)
    assert "node 2 at 127.0.0.1:7002" in err.hint
    with pytest.raises(NotLeaderError):
        c.call("append", b"x")
    c = open_client(fake.address)
    with pytest.raises(NodeExists):
        c.call("add_node", 2, "127.0.0.1", 7002)
    with pytest.raises(UnknownNode):
        c.call("remove_node", 9)
    # The connection stays usable after errors.
    assert c.call("get_term") == 3
    assert fake.connections == 1


def test_many_calls_in_flight_on_one_connection(fake: FakeNode) -> None:
    order: list[int] = []

    async def slow_append(args: dict[str, Any], conn: Conn) -> int:
        # Answer in reverse order of arrival: the client must match answers by id.
        n = int(args["data"])
        await asyncio.sleep((200 - n) * 0.001)
        order.append(n)
        return n

    fake.handlers["append"] = slow_append

    async def main() -> None:
        async with await pgraft.connect(fake.address) as c:
            results = await asyncio.gather(*(c.append(str(i).encode()) for i in range(200)))
            assert results == list(range(200))
            assert c.in_flight == 0
    run(main())
    assert fake.connections == 1
    assert order != sorted(order)  # answers really came back out of order


class _CountingTransport:
    """Forwards to the client's transport and records how many frames each write carried."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(1)
        self._inner.write(data)

    def writelines(self, frames: list[bytes]) -> None:
        self.writes.append(len(frames))
        self._inner.writelines(frames)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_requests_of_one_iteration_go_out_in_runs_of_write_batch_frames(
        fake: FakeNode) -> None:
    # 100 calls started in one event-loop iteration: the first is written at once, then every
    # WRITE_BATCH_FRAMES as they gather (the node starts on them while the client makes the
    # rest), and what is left when the iteration ends.
    async def main() -> None:
        async with await pgraft.connect(fake.address) as c:
            counting = _CountingTransport(c._transport)
            c._transport = counting  # type: ignore[assignment]
            results = await asyncio.gather(*(c.append(str(i).encode()) for i in range(100)))
            assert results == list(range(1, 101))
            run_ = WRITE_BATCH_FRAMES
            assert counting.writes == [1, run_, run_, run_, 99 - 3 * run_]
    run(main())


# ----------------------------------------------------------------- timeouts
def test_call_timeout_when_node_is_silent(fake: FakeNode, open_client: OpenClient) -> None:
    fake.handlers["kv_get"] = never
    fake.handlers["append"] = never
    c = open_client(fake.address)
    start = time.monotonic()
    with pytest.raises(Timeout) as info:
        c.call("kv_get", "k", timeout=0.2)
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 1.5
    # a read changes nothing: its timeout is a plain Timeout, not an unknown outcome
    assert not isinstance(info.value, OutcomeUnknown) and info.value.hint
    assert info.value.sqlstate == "57014"
    # a write that got no answer may still commit: CommitTimeout (OutcomeUnknown)
    with pytest.raises(CommitTimeout) as winfo:
        c.call("append", b"x", timeout=0.2)
    assert "unknown" in winfo.value.message and winfo.value.sqlstate == "40003"
    assert isinstance(winfo.value, OutcomeUnknown | Timeout)
    # The connection is still good; a late answer would be ignored.
    assert c.call("get_term") == 3
    assert fake.connections == 1
    # The client's default timeout applies too.
    with pytest.raises(Timeout):
        open_client(fake.address, timeout=0.2).call("kv_get", "k")


def test_node_side_timeout_error_is_passed_through(fake: FakeNode,
                                                   open_client: OpenClient) -> None:
    async def times_out(args: dict[str, Any], conn: Conn) -> None:
        raise Timeout(f"append did not commit within {args['timeout']}s")

    fake.handlers["append"] = times_out
    with pytest.raises(Timeout, match="within 2.5s"):
        open_client(fake.address).call("append", b"x", timeout=2.5)


def test_late_answer_after_timeout_is_ignored(fake: FakeNode, open_client: OpenClient) -> None:
    gate = fake.gate()

    async def late(args: dict[str, Any], conn: Conn) -> int:
        await gate.wait()
        return 7

    fake.handlers["get_term"] = late
    c = open_client(fake.address)
    with pytest.raises(Timeout):
        c.call("get_term", timeout=0.1)
    gate.open()
    fake.wait_for(lambda: "get_term" in fake.answered)  # the late answer is on its way
    assert c.call("is_leader") is True
    assert c.call("get_leader") == 1
    assert not c.closed
    assert fake.connections == 1


# ------------------------------------------------------- losing the connection
def test_lost_connection_fails_writes_as_unknown_and_reads_as_failed(
        fake: FakeNode, open_client: OpenClient) -> None:
    async def close(args: dict[str, Any], conn: Conn) -> None:
        raise CloseConnection

    fake.handlers["remove_node"] = close
    fake.handlers["kv_get"] = close
    # a write in flight when the connection is lost: its outcome is unknown
    with pytest.raises(OutcomeUnknown, match="closed by the node") as winfo:
        open_client(fake.address).call("remove_node", 3)
    assert "may have taken effect" in winfo.value.message and winfo.value.hint
    # a read in flight: the connection failed, nothing was changed
    with pytest.raises(ConnectionFailed, match="outcome of calls in flight is unknown") as rinfo:
        open_client(fake.address).call("kv_get", "k")
    assert not isinstance(rinfo.value, OutcomeUnknown)


def test_server_closing_mid_call_fails_all_in_flight(fake: FakeNode) -> None:
    async def close(args: dict[str, Any], conn: Conn) -> None:
        raise CloseConnection

    fake.handlers["kv_get"] = never
    fake.handlers["remove_node"] = close

    async def main() -> None:
        c = await pgraft.connect(fake.address)
        calls = [asyncio.ensure_future(c.kv_get(f"k{i}")) for i in range(10)]
        while len(fake.requests) < 10:
            await asyncio.sleep(0.01)
        # a write in flight when the connection is lost: its outcome is unknown
        with pytest.raises(OutcomeUnknown, match="closed by the node"):
            await c.remove_node(3)
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, ConnectionFailed) for r in results)
        assert not any(isinstance(r, OutcomeUnknown) for r in results)  # reads
        assert all("outcome of calls in flight is unknown" in str(r) for r in results)
        assert c.closed
        # Later calls fail at once, clearly.
        with pytest.raises(ConnectionFailed):
            await c.get_term()
        await c.close()
    run(main())


def test_sync_client_reconnects_after_the_node_dropped_it(fake: FakeNode) -> None:
    with pgraft.Client(fake.address) as c:
        assert c.get_term() == 3
        assert not c.closed
        fake.drop_connections()
        deadline = time.monotonic() + 5
        # The next call either fails with ConnectionFailed (drop not yet seen) or reconnects.
        while fake.connections < 2 and time.monotonic() < deadline:
            with contextlib.suppress(ConnectionFailed):
                c.get_term()
        assert c.get_term() == 3
        assert fake.connections == 2


def test_sync_client_replaces_a_connection_the_node_closed_before_the_call(
        fake: FakeNode) -> None:
    # The node closed the connection between two calls and its FIN has arrived: the next call
    # must not fail for it -- the client sees it before sending and connects again. Even a
    # write is safe: it was never sent on the dead connection.
    with pgraft.Client(fake.address) as c:
        assert c.get_term() == 3
        fake.drop_connections()
        fake.wait_for(lambda: fake.open_connections == 0)
        assert c.append(b"after the drop") == 1
        assert fake.connections == 2


@pytest.mark.parametrize("garbage", [
    b"\xff\xff\xff\xff\x02",  # oversized length
    b"\x00\x00\x00\x00",  # zero length
    b"\x03\x00\x00\x00\x02\xc1\xc1",  # CONTROL with bad msgpack
    b"\x02\x00\x00\x00\x09\x00",  # unknown kind
])
def test_garbage_from_server_fails_calls_clearly(fake: FakeNode, open_client: OpenClient,
                                                 garbage: bytes) -> None:
    async def junk(args: dict[str, Any], conn: Conn) -> None:
        raise SendRaw(garbage)

    fake.handlers["status"] = junk
    c = open_client(fake.address)
    with pytest.raises(ProtocolError, match="malformed frame"):
        c.call("status")
    assert c.closed
    if c.kind == "async":
        with pytest.raises(ProtocolError):  # the connection stays failed
            c.call("get_term")
    else:
        assert c.call("get_term") == 3  # the blocking client connects again
        assert fake.connections == 2


@pytest.mark.parametrize("response", [
    ["not", "a", "dict"],
    {"id": "1", "ok": True},
    {"id": 1},
    {"id": 1, "ok": False, "error": "text"},
])
def test_malformed_responses(fake: FakeNode, open_client: OpenClient, response: Any) -> None:
    async def odd(args: dict[str, Any], conn: Conn) -> None:
        raise SendRaw(encode_control(response))

    fake.handlers["get_term"] = odd
    with pytest.raises(ProtocolError):
        open_client(fake.address).call("get_term", timeout=2)


def test_server_truncating_a_frame_then_closing(fake: FakeNode,
                                                open_client: OpenClient) -> None:
    async def half(args: dict[str, Any], conn: Conn) -> None:
        raise SendRaw(b"\x10\x00\x00\x00\x02\x81", close=True)

    fake.handlers["get_nodes"] = half
    with pytest.raises(ConnectionFailed, match="closed by the node"):
        open_client(fake.address).call("get_nodes")


# ----------------------------------------------------------------- connecting
def test_connection_refused_is_actionable(open_client: OpenClient) -> None:
    port = free_port()
    with pytest.raises(ConnectionFailed) as info:
        open_client(f"127.0.0.1:{port}", timeout=2).call("get_nodes")
    assert "connection refused" in info.value.message
    assert "pgraft serve" in info.value.hint
    assert isinstance(info.value, Unavailable)


def test_missing_unix_socket(tmp_path: Any, open_client: OpenClient) -> None:
    with pytest.raises(ConnectionFailed, match="does not exist") as info:
        open_client(str(tmp_path / "node.sock")).call("get_nodes")
    assert "--data-dir" in info.value.hint


def test_unresolvable_host(open_client: OpenClient) -> None:
    with pytest.raises(ConnectionFailed, match="cannot resolve"):
        open_client("no-such-host.invalid:7001", timeout=5).call("get_term")


def test_connect_timeout_when_nothing_answers_the_handshake(open_client: OpenClient) -> None:
    # A listening socket that never answers (the node is paused, for instance).
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(ConnectionFailed, match="no answer within 0.3s") as info:
            open_client(f"127.0.0.1:{port}", timeout=0.3).call("get_term")
        assert time.monotonic() - start < 2
        assert "pgraft serve" in info.value.hint


def test_handshake_error_and_non_pgraft_server(fake: FakeNode, open_client: OpenClient) -> None:
    fake.hello_reply = {"hello": "error",
                        "error": Unavailable("node is stopping").to_wire()}
    with pytest.raises(Unavailable, match="node is stopping"):
        open_client(fake.address).call("get_term")
    fake.hello_reply = {"hello": "ok", "node_id": 1, "version": 99}
    with pytest.raises(ProtocolError, match="version 99"):
        open_client(fake.address).call("get_term")
    fake.hello_reply = None
    fake.hello_raw = b"HTTP/1.1 400 Bad Request\r\n\r\n"
    with pytest.raises(ProtocolError):
        open_client(fake.address, timeout=2).call("get_term")


def test_closed_client_and_close_with_calls_in_flight(fake: FakeNode) -> None:
    fake.handlers["append"] = never

    async def main() -> None:
        c = await pgraft.connect(fake.address)
        pending = asyncio.ensure_future(c.append(b"x"))
        while not fake.requests:  # the write has reached the node
            await asyncio.sleep(0.01)
        await c.close()
        with pytest.raises(OutcomeUnknown, match="client closed"):  # the write was sent
            await pending
        with pytest.raises(ConnectionFailed, match="is closed"):
            await c.get_term()
        await c.close()  # idempotent
        assert "closed" in repr(c)
    run(main())


def test_oversized_request_is_refused_locally(fake: FakeNode, open_client: OpenClient,
                                              monkeypatch: Any) -> None:
    monkeypatch.setattr(_proto, "MAX_FRAME_SIZE", 1024)
    c = open_client(fake.address)
    with pytest.raises(PayloadTooLarge, match="exceeds the frame limit of 1024 bytes"):
        c.call("append", b"x" * 2000)
    assert c.call("append", b"x" * 100) == 1  # the connection is still fine
    assert [op for op, _ in fake.requests] == ["append"]


# -------------------------------------------------------------- sync specifics
def test_sync_client_refuses_to_run_inside_an_event_loop(fake: FakeNode) -> None:
    async def main() -> None:
        with pgraft.Client(fake.address) as c, pytest.raises(PgraftError,
                                                             match="running event loop"):
            c.get_term()
    run(main())


def test_sync_client_starts_no_threads(fake: FakeNode) -> None:
    before = threading.active_count()
    for _ in range(20):
        with pgraft.Client(f"localhost:{fake.port}") as c:
            assert c.get_term() == 3
    assert threading.active_count() == before


def test_sync_client_is_reusable_after_close(fake: FakeNode) -> None:
    c = pgraft.Client(fake.address)
    assert c.closed and "closed" in repr(c)
    assert c.get_term() == 3
    assert not c.closed and "connected to node 1" in repr(c)
    c.close()
    assert c.closed
    assert c.get_term() == 3
    c.close()
    c.close()
    assert fake.connections == 2


def test_sync_client_interrupted_mid_call_drops_the_connection(fake: FakeNode,
                                                               monkeypatch: Any) -> None:
    c = pgraft.Client(fake.address)
    assert c.get_term() == 3

    def interrupted(*args: Any) -> bytes:
        raise KeyboardInterrupt

    sock = c._sock
    assert sock is not None
    monkeypatch.setattr(c, "_read", interrupted)
    with pytest.raises(KeyboardInterrupt):
        c.get_term()
    assert c.closed and sock.fileno() == -1  # the half-read stream is not reused
    monkeypatch.undo()
    assert c.get_term() == 3
    c.close()


def test_public_names() -> None:
    for name in ("connect", "Client", "AsyncClient", "NodeInfo"):
        assert name in pgraft.__all__
        assert getattr(pgraft, name).__doc__
    for name in dir(pgraft.AsyncClient):
        if not name.startswith("_"):
            assert getattr(pgraft.AsyncClient, name).__doc__, name
    for name in dir(pgraft.Client):
        if not name.startswith("_"):
            assert getattr(pgraft.Client, name).__doc__, name
    # The blocking client has every method of the asynchronous client.
    async_methods = {n for n in dir(pgraft.AsyncClient)
                     if not n.startswith("_") and callable(getattr(pgraft.AsyncClient, n))}
    sync_methods = {n for n in dir(pgraft.Client)
                    if not n.startswith("_") and callable(getattr(pgraft.Client, n))}
    assert async_methods <= sync_methods
    from pgraft.client import AsyncClient, Client, NodeInfo, connect

    assert (AsyncClient, Client, NodeInfo, connect) == (
        pgraft.AsyncClient, pgraft.Client, pgraft.NodeInfo, pgraft.connect)


def test_node_is_a_deprecated_alias_of_node_info() -> None:
    import pgraft.client

    with pytest.warns(DeprecationWarning, match="use pgraft.NodeInfo"):
        assert pgraft.Node is pgraft.NodeInfo
    with pytest.warns(DeprecationWarning, match="use pgraft.client.NodeInfo"):
        assert pgraft.client.Node is pgraft.NodeInfo
    assert "Node" not in pgraft.__all__  # `from pgraft import *` does not warn
    with pytest.raises(AttributeError, match="no attribute 'Nodes'"):
        pgraft.Nodes  # noqa: B018


def test_forgotten_sync_client_releases_its_resources(fake: FakeNode) -> None:
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        c = pgraft.Client(fake.address)
        assert c.get_term() == 3
        del c
        gc.collect()
