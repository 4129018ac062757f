"""pgraft.raft.entry: the Raft core's reads of an Entry's index, term and size.

Compiled, they read the C fields of ``pgraft._core.Entry``; they must agree with the Entry's
properties for an entry made from its fields and one decoded from a record, and refuse what
is not an Entry with a TypeError rather than read memory that is not one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import pgraft
from pgraft._impl import core
from pgraft.raft.entry import index_of, size_of, term_of


@pytest.mark.parametrize("payload", [b"", b"x", b"y" * 300])
def test_fields_agree_with_the_properties(payload: bytes) -> None:
    made = core.Entry(7, 3, core.ENTRY_NORMAL, payload)
    decoded = core.Entry.from_record(made.record)
    fresh = core.Entry(2**63 - 1, 2**40, core.ENTRY_CONF_CHANGE, payload)  # no record yet
    for e in (made, decoded, fresh):
        assert (index_of(e), term_of(e), size_of(e)) == (e.index, e.term, e.size)
    assert size_of(made) == core.RECORD_HEADER_SIZE + len(payload)


def test_a_changed_field_is_read_back() -> None:
    e = core.Entry(1, 1, core.ENTRY_NORMAL, b"abc")
    e.term = 9
    e.data = b"abcdef"
    assert (term_of(e), size_of(e)) == (9, core.RECORD_HEADER_SIZE + 6)


@pytest.mark.parametrize("read", [index_of, term_of, size_of])
def test_what_is_not_an_entry_is_refused(read: Callable[[object], int]) -> None:
    # compiled: a TypeError before any field is read; interpreted: the attribute is missing
    expected = TypeError if pgraft.IMPLEMENTATION == "compiled" else (TypeError, AttributeError)
    for bad in (None, 5):
        with pytest.raises(expected):
            read(bad)
