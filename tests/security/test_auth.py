"""Cluster-secret authentication (issue 9): who gets in, who does not, and what they can do."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

import pgraft
from pgraft.auth import ClientAuth, RateLimitedLog, load_secret
from pgraft.errors import AuthenticationFailed, InvalidArgument
from pgraft.node import Node, start_node
from pgraft.node.security import SecurityConfig
from tests.support.inprocess import Cluster, run, wait_for
from tests.support.security import RawConn, call, client_session, write_secret

WRITES = [("append", {"data": b"x"}), ("kv_put", {"key": "k", "value": "v"}),
          ("kv_delete", {"key": "k"}), ("add_node", {"node_id": 9, "address": "127.0.0.1",
                                                     "port": 1}),
          ("remove_node", {"node_id": 2}), ("transfer_leadership", {"node_id": 2})]
READS = [("get_nodes", {}), ("status", {}), ("kv_get", {"key": "k"}), ("get_entry",
                                                                          {"index": 1})]


# ------------------------------------------------------------------------ secret files
def test_secret_file_rules(tmp_path: Path) -> None:
    good = write_secret(tmp_path / "s", b"0123456789abcdef0123")
    assert load_secret(good) == b"0123456789abcdef0123"  # the newline is stripped
    for mode in (0o640, 0o604, 0o660, 0o644):
        path = write_secret(tmp_path / f"s{mode:o}", b"0123456789abcdef0123", mode)
        with pytest.raises(InvalidArgument) as exc:
            load_secret(path)
        assert "group or others" in exc.value.message and "chmod 600" in exc.value.hint
    short = write_secret(tmp_path / "short", b"tooshort")
    with pytest.raises(InvalidArgument, match="at least 16"):
        load_secret(short)
    with pytest.raises(InvalidArgument, match="does not exist"):
        load_secret(str(tmp_path / "missing"))
    with pytest.raises(InvalidArgument, match="not a regular file"):
        os.chmod(tmp_path, 0o700)
        load_secret(str(tmp_path))


def test_serve_refuses_a_readable_secret_file(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "s", mode=0o644)
    with pytest.raises(InvalidArgument, match="group or others") as exc:
        SecurityConfig(secret_file=path).load()
    assert exc.value.hint == f"run: chmod 600 {path}"
    with pytest.raises(InvalidArgument, match="group or others"):
        pgraft.Client("127.0.0.1:1", secret_file=path)


def test_rate_limited_log() -> None:
    lines: list[str] = []

    class Sink:
        def warning(self, msg: str, *args: Any, **kw: Any) -> None:
            lines.append(msg % args)

    now = [0.0]
    rl = RateLimitedLog(Sink(), burst=3, interval=10.0, clock=lambda: now[0])  # type: ignore
    assert [rl.warning("refused", "line %d", i) for i in range(100)] == [True] * 3 + [False] * 97
    assert len(lines) == 3
    now[0] = 11.0
    assert rl.warning("refused", "again")
    assert lines[-2:] == ["97 more refused messages were suppressed", "again"]


# ---------------------------------------------------------------------------- clients
def test_clients_need_the_secret_over_tcp(tmpdir_short: str, secret_file: str,
                                          other_secret_file: str) -> None:
    async def main() -> None:
        c = Cluster(tmpdir_short, 1, security=SecurityConfig(secret_file=secret_file))
        await c.start_all()
        try:
            lead = await c.wait_leader()
            addr = f"127.0.0.1:{lead.port}"
            with pytest.raises(AuthenticationFailed, match="requires the cluster secret"):
                await pgraft.connect(addr, timeout=5)
            with pytest.raises(AuthenticationFailed, match="different cluster secret"):
                await pgraft.connect(addr, timeout=5, secret_file=other_secret_file)
            async with await pgraft.connect(addr, timeout=5, secret_file=secret_file) as cl:
                assert await cl.append(b"ok") >= 1
            # the Unix socket: the node's OS user is the credential
            sock = os.path.join(c.data_dir(1), "node.sock")
            assert os.stat(sock).st_mode & 0o777 == 0o600
            async with await pgraft.connect(sock, timeout=5) as cl:
                await cl.kv_put("local", "yes")
            # ... and a client that offers a proof there is checked all the same
            with pytest.raises(AuthenticationFailed):
                await pgraft.connect(sock, timeout=5, secret_file=other_secret_file)
            applied = lead.state.applied_index
            # a raw client that skips authentication gets no answer to any call
            for op, args in WRITES + READS:
                conn = await RawConn.open(lead.port)
                await conn.send_obj({"hello": "client", "version": 1})
                await conn.send_obj({"id": 1, "op": op, "args": args})
                reply = await conn.recv()
                assert reply["hello"] == "error"
                assert reply["error"]["code"] == "authentication_failed"
                assert await conn.closed_by_node()
                conn.close()
            # ... nor one that sends requests instead of answering the challenge
            conn = await RawConn.open(lead.port)
            auth = ClientAuth(b"x" * 32, "client")
            await conn.send_obj({"hello": "client", "version": 1, **auth.hello_fields()})
            assert (await conn.recv())["hello"] == "challenge"
            await conn.send_obj({"id": 1, "op": "append", "args": {"data": b"evil"}})
            reply = await conn.recv()
            assert reply["error"]["code"] == "authentication_failed"
            conn.close()
            await asyncio.sleep(0.2)
            assert lead.state.applied_index == applied
            assert lead.state.kv == {"local": "yes"}
            assert [m["node_id"] for m in lead.get_nodes()] == [1]
        finally:
            await c.stop_all()

    run(main())


def test_client_with_a_secret_refuses_a_node_without_one(tmpdir_short: str,
                                                          secret_file: str) -> None:
    async def main() -> None:
        c = Cluster(tmpdir_short, 1)
        await c.start_all()
        try:
            lead = await c.wait_leader()
            with pytest.raises(AuthenticationFailed, match="without proving"):
                await pgraft.connect(f"127.0.0.1:{lead.port}", timeout=5,
                                     secret_file=secret_file)
            async with await pgraft.connect(f"127.0.0.1:{lead.port}", timeout=5) as cl:
                assert await cl.is_leader()  # no secret anywhere: as before
        finally:
            await c.stop_all()

    run(main())


def test_replayed_handshake_is_refused(tmpdir_short: str, secret_file: str) -> None:
    async def main() -> None:
        c = Cluster(tmpdir_short, 1, security=SecurityConfig(secret_file=secret_file))
        await c.start_all()
        try:
            lead = await c.wait_leader()
            secret = load_secret(secret_file)
            conn, reply = await client_session(lead.port, secret)
            assert reply["hello"] == "ok"
            assert (await call(conn, 1, "is_leader"))["result"] is True
            captured = bytes(conn.sent)  # hello + proof + the request, as an eavesdropper saw
            conn.close()
            applied = lead.state.applied_index
            for _ in range(3):
                replay = await RawConn.open(lead.port)
                await replay.send(captured)
                first = await replay.recv()
                assert first["hello"] == "challenge"  # a fresh nonce: the old proof is stale
                second = await replay.recv()
                assert second["hello"] == "error"
                assert second["error"]["code"] == "authentication_failed"
                assert await replay.closed_by_node()
                replay.close()
            # the secret never crossed the wire
            assert secret not in captured
            assert lead.state.applied_index == applied
        finally:
            await c.stop_all()

    run(main())


# ------------------------------------------------------------------------------ peers
def test_node_without_the_secret_cannot_join_vote_or_change_membership(
        tmpdir_short: str, secret_file: str, other_secret_file: str) -> None:
    async def main() -> None:
        sec = SecurityConfig(secret_file=secret_file)
        c = Cluster(tmpdir_short, 3, security=sec)
        await c.start_all()
        intruders: list[Node] = []
        try:
            lead = await c.wait_leader()
            term = lead.term
            addr = f"127.0.0.1:{lead.port}"
            # A legitimate add of node 4, whose operator got the secret wrong: it never joins.
            port4 = c.add_slot(4)
            async with await pgraft.connect(addr, timeout=5, secret_file=secret_file) as cl:
                await cl.add_node(4, "127.0.0.1", port4)
                index = await cl.append(b"after-add")
            wrong = await start_node(c.config(4, bootstrap=False,
                                              security=SecurityConfig(
                                                  secret_file=other_secret_file)))
            intruders.append(wrong)
            # An intruder that claims to be a member with a much shorter election timeout and
            # a cluster of its own including the real members: it campaigns all the time.
            port5 = c.add_slot(5)
            rogue_initial = dict(c.initial)
            rogue_initial[5] = ("127.0.0.1", port5)
            rogue = await start_node(pgraft.node.NodeConfig(
                node_id=5, address="127.0.0.1", port=port5, data_dir=c.data_dir(5),
                initial_cluster=rogue_initial, election_timeout_ms=60,
                heartbeat_interval_ms=10, seed=5))
            intruders.append(rogue)
            await asyncio.sleep(2.0)
            assert wrong.state.applied_index == 0  # node 4 got nothing
            assert lead.raw.status().progress[4].match == 0
            assert not rogue.is_leader  # it campaigned (pre-votes) every 60-120 ms ...
            for n in c.nodes.values():  # ... and no member noticed
                assert n.term == term and n.leader_id == lead.node_id
                assert n.state.applied_index >= index
            assert sorted(m["node_id"] for m in lead.get_nodes()) == [1, 2, 3, 4]
            # A client of the intruders' kind cannot add or remove members either.
            for op in (lambda cl: cl.add_node(6, "127.0.0.1", 1),
                       lambda cl: cl.remove_node(2)):
                with pytest.raises(AuthenticationFailed):
                    async with await pgraft.connect(addr, timeout=5) as cl:
                        await op(cl)
            # A raw peer that claims to be a member and sends a vote request is cut off at the
            # hello: its message never reaches the core.
            conn = await RawConn.open(lead.port)
            member = next(i for i in c.nodes if i != lead.node_id)
            await conn.send_obj({"hello": "peer", "node_id": member, "version": 1})
            await conn.send(bytes(lead.raw.status().term.to_bytes(4, "little")) * 4)
            reply = await conn.recv()
            assert reply["error"]["code"] == "authentication_failed"
            conn.close()
            await asyncio.sleep(0.3)
            assert sorted(m["node_id"] for m in lead.get_nodes()) == [1, 2, 3, 4]
            assert all(n.term == term for n in c.nodes.values())
        finally:
            for n in intruders:
                await n.stop()
            await c.stop_all()

    run(main(), timeout=90)


def test_unix_socket_refuses_other_os_users(tmpdir_short: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another user")

    async def main() -> None:
        c = Cluster(tmpdir_short, 1)
        await c.start_all()
        try:
            await c.wait_leader()
            sock_path = os.path.join(c.data_dir(1), "node.sock")
            assert os.stat(sock_path).st_mode & 0o777 == 0o600
            # nobody cannot even open the socket file (mode 0600): run a child as nobody
            proc = await asyncio.create_subprocess_exec(
                "runuser", "-u", "nobody", "--", "python3", "-c",
                "import socket,sys; s=socket.socket(socket.AF_UNIX); "
                f"s.connect({sock_path!r})",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate()
            assert proc.returncode != 0 and b"Permission denied" in err
            # and a socket passed around by root to another uid is refused by SO_PEERCRED
            # (checked here from this process, which is root: allowed)
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            s.close()
        finally:
            await c.stop_all()

    run(main())


def test_listening_off_loopback_without_a_secret_warns(tmpdir_short: str,
                                                       caplog: pytest.LogCaptureFixture,
                                                       secret_file: str) -> None:
    async def main() -> None:
        c = Cluster(tmpdir_short, 1, listen_host="0.0.0.0")
        await c.start_all()
        await c.stop_all()
        assert "without a cluster secret" in caplog.text
        caplog.clear()
        c2 = Cluster(tmpdir_short + "/b", 1, listen_host="0.0.0.0",
                     security=SecurityConfig(secret_file=secret_file))
        await c2.start_all()
        await c2.stop_all()
        assert "without a cluster secret" not in caplog.text

    run(main())


def test_cli_secret_file(tmpdir_short: str, secret_file: str,
                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                         ) -> None:
    from pgraft.cli import main as cli_main

    async def serve(stop: asyncio.Event, ready: asyncio.Event, port: list[int]) -> None:
        c = Cluster(tmpdir_short, 1, security=SecurityConfig(secret_file=secret_file))
        await c.start_all()
        lead = await c.wait_leader()
        port.append(lead.port)
        ready.set()
        await stop.wait()
        await c.stop_all()

    import threading

    import uvloop

    port: list[int] = []
    loop = uvloop.new_event_loop()
    stop, ready = asyncio.Event(), asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(stop, ready, port),))
    thread.start()
    try:
        wait_until = asyncio.run_coroutine_threadsafe(ready.wait(), loop)
        wait_until.result(20)
        node = f"127.0.0.1:{port[0]}"
        monkeypatch.delenv("PGRAFT_SECRET_FILE", raising=False)
        assert cli_main(["--node", node, "kv", "put", "a", "b"]) == 1
        assert "requires the cluster secret" in capsys.readouterr().err
        assert cli_main(["kv", "put", "a", "b", "--node", node, "--secret-file",
                         secret_file]) == 0
        monkeypatch.setenv("PGRAFT_SECRET_FILE", secret_file)
        assert cli_main(["--node", node, "kv", "get", "a"]) == 0
        assert capsys.readouterr().out.strip().endswith("b")
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
    _ = wait_for  # the in-loop helpers are used by the other tests
