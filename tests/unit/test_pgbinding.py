"""pgraft.node.pgbinding: the PostgreSQL system identifier a data directory is bound to
(recorded once, a different one refused, rebound by the operator after pg_upgrade)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pgraft.errors import InvalidArgument, StorageCorrupted, StorageError
from pgraft.node.pgbinding import (
    MAX_SYSTEM_ID,
    PG_SYSTEM_ID_FILE,
    bind_pg_system_id,
    parse_pg_system_id,
    read_pg_system_id,
    rebind_pg_system_id,
)
from pgraft.node.storage import DiskStorage

SYSID = 7234567890123456789


@pytest.mark.parametrize("text", ["1", "7234567890123456789", str(MAX_SYSTEM_ID), "007"])
def test_parse_accepts_decimal_uint64(text: str) -> None:
    assert parse_pg_system_id(text) == int(text)


@pytest.mark.parametrize(("text", "why"), [
    ("0", "0 is not valid"),
    ("00", "0 is not valid"),
    (str(MAX_SYSTEM_ID + 1), "not an unsigned 64-bit number"),
    ("99999999999999999999", "not an unsigned 64-bit number"),
    ("123456789012345678901", "not a decimal number"),
    ("-1", "not a decimal number"),
    ("+1", "not a decimal number"),
    (" 1", "not a decimal number"),
    ("1 ", "not a decimal number"),
    ("1_000", "not a decimal number"),
    ("0x10", "not a decimal number"),
    ("", "not a decimal number"),
    ("१२", "not a decimal number"),  # Devanagari digits: int() takes them, we do not
])
def test_parse_refuses_anything_else(text: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        parse_pg_system_id(text)


def _open(path: Path, sysid: int | None, node_id: int = 1) -> DiskStorage:
    def bind(p: str, used_before: bool) -> None:
        assert sysid is not None
        bind_pg_system_id(p, sysid, node_id, has_raft_state=used_before)
    return DiskStorage(str(path), node_id, segment_size=1 << 20,
                       on_locked=bind if sysid is not None else None)


def test_recorded_on_first_start_then_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                              ) -> None:
    caplog.set_level("INFO")
    _open(tmp_path, SYSID).close()
    assert (tmp_path / PG_SYSTEM_ID_FILE).read_text() == f"{SYSID}\n"
    assert read_pg_system_id(str(tmp_path)) == SYSID
    assert "is bound to PostgreSQL system identifier" in caplog.text
    _open(tmp_path, SYSID).close()  # the same server: fine
    _open(tmp_path, None).close()  # plain pgraft serve: nothing checked
    with pytest.raises(StorageError) as ei:
        _open(tmp_path, 42)
    err = ei.value
    assert not isinstance(err, StorageCorrupted)
    assert f"system identifier {SYSID}, not to this server (42)" in err.message
    assert "pg_upgrade" in err.hint
    assert f"pgraft storage rebind-postgres --data-dir {tmp_path} --pg-system-id 42" in err.hint
    assert err.details["stored_pg_system_id"] == SYSID and err.details["pg_system_id"] == 42
    # the refusal released the lock and wrote nothing
    assert read_pg_system_id(str(tmp_path)) == SYSID
    _open(tmp_path, SYSID).close()


def test_refused_before_the_raft_state_is_opened(tmp_path: Path) -> None:
    (tmp_path / "node_id").write_text("1\n")
    (tmp_path / PG_SYSTEM_ID_FILE).write_text("5\n")
    with pytest.raises(StorageError, match="not to this server"):
        _open(tmp_path, 6)
    assert sorted(os.listdir(tmp_path)) == ["LOCK", "node_id", PG_SYSTEM_ID_FILE]


def test_a_directory_with_raft_state_and_no_record_gets_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _open(tmp_path, None).close()  # made before the record existed
    assert read_pg_system_id(str(tmp_path)) is None
    caplog.set_level("INFO")
    _open(tmp_path, SYSID).close()
    assert read_pg_system_id(str(tmp_path)) == SYSID
    assert "its Raft state predates the record" in caplog.text
    with pytest.raises(StorageError, match="not to this server"):
        _open(tmp_path, SYSID + 1)


def test_a_damaged_record_is_corruption_and_a_rebind_repairs_it(tmp_path: Path) -> None:
    _open(tmp_path, SYSID).close()
    (tmp_path / PG_SYSTEM_ID_FILE).write_text("garbage\n")
    with pytest.raises(StorageCorrupted, match="does not hold a PostgreSQL system identifier") \
            as ei:
        _open(tmp_path, SYSID)
    assert "rebind-postgres" in ei.value.hint
    assert rebind_pg_system_id(str(tmp_path), SYSID) is None
    _open(tmp_path, SYSID).close()


def test_rebind(tmp_path: Path) -> None:
    _open(tmp_path, SYSID).close()
    assert rebind_pg_system_id(str(tmp_path), 42) == SYSID
    assert (tmp_path / PG_SYSTEM_ID_FILE).read_text() == "42\n"
    assert not (tmp_path / f"{PG_SYSTEM_ID_FILE}.tmp").exists()
    assert rebind_pg_system_id(str(tmp_path), 42) == 42  # again: nothing to do
    _open(tmp_path, 42).close()
    with pytest.raises(StorageError, match="not to this server"):
        _open(tmp_path, SYSID)
    # a directory without a record (made before it existed) gets one
    (tmp_path / PG_SYSTEM_ID_FILE).unlink()
    assert rebind_pg_system_id(str(tmp_path), 43) is None
    assert read_pg_system_id(str(tmp_path)) == 43
    with pytest.raises(InvalidArgument):
        rebind_pg_system_id(str(tmp_path), 0)


def test_rebind_refuses_a_running_node_and_other_directories(tmp_path: Path) -> None:
    storage = _open(tmp_path / "node", SYSID)
    try:
        with pytest.raises(StorageError, match=r"locked by a running node \(pid \d+\)") as ei:
            rebind_pg_system_id(str(tmp_path / "node"), 42)
        assert ei.value.hint == "stop the node first"
    finally:
        storage.close()
    assert read_pg_system_id(str(tmp_path / "node")) == SYSID
    with pytest.raises(StorageError, match="is not a pgraft data directory"):
        rebind_pg_system_id(str(tmp_path), 42)
    assert not (tmp_path / "LOCK").exists() and not (tmp_path / PG_SYSTEM_ID_FILE).exists()
    with pytest.raises(StorageError, match="is not a pgraft data directory"):
        rebind_pg_system_id(str(tmp_path / "missing"), 42)
