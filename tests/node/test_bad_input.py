"""Bad input to the client ops, sent raw (bypassing the client's own checks): each gets a
specific error and changes nothing. Also: no leader -> a clear error, never a hang."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import pgraft
from pgraft._impl import core
from pgraft.errors import CommitTimeout, OutcomeUnknown, Unavailable
from tests.support.inprocess import Cluster, run, wait_for


class RawClient:
    """docs/protocol.md by hand: send any request, read the answers by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = core.FrameDecoder(64 << 20)
        self.answers: dict[int, dict[str, Any]] = {}
        self.next_id = 1

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        c = cls(reader, writer)
        writer.write(core.encode_control({"hello": "client", "version": 1}))
        hello = await c._next()
        assert hello["hello"] == "ok"
        return c

    async def _next(self) -> Any:
        while True:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            if not data:
                raise ConnectionError("closed by the node")
            items = self.decoder.feed(data)
            if items:
                # keep any extra answers
                for extra in items[1:]:
                    self.answers[extra["id"]] = extra
                return items[0]

    def send(self, op: Any, args: Any = None, rid: Any = None) -> Any:
        if rid is None:
            rid = self.next_id
            self.next_id += 1
        req: dict[str, Any] = {"id": rid, "op": op}
        if args is not None:
            req["args"] = args
        self.writer.write(core.encode_control(req))
        return rid

    async def answer(self, rid: Any) -> dict[str, Any]:
        while rid not in self.answers:
            msg = await self._next()
            self.answers[msg["id"]] = msg
        return self.answers.pop(rid)

    async def call(self, op: Any, args: Any = None) -> dict[str, Any]:
        return await self.answer(self.send(op, args))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def code(answer: dict[str, Any]) -> str:
    assert answer["ok"] is False, answer
    return str(answer["error"]["code"])


def test_bad_input_is_refused_and_changes_nothing(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3, max_payload=4096)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            rc = await RawClient.open(lead.port)
            before = lead.get_nodes()
            bad_adds = [
                ({"node_id": 0, "address": "127.0.0.1", "port": 7004}, "invalid_argument"),
                ({"node_id": -3, "address": "127.0.0.1", "port": 7004}, "invalid_argument"),
                ({"node_id": "4", "address": "127.0.0.1", "port": 7004}, "invalid_argument"),
                ({"node_id": 2, "address": "127.0.0.9", "port": 7004}, "node_exists"),
                ({"node_id": 4, "address": "not a host!", "port": 7004}, "invalid_argument"),
                ({"node_id": 4, "address": "", "port": 7004}, "invalid_argument"),
                ({"node_id": 4, "address": "0.0.0.0", "port": 7004}, "invalid_argument"),
                ({"node_id": 4, "address": "10.0.0.1", "port": 0}, "invalid_argument"),
                ({"node_id": 4, "address": "10.0.0.1", "port": 70000}, "invalid_argument"),
                ({"node_id": 4, "address": "10.0.0.1", "port": "x"}, "invalid_argument"),
                ({"node_id": 4, "address": "127.0.0.1", "port": c.ports[2]}, "node_exists"),
                ({"node_id": 4}, "invalid_argument"),
            ]
            for args, expected in bad_adds:
                assert code(await rc.call("add_node", args)) == expected, args
            assert code(await rc.call("remove_node", {"node_id": 42})) == "unknown_node"
            assert code(await rc.call("remove_node", {"node_id": 0})) == "invalid_argument"
            assert code(await rc.call("transfer_leadership", {"node_id": 42})) == \
                "unknown_node"
            assert code(await rc.call("append", {"data": b"x" * 5000})) == "payload_too_large"
            assert code(await rc.call("append", {"data": "text"})) == "invalid_argument"
            assert code(await rc.call("kv_put", {"key": "", "value": "v"})) == \
                "invalid_argument"
            assert code(await rc.call("kv_put", {"key": "k", "value": 3})) == \
                "invalid_argument"
            assert code(await rc.call("kv_put", {"key": "k", "value": "v" * 5000})) == \
                "payload_too_large"
            assert code(await rc.call("get_entry", {"index": 0})) == "invalid_argument"
            assert (await rc.call("get_entry", {"index": 10**9}))["result"] is None
            assert code(await rc.call("no_such_op", {})) == "invalid_argument"
            assert code(await rc.call("get_term", [1, 2])) == "invalid_argument"
            assert code(await rc.call("append", {"data": b"x", "timeout": -1})) == \
                "invalid_argument"
            bad_id = rc.send("get_term", {}, rid="seven")
            assert code(await rc.answer(bad_id)) == "protocol_error"
            # a second change while one is pending: two adds in one write
            port4 = c.add_slot(4)
            first = rc.send("add_node", {"node_id": 4, "address": "127.0.0.1", "port": port4})
            second = rc.send("add_node", {"node_id": 5, "address": "127.0.0.1", "port": 7999})
            assert code(await rc.answer(second)) == "membership_change_in_progress"
            assert (await rc.answer(first))["result"] is True
            # node 4 (never started) is a learner; remove it, then its id cannot return
            assert (await rc.call("remove_node", {"node_id": 4}))["result"] is True
            assert code(await rc.call("add_node", {"node_id": 4, "address": "127.0.0.1",
                                                   "port": port4})) == "node_exists"
            await wait_for(lambda: all(n.get_nodes() == before for n in c.nodes.values()), 10,
                           "the membership to be unchanged everywhere")
            # nothing above wrote a KV key
            assert (await rc.call("kv_list_keys", {}))["result"] == []
            # an oversized frame from a client: the connection is dropped, the node serves on
            rc.writer.write((200 << 20).to_bytes(4, "little") + b"\x02")
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await rc.call("get_term", {})
            await rc.close()
            rc = await RawClient.open(lead.port)
            assert (await rc.call("is_leader", {}))["result"] is True
            await rc.close()
        finally:
            await c.stop_all()

    run(scenario(), 60)


