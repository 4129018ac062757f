"""ReadIndex bookkeeping on the leader (Raft dissertation §6.4).

A read request records the leader's commit index; the request may be answered with that index
once the leader has confirmed that it was still the leader *after* the request arrived: a
quorum of voters must acknowledge a heartbeat that the leader sent after it registered the
request. An acknowledgement of an earlier heartbeat proves nothing: the follower may have
accepted a newer leader since, which committed writes the recorded index does not cover.

So every heartbeat the leader sends carries a *round* number (``Message.index``), which the
follower echoes in its response, and a request registered when the last round sent was
``R - 1`` waits for round ``R`` (sent with the next Ready: one round serves every request
registered meanwhile). It is confirmed when a quorum of voters, the leader included, have
acknowledged a round ``>= R``: a response to any later heartbeat — a periodic one too —
proves as much. Requests are released in arrival order, each with its own recorded index.

Nothing about the request itself (its context) travels in the heartbeat: a context names a
request for whoever asked, and two requests with the same context (two nodes that number their
reads alike, a restarted node) must never confirm each other. The round counter lives as long
as the RawNode and is never reset, so a delayed response from an earlier leadership of this
node could never match a newer request even if it got past the term check (it carries an
older term; so does one from before a restart). A request whose context is already pending
is refused by the caller (:meth:`ReadOnly.add` returns None), never dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from .._impl import core


class ReadRequest:
    __slots__ = ("index", "origin", "context", "round")

    def __init__(self, index: int, origin: int, context: bytes, round: int = 0) -> None:
        self.index = index
        self.origin = origin  # the node that asked (the leader itself or a follower)
        self.context = context
        self.round = round  # the first heartbeat round that can confirm it


class ReadOnly:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: OrderedDict[bytes, ReadRequest] = OrderedDict()
        self.round = 0  # the last heartbeat round sent; never reset (see the module doc)
        self.acked: dict[int, int] = {}  # node id -> highest round it acknowledged

    def __len__(self) -> int:
        return len(self.pending)

    def full(self) -> bool:
        return len(self.pending) >= self.limit

    def add(self, index: int, origin: int, context: bytes) -> ReadRequest | None:
        """Queue a request for the next round; None if the same context is already pending."""
        if context in self.pending:
            return None
        req = ReadRequest(index, origin, context, self.round + 1)
        self.pending[context] = req
        return req

    def round_due(self) -> bool:
        """True if a pending request waits for a round that has not been sent yet."""
        return bool(self.pending) and next(reversed(self.pending.values())).round > self.round

    def next_round(self) -> int:
        """The number of a heartbeat round about to be sent."""
        self.round += 1
        return self.round

    def ack(self, node_id: int, round: int, voters: Iterable[int],
            self_id: int) -> list[ReadRequest]:
        """``node_id`` acknowledged heartbeat ``round``: remove and return every request, in
        arrival order, that a quorum of ``voters`` has now confirmed."""
        if round <= self.acked.get(node_id, 0):
            return []  # stale or duplicate: proves nothing new
        self.acked[node_id] = round
        pending = self.pending
        if not pending or next(iter(pending.values())).round > round:
            return []
        acked = dict(self.acked)
        acked[self_id] = self.round  # the leader is with itself at every round
        confirmed = core.committed_index(voters, acked)  # highest round a quorum acked
        out: list[ReadRequest] = []
        while pending and next(iter(pending.values())).round <= confirmed:
            out.append(pending.popitem(last=False)[1])
        return out

    def clear(self) -> list[ReadRequest]:
        """Leadership ended: return every pending request (to refuse) and forget the acks.
        ``round`` stays."""
        out = list(self.pending.values())
        self.pending.clear()
        self.acked.clear()
        return out
