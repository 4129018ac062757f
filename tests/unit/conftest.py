"""Every _core/_log test runs against both the compiled module and its pure-Python twin."""

from __future__ import annotations

import importlib
from types import ModuleType

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
