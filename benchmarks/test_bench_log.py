"""pytest-benchmark cases of the durable log, compiled and pure twin (`make bench`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import cases_log
import pytest


@pytest.mark.parametrize("impl", ["pgraft._log", "pgraft._log_py"])
@pytest.mark.parametrize("name,make", cases_log.CASES, ids=[n for n, _ in cases_log.CASES])
def test_log_case(benchmark: Any, impl: str, name: str,
                  make: Callable[[ModuleType], Callable[[], Any]]) -> None:
    benchmark.group = name
    benchmark(make(importlib.import_module(impl)))


def test_log_append_sync_small(benchmark: Any) -> None:
    """A small run of the whole-log throughput measurement (entries/s), compiled."""
    log = importlib.import_module("pgraft._log")
    rate = benchmark.pedantic(cases_log.bench_append_sync_throughput, args=(log, 20_000, 1000),
                              rounds=1, iterations=1)
    assert rate > 0
