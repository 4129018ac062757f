"""Benchmark cases of the durable log, for benchmarks/micro.py and test_bench_log.py.

``CASES`` is a list of ``(name, make)``: ``make(module)`` (``pgraft._log`` or ``pgraft._log_py``)
returns a zero-arg callable doing one operation, repeatable any number of times. The other
functions are issue 2's whole-log measurements. Logs live in temporary directories under
``$PGRAFT_BENCH_DIR`` (default: the system temp dir), removed when done.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

PAYLOAD = bytes(range(64))


def _entry_cls(module: ModuleType) -> Any:
    """The Entry type that goes with a log twin (compiled Entry for the compiled log)."""
    core = "pgraft._core_py" if module.__name__.endswith("_py") else "pgraft._core"
    return importlib.import_module(core).Entry


def _tempdir() -> str:
    return tempfile.mkdtemp(prefix="pgraft-bench-log-", dir=os.environ.get("PGRAFT_BENCH_DIR"))


def _batch(module: ModuleType, n: int) -> list[Any]:
    entry = _entry_cls(module)
    return [entry(k + 1, 1, 0, PAYLOAD) for k in range(n)]


def _renumber(batch: list[Any], first: int) -> None:
    # Reusing the objects keeps allocation out of the measurement; setting the index drops
    # any cached record, so every append encodes (and CRCs) its entries afresh.
    for k, e in enumerate(batch):
        e.index = first + k


def make_append_batch(module: ModuleType) -> Callable[[], None]:
    """Append a batch of 1000 64-byte entries (no sync). Old segments are compacted away so
    the disk use stays bounded; segment creation and removal are part of the cost."""
    d = _tempdir()
    log = module.Log(d, segment_size=8 * 1024 * 1024)
    batch = _batch(module, 1000)

    def run() -> None:
        _renumber(batch, log.last_index + 1)
        log.append(batch)
        if log.last_index - log.first_index > 200_000:
            log.compact(log.last_index - 100_000)

    weakref.finalize(run, _cleanup, log, d)
    return run


def make_read_entry(module: ModuleType) -> Callable[[], Any]:
    """Read one entry (zero-copy) from a 10,000-entry log."""
    d = _tempdir()
    log = module.Log(d)
    log.append(_batch(module, 10_000))
    log.sync()

    def run() -> Any:
        return log.entry(5_000)

    weakref.finalize(run, _cleanup, log, d)
    return run


def _cleanup(log: Any, d: str) -> None:
    log.close()
    shutil.rmtree(d, ignore_errors=True)


CASES: list[tuple[str, Callable[[ModuleType], Callable[[], Any]]]] = [
    ("log_append_1000x64B_batch", make_append_batch),
    ("log_read_entry", make_read_entry),
]


def bench_append_sync_throughput(module: ModuleType, n: int = 1_000_000,
                                 batch: int = 1000) -> float:
    """Entries/s appending ``n`` 64-byte entries in batches of ``batch``, one sync() per batch
    (default 64 MiB segments, created during the run as the log grows)."""
    d = _tempdir()
    try:
        with module.Log(d) as log:
            entries = _batch(module, batch)
            t0 = time.perf_counter()
            for first in range(1, n + 1, batch):
                _renumber(entries, first)
                log.append(entries)
                log.sync()
            elapsed = time.perf_counter() - t0
            assert log.last_index == n
        return n / elapsed
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_reopen(module: ModuleType, n: int = 1_000_000) -> float:
    """Seconds to open (recover: verify every CRC, rebuild the index) an ``n``-entry log of
    64-byte entries. The files are in the page cache, as after a process restart."""
    d = _tempdir()
    try:
        with module.Log(d) as log:
            entries = _batch(module, 1000)
            for first in range(1, n + 1, 1000):
                _renumber(entries, first)
                log.append(entries[: min(1000, n + 1 - first)])
            log.sync()
        t0 = time.perf_counter()
        with module.Log(d) as log:
            elapsed = time.perf_counter() - t0
            assert log.last_index == n and log.recovery is None
        return elapsed
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_append_sync_latency(module: ModuleType, n: int = 2000) -> list[int]:
    """Nanoseconds of each of ``n`` single 64-byte append + sync() calls."""
    d = _tempdir()
    entry = _entry_cls(module)
    out = []
    try:
        with module.Log(d) as log:
            for i in range(1, n + 1):
                e = [entry(i, 1, 0, PAYLOAD)]
                t0 = time.perf_counter_ns()
                log.append(e)
                log.sync()
                out.append(time.perf_counter_ns() - t0)
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_raw_write_fdatasync(n: int = 2000) -> list[int]:
    """Nanoseconds of each of ``n`` raw os.write + os.fdatasync of 64 bytes appended to a file
    in the same place as the logs: the floor for one durable append."""
    d = _tempdir()
    out = []
    try:
        fd = os.open(os.path.join(d, "raw"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for _ in range(n):
                t0 = time.perf_counter_ns()
                os.write(fd, PAYLOAD)
                os.fdatasync(fd)
                out.append(time.perf_counter_ns() - t0)
        finally:
            os.close(fd)
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)
