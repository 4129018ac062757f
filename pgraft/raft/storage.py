"""What the Raft core reads from durable storage, and an in-memory implementation.

The core only *reads* a :class:`Storage` (entries, terms, hard state, snapshot metadata).
The runtime *writes* it while handling a :class:`~pgraft.raft.Ready` — ``apply_snapshot``,
``append`` (which truncates a conflicting suffix), ``set_hard_state`` — and
:meth:`pgraft.raft.RawNode.bootstrap` writes the first entry of a brand-new cluster through the
same methods. The durable log of the runtime implements this protocol over ``pgraft._log``;
:class:`MemoryStorage` implements it over lists, for tests and the simulation.

Indexes: the snapshot covers ``[1, snapshot.index]``; entries ``[first_index(), last_index()]``
follow it, with ``first_index() <= snapshot.index + 1``: a durable log may keep some entries
behind its snapshot (so that a follower lagging a little catches up from the log), and
:class:`MemoryStorage` keeps none. ``term(snapshot.index)`` is the snapshot's term; asking for
an entry or term below ``first_index()`` (other than the snapshot's) raises
:class:`Compacted`.
"""

from __future__ import annotations

from typing import Any, Protocol

from .._impl import core
from .entry import index_of, size_of, term_of
from .membership import EMPTY
from .types import HardState, SnapshotMeta

ENTRY_CONF_CHANGE = core.ENTRY_CONF_CHANGE


class Compacted(Exception):
    """The requested index is covered by the snapshot: its entry is gone."""


class Storage(Protocol):
    """What the core reads of a node's durable log. Entries are the codec's
    (``pgraft._impl.core.Entry``): the compiled core reads their fields in C and refuses
    anything else with a TypeError."""

    def hard_state(self) -> HardState: ...

    def snapshot_meta(self) -> SnapshotMeta: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index`` (``snapshot.index`` included); raises
        :class:`Compacted` below it. ``index`` is never above ``last_index()``."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Any]:
        """Entries ``[lo, hi)``, stopping before the total size (record bytes) exceeds
        ``max_bytes`` but always at least one. Raises :class:`Compacted` if ``lo`` is."""
        ...

    def conf_entries(self, lo: int, hi: int) -> list[Any]:
        """The ENTRY_CONF_CHANGE entries in ``[lo, hi)``, in order (read at start-up to rebuild
        the configuration; a durable log may answer from an index instead of a scan)."""
        ...

    # written by the runtime (and by RawNode.bootstrap), never by the core
    def append(self, entries: list[Any]) -> None: ...

    def set_hard_state(self, hs: HardState) -> None: ...

    def apply_snapshot(self, meta: SnapshotMeta) -> None: ...


def limit_size(ents: list[Any], max_bytes: int) -> list[Any]:
    """The longest prefix of ``ents`` (at least one entry) within ``max_bytes``."""
    if not ents:
        return ents
    return take_limited(ents, 0, len(ents), max_bytes)


def take_limited(seq: list[Any], start: int, end: int, max_bytes: int) -> list[Any]:
    """``seq[start:end]`` cut to the longest prefix within ``max_bytes`` (one item at least),
    without copying more than it returns."""
    end = min(end, len(seq))
    if start >= end:
        return []
    total = 0
    j = start
    while j < end:
        total += size_of(seq[j])  # the record's size: no payload slice per entry
        if total > max_bytes and j > start:
            break
        j += 1
    return seq[start:j]


class MemoryStorage:
    """A :class:`Storage` in memory. ``append``/``set_hard_state``/``apply_snapshot`` are what
    a runtime's durable storage does with a Ready; ``compact`` drops the prefix covered by a
    snapshot the application made."""

    def __init__(self) -> None:
        self._hs = HardState()
        self._snap = SnapshotMeta(0, 0, EMPTY)
        # _ents[0] is a dummy at the snapshot index, holding the snapshot term.
        self._ents: list[Any] = [core.Entry(0, 0)]

    # reads
    def hard_state(self) -> HardState:
        return self._hs

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snap

    def first_index(self) -> int:
        return index_of(self._ents[0]) + 1

    def last_index(self) -> int:
        return index_of(self._ents[0]) + len(self._ents) - 1

    def term(self, index: int) -> int:
        off = index_of(self._ents[0])
        if index < off:
            raise Compacted(index)
        return term_of(self._ents[index - off])

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Any]:
        off = index_of(self._ents[0])
        if lo <= off:
            raise Compacted(lo)
        return take_limited(self._ents, lo - off, hi - off, max_bytes)

    def conf_entries(self, lo: int, hi: int) -> list[Any]:
        off = index_of(self._ents[0])
        lo = max(lo, off + 1)
        return [e for e in self._ents[lo - off:hi - off] if e.type == ENTRY_CONF_CHANGE]

    # writes
    def append(self, entries: list[Any]) -> None:
        if not entries:
            return
        off = index_of(self._ents[0])
        first = index_of(entries[0])
        if first <= off:  # the prefix is already covered by the snapshot
            entries = entries[off + 1 - first:]
            if not entries:
                return
            first = index_of(entries[0])
        if first > self.last_index() + 1:
            raise ValueError(f"gap in the log: appending {first} after {self.last_index()}")
        del self._ents[first - off:]
        self._ents.extend(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self._hs = hs

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace everything with the snapshot (a follower installing one)."""
        self._snap = meta
        self._ents = [core.Entry(meta.index, meta.term)]

    def compact(self, index: int, membership: Any) -> None:
        """The application took a snapshot at ``index`` (with the configuration in force
        there): drop the entries it covers."""
        off = index_of(self._ents[0])
        if index <= off:
            return
        if index > self.last_index():
            raise ValueError(f"compact {index} is beyond the last index {self.last_index()}")
        term = self._ents[index - off].term
        self._snap = SnapshotMeta(index, term, membership)
        self._ents = [core.Entry(index, term)] + self._ents[index - off + 1:]

    def copy(self) -> MemoryStorage:
        """An independent copy (the simulation's "disk" of a crashed node)."""
        s = MemoryStorage()
        s._hs = self._hs
        s._snap = self._snap
        s._ents = list(self._ents)
        return s
