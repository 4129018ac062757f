"""pgraft.protocol: the one CONTROL encoder and the node's prebuilt OK-reply frames decode as
the codec expects, on both twins of the codec."""

from __future__ import annotations

from typing import Any

import pytest

from pgraft import _core, _core_py
from pgraft.protocol import (
    FRAME_CONTROL,
    MAX_FRAME_SIZE,
    client_hello,
    encode_control,
    encode_error,
    encode_result,
)

OBJECTS: list[Any] = [
    {"hello": "client", "version": 1},
    {"id": 7, "op": "append", "args": {"data": b"\x00\xff" * 40, "timeout": 2.5}},
    {"id": 2**64 - 1, "ok": True, "result": [1, "two", None, {"k": b"v"}]},
    "x", 0, [],
]


@pytest.mark.parametrize("codec", [_core, _core_py], ids=["compiled", "pure"])
def test_encoder_matches_the_codec(codec: Any) -> None:
    for obj in OBJECTS:
        frame = encode_control(obj)
        assert frame == codec.encode_control(obj)
        assert frame[4] == FRAME_CONTROL == codec.FRAME_CONTROL
        assert codec.FrameDecoder(MAX_FRAME_SIZE).feed(frame) == [obj]


@pytest.mark.parametrize("codec", [_core, _core_py], ids=["compiled", "pure"])
@pytest.mark.parametrize("rid, result", [
    (1, 0), (1, 5), (2**64 - 1, 2**64 - 1), (12345, True),  # the prebuilt fast paths
    (3, False), (3, None), (3, -1), (-1, 5), (3, "text"), (3, {"a": 1}),
])
def test_ok_replies_decode_to_the_same_answer(codec: Any, rid: int, result: Any) -> None:
    (decoded,) = codec.FrameDecoder(MAX_FRAME_SIZE).feed(encode_result(rid, result))
    assert decoded == {"id": rid, "ok": True, "result": result}
    assert type(decoded["result"]) is type(result)


def test_error_reply_and_hello() -> None:
    (decoded,) = _core.FrameDecoder(MAX_FRAME_SIZE).feed(encode_error(4, {"code": "x"}))
    assert decoded == {"id": 4, "ok": False, "error": {"code": "x"}}
    assert client_hello(auth="hmac-sha256") == {"hello": "client", "version": 1,
                                                 "auth": "hmac-sha256"}
    assert MAX_FRAME_SIZE == _core.DEFAULT_MAX_FRAME == _core_py.DEFAULT_MAX_FRAME
