"""Resource limits (docs/design.md rule 7, issue 9): each bound is enforced with its error, and
garbage, truncated and oversized frames on every port leave the node serving."""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import pytest

import pgraft
from pgraft import _core_py as core
from pgraft.checks import MAX_KEY_BYTES
from pgraft.errors import Overloaded, PayloadTooLarge
from pgraft.node.security import HANDSHAKE_MAX_BYTES, SecurityConfig
from tests.support.inprocess import Cluster, run
from tests.support.security import RawConn, call, client_session


async def serving(node: Any) -> None:
    """The node answers a client on its TCP port and on its Unix socket."""
    for target in (f"127.0.0.1:{node.port}", os.path.join(node.config.data_dir, "node.sock")):
        async with await pgraft.connect(target, timeout=5) as cl:
            assert await cl.get_term() >= 1


async def uncommittable_leader(c: Cluster) -> Any:
    """A leader of 3 whose followers are stopped: its proposals wait (long election timeout)."""
    await c.start_all()
    lead = await c.wait_leader(20)
    for i in [i for i in c.nodes if i != lead.node_id]:
        await c.stop(i)
    return lead


def test_connection_limits(tmpdir_short: str) -> None:
    async def main() -> None:
        c = Cluster(tmpdir_short, 1, security=SecurityConfig(max_connections_per_address=3,
                                                             max_connections=6))
        await c.start_all()
        try:
            lead = await c.wait_leader()
            held = [await RawConn.open(lead.port) for _ in range(3)]
            extra = await RawConn.open(lead.port)
            reply = await extra.recv()
            assert reply["hello"] == "error" and reply["error"]["code"] == "overloaded"
            assert "per address" in reply["error"]["message"]
            extra.close()
            sock = os.path.join(c.data_dir(1), "node.sock")
            held += [await RawConn.open(path=sock) for _ in range(3)]
            extra = await RawConn.open(path=sock)
            reply = await extra.recv()
            assert reply["error"]["code"] == "overloaded"
            assert "connections open" in reply["error"]["message"]
            extra.close()
            for conn in held:
                conn.close()
            await asyncio.sleep(0.1)
            await serving(lead)  # slots are given back
        finally:
            await c.stop_all()

    run(main())


def test_handshake_timeout_and_size(tmpdir_short: str) -> None:
    async def main() -> None:
        c = Cluster(tmpdir_short, 1, security=SecurityConfig(handshake_timeout=0.3))
        await c.start_all()
        try:
            lead = await c.wait_leader()
            silent = await RawConn.open(lead.port)
            assert await silent.closed_by_node(3.0)
            # a hello that announces 1 MiB (under max_frame) is cut at 64 KiB before any
            # handshake
            big = await RawConn.open(lead.port)
            await big.send(struct.pack("<IB", 1 << 20, 2) + b"\x00" * (HANDSHAKE_MAX_BYTES + 10))
            assert await big.closed_by_node(3.0)
            await serving(lead)
        finally:
            await c.stop_all()

    run(main())


def test_inflight_and_pending_limits(tmpdir_short: str) -> None:
    async def main() -> None:
        c = Cluster(tmpdir_short, 3, election_timeout_ms=5000, heartbeat_interval_ms=100,
                    max_pending_proposals=4,
                    security=SecurityConfig(max_client_inflight=2))
        try:
            lead = await uncommittable_leader(c)
            async with await pgraft.connect(f"127.0.0.1:{lead.port}", timeout=5) as cl:
                waiting = [asyncio.ensure_future(cl.append(b"w", timeout=4)) for _ in range(2)]
                await asyncio.sleep(0.1)
                with pytest.raises(Overloaded, match="in flight"):
                    await cl.append(b"third")
                async with await pgraft.connect(f"127.0.0.1:{lead.port}", timeout=5) as cl2:
                    more = [asyncio.ensure_future(cl2.append(b"m", timeout=4))
                            for _ in range(2)]
                    await asyncio.sleep(0.1)
                    async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl3:
                        with pytest.raises(Overloaded, match="waiting to commit"):
                            await cl3.append(b"fifth")
                        assert await cl3.get_term() >= 1
                    for f in waiting + more:
                        f.cancel()
        finally:
            await c.stop_all()

    run(main(), 60)


