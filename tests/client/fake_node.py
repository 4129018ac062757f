"""A small in-process pgraft node that speaks the client side of docs/protocol.md.

It runs its own event loop in a background thread (so both the asyncio client and the
synchronous ``pgraft.Client`` can talk to it from the test's thread) and keeps a tiny in-memory
state: members, a log and a KV map. Tests replace handlers to inject behaviour: delays, errors,
silence, closing the connection mid-call, or garbage bytes.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from pgraft._impl import core
from pgraft.auth import server_challenge
from pgraft.errors import (
    AuthenticationFailed,
    DecodeError,
    InvalidArgument,
    NodeExists,
    NotLeaderError,
    PgraftError,
    UnknownNode,
)
from pgraft.protocol import MAX_FRAME_SIZE, encode_control

Handler = Callable[[dict[str, Any], "Conn"], Awaitable[Any]]


class CloseConnection(Exception):
    """Raised by a handler: the fake node closes the connection without answering."""


class SendRaw(Exception):
    """Raised by a handler: the fake node writes these bytes instead of an answer."""

    def __init__(self, data: bytes, close: bool = False) -> None:
        super().__init__("raw")
        self.data = data
        self.close = close


class Conn:
    """One client connection seen by the fake node."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def send(self, obj: Any) -> None:
        self.writer.write(encode_control(obj))


