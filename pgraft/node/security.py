"""A node's security settings: cluster secret, TLS and connection limits (README: Security).

``pgraft serve`` gets them from :func:`add_security_arguments` / :func:`security_from_args`;
:class:`pgraft.node.NodeConfig` carries them as ``security``; the listener and the peer links
(:mod:`pgraft.node.listener`, :mod:`pgraft.node.peers`) enforce them (:meth:`SecurityConfig.load`
reads the files once, at start).
"""

from __future__ import annotations

import argparse
import ipaddress
import ssl
from dataclasses import dataclass

from ..auth import load_secret
from ..errors import InvalidArgument
from ..tls import client_context, server_context

#: Connections (peers and clients, over TCP) accepted from one remote IP address at a time.
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 64
#: Connections accepted in total (TCP and Unix socket).
DEFAULT_MAX_CONNECTIONS = 1024
#: Requests one client connection may have in flight (answered ``overloaded`` beyond).
DEFAULT_MAX_CLIENT_INFLIGHT = 4096
#: Seconds a new connection has to complete its handshake.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Bytes a connection may have buffered before it completed its handshake.
HANDSHAKE_MAX_BYTES = 64 * 1024


@dataclass
class SecurityConfig:
    """The security part of a node's configuration. Paths are read by :meth:`load`."""

    secret_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    max_client_inflight: int = DEFAULT_MAX_CLIENT_INFLIGHT
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT

    def validate(self) -> None:
        tls = (self.tls_cert, self.tls_key, self.tls_ca)
        if any(tls) and not all(tls):
            raise InvalidArgument(
                "TLS needs --tls-cert, --tls-key and --tls-ca together",
                hint="the node presents its certificate (cert + key) and verifies its peers' "
                     "against the CA; see README: Security for generating them")
        for name in ("max_connections", "max_connections_per_address", "max_client_inflight"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"{name} must be positive")
        if not self.handshake_timeout > 0:
            raise InvalidArgument("handshake_timeout must be positive")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def load(self) -> LoadedSecurity:
        """Read the secret and the TLS files (raises InvalidArgument with a hint)."""
        self.validate()
        secret = load_secret(self.secret_file) if self.secret_file is not None else None
        server_ctx = client_ctx = None
        if self.tls_cert is not None:
            assert self.tls_key is not None and self.tls_ca is not None
            server_ctx = server_context(self.tls_cert, self.tls_key, self.tls_ca)
            client_ctx = client_context(self.tls_ca, self.tls_cert, self.tls_key)
        return LoadedSecurity(self, secret, server_ctx, client_ctx)


@dataclass
class LoadedSecurity:
    """:class:`SecurityConfig` with its files read: what the listener and the peer links use."""

    config: SecurityConfig
    secret: bytes | None
    server_ssl: ssl.SSLContext | None
    client_ssl: ssl.SSLContext | None


def is_loopback(host: str) -> bool:
    """True when ``host`` (a bind address) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------ command line
def add_security_arguments(parser: argparse.ArgumentParser) -> None:
    """The security options of ``pgraft serve``."""
    g = parser.add_argument_group("security (README: Security)")
    g.add_argument("--secret-file", default=None, metavar="PATH",
                   help="file holding the cluster secret (mode 0600; at least 16 bytes): "
                        "peers and TCP clients must prove it; without it the node trusts its "
                        "network")
    g.add_argument("--tls-cert", default=None, metavar="PEM",
                   help="this node's TLS certificate: TLS on the TCP port and to peers")
    g.add_argument("--tls-key", default=None, metavar="PEM",
                   help="the private key of --tls-cert (mode 0600)")
    g.add_argument("--tls-ca", default=None, metavar="PEM",
                   help="CA certificate(s) that sign the nodes' (and clients') certificates")
    g.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                   metavar="N", help="connections accepted in total (default "
                                     f"{DEFAULT_MAX_CONNECTIONS})")
    g.add_argument("--max-connections-per-address", type=int,
                   default=DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, metavar="N",
                   help="connections accepted from one remote address (default "
                        f"{DEFAULT_MAX_CONNECTIONS_PER_ADDRESS})")
    g.add_argument("--max-client-inflight", type=int, default=DEFAULT_MAX_CLIENT_INFLIGHT,
                   metavar="N", help="requests one client connection may have in flight "
                                     f"(default {DEFAULT_MAX_CLIENT_INFLIGHT})")


def security_from_args(ns: argparse.Namespace) -> SecurityConfig:
    config = SecurityConfig(
        secret_file=getattr(ns, "secret_file", None),
        tls_cert=getattr(ns, "tls_cert", None), tls_key=getattr(ns, "tls_key", None),
        tls_ca=getattr(ns, "tls_ca", None),
        max_connections=getattr(ns, "max_connections", DEFAULT_MAX_CONNECTIONS),
        max_connections_per_address=getattr(ns, "max_connections_per_address",
                                            DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
        max_client_inflight=getattr(ns, "max_client_inflight", DEFAULT_MAX_CLIENT_INFLIGHT))
    config.validate()
    return config
