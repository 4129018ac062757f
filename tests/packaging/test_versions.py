"""The version is written once, as pgraft's ``__version__`` (pyproject.toml reads it from
there), and every place agrees: the metadata, ``pgraft --version``, the CHANGELOG's newest
release and the PostgreSQL extension's default_version (its major.minor; extension versions
name its update scripts). The installed wheel's metadata and ``pgraft_get_version()`` are
checked by test_wheel.py."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pgraft

REPO = Path(__file__).resolve().parents[2]


def test_pyproject_takes_the_version_from_the_package() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "pgraft.__version__"}
    metadata = subprocess.run([sys.executable, "-c", "import importlib.metadata as m; "
                               "print(m.version('pgraft'))"], cwd="/", capture_output=True,
                              text=True, check=True, timeout=60).stdout.strip()
    assert metadata == pgraft.__version__


def test_cli_prints_the_package_version() -> None:
    out = subprocess.run([sys.executable, "-m", "pgraft", "--version"], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == f"pgraft {pgraft.__version__}"


def test_extension_default_version_is_the_package_major_minor() -> None:
    control = (REPO / "postgres" / "pgraft.control").read_text()
    found = re.search(r"^default_version\s*=\s*'([^']+)'", control, re.MULTILINE)
    assert found, "no default_version in postgres/pgraft.control"
    assert found.group(1) == ".".join(pgraft.__version__.split(".")[:2])


def test_changelog_starts_with_this_release() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## (\d+\.\d+\.\d+) ", text, re.MULTILINE)
    assert releases and releases[0] == pgraft.__version__, releases
