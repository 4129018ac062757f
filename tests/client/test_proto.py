"""ClientProtocol alone: bytes in, events out -- no socket, no event loop, no clock."""

from __future__ import annotations

from typing import Any

import pytest

from pgraft._impl import core
from pgraft.auth import ClientAuth, server_challenge
from pgraft.client._proto import (
    WRITE_OPS,
    ClientProtocol,
    Closed,
    Event,
    Failed,
    Ready,
    Reply,
    Send,
    interrupted,
    wait_limit,
)
from pgraft.errors import (
    AuthenticationFailed,
    CommitTimeout,
    ConnectionFailed,
    Interrupted,
    InterruptedWrite,
    NotLeaderError,
    OutcomeUnknown,
    PayloadTooLarge,
    ProtocolError,
    Timeout,
    Unavailable,
)
from pgraft.protocol import PROTOCOL_VERSION, encode_control

HELLO_OK = encode_control({"hello": "ok", "node_id": 7, "version": PROTOCOL_VERSION})
SECRET = b"0123456789abcdef0123456789abcdef"


def decode(data: bytes) -> list[Any]:
    return list(core.FrameDecoder(1 << 20).feed(data))


def ready(**options: Any) -> ClientProtocol:
    proto = ClientProtocol("node-a:7001", **options)
    proto.hello()
    (event,) = proto.receive_data(HELLO_OK)
    assert isinstance(event, Ready) and event.node_id == 7 and proto.ready
    return proto


def reply(rid: int, result: Any) -> bytes:
    return encode_control({"id": rid, "ok": True, "result": result})


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


# ------------------------------------------------------------------- handshake
def test_hello_and_its_answer() -> None:
    proto = ClientProtocol("node-a:7001")
    assert not proto.ready and not proto.closed
    assert decode(proto.hello()) == [{"hello": "client", "version": PROTOCOL_VERSION}]
    events = proto.receive_data(HELLO_OK)
    assert kinds(events) == ["Ready"] and events[0].node_id == 7  # type: ignore[attr-defined]
    assert proto.ready and proto.node_id == 7
    with pytest.raises(RuntimeError):
        proto.hello()  # once


def test_hello_answer_split_byte_by_byte() -> None:
    proto = ClientProtocol("node-a:7001")
    proto.hello()
    events: list[Event] = []
    for i in range(len(HELLO_OK)):
        events += proto.receive_data(HELLO_OK[i:i + 1])
        assert proto.ready == (i == len(HELLO_OK) - 1)
    assert kinds(events) == ["Ready"]


def test_no_request_before_the_handshake() -> None:
    proto = ClientProtocol("node-a:7001")
    proto.hello()
    with pytest.raises(RuntimeError, match="before the handshake"):
        proto.send_request("get_term", {}, 1.0)


def test_handshake_refused_is_rebuilt() -> None:
    proto = ClientProtocol("node-a:7001")
    proto.hello()
    refused = Unavailable("node is stopping", hint="wait")
    events = proto.receive_data(encode_control({"hello": "error", "error": refused.to_wire()}))
    assert kinds(events) == ["Closed"]
    err = events[0].error  # type: ignore[attr-defined]
    assert type(err) is Unavailable and err.message == "node is stopping" and err.hint == "wait"
    assert proto.closed and isinstance(proto.failure(), Unavailable)
    assert proto.failure() is not proto.failure()  # a fresh error each time it is raised


@pytest.mark.parametrize("answer, message", [
    ({"hello": "ok", "node_id": 7, "version": 99}, "version 99"),
    ({"something": "else"}, "did not answer the pgraft handshake"),
    (["HTTP/1.1"], "did not answer the pgraft handshake"),
])
def test_bad_handshake_answers(answer: Any, message: str) -> None:
    proto = ClientProtocol("node-a:7001")
    proto.hello()
    events = proto.receive_data(encode_control(answer))
    assert kinds(events) == ["Closed"]
    assert isinstance(events[0].error, ProtocolError)  # type: ignore[attr-defined]
    assert message in events[0].error.message  # type: ignore[attr-defined]


