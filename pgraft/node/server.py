"""Client request dispatch (every op of ``docs/protocol.md``) and the wire-shaped views.

A request is ``{"id": INT, "op": STR, "args": {...}}``; the answer is
``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error": PgraftError.to_wire()}``.
Arguments are validated here (a bad argument changes nothing); the decisions (is this node the
leader, may this membership change be proposed) are the Raft core's, reached through
:class:`pgraft.node.node.Node`. The views (:func:`status`, :func:`log_stats`,
:func:`entry`) read the node and its collaborators and shape what ``status``, ``log_stats``
and ``get_entry`` answer.

The hot ops (``append``, ``append_batch``, ``kv_put``, ``kv_delete``) take no coroutine: the
proposal's waiter is a reply object (:class:`_Reply`, :class:`pgraft.node.batchreply.BatchReply`)
that writes the response when the node resolves it, and one timer sweep enforces the requests'
timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from .._impl import core
from ..checks import (
    check_address,
    check_data,
    check_index,
    check_key,
    check_node_id,
    check_port,
    check_timeout,
    check_value,
)
from ..deadlines import DeadlineWheel
from ..errors import (
    CommitTimeout,
    HaNotEnabled,
    InvalidArgument,
    Overloaded,
    PgraftError,
    ProtocolError,
    Timeout,
)
from ..ha.records import redacted as redacted_ha_command
from ..protocol import APPEND_BATCH_LIMIT, WRITE_OPS
from ..state import describe_entry_data
from .batchreply import BatchReply, Slot, commit_timeout
from .config import endpoint
from .listener import ClientConnection
from .node import Node

log = logging.getLogger("pgraft.server")

#: Granularity (seconds) of request deadlines.
DEADLINE_RESOLUTION = 0.05
ENTRY_CONF_CHANGE = core.ENTRY_CONF_CHANGE


# ------------------------------------------------------------------------ validation
def _required(args: dict[str, Any], name: str) -> Any:
    """The argument ``name`` of a request (its value is checked by pgraft.checks)."""
    try:
        return args[name]
    except KeyError:
        raise InvalidArgument(f"missing argument {name!r}",
                              hint="see docs/protocol.md for the arguments of each op") from None


# ---------------------------------------------------------------------------- server
class _Reply:
    """The answer to one write request: the waiter the node resolves when the entry is applied
    (it duck-types the part of a future the node uses). Answering writes the response frame at
    once; the server's deadline sweep answers Timeout if nothing else did first."""

    __slots__ = ("server", "conn", "rid", "timeout", "finished")

    def __init__(self, server: Server, conn: ClientConnection, rid: int, timeout: float
                 ) -> None:
        self.server = server
        self.conn = conn
        self.rid = rid
        self.timeout = timeout
        self.finished = False

    def done(self) -> bool:
        return self.finished

    def set_result(self, result: Any) -> None:
        if self.finished:
            return
        self.finished = True
        self.conn.inflight -= 1
        self.conn.send_result(self.rid, result)

    def set_exception(self, exc: BaseException) -> None:
        if self.finished:
            return
        self.finished = True
        self.conn.inflight -= 1
        if isinstance(exc, PgraftError):
            self.server._error(self.conn, self.rid, exc)
        else:
            log.error("request %d failed: %r", self.rid, exc)
            self.server._error(self.conn, self.rid, PgraftError(f"internal error: {exc}"))


    def expire(self) -> None:
        if not self.finished:
            # The proposal stays in the log machinery and may still commit: the caller is told
            # that the outcome is unknown (the node ignores a done waiter when it applies).
            self.set_exception(commit_timeout(self.timeout))


def _expire_reply(reply: _Reply | BatchReply) -> None:
    reply.expire()


