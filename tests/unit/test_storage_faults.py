"""Storage faults on both twins: a failed sync or hard state save fails the storage for good
(recorded in STORAGE_FAILED, refused at open until an operator clears it), a full file system
raises StorageFull and changes nothing, and the durable watermark turns a bad synced record
(or missing committed entries) into StorageCorrupted instead of a silent cut."""

from __future__ import annotations

import importlib
import logging
import os
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pgraft.errors import StorageCorrupted, StorageError, StorageFull
from pgraft.node.storage import FAILED_MARKER, DiskStorage, clear_storage_failure
from pgraft.raft.membership import Member, Membership
from pgraft.raft.types import HardState, SnapshotMeta

HEADER = 32
REC = 28
MEMBERS = Membership({1: Member("127.0.0.1", 7001, "voter")})


def entry_cls(log: ModuleType) -> type:
    name = "pgraft._core_py" if log.__name__.endswith("_py") else "pgraft._core"
    return importlib.import_module(name).Entry


def other_twin(log: ModuleType) -> ModuleType:
    return importlib.import_module("pgraft._log" if log.__name__.endswith("_py")
                                   else "pgraft._log_py")


def zero_sector_payload(i: int) -> bytes:
    """A payload with a few KiB of zeros inside (a whole zero sector in the record)."""
    return bytes([i % 250 + 1]) * 100 + bytes(3000) + bytes([i % 250 + 1]) * 100


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def listing(d: Path) -> list[str]:
    return sorted(os.listdir(d))


# ------------------------------------------------------------------ the log alone
@pytest.mark.parametrize("point", ["log.sync", "log.msync"])
def test_failed_sync_fails_the_log_for_good(log: ModuleType, failpoints: ModuleType,
                                            tmp_path: Path, point: str) -> None:
    E = entry_cls(log)
    with log.Log(tmp_path, segment_size=4096) as lg:
        lg.append([E(1, 1, 0, b"a" * 10)])
        lg.sync()
        lg.append([E(2, 1, 0, b"b")])
        failpoints.configure(f"{point}=eio")
        with pytest.raises(StorageError) as ei:
            lg.sync()
        seg = str(tmp_path / log.segment_name(1))
        assert seg in str(ei.value) and "Input/output error" in str(ei.value)
        assert lg.failed == ei.value.message and lg.synced_index == 1
        failpoints.configure(None)  # the disk "works" again: a retry must still be refused
        for op in (lg.sync, lambda: lg.append([E(3, 1, 0, b"c")]),
                   lambda: lg.truncate_after(1), lambda: lg.compact(1), lambda: lg.reset(10)):
            with pytest.raises(StorageError, match="failed earlier"):
                op()
        assert lg.last_index == 2 and bytes(lg.entry(2).data) == b"b"  # reads still work


def test_failed_hard_state_save_keeps_the_last_good_slot(log: ModuleType,
                                                         failpoints: ModuleType,
                                                         tmp_path: Path) -> None:
    p = tmp_path / "hs"
    a = log.HardState(3, 1, 7)
    with log.HardStateFile(p) as f:
        f.save(a)  # seq 1: slot 1
        good = p.read_bytes()[512:]
        failpoints.configure("hardstate.save=eio")  # the pwrite (slot 0) is made, the sync fails
        with pytest.raises(StorageError) as ei:
            f.save(log.HardState(4, 2, 9))
        assert str(p) in str(ei.value) and "Input/output error" in str(ei.value)
        assert f.failed == ei.value.message
        failpoints.configure(None)
        with pytest.raises(StorageError, match="failed earlier"):
            f.save(log.HardState(5, 2, 9))  # the old code retried into slot 1: a's slot
        assert f._seq == 1
    assert p.read_bytes()[512:] == good
    # What a failed fdatasync means: the write may never reach the disk. Lose it: the last
    # good hard state is still there.
    raw = bytearray(p.read_bytes())
    raw[:512] = bytes(512)
    p.write_bytes(bytes(raw))
    with log.HardStateFile(p) as f:
        assert f.load() == a


