"""Fixtures of the HA tests: PostgreSQL 15 servers run by pgraft.ha.pgctl as the PostgreSQL
OS user.

As root (CI) every call that touches a server runs in a forked child as ``postgres``
(tests/support/pguser.py); as another user the servers run as that user. Without the
PostgreSQL 15 programs the server tests skip (``make check`` machines have none).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

# Everything a child runs is imported before any fork (pgraft.ha.pgctl imports psycopg and the
# rest at module level): as the postgres user the child may be unable to read the
# interpreter's files (here the installation under /root, in CI the checkout).
from pgraft.ha.pgctl import PgControl
from pgraft.localcluster import free_port
from tests.support.pguser import current_user, run_as
from tests.support.procs import processes_mentioning

PG_BINDIR = os.environ.get("PGRAFT_PG_BINDIR", "/usr/lib/postgresql/15/bin")
#: The OS user the servers run as: postgres when we are root (PostgreSQL refuses root).
PG_USER = "postgres" if os.geteuid() == 0 else current_user()

_T = TypeVar("_T")


def pg_problem() -> str | None:
    """Why the server tests cannot run here, or None."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"no {PG_USER} OS user to run PostgreSQL as"
    probe = PgControl("/nonexistent", bindir=PG_BINDIR, port=5432, listen_addresses="",
                      socket_dir="/tmp", log_path="/tmp/x.log", superuser=PG_USER)
    return probe.binaries_problem()


class Workspace:
    """A private temporary directory owned by the PostgreSQL OS user, and the servers made
    in it; :meth:`cleanup` stops them all."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="pgha-")
        pw = pwd.getpwnam(PG_USER)
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)
        self.controls: list[PgControl] = []

    def make(self, name: str, port: int | None = None) -> PgControl:
        ctl = PgControl(os.path.join(self.root, name), bindir=PG_BINDIR,
                        port=port or free_port(), listen_addresses="127.0.0.1",
                        socket_dir=os.path.join(self.root, f"{name}-sock"),
                        log_path=os.path.join(self.root, f"{name}.log"), superuser=PG_USER)
        self.controls.append(ctl)
        return ctl

    def run(self, fn: Callable[..., _T], *args: Any, timeout: float = 60) -> _T:
        """``fn(*args)`` as the PostgreSQL OS user."""
        return run_as(PG_USER, fn, *args, timeout=timeout, workdir=self.root)

    def log(self, ctl: PgControl) -> str:
        try:
            with open(ctl.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self) -> None:
        for ctl in self.controls:
            with contextlib.suppress(Exception):
                self.run(ctl.stop, "immediate", 30, timeout=45)
        for pid in processes_mentioning(self.root):  # anything that survived, by PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def workspace() -> Iterator[Workspace]:
    problem = pg_problem()
    if problem:
        pytest.skip(f"PostgreSQL 15 is not usable here: {problem}")
    ws = Workspace()
    try:
        yield ws
    finally:
        ws.cleanup()

