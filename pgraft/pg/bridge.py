"""The SQL functions' side of pgraft inside a PostgreSQL backend.

Every ``pgraft_*`` SQL function of the extension calls ``pg_catalog._pgraft_call()``, a small
PL/Python function that finds this package (through ``pgraft.python``), imports this module
once per session and hands each call to :meth:`Bridge.call`. The Python code lives here, in
the package, rather than in ``pg_proc``: a package upgrade upgrades it, and the versions of
the SQL script, the loaded library and the package are compared before the first call
(:func:`version_problem`). Each SQL function passes the version of the script that created
it; an update script creates only what it adds or changes, so the functions of an updated
database carry several versions, all of them in :data:`SQL_VERSIONS`.

A call never raises for a pgraft error: it returns an *outcome*, a dict that the transform
``jsonb_plpython3u`` turns into jsonb and the C function ``_pgraft_result()`` turns into the
SQL result or into a PostgreSQL error with its SQLSTATE, DETAIL and HINT (PL/Python would
report a raised exception as "ERROR: <type>: <message>"):

- ``{"ok": True, "result": ...}``
- ``{"ok": False, "sqlstate", "message", "detail", "hint"}``
- ``{"ok": False, "interrupted": True, "message", "detail", "hint"}``: the wait for the node
  stopped because PostgreSQL has a cancel or a statement timeout pending; the C side lets
  PostgreSQL raise its own error, with this outcome's detail and hint.

This module is imported in a backend's first pgraft call: it imports only the blocking client
and the errors (no asyncio, no json, no typing at run time).
"""

from __future__ import annotations

from ..client.sync import Client
from ..errors import (
    ConnectionFailed,
    Interrupted,
    InterruptedWrite,
    InvalidArgument,
    NotLeaderError,
    OutcomeUnknown,
    PayloadTooLarge,
    PgraftError,
    Timeout,
)

TYPE_CHECKING = False  # typing only for the type checker (see pgraft/errors.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Outcome = dict[str, Any]

#: The SQLSTATE of a NULL argument (null_value_not_allowed) and of a version mismatch.
NULL_VALUE = "22004"
NOT_READY = "55000"  # object_not_in_prerequisite_state

#: The versions of the extension's SQL scripts whose functions this package serves: those
#: that call ``_pgraft_call(sql_version, what, op, params, data, timeout_ms)`` with the ops
#: below. 1.0 had its own Python code in ``pg_proc``; a release that changes the calling
#: convention or an op's shape drops the versions it no longer serves (their functions are
#: then recreated by the update script).
SQL_VERSIONS = ("1.1", "1.2")

_FALLBACK_HINTS: tuple[tuple[type[PgraftError], str], ...] = (
    (PayloadTooLarge, "Keep keys, values and entries under the limit; store large data "
                      "elsewhere and replicate a reference to it."),
    (InvalidArgument, "See the function's signature in the pgraft documentation."),
)


def _text(value: str) -> str:
    return value


def _integer(value: str) -> int:
    return int(value)  # SQL passed a bigint or int as text: always a valid literal


#: op -> (the Client method, its parameters in SQL order with their converters). The SQL
#: functions pass their arguments as one text[] (PL/Python converts it in C, with no json).
OPS: dict[str, tuple[str, tuple[tuple[str, Callable[[str], Any]], ...]]] = {
    "add_node": ("add_node", (("node_id", _integer), ("address", _text), ("port", _integer))),
    "remove_node": ("remove_node", (("node_id", _integer),)),
    "transfer_leadership": ("transfer_leadership", (("node_id", _integer),)),
    "get_nodes": ("get_nodes", ()),
    "get_leader": ("get_leader", ()),
    "get_term": ("get_term", ()),
    "is_leader": ("is_leader", ()),
    "status": ("status", ()),
    "stat_peers": ("status", ()),
    "log_stats": ("log_stats", ()),
    "append": ("append", ()),
    "get_entry": ("get_entry", (("index", _integer),)),
    "kv_put": ("kv_put", (("key", _text), ("value", _text))),
    "kv_get": ("kv_get", (("key", _text),)),
    "kv_delete": ("kv_delete", (("key", _text),)),
    "kv_list_keys": ("kv_list_keys", ()),
    "ha_status": ("ha_status", ()),
}

