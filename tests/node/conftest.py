"""Fixtures of the in-process node tests (helpers live in node_helpers.py)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def tmpdir_short() -> Iterator[str]:
    """A short temporary directory (Unix socket paths are limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="pgn-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
