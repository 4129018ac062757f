"""TLS between nodes and for clients, with certificates made at test time (openssl CLI)."""

from __future__ import annotations

import ssl

import pytest

import pgraft
from pgraft.errors import AuthenticationFailed, ConnectionFailed, InvalidArgument
from pgraft.node.security import SecurityConfig
from pgraft.tls import client_context
from tests.support.inprocess import Cluster, run
from tests.support.security import RawConn


def tls_config(pki: dict[str, tuple[str, str]], which: str = "node", ca: str = "ca",
               secret_file: str | None = None) -> SecurityConfig:
    return SecurityConfig(secret_file=secret_file, tls_cert=pki[which][0],
                          tls_key=pki[which][1], tls_ca=pki[ca][0])


def test_tls_cluster_and_clients(tmpdir_short: str, pki: dict[str, tuple[str, str]],
                                 secret_file: str) -> None:
    async def main() -> None:
        c = Cluster(tmpdir_short, 3, security=tls_config(pki, secret_file=secret_file))
        await c.start_all()
        try:
            lead = await c.wait_leader()
            addr = f"127.0.0.1:{lead.port}"
            async with await pgraft.connect(addr, timeout=5, secret_file=secret_file,
                                            tls_ca=pki["ca"][0]) as cl:
                index = await cl.append(b"over tls")
                await c.wait_applied(index)  # replicated over TLS peer links
            # with a client certificate too
            async with await pgraft.connect(addr, timeout=5, secret_file=secret_file,
                                            tls_ca=pki["ca"][0], tls_cert=pki["client"][0],
                                            tls_key=pki["client"][1]) as cl:
                assert await cl.is_leader()
            # a plain-text client gets nothing (the node speaks TLS)
            with pytest.raises(ConnectionFailed):
                await pgraft.connect(addr, timeout=2, secret_file=secret_file)
            # a client that trusts another CA refuses the node's certificate
            with pytest.raises(ConnectionFailed, match="certificate verification failed"):
                await pgraft.connect(addr, timeout=5, secret_file=secret_file,
                                     tls_ca=pki["other_ca"][0])
            # a TLS client without a certificate may not claim to be a peer
            conn = await RawConn.open(lead.port, ssl_ctx=client_context(pki["ca"][0]))
            await conn.send_obj({"hello": "peer", "node_id": 7, "version": 1})
            reply = await conn.recv()
            assert reply["error"]["code"] == "authentication_failed"
            assert "no TLS certificate" in reply["error"]["message"]
            conn.close()
            # a client certificate signed by another CA is refused in the TLS handshake
            bad = client_context(pki["ca"][0], pki["impostor"][0], pki["impostor"][1])
            with pytest.raises((ssl.SSLError, ConnectionError)):
                conn = await RawConn.open(lead.port, ssl_ctx=bad)
                await conn.send_obj({"hello": "peer", "node_id": 7, "version": 1})
                if await conn.recv() is None:
                    raise ConnectionError("closed")
            # the node still serves
            async with await pgraft.connect(addr, timeout=5, secret_file=secret_file,
                                            tls_ca=pki["ca"][0]) as cl:
                assert await cl.append(b"still") > index
        finally:
            await c.stop_all()

    run(main(), timeout=90)


def test_node_with_a_foreign_certificate_cannot_join(tmpdir_short: str,
                                                     pki: dict[str, tuple[str, str]]) -> None:
    async def main() -> None:
        c = Cluster(tmpdir_short, 3, security=tls_config(pki))
        await c.start(1)
        await c.start(2)
        # node 3 presents a certificate of another CA (and trusts only that CA)
        await c.start(3, security=tls_config(pki, "impostor", "other_ca"))
        try:
            lead = await c.wait_leader(among={1, 2})
            async with await pgraft.connect(f"127.0.0.1:{lead.port}", timeout=5,
                                            tls_ca=pki["ca"][0]) as cl:
                index = await cl.append(b"x")
            await c.wait_applied(index, ids={1, 2})
            assert c.nodes[3].state.applied_index < index
            assert c.nodes[3].leader_id == 0
        finally:
            await c.stop_all()

    run(main(), timeout=60)


def test_tls_settings_are_checked(pki: dict[str, tuple[str, str]], tmp_path: object) -> None:
    with pytest.raises(InvalidArgument, match="together"):
        SecurityConfig(tls_cert=pki["node"][0]).validate()
    with pytest.raises(InvalidArgument, match="does not exist"):
        SecurityConfig(tls_cert="/nonexistent.pem", tls_key=pki["node"][1],
                       tls_ca=pki["ca"][0]).load()
    with pytest.raises(InvalidArgument, match="cannot load the TLS certificate"):
        SecurityConfig(tls_cert=pki["ca"][0], tls_key=pki["node"][1],
                       tls_ca=pki["ca"][0]).load()
    with pytest.raises(InvalidArgument, match="needs tls_ca"):
        pgraft.Client("127.0.0.1:1", tls_cert=pki["client"][0], tls_key=pki["client"][1])
    _ = AuthenticationFailed