def test_size_limits(tmpdir_short: str) -> None:
    async def main() -> None:
        c = Cluster(tmpdir_short, 1, max_payload=4096)
        await c.start_all()
        try:
            lead = await c.wait_leader()
            async with await pgraft.connect(f"127.0.0.1:{lead.port}", timeout=5) as cl:
                with pytest.raises(PayloadTooLarge):
                    await cl.append(b"x" * 4097)
                assert await cl.append(b"x" * 4000) >= 1
                with pytest.raises(PayloadTooLarge):
                    await cl.kv_put("k" * (MAX_KEY_BYTES + 1), "v")
                with pytest.raises(PayloadTooLarge):
                    await cl.kv_put("k", "v" * 5000)
                with pytest.raises(PayloadTooLarge):
                    await cl.kv_get("k" * (MAX_KEY_BYTES + 1))
            # a frame over max_frame after a good handshake: dropped, node unharmed
            conn, reply = await client_session(lead.port, None)
            assert reply["hello"] == "ok"
            await conn.send(struct.pack("<IB", lead.config.max_frame + 1, 2) + b"\x80")
            assert await conn.closed_by_node()
            await serving(lead)
        finally:
            await c.stop_all()

    run(main())


GARBAGE = [
    b"\x00\x00\x00\x00",  # length 0
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # another protocol
    struct.pack("<IB", 0xFFFFFFFF, 2),  # oversized length
    struct.pack("<IB", 6, 9) + b"abcde",  # unknown kind
    struct.pack("<IB", 4, 2) + b"\xc1\xc1\xc1",  # bad msgpack
    struct.pack("<IB", 40, 1) + os.urandom(39),  # a RAFT frame before any hello
    struct.pack("<IB", 100, 2) + b"\x81",  # truncated, then closed
    core.encode_control({"hello": "peer", "node_id": -1, "version": 1}),
    core.encode_control({"hello": "client", "version": 99}),
    core.encode_control([1, 2, 3]),
    os.urandom(300),
]


@pytest.mark.parametrize("port_kind", ["tcp", "unix"])
def test_garbage_truncated_and_oversized_frames_on_every_port(tmpdir_short: str,
                                                              port_kind: str) -> None:
    async def main() -> None:
        c = Cluster(tmpdir_short, 1)
        await c.start_all()
        try:
            lead = await c.wait_leader()
            sock = os.path.join(c.data_dir(1), "node.sock")

            async def open_conn() -> RawConn:
                if port_kind == "tcp":
                    return await RawConn.open(lead.port)
                return await RawConn.open(path=sock)

            for junk in GARBAGE:
                # before the handshake
                conn = await open_conn()
                await conn.send(junk)
                conn.writer.write_eof() if conn.writer.can_write_eof() else None
                assert await conn.closed_by_node()
                conn.close()
                # after a client handshake
                conn = await open_conn()
                await conn.send_obj({"hello": "client", "version": 1})
                assert (await conn.recv())["hello"] == "ok"
                await conn.send(junk)
                conn.writer.write_eof() if conn.writer.can_write_eof() else None
                await conn.closed_by_node(2.0)
                conn.close()
            # requests of the wrong shape on an established connection are answered
            conn = await open_conn()
            await conn.send_obj({"hello": "client", "version": 1})
            await conn.recv()
            for rid, op, args in [(1, "nope", {}), (2, None, {}), (3, "append", {"data": 5}),
                                  (4, "kv_put", {"key": ["x"], "value": "v"}),
                                  (5, "get_entry", {"index": -1}), (6, "add_node", [])]:
                reply = await call(conn, rid, op, **args) if isinstance(args, dict) else None
                if reply is not None:
                    assert reply["id"] == rid and reply["ok"] is False
            conn.close()
            await serving(lead)
            assert lead.is_leader
        finally:
            await c.stop_all()

    run(main(), 60)
