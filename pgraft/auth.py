"""Cluster-secret authentication of peers and clients (README: Security).

Every node and client of a cluster may share one secret (``--secret-file``). It is proven by a
mutual challenge-response inside the handshake of ``docs/protocol.md``, and never sent:

1. the connecting side sends its hello with ``"auth": "hmac-sha256"`` and a fresh random
   ``"nonce"`` (32 bytes);
2. a node with a secret answers ``{"hello": "challenge", "node_id", "version", "nonce": its own
   fresh nonce, "proof": HMAC(secret, "server" ...)}``;
3. the connecting side checks that proof (the node knows the secret), then sends
   ``{"auth": "proof", "proof": HMAC(secret, "client" ...)}``;
4. the node checks it and answers ``{"hello": "ok", ...}``, or refuses with an
   ``authentication_failed`` error and closes.

Both MACs are HMAC-SHA256 over a fixed label, the role of the connecting side (peer or
client), both node ids and both nonces. The two labels differ, so a node's proof can never be
played back as a client's; every connection has a fresh nonce of the node's, so a recorded
handshake proves nothing on a new connection (replay); the ids bind a proof to one pair of
endpoints. Proofs are compared in constant time (:func:`hmac.compare_digest`).

A node without a secret answers ``ok`` at once (the behaviour before authentication existed);
a client or node that was given a secret refuses such a node, since it did not prove anything.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
import struct
import time
from typing import Any

from .errors import AuthenticationFailed, InvalidArgument

SCHEME = "hmac-sha256"
NONCE_BYTES = 32
PROOF_BYTES = 32
#: A secret shorter than this (after stripping surrounding whitespace) is refused.
MIN_SECRET_BYTES = 16
#: Largest secret file read.
MAX_SECRET_FILE = 64 * 1024
_LABEL_SERVER = b"pgraft-auth-v1 server"
_LABEL_CLIENT = b"pgraft-auth-v1 client"
_IDS = struct.Struct("<QQ")
_ROLES = {"peer": b"peer", "client": b"client"}
_GENERATE = "head -c 32 /dev/urandom | base64 > {path} && chmod 600 {path}"


# ------------------------------------------------------------------------ files
def check_private_file(path: str, what: str, *, allow_root_group: bool = False) -> os.stat_result:
    """Refuse ``path`` unless it is a regular file that only its owner can read, and its owner
    is this process's user (or root). ``allow_root_group``: a root-owned file may be readable by
    its group (PostgreSQL's rule for a TLS key, 0640 root:ssl-cert)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InvalidArgument(f"{what} {path} does not exist",
                              hint="give the path of an existing file") from None
    except OSError as exc:
        raise InvalidArgument(f"{what} {path} cannot be read: {exc.strerror}",
                              hint="check the path and its permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"{what} {path} is not a regular file",
                              hint="give the path of a file")
    mode = stat.S_IMODE(st.st_mode)
    euid = os.geteuid()
    if st.st_uid not in (euid, 0):
        raise InvalidArgument(f"{what} {path} is owned by uid {st.st_uid}, not by this user "
                              f"(uid {euid}) or root",
                              hint=f"chown the file to the user that runs pgraft, then "
                                   f"chmod 600 {path}")
    allowed = 0o740 if (allow_root_group and st.st_uid == 0) else 0o700
    if mode & ~allowed & 0o777:
        raise InvalidArgument(f"{what} {path} has permissions {mode:04o}: it must not be "
                              "readable or writable by group or others",
                              hint=f"run: chmod 600 {path}")
    return st


def load_secret(path: str) -> bytes:
    """The cluster secret in ``path``: its bytes without surrounding whitespace (so a trailing
    newline does not matter). The file must be private (see :func:`check_private_file`) and
    hold at least ``MIN_SECRET_BYTES`` bytes."""
    if not path:
        raise InvalidArgument("the secret file path is empty",
                              hint="give the path of a file that holds the cluster secret")
    check_private_file(path, "secret file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise InvalidArgument(f"secret file {path} cannot be read: {exc.strerror}",
                              hint="check the path and its permissions") from None
    if len(data) > MAX_SECRET_FILE:
        raise InvalidArgument(f"secret file {path} is larger than {MAX_SECRET_FILE} bytes",
                              hint="a secret of 32 random bytes is plenty: "
                                   + _GENERATE.format(path=path))
    secret = data.strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise InvalidArgument(f"secret file {path} holds {len(secret)} bytes; at least "
                              f"{MIN_SECRET_BYTES} are needed",
                              hint="generate one: " + _GENERATE.format(path=path))
    return secret


# ------------------------------------------------------------------------- proofs
def _mac(secret: bytes, label: bytes, role: str, client_id: int, server_id: int,
         client_nonce: bytes, server_nonce: bytes) -> bytes:
    msg = b"\0".join((label, _ROLES[role], _IDS.pack(client_id, server_id), client_nonce,
                      server_nonce))
    return hmac.new(secret, msg, hashlib.sha256).digest()


def _nonce(value: Any) -> bytes | None:
    if isinstance(value, bytes) and len(value) == NONCE_BYTES:
        return value
    return None


def _id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        return 0
    return value


