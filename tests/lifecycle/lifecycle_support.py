"""Helpers for the lifecycle tests: DPS registration over MQTT, refusal counters, the
admin API over HTTPS, policies with their own enrollment group."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import REGISTRY

from certhub.bootstrap import service_keys
from certhub.issuer_lifecycle import IssuerLifecycle
from certhub.pki import revocation_id_of
from certhub.registry.records import NewEnrollment
from certhub.sas import derive_device_key, generate_sas_token
from serverkit import DeviceClient, DevicePems, RunningServer, make_key_and_csr, open_authority

DPS_API = "2025-07-01-preview"
RES = "$dps/registrations/res/"


def refusals(reason: str) -> float:
    """How many CONNECTs the hub refused with ``reason`` so far (this process)."""
    value = REGISTRY.get_sample_value("certhub_hub_refusals_total", {"reason": reason})
    return value or 0.0


def lifecycle(running: RunningServer) -> IssuerLifecycle:
    """An :class:`IssuerLifecycle` over the server's store, as the CLI would build one."""
    return IssuerLifecycle(open_authority(running.data_dir, running.store))


def closes_within(client: DeviceClient, seconds: float = 1.0) -> float:
    """Wait for the server to close ``client``; the time it took (asserts < ``seconds``)."""
    started = time.monotonic()
    assert client.wait_disconnected(3.0), "the session was not closed"
    took = time.monotonic() - started
    assert took < seconds, f"closed after {took:.2f} s"
    return took


@dataclass
class Registration:
    """The outcome of one DPS registration over MQTT."""

    status: int
    body: dict[str, Any]
    pems: DevicePems | None = None

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.body.get("registrationState", {})
        return state


def add_group(running: RunningServer, name: str, policy: str) -> str:
    """A symmetric-key enrollment group issuing under ``policy``; its primary key."""
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    ns = running.store.get_namespace("default")
    assert ns is not None
    running.store.create_enrollment(
        NewEnrollment(
            namespace_id=ns.id,
            kind="group",
            name=name,
            attestation_type="symmetricKey",
            primary_key=key,
            secondary_key=key,
            credential_policy_name=policy,
        ),
        dt.datetime.now(dt.UTC),
    )
    return key


def dps_register(
    running: RunningServer, device_id: str, directory: Path, group_key: str | None = None
) -> Registration:
    """Register ``device_id`` through DPS over MQTT/TLS with a CSR (group SAS attestation)."""
    scope = running.init.id_scope
    device_key = derive_device_key(group_key or running.init.group_primary_key, device_id)
    resource = f"{scope}/registrations/{device_id}"
    token = generate_sas_token(resource, device_key, int(time.time()) + 3600, "registration")
    username = f"{resource}/api-version={DPS_API}&ClientVersion=tests"
    key, csr = make_key_and_csr(device_id)
    payload = json.dumps({"registrationId": device_id, "csr": base64.b64encode(csr).decode()})
    client = DeviceClient(running, device_id, username=username, password=token)
    try:
        assert client.connect() == 0
        assert client.subscribe(f"{RES}#") == [1]
        client.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", payload)
        status, answer = _answer(client)
        rid = 2
        while status == 202:
            topic = f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}"
            client.publish(f"{topic}&operationId={answer['operationId']}", b" ")
            status, answer = _answer(client)
            rid += 1
    finally:
        client.close()
    registration = Registration(status, answer)
    chain = registration.state.get("issuedCertificateChain")
    if status == 200 and registration.body.get("status") == "assigned" and chain:
        registration.pems = _write_chain(directory, device_id, key, chain)
    return registration


def _answer(client: DeviceClient) -> tuple[int, dict[str, Any]]:
    message = client.expect(RES, timeout=10)
    return int(message.topic.split("/")[3]), json.loads(message.payload)


def _write_chain(directory: Path, device_id: str, key: Any, chain: list[str]) -> DevicePems:
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / f"{device_id}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certs = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in chain]
    cert_path = directory / f"{device_id}.pem"
    cert_path.write_bytes(certs[0].public_bytes(serialization.Encoding.PEM))
    chain_path = directory / f"{device_id}-chain.pem"
    chain_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return DevicePems(key_path, cert_path, chain_path)


