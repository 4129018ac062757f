"""Which PostgreSQL server a data directory belongs to (``pgraft serve --pg-system-id N``).

When PostgreSQL runs the node (the launcher in ``postgres/``), it passes its *system
identifier*: the random unsigned 64-bit number initdb gives a cluster (pg_controldata's
"Database system identifier"). The node records it in its data directory the first time and
refuses to start (exit code 1) when the directory records another one. Then the Raft state
there (term, vote, log, the peers' incarnations) is not this server's: ``PGDATA`` was made
again by initdb, restored from another server, or ``pgraft.data_dir`` points at another
server's directory. Running it would make this server speak for a node that is someone else's.

``pg_upgrade`` gives the new cluster a new system identifier, but the pgraft data directory is
still this server's node: the operator, with the node stopped, binds it to the new identifier
with ``pgraft storage rebind-postgres --data-dir DIR --pg-system-id N``
(:func:`rebind_pg_system_id`).

The record is a small file of its own in the data directory, written like the identity files
(temp file, fsync, rename, directory fsync; :func:`pgraft.fsutil.write_file_atomic`)::

    pg_system_id    <decimal system identifier>\\n

It is not a field of the ``identity`` file because that file is the peer gate's (the
incarnation must never be rewritten by an operator command, and a rebind touches only this
file), and because a pgraft without this record that rewrites ``identity`` (when it learns its
cluster id) would drop a field it does not know, while it leaves a file alone.

A data directory without the record gets it at its first start with ``--pg-system-id``: a new
one, or one made by a pgraft from before the record that already holds Raft state (an upgrade;
logged). A node started without ``--pg-system-id`` (plain ``pgraft serve``) neither records
nor checks anything.
"""

from __future__ import annotations

import logging
import os
import re

from ..errors import InvalidArgument, StorageCorrupted, StorageError
from ..fsutil import write_file_atomic
from .storage import NODE_ID_FILE, operator_lock

log = logging.getLogger("pgraft.storage")

PG_SYSTEM_ID_FILE = "pg_system_id"
MAX_SYSTEM_ID = (1 << 64) - 1
_DECIMAL = re.compile(r"^[0-9]{1,20}$")


def parse_pg_system_id(text: str) -> int:
    """A PostgreSQL system identifier as given on a command line: decimal digits only (no
    sign, no spaces), 1 .. 2^64-1. InvalidArgument otherwise."""
    if not isinstance(text, str) or not _DECIMAL.match(text):
        raise InvalidArgument(
            f"PostgreSQL system identifier {text!r} is not a decimal number",
            hint="give the \"Database system identifier\" that pg_controldata prints, e.g. "
                 "7234567890123456789")
    return check_pg_system_id(int(text))


def check_pg_system_id(value: int) -> int:
    """``value`` if it can be a system identifier (1 .. 2^64-1), else InvalidArgument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"PostgreSQL system identifier {value!r} is not an integer")
    if value == 0:
        raise InvalidArgument("PostgreSQL system identifier 0 is not valid (initdb never "
                              "makes it)",
                              hint="give the \"Database system identifier\" that "
                                   "pg_controldata prints")
    if not 0 < value <= MAX_SYSTEM_ID:
        raise InvalidArgument(f"PostgreSQL system identifier {value} is not an unsigned "
                              "64-bit number")
    return value


def read_pg_system_id(data_dir: str) -> int | None:
    """The system identifier recorded in ``data_dir``, or None when there is no record.
    StorageCorrupted when the record is not one."""
    path = os.path.join(os.path.abspath(data_dir), PG_SYSTEM_ID_FILE)
    try:
        with open(path, "rb") as f:
            raw = f.read(64)
    except FileNotFoundError:
        return None
    text = raw.decode("ascii", "replace").strip()
    try:
        return parse_pg_system_id(text)
    except InvalidArgument:
        raise StorageCorrupted(
            f"{path} does not hold a PostgreSQL system identifier ({text[:40]!r})", path=path,
            hint=f"if this is the data directory of this server's node, write it again with "
                 f"`pgraft storage rebind-postgres --data-dir {os.path.dirname(path)} "
                 f"--pg-system-id N` (N from pg_controldata) with the node stopped") from None


def _write(data_dir: str, system_id: int) -> None:
    write_file_atomic(os.path.join(data_dir, PG_SYSTEM_ID_FILE), f"{system_id}\n".encode())


def mismatch_error(data_dir: str, stored: int, given: int) -> StorageError:
    """The refusal of a data directory bound to another PostgreSQL server."""
    path = os.path.abspath(data_dir)
    return StorageError(
        f"data directory {path} belongs to the PostgreSQL server with system identifier "
        f"{stored}, not to this server ({given}): its Raft state (term, vote, log) is that "
        "server's node; this server was made anew (initdb, a restore from another server, "
        "pg_upgrade) or pgraft.data_dir names another server's directory",
        hint=f"after pg_upgrade of this server (which gives it a new system identifier), "
             f"stop the node and run `pgraft storage rebind-postgres --data-dir {path} "
             f"--pg-system-id {given}`; otherwise point pgraft.data_dir at this server's own "
             "pgraft data directory",
        path=path, pg_system_id=given, stored_pg_system_id=stored)


def bind_pg_system_id(data_dir: str, system_id: int, node_id: int, *,
                      has_raft_state: bool) -> None:
    """At a node's start (holding the directory's lock, before any Raft state is used):
    record ``system_id`` if the directory has no record, accept it if it records the same,
    raise StorageError (:func:`mismatch_error`) if it records another."""
    check_pg_system_id(system_id)
    stored = read_pg_system_id(data_dir)
    if stored == system_id:
        return
    if stored is not None:
        raise mismatch_error(data_dir, stored, system_id)
    _write(data_dir, system_id)
    if has_raft_state:
        log.info("node %d: recorded PostgreSQL system identifier %d in %s (its Raft state "
                 "predates the record; from now on it starts only for this server)", node_id,
                 system_id, os.path.join(data_dir, PG_SYSTEM_ID_FILE))
    else:
        log.info("node %d: data directory %s is bound to PostgreSQL system identifier %d",
                 node_id, data_dir, system_id)


def rebind_pg_system_id(data_dir: str, system_id: int) -> int | None:
    """``pgraft storage rebind-postgres``: bind a stopped node's data directory to
    ``system_id`` (after pg_upgrade). Returns the identifier it was bound to before (None: no
    record). StorageError while a node runs on it, or if it is not a pgraft data directory."""
    check_pg_system_id(system_id)
    path = os.path.abspath(data_dir)
    if not os.path.isfile(os.path.join(path, NODE_ID_FILE)):
        raise StorageError(f"{path} is not a pgraft data directory (it has no {NODE_ID_FILE} "
                           "file)",
                           hint="give the node's data directory (pgraft.data_dir; by default "
                                "<PGDATA>.pgraft)", path=path)
    with operator_lock(path):
        try:
            before = read_pg_system_id(path)
        except StorageCorrupted as exc:  # what a rebind repairs
            log.warning("%s; rewriting it", exc.message)
            before = None
        if before != system_id:
            _write(path, system_id)
    log.info("data directory %s rebound by the operator to PostgreSQL system identifier %d "
             "(it was %s)", path, system_id, "unrecorded" if before is None else before)
    return before
