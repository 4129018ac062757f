"""How a node writes its answers to a client connection (pgraft.node.listener.ClientConnection)."""

from __future__ import annotations

import asyncio
from typing import Any

from pgraft._impl import core
from pgraft.node.listener import ClientConnection
from pgraft.protocol import WRITE_BATCH_FRAMES


class _RecordingTransport:
    """Keeps what is written and how many frames each write carried."""

    def __init__(self) -> None:
        self.writes: list[int] = []
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.writes.append(1)
        self.data += data

    def writelines(self, frames: list[bytes]) -> None:
        self.writes.append(len(frames))
        for frame in frames:
            self.data += frame

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else None


def test_answers_of_one_iteration_go_out_in_runs_of_write_batch_frames() -> None:
    async def main() -> None:
        transport = _RecordingTransport()
        conn = ClientConnection(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        run_ = WRITE_BATCH_FRAMES
        for rid in range(1, 101):
            conn.send_result(rid, rid * 10)
        # The first answer at once, then a run each time WRITE_BATCH_FRAMES have gathered: the
        # client starts on them while the node makes the rest.
        assert transport.writes == [1, run_, run_, run_]
        await asyncio.sleep(0)  # the iteration ends: the rest goes out
        assert transport.writes == [1, run_, run_, run_, 99 - 3 * run_]
        answers = core.FrameDecoder(1 << 20).feed(bytes(transport.data))
        assert [(a["id"], a["ok"], a["result"]) for a in answers] == [
            (rid, True, rid * 10) for rid in range(1, 101)]
        # A lone answer of a later iteration is written at once, with nothing left behind.
        conn.send_result(101, 7)
        await asyncio.sleep(0)
        assert transport.writes[-1] == 1 and sum(transport.writes) == 101
    asyncio.run(main())
