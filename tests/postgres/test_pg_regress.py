"""`make installcheck` in postgres/: the pg_regress suite that packagers, Debian's autopkgtest
and PGXN testers run, on its own temporary instance with the installed extension.

pg_regress (initdb) refuses root, so the suite runs as the postgres OS user in a copy of
postgres/ that user owns (it writes results/ and tmp_check/ next to the Makefile).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from tests.support.postgres import PG_CONFIG, SOURCE_ROOT, as_pg_user, free_port, pg_user

_COPY = ("Makefile", "regress.conf.in", "sql", "expected")


def test_installcheck(pgraft_installed: str, tmp_path: Path) -> None:
    work = tmp_path / "postgres"
    work.mkdir()
    for name in _COPY:
        src = SOURCE_ROOT / "postgres" / name
        if src.is_dir():
            shutil.copytree(src, work / name)
        else:
            shutil.copy2(src, work / name)
    user = pg_user()
    os.chmod(tmp_path, 0o755)
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
