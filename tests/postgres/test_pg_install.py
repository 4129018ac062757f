"""`pgraft postgres install`: the layout the postgres OS user can read, nothing loosened."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from pgraft.pg import install as pg_install
from tests.support.postgres import PG_CONFIG, SOURCE_ROOT


def test_layout_is_readable_by_postgres(pgraft_installed: str) -> None:
    prefix = Path(pgraft_installed)
    record = json.loads((prefix / "install.json").read_text())
    assert record["python"] == str(prefix / "venv" / "bin" / "python")
    assert record["site_packages"] == str(prefix / "venv" / "lib" / "python3.11" /
                                          "site-packages")
    # root-owned, world-readable, nothing group/world-writable
    for path in (prefix, prefix / "venv", Path(record["site_packages"]) / "pgraft"):
        st = path.stat()
        assert st.st_uid == 0 and st.st_mode & stat.S_IROTH and st.st_mode & stat.S_IXOTH
        assert not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path
    # /root stays private
    assert not Path("/root").stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    # the interpreter PL/Python embeds, and the compiled extensions, as the postgres user
    out = subprocess.run(["runuser", "-u", "postgres", "--", record["python"], "-c",
                          "import sys, pgraft; print(sys.version_info[:2], "
                          "pgraft.IMPLEMENTATION)"],
                         cwd="/", capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(3, 11) compiled"
    assert pg_install.plpython_version(record["pkglibdir"]) == "3.11"
    # the server's library has the venv's interpreter as the default of pgraft.python
    assert (record["python"].encode() + b"\0") in \
        (Path(record["pkglibdir"]) / "pgraft.so").read_bytes()


def test_rerun_with_unchanged_sources_does_nothing(pgraft_installed: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--pg-config", PG_CONFIG, "--prefix", pgraft_installed,
            "--source", str(SOURCE_ROOT)]
    assert pg_install.main(args) == 0
    assert "up to date" in capsys.readouterr().out


def test_refuses_a_prefix_postgres_cannot_reach(pgraft_installed: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    mode = os.stat("/root").st_mode
    args = ["--pg-config", PG_CONFIG, "--prefix", "/root/pgraft-prefix-test",
            "--source", str(SOURCE_ROOT)]
    assert pg_install.main(args) == 1
    err = capsys.readouterr().err
    assert "cannot reach /root/pgraft-prefix-test" in err and "/opt/pgraft" in err
    assert os.stat("/root").st_mode == mode
    assert not Path("/root/pgraft-prefix-test").exists()


def test_rejects_a_base_python_plpython_does_not_embed(tmp_path: Path) -> None:
    fake = tmp_path / "python"  # an "interpreter" that reports version 3.99
    fake.write_text("#!/bin/sh\necho 3.99\n")
    fake.chmod(0o755)
    with pytest.raises(pg_install.InstallError, match="plpython3u embeds Python 3.11"):
        pg_install.find_base_python(str(fake), "3.11")
