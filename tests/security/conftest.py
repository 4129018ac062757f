"""Fixtures of the security tests: secret files and test-time certificates (openssl CLI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.security import write_secret


@pytest.fixture
def secret_file(tmpdir_short: str) -> str:
    return write_secret(Path(tmpdir_short) / "secret")


@pytest.fixture
def other_secret_file(tmpdir_short: str) -> str:
    return write_secret(Path(tmpdir_short) / "other-secret")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> tuple[str, str]:
    """A self-signed CA in ``d``: (cert, key)."""
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
             "-subj", f"/CN={name}", cwd=d)
    os.chmod(key, 0o600)
    return str(cert), str(key)


def make_cert(d: Path, name: str, ca: tuple[str, str], san: str = "IP:127.0.0.1"
              ) -> tuple[str, str]:
    """A certificate for ``san`` signed by ``ca``: (cert, key)."""
    key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", str(csr), "-CA", ca[0], "-CAkey", ca[1],
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext), cwd=d)
    os.chmod(key, 0o600)
    return str(cert), str(key)


@pytest.fixture(scope="session")
def pki() -> Iterator[dict[str, tuple[str, str]]]:
    """Certificates made at test time: a CA, a node certificate for 127.0.0.1, a client
    certificate, and a second CA (an impostor) with its own 127.0.0.1 certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = Path(tempfile.mkdtemp(prefix="pgs-pki-"))
    try:
        ca = make_ca(d, "ca")
        other = make_ca(d, "other-ca")
        yield {"ca": ca, "node": make_cert(d, "node", ca),
               "client": make_cert(d, "client", ca, "DNS:client"),
               "other_ca": other, "impostor": make_cert(d, "impostor", other)}
    finally:
        shutil.rmtree(d, ignore_errors=True)
