"""The answer to one ``append_batch`` request (docs/protocol.md): many appends, one answer.

Each payload is proposed as its own entry, with a :class:`Slot` as its waiter; the node resolves
each slot exactly as it resolves a single append's waiter (its index once applied, or its own
error: overwritten, not leader, too large...). :class:`BatchReply` collects the slots and writes
one response, ``{"id", "ok": true, "result": [index or error map, ...]}`` in payload order, once
every slot is settled -- or when the request's timeout passes, with ``CommitTimeout`` for the
slots still open (the server's deadline sweep calls :meth:`BatchReply.expire`). What the node
saves against one request per append: the request's decoding and dispatch, a reply object,
a deadline and a response frame per payload.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import CommitTimeout, PgraftError


def commit_timeout(timeout: float) -> CommitTimeout:
    """The error of a write not applied within its request's ``timeout``."""
    return CommitTimeout(f"no commit within {timeout:g}s; the entry is in the log and may "
                         "still commit")


class Answers(Protocol):
    """Where a batch's answer goes: a client connection
    (:class:`pgraft.node.listener.ClientConnection`)."""

    inflight: int

    def send_result(self, rid: int, result: Any) -> None: ...


class ErrorCount(Protocol):
    """Where failed payloads are counted (:class:`pgraft.node.metrics.Metrics`)."""

    client_errors: int


class BatchReply:
    """The open slots of one ``append_batch`` request and its answer."""

    __slots__ = ("conn", "rid", "timeout", "results", "remaining", "finished", "errors",
                 "metrics")

    def __init__(self, conn: Answers, rid: int, timeout: float, count: int,
                 metrics: ErrorCount) -> None:
        self.conn = conn
        self.metrics = metrics
        self.rid = rid
        self.timeout = timeout
        #: Per payload: None while open, then its index (int) or its error (a wire map).
        self.results: list[Any] = [None] * count
        self.remaining = count
        self.finished = False
        #: Slots that ended in an error (counted as client errors when the answer goes).
        self.errors = 0

    def settle(self, i: int, result: Any) -> None:
        """Slot ``i`` ended with ``result`` (an index, or an error's wire map); the first
        settlement of a slot counts, and the answer goes once none is open."""
        results = self.results
        if self.finished or results[i] is not None:
            return
        results[i] = result
        self.remaining -= 1
        if self.remaining == 0:
            self._answer()

    def expire(self) -> None:
        """The request's timeout passed: the slots still open answer CommitTimeout (their
        entries are in the log and may still commit)."""
        if self.finished:
            return
        error = commit_timeout(self.timeout).to_wire()
        results = self.results
        for i, r in enumerate(results):
            if r is None:
                results[i] = error
                self.errors += 1
        self._answer()

    def _answer(self) -> None:
        self.finished = True
        if self.errors:
            self.metrics.client_errors += self.errors
        conn = self.conn
        conn.inflight -= len(self.results)
        conn.send_result(self.rid, self.results)


class Slot:
    """The waiter of one payload of a batch (it duck-types the part of a future the node
    uses, as the server's single-append reply does)."""

    __slots__ = ("batch", "i")

    def __init__(self, batch: BatchReply, i: int) -> None:
        self.batch = batch
        self.i = i

    def done(self) -> bool:
        batch = self.batch
        return batch.finished or batch.results[self.i] is not None

    def set_result(self, result: Any) -> None:
        self.batch.settle(self.i, result)

    def set_exception(self, exc: BaseException) -> None:
        if self.done():
            return
        if not isinstance(exc, PgraftError):
            exc = PgraftError(f"internal error: {exc}")
        self.batch.errors += 1
        self.batch.settle(self.i, exc.to_wire())
