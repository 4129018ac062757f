"""The HA part of a node's configuration (``pgraft serve --postgres PGDATA ...``)."""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass, field

from ..errors import InvalidArgument
from .lease import LeaseSettings

DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"


def _inside(path: str, parent: str) -> bool:
    path, parent = os.path.realpath(path), os.path.realpath(parent)
    return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


def default_pg_bin() -> str:
    """The directory of PostgreSQL's programs: where ``pg_ctl`` is on PATH, else Debian's
    PostgreSQL 15."""
    found = shutil.which("pg_ctl")
    return os.path.dirname(found) if found else DEFAULT_PG_BIN


@dataclass
class HaConfig:
    pgdata: str
    pg_port: int
    pg_bin: str = field(default_factory=default_pg_bin)
    #: The operator's client lines of pg_hba.conf (a file); pgraft adds its own lines first.
    pg_hba_file: str | None = None
    lease: LeaseSettings = field(default_factory=LeaseSettings)
    #: The database superuser the node connects as (over its Unix socket, peer
    #: authentication): initdb's default, the OS user's name.
    superuser: str = field(default_factory=lambda: pwd.getpwuid(os.geteuid()).pw_name)
    #: The role the replicas connect as; its password is generated at bootstrap and kept in
    #: the Raft log.
    replication_user: str = "pgraft_replicator"

    def validate(self, data_dir: str) -> None:
        if not os.path.isabs(self.pgdata):
            raise InvalidArgument(f"--postgres {self.pgdata!r} is not an absolute path",
                                  hint="give the PostgreSQL data directory as an absolute path")
        if not 1 <= self.pg_port <= 65535:
            raise InvalidArgument(f"--pg-port {self.pg_port} is not a TCP port")
        if _inside(data_dir, self.pgdata) or _inside(self.pgdata, data_dir):
            raise InvalidArgument(
                f"pgraft's data directory {data_dir} and the PostgreSQL data directory "
                f"{self.pgdata} overlap",
                hint="keep them apart (e.g. /var/lib/pgraft/N and /var/lib/postgresql/N): "
                     "pg_basebackup would copy the Raft state into new replicas, pg_rewind "
                     "would overwrite it with another node's, and a restored backup would "
                     "rewind its term and vote")
        if self.pg_hba_file is not None:
            try:
                with open(self.pg_hba_file, "rb"):
                    pass
            except OSError as exc:
                raise InvalidArgument(
                    f"--pg-hba {self.pg_hba_file}: {exc.strerror or exc} (as OS user "
                    f"{self.superuser})",
                    hint="a file of pg_hba.conf lines for the clients (e.g. 'host all all "
                         "127.0.0.1/32 trust') that the node's OS user can read, in "
                         "directories it can enter") from None
        self.lease.validate()

    def client_hba_lines(self) -> list[str]:
        """The operator's lines (comments and blank lines dropped)."""
        if self.pg_hba_file is None:
            return []
        try:
            with open(self.pg_hba_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise InvalidArgument(f"--pg-hba {self.pg_hba_file}: {exc.strerror}") from None
        return [line.strip() for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
