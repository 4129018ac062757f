"""Benchmark cases of pgraft._core and its pure twin (used by micro.py and test_bench_core.py).

``CASES`` is a list of ``(name, make)``; ``make(module)`` does the setup with ``module``
(pgraft._core or pgraft._core_py) and returns a zero-argument callable that performs one
operation.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

Op = Callable[[], Any]


def _append_entries(core: ModuleType, n: int = 64, size: int = 64) -> Any:
    """A leader's MsgApp: entries built (and their records cached) before it is sent."""
    entries = [core.Entry(1001 + k, 7, core.ENTRY_NORMAL, bytes([k % 256]) * size)
               for k in range(n)]
    for e in entries:
        _ = e.record
    return core.Message(core.MSG_APP, src=1, dst=2, term=7, log_term=7, index=1000,
                        commit=990, entries=entries)


def make_encode(core: ModuleType) -> Op:
    msg = _append_entries(core)
    encode = core.encode_message
    return lambda: encode(msg)


def make_decode(core: ModuleType) -> Op:
    body = core.encode_message(_append_entries(core))[core.FRAME_HEADER_SIZE:]
    decode = core.decode_message
    return lambda: decode(body)


def make_commit_index(voters: int) -> Callable[[ModuleType], Op]:
    def make(core: ModuleType) -> Op:
        ids = frozenset(range(1, voters + 1))
        match = {v: 5000 + 37 * v % 11 for v in ids}
        match[voters + 1] = 9999  # a learner: never counted
        committed = core.committed_index
        return lambda: committed(ids, match)
    return make


def make_crc(core: ModuleType) -> Op:
    data = bytes(range(256)) * 16
    crc = core.crc32c
    return lambda: crc(data)


CASES: list[tuple[str, Callable[[ModuleType], Op]]] = [
    ("appendentries_encode_64x64B", make_encode),
    ("appendentries_decode_64x64B", make_decode),
    ("commit_index_3_voters", make_commit_index(3)),
    ("commit_index_5_voters", make_commit_index(5)),
    ("commit_index_7_voters", make_commit_index(7)),
    ("crc32c_4KiB", make_crc),
]
