"""ServerTls: the trust store can change under a running server, with and without SNI."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certhub.app import new_event_loop
from certhub.clock import SystemClock
from certhub.listener import ServerTls
from certhub.pki import (
    Authority,
    CaKeyPair,
    IssuanceRequest,
    LeafPolicy,
    create_issuing_ca,
    create_root_ca,
    create_server_certificate,
)
from certhub.rand import SystemRandom
from serverkit import make_key_and_csr

CLOCK, RNG = SystemClock(), SystemRandom()
PEM = serialization.Encoding.PEM


def _pem(pair: CaKeyPair) -> str:
    return pair.certificate.public_bytes(PEM).decode()


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


@dataclass
class Pki:
    server_ca: Path
    server_cert: Path
    server_key: Path
    ica1: CaKeyPair
    ica2: CaKeyPair
    dir: Path

    def client(self, name: str, ica: CaKeyPair) -> tuple[Path, Path]:
        key, csr = make_key_and_csr(name)
        leaf = Authority(CLOCK, RNG).sign(
            IssuanceRequest(
                csr_der=csr,
                device_id=name,
                revocation_id=bytes(32),
                policy=LeafPolicy.create("tls-test", "30d"),
                issuer=ica,
                root=ica.certificate,
                crl_url=None,
                key_seen=lambda _: False,
            )
        )
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert_path.write_bytes(leaf.certificate.public_bytes(PEM))
        _write_key(key_path, key)
        return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("tls")
    server_ca = create_root_ca(common_name="server ca", clock=CLOCK, rng=RNG)
    cert, key = create_server_certificate(
        server_ca, hosts=["localhost", "127.0.0.1"], clock=CLOCK, rng=RNG
    )
    (directory / "ca.pem").write_text(_pem(server_ca))
    (directory / "server.pem").write_bytes(cert.public_bytes(PEM))
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    _write_key(directory / "server.key", key)
    root = create_root_ca(common_name="root", clock=CLOCK, rng=RNG)
    ica1 = create_issuing_ca(root, common_name="ica 1", clock=CLOCK, rng=RNG)
    ica2 = create_issuing_ca(root, common_name="ica 2", clock=CLOCK, rng=RNG)
    return Pki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        ica1,
        ica2,
        directory,
    )


class _Hello(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"ok")  # type: ignore[attr-defined]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = new_event_loop()
    yield loop
    loop.close()


async def _handshake(port: int, pki: Pki, client: tuple[Path, Path], sni: bool) -> bool:
    context = ssl.create_default_context(cafile=str(pki.server_ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the client sees the server's verdict
    context.check_hostname = sni
    context.load_cert_chain(*client)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost" if sni else None
        )
    except (ssl.SSLError, ConnectionError):
        return False
    data = await reader.read(2)
    writer.close()
    return data == b"ok"


@pytest.mark.parametrize("sni", [True, False], ids=["with-sni", "without-sni"])
def test_new_handshakes_use_the_rebuilt_trust_store(
    pki: Pki, loop: asyncio.AbstractEventLoop, sni: bool
) -> None:
    tls = ServerTls(pki.server_cert, pki.server_key, [_pem(pki.ica1)])
    first = pki.client("d1", pki.ica1)
    second = pki.client("d2", pki.ica2)

    async def scenario() -> None:
        server = await asyncio.get_running_loop().create_server(
            _Hello, "127.0.0.1", 0, ssl=tls.context
        )
        port = server.sockets[0].getsockname()[1]
        try:
            assert await _handshake(port, pki, first, sni)
            assert not await _handshake(port, pki, second, sni)
            assert tls.update_trust([_pem(pki.ica1), _pem(pki.ica2)])
            assert await _handshake(port, pki, second, sni)
            assert tls.update_trust([_pem(pki.ica2)])
            assert not await _handshake(port, pki, first, sni)
        finally:
            server.close()

    loop.run_until_complete(scenario())
    assert tls.handshakes_switched == 2  # the two handshakes after each update switched


def test_an_unchanged_trust_list_keeps_the_context(pki: Pki) -> None:
    tls = ServerTls(pki.server_cert, pki.server_key, [_pem(pki.ica1)])
    assert not tls.update_trust([_pem(pki.ica1)])
    assert tls.trust_pems == (_pem(pki.ica1),)


def test_one_unreadable_certificate_does_not_drop_the_others(pki: Pki) -> None:
    bad = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    tls = ServerTls(pki.server_cert, pki.server_key, [bad, _pem(pki.ica1)])
    stats = tls.context.cert_store_stats()
    assert stats["x509_ca"] == 1


def test_contexts_allow_tls12_and_13_and_send_no_tickets(pki: Pki) -> None:
    tls = ServerTls(pki.server_cert, pki.server_key, [])
    context = tls.context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert context.num_tickets == 0
    assert context.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert context.options & ssl.OP_NO_TICKET


def _memory_handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    """A full handshake over memory BIOs; returns the client's end."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    done = {"srv": False, "cli": False}
    for _ in range(20):
        for name, end in (("cli", cli), ("srv", srv)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values()), done
    with pytest.raises(ssl.SSLWantReadError):
        cli.read(1)  # takes in whatever the server sent after the handshake
    return cli


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_a_client_that_offers_tickets_gets_none(pki: Pki, version: ssl.TLSVersion) -> None:
    client = ssl.create_default_context(cafile=str(pki.server_ca))
    client.minimum_version = client.maximum_version = version
    assert not client.options & ssl.OP_NO_TICKET  # the client offers session tickets
    tls = ServerTls(pki.server_cert, pki.server_key, [])
    end = _memory_handshake(tls.context, client)
    assert end.version() == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
    session = end.session
    assert session is None or not session.has_ticket