class ServerChallenge:
    """The node's side of one connection's authentication."""

    __slots__ = ("_secret", "role", "client_id", "server_id", "_client_nonce",
                 "_server_nonce")

    def __init__(self, secret: bytes, role: str, client_id: int, server_id: int,
                 client_nonce: bytes) -> None:
        self._secret = secret
        self.role = role
        self.client_id = client_id
        self.server_id = server_id
        self._client_nonce = client_nonce
        self._server_nonce = secrets.token_bytes(NONCE_BYTES)

    def challenge(self, version: int) -> dict[str, Any]:
        """The challenge frame: the node's nonce and its own proof."""
        proof = _mac(self._secret, _LABEL_SERVER, self.role, self.client_id, self.server_id,
                     self._client_nonce, self._server_nonce)
        return {"hello": "challenge", "node_id": self.server_id, "version": version,
                "auth": SCHEME, "nonce": self._server_nonce, "proof": proof}

    def verify(self, reply: Any) -> None:
        """Check the connecting side's answer; raises AuthenticationFailed."""
        proof = reply.get("proof") if isinstance(reply, dict) else None
        if not isinstance(reply, dict) or reply.get("auth") != "proof" or not isinstance(
                proof, bytes):
            raise AuthenticationFailed("expected the answer to the authentication challenge "
                                       "({'auth': 'proof', 'proof': ...})")
        expected = _mac(self._secret, _LABEL_CLIENT, self.role, self.client_id, self.server_id,
                        self._client_nonce, self._server_nonce)
        if not hmac.compare_digest(proof, expected):
            raise AuthenticationFailed("wrong cluster secret (the proof does not match)")


def server_challenge(secret: bytes, hello: dict[str, Any], server_id: int) -> ServerChallenge:
    """Start authenticating a connection whose hello is ``hello``; raises AuthenticationFailed
    when the hello offers no authentication."""
    role = hello.get("hello")
    if role not in _ROLES:
        raise AuthenticationFailed(f"unknown hello kind {role!r}")
    nonce = _nonce(hello.get("nonce"))
    if hello.get("auth") != SCHEME or nonce is None:
        raise AuthenticationFailed(
            f"node {server_id} requires the cluster secret and this {role} did not offer it",
            hint="start the node with --secret-file, or pass secret_file= to the client "
                 "(CLI: --secret-file or $PGRAFT_SECRET_FILE)" if role == "client" else
            "start every node with the same --secret-file")
    return ServerChallenge(secret, role, _id(hello.get("node_id")) if role == "peer" else 0,
                           server_id, nonce)


class ClientAuth:
    """The connecting side of one connection's authentication (a client or a dialling node)."""

    __slots__ = ("_secret", "role", "client_id", "_nonce", "expected_server")

    def __init__(self, secret: bytes, role: str, client_id: int = 0,
                 expected_server: int | None = None) -> None:
        if role not in _ROLES:
            raise ValueError(role)
        self._secret = secret
        self.role = role
        self.client_id = client_id if role == "peer" else 0
        self.expected_server = expected_server
        self._nonce = secrets.token_bytes(NONCE_BYTES)

    def hello_fields(self) -> dict[str, Any]:
        """What to add to the hello."""
        return {"auth": SCHEME, "nonce": self._nonce}

    def answer(self, challenge: Any) -> dict[str, Any]:
        """Check the node's challenge frame and return the proof frame; raises
        AuthenticationFailed when the node did not prove the secret."""
        if not isinstance(challenge, dict):
            raise AuthenticationFailed("the node did not answer the handshake")
        if challenge.get("hello") == "ok":
            raise AuthenticationFailed(
                "the node accepted the connection without proving the cluster secret: it runs "
                "without --secret-file", hint="start every node with the same --secret-file")
        server_id = _id(challenge.get("node_id"))
        nonce = _nonce(challenge.get("nonce"))
        proof = challenge.get("proof")
        if (challenge.get("hello") != "challenge" or challenge.get("auth") != SCHEME
                or nonce is None or not isinstance(proof, bytes) or not server_id):
            raise AuthenticationFailed("the node sent a malformed authentication challenge")
        if self.expected_server is not None and server_id != self.expected_server:
            raise AuthenticationFailed(f"the node is node {server_id}, not node "
                                       f"{self.expected_server}")
        expected = _mac(self._secret, _LABEL_SERVER, self.role, self.client_id, server_id,
                        self._nonce, nonce)
        if not hmac.compare_digest(proof, expected):
            raise AuthenticationFailed(
                f"node {server_id} proved a different cluster secret",
                hint="give every node and client the same secret file")
        return {"auth": "proof", "proof": _mac(self._secret, _LABEL_CLIENT, self.role,
                                               self.client_id, server_id, self._nonce, nonce)}


# ------------------------------------------------------------------ rate-limited log
class RateLimitedLog:
    """Log lines that a remote party can trigger (refused handshakes, malformed frames): at
    most ``burst`` lines per ``interval`` seconds per kind; what was held back is counted and
    reported with the next line let through."""

    def __init__(self, logger: logging.Logger, *, burst: int = 10, interval: float = 10.0,
                 clock: Any = time.monotonic) -> None:
        self._log = logger
        self._burst = burst
        self._interval = interval
        self._clock = clock
        self._windows: dict[str, list[float | int]] = {}

    def warning(self, kind: str, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` under ``kind``; False when it was suppressed."""
        now = self._clock()
        window = self._windows.get(kind)
        if window is None or now - window[0] >= self._interval:
            suppressed = int(window[2]) if window is not None else 0
            window = self._windows[kind] = [now, 0, 0]
            if suppressed:
                self._log.warning("%d more %s messages were suppressed", suppressed, kind)
        if window[1] >= self._burst:
            window[2] += 1
            return False
        window[1] += 1
        self._log.warning(msg, *args, stacklevel=2)
        return True
