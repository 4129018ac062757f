"""An Entry's index, term and record size, as the Raft core's hot paths read them.

Compiled (``entry.pxd``), these read the C fields of ``pgraft._core.Entry``
(``pgraft/_core.pxd``): a property read from compiled code is an attribute lookup by name and a
new integer object, which cost more than the decisions that need the value. Interpreted, they
are C attribute getters of the properties (``operator.attrgetter``), not a Python call each.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

try:
    import cython  # compiled: read at compile time (cython.compiled); interpreted: Cython's shadow
except ImportError:  # interpreted where Cython is not installed (a wheel's pure twins)
    from . import _nocython as cython  # type: ignore[no-redef]


def index_of(e: Any) -> int:
    """``e.index``."""
    return entry_index(e)  # type: ignore[name-defined, no-any-return]  # noqa: F821


def term_of(e: Any) -> int:
    """``e.term``."""
    return entry_term(e)  # type: ignore[name-defined, no-any-return]  # noqa: F821


def size_of(e: Any) -> int:
    """``e.size``: bytes of the record, what batches are measured in."""
    return entry_size(e)  # type: ignore[name-defined, no-any-return]  # noqa: F821


if not cython.compiled:  # (compiled, the names above are cimported by entry.pxd)
    index_of = attrgetter("index")  # type: ignore[assignment]  # noqa: F811
    term_of = attrgetter("term")  # type: ignore[assignment]  # noqa: F811
    size_of = attrgetter("size")  # type: ignore[assignment]  # noqa: F811
