"""TlsTransport against a real TLS server on loopback (stdlib ssl + certhub.pki)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certhub.agent import ClientCertificate, Endpoint, TlsTransport, TransportError
from certhub.agent.certs import key_to_pem
from certhub.clock import SystemClock
from certhub.pki import create_issuing_ca, create_root_ca, create_server_certificate
from certhub.rand import SystemRandom

PEM = serialization.Encoding.PEM


class Pki:
    def __init__(self, tmp_path: Path) -> None:
        clock, rng = SystemClock(), SystemRandom()
        self.root = create_root_ca(common_name="server-root", clock=clock, rng=rng)
        cert, key = create_server_certificate(self.root, hosts=["localhost"], clock=clock, rng=rng)
        self.anchor = tmp_path / "anchor.pem"
        self.anchor.write_bytes(self.root.certificate.public_bytes(PEM))
        self.server_cert = tmp_path / "server.pem"
        self.server_cert.write_bytes(cert.public_bytes(PEM))
        self.server_key = tmp_path / "server.key"
        self.server_key.write_bytes(key_to_pem(key))
        # a client "device" certificate from another CA (an issuing CA used as a leaf here)
        self.client_root = create_root_ca(common_name="client-root", clock=clock, rng=rng)
        client = create_issuing_ca(self.client_root, common_name="dev-1", clock=clock, rng=rng)
        self.client = ClientCertificate(tmp_path / "client.pem", tmp_path / "client.key")
        self.client.chain_file.write_bytes(client.certificate.public_bytes(PEM))
        self.client.key_file.write_bytes(key_to_pem(client.private_key))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(
            cadata=self.client_root.certificate.public_bytes(PEM).decode()
        )
        return context


async def echo_server(pki: Pki, seen: list[bytes | None]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        obj = writer.get_extra_info("ssl_object")
        seen.append(obj.getpeercert(binary_form=True))
        data = await reader.read(100)
        writer.write(b"echo:" + data)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=pki.server_context())


def test_tls_with_client_certificate(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    seen: list[bytes | None] = []

    async def body() -> bytes:
        server = await echo_server(pki, seen)
        port = server.sockets[0].getsockname()[1]
        stream = await TlsTransport(pki.anchor).open(
            Endpoint("127.0.0.1", port, "localhost"), pki.client
        )
        stream.write(b"hi")
        await stream.drain()
        data = await stream.read()
        stream.close()
        server.close()
        await server.wait_closed()
        return data

    assert asyncio.run(body()) == b"echo:hi"
    leaf = x509.load_pem_x509_certificate(pki.client.chain_file.read_bytes())
    assert seen == [leaf.public_bytes(serialization.Encoding.DER)]


def test_tls_without_client_certificate(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    seen: list[bytes | None] = []

    async def body() -> None:
        server = await echo_server(pki, seen)
        port = server.sockets[0].getsockname()[1]
        stream = await TlsTransport(pki.anchor).open(Endpoint("localhost", port), None)
        stream.write(b"x")
        assert await stream.read() == b"echo:x"
        server.close()
        await server.wait_closed()

    asyncio.run(body())
    assert seen == [None]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("wrong-anchor", "unreachable", id="reject/untrusted-server"),
        pytest.param("wrong-name", "unreachable", id="reject/hostname-mismatch"),
        pytest.param("closed-port", "unreachable", id="reject/connection-refused"),
        pytest.param("bad-client-files", "bad-client-certificate", id="reject/bad-client-files"),
    ],
)
def test_tls_failures(tmp_path: Path, case: str, reason: str) -> None:
    pki = Pki(tmp_path)
    anchor = pki.anchor
    if case == "wrong-anchor":
        anchor = tmp_path / "other.pem"
        anchor.write_bytes(pki.client_root.certificate.public_bytes(PEM))
    client = pki.client
    if case == "bad-client-files":
        client = ClientCertificate(tmp_path / "missing.pem", tmp_path / "missing.key")

    async def body() -> None:
        server = await echo_server(pki, [])
        port = server.sockets[0].getsockname()[1]
        if case == "closed-port":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        name = "wrong.example" if case == "wrong-name" else "localhost"
        try:
            await TlsTransport(anchor, timeout=5).open(Endpoint("127.0.0.1", port, name), client)
        finally:
            server.close()
            await server.wait_closed()

    with pytest.raises(TransportError) as info:
        asyncio.run(body())
    assert info.value.reason == reason


def test_unusable_trust_anchor(tmp_path: Path) -> None:
    anchor = tmp_path / "anchor.pem"
    anchor.write_text("not a certificate\n")

    async def body() -> None:
        await TlsTransport(anchor).open(Endpoint("127.0.0.1", 1), None)

    with pytest.raises(TransportError) as info:
        asyncio.run(body())
    assert info.value.reason == "bad-trust-anchor"
