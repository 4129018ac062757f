"""The leader's view of each follower's log.

A follower is in one of three states:

* ``probe``: the leader does not know where the logs agree; it sends one AppendEntries at a
  time (``probe_sent``) and steps ``next`` back on each rejection, using the follower's
  conflict hint to skip whole terms. A heartbeat response re-opens the probe.
* ``replicate``: the logs agree up to ``match``; the leader streams AppendEntries optimistically
  (``next`` runs ahead of ``match``) while at most ``max_inflight`` messages are unacknowledged.
* ``snapshot``: the entries the follower needs were compacted; the leader has asked for a
  snapshot to be sent and waits until the follower reports it installed (or the runtime
  reports failure), then probes again.
"""

from __future__ import annotations

from .types import PROBE, REPLICATE, SNAPSHOT


class Progress:
    __slots__ = ("match", "next", "state", "probe_sent", "probe_last", "inflight", "_acked",
                 "max_inflight",
                 "pending_snapshot", "recent_active", "learner", "caught_up_ticks",
                 "quiet_ticks", "sent_commit", "stalled")

    def __init__(self, next_index: int, max_inflight: int, learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.probe_last = 0  # while probe_sent: the last index that probe carried
        # the last index of each MsgApp sent, of which the first ``_acked`` are acknowledged
        # (a list consumed from the front, not a deque: compiled, a list is read without a
        # method call, and this runs on every acknowledgement)
        self.inflight: list[int] = []
        self._acked = 0
        self.max_inflight = max_inflight
        self.pending_snapshot = 0
        self.recent_active = False
        self.learner = learner
        self.caught_up_ticks = 0
        self.quiet_ticks = 0  # promotion ticks since its last append or heartbeat response
        self.sent_commit = 0
        self.stalled = (0, 0)  # (match at the last heartbeat response, how many in a row)

    def __repr__(self) -> str:
        return (f"Progress(match={self.match}, next={self.next}, state={self.state}, "
                f"inflight={self.in_flight()})")

    def _reset(self, state: str) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()
        self._acked = 0

    def in_flight(self) -> int:
        """AppendEntries sent and not acknowledged (replicate state)."""
        return len(self.inflight) - self._acked

    def become_probe(self) -> None:
        if self.state == SNAPSHOT:
            pending = self.pending_snapshot
            self._reset(PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, index: int) -> None:
        self._reset(SNAPSHOT)
        self.pending_snapshot = index

    def heartbeat_stalled(self, last_index: int, limit: int) -> bool:
        """A heartbeat response arrived. True once ``limit`` responses in a row found the
        follower behind with no progress: AppendEntries were lost, so probe again (a
        pipelined leader has nothing else that would notice if no new entry comes)."""
        if self.match >= last_index or self.stalled[0] != self.match:
            self.stalled = (self.match, 0)
            return False
        count = self.stalled[1] + 1
        self.stalled = (self.match, count)
        return count >= limit

    def is_paused(self) -> bool:
        state = self.state
        if state == REPLICATE:
            return len(self.inflight) - self._acked >= self.max_inflight
        if state == PROBE:
            return self.probe_sent
        return True

    def sent_entries(self, count: int, last: int) -> None:
        """An AppendEntries with ``count`` entries ending at ``last`` went out."""
        if self.state == REPLICATE:
            if count:
                self.next = last + 1
                self.inflight.append(last)
        elif self.state == PROBE:
            self.probe_sent = True
            self.probe_last = last

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged its log up to ``index``. True if match moved."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        inflight = self.inflight
        k = self._acked
        n = len(inflight)
        while k < n:
            x = inflight[k]
            if x > index:
                break
            k += 1
        if k == n:
            inflight.clear()  # all acknowledged: the usual case
            k = 0
        elif k >= 64:
            del inflight[:k]  # drop what was acknowledged, in batches
            k = 0
        self._acked = k
        return updated

    def maybe_decr_to(self, rejected: int, hint: int) -> bool:
        """A rejection of the AppendEntries whose previous index was ``rejected``; the
        follower's hint says ``hint`` may match. True if ``next`` moved back."""
        if self.state == REPLICATE:
            # stale: below what it acknowledged, or beyond what this stream sent (the commit
            # announced after a probe, Raft._send_commit_after_probe, that the probe's answer
            # overtook)
            if rejected <= self.match or rejected >= self.next:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:  # stale: not the probe we are waiting for
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1)
        self.probe_sent = False
        return True
