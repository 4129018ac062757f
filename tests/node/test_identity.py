"""The record of the peers a node has met: made in memory at the handshake, durable before the
peer is answered, written on a worker thread (several handshakes at once cost one write), and
a failed write refuses the peer and loses nothing."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import pgraft
from pgraft import fsutil
from pgraft._impl import core
from pgraft.errors import StorageCorrupted, StorageError
from pgraft.node import identity as identity_module
from pgraft.node.identity import NodeIdentity
from pgraft.node.security import SecurityConfig
from tests.support.inprocess import Cluster, run, wait_for

INC_A = "ab" * 8
INC_B = "cd" * 8
CLUSTER = "12" * 8


class Writes:
    """Stands in for fsutil.append_at in pgraft.node.identity: records which file each append
    went to, can hold them until released, or fail them (after writing half the records, as
    a failed write can)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.fail: OSError | None = None

    def __call__(self, path: str, size: int, data: bytes) -> int:
        self.calls.append(os.path.basename(path))
        assert self.release.wait(10), "a test never released the held write"
        if self.fail is not None:
            with open(path, "r+b") as f:
                f.seek(size)
                f.write(data[: len(data) // 2])
            raise self.fail
        return fsutil.append_at(path, size, data)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Writes]:
    w = Writes()
    monkeypatch.setattr(identity_module, "append_at", w)
    yield w
    w.release.set()


def _identity_file(path: str) -> str:
    with open(os.path.join(path, "identity"), encoding="ascii") as f:
        return f.read()


def _peer_lines(path: str) -> list[str]:
    return [line for line in _identity_file(path).splitlines() if line.startswith("peer=")]


# ------------------------------------------------------------------ NodeIdentity
def test_a_first_meeting_is_in_memory_until_persisted(tmp_path: Any, writes: Writes) -> None:
    ident = NodeIdentity(str(tmp_path), 4)
    assert ident.check_peer(1, {"incarnation": INC_A, "cluster_id": CLUSTER}) is None
    assert ident.unsaved and ident.cluster_id == CLUSTER
    assert _peer_lines(str(tmp_path)) == []
    # judged by the record at once: another incarnation of node 1 is refused before any write
    refusal = ident.check_peer(1, {"incarnation": INC_B})
    assert refusal is not None and "different data directory" in refusal.message

    async def persist() -> None:
        await ident.persist()

    run(persist(), 10)
    assert not ident.unsaved
    assert writes.calls == ["identity"]  # one append of both records
    assert _identity_file(str(tmp_path)).endswith(f"cluster_id={CLUSTER}\npeer=1 {INC_A}\n")
    again = NodeIdentity(str(tmp_path), 4)
    assert again.peers == {1: INC_A} and again.cluster_id == CLUSTER
    # a peer met before costs no write
    assert ident.check_peer(1, {"incarnation": INC_A}) is None and not ident.unsaved


def test_meetings_during_a_write_share_the_next_one(tmp_path: Any, writes: Writes) -> None:
    ident = NodeIdentity(str(tmp_path), 4)
    writes.release.clear()

    async def scenario() -> None:
        ident.check_peer(1, {"incarnation": INC_A, "cluster_id": CLUSTER})
        first = asyncio.ensure_future(ident.persist())
        await wait_for(lambda: writes.calls, 5, "the first write to start")
        for peer in (2, 3, 5):  # these handshakes arrive while it is in flight
            ident.check_peer(peer, {"incarnation": f"{peer:02x}" * 8, "cluster_id": CLUSTER})
        later = [asyncio.ensure_future(ident.persist()) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert not first.done() and not any(t.done() for t in later)
        writes.release.set()
        await asyncio.gather(first, *later)

    run(scenario(), 20)
    assert writes.calls == ["identity", "identity"]  # two appends, not four
    assert sorted(NodeIdentity(str(tmp_path), 4).peers) == [1, 2, 3, 5]


def test_a_failed_write_raises_names_the_directory_and_is_retried(tmp_path: Any,
                                                                  writes: Writes) -> None:
    ident = NodeIdentity(str(tmp_path), 4)
    ident.check_peer(1, {"incarnation": INC_A})
    writes.fail = OSError(errno.ENOSPC, "No space left on device")

    async def fail_then_succeed() -> None:
        with pytest.raises(StorageError) as info:
            await ident.persist()
        assert str(tmp_path) in info.value.message and "ENOSPC" in info.value.message
        assert ident.unsaved  # nothing was lost: still to be written
        writes.fail = None
        await ident.persist()

    run(fail_then_succeed(), 10)
    # the half record the failed write left was cut before the retry
    assert not ident.unsaved and _peer_lines(str(tmp_path)) == [f"peer=1 {INC_A}"]
    assert NodeIdentity(str(tmp_path), 4).peers == {1: INC_A}


def test_a_record_cut_short_by_a_crash_is_dropped_at_start(tmp_path: Any) -> None:
    NodeIdentity(str(tmp_path), 4)
    with open(tmp_path / "identity", "a", encoding="ascii") as f:
        f.write(f"cluster_id={CLUSTER}\npeer=1 {INC_A}\npeer=2 cdcd")  # the last cut short
    ident = NodeIdentity(str(tmp_path), 4)
    assert ident.peers == {1: INC_A} and ident.cluster_id == CLUSTER
    # cut off, so that the next append starts a line of its own
    assert _identity_file(str(tmp_path)).endswith(f"peer=1 {INC_A}\n")
    ident.check_peer(2, {"incarnation": INC_B})
    run(ident.persist(), 10)
    assert NodeIdentity(str(tmp_path), 4).peers == {1: INC_A, 2: INC_B}


def test_conflicting_or_malformed_records_are_refused(tmp_path: Any) -> None:
    NodeIdentity(str(tmp_path), 4)
    body = _identity_file(str(tmp_path))
    (tmp_path / "identity").write_text(body + f"peer=1 {INC_A}\npeer=1 {INC_B}\n")
    with pytest.raises(StorageCorrupted, match="second incarnation"):
        NodeIdentity(str(tmp_path), 4)
    (tmp_path / "identity").write_text(body + "peer=1 not-hex\n")
    with pytest.raises(StorageCorrupted, match="line 3"):
        NodeIdentity(str(tmp_path), 4)


def test_the_peers_file_of_an_older_data_directory_is_read(tmp_path: Any) -> None:
    """pgraft 1.2 kept peers in a file of their own: still read; new ones go to identity."""
    NodeIdentity(str(tmp_path), 4)
    (tmp_path / "peers").write_text(f"1 {INC_A}\n")
    ident = NodeIdentity(str(tmp_path), 4)
    assert ident.peers == {1: INC_A}
    assert ident.check_peer(1, {"incarnation": INC_B}) is not None  # still the guard
    ident.check_peer(3, {"incarnation": INC_B})
    run(ident.persist(), 10)
    assert NodeIdentity(str(tmp_path), 4).peers == {1: INC_A, 3: INC_B}
    assert (tmp_path / "peers").read_text() == f"1 {INC_A}\n"  # left as it was
    (tmp_path / "identity").unlink()  # even before any identity existed
    assert NodeIdentity(str(tmp_path), 4).peers == {1: INC_A}


def test_append_at_cuts_what_a_failed_write_left(tmp_path: Any) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"line\npeer=3 ab")  # a failed append left half a record
    assert fsutil.append_at(str(path), 5, b"more\n") == 10
    assert path.read_bytes() == b"line\nmore\n"
    with pytest.raises(FileNotFoundError):
        fsutil.append_at(str(tmp_path / "missing"), 0, b"x")


# ------------------------------------------------------------- through a live node
def _hello(node_id: int, incarnation: str) -> bytes:
    return core.encode_control({"hello": "peer", "node_id": node_id, "version": 1,
                                "incarnation": incarnation})


def _read_frame(s: socket.socket) -> object:
    dec = core.FrameDecoder(1 << 20)
    while True:
        data = s.recv(65536)
        if not data:
            return None
        items = dec.feed(data)
        if items:
            return items[0]


def _handshake(port: int, node_id: int, incarnation: str) -> object:
    """A peer's hello to the node at ``port``; its answer (None if it closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        s.sendall(_hello(node_id, incarnation))
        return _read_frame(s)


def test_the_node_serves_while_a_peer_is_recorded(tmpdir_short: str, writes: Writes) -> None:
    """While a new peer's record is being written the node answers clients, the peer is not
    answered, and a frame it sends before its answer closes its connection unstepped."""

    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            loop = asyncio.get_running_loop()
            writes.calls.clear()
            writes.release.clear()
            s = socket.create_connection(("127.0.0.1", lead.port), timeout=5)
            s.settimeout(5)
            try:
                await loop.run_in_executor(None, s.sendall, _hello(99, INC_A))
                await wait_for(lambda: writes.calls, 5, "the record of peer 99 to start")
                # the loop is free: a client's write commits meanwhile
                async with await pgraft.connect(f"127.0.0.1:{lead.port}") as cl:
                    index = await asyncio.wait_for(cl.append(b"meanwhile"), 5)
                assert index > 0
                rejected = lead.metrics.frames_rejected
                term = lead.term

                def early(src: int) -> bytes:  # a higher term: stepped, it would depose
                    return core.encode_message(core.Message(core.MSG_HEARTBEAT, src,
                                                            lead.node_id, term + 5))

                await loop.run_in_executor(None, s.sendall, early(99))
                # and one that sends its hello and a frame in one write
                with socket.create_connection(("127.0.0.1", lead.port), timeout=5) as s2:
                    s2.settimeout(5)
                    await loop.run_in_executor(None, s2.sendall,
                                               _hello(97, INC_B) + early(97))
                    await wait_for(lambda: lead.metrics.frames_rejected >= rejected + 2, 5,
                                   "both early frames to be refused")
                    writes.release.set()
                    for conn in (s, s2):
                        assert await loop.run_in_executor(None, _read_frame, conn) is None
                assert lead.is_leader and lead.term == term  # neither frame was stepped
            finally:
                writes.release.set()
                s.close()
            # recorded all the same; a proper handshake of the same incarnation is answered
            s = socket.create_connection(("127.0.0.1", lead.port), timeout=5)
            s.settimeout(5)
            try:
                await loop.run_in_executor(None, s.sendall, _hello(99, INC_A))
                reply = await loop.run_in_executor(None, _read_frame, s)
                assert isinstance(reply, dict) and reply["hello"] == "ok"
            finally:
                s.close()
            assert lead.identity.peers.get(99) == INC_A
        finally:
            writes.release.set()
            await c.stop_all()

    run(scenario(), 60)


def test_a_peer_is_refused_while_its_record_cannot_be_written(tmpdir_short: str,
                                                              writes: Writes) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3)
        try:
            await c.start_all()
            lead = await c.wait_leader()
            loop = asyncio.get_running_loop()
            writes.fail = OSError(errno.EIO, "Input/output error")

            reply = await loop.run_in_executor(None, _handshake, lead.port, 98, INC_B)
            assert isinstance(reply, dict) and reply["hello"] == "error", reply
            assert reply["error"]["code"] == "storage_error"
            assert "EIO" in reply["error"]["message"]
            assert lead.is_leader
            writes.fail = None
            reply = await loop.run_in_executor(None, _handshake, lead.port, 98, INC_B)
            assert isinstance(reply, dict) and reply["hello"] == "ok", reply
            assert f"peer=98 {INC_B}" in _peer_lines(lead.storage.path)
        finally:
            await c.stop_all()

    run(scenario(), 60)


def test_a_record_stalled_past_the_handshake_timeout_refuses_the_peer(
        tmpdir_short: str, writes: Writes) -> None:
    async def scenario() -> None:
        c = Cluster(tmpdir_short, 3, security=SecurityConfig(handshake_timeout=1.0))
        try:
            await c.start_all()
            lead = await c.wait_leader()
            loop = asyncio.get_running_loop()
            writes.release.clear()  # the disk stalls

            reply = await loop.run_in_executor(None, _handshake, lead.port, 96, INC_A)
            assert isinstance(reply, dict) and reply["hello"] == "error", reply
            assert reply["error"]["code"] == "storage_error"
            assert "took over 1s" in reply["error"]["message"]
            writes.release.set()
            assert lead.is_leader
        finally:
            writes.release.set()
            await c.stop_all()

    run(scenario(), 60)
