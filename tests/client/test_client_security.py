"""Both clients with the cluster secret and over TLS, against the fake node."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from drivers import Driver
from fake_node import FakeNode

import pgraft
from pgraft._impl import core
from pgraft.errors import AuthenticationFailed, ConnectionFailed, InvalidArgument
from pgraft.protocol import MAX_FRAME_SIZE, encode_control
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


def test_a_slow_tls_handshake_resumes_across_interrupt_slices(pki: dict[str, str]) -> None:
    # The client waits for the node's TLS answer in slices (asking interrupt() between them);
    # a handshake that outlasts several slices goes on where it stopped.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["node.pem"], pki["node.key"])
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        time.sleep(0.2)  # the client's hello waits unanswered meanwhile
        with ctx.wrap_socket(conn, server_side=True) as tls:
            decoder = core.FrameDecoder(MAX_FRAME_SIZE)
            first = True
            while data := tls.recv(65536):
                for obj in decoder.feed(data):
                    tls.sendall(encode_control(
                        {"hello": "ok", "node_id": 1, "version": 1} if first else
                        {"id": obj["id"], "ok": True, "result": 3}))
                    first = False

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    asked: list[float] = []

    def interrupt() -> bool:
        asked.append(time.monotonic())
        return False

    with srv, pgraft.Client(f"127.0.0.1:{srv.getsockname()[1]}", tls_ca=pki["ca.pem"],
                            interrupt=interrupt, interrupt_interval=0.02) as c:
        assert c.get_term() == 3
        assert len(asked) >= 3  # the handshake did wait across slices
        assert c.get_term() == 3
    thread.join(10)