def test_connection_lost_during_the_handshake() -> None:
    proto = ClientProtocol("node-a:7001")
    proto.hello()
    events = proto.receive_data(HELLO_OK[:3]) + proto.connection_lost()
    assert kinds(events) == ["Closed"]
    assert "during the handshake" in events[0].error.message  # type: ignore[attr-defined]


# ---------------------------------------------------------------- authentication
def _node_side(hello_frame: bytes, secret: bytes) -> Any:
    (hello,) = decode(hello_frame)
    return server_challenge(secret, hello, 7)


def test_cluster_secret_proof_both_ways() -> None:
    proto = ClientProtocol("node-a:7001", secret=SECRET)
    challenge = _node_side(proto.hello(), SECRET)
    events = proto.receive_data(encode_control(challenge.challenge(PROTOCOL_VERSION)))
    assert kinds(events) == ["Send"]
    challenge.verify(decode(events[0].data)[0])  # type: ignore[attr-defined]
    assert not proto.ready
    assert kinds(proto.receive_data(HELLO_OK)) == ["Ready"]


def test_node_with_another_secret_is_refused() -> None:
    proto = ClientProtocol("node-a:7001", secret=SECRET)
    challenge = _node_side(proto.hello(), b"another secret of the cluster!!")
    events = proto.receive_data(encode_control(challenge.challenge(PROTOCOL_VERSION)))
    assert kinds(events) == ["Closed"]
    assert isinstance(events[0].error, AuthenticationFailed)  # type: ignore[attr-defined]


def test_node_without_a_secret_is_refused_by_a_client_with_one() -> None:
    proto = ClientProtocol("node-a:7001", secret=SECRET)
    proto.hello()
    events = proto.receive_data(HELLO_OK)
    assert kinds(events) == ["Closed"]
    assert "without proving" in events[0].error.message  # type: ignore[attr-defined]
    assert isinstance(ClientAuth(SECRET, "client").hello_fields()["nonce"], bytes)


# -------------------------------------------------------------------- requests
def test_requests_get_increasing_ids_and_carry_their_timeout() -> None:
    proto = ready()
    rid1, frame1 = proto.send_request("get_term", {}, 2.5)
    rid2, frame2 = proto.send_request("append", {"data": b"x"}, 1.0)
    assert (rid1, rid2) == (1, 2) and proto.in_flight == 2
    assert decode(frame1 + frame2) == [
        {"id": 1, "op": "get_term", "args": {"timeout": 2.5}},
        {"id": 2, "op": "append", "args": {"data": b"x", "timeout": 1.0}}]


def test_reply_split_across_feeds() -> None:
    proto = ready()
    rid, _ = proto.send_request("status", {}, 1.0)
    data = reply(rid, {"node_id": 7, "role": "leader", "blob": b"\x00" * 300})
    assert proto.receive_data(data[:2]) == []
    assert proto.receive_data(data[2:100]) == []
    (event,) = proto.receive_data(data[100:])
    assert isinstance(event, Reply) and event.rid == rid
    assert event.result["role"] == "leader" and proto.in_flight == 0


def test_replies_out_of_order_and_in_one_feed() -> None:
    proto = ready()
    rids = [proto.send_request("append", {"data": bytes([i])}, 1.0)[0] for i in range(3)]
    events = proto.receive_data(reply(rids[2], 30) + reply(rids[0], 10) + reply(rids[1], 20))
    assert [(e.rid, e.result) for e in events] == [  # type: ignore[attr-defined]
        (rids[2], 30), (rids[0], 10), (rids[1], 20)]


