"""A really full file system (a small ext4 on a loop device, made by the test; tmpfs if loop
devices are not available): StorageFull, nothing lost, nothing half-written; the node's
storage resumes once space is freed and everything reopens intact. Needs root (mount)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgraft.errors import StorageFull
from pgraft.node.storage import FAILED_MARKER, DiskStorage
from pgraft.raft.membership import Member, Membership
from pgraft.raft.types import HardState, SnapshotMeta

MEMBERS = Membership({1: Member("127.0.0.1", 7001, "voter")})
SEGMENT = 1 << 20


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A 16 MiB ext4 on a loop device (or a 12 MiB tmpfs), mounted at tmp_path/mnt;
    unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts a small file system to fill it up")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    image = tmp_path / "fs.img"
    kind = ""
    if shutil.which("mkfs.ext4"):
        with open(image, "wb") as f:
            f.truncate(16 << 20)
        made = _run("mkfs.ext4", "-q", "-F", "-b", "4096", str(image))
        if made.returncode == 0 and _run("mount", "-o", "loop", str(image),
                                         str(mnt)).returncode == 0:
            kind = "ext4"
    if not kind:
        mounted = _run("mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt))
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a small file system: {mounted.stderr.strip()}")
        kind = "tmpfs"
    try:
        yield mnt, kind
    finally:
        _run("umount", "-l", str(mnt))
        with contextlib.suppress(OSError):
            image.unlink()


def fill(path: Path) -> int:
    """Write a ballast file until the file system is full; returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    total = 0
    try:
        for chunk in (1 << 20, 64 << 10, 4096, 512):
            block = b"\xa5" * chunk
            while True:
                try:
                    n = os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
                total += n
                if n < chunk:
                    break
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
    return total


def payload(i: int) -> bytes:
    return bytes([i % 251 + 1]) * 4000


def test_disk_full_on_a_real_file_system(twin: Any, small_fs: tuple[Path, str]) -> None:
    mnt, kind = small_fs
    d = mnt / "data"
    st = DiskStorage(str(d), 1, segment_size=SEGMENT)
    try:
        E = twin.entry
        st.append([E(i, 1, payload(i)) for i in range(1, 51)])  # ~200 KiB
        st.set_hard_state(HardState(1, 1, 50))
        st.sync()
        snap_a = st.snapshots.write(SnapshotMeta(10, 1, MEMBERS), b"A" * 100_000)
        st.snapshots.set_current(snap_a)
        st.set_snapshot(snap_a.meta)
        snap_bytes = Path(snap_a.path).read_bytes()

        ballast = mnt / "ballast"
        assert fill(ballast) > 0

        # Appends into the segment's preallocated space, their syncs (and the zeroing ahead in
        # sync) and hard state saves need no free space: they go on with the disk full.
        st.append([E(i, 1, payload(i)) for i in range(51, 200)])  # ~800 KiB: the segment
        st.set_hard_state(HardState(2, 1, 150))
        st.sync()
        assert st.failed is None and st.last_index() == 199
        assert st.check_space() and st.space_low

        # The next entries need a new segment: StorageFull, and nothing of the batch is there.
        log_dir = d / "log"
        before = sorted(os.listdir(log_dir))
        batch = [E(i, 2, payload(i)) for i in range(200, 300)]
        with pytest.raises(StorageFull) as ei:
            st.append(batch)
        assert "No space left on device" in str(ei.value) and str(log_dir) in str(ei.value)
        assert st.last_index() == 199 and st.failed is None and st.space_low
        assert sorted(os.listdir(log_dir)) == before  # no temp file left behind
        assert not (d / FAILED_MARKER).exists()
        st.sync()  # still a working storage

        # A snapshot that does not fit: StorageFull, the current one intact, no temp file.
        with pytest.raises(StorageFull):
            st.snapshots.write(SnapshotMeta(150, 1, MEMBERS), b"B" * 3_000_000)
        assert Path(snap_a.path).read_bytes() == snap_bytes
        assert os.listdir(d / "snap") == [os.path.basename(snap_a.path)]

        # Space is freed: the same append succeeds, and so does the snapshot.
        ballast.unlink()
        os.sync()
        st.append(batch)
        st.set_hard_state(HardState(2, 1, 299))
        st.sync()
        assert not st.check_space() and not st.space_low
        snap_b = st.snapshots.write(SnapshotMeta(150, 1, MEMBERS), b"B" * 3_000_000)
        st.snapshots.set_current(snap_b)
        st.set_snapshot(snap_b.meta)
    finally:
        st.close()

    st = DiskStorage(str(d), 1, segment_size=SEGMENT)
    try:
        assert st._log.recovery is None, kind
        assert st.hard_state() == HardState(2, 1, 299) and st.last_index() == 299
        got = st.entries(1, 300, 1 << 30)
        assert [(e.index, e.term, bytes(e.data)) for e in got] == (
            [(i, 1, payload(i)) for i in range(1, 200)]
            + [(i, 2, payload(i)) for i in range(200, 300)])
        assert st.snapshot_meta() == SnapshotMeta(150, 1, MEMBERS)
        assert st.snapshots.load_data() == b"B" * 3_000_000
    finally:
        st.close()