class Server:
    """Answers client requests for one :class:`~pgraft.node.node.Node` (the listener's
    :class:`~pgraft.node.listener.ClientHandler`)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.loop = node.loop
        #: Requests one connection may have in flight (README: Security).
        self.max_inflight = node.config.security.max_client_inflight
        self._deadlines: DeadlineWheel[_Reply | BatchReply] = DeadlineWheel(
            self.loop, DEADLINE_RESOLUTION, _expire_reply)
        self._slow: dict[str, Callable[[dict[str, Any], float], Awaitable[Any]]] = {
            "add_node": self._add_node,
            "remove_node": self._remove_node,
            "kv_get": self._kv_get,
            "kv_list_keys": self._kv_list_keys,
            "transfer_leadership": self._transfer,
            "ha_status": self._ha_status,
            "ha_propose": self._ha_propose,
        }
        self._instant: dict[str, Callable[[dict[str, Any]], Any]] = {
            "get_nodes": lambda a: node.get_nodes(),
            "get_leader": lambda a: node.get_leader(),
            "get_term": lambda a: node.term,
            "is_leader": lambda a: node.is_leader,
            "status": lambda a: status(node),
            "log_stats": lambda a: log_stats(node),
            "get_entry": self._get_entry,
            "ha_observe": self._ha_observe,
        }

    # -------------------------------------------------------------- entry point
    def handle_request(self, conn: ClientConnection, req: dict[str, Any]) -> None:
        node = self.node
        node.metrics.client_requests += 1
        rid = req.get("id")
        if rid.__class__ is not int:  # bool is a subclass of int: excluded here
            self._error(conn, rid, ProtocolError(f"request id must be an integer, got {rid!r}"))
            return
        op = req.get("op")
        args = req.get("args")
        if args is None:
            args = {}
        if conn.inflight >= self.max_inflight:
            self._error(conn, rid, Overloaded(
                f"this connection has {conn.inflight} requests in flight, the limit",
                hint="wait for answers before sending more, or use more connections"))
            return
        try:
            if args.__class__ is not dict:
                raise InvalidArgument(f"args must be a map, got {type(args).__name__}")
            timeout = args.get("timeout")
            if timeout is None:
                timeout = node.config.request_timeout
            elif timeout.__class__ is not float or not 0 < timeout < math.inf:
                timeout = check_timeout(timeout)
            if op == "append":
                data = args.get("data")
                if data.__class__ is not bytes:
                    data = check_data(data)
                reply = _Reply(self, conn, rid, timeout)
                node.propose_append(data, reply)
                conn.inflight += 1
                self._watch(reply)
                return
            if op == "append_batch":
                self._append_batch(conn, rid, args.get("data"), timeout)
                return
            if not isinstance(op, str):
                raise InvalidArgument(f"op must be a string, got {op!r}")
            if op == "kv_put":
                key = check_key(args.get("key"))
                value = check_value(args.get("value"))
                reply = _Reply(self, conn, rid, timeout)
                node.propose_kv_put(key, value, reply)
                conn.inflight += 1
                self._watch(reply)
                return
            if op == "kv_delete":
                key = check_key(args.get("key"))
                reply = _Reply(self, conn, rid, timeout)
                node.propose_kv_delete(key, reply)
                conn.inflight += 1
                self._watch(reply)
                return
            instant = self._instant.get(op)
            if instant is not None:
                conn.send({"id": rid, "ok": True, "result": instant(args)})
                return
            slow = self._slow.get(op)
            if slow is None:
                raise InvalidArgument(f"unknown op {op!r}",
                                      hint="see docs/protocol.md for the list of ops")
        except PgraftError as exc:
            self._error(conn, rid, exc)
            return
        except Exception as exc:  # a bug must not take the node down
            log.exception("request %r failed", op)
            self._error(conn, rid, PgraftError(f"internal error in {op}: {exc}"))
            return
        task = self.loop.create_task(self._run_slow(conn, rid, op, slow(args, timeout),
                                                    timeout))
        conn.inflight += 1
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    def connection_closed(self, conn: ClientConnection) -> None:
        for task in list(conn.tasks):
            task.cancel()
        conn.tasks.clear()

    # -------------------------------------------------------------- responses
    def _error(self, conn: ClientConnection, rid: Any, exc: PgraftError) -> None:
        self.node.metrics.client_errors += 1
        conn.send({"id": rid, "ok": False, "error": exc.to_wire()})

    def _append_batch(self, conn: ClientConnection, rid: int, payloads: Any,
                      timeout: float) -> None:
        """Propose every payload as its own entry; one answer lists each one's index or error
        (see pgraft.node.batchreply). Bad arguments refuse the whole request, proposing
        nothing; a payload that cannot be proposed (too large, not bytes, not the leader)
        fails alone, in its place in the answer."""
        if payloads.__class__ is not list or not payloads:
            raise InvalidArgument(f"append_batch: data must be a non-empty list of payloads "
                                  f"(bytes), got {type(payloads).__name__}")
        node = self.node
        if not node.is_leader:  # every payload would fail alike: one answer says it
            raise node.not_leader("append")
        count = len(payloads)
        if count > APPEND_BATCH_LIMIT:
            raise InvalidArgument(f"append_batch of {count} payloads is over the limit of "
                                  f"{APPEND_BATCH_LIMIT}", hint="send smaller batches")
        if conn.inflight + count > self.max_inflight:
            raise Overloaded(f"this connection has {conn.inflight} requests in flight; "
                             f"{count} more are over the limit of {self.max_inflight}",
                             hint="wait for answers before sending more, or use more "
                                  "connections")
        batch = BatchReply(conn, rid, timeout, count, node.metrics)
        conn.inflight += count
        accepted: list[bytes] = []
        slots: list[Slot] = []
        for i, data in enumerate(payloads):
            slot = Slot(batch, i)
            try:
                if data.__class__ is not bytes:
                    data = check_data(data)
                node.check_payload(data)
            except PgraftError as exc:
                slot.set_exception(exc)
                continue
            accepted.append(data)
            slots.append(slot)
        if accepted:
            try:
                node.propose_appends(accepted, slots)  # one step of the core for all
            except PgraftError as exc:
                for slot in slots:
                    slot.set_exception(exc)
        if not batch.finished:
            self._deadlines.add(batch, timeout)

    def _watch(self, reply: _Reply) -> None:
        """Answer Timeout if ``reply`` is not answered within its timeout."""
        if not reply.finished:
            self._deadlines.add(reply, reply.timeout)

    def close(self) -> None:
        """Stop the deadline timer."""
        self._deadlines.close()

    async def _run_slow(self, conn: ClientConnection, rid: int, op: str,
                        coro: Awaitable[Any], timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                result = await coro
        except TimeoutError:
            # A membership change past its deadline is in the log and may still commit.
            cls = CommitTimeout if op in WRITE_OPS else Timeout
            self._error(conn, rid, cls(f"{op} did not complete within {timeout:g}s"))
        except PgraftError as exc:
            self._error(conn, rid, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("request %r failed", op)
            self._error(conn, rid, PgraftError(f"internal error in {op}: {exc}"))
        else:
            conn.send({"id": rid, "ok": True, "result": result})
        finally:
            conn.inflight -= 1

    # ------------------------------------------------------------------- ops
    async def _add_node(self, args: dict[str, Any], timeout: float) -> bool:
        node_id = check_node_id(_required(args, "node_id"))
        address = check_address(_required(args, "address"))
        port = check_port(_required(args, "port"))
        await self.node.add_node(node_id, address, port)
        return True

    async def _remove_node(self, args: dict[str, Any], timeout: float) -> bool:
        await self.node.remove_node(check_node_id(_required(args, "node_id")))
        return True

    async def _kv_get(self, args: dict[str, Any], timeout: float) -> str | None:
        key = check_key(args.get("key"))
        await self.node.linearizable_read()
        return self.node.state.kv.get(key)

    async def _kv_list_keys(self, args: dict[str, Any], timeout: float) -> list[str]:
        await self.node.linearizable_read()
        return sorted(self.node.state.kv)

    async def _transfer(self, args: dict[str, Any], timeout: float) -> bool:
        await self.node.transfer_leadership(check_node_id(_required(args, "node_id")))
        return True

    def _ha(self) -> Any:
        ha = self.node.ha
        if ha is None:
            raise HaNotEnabled(f"node {self.node.node_id} does not run PostgreSQL (HA mode is "
                               "off: it was started without --postgres)")
        return ha

    async def _ha_status(self, args: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        return list(await self._ha().cluster_status(timeout))

    async def _ha_propose(self, args: dict[str, Any], timeout: float) -> Any:
        # A member's HA command (lease renewal, its PostgreSQL endpoint, ...), sent to the
        # leader, which checks and proposes it -- also a leader that runs no PostgreSQL.
        if self.node.ha is not None:
            return await self.node.ha.propose_for_member(args.get("command"), timeout)
        from ..ha.controller import propose_member_command

        return await propose_member_command(self.node, args.get("command"))

    def _ha_observe(self, args: dict[str, Any]) -> dict[str, Any]:
        return dict(self._ha().local_report())

    def _get_entry(self, args: dict[str, Any]) -> dict[str, Any] | None:
        index = check_index(_required(args, "index"))
        return entry(self.node, index)


# ------------------------------------------------------------------------------ views
def log_stats(node: Node) -> dict[str, Any]:
    """The ``log_stats`` answer: the log's bounds, commit and applied index, snapshot, size."""
    st = node.raw.log
    storage = node.storage
    return {"first_index": st.first_index(), "last_index": st.last_index(),
            "commit_index": st.committed, "applied_index": node.state.applied_index,
            "snapshot_index": storage.snapshot_meta().index,
            "log_bytes": storage.byte_size}


