"""The asyncio client gathers concurrent appends into ``append_batch`` requests, only for a
node that names the feature, and hands every caller its own index or error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fake_node import CloseConnection, Conn, FakeNode

import pgraft
from pgraft.client._appendbatch import GATHER_PAYLOAD_MAX
from pgraft.errors import (
    NotLeaderError,
    OutcomeUnknown,
    PayloadTooLarge,
)
from pgraft.protocol import APPEND_BATCH_MAX


def run(coro: Any, limit: float = 30.0) -> Any:
    async def guarded() -> Any:
        async with asyncio.timeout(limit):
            return await coro
    return asyncio.run(guarded())


def ops(fake: FakeNode) -> list[tuple[str, int]]:
    """The requests the fake node got: op and number of payloads."""
    return [(op, len(args["data"]) if op == "append_batch" else 1)
            for op, args in fake.requests]


@pytest.fixture()
def batching(fake: FakeNode) -> FakeNode:
    fake.features = ["append_batch"]
    return fake


def test_appends_of_one_iteration_after_the_first_travel_as_batches(
        batching: FakeNode) -> None:
    async def main() -> None:
        async with await pgraft.connect(batching.address) as c:
            results = await asyncio.gather(*(c.append(b"%d" % i) for i in range(100)))
            assert results == list(range(1, 101))
            assert c.in_flight == 0
    run(main())
    # the first at once, alone; then batches of APPEND_BATCH_MAX as they fill, and the rest
    # when the iteration ends
    assert ops(batching) == [("append", 1), ("append_batch", APPEND_BATCH_MAX),
                             ("append_batch", 99 - APPEND_BATCH_MAX)]
    assert batching.log == [b"%d" % i for i in range(100)]


def test_a_node_that_does_not_name_the_feature_gets_one_append_per_call(
        fake: FakeNode) -> None:
    async def main() -> None:
        async with await pgraft.connect(fake.address) as c:
            assert await asyncio.gather(*(c.append(b"x") for _ in range(10))) == \
                list(range(1, 11))
    run(main())
    assert ops(fake) == [("append", 1)] * 10


def test_large_payloads_and_own_timeouts_go_alone(batching: FakeNode) -> None:
    async def main() -> None:
        async with await pgraft.connect(batching.address) as c:
            big = b"x" * (GATHER_PAYLOAD_MAX + 1)
            await asyncio.gather(c.append(b"a"), c.append(big), c.append(b"b", timeout=5),
                                 c.append(b"c"), c.append(b"d"))
    run(main())
    assert sorted(ops(batching)) == [("append", 1)] * 3 + [("append_batch", 2)]
    assert batching.requests[-1] == ("append_batch", {"data": [b"c", b"d"],
                                                      "timeout": pytest.approx(10.0)})


def test_each_caller_gets_its_own_result_or_error(batching: FakeNode) -> None:
    async def answer(args: dict[str, Any], conn: Conn) -> list[Any]:
        return [10, PayloadTooLarge("payload of 9 bytes is over the limit").to_wire(), 12]

    batching.handlers["append_batch"] = answer

    async def main() -> None:
        async with await pgraft.connect(batching.address) as c:
            got = await asyncio.gather(*(c.append(b"%d" % i) for i in range(4)),
                                       return_exceptions=True)
            assert got[0] == 1 and got[1] == 10 and got[3] == 12
            assert isinstance(got[2], PayloadTooLarge) and "over the limit" in got[2].message
    run(main())


def test_a_refused_batch_fails_every_caller_with_its_own_error(batching: FakeNode) -> None:
    async def refuse(args: dict[str, Any], conn: Conn) -> list[Any]:
        raise NotLeaderError("not the leader", node_id=1, leader_id=2,
                             leader_address="127.0.0.1:7002")

    batching.handlers["append_batch"] = refuse

    async def main() -> None:
        async with await pgraft.connect(batching.address) as c:
            got = await asyncio.gather(*(c.append(b"x") for _ in range(4)),
                                       return_exceptions=True)
            assert got[0] == 1
            errors = got[1:]
            assert all(isinstance(e, NotLeaderError) and e.leader_id == 2 for e in errors)
            assert len({id(e) for e in errors}) == 3  # one exception object per caller
    run(main())


def test_an_answer_without_one_result_per_append_is_an_unknown_outcome(
        batching: FakeNode) -> None:
    async def short(args: dict[str, Any], conn: Conn) -> list[Any]:
        return [1]

    batching.handlers["append_batch"] = short

    async def main() -> None:
        async with await pgraft.connect(batching.address) as c:
            got = await asyncio.gather(*(c.append(b"x") for _ in range(3)),
                                       return_exceptions=True)
            assert all(isinstance(e, OutcomeUnknown) and "one result per append" in e.message
                       for e in got[1:])
    run(main())


def test_a_batch_in_flight_when_the_connection_drops_has_an_unknown_outcome(
        batching: FakeNode) -> None:
    async def drop(args: dict[str, Any], conn: Conn) -> None:
        raise CloseConnection

    batching.handlers["append_batch"] = drop

    async def main() -> None:
        async with await pgraft.connect(batching.address) as c:
            got = await asyncio.gather(*(c.append(b"x") for _ in range(3)),
                                       return_exceptions=True)
            assert all(isinstance(e, OutcomeUnknown) for e in got[1:]), got
    run(main())


def test_a_caller_cancelled_before_the_batch_went_out_sends_nothing(
        batching: FakeNode) -> None:
    async def main() -> None:
        async with await pgraft.connect(batching.address) as c:
            tasks = [asyncio.ensure_future(c.append(p)) for p in (b"a", b"b", b"c")]
            await asyncio.sleep(0)  # the three start in this iteration: b and c are gathered
            tasks[1].cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            assert done[0] == 1 and isinstance(done[1], asyncio.CancelledError) \
                and done[2] == 2
    run(main())
    assert batching.requests == [("append", {"data": b"a", "timeout": pytest.approx(10.0)}),
                                 ("append_batch", {"data": [b"c"],
                                                   "timeout": pytest.approx(10.0)})]
    assert batching.log == [b"a", b"c"]
