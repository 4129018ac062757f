"""Many deadlines on one timer: the client's calls and the node's pending requests.

A timer per request costs more than the rest of a pipelined append, so deadlines are grouped
in buckets of ``resolution`` seconds and one loop timer sweeps the earliest bucket. An item
that was answered meanwhile stays in its bucket: ``on_expire`` is called for it anyway and
must ignore it (a done future, a finished reply).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DeadlineWheel(Generic[T]):
    """Call ``on_expire(item)`` about ``delay`` seconds after ``add(item, delay)`` (never
    earlier, at most ``resolution`` later)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float,
                 on_expire: Callable[[T], None]) -> None:
        self._loop = loop
        self._resolution = resolution
        self._on_expire = on_expire
        self._buckets: dict[int, list[T]] = {}
        self._keys: list[int] = []  # heap of bucket keys
        self._sweep_at: int | None = None
        self._handle: asyncio.TimerHandle | None = None

    def add(self, item: T, delay: float) -> None:
        key = int((self._loop.time() + delay) / self._resolution) + 1
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = []
            heapq.heappush(self._keys, key)
            if self._sweep_at is None or key < self._sweep_at:
                self._schedule(key)
        bucket.append(item)

    def _schedule(self, key: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._sweep_at = key
        self._handle = self._loop.call_at(key * self._resolution, self._sweep)

    def _sweep(self) -> None:
        self._handle = None
        self._sweep_at = None
        now_key = int(self._loop.time() / self._resolution)
        keys = self._keys
        while keys and keys[0] <= now_key:
            for item in self._buckets.pop(heapq.heappop(keys), ()):
                self._on_expire(item)
        if keys:
            self._schedule(keys[0])

    def close(self) -> None:
        """Stop the timer and forget every deadline."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._sweep_at = None
        self._buckets.clear()
        self._keys.clear()
