"""ReadIndex bookkeeping on the leader (Raft dissertation §6.4).

A read request records the leader's commit index, then the leader sends a heartbeat round
carrying the request's context; once a quorum of voters has echoed the context the leader
knows it was still the leader when the request arrived, and every request queued up to that
one is answered with its recorded index. Requests are answered in arrival order.
"""

from __future__ import annotations

from collections import OrderedDict


class ReadRequest:
    __slots__ = ("index", "origin", "context", "acks")

    def __init__(self, index: int, origin: int, context: bytes) -> None:
        self.index = index
        self.origin = origin  # the node that asked (the leader itself or a follower)
        self.context = context
        self.acks: dict[int, bool] = {}


class ReadOnly:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: OrderedDict[bytes, ReadRequest] = OrderedDict()

    def __len__(self) -> int:
        return len(self.pending)

    def full(self) -> bool:
        return len(self.pending) >= self.limit

    def add(self, index: int, origin: int, context: bytes, self_id: int) -> ReadRequest | None:
        """Queue a request; None if the same context is already pending."""
        if context in self.pending:
            return None
        req = ReadRequest(index, origin, context)
        req.acks[self_id] = True
        self.pending[context] = req
        return req

    def ack(self, context: bytes, node_id: int) -> ReadRequest | None:
        req = self.pending.get(context)
        if req is None:
            return None
        req.acks[node_id] = True
        return req

    def release_through(self, context: bytes) -> list[ReadRequest]:
        """Remove and return every request up to and including ``context``."""
        out: list[ReadRequest] = []
        if context not in self.pending:
            return out
        while self.pending:
            ctx, req = self.pending.popitem(last=False)
            out.append(req)
            if ctx == context:
                break
        return out

    def clear(self) -> list[ReadRequest]:
        out = list(self.pending.values())
        self.pending.clear()
        return out