_STATUS_KEYS = ("node_id", "term", "leader_id", "role", "num_nodes", "commit_index",
                "applied_index", "last_index")
#: the columns of pgraft_ha_status(), in the node's ``ha_status`` rows
_HA_KEYS = ("node_id", "pg_role", "timeline", "received_lsn", "replayed_lsn", "lag_bytes",
            "lease_remaining_ms", "epoch", "state")


def sentence(text: str | None) -> str | None:
    """``text`` as PostgreSQL's message style writes a DETAIL or HINT: a capitalised sentence
    ending with a period."""
    if not text:
        return None
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def failure(message: str, sqlstate: str, *, detail: str | None = None,
            hint: str | None = None) -> Outcome:
    return {"ok": False, "sqlstate": sqlstate, "message": message,
            "detail": sentence(detail), "hint": sentence(hint)}


def major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _release(version: str) -> tuple[int, ...]:
    """``"1.10"`` as ``(1, 10)``: versions compare by number, not as text ("1.10" > "1.9")."""
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def version_problem(sql_version: str, library_version: str | None,
                    package_version: str) -> Outcome | None:
    """The outcome that refuses every call while the SQL functions, the library loaded by this
    server and the package do not go together; None when they do: the library is the
    package's version, and the functions are too or are of an older script that the package
    still serves (:data:`SQL_VERSIONS`)."""
    package = major_minor(package_version)
    served = sql_version in SQL_VERSIONS and _release(sql_version) <= _release(package)
    if sql_version != package and not served:
        if _release(sql_version) < _release(package):
            hint = "Run ALTER EXTENSION pgraft UPDATE in this database."
        else:
            hint = (f"Install the pgraft package of version {sql_version} with "
                    "`pgraft postgres install` from that release.")
        return failure(f"pgraft: the pgraft extension in this database is version "
                       f"{sql_version}, but the pgraft package is version {package_version}",
                       NOT_READY, hint=hint)
    if library_version != package:
        if library_version is None:
            return failure("pgraft: the pgraft library is not loaded in this server",
                           NOT_READY, hint="Add 'pgraft' to shared_preload_libraries and "
                                           "restart PostgreSQL.")
        return failure(f"pgraft: this server runs the pgraft library of version "
                       f"{library_version}, but the pgraft package is version {package_version}",
                       NOT_READY,
                       hint="Restart PostgreSQL to load the installed library, or run "
                            "`pgraft postgres install` so that library and package match.")
    return None


def _interrupt_check() -> Callable[[], bool]:
    """Whether PostgreSQL has a cancel or terminate request pending for this backend.

    The pgraft library (loaded into every backend by shared_preload_libraries, with global
    symbols) exports ``pgraft_interrupts_pending()``. ctypes is imported only when a call
    has waited one slice (pgraft.Client calls this lazily), never on the fast path.
    """
    pending: Callable[[], int] | None = None

    def check() -> bool:
        nonlocal pending
        if pending is None:
            import ctypes

            try:
                function = ctypes.CDLL(None).pgraft_interrupts_pending
            except AttributeError:
                function = None
            if function is None:
                pending = _never
            else:
                function.restype = ctypes.c_int
                function.argtypes = ()
                pending = function
        return bool(pending())

    return check


def _never() -> int:
    return 0