def test_segment_creation_enospc_appends_nothing(log: ModuleType, failpoints: ModuleType,
                                                 tmp_path: Path) -> None:
    E = entry_cls(log)
    es = [E(i, 1, 0, bytes([i]) * 100) for i in range(1, 40)]  # 128-byte records
    with log.Log(tmp_path, segment_size=1024) as lg:
        lg.append(es[:5])
        lg.sync()
        tail = tmp_path / log.segment_name(1)
        before = (lg.last_index, lg.byte_size, listing(tmp_path), tail.read_bytes())
        # es[5:30] fills the tail (2 more records fit) and needs 4 new segments.
        for spec in ("log.segment_create=enospc", "log.segment_create=enospc@3"):
            failpoints.configure(spec)
            with pytest.raises(StorageFull) as ei:
                lg.append(es[5:30])
            assert ei.value.code == "storage_full" and ei.value.sqlstate == "53100"
            assert str(tmp_path) in str(ei.value) and "No space left" in str(ei.value)
            # Nothing written (not even into the tail's free space), no temp file left.
            assert (lg.last_index, lg.byte_size, listing(tmp_path),
                    tail.read_bytes()) == before
            assert lg.failed is None and lg.space_low
        lg.sync()  # not a failure: the log goes on
        failpoints.configure(None)
        lg.append(es[5:30])  # the same entries, once space is back
        lg.sync()
        assert lg.last_index == 30
    with log.Log(tmp_path, segment_size=1024) as lg:
        assert lg.recovery is None and lg.entries(1, 31) == es[:30]


def test_segment_creation_eio_fails_the_log(log: ModuleType, failpoints: ModuleType,
                                            tmp_path: Path) -> None:
    E = entry_cls(log)
    with log.Log(tmp_path, segment_size=512) as lg:
        failpoints.configure("log.segment_create=eio")
        with pytest.raises(StorageError) as ei:
            lg.append([E(i, 1, 0, b"x" * 100) for i in range(1, 10)])
        assert not isinstance(ei.value, StorageFull) and "Input/output error" in str(ei.value)
        assert lg.failed is not None and lg.last_index == 0


def test_reset_enospc_changes_nothing(log: ModuleType, failpoints: ModuleType,
                                      tmp_path: Path) -> None:
    E = entry_cls(log)
    with log.Log(tmp_path, segment_size=1024) as lg:
        lg.append([E(i, 1, 0, b"r" * 50) for i in range(1, 6)])
        lg.sync()
        before = listing(tmp_path)
        failpoints.configure("log.segment_create=enospc")
        with pytest.raises(StorageFull):
            lg.reset(100)
        assert (lg.first_index, lg.last_index, listing(tmp_path)) == (1, 5, before)
        failpoints.configure(None)
        lg.reset(100)
        assert (lg.first_index, lg.last_index) == (100, 99)


def test_bad_record_at_or_below_the_watermark_is_corruption(log: ModuleType,
                                                            tmp_path: Path) -> None:
    E = entry_cls(log)
    es = [E(i, 1, 0, zero_sector_payload(i)) for i in range(1, 11)]
    with log.Log(tmp_path, segment_size=1 << 16) as lg:
        lg.append(es)
        lg.sync()
    seg = tmp_path / log.segment_name(1)
    start = HEADER + 4 * (REC + len(es[0].data))  # entry 5, synced
    flip(seg, start + 40)
    for synced in (10, 5):
        with pytest.raises(StorageCorrupted) as ei:
            log.Log(tmp_path, segment_size=1 << 16, synced_through=synced)
        assert ei.value.path == str(seg) and ei.value.offset == start
        assert seg.name in str(ei.value) and str(start) in str(ei.value)
    # Above the watermark (or with none: a data directory of an older pgraft) the torn-tail
    # rule still applies: the zero sector makes it look like a write that never landed.
    with log.Log(tmp_path, segment_size=1 << 16, synced_through=4) as lg:
        assert lg.last_index == 4 and lg.recovery.cut_offset == start


def test_log_ending_before_the_watermark_is_corruption(log: ModuleType,
                                                       tmp_path: Path) -> None:
    E = entry_cls(log)
    es = [E(i, 1, 0, b"w" * 72) for i in range(1, 11)]  # 100-byte records
    with log.Log(tmp_path, segment_size=1 << 16) as lg:
        lg.append(es)
        lg.sync()
    seg = tmp_path / log.segment_name(1)
    os.truncate(seg, HEADER + 6 * 100)  # entries 7.. gone
    with pytest.raises(StorageCorrupted, match="synced entries are missing") as ei:
        log.Log(tmp_path, segment_size=1 << 16, synced_through=8)
    assert ei.value.path == str(seg) and ei.value.offset == HEADER + 600
    with log.Log(tmp_path, segment_size=1 << 16, synced_through=6) as lg:
        assert lg.last_index == 6
    seg.unlink()
    with pytest.raises(StorageCorrupted, match="no segments"):
        log.Log(tmp_path, synced_through=3)