def test_error_reply_is_rebuilt_with_its_class_and_hint() -> None:
    proto = ready()
    rid, _ = proto.send_request("add_node", {"node_id": 4}, 1.0)
    err = NotLeaderError("cannot add node: not the leader", node_id=7, leader_id=2,
                         leader_address="10.0.0.2:7001")
    (event,) = proto.receive_data(
        encode_control({"id": rid, "ok": False, "error": err.to_wire()}))
    assert isinstance(event, Failed) and event.rid == rid
    rebuilt = event.error
    assert type(rebuilt) is NotLeaderError
    assert rebuilt.leader_id == 2 and rebuilt.leader_address == "10.0.0.2:7001"
    assert rebuilt.hint == err.hint and "node 2 at 10.0.0.2:7001" in rebuilt.hint
    assert proto.ready  # an error answer leaves the connection usable


def test_failed_answer_without_an_error_fails_only_that_call() -> None:
    proto = ready()
    rid, _ = proto.send_request("get_term", {}, 1.0)
    (event,) = proto.receive_data(encode_control({"id": rid, "ok": False, "error": "text"}))
    assert isinstance(event, Failed) and isinstance(event.error, ProtocolError)
    assert proto.ready


def test_answer_to_an_unknown_id_is_dropped() -> None:
    proto = ready()
    assert proto.receive_data(reply(99, 1)) == []
    assert proto.ready


def test_oversized_request_registers_nothing() -> None:
    proto = ready(max_frame_size=100)
    with pytest.raises(PayloadTooLarge, match="exceeds the frame limit of 100 bytes"):
        proto.send_request("append", {"data": b"x" * 200}, 1.0)
    assert proto.in_flight == 0 and proto.ready


# -------------------------------------------------------------- timeouts
def test_expired_read_is_a_timeout_and_a_late_answer_is_ignored() -> None:
    proto = ready()
    rid, _ = proto.send_request("kv_get", {"key": "k"}, 0.5)
    failed = proto.expire(rid, 0.5)
    assert failed is not None and type(failed.error) is Timeout
    assert "kv_get got no answer from node node-a:7001 within 0.5s" in failed.error.message
    assert proto.expire(rid, 0.5) is None  # once
    assert proto.receive_data(reply(rid, "late")) == []
    assert proto.ready


def test_expired_write_is_a_commit_timeout() -> None:
    proto = ready()
    for op in sorted(WRITE_OPS):
        rid, _ = proto.send_request(op, {}, 2.0)
        failed = proto.expire(rid, 2.0)
        assert failed is not None and type(failed.error) is CommitTimeout, op
        assert isinstance(failed.error, OutcomeUnknown) and isinstance(failed.error, Timeout)
        assert "outcome is unknown" in failed.error.message


def test_interrupted_read_changes_nothing_and_a_late_answer_is_ignored() -> None:
    proto = ready()
    rid, _ = proto.send_request("kv_get", {"key": "k"}, 0.5)
    failed = proto.interrupt(rid)
    assert failed is not None and type(failed.error) is Interrupted
    assert failed.error.message == ("kv_get: the wait for the answer of node node-a:7001 was "
                                    "interrupted by the caller")
    assert proto.interrupt(rid) is None and proto.expire(rid, 0.5) is None  # once
    assert proto.receive_data(reply(rid, "late")) == []
    assert proto.ready and proto.in_flight == 0


def test_interrupted_write_has_an_unknown_outcome_once_sent() -> None:
    proto = ready()
    for op in sorted(WRITE_OPS):
        rid, _ = proto.send_request(op, {}, 2.0)
        failed = proto.interrupt(rid)
        assert failed is not None and type(failed.error) is InterruptedWrite, op
        assert isinstance(failed.error, OutcomeUnknown | Interrupted)
        assert "outcome is unknown" in failed.error.message
        assert failed.error.sqlstate == "40003"
        # not sent (or not all of it): nothing can have happened
        unsent = interrupted(op, "node-a:7001", sent=False)
        assert type(unsent) is Interrupted and "nothing was changed" in unsent.message
    assert "while connecting" in interrupted("kv_put", "x", sent=False, connecting=True).message


def test_answered_call_does_not_expire() -> None:
    proto = ready()
    rid, _ = proto.send_request("get_term", {}, 1.0)
    proto.receive_data(reply(rid, 3))
    assert proto.expire(rid, 1.0) is None and proto.interrupt(rid) is None


