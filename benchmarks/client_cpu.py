"""CPU work of the asyncio client alone per pipelined ``append``, without a cluster.

The node is replaced by an in-process fake transport that answers every request with the bytes
a leader sends (``{"id", "ok": true, "result": INT}`` in its prebuilt form), a loop iteration
after the client's batched write, ``--chunk`` answers per ``data_received`` (one chunk per loop
iteration, as socket reads arrive). The load is ``benchmarks/cluster.py``'s: ``--in-flight``
coroutines calling ``append(64 bytes)`` on one client, uvloop. Everything but the client costs
the same whichever tree's client runs, and nothing waits on another process::

    python benchmarks/client_cpu.py --tree ../wt-before --tree . --count 200000 --repeat 5

Each tree runs in its own subprocess (``--tree`` may be given several times; the runs are
interleaved). Reported: process CPU microseconds per append, minimum and median of
``--repeat`` timed rounds. CPU time still varies with the load on a shared machine; instruction
counts do not. Run the child under callgrind with two counts; the difference of the totals over
the difference of the appends (each run also warms up with max(count / 10, 4 x in flight)) is
instructions per append, reproducible to a few instructions with a fixed hash seed::

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python benchmarks/client_cpu.py --child TREE --count 10000 --repeat 1   # and 30000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
PAYLOAD = b"x" * 64


def child(tree: str, count: int, repeat: int, in_flight: int, chunk: int,
          profile: str | None, timeout: float) -> dict[str, Any]:
    sys.path.insert(0, tree)
    import asyncio
    import struct
    import time

    import msgpack
    import uvloop

    import pgraft

    head = struct.Struct("<IB")
    ok_int = struct.Struct(">10sQ12sQ")
    ok_head = head.pack(1 + 3 + 9 + 3 + 1 + 7 + 9 + 1, 2) + b"\x83\xa2id\xcf"
    ok_mid = b"\xa2ok\xc3\xa6result\xcf"

    def control(obj: Any) -> bytes:
        body = msgpack.packb(obj, use_bin_type=True)
        return head.pack(len(body) + 1, 2) + body

    class FakeNode:
        """An asyncio.Transport as far as the client uses one, answering like a leader."""

        def __init__(self, loop: asyncio.AbstractEventLoop, protocol: Any) -> None:
            self.loop = loop
            self.protocol = protocol
            self.inbox = bytearray()
            self.outbox: list[bytes] = []
            self.scheduled = False
            self.index = 0
            self.closed = False

        def write(self, data: bytes) -> None:
            self.inbox += data
            self._schedule()

        def writelines(self, lines: Any) -> None:
            for data in lines:
                self.inbox += data
            self._schedule()

        def _schedule(self) -> None:
            if not self.scheduled:
                self.scheduled = True
                self.loop.call_soon(self.loop.call_soon, self._answer)

        def _answer(self) -> None:
            self.scheduled = False
            buf, pos = self.inbox, 0
            while len(buf) - pos >= 5:
                length, _ = head.unpack_from(buf, pos)
                obj = msgpack.unpackb(bytes(buf[pos + 5:pos + 4 + length]))
                pos += 4 + length
                if "hello" in obj:
                    self.outbox.append(control({"hello": "ok", "version": 1, "node_id": 1}))
                else:
                    self.index += 1
                    self.outbox.append(ok_int.pack(ok_head, obj["id"], ok_mid, self.index))
            del buf[:pos]
            self._deliver()

        def _deliver(self) -> None:
            if self.closed or not self.outbox:
                return
            part, self.outbox = self.outbox[:chunk], self.outbox[chunk:]
            self.protocol.data_received(b"".join(part))
            if self.outbox:
                self.loop.call_soon(self._deliver)

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return default

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            if not self.closed:
                self.closed = True
                self.loop.call_soon(self.protocol.connection_lost, None)

        abort = close

    async def fake_dial(self: Any) -> None:
        protocol = getattr(self, "_io", None) or self._protocol  # after / before the split
        self._transport = FakeNode(self._loop, protocol)
        protocol.connection_made(self._transport)

    async def load(client: Any, total: int) -> None:
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await client.append(PAYLOAD)

        await asyncio.gather(*(worker() for _ in range(in_flight)))

    async def main() -> list[float]:
        pgraft.AsyncClient._dial = fake_dial  # lazy attribute after the split: same class
        # By default a long timeout: no call deadline is swept within a run, however slow
        # (callgrind). A short one (--timeout 2) counts the sweep of every answered call too.
        client = await pgraft.connect("127.0.0.1:1", timeout=timeout)
        await load(client, max(count // 10, in_flight * 4))  # warm up
        samples = []
        prof = None
        if profile:
            import cProfile

            prof = cProfile.Profile()
        for _ in range(repeat):
            t0 = time.process_time()
            if prof is not None:
                prof.enable()
            await load(client, count)
            if prof is not None:
                prof.disable()
            samples.append((time.process_time() - t0) / count * 1e6)
        await client.close()
        if prof is not None:
            prof.dump_stats(profile)
        return samples

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    samples = asyncio.run(main())
    return {"tree": tree, "file": pgraft.__file__, "impl": pgraft.IMPLEMENTATION,
            "samples_us": samples, "min_us": min(samples),
            "median_us": statistics.median(samples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", help="a source tree (repeatable)")
    parser.add_argument("--child", metavar="TREE", help="run in this process (for callgrind)")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of --tree")
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=90,
                        help="answers per data_received (the cluster run reads ~90)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="the calls' timeout (short: their deadlines are swept in the run)")
    parser.add_argument("--profile", metavar="PATH", help="with --child: cProfile stats")
    ns = parser.parse_args(argv)
    if ns.child:
        res = child(os.path.abspath(ns.child), ns.count, ns.repeat, ns.in_flight, ns.chunk,
                    ns.profile, ns.timeout)
        print(json.dumps(res), flush=True)
        return 0
    trees = ns.tree or [str(HERE)]
    for _ in range(ns.rounds):
        for tree in trees:
            out = subprocess.run(
                [sys.executable, __file__, "--child", tree, "--count", str(ns.count),
                 "--repeat", str(ns.repeat), "--in-flight", str(ns.in_flight),
                 "--chunk", str(ns.chunk), "--timeout", str(ns.timeout)],
                check=True, capture_output=True, text=True)
            res = json.loads(out.stdout)
            print(f"{tree}: {res['min_us']:.2f} us/append min, {res['median_us']:.2f} median "
                  f"({res['impl']}; {', '.join(f'{s:.2f}' for s in res['samples_us'])})",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
