"""Fixtures for the client and CLI tests: a fake node speaking docs/protocol.md."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

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
