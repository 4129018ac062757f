"""Checkers for chaos histories: linearizability of KV registers, and the append log.

History model (Jepsen's): every client operation has an invocation and a completion, both
with ``time.monotonic()`` timestamps, and a completion type:

* ``ok``   -- the node acknowledged it;
* ``fail`` -- it certainly did not take effect (rejected before the proposal entered the log);
* ``info`` -- the outcome is unknown (timeout, connection lost, the node stopped, ...). An
  ``info`` write may take effect at any moment after its invocation, or never.

Linearizability of a register (one per key) is decided with the Wing--Gong algorithm as
improved by Lowe (``just-in-time linearization`` with a cache of (set of linearized operations,
register state) pairs), the algorithm of Porcupine and Knossos' ``wgl`` checker. Keys are
independent registers, so each key is checked alone (P-compositionality). ``info`` writes get
an infinite completion time; ``fail`` writes and reads that did not complete ``ok`` are left
out (a read has no effect). ``info`` writes whose value no read ever returned are also left out:
linearizing such a write after everything else is always possible and changes no read.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Op", "check_appends", "check_register", "check_registers", "Anomaly"]

OK, FAIL, INFO = "ok", "fail", "info"


@dataclass
class Op:
    """One client operation. ``f``: ``put`` (value), ``get`` (result) or ``append`` (value =
    the payload id, result = the log index)."""

    id: int
    process: int
    f: str
    key: str | None
    value: Any
    invoke: float
    complete: float | None = None
    type: str = INFO
    result: Any = None
    node: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "process": self.process, "f": self.f, "key": self.key,
                "value": self.value, "invoke": self.invoke, "complete": self.complete,
                "type": self.type, "result": self.result, "node": self.node,
                "error": self.error}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Op:
        return cls(**d)


@dataclass
class Anomaly:
    kind: str
    detail: str
    ops: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


# ------------------------------------------------------------------ linearizability (WGL)
class _Entry:
    __slots__ = ("op", "is_call", "time", "match", "prev", "next", "idx")

    def __init__(self, op: Op | None, is_call: bool, time: float, idx: int) -> None:
        self.op = op
        self.is_call = is_call
        self.time = time
        self.idx = idx
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _step(state: Any, op: Op) -> tuple[bool, Any]:
    """The register model: put(v) -> state v; get() -> must return the state."""
    if op.f == "put":
        return True, op.value
    return op.result == state, state


@dataclass
class RegisterResult:
    key: str
    ok: bool
    ops: int
    explored: int
    detail: str = ""
    culprit: list[int] = field(default_factory=list)


def check_register(ops: Iterable[Op], key: str = "", initial: Any = None,
                   max_states: int = 20_000_000) -> RegisterResult:
    """Decide whether the operations on one register are linearizable."""
    ops = list(ops)
    read_values = {o.result for o in ops if o.f == "get" and o.type == OK}
    kept: list[Op] = []
    for o in ops:
        if o.f == "put":
            if o.type == FAIL:
                continue
            if o.type == INFO and o.value not in read_values:
                continue
            kept.append(o)
        elif o.f == "get" and o.type == OK:
            kept.append(o)
    # Events: calls and returns, sorted by time; at equal times calls first (concurrent).
    events: list[tuple[float, int, int, Op, bool]] = []
    for n, o in enumerate(kept):
        end = o.complete if (o.type == OK and o.complete is not None) else math.inf
        events.append((o.invoke, 0, n, o, True))
        events.append((end, 1, n, o, False))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Entry(None, False, -math.inf, -1)
    calls: dict[int, _Entry] = {}
    prev = head
    for t, _, n, o, is_call in events:
        e = _Entry(o, is_call, t, n)
        if is_call:
            calls[n] = e
        else:
            calls[n].match = e
        prev.next = e
        e.prev = prev
        prev = e

    def lift(e: _Entry) -> None:
        assert e.prev is not None and e.match is not None
        e.prev.next = e.next
        if e.next is not None:
            e.next.prev = e.prev
        m = e.match
        assert m.prev is not None
        m.prev.next = m.next
        if m.next is not None:
            m.next.prev = m.prev

    def unlift(e: _Entry) -> None:
        m = e.match
        assert m is not None and m.prev is not None and e.prev is not None
        m.prev.next = m
        if m.next is not None:
            m.next.prev = m
        e.prev.next = e
        if e.next is not None:
            e.next.prev = e

    state = initial
    linearized = 0
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[_Entry, Any]] = []
    entry = head.next
    explored = 0
    best_depth, best_block = -1, None
    while head.next is not None:
        explored += 1
        if explored > max_states:
            return RegisterResult(key, False, len(kept), explored,
                                  f"search gave up after {max_states} steps (undecided)")
        assert entry is not None
        if entry.is_call:
            assert entry.op is not None
            ok, new_state = _step(state, entry.op)
            if ok:
                new_lin = linearized | (1 << entry.idx)
                if (new_lin, new_state) not in cache:
                    cache.add((new_lin, new_state))
                    stack.append((entry, state))
                    state = new_state
                    linearized = new_lin
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return reached: its operation could not be linearized by now. Backtrack.
            if len(stack) > best_depth:
                best_depth, best_block = len(stack), entry
            if not stack:
                break
            entry, state = stack.pop()
            linearized &= ~(1 << entry.idx)
            unlift(entry)
            entry = entry.next
    else:
        return RegisterResult(key, True, len(kept), explored)
    detail, culprit = "", []
    if best_block is not None and best_block.op is not None:
        o = best_block.op
        culprit = [o.id]
        detail = (f"after {best_depth} operations linearized, op {o.id} ({o.f} "
                  f"{o.value if o.f == 'put' else o.result!r} by process {o.process}, "
                  f"[{o.invoke:.6f}, {o.complete}]) cannot be placed")
    return RegisterResult(key, False, len(kept), explored, detail, culprit)


def check_registers(ops: Iterable[Op]) -> tuple[list[RegisterResult], list[Anomaly]]:
    """Check every key's register; an anomaly per non-linearizable key."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        if o.f in ("put", "get") and o.key is not None:
            by_key[o.key].append(o)
    results, anomalies = [], []
    for key in sorted(by_key):
        r = check_register(by_key[key], key)
        results.append(r)
        if not r.ok:
            anomalies.append(Anomaly("nonlinearizable", f"key {key!r}: {r.detail}",
                                     r.culprit))
    return results, anomalies


