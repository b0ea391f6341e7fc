"""End-to-end helpers: many devices with certificates, renewing over paho-mqtt/TLS."""

from __future__ import annotations

import base64
import gc
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certhub.clock import SystemClock
from certhub.datadir import DataDir
from certhub.pki import chain_pem
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import NewDevice
from serverkit import DeviceClient, DevicePems, RunningServer, make_key_and_csr, open_authority

RESPONSES = "$iothub/credentials/res/"


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def enroll(data_dir: Path, store: Store, directory: Path, count: int, prefix: str) -> list[
    tuple[str, DevicePems]
]:  # fmt: skip
    """``count`` devices (policy ``default``), each with a certificate, in one transaction."""
    authority = open_authority(data_dir, store)
    ns = store.get_namespace("default")
    assert ns is not None
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    rng = SystemRandom()
    with store.transaction() as conn:
        for i in range(count):
            device_id = f"{prefix}-{i:04d}"
            store.create_device(
                NewDevice(
                    device_id=device_id,
                    namespace_id=ns.id,
                    revocation_id=rng.token_bytes(32),
                    policy_name="default",
                ),
                SystemClock().now(),
                conn=conn,
            )
            key, csr = make_key_and_csr(device_id)
            leaf = authority.issue(
                device_id=device_id,
                csr_der=csr,
                policy_name="default",
                requested_via="cli",
                actor="tests",
                conn=conn,
            )
            key_path, chain_path = directory / f"{device_id}.key", directory / f"{device_id}.pem"
            write_key(key_path, key)
            chain_path.write_bytes(chain_pem(leaf))
            out.append((device_id, DevicePems(key_path, chain_path, chain_path, leaf)))
    return out


@dataclass
class Renewal:
    """A CSR sent by a device and what came back."""

    device_id: str
    rid: str
    key: ec.EllipticCurvePrivateKey
    body: bytes
    statuses: list[int]
    certificates: list[str] | None = None

    def serial(self) -> str:
        assert self.certificates is not None
        leaf = x509.load_der_x509_certificate(base64.b64decode(self.certificates[0]))
        return format(leaf.serial_number, "032x")

    def write_pems(self, directory: Path) -> DevicePems:
        """The new key and chain (leaf + issuing CA) as files for the next connect."""
        assert self.certificates is not None
        ders = [base64.b64decode(c) for c in self.certificates]
        pem = b"".join(
            x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
            for d in ders[:2]
        )
        directory.mkdir(parents=True, exist_ok=True)
        key_path, chain = directory / f"{self.device_id}.key", directory / f"{self.device_id}.pem"
        write_key(key_path, self.key)
        chain.write_bytes(pem)
        return DevicePems(key_path, chain, chain)


def new_renewal(device_id: str, rid: str) -> Renewal:
    key, csr = make_key_and_csr(device_id)
    body = json.dumps({"id": device_id, "csr": base64.b64encode(csr).decode(), "replace": None})
    return Renewal(device_id, rid, key, body.encode(), [])


def collect(client: DeviceClient, renewal: Renewal, timeout: float = 60.0) -> Renewal:
    """Read the 202 and the final response of ``renewal`` from ``client``."""
    deadline = time.monotonic() + timeout
    while not renewal.statuses or renewal.statuses[-1] == 202:
        message = client.expect(RESPONSES, max(0.1, deadline - time.monotonic()))
        if not message.topic.endswith(f"?$rid={renewal.rid}"):
            continue
        renewal.statuses.append(int(message.topic.split("/")[3]))
        body: dict[str, Any] = json.loads(message.payload)
        if "certificates" in body:
            renewal.certificates = body["certificates"]
    return renewal


def connect_all(
    running: RunningServer, devices: list[tuple[str, DevicePems]], workers: int = 16
) -> tuple[list[DeviceClient], list[int | None]]:
    """Connect every device (in parallel); the clients and their CONNACK codes."""

    def one(item: tuple[str, DevicePems]) -> tuple[DeviceClient, int | None]:
        client = DeviceClient(running, item[0], item[1])
        return client, client.connect(30.0)

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, devices))
    return [c for c, _ in results], [code for _, code in results]


def release(clients: list[DeviceClient]) -> None:
    """Disconnect every client and free its sockets now: paho waits in ``select()``, which
    cannot watch descriptors above 1023, and the in-process server shares the process."""
    for client in clients:
        client.close()
    clients.clear()
    gc.collect()


def database_url(data_dir: Path) -> str:
    return DataDir(data_dir).database_url