def test_open_makes_the_recovered_tail_durable(log: ModuleType, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Records that survived a crash in the page cache only count as synced after open: the
    last segment is fdatasync'ed once (else a watermark saved later could claim them)."""
    E = entry_cls(log)
    with log.Log(tmp_path) as lg:
        lg.append([E(1, 1, 0, b"unsynced")])  # close() does not sync
    synced_fds = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced_fds.append(fd), real(fd)))
    with log.Log(tmp_path) as lg:
        assert lg.synced_index == 1
    assert len(synced_fds) == 1


def _v1_slot(seq: int, term: int, vote: int, commit: int) -> bytes:
    from pgraft._core_py import crc32c

    body = struct.pack("<8sIIQQQQ", b"PGRFTHS\x00", 1, 0, seq, term, vote, commit)
    return (body + struct.pack("<I", crc32c(body))).ljust(512, b"\0")


def test_hard_state_version_1_files_still_open(log: ModuleType, tmp_path: Path) -> None:
    p = tmp_path / "hs"
    p.write_bytes(_v1_slot(4, 2, 1, 9) + _v1_slot(3, 2, 0, 5))
    with log.HardStateFile(p) as f:
        hs = f.load()
        assert (hs.term, hs.vote, hs.commit, hs.synced) == (2, 1, 9, 0)
        f.save(log.HardState(3, 1, 10, 8))  # seq 5: slot 1, in version 2
    raw = p.read_bytes()
    assert struct.unpack_from("<I", raw, 512 + 8)[0] == log.HARD_STATE_VERSION == 2
    assert raw[:512] == _v1_slot(4, 2, 1, 9)
    for mod in (log, other_twin(log)):
        with mod.HardStateFile(p) as f:
            hs = f.load()
            assert (hs.term, hs.vote, hs.commit, hs.synced) == (3, 1, 10, 8)


# ---------------------------------------------------------------- DiskStorage
def _entries(twin: Any, lo: int, hi: int, term: int = 1, size: int = 50) -> list[Any]:
    return [twin.entry(i, term, bytes([i % 250 + 1]) * size) for i in range(lo, hi)]


@pytest.mark.parametrize("point", ["log.sync", "log.msync"])
def test_failed_sync_fails_the_storage_and_is_recorded(twin: Any, failpoints: ModuleType,
                                                       tmp_path: Path, point: str) -> None:
    st = DiskStorage(str(tmp_path), 1, segment_size=1 << 16)
    st.append(_entries(twin, 1, 6))
    st.set_hard_state(HardState(1, 1, 3))
    st.sync()
    hs_file = tmp_path / "hardstate"
    hs_before = hs_file.read_bytes()
    st.append(_entries(twin, 6, 7))
    st.set_hard_state(HardState(2, 1, 5))
    failpoints.configure(f"{point}=eio")
    with pytest.raises(StorageError) as ei:
        st.sync()
    seg = tmp_path / "log" / twin.log.segment_name(1)
    assert str(seg) in str(ei.value) and "Input/output error" in str(ei.value)
    assert st.failed == ei.value.message
    marker = tmp_path / FAILED_MARKER
    text = marker.read_text()
    assert f"file: {seg}" in text and "Input/output error" in text and "node: 1" in text
    assert "time: " in text
    # From now on: count every sync and save, let none fail.
    failpoints.configure("log.sync=pass,log.msync=pass,hardstate.save=pass")
    for op in (st.sync, lambda: st.append(_entries(twin, 7, 8, term=2))):
        with pytest.raises(StorageError, match="failed earlier") as ei2:
            op()
        assert "pgraft storage clear-failure" in ei2.value.hint
    st.close()  # releases without syncing or saving (the old code synced and saved here)
    assert [failpoints.hits(p) for p in ("log.sync", "log.msync", "hardstate.save")] == [0] * 3
    assert hs_file.read_bytes() == hs_before
    # The directory is refused until an operator acts.
    with pytest.raises(StorageError) as ei3:
        DiskStorage(str(tmp_path), 1)
    msg, hint = str(ei3.value), ei3.value.hint
    assert str(marker) in msg and str(seg) in msg and "Input/output error" in msg
    assert "remove node 1 from the cluster" in hint and f"wipe {tmp_path}" in hint
    assert "new node id" in hint
    assert f"pgraft storage clear-failure --data-dir {tmp_path}" in hint
    assert ei3.value.code == "storage_error"
    assert clear_storage_failure(str(tmp_path)) == text and not marker.exists()
    assert clear_storage_failure(str(tmp_path)) is None
    st = DiskStorage(str(tmp_path), 1)
    try:
        assert st.hard_state() == HardState(1, 1, 3) and st.last_index() == 6
    finally:
        st.close()


