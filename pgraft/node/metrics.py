"""Counters and histograms of a running node, reported in the ``status`` payload.

Everything here is a plain attribute bump or one ``bisect`` on the hot path; the expensive part
(percentiles, per-peer lag) is computed only when ``status`` is asked for.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from typing import Any

#: Upper bounds (milliseconds) of the latency histogram buckets; the last bucket is +Inf.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
    1000.0, 2500.0, 5000.0, 10000.0,
)


class Histogram:
    """A fixed-bucket latency histogram (values in seconds, buckets in milliseconds)."""

    __slots__ = ("bounds", "counts", "count", "total", "max")

    def __init__(self, bounds_ms: tuple[float, ...] = LATENCY_BUCKETS_MS) -> None:
        self.bounds = tuple(b / 1000.0 for b in bounds_ms)
        self.counts = [0] * (len(bounds_ms) + 1)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def quantile(self, q: float) -> float | None:
        """Upper bound (seconds) of the bucket holding quantile ``q``; None when empty."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank and n:
                return self.bounds[i] if i < len(self.bounds) else self.max
        return self.max

    def snapshot(self) -> dict[str, Any]:
        buckets = []
        cumulative = 0
        for i, n in enumerate(self.counts):
            cumulative += n
            le = self.bounds[i] * 1000.0 if i < len(self.bounds) else "+Inf"
            buckets.append([le, cumulative])
        p50 = self.quantile(0.5)
        p99 = self.quantile(0.99)
        return {
            "count": self.count,
            "sum_ms": self.total * 1000.0,
            "max_ms": self.max * 1000.0,
            "p50_ms": None if p50 is None else p50 * 1000.0,
            "p99_ms": None if p99 is None else p99 * 1000.0,
            "buckets_ms": buckets,
        }


class Metrics:
    """The counters of one node. Attributes are bumped directly by the runtime."""

    def __init__(self) -> None:
        self.leader_changes = 0
        self.role_changes = 0
        self.proposals = 0
        self.proposals_failed = 0
        self.proposals_dropped = 0
        self.entries_persisted = 0
        self.entries_applied = 0
        self.syncs = 0
        self.ready_batches = 0
        self.messages_sent = 0
        self.messages_received = 0
        self.messages_dropped = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.peer_connects = 0
        self.peer_disconnects = 0
        self.frames_rejected = 0
        self.client_connections = 0
        self.client_requests = 0
        self.client_errors = 0
        self.read_index_requests = 0
        self.disk_full_events = 0
        self.commit_latency = Histogram()
        self.sync_latency = Histogram()

    def snapshot(self, *, term: int, role: str, commit_index: int, applied_index: int,
                 last_index: int, progress: Mapping[int, Mapping[str, Any]] | None = None,
                 ) -> dict[str, Any]:
        """The metrics part of the ``status`` payload. ``progress`` (leader only) maps a peer
        id to its ``match``; replication lag is ``last_index - match`` in entries."""
        lag: dict[int, int] = {}
        if progress:
            for peer, pr in progress.items():
                lag[peer] = max(0, last_index - int(pr.get("match", 0)))
        return {
            "term": term,
            "role": role,
            "commit_index": commit_index,
            "applied_index": applied_index,
            "leader_changes": self.leader_changes,
            "role_changes": self.role_changes,
            "proposals": self.proposals,
            "proposals_failed": self.proposals_failed,
            "proposals_dropped": self.proposals_dropped,
            "entries_persisted": self.entries_persisted,
            "entries_applied": self.entries_applied,
            "syncs": self.syncs,
            "ready_batches": self.ready_batches,
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "messages_dropped": self.messages_dropped,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "peer_connects": self.peer_connects,
            "peer_disconnects": self.peer_disconnects,
            "frames_rejected": self.frames_rejected,
            "client_connections": self.client_connections,
            "client_requests": self.client_requests,
            "client_errors": self.client_errors,
            "read_index_requests": self.read_index_requests,
            "disk_full_events": self.disk_full_events,
            "commit_latency": self.commit_latency.snapshot(),
            "sync_latency": self.sync_latency.snapshot(),
            "replication_lag": lag,
        }
