"""Every _core/_log test runs against both the compiled module and its pure-Python twin."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"pgraft.{name}")


@pytest.fixture(params=["compiled", "pure"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    """pgraft._core (compiled) or pgraft._core_py (pure twin)."""
    return _load("_core" if request.param == "compiled" else "_core_py")


@pytest.fixture(params=["compiled", "pure"])
def log(request: pytest.FixtureRequest) -> ModuleType:
    """pgraft._log (compiled) or pgraft._log_py (pure twin)."""
    return _load("_log" if request.param == "compiled" else "_log_py")


@pytest.fixture
def failpoints() -> Iterator[ModuleType]:
    """pgraft.failpoints, switched off again after the test."""
    from pgraft import failpoints as fp

    fp.configure(None)
    try:
        yield fp
    finally:
        fp.configure(None)


class Twin:
    """DiskStorage over one twin of the log: ``storage.logmod`` patched, entries of the
    matching core module."""

    def __init__(self, name: str, logmod: ModuleType, coremod: ModuleType) -> None:
        self.name = name
        self.log = logmod
        self.core = coremod

    def entry(self, index: int, term: int, data: bytes, type_: int = 0) -> Any:
        return self.core.Entry(index, term, type_, data)


@pytest.fixture(params=["compiled", "pure"])
def twin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Twin:
    """DiskStorage (pgraft.node.storage) running over the compiled log or over the pure twin."""
    import pgraft.node.storage

    pure = request.param == "pure"
    logmod = _load("_log_py" if pure else "_log")
    coremod = _load("_core_py" if pure else "_core")
    monkeypatch.setattr(pgraft.node.storage, "logmod", logmod)
    return Twin(request.param, logmod, coremod)