def status(node: Node) -> dict[str, Any]:
    """The ``status`` answer: the core's status, the log, snapshots, peers and metrics."""
    st = node.raw.status()
    progress = {i: {"match": p.match, "next": p.next, "state": p.state,
                    "recent_active": p.recent_active, "learner": p.learner}
                for i, p in st.progress.items()}
    stats = log_stats(node)
    state = node.state
    peers = node.peers
    identity = node.identity
    disk_full = node.disk_full
    return {
        "node_id": node.node_id,
        "role": st.role,
        "term": st.term,
        "vote": st.vote,
        "leader_id": st.leader_id or None,
        "leader_address": node.address_of(st.leader_id),
        "commit_index": st.commit,
        "applied_index": state.applied_index,
        "first_index": stats["first_index"],
        "last_index": st.last_index,
        "snapshot_index": stats["snapshot_index"],
        "log_bytes": stats["log_bytes"],
        "snapshot": node.snapshots.status(),
        "num_nodes": len(state.members),
        "membership": st.membership.to_list(),
        "transferee": st.transferee or None,
        "progress": progress,
        "peers": {i: {"address": endpoint(*a), "connected": peers.peer_connected(i)}
                  for i, a in node.peer_book.items()},
        "disk_full": disk_full.message if disk_full is not None else None,
        "cluster_id": identity.cluster_id,
        "incarnation": identity.incarnation,
        "refused_peers": {i: exc.message for i, exc in peers.refused.items()},
        "implementation": core.__name__.rsplit(".", 1)[-1],
        "metrics": node.metrics.snapshot(
            term=st.term, role=st.role, commit_index=st.commit,
            applied_index=state.applied_index, last_index=st.last_index,
            progress=progress),
    }


def entry(node: Node, index: int) -> dict[str, Any] | None:
    """The ``get_entry`` answer: the entry at ``index`` (None if compacted or beyond the log),
    its kind and user-visible data."""
    raw = node.raw
    if index > raw.log.last_index():
        return None
    try:
        ents = raw.log.slice(index, index + 1, 1 << 62)
    except Exception:  # compacted
        return None
    if not ents:
        return None
    e = ents[0]
    if e.type == ENTRY_CONF_CHANGE:
        kind, data = "conf_change", bytes(e.data)
    else:
        kind, data = describe_entry_data(e.data)
        if kind == "ha":
            data = redacted_ha_command(data)
    return {"index": e.index, "term": e.term, "type": e.type, "kind": kind,
            "data": data, "committed": e.index <= raw.log.committed}

