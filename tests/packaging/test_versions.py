"""The version is written once per place, and every place agrees: pyproject.toml, pgraft's
``__version__``, ``pgraft --version``, the CHANGELOG's newest release and the PostgreSQL
extension's default_version (its major.minor). The installed wheel's metadata is checked by
test_wheel.py."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pgraft

REPO = Path(__file__).resolve().parents[2]


def test_pyproject_and_package_agree() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == pgraft.__version__


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
