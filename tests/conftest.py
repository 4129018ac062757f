"""Fixtures every suite may use (suite-specific ones live in each directory's conftest.py;
shared helpers in tests/support/)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture
def tmpdir_short() -> Iterator[str]:
    """A short temporary directory (Unix socket paths are limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="pgt-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
