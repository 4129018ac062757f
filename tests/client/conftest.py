"""Fixtures for the client and CLI tests: a fake node speaking docs/protocol.md, and the two
clients behind one face (drivers.py)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from drivers import AsyncDriver, Driver, SyncDriver  # noqa: E402
from fake_node import FakeNode  # noqa: E402


@pytest.fixture
def fake() -> Iterator[FakeNode]:
    """A started fake leader on 127.0.0.1 and on a Unix socket."""
    with tempfile.TemporaryDirectory(prefix="pgraft-fake-") as tmp:
        node = FakeNode(1, unix_path=os.path.join(tmp, "node.sock"))
        with node:
            yield node


@pytest.fixture
def follower() -> Iterator[FakeNode]:
    """A started fake follower (node 3) whose leader is node 2 at 127.0.0.1:7002."""
    with FakeNode(3, leader=False) as node:
        yield node


@pytest.fixture(params=["sync", "async"])
def open_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., Driver]]:
    """``open_client(target, **options)``: the blocking or the asyncio client (the test runs
    once with each), closed after the test."""
    made: list[Driver] = []

    def factory(target: Any, **options: Any) -> Driver:
        driver: Driver = (SyncDriver if request.param == "sync" else AsyncDriver)(
            target, **options)
        made.append(driver)
        return driver

    yield factory
    for driver in made:
        driver.close()
