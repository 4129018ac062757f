"""The lost-unsynced-writes model on a real log: a child process appends, syncs part of it and
dies; the model must keep every synced entry and drop what never reached the disk."""

from __future__ import annotations

import os

import pytest
from chaos_disk import cachestat_available, lose_unsynced

from pgraft._impl import core, log

pytestmark = pytest.mark.skipif(cachestat_available() is not None,
                                reason=f"cachestat: {cachestat_available()}")


def _child(data_dir: str, synced: int, unsynced: int, size: int, hs_unsynced: bool) -> None:
    lg = log.Log(os.path.join(data_dir, "log"), segment_size=1 << 20)
    hs = log.HardStateFile(os.path.join(data_dir, "hardstate"))
    lg.append([core.Entry(i, 1, 0, bytes([i % 251]) * size) for i in range(1, synced + 1)])
    lg.sync()
    hs.save(log.HardState(1, 1, synced))
    lg.append([core.Entry(i, 1, 0, bytes([i % 251]) * size)
               for i in range(synced + 1, synced + unsynced + 1)])
    if hs_unsynced:
        # What save does, minus its fdatasync: a pwrite that was never synced.
        fd = os.open(os.path.join(data_dir, "hardstate"), os.O_RDWR)
        slot = log.encode_hard_state_slot(2, log.HardState(5, 2, synced))
        os.pwrite(fd, slot, 0)
    os._exit(0)


def _contents(d: str) -> dict[str, bytes]:
    out = {}
    for root, _dirs, files in os.walk(d):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.join(root, name)] = f.read()
    return out


def _run(tmp_path, synced: int, unsynced: int, size: int, hs_unsynced: bool = False):
    d = str(tmp_path)
    pid = os.fork()
    if pid == 0:
        try:
            _child(d, synced, unsynced, size, hs_unsynced)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    before = _contents(d)
    dry = lose_unsynced(d, apply=False)  # the nemesis's look before it kills
    assert _contents(d) == before, "a dry run changed the data directory"
    report = lose_unsynced(d)
    # (the kernel writes dirty pages back only after ~30 s: nothing changed in between)
    assert (dry.entries_lost, dry.last_index_after) == (report.entries_lost,
                                                        report.last_index_after)
    lg = log.Log(os.path.join(d, "log"), segment_size=1 << 20)
    try:
        last = lg.last_index
        for i in range(1, last + 1):
            assert bytes(lg.entry(i).data) == bytes([i % 251]) * size
    finally:
        lg.close()
    hs = log.HardStateFile(os.path.join(d, "hardstate"))
    try:
        state = hs.load()
    finally:
        hs.close()
    return report, last, state


def test_big_unsynced_entries_are_lost_synced_ones_kept(tmp_path) -> None:
    report, last, _ = _run(tmp_path, synced=20, unsynced=30, size=3000)
    assert report.last_index_before == 50
    # Every synced entry is kept; at most the entries ending in the first dirty page survive
    # (page-cache bound), exactly the synced ones when the disk's copy of that page is read.
    assert 20 <= last <= 22
    if report.exact:
        assert last == 20
    assert report.entries_lost == 50 - last and report.bytes_zeroed > 0


def test_nothing_unsynced_nothing_lost(tmp_path) -> None:
    report, last, _ = _run(tmp_path, synced=40, unsynced=0, size=100)
    assert last == 40 and report.entries_lost == 0 and report.bytes_zeroed == 0


def test_unsynced_hard_state_reverts_to_the_previous_one(tmp_path) -> None:
    report, _, state = _run(tmp_path, synced=5, unsynced=0, size=10, hs_unsynced=True)
    assert report.hard_state_reverted
    assert (state.term, state.vote) == (1, 1)
