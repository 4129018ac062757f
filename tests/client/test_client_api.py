"""pgraft.connect / pgraft.Client against a fake node: arguments, protocol, errors, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from typing import Any

import pytest
from fake_node import CloseConnection, Conn, FakeNode, SendRaw

import pgraft
from pgraft import client as client_mod
from pgraft.client import Target, parse_target
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
def test_async_client_validates_arguments(fake: FakeNode, method: str, args: tuple[Any, ...],
                                          message: str) -> None:
    async def main() -> None:
        async with await pgraft.connect(fake.address) as c:
            with pytest.raises(InvalidArgument, match=message) as info:
                await getattr(c, method)(*args)
            assert info.value.hint
    run(main())
    assert fake.requests == []  # nothing was sent


@pytest.mark.parametrize("method, args, message", BAD_CALLS)
def test_sync_client_validates_arguments(method: str, args: tuple[Any, ...],
                                         message: str) -> None:
    # No node at all: validation happens before connecting.
    with pgraft.Client(f"127.0.0.1:{free_port()}") as c, \
            pytest.raises(InvalidArgument, match=message):
        getattr(c, method)(*args)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "5", True])
def test_bad_timeouts(fake: FakeNode, timeout: Any) -> None:
    async def main() -> None:
        with pytest.raises(InvalidArgument, match="timeout"):
            await pgraft.connect(fake.address, timeout=timeout)
        async with await pgraft.connect(fake.address) as c:
            with pytest.raises(InvalidArgument, match="timeout"):
                await c.get_term(timeout=timeout)
    run(main())
    with pgraft.Client(fake.address) as c, pytest.raises(InvalidArgument, match="timeout"):
        c.get_term(timeout=timeout)


def test_valid_addresses_are_accepted(fake: FakeNode) -> None:
    with pgraft.Client(fake.address) as c:
        for i, address in enumerate(["10.0.0.14", "fd00::14", "node4", "node-4.example.com",
                                     "node4.example.com."], start=10):
            assert c.add_node(i, address, 7004) is True
    assert [args["address"] for op, args in fake.requests] == [
        "10.0.0.14", "fd00::14", "node4", "node-4.example.com", "node4.example.com."]


# ------------------------------------------------------------------ results
def test_every_call_round_trips(fake: FakeNode) -> None:
    async def main() -> None:
        async with await pgraft.connect(fake.address, timeout=5) as c:
            assert c.node_id == 1
            assert await c.append(b"one") == 1
            assert await c.append(bytearray(b"two")) == 2
            assert await c.append(memoryview(b"three")) == 3
            entry = await c.get_entry(2)
            assert entry == {"index": 2, "term": 3, "type": 0, "data": b"two"}
            assert await c.get_entry(99) is None
            stats = await c.log_stats()
            assert stats["last_index"] == 3 and stats["commit_index"] == 3
            assert await c.add_node(4, "127.0.0.1", 7004) is True
            nodes = await c.get_nodes()
            assert [n.node_id for n in nodes] == [1, 2, 3, 4]
            assert nodes[3] == pgraft.Node(4, "127.0.0.1", 7004, "learner", False)
            assert nodes[0].is_leader and nodes[0].endpoint == "127.0.0.1:7001"
            assert await c.remove_node(4) is True
            assert await c.get_leader() == 1
            assert await c.leader_address() == "127.0.0.1:7001"
            assert await c.get_term() == 3
            assert await c.is_leader() is True
            status = await c.status()
            assert status["node_id"] == 1 and status["progress"][2]["state"] == "replicate"
            assert await c.kv_put("b", "2") is True
            assert await c.kv_put("a", "1") is True
            assert await c.kv_get("a") == "1"
            assert await c.kv_get("missing") is None
            assert await c.kv_list_keys() == ["a", "b"]
            assert await c.kv_delete("a") is True
            assert await c.kv_delete("a") is False
            assert await c.transfer_leadership(2) is True
    run(main())
    ops = [op for op, _ in fake.requests]
    assert "transfer_leadership" in ops
    # Every request tells the node its timeout.
    assert all(args["timeout"] == 5 for _, args in fake.requests)


def test_sync_client_same_results(fake: FakeNode) -> None:
    with pgraft.Client(fake.address) as c:
        assert c.node_id is None  # connects on first use
        assert c.append(b"x") == 1
        assert c.node_id == 1
        assert c.get_entry(1)["data"] == b"x"
        assert c.log_stats()["last_index"] == 1
        assert c.add_node(4, "127.0.0.1", 7004)
        assert [n.node_id for n in c.get_nodes()] == [1, 2, 3, 4]
        assert c.remove_node(4)
        assert c.get_leader() == 1
        assert c.leader_address() == "127.0.0.1:7001"
        assert c.get_term() == 3
        assert c.is_leader()
        assert c.status()["role"] == "leader"
        assert c.kv_put("k", "v")
        assert c.kv_get("k") == "v"
        assert c.kv_list_keys() == ["k"]
        assert c.kv_delete("k")
        assert c.transfer_leadership(2)
    assert fake.connections == 1  # one connection reused for all calls


def test_unix_socket_and_data_directory(fake: FakeNode) -> None:
    assert fake.unix_path is not None
    with pgraft.Client(fake.unix_path) as c:
        assert c.get_term() == 3
    with pgraft.Client(os.path.dirname(fake.unix_path)) as c:
        assert c.is_leader()

    async def main() -> None:
        async with await pgraft.connect(fake.unix_path) as c:
            assert await c.get_leader() == 1
    run(main())


def test_server_errors_are_rebuilt(fake: FakeNode, follower: FakeNode) -> None:
    async def main() -> None:
        async with await pgraft.connect(follower.address) as c:
            with pytest.raises(NotLeaderError) as info:
                await c.add_node(4, "127.0.0.1", 7004)
            err = info.value
            assert err.leader_id == 2 and err.leader_address == "127.0.0.1:7002"
            assert "not the leader" in str(err)
            assert "node 2 at 127.0.0.1:7002" in err.hint
            with pytest.raises(NotLeaderError):
                await c.append(b"x")
        async with await pgraft.connect(fake.address) as c:
            with pytest.raises(NodeExists):
                await c.add_node(2, "127.0.0.1", 7002)
            with pytest.raises(UnknownNode):
                await c.remove_node(9)
            # The connection stays usable after errors.
            assert await c.get_term() == 3
    run(main())


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


def test_call_timeout_when_node_is_silent(fake: FakeNode) -> None:
    async def never(args: dict[str, Any], conn: Conn) -> None:
        await asyncio.sleep(3600)

    fake.handlers["kv_get"] = never
    fake.handlers["append"] = never

    async def main() -> None:
        async with await pgraft.connect(fake.address) as c:
            start = time.monotonic()
            with pytest.raises(Timeout) as info:
                await c.kv_get("k", timeout=0.2)
            elapsed = time.monotonic() - start
            assert 0.2 <= elapsed < 1.5
            # a read changes nothing: its timeout is a plain Timeout, not an unknown outcome
            assert not isinstance(info.value, OutcomeUnknown) and info.value.hint
            assert info.value.sqlstate == "57014"
            # a write that got no answer may still commit: CommitTimeout (OutcomeUnknown)
            with pytest.raises(CommitTimeout) as winfo:
                await c.append(b"x", timeout=0.2)
            assert "unknown" in winfo.value.message and winfo.value.sqlstate == "40003"
            assert isinstance(winfo.value, OutcomeUnknown | Timeout)
            assert c.in_flight == 0
            # The connection is still good; a late answer would be ignored.
            assert await c.get_term() == 3
    run(main())
    with pgraft.Client(fake.address, timeout=0.2) as c, pytest.raises(Timeout):
        c.kv_get("k")


def test_node_side_timeout_error_is_passed_through(fake: FakeNode) -> None:
    async def times_out(args: dict[str, Any], conn: Conn) -> None:
        raise Timeout(f"append did not commit within {args['timeout']}s")

    fake.handlers["append"] = times_out
    with pgraft.Client(fake.address) as c, pytest.raises(Timeout, match="within 2.5s"):
        c.append(b"x", timeout=2.5)


def test_server_closing_mid_call_fails_all_in_flight(fake: FakeNode) -> None:
    started = 0
    gate: asyncio.Event | None = None

    async def hang(args: dict[str, Any], conn: Conn) -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(3600)

    async def close(args: dict[str, Any], conn: Conn) -> None:
        raise CloseConnection

    fake.handlers["kv_get"] = hang
    fake.handlers["remove_node"] = close

    async def main() -> None:
        nonlocal gate
        c = await pgraft.connect(fake.address)
        calls = [asyncio.ensure_future(c.kv_get(f"k{i}")) for i in range(10)]
        while started < 10:
            await asyncio.sleep(0.01)
        # a write in flight when the connection is lost: its outcome is unknown
        with pytest.raises(OutcomeUnknown, match="closed by the node"):
            await c.remove_node(3)
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, ConnectionFailed) for r in results)
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
        fake.drop_connections()
        deadline = time.monotonic() + 5
        # The next call either fails with ConnectionFailed (drop not yet seen) or reconnects.
        while fake.connections < 2 and time.monotonic() < deadline:
            with contextlib.suppress(ConnectionFailed):
                c.get_term()
        assert c.get_term() == 3
        assert fake.connections == 2


@pytest.mark.parametrize("garbage", [
    b"\xff\xff\xff\xff\x02",  # oversized length
    b"\x00\x00\x00\x00",  # zero length
    b"\x03\x00\x00\x00\x02\xc1\xc1",  # CONTROL with bad msgpack
    b"\x02\x00\x00\x00\x09\x00",  # unknown kind
])
def test_garbage_from_server_fails_calls_clearly(fake: FakeNode, garbage: bytes) -> None:
    async def junk(args: dict[str, Any], conn: Conn) -> None:
        raise SendRaw(garbage)

    fake.handlers["status"] = junk

    async def main() -> None:
        async with await pgraft.connect(fake.address) as c:
            with pytest.raises(ProtocolError, match="malformed frame"):
                await c.status()
            assert c.closed
            with pytest.raises(ProtocolError):
                await c.get_term()
    run(main())


@pytest.mark.parametrize("response", [
    ["not", "a", "dict"],
    {"id": "1", "ok": True},
    {"id": 1},
    {"id": 1, "ok": False, "error": "text"},
])
def test_malformed_responses(fake: FakeNode, response: Any) -> None:
    from pgraft._impl import core

    async def odd(args: dict[str, Any], conn: Conn) -> None:
        raise SendRaw(core.encode_control(response))

    fake.handlers["get_term"] = odd

    async def main() -> None:
        async with await pgraft.connect(fake.address) as c:
            with pytest.raises(ProtocolError):
                await c.get_term(timeout=2)
    run(main())


def test_server_truncating_a_frame_then_closing(fake: FakeNode) -> None:
    async def half(args: dict[str, Any], conn: Conn) -> None:
        raise SendRaw(b"\x10\x00\x00\x00\x02\x81", close=True)

    fake.handlers["get_nodes"] = half
    with pgraft.Client(fake.address) as c, \
            pytest.raises(ConnectionFailed, match="closed by the node"):
        c.get_nodes()


def test_late_answer_after_timeout_is_ignored(fake: FakeNode) -> None:
    async def late(args: dict[str, Any], conn: Conn) -> int:
        await asyncio.sleep(0.5)
        return 7

    fake.handlers["get_term"] = late

    async def main() -> None:
        async with await pgraft.connect(fake.address) as c:
            with pytest.raises(Timeout):
                await c.get_term(timeout=0.1)
            await asyncio.sleep(0.6)  # the late answer arrives now
            assert await c.is_leader() is True
            assert not c.closed
    run(main())


# ----------------------------------------------------------------- connecting
def test_connection_refused_is_actionable() -> None:
    port = free_port()

    async def main() -> None:
        with pytest.raises(ConnectionFailed) as info:
            await pgraft.connect(f"127.0.0.1:{port}", timeout=2)
        assert "connection refused" in info.value.message
        assert "pgraft serve" in info.value.hint
        assert isinstance(info.value, Unavailable)
    run(main())
    with pgraft.Client(f"127.0.0.1:{port}") as c, pytest.raises(ConnectionFailed):
        c.get_nodes()


def test_missing_unix_socket(tmp_path: Any) -> None:
    with pgraft.Client(str(tmp_path / "node.sock")) as c, \
            pytest.raises(ConnectionFailed, match="does not exist") as info:
        c.get_nodes()
    assert "--data-dir" in info.value.hint


def test_unresolvable_host() -> None:
    with pgraft.Client("no-such-host.invalid:7001", timeout=5) as c, \
            pytest.raises(ConnectionFailed, match="cannot resolve"):
        c.get_term()


def test_connect_timeout_when_nothing_answers_the_handshake() -> None:
    # A listening socket that never answers (the node is paused, for instance).
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]

        async def main() -> None:
            start = time.monotonic()
            with pytest.raises(ConnectionFailed, match="no answer within 0.3s"):
                await pgraft.connect(f"127.0.0.1:{port}", timeout=0.3)
            assert time.monotonic() - start < 2
        run(main())


def test_handshake_error_and_non_pgraft_server(fake: FakeNode) -> None:
    fake.hello_reply = {"hello": "error",
                        "error": Unavailable("node is stopping").to_wire()}
    with pytest.raises(Unavailable, match="node is stopping"):
        run(pgraft.connect(fake.address))
    fake.hello_reply = {"hello": "ok", "node_id": 1, "version": 99}
    with pytest.raises(ProtocolError, match="version 99"):
        run(pgraft.connect(fake.address))
    fake.hello_reply = None
    fake.hello_raw = b"HTTP/1.1 400 Bad Request\r\n\r\n"
    with pytest.raises(ProtocolError):
        run(pgraft.connect(fake.address, timeout=2))


def test_closed_client_and_close_with_calls_in_flight(fake: FakeNode) -> None:
    async def never(args: dict[str, Any], conn: Conn) -> None:
        await asyncio.sleep(3600)

    fake.handlers["append"] = never

    async def main() -> None:
        c = await pgraft.connect(fake.address)
        pending = asyncio.ensure_future(c.append(b"x"))
        await asyncio.sleep(0.05)
        await c.close()
        with pytest.raises(OutcomeUnknown, match="client closed"):  # the write was sent
            await pending
        with pytest.raises(ConnectionFailed):
            await c.get_term()
        await c.close()  # idempotent
        assert "closed" in repr(c)
    run(main())


def test_oversized_request_is_refused_locally(fake: FakeNode, monkeypatch: Any) -> None:
    monkeypatch.setattr(client_mod, "MAX_FRAME_SIZE", 1024)
    with pgraft.Client(fake.address) as c:
        with pytest.raises(PayloadTooLarge):
            c.append(b"x" * 2000)
        assert c.append(b"x" * 100) == 1  # the connection is still fine
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
    assert c.get_term() == 3
    c.close()
    assert c.get_term() == 3
    c.close()
    c.close()


def test_public_names() -> None:
    for name in ("connect", "Client", "AsyncClient", "Node"):
        assert name in pgraft.__all__
        assert getattr(pgraft, name).__doc__
    for name in dir(pgraft.AsyncClient):
        if not name.startswith("_"):
            assert getattr(pgraft.AsyncClient, name).__doc__, name
    for name in dir(pgraft.Client):
        if not name.startswith("_"):
            assert getattr(pgraft.Client, name).__doc__, name
    # The synchronous twin has every method of the asynchronous client.
    async_methods = {n for n in dir(pgraft.AsyncClient)
                     if not n.startswith("_") and callable(getattr(pgraft.AsyncClient, n))}
    sync_methods = {n for n in dir(pgraft.Client)
                    if not n.startswith("_") and callable(getattr(pgraft.Client, n))}
    assert async_methods <= sync_methods


def test_forgotten_sync_client_releases_its_resources(fake: FakeNode) -> None:
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        c = pgraft.Client(fake.address)
        assert c.get_term() == 3
        del c
        gc.collect()