class Gate:
    """Holds handlers (in the fake node's loop) until the test thread opens it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()

    def open(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)


class FakeNode:
    """A fake pgraft node listening on 127.0.0.1 (and optionally on a Unix socket)."""

    def __init__(self, node_id: int = 1, *, leader: bool = True,
                 unix_path: str | None = None, secret: bytes | None = None,
                 ssl: Any = None) -> None:
        self.node_id = node_id
        self.leader = leader
        self.unix_path = unix_path
        #: Require clients to prove this cluster secret (pgraft.auth), as --secret-file does.
        self.secret = secret
        #: Serve TCP over TLS with this server-side ssl.SSLContext.
        self.ssl = ssl
        self.hello_reply: dict[str, Any] | None = None
        #: The features the hello answer names (none by default: a node of an earlier
        #: release); ["append_batch"] makes the asyncio client gather concurrent appends.
        self.features: list[str] = []
        self.hello_raw: bytes | None = None
        self.requests: list[tuple[str, dict[str, Any]]] = []
        #: Ops answered, in the order the answers were written.
        self.answered: list[str] = []
        self._changed = threading.Condition()
        self.connections = 0
        self.nodes: dict[int, dict[str, Any]] = {
            i: {"node_id": i, "address": "127.0.0.1", "port": 7000 + i, "role": "voter"}
            for i in (1, 2, 3)}
        self.log: list[bytes] = []
        self.kv: dict[str, str] = {}
        self.handlers: dict[str, Handler] = {
            "append": self._append, "append_batch": self._append_batch,
            "add_node": self._add_node,
            "remove_node": self._remove_node, "get_nodes": self._get_nodes,
            "get_leader": self._get_leader, "get_term": self._get_term,
            "is_leader": self._is_leader, "status": self._status, "kv_put": self._kv_put,
            "kv_get": self._kv_get, "kv_delete": self._kv_delete,
            "kv_list_keys": self._kv_list_keys, "get_entry": self._get_entry,
            "log_stats": self._log_stats, "transfer_leadership": self._transfer,
        }
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._servers: list[asyncio.AbstractServer] = []
        self._writers: set[asyncio.StreamWriter] = set()

    # ------------------------------------------------------------------ lifecycle
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeNode:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl)
        self.port = server.sockets[0].getsockname()[1]
        self._servers.append(server)
        if self.unix_path is not None:
            self._servers.append(await asyncio.start_unix_server(self._serve, self.unix_path))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        if self.unix_path is not None and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)

    async def _stop(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for server in self._servers:
            await server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def open_connections(self) -> int:
        """Client connections the fake node is serving now."""
        return len(self._writers)

    def drop_connections(self) -> None:
        """Abort every client connection (as if the node crashed)."""
        def abort() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
        self.loop.call_soon_threadsafe(abort)

    def gate(self) -> Gate:
        """A gate handlers can wait on until the test opens it."""
        return Gate(self.loop)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block the test thread until ``predicate()`` holds (checked whenever a request
        arrives or is answered); AssertionError after ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise AssertionError(f"fake node: condition not met within {timeout}s "
                                     f"(requests {self.requests}, answered {self.answered})")

    def _note(self, answered: str | None = None) -> None:
        with self._changed:
            if answered is not None:
                self.answered.append(answered)
            self._changed.notify_all()

    def __enter__(self) -> FakeNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- connection
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        conn = Conn(writer)
        decoder = core.FrameDecoder(MAX_FRAME_SIZE)
        tasks: set[asyncio.Task[None]] = set()
        greeted = False
        challenge: Any = None  # pgraft.auth.ServerChallenge while a proof is awaited
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                try:
                    objs = decoder.feed(data)
                except DecodeError:
                    return
                for obj in objs:
                    if not greeted and self.secret is not None:
                        try:
                            if challenge is None:
                                challenge = server_challenge(self.secret, obj, self.node_id)
                                conn.send(challenge.challenge(1))
                                continue
                            challenge.verify(obj)
                        except AuthenticationFailed as exc:
                            conn.send({"hello": "error", "error": exc.to_wire()})
                            await writer.drain()
                            return
                    if not greeted:
                        greeted = True
                        if self.hello_raw is not None:
                            writer.write(self.hello_raw)
                            continue
                        hello: dict[str, Any] = {"hello": "ok", "node_id": self.node_id,
                                                 "version": 1}
                        if self.features:
                            hello["features"] = self.features
                        conn.send(self.hello_reply or hello)
                        if (self.hello_reply or {}).get("hello") == "error":
                            await writer.drain()
                            return
                        continue
                    task = asyncio.ensure_future(self._request(obj, conn))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            for task in tasks:
                task.cancel()
            self._writers.discard(writer)
            writer.transport.abort()
            self._note()

    async def _request(self, req: dict[str, Any], conn: Conn) -> None:
        rid, op, args = req["id"], req["op"], req.get("args", {})
        self.requests.append((op, args))
        self._note()
        handler = self.handlers.get(op)
        try:
            if handler is None:
                raise InvalidArgument(f"unknown op {op!r}")
            result = await handler(args, conn)
        except CloseConnection:
            conn.writer.transport.abort()
            return
        except SendRaw as raw:
            conn.writer.write(raw.data)
            if raw.close:
                conn.writer.close()
            return
        except PgraftError as exc:
            conn.send({"id": rid, "ok": False, "error": exc.to_wire()})
            self._note(op)
            return
        conn.send({"id": rid, "ok": True, "result": result})
        self._note(op)

    # -------------------------------------------------------------- behaviour
    def _check_leader(self) -> None:
        if not self.leader:
            raise NotLeaderError("Cannot add node - this node is not the leader",
                                 node_id=self.node_id, leader_id=2,
                                 leader_address="127.0.0.1:7002")

    async def _append(self, args: dict[str, Any], conn: Conn) -> int:
        self._check_leader()
        self.log.append(args["data"])
        return len(self.log)

    async def _append_batch(self, args: dict[str, Any], conn: Conn) -> list[int]:
        self._check_leader()
        self.log.extend(args["data"])
        return list(range(len(self.log) - len(args["data"]) + 1, len(self.log) + 1))

    async def _add_node(self, args: dict[str, Any], conn: Conn) -> bool:
        self._check_leader()
        node_id = args["node_id"]
        if node_id in self.nodes:
            raise NodeExists(f"node {node_id} is already a member")
        self.nodes[node_id] = {"node_id": node_id, "address": args["address"],
                               "port": args["port"], "role": "learner"}
        return True

    async def _remove_node(self, args: dict[str, Any], conn: Conn) -> bool:
        self._check_leader()
        if args["node_id"] not in self.nodes:
            raise UnknownNode(f"node {args['node_id']} is not a member")
        del self.nodes[args["node_id"]]
        return True

    async def _get_nodes(self, args: dict[str, Any], conn: Conn) -> list[dict[str, Any]]:
        leader = self.node_id if self.leader else 2
        return [dict(n, is_leader=n["node_id"] == leader) for n in self.nodes.values()]

    async def _get_leader(self, args: dict[str, Any], conn: Conn) -> dict[str, Any]:
        leader = self.node_id if self.leader else 2
        node = self.nodes.get(leader)
        return {"leader_id": leader,
                "address": f"{node['address']}:{node['port']}" if node else None}

    async def _get_term(self, args: dict[str, Any], conn: Conn) -> int:
        return 3

    async def _is_leader(self, args: dict[str, Any], conn: Conn) -> bool:
        return self.leader

    async def _status(self, args: dict[str, Any], conn: Conn) -> dict[str, Any]:
        return {"node_id": self.node_id, "role": "leader" if self.leader else "follower",
                "term": 3, "leader_id": self.node_id if self.leader else 2,
                "commit_index": len(self.log), "applied_index": len(self.log),
                "first_index": 1, "last_index": len(self.log), "snapshot_index": 0,
                "log_bytes": sum(map(len, self.log)), "num_nodes": len(self.nodes),
                "progress": {2: {"match": len(self.log), "next": len(self.log) + 1,
                                 "state": "replicate"}},
                "metrics": {"proposals": len(self.log)}}

    async def _kv_put(self, args: dict[str, Any], conn: Conn) -> bool:
        self._check_leader()
        self.kv[args["key"]] = args["value"]
        return True

    async def _kv_get(self, args: dict[str, Any], conn: Conn) -> str | None:
        return self.kv.get(args["key"])

    async def _kv_delete(self, args: dict[str, Any], conn: Conn) -> bool:
        self._check_leader()
        return self.kv.pop(args["key"], None) is not None

    async def _kv_list_keys(self, args: dict[str, Any], conn: Conn) -> list[str]:
        return sorted(self.kv)

    async def _get_entry(self, args: dict[str, Any], conn: Conn) -> dict[str, Any] | None:
        index = args["index"]
        if index > len(self.log):
            return None
        return {"index": index, "term": 3, "type": 0, "data": self.log[index - 1]}

    async def _log_stats(self, args: dict[str, Any], conn: Conn) -> dict[str, Any]:
        n = len(self.log)
        return {"first_index": 1, "last_index": n, "commit_index": n, "applied_index": n,
                "snapshot_index": 0, "log_bytes": sum(map(len, self.log))}

    async def _transfer(self, args: dict[str, Any], conn: Conn) -> bool:
        self._check_leader()
        if args["node_id"] not in self.nodes:
            raise UnknownNode(f"node {args['node_id']} is not a member")
        return True
