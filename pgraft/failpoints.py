"""Failpoints: inject I/O errors and delays into the storage, for tests and fault campaigns.

Set ``PGRAFT_FAILPOINTS`` before the process starts (it is parsed once, at import)::

    PGRAFT_FAILPOINTS=log.sync=eio
    PGRAFT_FAILPOINTS=log.sync=delay:50ms,hardstate.save=eio@3

Syntax: a comma-separated list of ``<point>=<action>[@<n>]``; blanks around items are ignored.

Points (each fires at one place, identically in ``pgraft._log`` and ``pgraft._log_py``):

``log.sync``
    :meth:`Log.sync`, once per call, before any segment is flushed (also the syncs that
    ``truncate_after`` and a segment roll-over make).
``log.msync``
    every msync of a segment's dirty range, in place of the real call when it fails (after
    the records were written into the mapping, so the data is in the page cache only).
``log.segment_create``
    creating a segment file (a new segment, the file of a ``reset``, re-extending a truncated
    segment at open), in place of its ``posix_fallocate``.
``hardstate.save``
    :meth:`HardStateFile.save`, after the ``pwrite`` of the slot, in place of its
    ``fdatasync``.
``snapshot.write``
    writing a snapshot file (a snapshot taken, a chunk received), before each write.

Actions:

``eio``
    raise ``OSError(EIO)`` (naming the file).
``enospc``
    raise ``OSError(ENOSPC)``: the file system is full.
``delay:<n>ms`` (also ``<n>s``, ``<n>us``)
    sleep that long, then make the real call (a fault campaign uses it to widen the window
    in which written data is not yet durable).
``pass``
    do nothing; only count the calls (see :func:`hits`).

``@<n>`` makes the action start at the n-th call of the point (1-based; the calls before it
pass): ``log.sync=eio@3`` lets two syncs succeed and fails every later one.

When ``PGRAFT_FAILPOINTS`` is unset or empty the module is inert: :data:`ACTIVE` is None and
the storage code tests only that (one attribute load) before each point. Unit tests use
:func:`configure` (same syntax; ``configure(None)`` turns everything off) and :func:`hits`.
While any failpoint is configured, every point counts the calls that reached it.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from dataclasses import dataclass

from .errors import InvalidArgument

ENV = "PGRAFT_FAILPOINTS"

#: The points the storage code fires (see the module docstring).
POINTS = ("log.sync", "log.msync", "log.segment_create", "hardstate.save", "snapshot.write")

SYNTAX = ("<point>=<action>[@<n>] separated by commas; points: " + ", ".join(POINTS)
          + "; actions: eio, enospc, delay:<n>ms (or <n>s, <n>us), pass; @<n>: from the n-th "
            "call on (1-based)")

_DELAY = re.compile(r"delay:(\d+(?:\.\d+)?)(ms|s|us)")
_UNITS = {"ms": 1e-3, "s": 1.0, "us": 1e-6}


@dataclass
class Failpoint:
    """One configured point: what it does, from which call on, and how often it was hit."""

    name: str
    action: str  # "eio", "enospc", "delay" or "pass"
    delay: float = 0.0  # seconds, for "delay"
    start: int = 1  # act from this call on (1-based)
    calls: int = 0


#: The configured points by name, or None when no failpoint is configured (the fast path).
ACTIVE: dict[str, Failpoint] | None = None
#: Calls that reached each point while failpoints were configured (points not configured too).
_HITS: dict[str, int] = {}
_lock = threading.Lock()


def parse(spec: str) -> dict[str, Failpoint]:
    """The points of a ``PGRAFT_FAILPOINTS`` value; InvalidArgument naming the bad item."""
    out: dict[str, Failpoint] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, action = (s.strip() for s in item.partition("="))
        if not sep or not name or not action:
            raise _bad(item, "expected <point>=<action>")
        if name not in POINTS:
            raise _bad(item, f"unknown point {name!r}")
        start = 1
        if "@" in action:
            action, _, n = action.partition("@")
            if not n.isdigit() or int(n) < 1:
                raise _bad(item, f"@{n}: expected a call number >= 1")
            start = int(n)
        if action in ("eio", "enospc", "pass"):
            fp = Failpoint(name, action, start=start)
        else:
            m = _DELAY.fullmatch(action)
            if m is None:
                raise _bad(item, f"unknown action {action!r}")
            fp = Failpoint(name, "delay", delay=float(m.group(1)) * _UNITS[m.group(2)],
                           start=start)
        if name in out:
            raise _bad(item, f"point {name!r} is given twice")
        out[name] = fp
    return out


def _bad(item: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"{ENV}: bad item {item!r}: {why}",
                           hint=f"the syntax is {SYNTAX}")


def configure(spec: str | None) -> None:
    """Replace the configured failpoints (``PGRAFT_FAILPOINTS`` syntax; None or "" turns
    them all off) and reset the call counts. Raises InvalidArgument on bad syntax, leaving
    the previous configuration in force."""
    global ACTIVE
    points = parse(spec) if spec else {}
    with _lock:
        _HITS.clear()
        ACTIVE = points or None


def hits(name: str) -> int:
    """How often ``name`` was reached since the last :func:`configure` (counted only while
    some failpoint is configured)."""
    if name not in POINTS:
        raise InvalidArgument(f"unknown failpoint {name!r}", hint=f"points: {', '.join(POINTS)}")
    return _HITS.get(name, 0)


def hit(name: str, path: str = "") -> None:
    """Called by the storage at point ``name`` (only when :data:`ACTIVE` is not None): count
    the call, then sleep or raise OSError (naming ``path``) as configured."""
    active = ACTIVE
    if active is None:
        return
    with _lock:
        _HITS[name] = _HITS.get(name, 0) + 1
        fp = active.get(name)
        if fp is None:
            return
        fp.calls += 1
        if fp.calls < fp.start:
            return
    if fp.action == "delay":
        time.sleep(fp.delay)
    elif fp.action == "eio":
        raise OSError(errno.EIO, f"{os.strerror(errno.EIO)} (failpoint {name})", path)
    elif fp.action == "enospc":
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (failpoint {name})", path)


configure(os.environ.get(ENV, ""))