def leaf_of(pems: DevicePems) -> x509.Certificate:
    """The leaf certificate in ``pems``."""
    return x509.load_pem_x509_certificate(pems.cert.read_bytes())


def serial_of(pems: DevicePems) -> str:
    return format(leaf_of(pems).serial_number, "032x")


def revocation_id_in(pems: DevicePems) -> bytes | None:
    return revocation_id_of(leaf_of(pems))


def admin_client(running: RunningServer) -> httpx.Client:
    """An ``iothubowner`` client of the server's HTTPS API (start it with https_port=0)."""
    port = running.server.https_port
    assert port is not None, "start the server with https_port=0"
    keys = service_keys(running.store)
    host = f"localhost:{port}"
    token = generate_sas_token(
        host, keys["iothubowner"]["primaryKey"], int(time.time()) + 3600, "iothubowner"
    )
    return httpx.Client(
        base_url=f"https://{host}",
        headers={"Authorization": token},
        params={"api-version": "2021-04-12"},
        verify=ssl.create_default_context(cafile=str(running.trust_anchor)),
        timeout=30,
    )


# -- fleets (the rotation test) ------------------------------------------------------------

CREDENTIALS_RES = "$iothub/credentials/res/"
ISSUE = "$iothub/credentials/POST/issueCertificate/?$rid="


def enroll_fleet(
    running: RunningServer, directory: Path, count: int, prefix: str, policy: str = "default"
) -> list[tuple[str, DevicePems]]:
    """``count`` devices under ``policy``, each with a certificate, in one transaction."""
    from certhub.rand import SystemRandom
    from certhub.registry.records import NewDevice

    authority = open_authority(running.data_dir, running.store)
    ns = running.store.get_namespace("default")
    assert ns is not None
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    with running.store.transaction() as conn:
        for i in range(count):
            device_id = f"{prefix}-{i:04d}"
            running.store.create_device(
                NewDevice(
                    device_id=device_id,
                    namespace_id=ns.id,
                    revocation_id=SystemRandom().token_bytes(32),
                    policy_name=policy,
                ),
                dt.datetime.now(dt.UTC),
                conn=conn,
            )
            key, csr = make_key_and_csr(device_id)
            leaf = authority.issue(
                device_id=device_id,
                csr_der=csr,
                policy_name=policy,
                requested_via="cli",
                actor="tests",
                conn=conn,
            )
            chain = [base64.b64encode(d).decode() for d in leaf.chain_der]
            out.append((device_id, _write_chain(directory, device_id, key, chain)))
    return out


@dataclass
class Renewal:
    """One renewal over the hub's credentials API: the new key and what came back."""

    device_id: str
    key: Any
    statuses: list[int]
    chain: list[str] | None = None

    def pems(self, directory: Path) -> DevicePems:
        assert self.chain is not None
        return _write_chain(directory, self.device_id, self.key, self.chain)


def start_renewal(client: DeviceClient, device_id: str, rid: str = "1") -> Renewal:
    key, csr = make_key_and_csr(device_id)
    body = {"id": device_id, "csr": base64.b64encode(csr).decode(), "replace": None}
    client.client.publish(ISSUE + rid, json.dumps(body), qos=1)
    return Renewal(device_id, key, [])


def finish_renewal(
    client: DeviceClient, renewal: Renewal, rid: str = "1", timeout: float = 60.0
) -> Renewal:
    """Read the 202 and the final answer of ``renewal``."""
    deadline = time.monotonic() + timeout
    while not renewal.statuses or renewal.statuses[-1] == 202:
        message = client.expect(CREDENTIALS_RES, max(0.1, deadline - time.monotonic()))
        if not message.topic.endswith(f"?$rid={rid}"):
            continue
        renewal.statuses.append(int(message.topic.split("/")[3]))
        body: dict[str, Any] = json.loads(message.payload)
        if "certificates" in body:
            renewal.chain = body["certificates"]
    return renewal


def all_refusals() -> float:
    """Every CONNECT the hub refused so far (this process), whatever the reason."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "certhub_hub_refusals":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total
