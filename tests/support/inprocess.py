"""Helpers of the node tests: in-process clusters of several Node objects on one uvloop loop,
talking real TCP on 127.0.0.1. Every wait has a timeout; every test stops its nodes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import uvloop

from pgraft.localcluster import free_port
from pgraft.node import Node, NodeConfig, start_node

ELECTION_MS = 300
HEARTBEAT_MS = 30


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    """Run ``coro`` on a fresh uvloop loop, failing after ``timeout`` seconds."""

    async def guarded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return uvloop.run(guarded())


async def wait_for(cond: Callable[[], Any], timeout: float, what: str,
                   interval: float = 0.01) -> Any:
    """Poll ``cond`` until it returns a truthy value; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def eventually(fn: Callable[[], Awaitable[Any]], timeout: float, what: str,
                     interval: float = 0.05) -> Any:
    """Retry the coroutine function ``fn`` until it returns without raising."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await fn()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: "
                                     f"{exc!r}") from exc
        await asyncio.sleep(interval)


class Cluster:
    """Nodes of one cluster in this process. ``ids`` of the initial members get
    ``initial_cluster``; others start empty."""

    def __init__(self, base: str, n: int, **overrides: Any) -> None:
        self.base = base
        self.overrides = overrides
        self.ports: dict[int, int] = {i: free_port() for i in range(1, n + 1)}
        self.initial = {i: ("127.0.0.1", p) for i, p in self.ports.items()}
        self.nodes: dict[int, Node] = {}

    def add_slot(self, node_id: int) -> int:
        self.ports[node_id] = free_port()
        return self.ports[node_id]

    def data_dir(self, node_id: int) -> str:
        return os.path.join(self.base, f"n{node_id}")

    def config(self, node_id: int, *, bootstrap: bool = True, **kw: Any) -> NodeConfig:
        opts: dict[str, Any] = {"election_timeout_ms": ELECTION_MS,
                                "heartbeat_interval_ms": HEARTBEAT_MS, "seed": node_id}
        opts.update(self.overrides)
        opts.update(kw)
        return NodeConfig(node_id=node_id, address="127.0.0.1", port=self.ports[node_id],
                          data_dir=self.data_dir(node_id),
                          initial_cluster=dict(self.initial) if bootstrap else None, **opts)

    async def start(self, node_id: int, *, bootstrap: bool = True, **kw: Any) -> Node:
        node = await start_node(self.config(node_id, bootstrap=bootstrap, **kw))
        self.nodes[node_id] = node
        return node

    async def start_all(self) -> None:
        for i in self.initial:
            await self.start(i)

    async def stop(self, node_id: int, *, crash: bool = False) -> None:
        node = self.nodes.pop(node_id)
        if crash:
            await node.crash()
        else:
            await node.stop()

    async def stop_all(self) -> None:
        for node_id in list(self.nodes):
            await self.stop(node_id)

    def leaders(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_leader]

    async def wait_leader(self, timeout: float = 10.0, among: set[int] | None = None) -> Node:
        """The one leader that every running node (in ``among``) agrees on, once it has
        applied an entry of its term: until then it refuses membership changes (Unavailable,
        "retry in a moment"), and followers agree on it as soon as its first AppendEntries
        reaches them, before it has committed anything."""

        def agreed() -> Node | None:
            nodes = [n for i, n in self.nodes.items() if among is None or i in among]
            leaders = [n for n in nodes if n.is_leader]
            if len(leaders) != 1:
                return None
            lead = leaders[0]
            if lead.applied_current_term and all(n.leader_id == lead.node_id for n in nodes):
                return lead
            return None

        return await wait_for(agreed, timeout, "a leader all nodes agree on")

    async def wait_applied(self, index: int, timeout: float = 10.0,
                           ids: set[int] | None = None) -> None:
        await wait_for(lambda: all(n.state.applied_index >= index
                                   for i, n in self.nodes.items() if ids is None or i in ids),
                       timeout, f"every node to apply index {index}")
