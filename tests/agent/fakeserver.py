"""A tiny scripted DPS + hub peer for the agent's unit tests (not a mock of certhub).

It speaks MQTT 3.1.1 through certhub's sans-I/O :class:`ServerConnection` on one end of
a socketpair; :class:`FakeTransport` hands the agent the other end. Certificates are
really issued (certhub.pki, with the server's own clock), so the agent's files, chains
and TLS identities are real; the "TLS" check is done here by reading the chain file the
agent presents. Behaviour follows the wire reference (§1, §2.2, §3) closely enough for
the agent, and tests can script errors (429, 409005, 403010, …), disable or revoke a
device, push desired properties, skew the server's clock and drop connections.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certhub.agent.errors import TransportError
from certhub.agent.transport import AsyncioStream, ClientCertificate, Endpoint, Stream
from certhub.clock import FixedClock
from certhub.mqtt import (
    ConnAck,
    Connect,
    MqttError,
    Publish,
    ServerConnection,
    SubAck,
    Subscribe,
    split_query,
)
from certhub.pki import (
    Authority,
    CaKeyPair,
    CsrRejected,
    IssuanceRequest,
    LeafPolicy,
    create_issuing_ca,
    create_root_ca,
    public_key_sha256,
    revocation_id_of,
)
from certhub.rand import SeededRandom
from certhub.sas import SasError, derive_device_key, parse_sas_token, verify_sas_token

ID_SCOPE = "0ne00FAKE01"
HUB_HOST = "hub.test"
GROUP_KEY = base64.b64encode(b"k" * 32).decode()
START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class FakeTime(FixedClock):
    """Device clock and sleeper: ``sleep`` moves the clock and yields once."""

    def __init__(self, start: dt.datetime = START) -> None:
        super().__init__(start)
        self.slept: list[float] = []
        self.hold_over: float | None = None
        self._released: asyncio.Event | None = None

    def hold(self, seconds: float = 1800.0) -> None:
        """From now on, a sleep of ``seconds`` or more waits for :meth:`release` (so an
        agent that is connected stays idle instead of racing ahead in virtual time)."""
        self.hold_over = seconds
        self._released = asyncio.Event()

    def release(self) -> None:
        self.hold_over = None
        if self._released is not None:
            self._released.set()

    async def sleep(self, seconds: float) -> None:
        if self.hold_over is not None and seconds >= self.hold_over and self._released:
            await self._released.wait()
        self.slept.append(seconds)
        self.advance(dt.timedelta(seconds=max(seconds, 0.0)))
        await asyncio.sleep(0)


class SkewedClock:
    """The server's clock: the device's plus ``skew``."""

    def __init__(self, base: FakeTime, skew: dt.timedelta = dt.timedelta(0)) -> None:
        self.base = base
        self.skew = skew

    def now(self) -> dt.datetime:
        return self.base.now() + self.skew


@dataclass
class Device:
    status: str = "enabled"
    revocation_id: bytes = field(default_factory=lambda: hashlib.sha256(b"r0").digest())
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    keys_seen: set[str] = field(default_factory=set)


class FakeServer:
    """DPS and hub for one ID scope; see the module docstring."""

    def __init__(self, time: FakeTime, *, validity: str = "30d", backdate: str = "5m") -> None:
        self.time = time
        self.clock = SkewedClock(time)
        self.rng = SeededRandom(7)
        self.root = create_root_ca(common_name="fake-root", clock=self.clock, rng=self.rng)
        self.ica = create_issuing_ca(
            self.root, common_name="fake-ica", clock=self.clock, rng=self.rng
        )
        self.onboarding_ca = create_root_ca(common_name="onboard", clock=self.clock, rng=self.rng)
        self.policy = LeafPolicy.create("fake", validity, backdate=backdate, development=True)
        self.authority = Authority(self.clock, self.rng)
        self.devices: dict[str, Device] = {}
        self.events: list[tuple[str, ...]] = []
        self.dps_script: list[tuple[int, dict[str, Any]]] = []
        self.credentials_script: list[tuple[int, dict[str, Any]]] = []
        self.credentials_refused_subscribe = False
        self.credentials_hook: Callable[[HubSession, str, dict[str, Any]], bool] | None = None
        self.active_request: dict[str, str] = {}
        self.enrollment_disabled = False
        self.unreachable = False
        self.sessions: dict[str, HubSession] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.served_rids: dict[str, list[str]] = {}
        self.dps_by_csr: dict[str, dict[str, Any]] = {}

    # -- test controls ----------------------------------------------------------------

    def count(self, kind: str) -> int:
        return sum(1 for event in self.events if event[0] == kind)

    def revoke(self, device_id: str) -> None:
        """Rotate the device's revocation id and drop its session."""
        device = self.devices[device_id]
        device.revocation_id = hashlib.sha256(device.revocation_id).digest()
        self.kick(device_id)

    def disable(self, device_id: str, disabled: bool = True) -> None:
        self.devices[device_id].status = "disabled" if disabled else "enabled"
        if disabled:
            self.kick(device_id)

    def kick(self, device_id: str) -> None:
        session = self.sessions.get(device_id)
        if session is not None:
            session.close()

    def push_desired(self, device_id: str, patch: dict[str, Any]) -> None:
        device = self.devices[device_id]
        device.desired.update(patch)
        device.desired["$version"] = device.desired.get("$version", 1) + 1
        session = self.sessions.get(device_id)
        if session is not None:
            body = {**patch, "$version": device.desired["$version"]}
            topic = f"$iothub/twin/PATCH/properties/desired/?$version={device.desired['$version']}"
            session.publish(topic, json.dumps(body).encode())

    def onboarding_certificate(
        self, registration_id: str, *, days: float = 365
    ) -> tuple[bytes, bytes]:
        """A PEM (certificate, key) pair signed by the onboarding CA for ``registration_id``."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        from certhub.pki import KeyType, generate_private_key

        key = generate_private_key(KeyType.P256)
        now = self.clock.now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, registration_id)]))
            .issuer_name(self.onboarding_ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .sign(self.onboarding_ca.private_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- issuing ----------------------------------------------------------------------

    def issue(self, device_id: str, csr_der: bytes) -> list[str]:
        device = self.devices[device_id]
        request = IssuanceRequest(
            csr_der=csr_der,
            device_id=device_id,
            revocation_id=device.revocation_id,
            policy=self.policy,
            issuer=self.ica,
            root=self.root.certificate,
            crl_url=None,
            key_seen=lambda h: h in device.keys_seen,
        )
        leaf = self.authority.sign(request)
        device.keys_seen.add(leaf.public_key_sha256)
        return [base64.b64encode(der).decode() for der in leaf.chain_der]

    # -- connections ------------------------------------------------------------------

    async def serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        cert: ClientCertificate | None,
    ) -> None:
        conn = ServerConnection()
        session: Session | None = None
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for packet in conn.receive_data(data):
                    if isinstance(packet, Connect):
                        session = self._open(packet, cert, conn, writer)
                        if session is None:
                            writer.close()
                            return
                    elif session is not None:
                        session.handle(packet)
                writer.write(conn.data_to_send())
        except (MqttError, ConnectionError):
            pass
        finally:
            if session is not None:
                session.closed()
            writer.close()

    def _open(
        self,
        connect: Connect,
        cert: ClientCertificate | None,
        conn: ServerConnection,
        writer: asyncio.StreamWriter,
    ) -> Session | None:
        username = connect.username or ""
        if "/registrations/" in username and "/?" not in username:
            session: Session | None = DpsSession.attest(self, connect, cert, conn, writer)
        else:
            session = HubSession.authenticate(self, connect, cert, conn, writer)
        if session is None:
            writer.write(conn.data_to_send())
        return session


class Session:
    def __init__(
        self, server: FakeServer, conn: ServerConnection, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.conn = conn
        self.writer = writer

    def publish(self, topic: str, payload: bytes) -> None:
        if self.writer.is_closing():
            return
        self.conn.send(Publish(topic=topic, payload=payload))
        self.writer.write(self.conn.data_to_send())

    def close(self) -> None:
        self.writer.close()

    def closed(self) -> None:
        pass

    def handle(self, packet: Any) -> None:
        if isinstance(packet, Subscribe):
            self.conn.send(SubAck(packet_id=packet.packet_id, return_codes=self.grant(packet)))
        elif isinstance(packet, Publish):
            if packet.qos == 1 and packet.packet_id is not None:
                from certhub.mqtt import PubAck

                self.conn.send(PubAck(packet_id=packet.packet_id))
            self.on_publish(packet)

    def grant(self, packet: Subscribe) -> tuple[int, ...]:
        return tuple(min(q, 1) for _, q in packet.topics)

    def on_publish(self, packet: Publish) -> None:
        raise NotImplementedError


def _refuse(conn: ServerConnection, code: int) -> None:
    conn.send(ConnAck(return_code=code))


class DpsSession(Session):
    def __init__(
        self,
        server: FakeServer,
        conn: ServerConnection,
        writer: asyncio.StreamWriter,
        registration_id: str,
    ) -> None:
        super().__init__(server, conn, writer)
        self.registration_id = registration_id
        self.operations: dict[str, tuple[int, dict[str, Any]]] = {}

    @classmethod
    def attest(
        cls,
        server: FakeServer,
        connect: Connect,
        cert: ClientCertificate | None,
        conn: ServerConnection,
        writer: asyncio.StreamWriter,
    ) -> DpsSession | None:
        parts = (connect.username or "").split("/")
        regid = parts[2] if len(parts) == 4 else ""
        ok = (
            parts[0] == ID_SCOPE
            and connect.client_id == regid
            and "api-version=2025-07-01-preview" in parts[3]
        )
        if ok and connect.password:
            try:
                token = parse_sas_token(connect.password.decode())
                verify_sas_token(
                    token,
                    derive_device_key(GROUP_KEY, regid),
                    now=server.clock.now(),
                    expected_resource=f"{ID_SCOPE}/registrations/{regid}",
                    key_name="registration",
                    require_key_name=True,
                )
            except SasError:
                ok = False
        elif ok:
            ok = cert is not None and _onboarding_ok(server, cert, regid)
        server.events.append(("dps-connect", regid, "ok" if ok else "refused"))
        if not ok:
            _refuse(conn, 5)
            return None
        conn.send(ConnAck())
        return cls(server, conn, writer, regid)

    def on_publish(self, packet: Publish) -> None:
        path, params = split_query(packet.topic)
        rid = params.get("$rid") or ""
        if path == "$dps/registrations/PUT/iotdps-register/":
            self.register(rid, json.loads(packet.payload))
        elif path == "$dps/registrations/GET/iotdps-get-operationstatus/":
            status, body = self.operations[params.get("operationId") or ""]
            self.answer(status, rid, body)

    def answer(
        self, status: int, rid: str, body: dict[str, Any], retry_after: int | None = None
    ) -> None:
        topic = f"$dps/registrations/res/{status}/?$rid={rid}"
        if retry_after is not None:
            topic += f"&retry-after={retry_after}"
        self.publish(topic, json.dumps(body).encode())

    def register(self, rid: str, body: dict[str, Any]) -> None:
        server = self.server
        server.events.append(("dps-register", self.registration_id))
        if server.dps_script:
            status, error = server.dps_script.pop(0)
            self.answer(status, rid, error, retry_after=error.get("retryAfter"))
            return
        device = server.devices.setdefault(self.registration_id, Device())
        csr_hash = hashlib.sha256(str(body.get("csr")).encode()).hexdigest()
        repeated = server.dps_by_csr.get(csr_hash)
        if repeated is not None:  # as certhub does: the same CSR gets its operation back
            self.operations[repeated["operationId"]] = (200, repeated)
            self.answer(202, rid, {"operationId": repeated["operationId"], "status": "assigning"})
            return
        now = server.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        state: dict[str, Any] = {
            "registrationId": self.registration_id,
            "createdDateTimeUtc": now,
            "lastUpdatedDateTimeUtc": now,
        }
        if device.status == "disabled" or server.enrollment_disabled:
            state.update(status="disabled", errorCode=401004, errorMessage="the device is disabled")
            result = {"operationId": "op-d", "status": "disabled", "registrationState": state}
        else:
            try:
                chain = server.issue(self.registration_id, base64.b64decode(body["csr"]))
            except CsrRejected as exc:
                self.answer(400, rid, {"errorCode": 400004, "message": str(exc)})
                return
            state.update(
                status="assigned",
                assignedHub=HUB_HOST,
                deviceId=self.registration_id,
                substatus="initialAssignment",
                issuedCertificateChain=chain,
            )
            result = {
                "operationId": f"op-{len(server.events)}",
                "status": "assigned",
                "registrationState": state,
            }
            server.events.append(("dps-issued", self.registration_id))
            server.dps_by_csr[csr_hash] = result
        self.operations[result["operationId"]] = (200, result)
        self.answer(
            202, rid, {"operationId": result["operationId"], "status": "assigning"}, retry_after=1
        )


def _onboarding_ok(server: FakeServer, cert: ClientCertificate, regid: str) -> bool:
    leaf = x509.load_pem_x509_certificates(cert.chain_file.read_bytes())[0]
    try:
        leaf.verify_directly_issued_by(server.onboarding_ca.certificate)
    except Exception:
        return False
    cn = leaf.subject.rfc4514_string()
    now = server.clock.now()
    return cn == f"CN={regid}" and leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc


class HubSession(Session):
    def __init__(
        self,
        server: FakeServer,
        conn: ServerConnection,
        writer: asyncio.StreamWriter,
        device_id: str,
    ) -> None:
        super().__init__(server, conn, writer)
        self.device_id = device_id
        self.twin_version = 1

    @classmethod
    def authenticate(
        cls,
        server: FakeServer,
        connect: Connect,
        cert: ClientCertificate | None,
        conn: ServerConnection,
        writer: asyncio.StreamWriter,
    ) -> HubSession | None:
        host, _, rest = (connect.username or "").partition("/")
        device_id = rest.partition("/?")[0]
        reason = cls._check(server, host, device_id, connect, cert)
        serial = ""
        if cert is not None and cert.chain_file.exists():
            leaf = x509.load_pem_x509_certificates(cert.chain_file.read_bytes())[0]
            serial = format(leaf.serial_number, "032x")
        server.events.append(("hub-connect", device_id, serial, reason))
        if reason != "ok":
            _refuse(conn, 5)
            return None
        conn.send(ConnAck())
        session = cls(server, conn, writer, device_id)
        old = server.sessions.get(device_id)
        if old is not None:
            old.close()
        server.sessions[device_id] = session
        return session

    @staticmethod
    def _check(
        server: FakeServer,
        host: str,
        device_id: str,
        connect: Connect,
        cert: ClientCertificate | None,
    ) -> str:
        device = server.devices.get(device_id)
        if host != HUB_HOST or connect.client_id != device_id or device is None:
            return "unknown-device"
        if cert is None:
            return "no-certificate"
        chain = x509.load_pem_x509_certificates(cert.chain_file.read_bytes())
        leaf = chain[0]
        try:
            leaf.verify_directly_issued_by(server.ica.certificate)
        except Exception:
            return "wrong-issuer"
        now = server.clock.now()
        if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
            return "expired"
        if revocation_id_of(leaf) != device.revocation_id:
            return "revoked"
        if device.status != "enabled":
            return "disabled"
        return "ok"

    def closed(self) -> None:
        if self.server.sessions.get(self.device_id) is self:
            del self.server.sessions[self.device_id]

    def grant(self, packet: Subscribe) -> tuple[int, ...]:
        codes = []
        for topic, qos in packet.topics:
            refused = (
                topic.startswith("$iothub/credentials")
                and self.server.credentials_refused_subscribe
            )
            codes.append(0x80 if refused else min(qos, 1))
        return tuple(codes)

    def on_publish(self, packet: Publish) -> None:
        path, params = split_query(packet.topic)
        rid = params.get("$rid") or ""
        device = self.server.devices[self.device_id]
        if path == "$iothub/twin/GET/":
            twin = {
                "desired": {"$version": 1, **device.desired},
                "reported": {**device.reported, "$version": self.twin_version},
            }
            self.publish(f"$iothub/twin/res/200/?$rid={rid}", json.dumps(twin).encode())
        elif path == "$iothub/twin/PATCH/properties/reported/":
            device.reported.update(json.loads(packet.payload))
            self.twin_version += 1
            self.server.events.append(
                ("reported", self.device_id, json.dumps(device.reported.get("certificate")))
            )
            self.publish(f"$iothub/twin/res/204/?$rid={rid}&$version={self.twin_version}", b"")
        elif path == "$iothub/credentials/POST/issueCertificate/":
            self.credentials(rid, json.loads(packet.payload))
        elif path.startswith("$iothub/methods/res/"):
            self.server.events.append(
                ("method-response", path.split("/")[3], packet.payload.decode())
            )
        elif path.startswith(f"devices/{self.device_id}/messages/events/"):
            self.server.events.append(("telemetry", self.device_id, packet.payload.decode()))

    def answer(self, status: int, rid: str, body: dict[str, Any]) -> None:
        self.publish(f"$iothub/credentials/res/{status}/?$rid={rid}", json.dumps(body).encode())

    def credentials(self, rid: str, body: dict[str, Any]) -> None:
        server = self.server
        server.events.append(("credentials", self.device_id, rid, str(body.get("replace"))))
        server.served_rids.setdefault(self.device_id, []).append(rid)
        if server.credentials_hook is not None and not server.credentials_hook(self, rid, body):
            return
        if server.credentials_script:
            status, error = server.credentials_script.pop(0)
            self.answer(status, rid, error)
            return
        active = server.active_request.get(self.device_id)
        replace = body.get("replace")
        if active is not None and active != rid and replace not in ("*", active):
            info = {"requestId": active, "operationExpires": "2026-01-01T00:00:00Z"}
            self.answer(
                409, rid, {"errorCode": 409005, "message": "operation active", "info": info}
            )
            return
        server.active_request.pop(self.device_id, None)
        self.answer(
            202, rid, {"correlationId": f"c-{rid}", "operationExpires": "2099-01-01T00:00:00Z"}
        )
        try:
            chain = server.issue(self.device_id, base64.b64decode(body["csr"]))
        except CsrRejected as exc:
            error = {
                "errorCode": 400040,
                "message": str(exc),
                "info": {"credentialError": exc.reason},
            }
            self.answer(400, rid, error)
            return
        server.events.append(("hub-issued", self.device_id))
        self.answer(200, rid, {"correlationId": f"c-{rid}", "certificates": chain})


class FakeTransport:
    """Hands the agent one end of a socketpair; the fake server serves the other."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.opened: list[tuple[Endpoint, ClientCertificate | None]] = []

    async def open(self, endpoint: Endpoint, client_cert: ClientCertificate | None) -> Stream:
        if self.server.unreachable:
            raise TransportError("unreachable", f"cannot connect to {endpoint}")
        self.opened.append((endpoint, client_cert))
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        s_reader, s_writer = await asyncio.open_connection(sock=theirs)
        task = asyncio.create_task(self.server.serve(s_reader, s_writer, client_cert))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)
        return AsyncioStream(reader, writer)


def leaf_of(path: Any) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def key_hash(cert: x509.Certificate) -> str:
    return public_key_sha256(cert.public_key())


__all__ = [
    "GROUP_KEY",
    "HUB_HOST",
    "ID_SCOPE",
    "CaKeyPair",
    "Device",
    "FakeServer",
    "FakeTime",
    "FakeTransport",
    "HubSession",
    "key_hash",
    "leaf_of",
]