class Bridge:
    """One blocking pgraft.Client per session, on this server's node's Unix socket; it
    reconnects by itself after the node restarted."""

    def __init__(self, socket_path: str, *, refused: Outcome | None = None,
                 interrupt: Callable[[], bool] | None = None) -> None:
        self.socket_path = socket_path
        self.refused = refused
        self._interrupt = interrupt if interrupt is not None else _interrupt_check()
        self._client: Client | None = None

    def call(self, what: str, op: str, args: list[str | None] | None, data: bytes | None,
             timeout_ms: int) -> Outcome:
        """Run ``op`` for the SQL function whose errors start with ``what``."""
        if self.refused is not None:
            return self.refused
        if op == "version":
            from .. import __version__

            return {"ok": True, "result": __version__}
        method, params = OPS[op]
        values: list[Any] = []
        for (name, convert), value in zip(params, args or (), strict=True):
            if value is None:
                return failure(f"{what}: {name} must not be NULL", NULL_VALUE,
                               hint=f"Pass a value for {name}.")
            values.append(convert(value))
        if op == "append":
            if data is None:
                return failure(f"{what}: data must not be NULL", NULL_VALUE,
                               hint="Pass a value for data.")
            values.append(data)
        client = self._client
        if client is None:
            client = self._client = Client(self.socket_path, interrupt=self._interrupt)
        try:
            result = getattr(client, method)(*values, timeout=timeout_ms / 1000.0)
        except InterruptedWrite as exc:
            return {"ok": False, "interrupted": True, "message": f"{what}: {exc.message}",
                    "detail": "The request reached the pgraft node before the statement was "
                              "interrupted, so its outcome is unknown: it may still be "
                              "committed.",
                    "hint": "Check with a read (pgraft_get_nodes(), pgraft_kv_get(), ...) "
                            "before retrying it."}
        except Interrupted as exc:
            return {"ok": False, "interrupted": True, "message": f"{what}: {exc.message}",
                    "detail": None, "hint": None}
        except NotLeaderError as exc:
            node = exc.node_id or client.node_id
            who = f"this node ({node})" if node else "this node"
            return self._failure(f"{what}: {who} is not the leader", exc)
        except ConnectionFailed as exc:
            self.close()
            return self._failure(
                f"{what}: the pgraft node of this server is not running or not reachable",
                exc, detail=exc.message,
                hint="Check that shared_preload_libraries includes 'pgraft' and that "
                     "pgraft.node_id is set (in HA mode: that the `pgraft serve --postgres` "
                     "node running this server is up), and see pgraft_launcher_status() and "
                     "the server log.")
        except Timeout as exc:
            hint = None
            if not isinstance(exc, OutcomeUnknown):
                hint = ("Check the cluster with pgraft_get_cluster_status(); if it is healthy, "
                        f"raise pgraft.request_timeout (now {timeout_ms} ms).")
            return self._failure(f"{what}: {exc.message}", exc, hint=hint)
        except PgraftError as exc:
            return self._failure(f"{what}: {exc.message}", exc)
        return {"ok": True, "result": shape(op, result)}

    @staticmethod
    def _failure(message: str, exc: PgraftError, *, detail: str | None = None,
                 hint: str | None = None) -> Outcome:
        if hint is None:
            hint = exc.hint or next((h for cls, h in _FALLBACK_HINTS if isinstance(exc, cls)),
                                    None)
        return failure(message, exc.sqlstate, detail=detail, hint=hint)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()  # closes a socket; raises nothing


def shape(op: str, result: Any) -> Any:
    """The result in the form the SQL function reads from jsonb."""
    if op == "get_nodes":
        return [{"node_id": n.node_id, "address": n.address, "port": n.port, "role": n.role,
                 "is_leader": n.is_leader} for n in result]
    if op == "status":
        return {k: result.get(k) for k in _STATUS_KEYS}
    if op == "stat_peers":
        return peer_rows(result)
    if op == "ha_status":
        return [{k: row.get(k) for k in _HA_KEYS} for row in result]
    if op == "get_entry":
        return None if result is None else bytes(result["data"]).hex()
    return result


def peer_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per other member: what this node knows of its link and, on the leader, of its
    replication (match/next index, the progress state, how many entries it is behind)."""
    me = status.get("node_id")
    last_index = status.get("last_index") or 0
    progress = status.get("progress") or {}
    links = status.get("peers") or {}
    rows = []
    for member in status.get("membership") or ():
        node_id = member["node_id"]
        if node_id == me:
            continue
        p = progress.get(node_id)
        link = links.get(node_id) or {}
        rows.append({
            "node_id": node_id, "address": member.get("address"), "port": member.get("port"),
            "role": member.get("role"), "connected": link.get("connected"),
            "replication_state": p["state"] if p else None,
            "match_index": p["match"] if p else None,
            "next_index": p["next"] if p else None,
            "lag_entries": max(last_index - p["match"], 0) if p else None,
            "recent_active": p["recent_active"] if p else None,
        })
    rows.sort(key=lambda r: r["node_id"])
    return rows
