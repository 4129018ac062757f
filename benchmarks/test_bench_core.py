"""pytest-benchmark of pgraft._core against its pure twin, one case per hot path.

    .venv/bin/python -m pytest benchmarks/test_bench_core.py --benchmark-enable --benchmark-only
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

import pytest
from cases_core import CASES

MODULES = {"compiled": "pgraft._core", "pure": "pgraft._core_py"}


@pytest.mark.parametrize("impl", list(MODULES))
@pytest.mark.parametrize(("name", "make"), CASES, ids=[name for name, _ in CASES])
def test_core(benchmark: object, impl: str, name: str,
              make: Callable[[ModuleType], Callable[[], object]]) -> None:
    module = importlib.import_module(MODULES[impl])
    op = make(module)
    op()  # the operation works before it is timed
    benchmark.group = name  # type: ignore[attr-defined]
    benchmark(op)  # type: ignore[operator]
