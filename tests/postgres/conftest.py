"""Fixtures of the PostgreSQL tests: pgraft installed for the PostgreSQL OS user, servers.

These tests need PostgreSQL 15 with plpython3u and root (to install into /opt/pgraft and run
the servers as the postgres OS user); `make test` provides both (targets system-deps and
pg-install). They never skip: a missing piece is a failure that says what to run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PG_CONFIG, PREFIX, SOURCE_ROOT, PgCluster, cleaned_up_cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def pgraft_installed() -> str:
    """Install (or confirm up to date) the extension and the venv the postgres user reads."""
    if not os.access(PG_CONFIG, os.X_OK):
        pytest.fail(f"{PG_CONFIG} is missing: run `make system-deps` (PostgreSQL 15, "
                    "postgresql-plpython3-15, postgresql-server-dev-15)")
    if shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.fail("the PostgreSQL tests run as root (they install into "
                    f"{PREFIX} and start servers as the postgres OS user)")
    from pgraft.pg import install as pg_install

    rc = pg_install.main(["--pg-config", PG_CONFIG, "--prefix", PREFIX,
                          "--source", str(SOURCE_ROOT)])
    assert rc == 0, "pgraft postgres install failed (see its output above)"
    return PREFIX


@pytest.fixture
def pg_cluster(pgraft_installed: str) -> Iterator[PgCluster]:
    """An empty set of servers; every process it started is gone afterwards."""
    with cleaned_up_cluster() as cluster:
        yield cluster
