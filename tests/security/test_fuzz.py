"""Hypothesis fuzzing (issue 9): the frame decoder (both twins, differentially), the handshake
and the client protocol against a live node, log recovery from arbitrary bytes, and snapshot
parsing. Each must end in a result or its clean error: no crash, hang or unbounded allocation.

Bounded for ``make test``; ``make fuzz`` sets PGRAFT_FUZZ_EXAMPLES (and a longer deadline)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pgraft
from pgraft import _core, _core_py, _log, _log_py
from pgraft.auth import ClientAuth, load_secret
from pgraft.errors import DecodeError, InvalidArgument, StorageError
from pgraft.node.security import SecurityConfig
from tests.support.inprocess import Cluster
from tests.support.security import write_secret

SCALE = int(os.environ.get("PGRAFT_FUZZ_EXAMPLES", "0"))


def fuzz(n: int) -> Any:
    """Settings of one fuzz target: ``n`` examples under ``make test``, PGRAFT_FUZZ_EXAMPLES
    (``make fuzz``) otherwise."""
    return settings(max_examples=SCALE or n, deadline=None, derandomize=not SCALE,
                    suppress_health_check=list(HealthCheck), database=None)


# ------------------------------------------------------------------------ frame decoder
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=8) | st.integers(0, 10), inner, max_size=4), max_leaves=12)


@st.composite
def streams(draw: Any) -> tuple[bytes, list[int]]:
    """A byte stream of valid frames, garbage and mutations, and the points to split it at."""
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["control", "raw", "header", "garbage"]))
        if kind == "control":
            parts.append(_core_py.encode_control(draw(msgpack_values)))
        elif kind == "raw":
            body = draw(st.binary(max_size=120))
            parts.append(struct.pack("<IB", len(body) + 1, draw(st.sampled_from([1, 2, 3])))
                         + body)
        elif kind == "header":
            parts.append(struct.pack("<I", draw(st.integers(0, 2**32 - 1))))
        else:
            parts.append(draw(st.binary(max_size=80)))
    data = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 3))):
        if data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return bytes(data), cuts


def _decode(core: Any, data: bytes, cuts: list[int]) -> tuple[list[Any], str | None]:
    dec = core.FrameDecoder(4096)
    out: list[Any] = []
    prev = 0
    try:
        for cut in [*cuts, len(data)]:
            out.extend(dec.feed(data[prev:cut]))
            prev = cut
    except DecodeError as exc:
        # once broken, the decoder stays broken
        with pytest.raises(DecodeError):
            dec.feed(b"\x01")
        return out, type(exc).__name__
    assert dec.pending_bytes <= 4 + 4096
    return out, None


def _shape(items: list[Any]) -> list[Any]:
    return [("msg", i.type, i.src, i.dst, i.term) if isinstance(i, (_core.Message,
                                                                    _core_py.Message))
            else ("ctl", repr(i)) for i in items]


@fuzz(400)
@given(streams())
def test_frame_decoder_twins_agree_on_any_bytes(stream: tuple[bytes, list[int]]) -> None:
    data, cuts = stream
    compiled, err_c = _decode(_core, data, cuts)
    pure, err_p = _decode(_core_py, data, cuts)
    assert err_c == err_p
    assert _shape(compiled) == _shape(pure)


# ------------------------------------------------------------------------ a live node
class LiveNode:
    """One single-node cluster with a cluster secret, on a uvloop loop in a thread."""

    def __init__(self) -> None:
        self.base = tempfile.mkdtemp(prefix="pgs-fz-")
        self.secret_file = write_secret(Path(self.base) / "secret")
        self.secret = load_secret(self.secret_file)
        self.loop = uvloop.new_event_loop()
        self.ready = threading.Event()
        self.stop_event: asyncio.Event | None = None
        self.port = 0
        self.sock = ""
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.main(),),
                                       daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the fuzzed node did not start"
        self.client = pgraft.Client(self.sock, timeout=5)

    async def main(self) -> None:
        self.stop_event = asyncio.Event()
        c = Cluster(self.base, 1, security=SecurityConfig(secret_file=self.secret_file,
                                                          handshake_timeout=2.0))
        await c.start_all()
        lead = await c.wait_leader()
        self.port, self.sock = lead.port, os.path.join(c.data_dir(1), "node.sock")
        self.ready.set()
        await self.stop_event.wait()
        await c.stop_all()

    def serving(self) -> None:
        assert self.client.is_leader()

    def close(self) -> None:
        self.client.close()
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)
        self.loop.close()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveNode]:
    node = LiveNode()
    try:
        yield node
    finally:
        node.close()


def _exchange(port: int | None, path: str | None, data: bytes, *, wait: float = 5.0
              ) -> list[Any]:
    """Send ``data``, close our side, read until the node closes; returns its frames. Fails if
    the node neither answers nor closes within ``wait`` seconds (a hang)."""
    if path is not None:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
    else:
        s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(wait)
    dec = _core_py.FrameDecoder()
    frames: list[Any] = []
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the node closed first
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError("the node neither answered nor closed") from None
            if not chunk:
                break
            try:
                frames.extend(dec.feed(chunk))
            except DecodeError as exc:
                raise AssertionError(f"the node sent a malformed frame: {exc}") from None
    finally:
        s.close()
    return frames


hellos = st.fixed_dictionaries(
    {"hello": st.sampled_from(["peer", "client", "challenge", "ok", "error", ""]) | st.text(
        max_size=5) | msgpack_values},
    optional={"version": st.sampled_from([1, 0, 2, -1, "1", None]) | msgpack_values,
              "node_id": st.integers(-5, 2**64 - 1) | msgpack_values,
              "auth": st.sampled_from(["hmac-sha256", "none", b"x"]),
              "nonce": st.binary(min_size=0, max_size=40) | st.binary(min_size=32,
                                                                      max_size=32),
              "address": msgpack_values, "port": st.integers(-1, 70000)})
proofs = st.fixed_dictionaries({"auth": st.sampled_from(["proof", "x"]) | msgpack_values},
                               optional={"proof": st.binary(max_size=40) | msgpack_values})


@fuzz(120)
@given(hello=hellos | msgpack_values, second=st.none() | proofs | msgpack_values,
       junk=st.binary(max_size=60), answer=st.booleans(), unix=st.booleans())
def test_handshake_fuzz(live: LiveNode, hello: Any, second: Any, junk: bytes, answer: bool,
                        unix: bool) -> None:
    data = _core_py.encode_control(hello)
    if second is not None:
        data += _core_py.encode_control(second)
    data += junk
    frames = _exchange(None if unix else live.port, live.sock if unix else None, data)
    for f in frames:
        assert isinstance(f, dict) and f.get("hello") in ("ok", "error", "challenge")
        if not unix and f.get("hello") == "ok":
            raise AssertionError(f"TCP hello accepted without the secret: {hello!r}")
    # a genuine hello whose proof is garbled is refused too
    if answer and not unix and isinstance(hello, dict):
        auth = ClientAuth(b"not the secret at all", "client")
        frames = _exchange(live.port, None, _core_py.encode_control(
            {"hello": "client", "version": 1, **auth.hello_fields()})
            + _core_py.encode_control(second if second is not None else hello))
        assert [f.get("hello") for f in frames] in (["challenge", "error"], ["challenge"])
    live.serving()


ops = st.sampled_from(["append", "kv_put", "kv_get", "kv_delete", "kv_list_keys", "get_nodes",
                       "get_leader", "get_term", "is_leader", "status", "log_stats",
                       "get_entry", "add_node", "bogus"]) | msgpack_values
requests = st.fixed_dictionaries(
    {"id": st.integers(-1, 2**64 - 1) | msgpack_values, "op": ops},
    optional={"args": st.dictionaries(
        st.sampled_from(["data", "key", "value", "index", "node_id", "address", "port",
                         "timeout"]) | st.text(max_size=4),
        msgpack_values | st.floats(0.001, 2.0) | st.integers(-3, 2**64 - 1), max_size=4)
        | msgpack_values})


@fuzz(120)
@given(reqs=st.lists(requests | msgpack_values, min_size=1, max_size=6))
def test_client_protocol_fuzz(live: LiveNode, reqs: list[Any]) -> None:
    data = _core_py.encode_control({"hello": "client", "version": 1})
    data += b"".join(_core_py.encode_control(r) for r in reqs)
    frames = _exchange(None, live.sock, data, wait=10.0)
    assert frames and frames[0]["hello"] == "ok"
    for f in frames[1:]:
        assert isinstance(f, dict) and "id" in f and isinstance(f.get("ok"), bool)
        if not f["ok"]:
            assert isinstance(f["error"], dict) and f["error"]["code"]
            assert f["error"]["code"] != "internal", f  # a shape no handler expected
    live.serving()


# ------------------------------------------------------------------------ log recovery
def _good_log(log: Any, d: Path) -> None:
    E = (_core if log is _log else _core_py).Entry
    with log.Log(d, segment_size=4096) as lg:
        lg.append([E(i, 1 + i // 4, 0, bytes([i % 250 + 1]) * (i * 13 % 200))
                   for i in range(1, 30)])
        lg.sync()


@fuzz(150)
@given(twin=st.sampled_from(["compiled", "pure"]), mode=st.sampled_from(
    ["random", "flip", "cut", "zero"]), seg=st.integers(0, 10), at=st.integers(0, 1 << 16),
    junk=st.binary(min_size=1, max_size=5000), span=st.integers(1, 64))
def test_log_recovery_from_arbitrary_bytes(twin: str, mode: str, seg: int, at: int,
                                           junk: bytes, span: int) -> None:
    log = _log if twin == "compiled" else _log_py
    d = Path(tempfile.mkdtemp(prefix="pgs-log-"))
    try:
        _good_log(log, d)
        segs = sorted(d.glob("*.seg"))
        target = segs[seg % len(segs)]
        raw = bytearray(target.read_bytes())
        pos = at % max(1, len(raw))
        if mode == "random":
            raw = bytearray(junk) + raw[len(junk):] if at % 2 else raw[:pos] + junk
        elif mode == "flip":
            for k in range(span):
                if pos + k < len(raw):
                    raw[pos + k] ^= junk[k % len(junk)] or 1
        elif mode == "cut":
            raw = raw[:pos]
        else:
            raw[pos:pos + span * 8] = bytes(len(raw[pos:pos + span * 8]))
        target.write_bytes(bytes(raw))
        try:
            lg = log.Log(d, segment_size=4096)
        except (StorageError, InvalidArgument):
            return  # named, clean refusal
        with lg:
            first, last = lg.first_index, lg.last_index
            assert last - first < 64
            if last >= first:
                for e in lg.entries(first, last + 1):
                    assert bytes(e.data) == bytes([e.index % 250 + 1]) * (e.index * 13 % 200)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------ snapshots
@fuzz(200)
@given(junk=st.binary(max_size=400), pos=st.integers(0, 1000), mode=st.sampled_from(
    ["random", "flip", "cut"]))
def test_snapshot_parsing_of_arbitrary_bytes(junk: bytes, pos: int, mode: str) -> None:
    snapfile = pytest.importorskip("pgraft.node.snapfile")
    snapxfer = pytest.importorskip("pgraft.node.snapxfer")
    from pgraft.raft.types import SnapshotMeta

    d = tempfile.mkdtemp(prefix="pgs-snap-")
    try:
        store = snapfile.SnapshotStore(d)
        good = _good_snapshot(store, SnapshotMeta)
        raw = bytearray(Path(good).read_bytes())
        if mode == "random":
            raw = bytearray(junk)
        elif mode == "flip":
            for k, b in enumerate(junk[:16]):
                raw[(pos + k) % len(raw)] ^= b or 1
        else:
            raw = raw[:pos % (len(raw) + 1)]
        Path(good).write_bytes(bytes(raw))
        try:
            f, data = snapfile.read_snapshot_file(good, verify=True)
        except StorageError:
            pass
        else:
            assert data is not None and f.meta.index >= 1
        for decode in (snapxfer.decode_chunk, snapxfer.decode_ack):
            with contextlib.suppress(ValueError):
                decode(bytes(junk))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _good_snapshot(store: Any, meta_cls: Any) -> str:
    from pgraft.raft.membership import VOTER, Member, Membership
    from pgraft.state import AppliedState

    state = AppliedState()
    members = Membership({1: Member("127.0.0.1", 7001, VOTER)})
    f = store.write(meta_cls(5, 2, members), state.snapshot())
    return str(f.path)
