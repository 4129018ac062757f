"""The package reports which implementation is active, and `make test` really has both."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import sysconfig

import pgraft

RAFT_DIR = os.path.join(os.path.dirname(pgraft.__file__), "raft")
# the Raft core's modules compiled from their .py sources (setup.py compiles those with a .pxd)
RAFT_COMPILED = ("core", "entry", "log", "progress", "rawnode", "readonly", "storage", "types")


def test_compiled_extensions_are_built() -> None:
    # `make test` must exercise the compiled modules, not silently fall back to the twins.
    from pgraft import _core, _log  # noqa: F401

    if os.environ.get("PGRAFT_PUREPYTHON", "") in ("", "0"):
        assert pgraft.IMPLEMENTATION == "compiled", pgraft.FALLBACK_REASON


def test_the_raft_core_runs_as_the_implementation_says() -> None:
    import importlib

    suffix = sysconfig.get_config_var("EXT_SUFFIX") if pgraft.IMPLEMENTATION == "compiled" \
        else ".py"
    for name in RAFT_COMPILED:
        module = importlib.import_module(f"pgraft.raft.{name}")
        assert module.__file__ is not None and module.__file__.endswith(suffix), module.__file__


def test_the_compiled_raft_core_is_not_older_than_its_sources() -> None:
    # Python imports a compiled module before its source: after an edit, a stale build would
    # run the old core without a word
    if pgraft.IMPLEMENTATION != "compiled":
        return
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for name in RAFT_COMPILED:
        base = os.path.join(RAFT_DIR, name)
        if not os.path.exists(base + ".pxd"):
            continue  # an installed wheel: pip gives every file its own install time
        built = os.path.getmtime(base + suffix)
        stale = [p for p in (base + ".py", base + ".pxd") if os.path.getmtime(p) > built]
        assert not stale, f"{base + suffix} is older than {stale}: run `make build`"


def test_every_typed_layout_is_compiled() -> None:
    pxds = glob.glob(os.path.join(RAFT_DIR, "*.pxd"))  # a checkout has them, a wheel does not
    assert not pxds or sorted(os.path.basename(p)[:-4] for p in pxds) == sorted(RAFT_COMPILED)


def test_purepython_env_selects_the_twins() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import pgraft, pgraft._impl as i, pgraft.raft.core as c; "
         "print(pgraft.IMPLEMENTATION, i.core.__name__, i.log.__name__, c.__file__)"],
        env={**os.environ, "PGRAFT_PUREPYTHON": "1"}, capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == ["pure", "pgraft._core_py", "pgraft._log_py",
                                  os.path.join(RAFT_DIR, "core.py")]
