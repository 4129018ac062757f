"""The PostgreSQL configuration HA mode writes: setting values, the fixed HA settings, the
replication lines of pg_hba.conf. Pure functions (no I/O); :mod:`.pgctl` writes the files.

The node owns two files in PGDATA: ``pgraft.conf`` (its settings, included last by
``postgresql.conf``) and ``pgraft_hba.conf`` (the whole client authentication, named by the
``hba_file`` setting). ``postgresql.conf`` stays the administrator's, except for the one
include line at its end; ``postgresql.auto.conf`` (ALTER SYSTEM) is read after it and still
wins, as PostgreSQL documents.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from ..errors import InvalidArgument

#: The line that makes postgresql.conf read the node's settings (last, so that they win).
INCLUDE_LINE = "include_if_exists = 'pgraft.conf'"
CONF_NAME = "pgraft.conf"
HBA_NAME = "pgraft_hba.conf"

#: Settings the node derives from its own options (PgControl's constructor), or that would
#: make pgraft.conf read other files: a caller's value for them is refused.
RESERVED_SETTINGS = frozenset({
    "port", "listen_addresses", "unix_socket_directories", "hba_file", "config_file",
    "data_directory", "include", "include_dir", "include_if_exists",
})

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?\Z")
_INCLUDE = re.compile(r"\s*include_if_exists\s*=?\s*'pgraft\.conf'\s*(#.*)?\Z")
# A role name in pg_hba.conf without quotes: no blanks, commas, quotes, no leading + or @.
_PLAIN_ROLE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.$-]*\Z")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*"
                       r"[A-Za-z0-9])?)*\Z")

Setting = str | int | float | bool


def ha_base_settings() -> dict[str, Setting]:
    """The settings every HA node runs with, primary or replica (the controller adds its
    own: primary_conninfo, primary_slot_name, shared_preload_libraries, ...; its values win
    where they overlap). A replica needs the same max_* values as its primary or more, so
    every node uses the same ones."""
    return {
        # WAL for physical replication and pg_rewind (the default, stated so that an
        # administrator's "minimal" in postgresql.conf cannot break a failover).
        "wal_level": "replica",
        # Replicas accept read-only connections: the node observes its replica over SQL.
        "hot_standby": True,
        # pg_rewind needs the hint-bit changes in the WAL (or data checksums, which initdb
        # leaves off); full_page_writes too. Both are recorded in pg_control at startup.
        "wal_log_hints": True,
        "full_page_writes": True,
        # One sender per replica, two for a pg_basebackup -X stream, and spare for rebuilds.
        "max_wal_senders": 10,
        "max_replication_slots": 10,
        # WAL kept without a slot: a replica whose slot is not there yet (just rebuilt, or
        # the old primary being rewound against a just-promoted one) can still catch up.
        "wal_keep_size": "128MB",
        # A slot of a member that is down keeps WAL, but never so much that the primary's
        # disk fills up: past this the slot is invalidated and that member is rebuilt with
        # pg_basebackup (its walreceiver reports "requested WAL segment has already been
        # removed").
        "max_slot_wal_keep_size": "2GB",
        # A replica follows a promoted primary onto its new timeline (the default since
        # PostgreSQL 12, stated for the same reason as wal_level).
        "recovery_target_timeline": "latest",
        # Notice a dead primary or replica in seconds rather than a minute, report replica
        # positions every second (the primary's view of the lag), and retry a lost upstream
        # after a second instead of five.
        "wal_sender_timeout": "10s",
        "wal_receiver_timeout": "10s",
        "wal_receiver_status_interval": "1s",
        "wal_retrieve_retry_interval": "1s",
        # hot_standby_feedback stays off (the default): on, a long query on a replica holds
        # back vacuum on the primary; the controller sets it when it wants that trade.
    }


def quote_setting(value: Setting) -> str:
    """A value as postgresql.conf reads it: ``on``/``off``, a number, or a single-quoted
    string (quote doubled, backslash escaped: the file's lexer reads C escapes)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidArgument(f"setting value {value!r} is not a finite number")
        return repr(value)
    if not isinstance(value, str):
        raise InvalidArgument(f"setting value {value!r} is not a str, int, float or bool")
    if any(c in value for c in "\n\r\0"):
        raise InvalidArgument(f"setting value {value!r} contains a line break or NUL, which "
                              "postgresql.conf cannot hold")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def check_setting_name(name: str) -> str:
    """``name`` if it is a valid setting name (``work_mem``, ``pgraft.node_id``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(f"{name!r} is not a PostgreSQL setting name")
    return name


def render_conf(settings: Mapping[str, Setting], fixed: Mapping[str, Setting]) -> str:
    """The text of pgraft.conf: ``settings`` (reserved names refused) then ``fixed`` (the
    node's own: port, listen_addresses, ...), one ``name = value`` per line, sorted."""
    lines = ["# Written by pgraft (HA mode); rewritten whenever the node changes its",
             "# configuration. Edit the node's options instead of this file.", ""]
    for name in sorted(settings):
        if check_setting_name(name).lower() in RESERVED_SETTINGS:
            raise InvalidArgument(f"setting {name!r} is derived by the node itself and "
                                  "cannot be given", hint="pass it to PgControl instead")
        lines.append(f"{name} = {quote_setting(settings[name])}")
    for name in sorted(fixed):
        lines.append(f"{check_setting_name(name)} = {quote_setting(fixed[name])}")
    return "\n".join(lines) + "\n"


def render_hba(lines: Iterable[str]) -> str:
    """The text of pgraft_hba.conf: exactly ``lines``, one per line."""
    out = []
    for line in lines:
        if not isinstance(line, str) or any(c in line for c in "\n\r\0"):
            raise InvalidArgument(f"pg_hba line {line!r} must be one line of text")
        out.append(line)
    return "\n".join(out) + "\n" if out else ""


def with_include(conf_text: str) -> str:
    """``postgresql.conf``'s text ending with :data:`INCLUDE_LINE` exactly once (every other
    copy of that line removed: pg_basebackup and pg_rewind copy the file from another node,
    which may have it already)."""
    kept = [line for line in conf_text.splitlines() if not _INCLUDE.match(line)]
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join([*kept, "", INCLUDE_LINE]) + "\n"


def _hba_role(user: str) -> str:
    if not isinstance(user, str) or not user or any(c in user for c in '"\n\r\0'):
        raise InvalidArgument(f"{user!r} is not a role name pg_hba.conf can hold")
    return user if _PLAIN_ROLE.match(user) else f'"{user}"'


def _hba_address(address: str) -> str:
    """``10.0.0.1`` -> ``10.0.0.1/32``, ``::1`` -> ``::1/128``; a host name stays as it is
    (PostgreSQL checks it by forward and reverse lookup)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        if not isinstance(address, str) or len(address) > 253 or not _HOSTNAME.match(address):
            raise InvalidArgument(f"{address!r} is neither an IP address nor a host name"
                                  ) from None
        return address
    return f"{ip.compressed}/{ip.max_prefixlen}"


def replication_hba_lines(user: str, addresses: Iterable[str]) -> list[str]:
    """The pg_hba.conf lines that let ``user`` stream (pg_basebackup, replicas) and run
    pg_rewind (a normal connection to the postgres database) from each member address, with
    a SCRAM password. Duplicate addresses are listed once."""
    role = _hba_role(user)
    lines: list[str] = []
    seen: set[str] = set()
    for address in addresses:
        addr = _hba_address(address)
        if addr in seen:
            continue
        seen.add(addr)
        lines.append(f"host replication {role} {addr} scram-sha-256")
        lines.append(f"host postgres {role} {addr} scram-sha-256")
    return lines


def local_hba_lines() -> list[str]:
    """The line the node's own connections need: every role over the Unix socket with peer
    authentication (the OS user's name must be the role's, as initdb's default superuser
    is). The socket directory is private to the node's OS user, so no one else reaches it."""
    return ["local all all peer"]
