"""Both clients with the cluster secret and over TLS, against the fake node."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from drivers import Driver
from fake_node import FakeNode

from pgraft.errors import AuthenticationFailed, ConnectionFailed, InvalidArgument
from tests.support.security import write_secret

OpenClient = Callable[..., Driver]
SECRET = b"a cluster secret of 32 bytes...."


@pytest.fixture
def secret_node() -> Iterator[FakeNode]:
    with FakeNode(1, secret=SECRET) as node:
        yield node


def test_secret_proven_both_ways(secret_node: FakeNode, open_client: OpenClient,
                                 tmp_path: Path) -> None:
    secret_file = write_secret(tmp_path / "secret", SECRET)
    assert open_client(secret_node.address, secret_file=secret_file).call("get_term") == 3


def test_wrong_or_missing_secret_is_refused(secret_node: FakeNode, open_client: OpenClient,
                                            tmp_path: Path) -> None:
    other = write_secret(tmp_path / "other", b"another secret, also 32 bytes...")
    with pytest.raises(AuthenticationFailed, match="different cluster secret"):
        open_client(secret_node.address, secret_file=other).call("get_term")
    with pytest.raises(AuthenticationFailed, match="requires the cluster secret") as info:
        open_client(secret_node.address).call("get_term")
    assert "secret_file=" in info.value.hint
    assert secret_node.requests == []


def test_node_without_a_secret_is_refused(fake: FakeNode, open_client: OpenClient,
                                          tmp_path: Path) -> None:
    secret_file = write_secret(tmp_path / "secret", SECRET)
    with pytest.raises(AuthenticationFailed, match="without proving the cluster secret"):
        open_client(fake.address, secret_file=secret_file).call("get_term")


# ------------------------------------------------------------------------ TLS
def _openssl(d: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA and a certificate for 127.0.0.1 signed by it (openssl CLI), and a second CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "other-ca"):
        _openssl(d, "req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "2", "-subj", f"/CN={ca}")
    (d / "node.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                "extendedKeyUsage=serverAuth\n")
    _openssl(d, "req", "-new", *ec, "-keyout", "node.key", "-out", "node.csr",
             "-subj", "/CN=node")
    _openssl(d, "x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "node.pem", "-days", "2", "-extfile", "node.ext")
    return {name: str(d / name) for name in ("ca.pem", "other-ca.pem", "node.pem", "node.key")}


@pytest.fixture
def tls_node(pki: dict[str, str]) -> Iterator[FakeNode]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["node.pem"], pki["node.key"])
    with FakeNode(1, ssl=ctx) as node:
        yield node


def test_tls_with_the_node_s_ca(tls_node: FakeNode, open_client: OpenClient,
                                pki: dict[str, str]) -> None:
    c = open_client(tls_node.address, tls_ca=pki["ca.pem"])
    assert c.call("get_term") == 3 and c.call("is_leader") is True
    assert tls_node.connections == 1


def test_tls_with_another_ca_is_refused(tls_node: FakeNode, open_client: OpenClient,
                                        pki: dict[str, str]) -> None:
    with pytest.raises(ConnectionFailed, match="certificate verification failed") as info:
        open_client(tls_node.address, tls_ca=pki["other-ca.pem"], timeout=5).call("get_term")
    assert "tls_ca=" in info.value.hint


def test_tls_client_certificate_needs_a_ca(open_client: OpenClient,
                                           pki: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument, match="needs tls_ca="):
        open_client("127.0.0.1:1", tls_cert=pki["node.pem"],
                    tls_key=pki["node.key"]).call("get_term")
