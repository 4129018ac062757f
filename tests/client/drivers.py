"""One synchronous face over both clients, so a behavioural test runs on each of them.

``SyncDriver`` wraps :class:`pgraft.Client`; ``AsyncDriver`` runs :class:`pgraft.AsyncClient` on
a private event loop, call by call. Both connect on the first call, so connection errors come
from the first ``call`` in either case.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pgraft

#: Bound on any one step of an async driver, so a broken test never hangs the suite.
GUARD = 30.0


class SyncDriver:
    kind = "sync"

    def __init__(self, target: Any, **options: Any) -> None:
        self.client = pgraft.Client(target, **options)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.client, method)(*args, **kwargs)

    @property
    def node_id(self) -> int | None:
        return self.client.node_id

    @property
    def closed(self) -> bool:
        return self.client.closed

    def close(self) -> None:
        self.client.close()


class AsyncDriver:
    kind = "async"

    def __init__(self, target: Any, **options: Any) -> None:
        self.target = target
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.client: pgraft.AsyncClient | None = None

    def _run(self, coro: Any) -> Any:
        async def guarded() -> Any:
            async with asyncio.timeout(GUARD):
                return await coro
        return self.loop.run_until_complete(guarded())

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.client is None:
            self.client = self._run(pgraft.connect(self.target, **self.options))
        return self._run(getattr(self.client, method)(*args, **kwargs))

    @property
    def node_id(self) -> int | None:
        return self.client.node_id if self.client is not None else None

    @property
    def closed(self) -> bool:
        return self.client is None or self.client.closed

    def close(self) -> None:
        if self.loop.is_closed():
            return
        if self.client is not None:
            self._run(self.client.close())
        self.loop.close()


Driver = SyncDriver | AsyncDriver
