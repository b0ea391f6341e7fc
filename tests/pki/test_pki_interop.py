"""Interoperability with real verifiers: the openssl command line and Python's ssl.

Certificates here are made on the real clock, since neither verifier takes ours.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pki_support import DEVICE_ID, make_csr, make_request

from certhub.clock import FixedClock
from certhub.pki import (
    Authority,
    CaKeyPair,
    KeyType,
    LeafPolicy,
    PrivateKey,
    chain_pem,
    create_issuing_ca,
    create_root_ca,
    create_server_certificate,
)
from certhub.rand import SystemRandom

OPENSSL = shutil.which("openssl")
PEM = serialization.Encoding.PEM
_Subject = tuple[tuple[tuple[str, str], ...], ...]  # ssl.getpeercert()["subject"]


@pytest.fixture
def real_clock() -> FixedClock:
    return FixedClock(dt.datetime.now(dt.UTC))


def _hierarchy(clock: FixedClock, ca_key: KeyType) -> tuple[CaKeyPair, CaKeyPair]:
    rng = SystemRandom()
    root = create_root_ca(common_name="interop-root", key_type=ca_key, clock=clock, rng=rng)
    ica = create_issuing_ca(
        root,
        common_name="interop-ica",
        key_type=ca_key,
        clock=clock,
        rng=rng,
        crl_url="http://127.0.0.1:9/root.crl",
    )
    return root, ica


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _openssl_verify(
    tmp_path: Path, root: CaKeyPair, ica: CaKeyPair, leaf_pem: bytes, *extra: str
) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    (tmp_path / "root.pem").write_bytes(root.certificate.public_bytes(PEM))
    (tmp_path / "ica.pem").write_bytes(ica.certificate.public_bytes(PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf_pem)
    return subprocess.run(
        [OPENSSL, "verify", *extra, "-CAfile", "root.pem", "-untrusted", "ica.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")
@pytest.mark.parametrize(
    ("ca_key", "device_key"),
    [
        pytest.param(KeyType.P256, lambda k: ec.generate_private_key(ec.SECP256R1()), id="p256"),
        pytest.param(KeyType.P384, lambda k: ec.generate_private_key(ec.SECP384R1()), id="p384"),
        pytest.param(KeyType.P256, lambda k: k[2048], id="rsa2048-leaf"),
    ],
)
@pytest.mark.parametrize("purpose", [(), ("-purpose", "sslclient")], ids=["any", "sslclient"])
def test_openssl_verifies_leaf(
    tmp_path: Path,
    real_clock: FixedClock,
    rsa_keys: dict[int, rsa.RSAPrivateKey],
    ca_key: KeyType,
    device_key: object,
    purpose: tuple[str, ...],
) -> None:
    root, ica = _hierarchy(real_clock, ca_key)
    policy = LeafPolicy.create("interop", "30d", key_types=set(KeyType))
    key = device_key(rsa_keys)  # type: ignore[operator]
    req = make_request(make_csr(key), issuer=ica, root=root, policy=policy)
    leaf = Authority(real_clock, SystemRandom()).sign(req)
    result = _openssl_verify(
        tmp_path,
        root,
        ica,
        leaf.certificate.public_bytes(PEM),
        *purpose,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "leaf.pem: OK"


@pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")
def test_openssl_refuses_server_purpose_for_leaf(tmp_path: Path, real_clock: FixedClock) -> None:
    root, ica = _hierarchy(real_clock, KeyType.P256)
    policy = LeafPolicy.create("interop", "30d")
    req = make_request(
        make_csr(ec.generate_private_key(ec.SECP256R1())), issuer=ica, root=root, policy=policy
    )
    leaf = Authority(real_clock, SystemRandom()).sign(req)
    result = _openssl_verify(
        tmp_path, root, ica, leaf.certificate.public_bytes(PEM), "-purpose", "sslserver"
    )
    assert result.returncode != 0


# --- TLS over loopback --------------------------------------------------------------


@pytest.fixture
def tls_pki(real_clock: FixedClock, tmp_path: Path) -> dict[str, Path]:
    """Root + issuing CA, a server certificate from the root, a device leaf from the ICA."""
    root, ica = _hierarchy(real_clock, KeyType.P256)
    server_cert, server_key = create_server_certificate(
        root, hosts=["localhost", "127.0.0.1"], clock=real_clock, rng=SystemRandom()
    )
    device_key = ec.generate_private_key(ec.SECP256R1())
    policy = LeafPolicy.create("interop", "30d")
    req = make_request(make_csr(device_key), issuer=ica, root=root, policy=policy)
    leaf = Authority(real_clock, SystemRandom()).sign(req)
    files = {
        "root": root.certificate.public_bytes(PEM),
        "server": server_cert.public_bytes(PEM),
        "server_key": _key_pem(server_key),
        "device_chain": chain_pem(leaf),
        "device_key": _key_pem(device_key),
    }
    paths = {name: tmp_path / f"{name}.pem" for name in files}
    for name, data in files.items():
        paths[name].write_bytes(data)
    return paths


class _TlsServer:
    """A one-connection-at-a-time TLS server on 127.0.0.1 that reports the peer CN."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)  # poll so close() stops the thread promptly
        self._stop = threading.Event()
        self.port: int = self._sock.getsockname()[1]
        self.peer_cns: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        try:
            with self._context.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert()
                subject = cast("_Subject", peer.get("subject", ()) if peer else ())
                self.peer_cns += [v for rdn in subject for k, v in rdn if k == "commonName"]
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError):
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sock.close()


@pytest.fixture
def tls_server(tls_pki: dict[str, Path]) -> Iterator[_TlsServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_pki["server"], tls_pki["server_key"])
    context.load_verify_locations(tls_pki["root"])
    context.verify_mode = ssl.CERT_OPTIONAL  # as the hub: ask for a certificate, not require
    server = _TlsServer(context)
    yield server
    server.close()


def _client_context(tls_pki: dict[str, Path], *, with_device: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls_pki["root"]))
    assert context.check_hostname
    if with_device:
        context.load_cert_chain(tls_pki["device_chain"], tls_pki["device_key"])
    return context


def _talk(server: _TlsServer, context: ssl.SSLContext, hostname: str) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        return tls.recv(2)


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_server_certificate_passes_hostname_check(
    tls_server: _TlsServer, tls_pki: dict[str, Path], hostname: str
) -> None:
    assert _talk(tls_server, _client_context(tls_pki, with_device=False), hostname) == b"ok"


@pytest.mark.parametrize(
    "hostname",
    [
        pytest.param("example.com", id="reject/other-name"),
        pytest.param("127.0.0.2", id="reject/other-ip"),
    ],
)
def test_server_certificate_fails_for_other_hosts(
    tls_server: _TlsServer, tls_pki: dict[str, Path], hostname: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch"):
        _talk(tls_server, _client_context(tls_pki, with_device=False), hostname)


def test_device_leaf_authenticates_mutual_tls(
    tls_server: _TlsServer, tls_pki: dict[str, Path]
) -> None:
    assert _talk(tls_server, _client_context(tls_pki, with_device=True), "localhost") == b"ok"
    assert tls_server.peer_cns == [DEVICE_ID]
