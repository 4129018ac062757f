"""Crashes, restarts, garbage on the wire, and the data directory's guards."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest

import pgraft
from pgraft._impl import core
from pgraft.errors import PgraftError, StorageError
from pgraft.node import start_node
from pgraft.node.server import entry
from tests.support.inprocess import Cluster, eventually, run, wait_for


def test_leader_crash_mid_appends_keeps_every_acknowledged_append(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            acked: dict[int, bytes] = {}
            stop = asyncio.Event()

            async def writer(w: int) -> None:
                seq = 0
                while not stop.is_set():
                    payload = b"w%d-%d" % (w, seq)
                    seq += 1
                    try:
                        index = await asyncio.wait_for(lead.propose_append(payload), 5)
                    except (TimeoutError, PgraftError):
                        await asyncio.sleep(0.005)
                        continue
                    acked[index] = payload

            writers = [asyncio.create_task(writer(w)) for w in range(8)]
            await wait_for(lambda: len(acked) >= 300, 20, "300 acknowledged appends")
            old = lead.node_id
            await c.stop(old, crash=True)
            stop.set()
            await asyncio.gather(*writers)
            new_lead = await c.wait_leader(10)
            assert new_lead.node_id != old
            index = await eventually(lambda: new_lead.propose_append(b"after-crash"), 10,
                                     "an append on the new leader")
            await c.wait_applied(index)
            for n in c.nodes.values():
                for i, payload in acked.items():
                    e = entry(n, i)
                    assert e is not None and e["data"] == payload, (n.node_id, i)
            # the crashed leader comes back and converges on the same log
            await c.start(old)
            await c.wait_applied(index)
            for i, payload in acked.items():
                e = entry(c.nodes[old], i)
                assert e is not None and e["data"] == payload
        finally:
            await c.stop_all()

    run(scenario(), 90)


def test_whole_cluster_restart_keeps_state(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            expected = f"node-{lead.node_id}"
            async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl:
                indexes = [await cl.append(b"e%d" % i) for i in range(10)]
                await cl.kv_put("leader-key", expected)
                await cl.kv_put("gone", "x")
                assert await cl.kv_delete("gone") is True
            await c.wait_applied(lead.state.applied_index)
            await c.stop_all()
            await c.start_all()
            lead = await c.wait_leader()
            async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl:
                assert await cl.kv_get("leader-key") == expected
                assert await cl.kv_get("gone") is None
                assert await cl.kv_list_keys() == ["leader-key"]
                for i, index in enumerate(indexes):
                    entry = await cl.get_entry(index)
                    assert entry is not None and entry["data"] == b"e%d" % i
                assert [n.node_id for n in await cl.get_nodes()] == [1, 2, 3]
            # every follower serves the same linearizable read
            for n in c.nodes.values():
                async with await pgraft.connect(f"127.0.0.1:{n.port}") as cl:
                    assert await cl.kv_get("leader-key") == expected
        finally:
            await c.stop_all()

    run(scenario(), 60)


def _raw_connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    return s


def _read_frame(s: socket.socket) -> object:
    dec = core.FrameDecoder(1 << 20)
    while True:
        data = s.recv(65536)
        if not data:
            raise ConnectionError("closed")
        items = dec.feed(data)
        if items:
            return items[0]


def _outcome(s: socket.socket) -> str:
    try:
        return "closed" if s.recv(100) == b"" else "answered"
    except ConnectionResetError:
        return "closed"


def test_garbage_and_half_frames_are_dropped(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            port = lead.port
            loop = asyncio.get_running_loop()

            def attacks() -> list[str]:
                results = []
                # 1. pure garbage instead of a hello
                s = _raw_connect(port)
                s.sendall(b"\x07\x00\x00\x00\x02garbage")  # a CONTROL frame of bad msgpack
                results.append(_outcome(s))
                s.close()
                # 2. an oversized length prefix
                s = _raw_connect(port)
                s.sendall(struct.pack("<I", 0xFFFFFFF0) + b"\x01")
                results.append(_outcome(s))
                s.close()
                # 3. a peer hello, then half a RAFT frame, then close
                s = _raw_connect(port)
                s.sendall(core.encode_control({"hello": "peer", "node_id": 99, "version": 1,
                                                 "incarnation": "ab" * 8}))
                reply = _read_frame(s)
                assert isinstance(reply, dict) and reply["hello"] == "ok"
                frame = core.encode_message(core.Message(core.MSG_HEARTBEAT, 99,
                                                         lead.node_id, 1))
                s.sendall(frame[: len(frame) // 2])
                s.close()
                # 4. a peer hello, then a RAFT frame with a corrupt header
                s = _raw_connect(port)
                s.sendall(core.encode_control({"hello": "peer", "node_id": 98, "version": 1,
                                                 "incarnation": "cd" * 8}))
                _read_frame(s)
                bad = bytearray(frame)
                bad[5] = 200  # unknown message type
                s.sendall(bytes(bad))
                results.append(_outcome(s))
                s.close()
                # 5. a wrong protocol version is refused with an error hello
                s = _raw_connect(port)
                s.sendall(core.encode_control({"hello": "client", "version": 42}))
                reply = _read_frame(s)
                assert isinstance(reply, dict) and reply["hello"] == "error"
                s.close()
                return results

            results = await loop.run_in_executor(None, attacks)
            assert results == ["closed", "closed", "closed"]
            await wait_for(lambda: lead.metrics.frames_rejected >= 4, 5,
                           "the node to count the rejected frames")
            # the node keeps serving clients and peers
            assert lead.is_leader
            async with await pgraft.connect(f"127.0.0.1:{port}") as cl:
                index = await cl.append(b"still-alive")
            await c.wait_applied(index)
        finally:
            await c.stop_all()

    run(scenario(), 60)


def test_data_dir_lock_and_node_id(tmpdir_short: str) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 1)
        try:
            node = await c.start(1)
            await c.wait_leader()
            # a second node on the same directory is refused while the first runs
            with pytest.raises(StorageError, match="locked by another running node"):
                await start_node(c.config(1))
            await c.stop(1)
            # another node id on this directory is refused
            cfg = c.config(1)
            cfg.node_id = 7
            cfg.initial_cluster = None
            with pytest.raises(StorageError, match="belongs to node 1, not node 7"):
                await start_node(cfg)
            # the right node starts again, and its state is intact
            node = await c.start(1)
            await c.wait_leader()
            assert [m["node_id"] for m in node.get_nodes()] == [1]
            assert oct(os.stat(os.path.join(c.data_dir(1), "node.sock")).st_mode & 0o777) \
                == "0o600"
        finally:
            await c.stop_all()

    run(scenario(), 30)
