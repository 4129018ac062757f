"""Helpers of the security tests: secret files, and raw pgraft frames over asyncio streams
(what an attacker, or a broken peer, can send)."""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
from pathlib import Path
from typing import Any

from pgraft import _core_py as core
from pgraft.auth import ClientAuth


def write_secret(path: Path, secret: bytes | None = None, mode: int = 0o600) -> str:
    """A secret file (random unless ``secret`` is given) with ``mode``; returns its path."""
    path.write_bytes((secret or secrets.token_hex(32).encode()) + b"\n")
    os.chmod(path, mode)
    return str(path)


class RawConn:
    """One raw connection: send bytes or CONTROL objects, read decoded frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = core.FrameDecoder()
        self.sent = bytearray()  # everything written (a capture of the client's side)
        self.queue: list[Any] = []

    @classmethod
    async def open(cls, port: int | None = None, *, path: str | None = None,
                   ssl_ctx: ssl.SSLContext | None = None) -> RawConn:
        if path is not None:
            reader, writer = await asyncio.open_unix_connection(path)
        else:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ssl_ctx,
                server_hostname="127.0.0.1" if ssl_ctx is not None else None)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.sent += data
        self.writer.write(data)
        await self.writer.drain()

    async def send_obj(self, obj: Any) -> None:
        await self.send(core.encode_control(obj))

    async def recv(self, timeout: float = 5.0) -> Any:
        """The next decoded frame, or None when the node closed the connection."""
        async with asyncio.timeout(timeout):
            while not self.queue:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.queue.extend(self.decoder.feed(data))
            return self.queue.pop(0)

    async def closed_by_node(self, timeout: float = 5.0) -> bool:
        """True once the node closes (or resets) the connection."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    data = await self.reader.read(65536)
                    if not data:
                        return True
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        self.writer.close()


async def client_session(port: int, secret: bytes | None) -> tuple[RawConn, Any]:
    """A raw client handshake (answering the challenge when ``secret`` is given); returns the
    connection and the node's last handshake frame."""
    conn = await RawConn.open(port)
    hello: dict[str, Any] = {"hello": "client", "version": 1}
    auth = ClientAuth(secret, "client") if secret is not None else None
    if auth is not None:
        hello.update(auth.hello_fields())
    await conn.send_obj(hello)
    reply = await conn.recv()
    if auth is not None and isinstance(reply, dict) and reply.get("hello") == "challenge":
        await conn.send_obj(auth.answer(reply))
        reply = await conn.recv()
    return conn, reply


async def call(conn: RawConn, rid: int, op: str, **args: Any) -> Any:
    await conn.send_obj({"id": rid, "op": op, "args": args})
    return await conn.recv()
