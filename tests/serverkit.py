"""Test support shared by the suites that need a real certhub on loopback.

* :func:`running_server` — initialise a data directory and run :class:`certhub.app.Server`
  on ``127.0.0.1`` (ephemeral port unless told) in a background thread with its own
  uvloop loop; yields a :class:`RunningServer` (``call(coro)`` runs on the server's loop).
* :func:`create_device`, :func:`make_key_and_csr`, :func:`open_authority`,
  :func:`issue_certificate`, :func:`write_pems`, :func:`device_with_certificate` — a device
  and an operational certificate issued through ``CertificateAuthorityService``.
* :func:`create_policy` — a (development) policy with its issuing CA, trusted at once.
* :class:`DeviceClient` — paho-mqtt 2 (``CallbackAPIVersion.VERSION2``) over TLS with the
  hub's username, recording the CONNACK code, SUBACKs, messages and the disconnect.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import queue
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certhub.app import Server, ServerConfig, new_event_loop
from certhub.authority import CertificateAuthorityService
from certhub.bootstrap import InitResult, initialize
from certhub.clock import Clock, FixedClock, SystemClock
from certhub.datadir import DataDir
from certhub.pki import IssuedLeaf, LeafPolicy, chain_pem
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import AuthType, DeviceRecord, NewDevice, PolicyRecord
from certhub.sas import generate_sas_token

__all__ = [
    "API_VERSION",
    "DeviceClient",
    "DevicePems",
    "RunningServer",
    "create_device",
    "create_policy",
    "device_with_certificate",
    "issue_certificate",
    "make_key_and_csr",
    "open_authority",
    "running_server",
    "sas_password",
    "write_pems",
]

T = TypeVar("T")
API_VERSION = "2021-04-12"
#: paho 2 reports MQTT 3.1.1 CONNACK codes as MQTT 5 reason codes; map them back.
_V5_TO_V3 = {0: 0, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


# -- the server ----------------------------------------------------------------------------


@dataclass
class RunningServer:
    """A :class:`Server` running on its own loop in a background thread."""

    server: Server
    init: InitResult
    data_dir: Path
    database_url: str
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def host(self) -> str:
        return self.server.mqtt_address[0]

    @property
    def port(self) -> int:
        return self.server.mqtt_address[1]

    @property
    def hub_host(self) -> str:
        """The host name devices put in their username and SAS tokens."""
        return self.init.hub_host

    @property
    def trust_anchor(self) -> Path:
        """The PEM that verifies the server's TLS certificate."""
        return Path(self.init.trust_anchor)

    @property
    def store(self) -> Store:
        """The server's store (thread-safe; fine to call from the test thread)."""
        return self.server.store

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def refresh_trust(self) -> None:
        """Make the server re-read its trusted and issuing CAs now (not at the next poll)."""
        self.call(self.server.reload_trust())
        self.call(self.server.hub_frontend.reload_issuers())


@contextmanager
def running_server(
    data_dir: Path,
    *,
    database_url: str | None = None,
    port: int = 0,
    development: bool = True,
    clock: Clock | None = None,
    **config: Any,
) -> Iterator[RunningServer]:
    """Initialise ``data_dir`` and run a server on 127.0.0.1 until the block ends."""
    init = initialize(data_dir, database_url=database_url, development=development)
    url = database_url or DataDir(data_dir).database_url
    server_config = ServerConfig(
        data_dir=data_dir, database_url=database_url, mqtt_port=port, **config
    )
    server = Server(server_config, clock=clock)
    loop = new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="certhub-server", daemon=True)
    thread.start()
    running = RunningServer(server, init, data_dir, url, loop, thread)
    try:
        running.call(server.start())
        yield running
    finally:
        try:
            running.call(server.stop())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


# -- devices and certificates ----------------------------------------------------------------


def create_device(
    store: Store,
    device_id: str,
    *,
    auth_type: AuthType = "certificateAuthority",
    status: str = "enabled",
    primary_key: str | None = None,
    secondary_key: str | None = None,
    primary_thumbprint: str | None = None,
    secondary_thumbprint: str | None = None,
    policy_name: str | None = "default",
    namespace: str = "default",
) -> DeviceRecord:
    """Create a device (random revocation id) in the namespace."""
    ns = store.get_namespace(namespace)
    assert ns is not None
    device = NewDevice(
        device_id=device_id,
        namespace_id=ns.id,
        revocation_id=SystemRandom().token_bytes(32),
        auth_type=auth_type,
        status=status,  # type: ignore[arg-type]
        primary_key=primary_key,
        secondary_key=secondary_key,
        primary_thumbprint=primary_thumbprint,
        secondary_thumbprint=secondary_thumbprint,
        policy_name=policy_name,
    )
    return store.create_device(device, dt.datetime.now(dt.UTC))


def make_key_and_csr(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A P-256 key and a DER CSR for ``CN=common_name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.DER)


def open_authority(
    data_dir: Path, store: Store, clock: Clock | None = None
) -> CertificateAuthorityService:
    """The authority of an initialised data directory, over ``store``."""
    passphrase = DataDir(data_dir).passphrase(SystemRandom())
    return CertificateAuthorityService(
        store, clock=clock or SystemClock(), rng=SystemRandom(), passphrase=passphrase
    )


def issue_certificate(
    authority: CertificateAuthorityService,
    device_id: str,
    csr_der: bytes,
    *,
    policy: str = "default",
) -> IssuedLeaf:
    """Issue (and record) a leaf for ``device_id`` under ``policy``."""
    return authority.issue(
        device_id=device_id,
        csr_der=csr_der,
        policy_name=policy,
        requested_via="cli",
        actor="tests",
    )


