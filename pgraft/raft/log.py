"""The core's view of the log: durable storage plus the entries not yet persisted.

``unstable`` holds entries the core appended (proposals on the leader, AppendEntries on a
follower) that the runtime has not reported durable; the first of them is at ``offset``.
Entries up to ``handed`` were given to the runtime in a Ready and are being written. A
snapshot received from the leader waits in ``unstable_snapshot`` until it is installed.
Everything below ``offset`` is read from :class:`~pgraft.raft.storage.Storage`.
"""

from __future__ import annotations

from typing import Any

from .entry import index_of, term_of
from .storage import Compacted, Storage, limit_size, take_limited
from .types import SnapshotMeta


class RaftLog:
    __slots__ = ("storage", "unstable", "offset", "handed", "unstable_snapshot",
                 "snapshot_handed", "committed", "applied", "max_apply_bytes", "_last")

    def __init__(self, storage: Storage, applied: int, max_apply_bytes: int) -> None:
        self.storage = storage
        last = storage.last_index()
        self.unstable: list[Any] = []
        self.offset = last + 1
        self.handed = last
        self.unstable_snapshot: SnapshotMeta | None = None
        self.snapshot_handed = False
        snap_index = storage.first_index() - 1
        self.committed = max(storage.hard_state().commit, snap_index)
        self.applied = min(max(applied, snap_index), self.committed)
        self.max_apply_bytes = max_apply_bytes
        self._last = last

    # ------------------------------------------------------------ positions
    def last_index(self) -> int:
        return self._last

    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index + 1
        return self.storage.first_index()

    def snapshot_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index
        return self.storage.first_index() - 1

    def term(self, index: int) -> int | None:
        """Term at ``index``, or None if it is compacted or beyond the end."""
        off = self.offset
        if index >= off:
            i = index - off
            return term_of(self.unstable[i]) if i < len(self.unstable) else None
        snap = self.unstable_snapshot
        if snap is not None:
            return snap.term if index == snap.index else None
        try:
            return self.storage.term(index)
        except Compacted:
            return None

    def last_term(self) -> int:
        t = self.term(self._last)
        return 0 if t is None else t

    def is_up_to_date(self, index: int, term: int) -> bool:
        """Is a candidate's log (last entry ``index``/``term``) at least as up to date?"""
        lt = self.last_term()
        return term > lt or (term == lt and index >= self._last)

    # -------------------------------------------------------------- reading
    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Any]:
        """Entries ``[lo, hi)`` within ``max_bytes`` (at least one). Raises Compacted."""
        if lo >= hi:
            return []
        off = self.offset
        if lo >= off:
            return take_limited(self.unstable, lo - off, hi - off, max_bytes)
        if self.unstable_snapshot is not None:
            raise Compacted(lo)
        ents = self.storage.entries(lo, min(hi, off), max_bytes)
        if hi <= off or lo + len(ents) < off:
            return ents
        return limit_size(ents + self.unstable[:hi - off], max_bytes)

    def entries_from(self, lo: int, max_bytes: int) -> list[Any]:
        return self.slice(lo, self._last + 1, max_bytes)

    def all_entries(self) -> list[Any]:
        return self.slice(self.first_index(), self._last + 1, 1 << 62)

    # -------------------------------------------------------------- writing
    def append(self, ents: list[Any]) -> None:
        """Append entries whose first index is at most last+1, truncating what follows."""
        if not ents:
            return
        first = index_of(ents[0])
        off = self.offset
        if first == off + len(self.unstable):
            self.unstable.extend(ents)
        elif first <= off:
            # replace everything unstable; storage keeps a stale suffix until the runtime
            # appends the new entries (Storage.append truncates it)
            self.offset = first
            self.unstable = list(ents)
        else:
            del self.unstable[first - off:]
            self.unstable.extend(ents)
        if self.handed >= first:
            self.handed = first - 1
        self._last = index_of(ents[-1])

    def find_conflict(self, ents: list[Any]) -> int:
        """Index of the first entry of ``ents`` not in the log (different term or beyond the
        end); 0 if all are present."""
        for e in ents:
            t = self.term(e.index)
            if t is None or t != e.term:
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, with its term: a leader
        that rejected-probed at ``index`` with ``term`` can skip to there (fast back-off)."""
        index = min(index, self._last)
        first = self.first_index()
        while index >= first - 1:
            t = self.term(index)
            if t is None:
                break
            if t <= term:
                return index, t
            index -= 1
        return first - 1, 0

    def maybe_append(self, prev_index: int, prev_term: int, commit: int,
                     ents: list[Any]) -> int | None:
        """AppendEntries consistency check and append (``prev_index`` is at least the commit
        index: the caller answers older ones directly). The new last index, or None if the log
        does not contain ``prev_index`` with ``prev_term``."""
        t = self.term(prev_index)
        if t is None or t != prev_term:
            return None
        last_new = prev_index + len(ents)
        if ents:
            ci = self.find_conflict(ents)
            if ci:
                if ci <= self.committed:
                    raise AssertionError(
                        f"entry {ci} conflicts with the committed log (committed "
                        f"{self.committed})")
                self.append(ents[ci - ents[0].index:])
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            if index > self._last:
                raise AssertionError(f"commit {index} is beyond the last index {self._last}")
            self.committed = index
            return True
        return False

    def restore(self, meta: SnapshotMeta) -> None:
        self.unstable_snapshot = meta
        self.snapshot_handed = False
        self.unstable = []
        self.offset = meta.index + 1
        self.handed = meta.index
        self.committed = meta.index
        self._last = meta.index

    # ------------------------------------------------- Ready / advance helpers
    def has_unhanded(self) -> bool:
        return self.handed < self._last or (
            self.unstable_snapshot is not None and not self.snapshot_handed)

    def take_unhanded(self) -> list[Any]:
        start = self.handed + 1 - self.offset
        if start < 0:
            start = 0
        ents = self.unstable[start:]
        self.handed = self._last
        return ents

    def stable_to(self, index: int, term: int) -> None:
        """The runtime made entries up to ``index`` (of ``term``) durable."""
        off = self.offset
        i = index - off
        if i < 0 or i >= len(self.unstable) or term_of(self.unstable[i]) != term:
            return
        del self.unstable[:i + 1]
        self.offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        snap = self.unstable_snapshot
        if snap is not None and snap.index == index:
            self.unstable_snapshot = None
            self.snapshot_handed = False

    # Committed entries are applied once they are handed to the runtime, not once they are
    # durable here: a committed entry is durable on a quorum already, and the runtime writes a
    # Ready's entries before it applies its committed ones. A node that catches up (or joins)
    # applies what it receives without waiting for its own sync first.
    def has_next_committed(self) -> bool:
        if self.unstable_snapshot is not None:
            return False
        return self.applied < min(self.committed, self.handed)

    def next_committed(self) -> list[Any]:
        if self.unstable_snapshot is not None:
            return []
        hi = min(self.committed, self.handed)
        if self.applied >= hi:
            return []
        return self.slice(self.applied + 1, hi + 1, self.max_apply_bytes)