# ------------------------------------------------------------------------- the append log
def check_appends(ops: Iterable[Op], log: dict[int, str | None]) -> tuple[dict[str, int],
                                                                        list[Anomaly]]:
    """Check appends against the final committed log ``{index: payload id or None}`` (None:
    an entry that is not a user append).

    * every ``ok`` append is in the log exactly once, at the index it was acknowledged with;
    * no append appears twice; a ``fail`` append never appears; an ``info`` one at most once;
    * real-time order: if A was acknowledged before B was invoked, A's index < B's index.
    """
    ops = [o for o in ops if o.f == "append"]
    anomalies: list[Anomaly] = []
    where: dict[str, list[int]] = defaultdict(list)
    for index, pid in log.items():
        if pid is not None:
            where[pid].append(index)
    known = {o.value for o in ops}
    stats: Counter[str] = Counter()
    for pid, idxs in where.items():
        if len(idxs) > 1:
            anomalies.append(Anomaly("duplicate-append", f"payload {pid} at indexes {idxs}"))
        if pid not in known:
            anomalies.append(Anomaly("phantom-append", f"payload {pid} at {idxs} was never "
                                     "appended by a client"))
    for o in ops:
        idxs = where.get(o.value, [])
        if o.type == OK:
            stats["ok"] += 1
            if not idxs:
                anomalies.append(Anomaly("lost-append", f"acknowledged append {o.value} "
                                         f"(index {o.result}) is not in the log", [o.id]))
            elif o.result not in idxs:
                anomalies.append(Anomaly("wrong-index", f"append {o.value} acknowledged at "
                                         f"index {o.result} is at {idxs}", [o.id]))
        elif o.type == FAIL:
            stats["fail"] += 1
            if idxs:
                anomalies.append(Anomaly("failed-append-present", f"append {o.value} was "
                                         f"reported failed but is at {idxs}", [o.id]))
        else:
            stats["info"] += 1
            if idxs:
                stats["info_present"] += 1
    # Real-time order: sort ok appends by completion; every later-invoked op needs a larger
    # index than the largest index acknowledged before its invocation.
    placed = [(o, where[o.value][0]) for o in ops
              if o.type in (OK, INFO) and where.get(o.value)]
    acked = sorted(((o.complete, idx, o) for o, idx in placed
                    if o.type == OK and o.complete is not None), key=lambda x: x[0])
    by_invoke = sorted(placed, key=lambda x: x[0].invoke)
    j, best, best_op = 0, 0, None
    for o, idx in by_invoke:
        while j < len(acked) and acked[j][0] < o.invoke:
            if acked[j][1] > best:
                best, best_op = acked[j][1], acked[j][2]
            j += 1
        if best_op is not None and idx <= best:
            anomalies.append(Anomaly("append-order", f"append {o.value} invoked after "
                                     f"{best_op.value} (index {best}) was acknowledged sits at "
                                     f"index {idx}", [best_op.id, o.id]))
    return dict(stats), anomalies