def test_no_leader_is_a_clear_error(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            for i in [i for i in c.nodes if i != lead.node_id]:
                await c.stop(i)
            # check-quorum: the isolated leader steps down within about an election timeout
            await wait_for(lambda: not lead.is_leader, 10, "the isolated leader to step down")
            async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl:
                with pytest.raises(Unavailable) as info:
                    await cl.append(b"x", timeout=2)
                # it never entered a log: certainly not applied, not an unknown outcome
                assert not isinstance(info.value, OutcomeUnknown)
                assert info.value.sqlstate == "57P03"
                with pytest.raises((Unavailable, pgraft.Timeout)):
                    await cl.kv_get("k", timeout=2)
                with pytest.raises(Unavailable):
                    await cl.add_node(9, "127.0.0.1", 7009, timeout=2)
                assert await cl.get_leader() is None
                status = await cl.status()
                assert status["role"] != "leader" and status["leader_id"] is None
        finally:
            await c.stop_all()

    run(scenario(), 60)


def test_uncommittable_write_times_out(tmpdir_short: str) -> None:
    async def scenario() -> None:
        # a long election timeout: the leader keeps its role while its followers are gone
        c = Cluster(tmpdir_short, 3, election_timeout_ms=3000, heartbeat_interval_ms=100)
        try:
            await c.start_all()
            lead = await c.wait_leader(20)
            for i in [i for i in c.nodes if i != lead.node_id]:
                await c.stop(i)
            async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl:
                t0 = asyncio.get_running_loop().time()
                # the entry is in the leader's log but cannot commit: outcome unknown
                with pytest.raises(CommitTimeout) as info:
                    await cl.append(b"never-commits", timeout=0.3)
                assert isinstance(info.value, OutcomeUnknown | pgraft.Timeout)
                assert info.value.sqlstate == "40003" and info.value.code == "commit_timeout"
                with pytest.raises(OutcomeUnknown):
                    await cl.kv_put("k", "v", timeout=0.3)
                assert asyncio.get_running_loop().time() - t0 < 2.0
                # the node still answers
                assert await cl.get_term() >= 1
        finally:
            await c.stop_all()

    run(scenario(), 60)
