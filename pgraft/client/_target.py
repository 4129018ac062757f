"""Where a client connects and what it proves: targets, security settings, and the errors of
dialling, shared by the asyncio and the blocking client.

No I/O here except reading the secret and TLS files when a client is created. ``Target`` is a
small hand-written value class, not a dataclass: ``dataclasses`` imports ``inspect``, which
costs a PostgreSQL session's first pgraft call more than the whole rest of the client.
"""

from __future__ import annotations

import os
import sys
from _socket import gaierror  # socket.gaierror, without importing socket.py

from ..checks import check_address, check_port
from ..errors import ConnectionFailed, InvalidArgument
from ..protocol import SOCKET_NAME

TYPE_CHECKING = False  # typing only for the type checker: see pgraft/errors.py
if TYPE_CHECKING:
    from typing import Any

#: Default timeout of a call and of connecting, in seconds.
DEFAULT_TIMEOUT = 10.0

_TARGET_HINT = ("give HOST:PORT (for example 127.0.0.1:7001) or the path of a node's Unix "
                "socket (<data-dir>/node.sock)")


def format_endpoint(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Target:
    """Where a node listens for clients: a TCP ``host``/``port`` or a Unix socket ``path``."""

    __slots__ = ("host", "port", "path")
    host: str | None
    port: int | None
    path: str | None

    def __init__(self, host: str | None = None, port: int | None = None,
                 path: str | None = None) -> None:
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "path", path)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Target is immutable: cannot set {name}")

    def _key(self) -> tuple[str | None, int | None, str | None]:
        return (self.host, self.port, self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Target) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Target(host={self.host!r}, port={self.port!r}, path={self.path!r})"

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        assert self.host is not None and self.port is not None
        return format_endpoint(self.host, self.port)


def parse_target(target: Any) -> Target:
    """Parse ``"host:port"``, ``"[v6]:port"``, a Unix socket path or a data directory.

    A value containing ``/`` (or a :class:`os.PathLike`) is a path; when it names a
    directory, the node's socket ``node.sock`` inside it is meant.
    """
    if isinstance(target, Target):
        return target
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str):
        raise InvalidArgument(f"node target must be a str, got {type(target).__name__}",
                              hint=_TARGET_HINT)
    if not target:
        raise InvalidArgument("node target is empty", hint=_TARGET_HINT)
    if "/" in target or target.startswith((".", "~")):
        path = os.path.expanduser(target)
        if os.path.isdir(path):
            path = os.path.join(path, SOCKET_NAME)
        return Target(path=path)
    host, sep, port_text = target.rpartition(":")
    if not sep or not host:
        raise InvalidArgument(f"cannot parse node target {target!r}: no port", hint=_TARGET_HINT)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InvalidArgument(f"cannot parse node target {target!r}",
                              hint="write IPv6 addresses in brackets: [::1]:7001")
    if not port_text.isdigit():
        raise InvalidArgument(f"cannot parse node target {target!r}: port {port_text!r} is "
                              "not a number", hint=_TARGET_HINT)
    try:
        check_address(host)
    except InvalidArgument as exc:
        raise InvalidArgument(f"cannot parse node target {target!r}: {exc.message}",
                              hint=_TARGET_HINT) from None
    return Target(host=host, port=check_port(int(port_text)))


class Security:
    """What a client proves and checks (docs/security.md): the cluster secret, TLS."""

    __slots__ = ("secret", "ssl")

    def __init__(self, secret: bytes | None, ssl: Any) -> None:
        self.secret = secret
        self.ssl = ssl  # an ssl.SSLContext, or None for plain TCP


def load_security(secret_file: str | os.PathLike[str] | None,
                  tls_ca: str | os.PathLike[str] | None,
                  tls_cert: str | os.PathLike[str] | None,
                  tls_key: str | os.PathLike[str] | None) -> Security | None:
    """Read the secret and build the TLS context (``auth``/``ssl`` are imported only here)."""
    if secret_file is None and tls_ca is None and tls_cert is None and tls_key is None:
        return None
    secret = None
    if secret_file is not None:
        from ..auth import load_secret

        secret = load_secret(os.fspath(secret_file))
    ctx = None
    if tls_ca is not None:
        from ..tls import client_context

        ctx = client_context(os.fspath(tls_ca), os.fspath(tls_cert) if tls_cert else None,
                             os.fspath(tls_key) if tls_key else None)
    elif tls_cert is not None or tls_key is not None:
        raise InvalidArgument("a TLS client certificate needs tls_ca= too",
                              hint="give the CA that signed the node's certificate")
    return Security(secret, ctx)


# ------------------------------------------------------------------ dialling errors
def dial_error(target: Target, exc: OSError) -> ConnectionFailed:
    """The error of a failed connect (or name lookup) to ``target``, with what to check."""
    if isinstance(exc, FileNotFoundError):
        return ConnectionFailed(
            f"cannot connect to pgraft node: socket {target.path} does not exist",
            hint="is the node running with that --data-dir? its socket is "
                 "<data-dir>/node.sock")
    if isinstance(exc, PermissionError):
        return ConnectionFailed(
            f"cannot connect to pgraft node at {target}: permission denied",
            hint="the socket belongs to the node's OS user; run as that user or connect over "
                 "TCP")
    ssl = sys.modules.get("ssl")  # loaded if TLS is in use; otherwise this is no TLS error
    if ssl is not None and isinstance(exc, ssl.SSLError):
        from ..tls import describe_ssl_error

        return ConnectionFailed(
            f"cannot connect to pgraft node at {target}: {describe_ssl_error(exc)}",
            hint="check tls_ca= (the CA that signed the node's certificate) and that the "
                 "certificate names the address you connect to")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionFailed(
            f"cannot connect to pgraft node at {target}: connection refused",
            hint="is `pgraft serve` running there? check the address and port "
                 "(default 127.0.0.1:7001, or set PGRAFT_NODE)")
    if isinstance(exc, gaierror):
        return ConnectionFailed(
            f"cannot connect to pgraft node at {target}: cannot resolve host "
            f"{target.host!r} ({exc.strerror})",
            hint="check the host name, or use an IP address")
    return ConnectionFailed(
        f"cannot connect to pgraft node at {target}: {exc.strerror or exc.__class__.__name__}",
        hint="check that the node is running and reachable from here")


def connect_timeout_error(target: str, timeout: float) -> ConnectionFailed:
    """No handshake within ``timeout`` seconds."""
    return ConnectionFailed(
        f"cannot connect to pgraft node at {target}: no answer within {timeout:g}s",
        hint="the node may be stopped, paused or overloaded, or a firewall drops the packets; "
             "check that `pgraft serve` runs there")
