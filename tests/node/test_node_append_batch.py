"""``append_batch`` on a running cluster, sent raw: many appends in one request, one answer
with each payload's index or its own error, in order; bad requests change nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from pgraft._impl import core
from pgraft.node.batchreply import BatchReply, Slot
from pgraft.protocol import APPEND_BATCH_LIMIT
from tests.node.test_bad_input import RawClient, code
from tests.support.inprocess import Cluster, run, wait_for


def test_a_batch_appends_each_payload_in_order_and_answers_once(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3, max_payload=4096)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            rc = await RawClient.open(lead.port)
            payloads = [b"p%d" % i for i in range(50)]
            answer = await rc.call("append_batch", {"data": payloads})
            assert answer["ok"] is True, answer
            indexes = answer["result"]
            assert indexes == list(range(indexes[0], indexes[0] + 50))
            for i in (0, 17, 49):
                entry = await rc.call("get_entry", {"index": indexes[i]})
                assert entry["result"]["data"] == payloads[i]
            # every member applies them
            await wait_for(lambda: all(n.state.applied_index >= indexes[-1]
                                       for n in c.nodes.values()), 10,
                           "every member to apply the batch")

            # A payload that cannot be appended fails alone, in its place.
            mixed = [b"a", b"x" * 5000, "text", b"b"]
            answer = await rc.call("append_batch", {"data": mixed})
            assert answer["ok"] is True, answer
            first, too_large, not_bytes, last = answer["result"]
            assert isinstance(first, int) and last == first + 1
            assert too_large["code"] == "payload_too_large"
            assert not_bytes["code"] == "invalid_argument" and "bytes" in not_bytes["message"]
            assert (await rc.call("get_entry", {"index": last}))["result"]["data"] == b"b"
            await rc.close()
        finally:
            await c.stop_all()
    run(scenario())


def test_bad_batches_are_refused_whole_and_append_nothing(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            rc = await RawClient.open(lead.port)
            before = (await rc.call("log_stats", {}))["result"]["last_index"]
            for data in (None, [], b"abc", {"a": b"x"}, [b"x"] * (APPEND_BATCH_LIMIT + 1)):
                args: dict[str, Any] = {} if data is None else {"data": data}
                assert code(await rc.call("append_batch", args)) == "invalid_argument", data
            assert code(await rc.call("append_batch", {"data": [b"x"], "timeout": 0})) == \
                "invalid_argument"
            assert (await rc.call("log_stats", {}))["result"]["last_index"] == before

            # On a follower: one not_leader answer for the whole batch, naming the leader.
            follower = next(n for n in c.nodes.values() if n is not lead)
            fc = await RawClient.open(follower.port)
            answer = await fc.call("append_batch", {"data": [b"x", b"y"]})
            assert code(answer) == "not_leader"
            assert answer["error"]["details"]["leader_id"] == lead.node_id
            assert (await rc.call("log_stats", {}))["result"]["last_index"] == before
            await fc.close()
            await rc.close()
        finally:
            await c.stop_all()
    run(scenario())


def test_the_hello_answer_names_append_batch(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 1)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            reader, writer = await asyncio.open_connection("127.0.0.1", lead.port)
            writer.write(core.encode_control({"hello": "client", "version": 1}))
            decoder = core.FrameDecoder(1 << 20)
            items: list[Any] = []
            while not items:
                items = decoder.feed(await asyncio.wait_for(reader.read(65536), 10))
            assert items[0]["hello"] == "ok" and "append_batch" in items[0]["features"]
            writer.close()
            await writer.wait_closed()
        finally:
            await c.stop_all()
    run(scenario())


class _Conn:
    def __init__(self) -> None:
        self.inflight = 3
        self.sent: list[tuple[int, Any]] = []

    def send_result(self, rid: int, result: Any) -> None:
        self.sent.append((rid, result))


class _Metrics:
    client_errors = 0


def test_a_batch_answers_once_when_its_last_slot_settles_or_its_timeout_passes() -> None:
    conn, metrics = _Conn(), _Metrics()
    batch = BatchReply(conn, 7, 2.0, 3, metrics)
    slots = [Slot(batch, i) for i in range(3)]
    slots[1].set_result(11)
    slots[1].set_result(99)  # a slot settles once
    assert slots[1].done() and not slots[0].done() and conn.sent == []
    slots[0].set_exception(ValueError("boom"))  # not a PgraftError: an internal error
    slots[2].set_result(12)
    (rid, results), = conn.sent
    assert rid == 7 and results[1:] == [11, 12]
    assert results[0]["code"] == "internal" and "boom" in results[0]["message"]
    assert conn.inflight == 0 and metrics.client_errors == 1
    slots[2].set_result(13)  # after the answer: ignored
    batch.expire()
    assert len(conn.sent) == 1

    conn, metrics = _Conn(), _Metrics()
    batch = BatchReply(conn, 8, 0.5, 3, metrics)
    Slot(batch, 0).set_result(5)
    batch.expire()
    (rid, results), = conn.sent
    assert rid == 8 and results[0] == 5
    assert [r["code"] for r in results[1:]] == ["commit_timeout"] * 2
    assert "0.5s" in results[1]["message"] and metrics.client_errors == 2
    Slot(batch, 1).set_result(6)  # a late commit after the timeout's answer: ignored
    assert len(conn.sent) == 1


def test_a_batch_over_the_pending_limit_is_refused_whole(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 1, max_pending_proposals=8)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            rc = await RawClient.open(lead.port)
            before = (await rc.call("log_stats", {}))["result"]["last_index"]
            answer = await rc.call("append_batch", {"data": [b"x"] * 9, "timeout": 5.0})
            assert answer["ok"] is True, answer
            assert [r["code"] for r in answer["result"]] == ["overloaded"] * 9
            assert "over the limit of 8" in answer["result"][0]["message"]
            assert (await rc.call("log_stats", {}))["result"]["last_index"] == before
            answer = await rc.call("append_batch", {"data": [b"x"] * 8})
            assert answer["result"] == list(range(before + 1, before + 9))
            await rc.close()
        finally:
            await c.stop_all()
    run(scenario())
