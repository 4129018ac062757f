"""The log against an in-memory model under random append / sync / truncate_after / compact /
reset / reopen, with segments small enough to roll often."""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from types import ModuleType

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

SEGMENT = 600
MAX_ENTRY = 900


def machine_for(log: ModuleType, root: Path) -> type[RuleBasedStateMachine]:
    core = "pgraft._core_py" if log.__name__.endswith("_py") else "pgraft._core"
    Entry = importlib.import_module(core).Entry

    class LogMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.dir = tempfile.mkdtemp(dir=root)
            self.log = log.Log(self.dir, segment_size=SEGMENT, max_entry_size=MAX_ENTRY)
            self.first = 1
            self.model: list[tuple[int, int, bytes]] = []  # (term, type, data) from self.first
            self.term = 1

        @property
        def last(self) -> int:
            return self.first + len(self.model) - 1

        @rule(sizes=st.lists(st.integers(0, MAX_ENTRY), min_size=1, max_size=8),
              bump=st.booleans(), typ=st.integers(0, 255))
        def append(self, sizes: list[int], bump: bool, typ: int) -> None:
            self.term += bump
            new = [(self.term, typ, bytes([(self.last + k) % 256]) * n)
                   for k, n in enumerate(sizes, start=1)]
            self.log.append([Entry(self.last + k, t, ty, d)
                             for k, (t, ty, d) in enumerate(new, start=1)])
            self.model += new

        @rule()
        def sync(self) -> None:
            self.log.sync()
            assert self.log.synced_index == self.last

        @rule(data=st.data())
        def truncate_after(self, data: st.DataObject) -> None:
            index = data.draw(st.integers(self.first - 1, self.last + 2))
            self.log.truncate_after(index)
            if index < self.last:
                del self.model[index + 1 - self.first:]
            assert self.log.synced_index <= self.last

        @rule(data=st.data())
        def compact(self, data: st.DataObject) -> None:
            index = data.draw(st.integers(self.first - 1, self.last + 2))
            new_first = self.log.compact(index)
            assert self.first <= new_first <= max(self.first, min(index + 1, self.last + 1))
            del self.model[: new_first - self.first]
            self.first = new_first

        @rule(first=st.integers(1, 10**6))
        def reset(self, first: int) -> None:
            self.log.reset(first)
            self.first, self.model = first, []

        @rule()
        def reopen(self) -> None:
            self.log.close()  # no crash: unsynced bytes are still in the page cache
            self.log = log.Log(self.dir, segment_size=SEGMENT, max_entry_size=MAX_ENTRY)
            assert self.log.recovery is None
            assert self.log.synced_index == self.last

        @precondition(lambda self: self.model)
        @rule(data=st.data())
        def read_one(self, data: st.DataObject) -> None:
            index = data.draw(st.integers(self.first, self.last))
            term, typ, payload = self.model[index - self.first]
            e = self.log.entry(index)
            assert (e.index, e.term, e.type, bytes(e.data)) == (index, term, typ, payload)
            assert self.log.term(index) == term

        @invariant()
        def matches_model(self) -> None:
            assert (self.log.first_index, self.log.last_index) == (self.first, self.last)
            got = self.log.entries(self.first, self.last + 1)
            assert [(e.term, e.type, bytes(e.data)) for e in got] == self.model
            assert self.log.byte_size == sum(28 + len(d) for _t, _ty, d in self.model)

        def teardown(self) -> None:
            self.log.close()

    return LogMachine


def test_log_against_model(log: ModuleType, tmp_path: Path) -> None:
    run_state_machine_as_test(machine_for(log, tmp_path),
                              settings=settings(max_examples=60, stateful_step_count=25,
                                                deadline=None))
