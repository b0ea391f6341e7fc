"""Real ``certhub serve`` processes on one PostgreSQL store, and devices that follow them.

* :func:`serve_nodes` — N ``certhub serve --node-name nI`` processes, each on its own
  ports, all on one data directory and store; stopped with SIGTERM at the end.
* :func:`enroll` — devices with certificates, written as PEM files.
* :func:`wait_for`, :data:`FAST` (heartbeat settings for in-process nodes).
* :class:`MovingDevice` — a paho client on its own thread that renews back to back and,
  when its connection drops, reconnects to the next node and resubmits the request it
  was waiting for (same ``$rid`` and body).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certhub.pki import chain_pem
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import NewDevice
from serverkit import API_VERSION, make_key_and_csr, open_authority

RESPONSES = "$iothub/credentials/res/"
ISSUE = "$iothub/credentials/POST/issueCertificate/?$rid="
#: fast heartbeats so that nodes see each other (and take over leases) within seconds
FAST = {"cluster_heartbeat": 0.2, "lease_ttl": 1.5}


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    """One ``certhub serve`` process."""

    name: str
    port: int
    https_port: int
    process: subprocess.Popen[bytes]


def serve_command(data_dir: Path, url: str, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "certhub.cli", "serve", "--data-dir", str(data_dir)]
    return [*command, "--database", url, "--heartbeat", "0.3", "--lease-ttl", "2", *extra]


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 40
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"certhub serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


@contextlib.contextmanager
def serve_nodes(data_dir: Path, url: str, count: int, log: Path) -> Iterator[list[Node]]:
    """``count`` nodes on their own ports until the block ends (or a test kills one)."""
    nodes: list[Node] = []
    try:
        for i in range(count):
            port, https = free_port(), free_port()
            extra = ["--node-name", f"n{i}", "--mqtt-port", str(port), "--https-port", str(https)]
            with log.open("ab") as out:
                process = subprocess.Popen(
                    serve_command(data_dir, url, *extra), stdout=out, stderr=subprocess.STDOUT
                )
            nodes.append(Node(f"n{i}", port, https, process))
        for node in nodes:
            wait_listening(node.port, node.process, log)
        yield nodes
    finally:
        for node in nodes:
            stop(node.process)


@dataclass(frozen=True)
class Pems:
    key: Path
    chain: Path
    serial_hex: str


def enroll(data_dir: Path, store: Store, directory: Path, count: int, prefix: str) -> list[
    tuple[str, Pems]
]:  # fmt: skip
    """``count`` devices (policy ``default``) with a certificate each, in one transaction."""
    authority = open_authority(data_dir, store)
    ns = store.get_namespace("default")
    assert ns is not None
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    with store.transaction() as conn:
        for i in range(count):
            device_id = f"{prefix}-{i:03d}"
            device = NewDevice(
                device_id=device_id,
                namespace_id=ns.id,
                revocation_id=SystemRandom().token_bytes(32),
                policy_name="default",
            )
            store.create_device(device, dt.datetime.now(dt.UTC), conn=conn)
            key, csr = make_key_and_csr(device_id)
            leaf = authority.issue(
                device_id=device_id,
                csr_der=csr,
                policy_name="default",
                requested_via="cli",
                actor="tests",
                conn=conn,
            )
            key_path, chain = directory / f"{device_id}.key", directory / f"{device_id}.pem"
            key_path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            chain.write_bytes(chain_pem(leaf))
            out.append((device_id, Pems(key_path, chain, leaf.serial_hex)))
    return out


@dataclass
class Request:
    rid: str
    body: bytes
    statuses: list[int] = field(default_factory=list)
    serial: str | None = None


@dataclass
class MovingDevice:
    """Renews ``target`` times back to back, following the nodes (see the module docs)."""

    device_id: str
    pems: Pems
    ports: Sequence[int]
    hub_host: str
    trust_anchor: Path
    target: int
    start_at: int = 0
    returned: list[Request] = field(default_factory=list)
    ports_used: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    connect_failures: list[str] = field(default_factory=list)
    """Why connection attempts failed (port: reason), for the failure message."""
    done: threading.Event = field(default_factory=threading.Event)
    _inbox: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, name=self.device_id, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        index, current, client = self.start_at, None, None
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            if client is None:
                port = self.ports[index % len(self.ports)]
                client = self._connect(port)
                if client is None:
                    index += 1
                    time.sleep(0.2)
                    continue
                self.ports_used.append(port)
                if current is not None:  # resubmit what the dead node left unanswered
                    client.publish(ISSUE + current.rid, current.body, qos=1)
            if current is None:
                if len(self.returned) >= self.target:
                    self.done.set()
                    break
                current = self._new_request(len(self.returned) + 1)
                client.publish(ISSUE + current.rid, current.body, qos=1)
            try:
                kind, value = self._inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            owner, value = value
            if owner is not client:  # from a connection already given up: its close, say
                continue
            if kind == "gone":
                _close(client)
                client, index = None, index + 1
            elif kind == "message" and current is not None:
                current = self._on_response(current, value)
        _close(client)

    def _on_response(self, current: Request, message: mqtt.MQTTMessage) -> Request | None:
        if not message.topic.endswith(f"?$rid={current.rid}"):
            return current
        status = int(message.topic.split("/")[3])
        current.statuses.append(status)
        if status == 202:
            return current
        if status != 200:
            self.errors.append(f"{status} {message.payload!r}")
            return None  # e.g. throttled: a new request
        der = base64.b64decode(json.loads(message.payload)["certificates"][0])
        current.serial = format(x509.load_der_x509_certificate(der).serial_number, "032x")
        self.returned.append(current)
        return None

    def _new_request(self, n: int) -> Request:
        _key, csr = make_key_and_csr(self.device_id)
        body = {"id": self.device_id, "csr": base64.b64encode(csr).decode(), "replace": None}
        return Request(f"{n}-{SystemRandom().token_bytes(3).hex()}", json.dumps(body).encode())

    def _connect(self, port: int) -> mqtt.Client | None:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        context = ssl.create_default_context(cafile=str(self.trust_anchor))
        context.load_cert_chain(self.pems.chain, self.pems.key)
        client.tls_set_context(context)
        client.username_pw_set(f"{self.hub_host}/{self.device_id}/?api-version={API_VERSION}")
        connected = threading.Event()
        inbox = self._inbox
        # Events carry their client: closing a connection reports "gone" too, and that
        # report must not end the next connection (it did: a device then reconnected in a
        # loop, each new session closed by the previous one's report, and never renewed).
        client.on_disconnect = lambda c, *a: inbox.put(("gone", (c, None)))
        client.on_message = lambda c, _u, m: inbox.put(("message", (c, m)))
        codes: list[object] = []

        def on_connect(_c: object, _u: object, _f: object, code: object, _p: object) -> None:
            codes.append(code)
            connected.set()

        client.on_connect = on_connect
        try:
            client.connect("127.0.0.1", port)
        except OSError as exc:
            self.connect_failures.append(f"{port}: {exc!r}")
            return None
        client.loop_start()
        if not connected.wait(10) or not client.is_connected():
            self.connect_failures.append(f"{port}: CONNACK {codes or 'not received in 10 s'}")
            _close(client)
            return None
        client.subscribe(RESPONSES + "#", 1)
        time.sleep(0.05)  # SUBACK before the request (paho keeps order anyway)
        return client


def _close(client: mqtt.Client | None) -> None:
    if client is None:
        return
    with contextlib.suppress(Exception):
        client.disconnect()
    client.loop_stop()