def test_failed_hard_state_save_fails_the_storage(twin: Any, failpoints: ModuleType,
                                                  tmp_path: Path) -> None:
    st = DiskStorage(str(tmp_path), 1)
    st.append(_entries(twin, 1, 4))
    st.set_hard_state(HardState(1, 1, 1))
    st.sync()
    st.set_hard_state(HardState(2, 2, 1))
    failpoints.configure("hardstate.save=eio")
    with pytest.raises(StorageError) as ei:
        st.sync()
    hs_file = tmp_path / "hardstate"
    assert str(hs_file) in str(ei.value) and st.failed is not None
    assert f"file: {hs_file}" in (tmp_path / FAILED_MARKER).read_text()
    after = hs_file.read_bytes()
    failpoints.configure("log.sync=pass,hardstate.save=pass")
    st.close()
    assert failpoints.hits("log.sync") == failpoints.hits("hardstate.save") == 0
    assert hs_file.read_bytes() == after
    with pytest.raises(StorageError, match="not trusted"):
        DiskStorage(str(tmp_path), 1)


def test_clear_storage_failure_refuses_a_running_node(twin: Any, tmp_path: Path) -> None:
    st = DiskStorage(str(tmp_path), 1)
    try:
        (tmp_path / FAILED_MARKER).write_text("error: test\n")
        with pytest.raises(StorageError, match="locked by a running node"):
            clear_storage_failure(str(tmp_path))
    finally:
        st.close()
    assert clear_storage_failure(str(tmp_path)) == "error: test\n"
    with pytest.raises(StorageError, match="not a data directory"):
        clear_storage_failure(str(tmp_path / "nope"))


