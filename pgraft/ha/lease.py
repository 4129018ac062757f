"""The clock assumption of HA mode, and the lease arithmetic derived from it.

**Assumption.** Every node measures time with a monotonic clock (:func:`lease_clock`:
CLOCK_BOOTTIME, which never jumps, is not set by NTP steps, and keeps counting while the
machine is suspended, unlike CLOCK_MONOTONIC) whose rate stays within a factor ``1 ± ρ`` of
real time, ρ = ``max_clock_drift`` (default 0.01, i.e. 1%: twenty times what an
NTP-disciplined or even a free-running crystal drifts). A paused process (SIGSTOP, a VM
freeze) does not break it: its clock keeps counting, and the pause only delays what it does.

**The holder** starts timing a renewal *before* it proposes it, at local time ``t0``, and
counts on the lease only once the renewal has committed, until local ``t0 + D`` (``D`` =
``lease_duration``). Over that local span at most ``D / (1 - ρ)`` real seconds pass.

**Everyone else** starts timing when it *applies* the renewal, which is after the holder
proposed it, and considers the lease expired only after local ``E = D (1 + ρ) / (1 - ρ) +
margin``: at least ``E / (1 + ρ) >= D / (1 - ρ)`` real seconds, so the holder's own deadline
has passed on every clock that obeys the bound. ``margin`` covers what the bound does not:
scheduling of the holder's fence (PostgreSQL checks the deadline at every commit, see
postgres/README.md) and the time between that check and the commit record's flush.

A promotion additionally names the renewal it saw last (:mod:`pgraft.ha.records`), so a
renewal that commits while the promotion is in flight makes the promotion fail instead of
overlapping with a freshly renewed lease.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from ..errors import InvalidArgument


def lease_clock() -> float:
    """The clock of every lease decision, in seconds: CLOCK_BOOTTIME. PostgreSQL's commit
    check reads the same clock (postgres/fence.c), so the deadline the node writes means the
    same instant to both."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class LeaseSettings:
    """Times in seconds."""

    duration: float = 2.0
    renew_interval: float = 0.5
    max_clock_drift: float = 0.01
    margin: float = 0.1
    #: How long a primary whose PostgreSQL crashed keeps its lease while restarting it in
    #: place, before it lets the lease lapse and the cluster fails over.
    restart_grace: float = 30.0

    def validate(self) -> None:
        if not 0 <= self.max_clock_drift < 0.5:
            raise InvalidArgument(f"max clock drift {self.max_clock_drift} is not in [0, 0.5)",
                                  hint="0.01 (1%) is the default and far above real drift")
        if self.renew_interval <= 0 or self.duration <= 0:
            raise InvalidArgument("the lease duration and renew interval must be positive")
        if self.renew_interval * 2 > self.duration:
            raise InvalidArgument(
                f"the renew interval ({self.renew_interval * 1000:g} ms) must be at most half "
                f"the lease duration ({self.duration * 1000:g} ms)",
                hint="so that one lost renewal does not cost the lease; the defaults are "
                     "2000 ms and 500 ms")
        if self.margin < 0 or self.restart_grace < 0:
            raise InvalidArgument("the lease margin and restart grace must be 0 or more")

    @property
    def holder_span(self) -> float:
        """Local seconds, from the start of a renewal, that its holder may count on it."""
        return self.duration

    @property
    def expiry_span(self) -> float:
        """Local seconds, from applying a renewal, after which any other node may take the
        lease as expired on every clock within the bound."""
        rho = self.max_clock_drift
        return self.duration * (1 + rho) / (1 - rho) + self.margin


    def to_record(self) -> list[int]:
        """``[duration_ms, max_clock_drift_ppm, margin_ms]``: what the bootstrap records, so
        that every node of the cluster uses the same spans (pgraft.ha.records)."""
        return [round(self.duration * 1000), round(self.max_clock_drift * 1_000_000),
                round(self.margin * 1000)]

    def for_cluster(self, record: tuple[int, int, int] | None) -> LeaseSettings:
        """These settings with the cluster's recorded duration, drift bound and margin (the
        renew interval and restart grace stay this node's, the interval capped at half the
        recorded duration)."""
        if record is None:
            return self
        duration = record[0] / 1000.0
        return dataclasses.replace(self, duration=duration,
                                   renew_interval=min(self.renew_interval, duration / 2),
                                   max_clock_drift=record[1] / 1_000_000,
                                   margin=record[2] / 1000.0)


def holder_deadline(settings: LeaseSettings, started_at: float) -> float:
    return started_at + settings.holder_span


def expired_for_others(settings: LeaseSettings, seen_at: float, now: float) -> bool:
    return now - seen_at >= settings.expiry_span
