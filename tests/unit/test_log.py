"""The durable log and hard state file: API, errors, formats, both twins, each other's files."""

from __future__ import annotations

import importlib
import os
import struct
from pathlib import Path
from types import ModuleType

import pytest

from pgraft.errors import InvalidArgument, StorageCorrupted, StorageError, StorageFormatError


def entry_cls(log: ModuleType) -> type:
    """The Entry class a twin returns: compiled log -> compiled Entry, pure -> pure."""
    name = "pgraft._core_py" if log.__name__.endswith("_py") else "pgraft._core"
    return importlib.import_module(name).Entry


def other_twin(log: ModuleType) -> ModuleType:
    name = "pgraft._log" if log.__name__.endswith("_py") else "pgraft._log_py"
    return importlib.import_module(name)


def make(log: ModuleType, first: int, n: int, term: int = 1, size: int = 20) -> list:
    E = entry_cls(log)
    return [E(i, term, i % 2, bytes([i % 251 + 1]) * (size + i % 7))
            for i in range(first, first + n)]


def seg_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.seg"))


def test_new_log_is_empty(log: ModuleType, tmp_path: Path) -> None:
    with log.Log(tmp_path / "l", first_index=7) as lg:
        assert (lg.first_index, lg.last_index, lg.synced_index, lg.byte_size) == (7, 6, 6, 0)
        assert lg.recovery is None
        assert lg.entries(7, 7) == []
    with log.Log(tmp_path / "l") as lg:  # first_index only applies to a new log
        assert (lg.first_index, lg.last_index) == (7, 6)


def test_append_sync_read(log: ModuleType, tmp_path: Path) -> None:
    es = make(log, 1, 50)
    with log.Log(tmp_path, segment_size=1024) as lg:
        lg.append(iter(es))  # any iterable
        assert (lg.last_index, lg.synced_index) == (50, min(lg.synced_index, 50))
        lg.sync()
        assert lg.synced_index == 50
        assert lg.byte_size == sum(28 + len(e.data) for e in es)
        assert len(seg_files(tmp_path)) > 1
        for e in es:
            got = lg.entry(e.index)
            assert type(got) is entry_cls(log)
            assert got == e and lg.term(e.index) == 1 and got.type == e.type
            assert bytes(got.record) == bytes(e.record)
        assert lg.entries(1, 51) == es
        assert lg.entries(10, 20) == es[9:19]


def test_read_is_zero_copy_and_survives_compaction(log: ModuleType, tmp_path: Path) -> None:
    with log.Log(tmp_path, segment_size=512) as lg:
        lg.append(make(log, 1, 40))
        lg.sync()
        e = lg.entry(2)
        data, record = e.data, e.record
        assert isinstance(data, memoryview) and data.readonly and isinstance(record, memoryview)
        expect = bytes(data)
        assert lg.compact(30) > 2
        assert bytes(data) == expect  # the dropped segment's mapping lives while viewed


def test_entries_max_bytes(log: ModuleType, tmp_path: Path) -> None:
    es = make(log, 1, 10, size=72)  # every record is 100..106 bytes
    with log.Log(tmp_path) as lg:
        lg.append(es)
        assert len(lg.entries(1, 11, max_bytes=1)) == 1  # always at least one
        got = lg.entries(1, 11, max_bytes=450)
        sizes = [len(g.record) for g in es]
        assert sum(sizes[:len(got)]) <= 450 < sum(sizes[:len(got) + 1])
        assert lg.entries(1, 11, max_bytes=10**9) == es


def test_append_rejects_gaps_and_oversize_atomically(log: ModuleType, tmp_path: Path) -> None:
    E = entry_cls(log)
    with log.Log(tmp_path, max_entry_size=100) as lg:
        lg.append(make(log, 1, 3))
        with pytest.raises(InvalidArgument):
            lg.append([E(4, 1, 0, b"a"), E(6, 1, 0, b"b")])
        with pytest.raises(InvalidArgument):
            lg.append([E(5, 1, 0, b"a")])
        with pytest.raises(InvalidArgument):
            lg.append([E(4, 1, 0, b"a"), E(5, 1, 0, b"x" * 101)])
        assert lg.last_index == 3
        lg.append([E(4, 1, 0, b"x" * 100)])
        assert lg.last_index == 4


def test_entry_larger_than_a_segment_gets_its_own(log: ModuleType, tmp_path: Path) -> None:
    E = entry_cls(log)
    with log.Log(tmp_path, segment_size=256, max_entry_size=4096) as lg:
        lg.append([E(1, 1, 0, b"a" * 10), E(2, 1, 0, b"b" * 3000), E(3, 1, 0, b"c")])
        lg.sync()
    with log.Log(tmp_path, segment_size=256, max_entry_size=4096) as lg:
        assert lg.recovery is None
        assert bytes(lg.entry(2).data) == b"b" * 3000 and bytes(lg.entry(3).data) == b"c"