def test_marker_that_cannot_be_written_is_logged(twin: Any, failpoints: ModuleType,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import pgraft.node.storage

    st = DiskStorage(str(tmp_path), 1)
    st.append(_entries(twin, 1, 2))

    def broken(path: str, data: bytes) -> None:
        raise OSError(5, "Input/output error", path)

    monkeypatch.setattr(pgraft.node.storage, "write_file_atomic", broken)
    failpoints.configure("log.sync=eio")
    with caplog.at_level(logging.ERROR, logger="pgraft.storage"), pytest.raises(StorageError):
        st.sync()
    assert "cannot record the storage failure" in caplog.text and st.failed is not None
    st.close()


def test_storage_full_is_not_a_failure_and_the_append_can_be_retried(
        twin: Any, failpoints: ModuleType, tmp_path: Path) -> None:
    st = DiskStorage(str(tmp_path), 1, segment_size=4096)
    es = _entries(twin, 1, 40, size=300)
    st.append(es[:5])
    st.set_hard_state(HardState(1, 1, 5))
    st.sync()
    failpoints.configure("log.segment_create=enospc")
    with pytest.raises(StorageFull) as ei:
        st.append(es[5:30])
    assert ei.value.sqlstate == "53100" and st.failed is None
    assert st.last_index() == 5 and st.space_low
    assert not (tmp_path / FAILED_MARKER).exists()
    st.sync()  # what is written stays durable
    failpoints.configure(None)
    st.append(es[5:30])
    st.sync()
    # A conflicting suffix and a full disk: the retry with the same entries is right.
    new = _entries(twin, 20, 45, term=2, size=300)
    failpoints.configure("log.segment_create=enospc")
    with pytest.raises(StorageFull):
        st.append(new)
    assert st.last_index() == 19 and st.failed is None  # the suffix is dropped, nothing added
    failpoints.configure(None)
    st.append(new)
    st.set_hard_state(HardState(2, 1, 30))
    st.sync()
    st.close()
    st = DiskStorage(str(tmp_path), 1, segment_size=4096)
    try:
        got = st.entries(1, 45, 1 << 30)
        assert [(e.index, e.term, bytes(e.data)) for e in got] == [
            (e.index, e.term, bytes(e.data)) for e in es[:19] + new]
    finally:
        st.close()


def test_bad_synced_record_is_corruption_not_a_torn_tail(twin: Any, tmp_path: Path) -> None:
    """One flipped byte in a synced record with a zero sector in its payload: the old rule cut
    it and every later record (a warning only)."""
    st = DiskStorage(str(tmp_path), 1, segment_size=1 << 16)
    es = [twin.entry(i, 1, zero_sector_payload(i)) for i in range(1, 21)]
    st.append(es)
    st.set_hard_state(HardState(1, 1, 20))
    st.sync()
    st.close()
    seg = tmp_path / "log" / twin.log.segment_name(1)
    start = HEADER + 9 * (REC + len(es[0].data))  # entry 10
    flip(seg, start + 40)
    with pytest.raises(StorageCorrupted) as ei:
        DiskStorage(str(tmp_path), 1, segment_size=1 << 16)
    assert ei.value.path == str(seg) and ei.value.offset == start
    assert seg.name in str(ei.value) and f"offset {start}" in str(ei.value)
    with twin.log.HardStateFile(tmp_path / "hardstate") as f:
        assert f.load().synced == 20  # saved with the term by sync()


def test_commit_above_the_last_index_is_corruption(twin: Any, tmp_path: Path) -> None:
    st = DiskStorage(str(tmp_path), 1)
    st.append(_entries(twin, 1, 6))
    st.set_hard_state(HardState(1, 1, 5))
    st.sync()
    st.close()
    # The log loses its tail where no watermark can tell (a data directory written by an
    # older pgraft: a version-1 hard state, without the watermark).
    (tmp_path / "hardstate").write_bytes(_v1_slot(7, 1, 1, 5) + bytes(512))
    seg = tmp_path / "log" / twin.log.segment_name(1)
    os.truncate(seg, HEADER + 3 * (REC + 50))
    with pytest.raises(StorageCorrupted) as ei:
        DiskStorage(str(tmp_path), 1)
    msg = str(ei.value)
    assert "commit index 5" in msg and "last index 3" in msg and str(tmp_path) in msg
    assert "committed entries are missing" in msg


def test_truncating_below_the_watermark_lowers_it_first(twin: Any, tmp_path: Path) -> None:
    st = DiskStorage(str(tmp_path), 1)
    st.append(_entries(twin, 1, 11))
    st.set_hard_state(HardState(1, 1, 3))
    st.sync()  # the watermark 10 is saved with the term
    st.append(_entries(twin, 6, 9, term=2))  # replaces 6..10
    st.abandon()  # a crash before the next sync
    with twin.log.HardStateFile(tmp_path / "hardstate") as f:
        assert f.load().synced <= 5
    st = DiskStorage(str(tmp_path), 1)  # not "synced entries are missing"
    try:
        assert st.last_index() in (5, 8) and st.term(5) == 1
    finally:
        st.close()


def test_snapshot_replacing_the_log_lowers_the_watermark(twin: Any, tmp_path: Path) -> None:
    st = DiskStorage(str(tmp_path), 1)
    st.append(_entries(twin, 1, 11))
    st.set_hard_state(HardState(1, 1, 3))
    st.sync()
    meta = SnapshotMeta(5, 7, MEMBERS)  # another term at 5: the log restarts after it
    st.snapshots.set_current(st.snapshots.write(meta, b"state"))
    st.apply_snapshot(meta)
    st.abandon()
    st = DiskStorage(str(tmp_path), 1)
    try:
        assert (st.first_index(), st.last_index(), st.term(5)) == (6, 5, 7)
        assert st.hard_state().commit == 5  # raised to the snapshot, never above the log
    finally:
        st.close()


def test_snapshot_write_enospc_keeps_the_current_snapshot(failpoints: ModuleType,
                                                          tmp_path: Path) -> None:
    from pgraft.node.snapfile import SnapshotStore

    store = SnapshotStore(str(tmp_path))
    store.set_current(store.write(SnapshotMeta(5, 1, MEMBERS), b"a" * 1000))
    before = listing(tmp_path / "snap")
    content = (tmp_path / "snap" / before[0]).read_bytes()
    for action, cls in (("enospc", StorageFull), ("eio", StorageError)):
        failpoints.configure(f"snapshot.write={action}@2")  # the header is written, then not
        with pytest.raises(cls) as ei:
            store.write(SnapshotMeta(9, 1, MEMBERS), b"b" * 1000)
        assert isinstance(ei.value, StorageFull) == (cls is StorageFull)
        assert "snap" in str(ei.value) and ".tmp" in str(ei.value)  # names the file
        assert listing(tmp_path / "snap") == before  # the temp file is gone
        assert (tmp_path / "snap" / before[0]).read_bytes() == content
    failpoints.configure(None)
    assert SnapshotStore(str(tmp_path)).meta == SnapshotMeta(5, 1, MEMBERS)
