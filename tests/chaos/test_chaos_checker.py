"""The chaos checkers on hand-made histories: they must accept what is linearizable and catch
stale reads, lost writes, phantom values and broken append logs."""

from __future__ import annotations

import random

from chaos_checker import FAIL, INFO, OK, Op, check_appends, check_register, check_registers

_ids = iter(range(1, 1 << 30))


def put(v: str, t0: float, t1: float | None, typ: str = OK, p: int = 0, key: str = "k") -> Op:
    return Op(next(_ids), p, "put", key, v, t0, t1, typ)


def get(r: str | None, t0: float, t1: float, p: int = 1, key: str = "k") -> Op:
    return Op(next(_ids), p, "get", key, None, t0, t1, OK, r)


def app(pid: str, t0: float, t1: float | None, typ: str = OK, idx: int | None = None) -> Op:
    return Op(next(_ids), 0, "append", None, pid, t0, t1, typ, idx)


def test_sequential_history_is_linearizable() -> None:
    h = [get(None, 0, 1), put("a", 2, 3), get("a", 4, 5), put("b", 6, 7), get("b", 8, 9)]
    assert check_register(h).ok


def test_concurrent_overlaps_are_accepted() -> None:
    # The read overlaps the write: it may see the old or the new value.
    assert check_register([put("a", 0, 1), put("b", 2, 6), get("a", 3, 4)]).ok
    assert check_register([put("a", 0, 1), put("b", 2, 6), get("b", 3, 4)]).ok
    # Two overlapping writes may take effect in either order.
    h = [put("a", 0, 5, p=0), put("b", 1, 4, p=1), get("a", 6, 7), get("a", 8, 9)]
    assert check_register(h).ok
    h = [put("a", 0, 5, p=0), put("b", 1, 4, p=1), get("b", 6, 7)]
    assert check_register(h).ok
    # Reads that overlap each other and a write may disagree, in a linearizable order.
    h = [put("a", 0, 1), put("b", 2, 10), get("b", 3, 5, p=1), get("a", 3, 4, p=2)]
    assert check_register(h).ok


def test_stale_read_is_detected() -> None:
    # b was acknowledged before the read began, and the read returned a.
    h = [put("a", 0, 1), put("b", 2, 3), get("a", 4, 5)]
    r = check_register(h)
    assert not r.ok
    assert r.culprit


def test_read_going_back_in_time_is_detected() -> None:
    # Two sequential reads during one long write: new, then old again.
    h = [put("a", 0, 1), put("b", 2, 20), get("b", 3, 4, p=1), get("a", 5, 6, p=2)]
    assert not check_register(h).ok


def test_lost_write_is_detected() -> None:
    # An acknowledged write that no later read sees (the final read returns the old value).
    h = [put("a", 0, 1), get("a", 1.5, 1.8), put("b", 2, 3), get("a", 10, 11)]
    assert not check_register(h).ok
    # ... also when nothing was written before (a lost first write).
    assert not check_register([put("a", 0, 1), get(None, 2, 3)]).ok


def test_unknown_writes() -> None:
    # An info write may take effect late, long after its invocation...
    h = [put("a", 0, 1), put("b", 2, None, INFO), get("a", 5, 6), get("b", 7, 8)]
    assert check_register(h).ok
    # ... or never.
    h = [put("a", 0, 1), put("b", 2, None, INFO), get("a", 5, 6), get("a", 7, 8)]
    assert check_register(h).ok
    # But not before it was invoked.
    h = [put("a", 0, 1), get("b", 2, 3), put("b", 4, None, INFO)]
    assert not check_register(h).ok
    # And once seen, it cannot be undone.
    h = [put("a", 0, 1), put("b", 2, None, INFO), get("b", 5, 6), get("a", 7, 8)]
    assert not check_register(h).ok


def test_failed_write_must_not_be_seen() -> None:
    h = [put("a", 0, 1), put("b", 2, 3, FAIL), get("b", 4, 5)]
    assert not check_register(h).ok
    h = [put("a", 0, 1), put("b", 2, 3, FAIL), get("a", 4, 5)]
    assert check_register(h).ok


def test_keys_are_independent() -> None:
    h = [put("a", 0, 1, key="x"), put("a", 0, 1, key="y"), put("b", 2, 3, key="x"),
         get("a", 4, 5, key="y"), get("b", 4, 5, key="x")]
    results, anomalies = check_registers(h)
    assert [r.ok for r in results] == [True, True] and not anomalies
    h.append(get("a", 6, 7, key="x"))
    results, anomalies = check_registers(h)
    assert [a.kind for a in anomalies] == ["nonlinearizable"]
    assert "'x'" in anomalies[0].detail


def _random_linearizable_history(rng: random.Random, n: int) -> list[Op]:
    """Generate a history from a real register with concurrent processes: each operation
    takes effect at an instant inside its interval."""
    ops: list[Op] = []
    t = 0.0
    state = None
    pending: list[tuple[float, Op]] = []
    for i in range(n):
        t += rng.uniform(0.0, 1.0)
        f = rng.choice(["put", "get", "get"])
        start = t - rng.uniform(0.0, 3.0)
        end = t + rng.uniform(0.0, 3.0)
        if f == "put":
            state = f"v{i}"
            typ = rng.choice([OK, OK, OK, INFO])
            ops.append(Op(i, i % 5, "put", "k", state, start, end if typ == OK else None,
                          typ))
        else:
            ops.append(Op(i, i % 5, "get", "k", None, start, end, OK, state))
    del pending
    return ops


def test_random_linearizable_histories_pass_and_mutations_fail() -> None:
    rng = random.Random(7)
    for _ in range(30):
        h = _random_linearizable_history(rng, 60)
        assert check_register(h).ok
    # Mutation: a read returns a value that was never written: always caught.
    h = _random_linearizable_history(rng, 60)
    reads = [o for o in h if o.f == "get"]
    reads[len(reads) // 2].result = "never-written"
    assert not check_register(h).ok


def test_appends_ok() -> None:
    h = [app("a", 0, 1, idx=2), app("b", 2, 3, idx=3), app("c", 2.5, None, INFO),
         app("d", 4, 5, FAIL)]
    stats, anomalies = check_appends(h, {1: None, 2: "a", 3: "b", 4: "c"})
    assert not anomalies
    assert stats["ok"] == 2 and stats["info_present"] == 1


def test_appends_anomalies() -> None:
    h = [app("a", 0, 1, idx=2), app("b", 2, 3, idx=3), app("d", 4, 5, FAIL)]
    kinds = lambda log: sorted(a.kind for a in check_appends(h, log)[1])  # noqa: E731
    assert kinds({1: None, 2: "a"}) == ["lost-append"]
    assert kinds({2: "a", 3: "b", 4: "b"}) == ["duplicate-append"]
    assert kinds({2: "a", 3: "b", 4: "d"}) == ["failed-append-present"]
    assert kinds({2: "a", 3: "b", 4: "zz"}) == ["phantom-append"]
    # Acknowledged at 2 and 3, found swapped: wrong indexes, and b precedes a it followed.
    assert kinds({2: "b", 3: "a"}) == ["append-order", "wrong-index", "wrong-index"]