def test_out_of_range_reads(log: ModuleType, tmp_path: Path) -> None:
    with log.Log(tmp_path, first_index=5) as lg:
        lg.append(make(log, 5, 3))
        for bad in (4, 8, 0):
            with pytest.raises(InvalidArgument):
                lg.entry(bad)
            with pytest.raises(InvalidArgument):
                lg.term(bad)
        with pytest.raises(InvalidArgument):
            lg.entries(4, 6)
        with pytest.raises(InvalidArgument):
            lg.entries(6, 9)


def test_truncate_after(log: ModuleType, tmp_path: Path) -> None:
    es = make(log, 1, 60)
    with log.Log(tmp_path, segment_size=700) as lg:
        lg.append(es)
        lg.sync()
        lg.truncate_after(100)  # beyond the end: nothing to do
        assert lg.last_index == 60
        lg.truncate_after(25)
        assert (lg.last_index, lg.synced_index) == (25, 25)
        assert lg.entries(1, 26) == es[:25]
        lg.append(make(log, 26, 5, term=2))
        assert lg.term(26) == 2
        with pytest.raises(InvalidArgument):
            lg.truncate_after(-1)
        lg.truncate_after(0)
        assert (lg.first_index, lg.last_index) == (1, 0)
    with log.Log(tmp_path, segment_size=700) as lg:
        assert (lg.first_index, lg.last_index, lg.recovery) == (1, 0, None)
        assert len(seg_files(tmp_path)) == 1


def test_truncate_keeps_unsynced_prefix_unsynced(log: ModuleType, tmp_path: Path) -> None:
    with log.Log(tmp_path) as lg:
        lg.append(make(log, 1, 5))
        lg.sync()
        lg.append(make(log, 6, 5))
        lg.truncate_after(8)
        assert lg.last_index == 8 and lg.synced_index >= 5


def test_compact_drops_whole_segments(log: ModuleType, tmp_path: Path) -> None:
    es = make(log, 1, 80)
    with log.Log(tmp_path, segment_size=600) as lg:
        lg.append(es)
        lg.sync()
        n = len(seg_files(tmp_path))
        first = lg.compact(40)
        assert 1 < first <= 41 and lg.first_index == first
        assert len(seg_files(tmp_path)) < n
        assert lg.entries(first, 81) == es[first - 1:]
        assert lg.compact(10**6) == lg.first_index  # never drops the last segment
        assert lg.entry(80) == es[-1]
    with log.Log(tmp_path, segment_size=600) as lg:
        assert lg.first_index > 41 and lg.last_index == 80


def test_reset(log: ModuleType, tmp_path: Path) -> None:
    with log.Log(tmp_path, segment_size=500) as lg:
        lg.append(make(log, 1, 30))
        lg.reset(1000)
        assert (lg.first_index, lg.last_index, lg.synced_index, lg.byte_size) == (1000, 999, 999, 0)
        lg.append(make(log, 1000, 3))
        lg.sync()
    with log.Log(tmp_path) as lg:
        assert (lg.first_index, lg.last_index) == (1000, 1002)
        assert [p.name for p in seg_files(tmp_path)] == [log.segment_name(1000)]


def test_interrupted_reset_is_completed(log: ModuleType, tmp_path: Path) -> None:
    with log.Log(tmp_path, segment_size=500) as lg:
        lg.append(make(log, 1, 30))
        lg.sync()
    # A crash right after the commit point: the .reset file is durable, old segments remain.
    (tmp_path / f"{500:020d}.reset").write_bytes(log.encode_segment_header(500) + bytes(480))
    (tmp_path / f"{7:020d}.seg.tmp").write_bytes(b"half")  # an unfinished creation
    with log.Log(tmp_path, segment_size=500) as lg:
        assert (lg.first_index, lg.last_index) == (500, 499)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["LOCK", log.segment_name(500)])


def test_closed_and_locked(log: ModuleType, tmp_path: Path) -> None:
    lg = log.Log(tmp_path)
    with pytest.raises(StorageError):
        log.Log(tmp_path)
    with pytest.raises(StorageError):
        other_twin(log).Log(tmp_path)
    lg.close()
    for op in (lambda: lg.append([]), lg.sync, lambda: lg.entry(1)):
        with pytest.raises(StorageError):
            op()
    log.Log(tmp_path).close()


def test_twins_read_each_others_files(log: ModuleType, tmp_path: Path) -> None:
    es = make(log, 3, 70)
    with log.Log(tmp_path, segment_size=800, first_index=3) as lg:
        lg.append(es)
        lg.truncate_after(60)
        lg.compact(20)
        lg.sync()
        first = lg.first_index
    other = other_twin(log)
    with other.Log(tmp_path, segment_size=800) as lg:
        assert lg.recovery is None
        assert (lg.first_index, lg.last_index) == (first, 60)
        assert [(e.index, e.term, e.type, bytes(e.data)) for e in lg.entries(first, 61)] == [
            (e.index, e.term, e.type, bytes(e.data)) for e in es[first - 3:58]]
        lg.append(make(other, 61, 5))
        lg.sync()
    with log.Log(tmp_path, segment_size=800) as lg:
        assert lg.last_index == 65 and lg.recovery is None


