"""Crash simulation: damage the segment files after the synced boundary (cut, zero, or a lost
sector) and reopen: every synced record is intact, nothing after the damage comes back, never
garbage; a bad record followed by good ones is StorageCorrupted naming file and offset."""

from __future__ import annotations

import importlib
import os
import shutil
import struct
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgraft.errors import StorageCorrupted

HEADER = 32
SECTOR = 512


def entry_cls(log: ModuleType) -> type:
    name = "pgraft._core_py" if log.__name__.endswith("_py") else "pgraft._core"
    return importlib.import_module(name).Entry


def payload(i: int, size: int) -> bytes:
    return bytes((i * 7 + k) % 255 + 1 for k in range(size))  # never zero: damage is visible


def layout(d: Path) -> list[tuple[int, Path, int, int]]:
    """(index, file, start, end) of every record, parsed independently of the log."""
    out = []
    for seg in sorted(d.glob("*.seg")):
        raw = seg.read_bytes()
        off = HEADER
        while off + 28 <= len(raw):
            length, index = struct.unpack_from("<IQ", raw, off + 4)
            if index == 0:
                break
            out.append((index, seg, off, off + 28 + length))
            off += 28 + length
    return out


def build(log: ModuleType, d: Path, sizes: list[int], synced: int, segment_size: int) -> int:
    """Append entries of ``sizes``, sync after the first ``synced``; return synced_index."""
    E = entry_cls(log)
    with log.Log(d, segment_size=segment_size) as lg:
        lg.append([E(i + 1, 1 + i // 3, 0, payload(i, s)) for i, s in enumerate(sizes[:synced])])
        lg.sync()
        lg.append([E(i + 1, 1 + i // 3, 0, payload(i, s))
                   for i, s in enumerate(sizes[synced:], start=synced)])
        return lg.synced_index  # close() does not sync: the rest is "unsynced"


def damage(path: Path, mode: str, at: int) -> None:
    if mode == "cut":
        os.truncate(path, at)
    elif mode == "zero":
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(bytes(size - at))
    else:  # one lost sector: the write of the sector holding `at` never reached the disk
        start = at - at % SECTOR
        with open(path, "r+b") as f:
            f.seek(start)
            f.write(bytes(SECTOR))


def intact_prefix(lay: list, path: Path, before: bytes) -> int:
    """Last index of the records that the damage left byte-identical, up to the first changed
    one. A cut that removes only bytes that were zeros anyway (e.g. the high bytes of a small
    term) leaves a record intact: recovery rightly keeps it."""
    after = path.read_bytes()
    after += bytes(max(0, len(before) - len(after)))  # recovery re-extends with zeros
    last = 0
    for index, seg, start, end in lay:
        if seg.name == path.name and before[start:end] != after[start:end]:
            break
        last = index
    return last


def check_reopen(log: ModuleType, d: Path, sizes: list[int], synced: int, lay: list,
                 path: Path, at: int, mode: str, segment_size: int, before: bytes) -> None:
    expect_last = intact_prefix(lay, path, before)
    with log.Log(d, segment_size=segment_size) as lg:
        assert lg.last_index == expect_last, (mode, at)
        assert lg.last_index >= synced
        for e in lg.entries(lg.first_index, lg.last_index + 1) if lg.last_index else []:
            assert bytes(e.data) == payload(e.index - 1, sizes[e.index - 1])
        if lg.recovery is not None:
            assert lg.recovery.cut_path in (str(path), None)
        # Nothing beyond the cut may resurrect: append new entries and reopen.
        E = entry_cls(log)
        nxt = lg.last_index + 1
        lg.append([E(nxt, 99, 0, b"new")])
        lg.sync()
    with log.Log(d, segment_size=segment_size) as lg:
        assert lg.recovery is None and lg.last_index == nxt
        assert bytes(lg.entry(nxt).data) == b"new"


def test_every_offset_of_a_small_log(log: ModuleType, tmp_path: Path) -> None:
    sizes = [5, 40, 0, 17, 64, 3, 100, 9, 30, 1]
    pristine = tmp_path / "pristine"
    synced = build(log, pristine, sizes, 5, 4096)
    lay = layout(pristine)
    assert len(lay) == len(sizes) and synced == 5
    path = lay[-1][1]
    boundary = lay[synced][2]
    for mode in ("cut", "zero"):
        for at in range(boundary, lay[-1][3] + 2):
            d = tmp_path / f"{mode}{at}"
            shutil.copytree(pristine, d)
            before = (d / path.name).read_bytes()
            damage(d / path.name, mode, at)
            check_reopen(log, d, sizes, synced, lay, d / path.name, at, mode, 4096, before)
            shutil.rmtree(d)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 700), min_size=2, max_size=30), data=st.data(),
       mode=st.sampled_from(["cut", "zero", "sector"]))
def test_damage_after_synced_boundary(log: ModuleType, tmp_path_factory: pytest.TempPathFactory,
                                      sizes: list[int], data: st.DataObject, mode: str) -> None:
    d = tmp_path_factory.mktemp("crash")
    synced_n = data.draw(st.integers(0, len(sizes)), label="synced")
    synced = build(log, d, sizes, synced_n, 2048)
    lay = layout(d)
    last_file = sorted(d.glob("*.seg"))[-1]
    # A segment rolls over only after the previous one is synced: damage is in the last one.
    unsynced = [r for r in lay if r[0] > synced]
    assert all(r[1] == last_file for r in unsynced)
    boundary = unsynced[0][2] if unsynced else ([r[3] for r in lay if r[1] == last_file] or
                                                [HEADER])[-1]
    end = max([r[3] for r in lay if r[1] == last_file] + [boundary])
    at = data.draw(st.integers(boundary, end + 8), label="at")
    if mode == "sector" and at - at % SECTOR < boundary:
        at = boundary - boundary % SECTOR + SECTOR  # a lost sector must not hold synced bytes
    before = last_file.read_bytes()
    damage(last_file, mode, at)
    check_reopen(log, d, sizes, synced, lay, last_file, at, mode, 2048, before)


def test_flipped_byte_in_a_middle_record(log: ModuleType, tmp_path: Path) -> None:
    sizes = [30] * 20
    synced = build(log, tmp_path, sizes, 20, 1 << 16)
    assert synced == 20
    lay = layout(tmp_path)
    index, path, start, end = lay[9]
    raw = bytearray(path.read_bytes())
    raw[start + 40] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(StorageCorrupted) as ei:
        log.Log(tmp_path, segment_size=1 << 16)
    assert ei.value.path == str(path) and ei.value.offset == start
    assert path.name in str(ei.value) and str(start) in str(ei.value)


def test_flipped_length_in_a_middle_record(log: ModuleType, tmp_path: Path) -> None:
    build(log, tmp_path, [30] * 20, 20, 1 << 16)
    index, path, start, end = layout(tmp_path)[4]
    raw = bytearray(path.read_bytes())
    raw[start + 6] ^= 0x10  # the record now claims to reach past every later record
    path.write_bytes(bytes(raw))
    with pytest.raises(StorageCorrupted) as ei:
        log.Log(tmp_path, segment_size=1 << 16)
    assert ei.value.offset == start


def test_bad_record_in_an_earlier_segment(log: ModuleType, tmp_path: Path) -> None:
    build(log, tmp_path, [100] * 30, 30, 1024)
    lay = layout(tmp_path)
    first_file = lay[0][1]
    last_in_first = [r for r in lay if r[1] == first_file][-1]
    raw = bytearray(first_file.read_bytes())
    raw[last_in_first[2] + 30] ^= 0x01  # its last record: still corruption, not a torn tail
    first_file.write_bytes(bytes(raw))
    with pytest.raises(StorageCorrupted) as ei:
        log.Log(tmp_path, segment_size=1024)
    assert ei.value.path == str(first_file) and ei.value.offset == last_in_first[2]


def test_torn_tail_is_reported(log: ModuleType, tmp_path: Path) -> None:
    synced = build(log, tmp_path, [50] * 10, 6, 1 << 16)
    lay = layout(tmp_path)
    path, start = lay[synced][1], lay[synced][2]
    damage(path, "cut", start + 10)
    with log.Log(tmp_path, segment_size=1 << 16) as lg:
        assert lg.last_index == synced
        r = lg.recovery
        assert (r.cut_path, r.cut_offset, r.removed_segments) == (str(path), start, [])
        assert 0 < r.cut_bytes <= 10  # up to the last non-zero byte left
    assert path.stat().st_size == 1 << 16  # re-extended


def test_segment_cut_shorter_than_its_header(log: ModuleType, tmp_path: Path) -> None:
    synced = build(log, tmp_path, [100] * 30, 30, 1024)
    files = sorted(tmp_path.glob("*.seg"))
    os.truncate(files[-1], 10)
    with log.Log(tmp_path, segment_size=1024) as lg:
        assert lg.recovery.removed_segments == [str(files[-1])]
        assert lg.last_index == int(files[-1].name[:20]) - 1 < synced
    # The only segment: it is recreated empty at the index its name gives.
    d = tmp_path / "one"
    build(log, d, [10] * 3, 3, 1024)
    seg = sorted(d.glob("*.seg"))[0]
    os.truncate(seg, 20)
    with log.Log(d, segment_size=1024) as lg:
        assert (lg.first_index, lg.last_index) == (1, 0)
        assert lg.recovery.cut_path == str(seg)


def test_header_missing_in_a_middle_segment(log: ModuleType, tmp_path: Path) -> None:
    build(log, tmp_path, [100] * 30, 30, 1024)
    files = sorted(tmp_path.glob("*.seg"))
    os.truncate(files[1], 10)
    with pytest.raises(StorageCorrupted) as ei:
        log.Log(tmp_path, segment_size=1024)
    assert ei.value.path == str(files[1])