def test_forgotten_call_ignores_its_answer() -> None:
    proto = ready()
    rid, _ = proto.send_request("get_term", {}, 1.0)
    proto.forget(rid)
    assert proto.in_flight == 0 and proto.receive_data(reply(rid, 3)) == []


def test_wait_limit_gives_the_node_s_answer_a_moment() -> None:
    assert wait_limit(0.2) == pytest.approx(0.27)
    assert wait_limit(10.0) == pytest.approx(11.0)
    assert wait_limit(100.0) == pytest.approx(101.0)


# ------------------------------------------------------------ losing the connection
def test_lost_connection_fails_writes_as_unknown_and_reads_as_failed() -> None:
    proto = ready()
    read, _ = proto.send_request("kv_get", {"key": "k"}, 1.0)
    write, _ = proto.send_request("kv_put", {"key": "k", "value": "v"}, 1.0)
    events = proto.connection_lost(ConnectionResetError("reset"))
    assert kinds(events) == ["Failed", "Failed", "Closed"]  # calls first, then the connection
    by_rid = {e.rid: e.error for e in events if isinstance(e, Failed)}
    assert type(by_rid[read]) is ConnectionFailed
    assert "closed by the node (reset)" in by_rid[read].message
    assert "outcome of calls in flight is unknown" in by_rid[read].message
    assert type(by_rid[write]) is OutcomeUnknown
    assert "the write was sent, so it may have taken effect" in by_rid[write].message
    assert by_rid[write].hint
    assert proto.closed and proto.in_flight == 0
    with pytest.raises(ConnectionFailed, match="closed by the node"):
        proto.send_request("get_term", {}, 1.0)
    assert proto.connection_lost() == [] and proto.receive_data(reply(read, 1)) == []


def test_malformed_frame_fails_everything_in_flight() -> None:
    proto = ready()
    rid, _ = proto.send_request("append", {"data": b"x"}, 1.0)
    events = proto.receive_data(b"\xff\xff\xff\xff\x02")
    assert kinds(events) == ["Failed", "Closed"]
    assert type(events[0].error) is OutcomeUnknown  # type: ignore[attr-defined]
    assert "malformed frame" in events[0].error.message  # type: ignore[attr-defined]
    assert isinstance(events[1].error, ProtocolError)  # type: ignore[attr-defined]
    with pytest.raises(ProtocolError):
        proto.send_request("get_term", {}, 1.0)


@pytest.mark.parametrize("response", [["not", "a", "dict"], {"id": "1", "ok": True},
                                      {"id": 1}, {"id": True, "ok": True}])
def test_response_that_is_not_a_response_drops_the_connection(response: Any) -> None:
    proto = ready()
    rid, _ = proto.send_request("get_term", {}, 1.0)
    events = proto.receive_data(encode_control(response))
    assert kinds(events) == ["Failed", "Closed"]
    assert isinstance(events[0].error, ProtocolError)  # type: ignore[attr-defined]
    assert "not a pgraft response" in events[0].error.message  # type: ignore[attr-defined]


def test_close_fails_calls_in_flight_and_later_calls() -> None:
    proto = ready()
    rid, _ = proto.send_request("append", {"data": b"x"}, 1.0)
    events = proto.close()
    assert kinds(events) == ["Failed", "Closed"]
    assert type(events[0].error) is OutcomeUnknown  # type: ignore[attr-defined]
    assert "client closed" in events[0].error.message  # type: ignore[attr-defined]
    with pytest.raises(ConnectionFailed, match="is closed"):
        proto.send_request("get_term", {}, 1.0)


def test_events_show_their_fields() -> None:
    assert repr(Send(b"x")) == "Send(data=b'x')"
    assert repr(Reply(3, True)) == "Reply(rid=3, result=True)"
    assert repr(Closed(ProtocolError("m"))).startswith("Closed(error=")