def _rewrite_header(path: Path, magic: bytes = b"PGRFTLOG", version: int = 1) -> None:
    from pgraft._core_py import crc32c

    raw = bytearray(path.read_bytes())
    raw[0:8] = magic
    raw[8:12] = struct.pack("<I", version)
    raw[28:32] = struct.pack("<I", crc32c(bytes(raw[:28])))
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("magic,version", [(b"NOTALOG!", 1), (b"PGRFTLOG", 2)])
def test_foreign_format_is_refused(log: ModuleType, tmp_path: Path, magic: bytes,
                                   version: int) -> None:
    with log.Log(tmp_path) as lg:
        lg.append(make(log, 1, 3))
        lg.sync()
    seg = seg_files(tmp_path)[0]
    _rewrite_header(seg, magic, version)
    with pytest.raises(StorageFormatError, match=seg.name):
        log.Log(tmp_path)


def test_damaged_header_is_corruption(log: ModuleType, tmp_path: Path) -> None:
    with log.Log(tmp_path) as lg:
        lg.append(make(log, 1, 3))
    seg = seg_files(tmp_path)[0]
    raw = bytearray(seg.read_bytes())
    raw[17] ^= 0x40  # first index, so the header CRC fails
    seg.write_bytes(bytes(raw))
    with pytest.raises(StorageCorrupted) as ei:
        log.Log(tmp_path)
    assert ei.value.path == str(seg) and ei.value.offset == 0


def test_missing_middle_segment_is_corruption(log: ModuleType, tmp_path: Path) -> None:
    with log.Log(tmp_path, segment_size=400) as lg:
        lg.append(make(log, 1, 40))
        lg.sync()
    segs = seg_files(tmp_path)
    assert len(segs) >= 3
    segs[1].unlink()
    with pytest.raises(StorageCorrupted, match=segs[2].name):
        log.Log(tmp_path, segment_size=400)


# ------------------------------------------------------------------ hard state
def test_hard_state_roundtrip(log: ModuleType, tmp_path: Path) -> None:
    p = tmp_path / "hs"
    with log.HardStateFile(p) as f:
        hs = f.load()
        assert (hs.term, hs.vote, hs.commit) == (0, 0, 0)
        for t in range(1, 6):
            f.save(log.HardState(term=t, vote=t + 10, commit=t * 3))
        assert f.load() == log.HardState(5, 15, 15)
    for mod in (log, other_twin(log)):
        with mod.HardStateFile(p) as f:
            hs = f.load()
            assert (hs.term, hs.vote, hs.commit) == (5, 15, 15)
    with log.HardStateFile(p) as f:  # save without load continues the sequence
        f.save(log.HardState(6, 0, 16))
        assert f.load() == log.HardState(6, 0, 16)
    assert p.stat().st_size == 1024


def _corrupt(p: Path, offset: int) -> None:
    raw = bytearray(p.read_bytes())
    raw[offset] ^= 0xFF
    p.write_bytes(bytes(raw))


def test_hard_state_torn_slot_uses_the_other(log: ModuleType, tmp_path: Path) -> None:
    p = tmp_path / "hs"
    with log.HardStateFile(p) as f:
        f.save(log.HardState(3, 1, 7))  # slot 1 (seq 1)
        f.save(log.HardState(4, 2, 9))  # slot 0 (seq 2)
    _corrupt(p, 30)  # the newest slot: fall back to the previous save
    with log.HardStateFile(p) as f:
        assert f.load() == log.HardState(3, 1, 7)
        f.save(log.HardState(5, 0, 9))
        assert f.load() == log.HardState(5, 0, 9)
    with log.HardStateFile(p) as f:
        assert f.load() == log.HardState(5, 0, 9)


def test_hard_state_both_slots_bad(log: ModuleType, tmp_path: Path) -> None:
    p = tmp_path / "hs"
    with log.HardStateFile(p) as f:
        f.save(log.HardState(3, 1, 7))
        f.save(log.HardState(4, 2, 9))
    _corrupt(p, 30)
    _corrupt(p, 512 + 30)
    with log.HardStateFile(p) as f, pytest.raises(StorageCorrupted) as ei:
        f.load()
    assert ei.value.path == str(p)


def test_hard_state_foreign_file(log: ModuleType, tmp_path: Path) -> None:
    p = tmp_path / "hs"
    p.write_bytes(os.urandom(1024))
    with log.HardStateFile(p) as f, pytest.raises(StorageFormatError, match="hs"):
        f.load()


def test_first_entry_larger_than_an_empty_segment(log: ModuleType, tmp_path: Path) -> None:
    E = entry_cls(log)
    with log.Log(tmp_path, segment_size=256, max_entry_size=4096) as lg:
        lg.append([E(1, 1, 0, b"z" * 1000), E(2, 1, 0, b"y")])
        lg.sync()
        assert [p.name for p in seg_files(tmp_path)] == [log.segment_name(1), log.segment_name(2)]
        assert lg.compact(1) == 2
    with log.Log(tmp_path, segment_size=256) as lg:
        assert (lg.first_index, lg.last_index, lg.recovery) == (2, 2, None)
