"""Appends gathered into one ``append_batch`` request by the asyncio client.

:class:`pgraft.client.aio.AsyncClient` sends the first append of an event-loop iteration at
once, as an ``append`` request; the appends made after it in the same iteration (concurrent
callers: a pipelined load) are gathered and go out together, as one ``append_batch`` request of
at most ``pgraft.protocol.APPEND_BATCH_MAX`` payloads, when the iteration ends. Each caller
still awaits its own future and gets its own index or its own error: :class:`BatchWaiter` hands
out the node's answer, one result per payload in order (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import OutcomeUnknown, PgraftError, from_wire

#: Payloads larger than this go out as their own ``append`` request: a batch is for many small
#: writes (a large payload's request costs little next to its bytes), and 64 of these stay far
#: below any frame limit.
GATHER_PAYLOAD_MAX = 16 * 1024


def fresh(exc: PgraftError) -> PgraftError:
    """A copy of ``exc`` for another caller (each raise gets its own traceback)."""
    return from_wire(exc.to_wire())


class BatchWaiter:
    """The waiter of one ``append_batch`` request: it duck-types the part of a future the
    client's event handling uses, and settles the gathered callers' futures."""

    __slots__ = ("futures", "target", "finished")

    def __init__(self, futures: list[asyncio.Future[Any]], target: str) -> None:
        self.futures = futures
        self.target = target
        self.finished = False

    def done(self) -> bool:
        return self.finished

    def set_result(self, result: Any) -> None:
        self.finished = True
        futures = self.futures
        if result.__class__ is not list or len(result) != len(futures):
            shown = repr(result)[:80]
            for fut in futures:
                if not fut.done():
                    fut.set_exception(OutcomeUnknown(
                        f"node {self.target} answered an append_batch of {len(futures)} "
                        f"appends with {shown}, not one result per append; their outcome is "
                        "unknown", hint="use the same pgraft version on both sides, and read "
                                        "the log back before retrying"))
            return
        for fut, r in zip(futures, result, strict=True):
            if fut.done():  # its caller was cancelled
                continue
            if r.__class__ is int:
                fut.set_result(r)
            elif isinstance(r, dict):
                fut.set_exception(from_wire(r))
            else:
                fut.set_exception(OutcomeUnknown(
                    f"node {self.target} answered an append of an append_batch with "
                    f"{repr(r)[:80]}, neither an index nor an error; its outcome is unknown",
                    hint="use the same pgraft version on both sides"))

    def set_exception(self, exc: BaseException) -> None:
        self.finished = True
        first = True
        for fut in self.futures:
            if fut.done():
                continue
            fut.set_exception(exc if first or not isinstance(exc, PgraftError) else fresh(exc))
            first = False
