"""ServerTls: the trust store can change under a running server, with and without SNI;
and the listener's own TLS transport, whose handshakes run on worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certhub.app import new_event_loop
from certhub.clock import SystemClock
from certhub.listener import ServerTls
from certhub.listener._tls import MAX_HANDSHAKE_BACKLOG, HandshakeWorkers, TlsConnection
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
from serverkit import make_key_and_csr, self_signed, write_key_and_cert

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


# -- the listener's own TLS transport (handshakes on worker threads) --------------------


class _Echo(asyncio.Protocol):
    """Answers each chunk upper-cased; remembers what TLS told it."""

    def __init__(self, seen: list[_Echo]) -> None:
        self.transport: TlsConnection | None = None
        self.peer_der: bytes | None = None
        self.lost = asyncio.get_running_loop().create_future()
        seen.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, TlsConnection)
        self.transport = transport
        self.peer_der = transport.peer_certificate_der()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if data == b"bye":
            self.transport.close()
        else:
            self.transport.write(data.upper())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class _GatedWorkers(HandshakeWorkers):
    """Holds the ``gated``-th handshake step until ``gate`` is set (the test's seam)."""

    def __init__(self, gated: int) -> None:
        super().__init__(1)
        self.gated = gated
        self.submitted = 0
        self.holding = threading.Event()
        self.gate = threading.Event()

    def submit(self, connection: TlsConnection) -> None:
        self.submitted += 1
        if self.submitted != self.gated:
            super().submit(connection)
            return

        def later() -> None:
            self.holding.set()
            self.gate.wait(10)
            HandshakeWorkers.submit(self, connection)

        threading.Thread(target=later, daemon=True).start()


class _Server:
    """A TlsConnection server on a uvloop thread, as the listener builds it."""

    def __init__(self, tls: ServerTls, workers: HandshakeWorkers, timeout: float = 10.0) -> None:
        self.apps: list[_Echo] = []
        self.failures: list[str] = []
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> asyncio.AbstractServer:
            loop = asyncio.get_running_loop()
            return await loop.create_server(
                lambda: TlsConnection(
                    tls.listener_context,
                    lambda: _Echo(self.apps),
                    workers,
                    loop,
                    timeout,
                    self.failures.append,
                ),
                "127.0.0.1",
                0,
            )

        self.server = self.call(start())
        self.port = self.server.sockets[0].getsockname()[1]
        self.workers = workers

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()

        self.call(stop())
        self.workers.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class _Client:
    """A TLS client over memory BIOs on a blocking socket: the test decides what is sent
    when, down to the byte."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def receive(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                self.flush()
                return
            except ssl.SSLWantReadError:
                self.flush()
                if not self.receive():
                    raise ConnectionError("closed during the handshake") from None

    def read(self) -> bytes:
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not self.receive():
                    raise ConnectionError("closed") from None

    def close(self) -> None:
        self.sock.close()


def _client_context(pki: Pki, client: tuple[Path, Path], version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.server_ca))
    context.minimum_version = context.maximum_version = version
    context.load_cert_chain(*client)
    return context


VERSIONS = pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)


@VERSIONS
def test_the_tls_transport_carries_records_both_ways(pki: Pki, version: ssl.TLSVersion) -> None:
    tls = ServerTls(pki.server_cert, pki.server_key, [_pem(pki.ica1)])
    server = _Server(tls, HandshakeWorkers(1))
    cert_path, key_path = pki.client("echo-1", pki.ica1)
    try:
        client = _Client(server.port, _client_context(pki, (cert_path, key_path), version))
        client.handshake()
        client.tls.write(b"hello")
        client.flush()
        assert client.read() == b"HELLO"
        client.tls.write(b"x" * 100_000)  # several records each way
        client.flush()
        received = b""
        while len(received) < 100_000:
            received += client.read()
        assert received == b"X" * 100_000
        session = client.tls.session  # the client offered tickets (default context)
        if version is ssl.TLSVersion.TLSv1_2:
            assert session is None or not session.has_ticket  # OP_NO_TICKET: none sent
        (app,) = server.apps
        expected = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
        assert app.peer_der == expected
        assert app.transport is not None
        assert app.transport.get_extra_info("peername")[0] == "127.0.0.1"
        assert app.transport.get_extra_info("cipher") is not None
        assert (
            app.transport.tls_version()
            == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
        )
        client.tls.write(b"bye")  # the server closes: close_notify, then TCP FIN
        client.flush()
        assert client.read() == b""  # close_notify (a bare FIN would raise SSLEOFError)
        assert not client.receive()  # then the TCP connection ends
        assert _lost(server, app).result(5) is None
        client.close()
        assert server.failures == []
    finally:
        server.close()


def _lost(server: _Server, app: _Echo) -> Any:
    async def wait() -> Any:
        return await app.lost

    return asyncio.run_coroutine_threadsafe(wait(), server.loop)


@pytest.mark.parametrize("arrival", ["with-the-last-flight", "while-the-step-runs"])
def test_bytes_that_arrive_during_a_handshake_step_are_kept(pki: Pki, arrival: str) -> None:
    """TLS 1.3 lets the client write right after its Finished; the server's step that
    verifies that flight runs on a worker, and what arrives meanwhile must not be lost
    (nor written into the memory BIO the worker is reading)."""
    tls = ServerTls(pki.server_cert, pki.server_key, [_pem(pki.ica1)])
    workers = _GatedWorkers(gated=2)  # step 1: ClientHello; step 2: the client's flight
    server = _Server(tls, workers)
    try:
        context = _client_context(pki, pki.client("early", pki.ica1), ssl.TLSVersion.TLSv1_3)
        client = _Client(server.port, context)
        client.handshake()  # the client is done once its Finished is written
        if arrival == "with-the-last-flight":
            client.tls.write(b"early data")
            client.flush()
            assert workers.holding.wait(5)
        else:
            assert workers.holding.wait(5)  # the flight is on a worker (held)
            client.tls.write(b"early data")
            client.flush()
            time.sleep(0.2)  # the event loop has received it
            assert server.apps == []
        workers.gate.set()
        assert client.read() == b"EARLY DATA"
        client.close()
    finally:
        workers.gate.set()
        server.close()


@pytest.mark.parametrize("issuer", ["untrusted-ca", "self-signed", "none"])
def test_any_client_certificate_completes_the_handshake(pki: Pki, issuer: str) -> None:
    """TLS proves possession of the key; who the certificate admits is the frontends'
    call (a CONNACK), so no CA list stands between a ``selfSigned`` device and the hub."""
    tls = ServerTls(pki.server_cert, pki.server_key, [_pem(pki.ica1)])
    server = _Server(tls, HandshakeWorkers(1))
    try:
        context = ssl.create_default_context(cafile=str(pki.server_ca))
        if issuer == "untrusted-ca":
            cert_path, key_path = pki.client("stranger", pki.ica2)  # ica2 is not trusted
        elif issuer == "self-signed":
            cert_path, key_path = write_key_and_cert(pki.dir, "self", *self_signed("self"))
        if issuer != "none":
            context.load_cert_chain(cert_path, key_path)
        client = _Client(server.port, context)
        client.handshake()
        client.tls.write(b"hi")
        client.flush()
        assert client.read() == b"HI"
        (app,) = server.apps
        if issuer == "none":
            assert app.peer_der is None
        else:
            assert app.peer_der == ssl.PEM_cert_to_DER_cert(cert_path.read_text())
        client.close()
        assert server.failures == []
    finally:
        server.close()


def test_a_client_that_does_not_speak_tls_fails_the_handshake(pki: Pki) -> None:
    tls = ServerTls(pki.server_cert, pki.server_key, [_pem(pki.ica1)])
    server = _Server(tls, HandshakeWorkers(1))
    try:
        with socket.create_connection(("127.0.0.1", server.port), 5) as sock:
            sock.settimeout(5)
            sock.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")  # plain MQTT
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(65536):  # an alert, then the connection ends
                    pass
        deadline = time.monotonic() + 5
        while not server.failures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.failures == ["handshake-failed"]
        assert server.apps == []
    finally:
        server.close()


def test_a_client_that_never_finishes_the_handshake_is_dropped(pki: Pki) -> None:
    tls = ServerTls(pki.server_cert, pki.server_key, [_pem(pki.ica1)])
    server = _Server(tls, HandshakeWorkers(1), timeout=0.3)
    try:
        with socket.create_connection(("127.0.0.1", server.port), 5) as sock:
            sock.settimeout(5)
            started = time.monotonic()
            assert sock.recv(1) == b""  # closed by the server, nothing sent
            assert 0.2 < time.monotonic() - started < 3
        assert server.failures == ["handshake-timeout"]
    finally:
        server.close()


def test_a_client_flooding_a_handshake_step_is_dropped(pki: Pki) -> None:
    """What arrives while a step runs is held in memory, up to MAX_HANDSHAKE_BACKLOG."""
    tls = ServerTls(pki.server_cert, pki.server_key, [_pem(pki.ica1)])
    workers = _GatedWorkers(gated=1)  # hold the ClientHello's step
    server = _Server(tls, workers)
    try:
        context = _client_context(pki, pki.client("flood", pki.ica1), ssl.TLSVersion.TLSv1_2)
        client = _Client(server.port, context)
        with pytest.raises(ssl.SSLWantReadError):
            client.tls.do_handshake()
        client.flush()  # the ClientHello
        assert workers.holding.wait(5)
        junk = b"\x17" * 65536
        with contextlib.suppress(OSError):  # the server may reset mid-flood
            for _ in range(MAX_HANDSHAKE_BACKLOG // len(junk) + 2):
                client.sock.sendall(junk)
        client.sock.settimeout(5)
        with contextlib.suppress(OSError):
            while client.sock.recv(65536):
                pass
        assert server.failures == ["handshake-failed"]
        assert server.apps == []
        client.close()
    finally:
        workers.gate.set()
        server.close()


@VERSIONS
def test_no_session_resumes(pki: Pki, version: ssl.TLSVersion) -> None:
    """No session cache and no ticket key: every handshake is a full one. (TLS 1.3 clients
    still receive stateful tickets, an id that names no stored session: pyOpenSSL cannot
    set ``num_tickets``.)"""
    tls = ServerTls(pki.server_cert, pki.server_key, [_pem(pki.ica1)])
    server = _Server(tls, HandshakeWorkers(1))
    try:
        context = _client_context(pki, pki.client("again", pki.ica1), version)
        first = _Client(server.port, context)
        first.handshake()
        first.tls.write(b"a")
        first.flush()
        assert first.read() == b"A"  # a TLS 1.3 ticket, if any, has arrived
        session = first.tls.session
        first.close()
        second = _Client(server.port, context)
        if session is not None:
            second.tls.session = session
        second.handshake()
        assert not second.tls.session_reused
        second.close()
    finally:
        server.close()