@dataclass(frozen=True)
class DevicePems:
    """Files a device client needs: its key, its leaf, and leaf + CA chain."""

    key: Path
    cert: Path
    chain: Path
    leaf: IssuedLeaf | None = None


def self_signed(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A P-256 key and a certificate for ``CN=cn`` signed by itself (valid for 30 days)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def write_key_and_cert(
    directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> tuple[Path, Path]:
    """Write ``name.pem`` and ``name.key`` (PKCS#8, unencrypted); their paths, cert first."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def write_pems(
    directory: Path, name: str, key: ec.EllipticCurvePrivateKey, leaf: IssuedLeaf
) -> DevicePems:
    """Write ``name.key``, ``name.pem`` (leaf) and ``name-chain.pem`` (leaf, ICA, root)."""
    cert_path, key_path = write_key_and_cert(directory, name, key, leaf.certificate)
    chain_path = directory / f"{name}-chain.pem"
    chain_path.write_bytes(chain_pem(leaf))
    return DevicePems(key_path, cert_path, chain_path, leaf)


def device_with_certificate(
    running: RunningServer,
    device_id: str,
    directory: Path,
    *,
    policy: str = "default",
    clock: Clock | None = None,
    create: bool = True,
) -> DevicePems:
    """Create the device (unless ``create`` is False) and issue it a certificate."""
    if create:
        create_device(running.store, device_id, policy_name=policy)
    key, csr = make_key_and_csr(device_id)
    leaf = issue_certificate(
        open_authority(running.data_dir, running.store, clock), device_id, csr, policy=policy
    )
    return write_pems(directory, device_id, key, leaf)


def create_policy(
    running: RunningServer,
    name: str,
    validity: str = "60s",
    *,
    development: bool = True,
    clock: Clock | None = None,
) -> PolicyRecord:
    """Create a policy and its issuing CA, and make the running server trust it now."""
    authority = open_authority(running.data_dir, running.store, clock)
    policy = authority.create_policy(
        LeafPolicy.create(name, validity, development=development), actor="tests"
    )
    running.refresh_trust()
    return policy


def sas_password(host: str, device_id: str, key_b64: str, ttl: float = 3600.0) -> str:
    """A device SAS token for ``{host}/devices/{deviceId}``."""
    return generate_sas_token(f"{host}/devices/{device_id}", key_b64, int(time.time() + ttl))


def random_key() -> str:
    """A random base64 32-byte key."""
    return base64.b64encode(SystemRandom().token_bytes(32)).decode()


def past_clock(seconds: float) -> FixedClock:
    """A clock ``seconds`` in the past (negative: in the future)."""
    return FixedClock(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds))


# -- a device client ---------------------------------------------------------------------------


@dataclass
class _Record:
    connack: int | None = None
    connected: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    subacks: dict[int, list[int]] = field(default_factory=dict)
    suback_event: threading.Condition = field(default_factory=threading.Condition)
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)


class DeviceClient:
    """paho-mqtt 2 over TLS to the hub, as a device ``device_id``."""

    def __init__(
        self,
        running: RunningServer,
        device_id: str,
        pems: DevicePems | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        keepalive: int = 60,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> None:
        self.running = running
        self.device_id = device_id
        self.keepalive = keepalive
        self.record = _Record()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=device_id if client_id is None else client_id,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        context = ssl.create_default_context(cafile=str(running.trust_anchor))
        cert_file = cert_file or (pems.chain if pems else None)
        key_file = key_file or (pems.key if pems else None)
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
        client.tls_set_context(context)
        client.username_pw_set(
            username or f"{running.hub_host}/{device_id}/?api-version={API_VERSION}", password
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client

    # paho callbacks (paho's network thread)
    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self.record.connack = _V5_TO_V3.get(int(reason.value), int(reason.value))
        self.record.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, _reason: Any, _p: Any) -> None:
        self.record.disconnected.set()
        self.record.connected.set()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: Any, _p: Any) -> None:
        with self.record.suback_event:
            self.record.subacks[mid] = [int(code.value) for code in codes]
            self.record.suback_event.notify_all()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.record.messages.put(message)

    # actions (test thread)
    def connect(self, timeout: float = 10.0) -> int | None:
        """Connect and return the CONNACK code (None if the connection dropped before one)."""
        try:
            self.client.connect(self.running.host, self.running.port, keepalive=self.keepalive)
        except (OSError, ssl.SSLError):
            return None
        self.client.loop_start()
        self.record.connected.wait(timeout)
        return self.record.connack

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5.0) -> list[int]:
        """Subscribe and return the granted codes from the SUBACK."""
        _, mid = self.client.subscribe(topic, qos)
        with self.record.suback_event:
            self.record.suback_event.wait_for(lambda: mid in self.record.subacks, timeout)
        return self.record.subacks.get(mid, [])

    def publish(
        self, topic: str, payload: bytes | str = b"", qos: int = 1, timeout: float = 5.0
    ) -> bool:
        """Publish; for QoS 1 wait for the PUBACK. True when it was acknowledged/sent."""
        info = self.client.publish(topic, payload, qos)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def expect(self, prefix: str, timeout: float = 5.0) -> mqtt.MQTTMessage:
        """The next message whose topic starts with ``prefix`` (AssertionError if none)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no message on {prefix!r} within {timeout} s")
            try:
                message = self.record.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if message.topic.startswith(prefix):
                return message

    def wait_disconnected(self, timeout: float = 5.0) -> bool:
        """True once the server closed the connection."""
        return self.record.disconnected.wait(timeout)

    def close(self) -> None:
        """Disconnect (if connected) and stop paho's thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
