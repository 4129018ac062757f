"""`make installcheck` in postgres/: the pg_regress suite that packagers, Debian's autopkgtest
and PGXN testers run, on its own temporary instance with the installed extension.

pg_regress (initdb) refuses root, so the suite runs as the postgres OS user in a copy of
postgres/ that user owns (it writes results/ and tmp_check/ next to the Makefile).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from tests.support.postgres import PG_CONFIG, SOURCE_ROOT, as_pg_user, free_port, pg_user

_COPY = ("Makefile", "pgraft.control", "regress.conf.in", "sql", "expected")


def test_installcheck(pgraft_installed: str) -> None:
    # not pytest's tmp_path: its parents are closed to the postgres user
    with tempfile.TemporaryDirectory(prefix="pgraft-regress-", dir="/tmp") as base:
        os.chmod(base, 0o755)
        run_installcheck(Path(base) / "postgres")


def run_installcheck(work: Path) -> None:
    work.mkdir()
    for name in _COPY:
        src = SOURCE_ROOT / "postgres" / name
        if src.is_dir():
            shutil.copytree(src, work / name)
        else:
            shutil.copy2(src, work / name)
    user = pg_user()
    for path in [work, *work.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)
    proc = as_pg_user(["make", "-s", "installcheck", f"PG_CONFIG={PG_CONFIG}",
                       f"PGRAFT_REGRESS_PORT={free_port()}"], cwd=work, check=False,
                      timeout=300)
    diffs = work / "regression.diffs"
    detail = diffs.read_text() if diffs.exists() else ""
    log = work / "log" / "postmaster.log"
    if proc.returncode != 0 and log.exists():
        detail += "\n--- postmaster.log (tail) ---\n" + "\n".join(
            log.read_text(errors="replace").splitlines()[-40:])
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{detail}"
    for test in ("pgraft_api", "pgraft_update"):
        assert re.search(rf"\b{test}\b.*\bok\b", proc.stdout), proc.stdout
