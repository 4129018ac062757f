"""Run every interaction script in tests/raft/testdata/ (REWRITE=1 regenerates the outputs)."""

from __future__ import annotations

import os
import pathlib

import pytest

from .interaction import run_script

DATA = pathlib.Path(__file__).resolve().parent / "testdata"
SCRIPTS = sorted(DATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(path: pathlib.Path) -> None:
    text = path.read_text()
    rewritten, mismatch = run_script(text)
    if os.environ.get("REWRITE", "") not in ("", "0"):
        if rewritten != text:
            path.write_text(rewritten)
        return
    assert not mismatch, f"{path.name}: {mismatch}"
