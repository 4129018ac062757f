"""TLS contexts of nodes and clients (README: Security).

A node started with ``--tls-cert/--tls-key/--tls-ca`` speaks TLS (1.2 or newer) on its TCP port,
to peers and clients alike, and dials its peers over TLS too:

- as a server it presents its certificate and asks for the other side's; a certificate that is
  presented must be signed by the CA, and a *peer* must present one (checked at the peer
  hello); clients may connect without one (they prove the cluster secret instead);
- as a client of its peers it checks that the peer's certificate is signed by the CA and names
  the address it dialled (an IP address SAN or a DNS name), and presents its own certificate.

The Unix socket never uses TLS: it is reachable only by the node's OS user.
"""

from __future__ import annotations

import ssl

from .auth import check_private_file
from .errors import InvalidArgument


def _readable(path: str, what: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise InvalidArgument(f"{what} {path} does not exist",
                              hint="give the path of a PEM file") from None
    except OSError as exc:
        raise InvalidArgument(f"{what} {path} cannot be read: {exc.strerror}",
                              hint="check the path and its permissions") from None


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str | None) -> None:
    _readable(cert, "TLS certificate")
    if key is not None:
        check_private_file(key, "TLS key", allow_root_group=True)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise InvalidArgument(f"cannot load the TLS certificate {cert} with key {key}: "
                              f"{exc.reason or exc}",
                              hint="give a PEM certificate and its matching unencrypted PEM "
                                   "private key") from None


def _load_ca(ctx: ssl.SSLContext, ca: str) -> None:
    _readable(ca, "TLS CA file")
    try:
        ctx.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise InvalidArgument(f"cannot load the TLS CA file {ca}: {exc.reason or exc}",
                              hint="give the PEM certificate(s) of the CA that signed the "
                                   "nodes' certificates") from None


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """The context of a node's listener: its certificate, and the CA that signs peers' (and
    optionally clients') certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert, key)
    _load_ca(ctx, ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(ca: str, cert: str | None = None, key: str | None = None, *,
                   check_hostname: bool = True) -> ssl.SSLContext:
    """The context of a connecting side: verify the node's certificate against ``ca`` (and
    its name against the address dialled); present ``cert`` when given."""
    if key is not None and cert is None:
        raise InvalidArgument("a TLS key was given without a certificate",
                              hint="give both --tls-cert and --tls-key, or neither")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_ca(ctx, ca)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert is not None:
        _load_chain(ctx, cert, key)
    return ctx


def describe_ssl_error(exc: BaseException) -> str:
    """A one-line reason for a failed TLS handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return str(exc) or type(exc).__name__
