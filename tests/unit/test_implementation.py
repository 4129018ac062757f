"""The package reports which implementation is active, and `make test` really has both."""

from __future__ import annotations

import os
import subprocess
import sys

import pgraft


def test_compiled_extensions_are_built() -> None:
    # `make test` must exercise the compiled modules, not silently fall back to the twins.
    from pgraft import _core, _log  # noqa: F401

    if os.environ.get("PGRAFT_PUREPYTHON", "") in ("", "0"):
        assert pgraft.IMPLEMENTATION == "compiled", pgraft.FALLBACK_REASON


def test_purepython_env_selects_the_twins() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import pgraft, pgraft._impl as i; "
         "print(pgraft.IMPLEMENTATION, i.core.__name__, i.log.__name__)"],
        env={**os.environ, "PGRAFT_PUREPYTHON": "1"}, capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == ["pure", "pgraft._core_py", "pgraft._log_py"]
