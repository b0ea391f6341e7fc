"""End to end: devices renew over paho-mqtt/TLS through a running certhub, then reconnect
with their new certificates; a server killed mid-storm loses nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from prometheus_client import REGISTRY
from renewal_e2e_support import (
    RESPONSES,
    Renewal,
    collect,
    connect_all,
    database_url,
    enroll,
    new_renewal,
    release,
)

from certhub.bootstrap import initialize
from certhub.metrics import LEAVES_SIGNED
from certhub.registry import Store
from serverkit import API_VERSION, DevicePems, running_server

ISSUE = "$iothub/credentials/POST/issueCertificate/?$rid="


def refusals() -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "certhub_hub_refusals":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


def signed(where: str) -> float:
    return float(LEAVES_SIGNED.labels(where)._value.get())


@pytest.mark.parametrize("signing_processes", [1, 0], ids=["signing-process", "in-server"])
def test_two_hundred_devices_renew_concurrently_and_reconnect(
    tmp_path: Path, signing_processes: int
) -> None:
    with running_server(tmp_path / "data", signing_processes=signing_processes) as running:
        devices = enroll(running.data_dir, running.store, tmp_path / "old", 200, "fleet")
        refused_before = refusals()
        signer = running.server.authority.signer
        assert (signer is not None) == bool(signing_processes)
        assert signer is None or signer.wait_ready()  # else the first leaves are signed here
        elsewhere, here = signed("signing-process"), signed("server")
        clients, codes = connect_all(running, devices)
        try:
            assert codes == [0] * len(devices)
            for client in clients:
                assert client.subscribe(RESPONSES + "#") == [1]
            renewals = [new_renewal(device_id, "1") for device_id, _ in devices]
            for client, renewal in zip(clients, renewals, strict=True):
                client.client.publish(ISSUE + renewal.rid, renewal.body, qos=1)
            for client, renewal in zip(clients, renewals, strict=True):
                collect(client, renewal)
            assert {tuple(r.statuses) for r in renewals} == {(202, 200)}
            assert not any(c.record.disconnected.is_set() for c in clients)  # nobody dropped
        finally:
            release(clients)
        # where the 200 leaves were signed (each once: every pre-signed leaf was recorded)
        if signing_processes:
            assert (signed("signing-process") - elsewhere, signed("server") - here) == (200, 0)
        else:
            assert (signed("signing-process") - elsewhere, signed("server") - here) == (0, 200)
        new = [(r.device_id, r.write_pems(tmp_path / "new")) for r in renewals]
        clients, codes = connect_all(running, new)
        release(clients)
        assert codes == [0] * len(new)
        assert refusals() == refused_before
        for (device_id, old), renewal in zip(devices, renewals, strict=True):
            assert old.leaf is not None
            old_cert = running.store.get_certificate(old.leaf.serial_hex)
            new_cert = running.store.get_certificate(renewal.serial())
            assert old_cert is not None and new_cert is not None
            assert (old_cert.state, new_cert.state) == ("superseded", "active"), device_id


# -- the crash test: `certhub serve` in a subprocess, SIGKILLed mid-storm --------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if stat[0] == "Z":
            return  # exited; its parent is gone, so init reaps it
        assert time.monotonic() < deadline, f"process {pid} outlived the server"
        time.sleep(0.05)


@dataclass
class Endpoint:
    """What a DeviceClient needs of a server (duck-typed RunningServer)."""

    host: str
    port: int
    hub_host: str
    trust_anchor: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def certhub_serve(data_dir: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``certhub serve`` on ``port`` until the block ends (or the test kills it)."""
    command = [sys.executable, "-m", "certhub.cli", "serve", "--data-dir", str(data_dir)]
    command += ["--dev", "--mqtt-port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"certhub serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class StormDevice:
    """A paho client that renews back to back (a fresh key each time) while ``storm`` is set."""

    endpoint: Endpoint
    device_id: str
    pems: DevicePems
    storm: threading.Event
    returned: list[Renewal] = field(default_factory=list)
    current: Renewal | None = None
    subscribed: threading.Event = field(default_factory=threading.Event)
    connack: int | None = None
    connected: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        context = ssl.create_default_context(cafile=str(self.endpoint.trust_anchor))
        context.load_cert_chain(self.pems.chain, self.pems.key)
        client.tls_set_context(context)
        host = self.endpoint.hub_host
        client.username_pw_set(f"{host}/{self.device_id}/?api-version={API_VERSION}")
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_a: self.subscribed.set()
        client.on_message = self._on_message
        self.client = client
        client.connect(self.endpoint.host, self.endpoint.port)
        client.loop_start()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connack = int(reason.value)
        self.connected.set()
        if self.connack == 0:
            client.subscribe(RESPONSES + "#", 1)

    def renew(self) -> None:
        rid = str(len(self.returned) + 1)
        self.current = new_renewal(self.device_id, rid)
        self.client.publish(ISSUE + rid, self.current.body, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        current = self.current
        if current is None or not message.topic.endswith(f"?$rid={current.rid}"):
            return
        status = int(message.topic.split("/")[3])
        current.statuses.append(status)
        if status == 200:
            current.certificates = json.loads(message.payload)["certificates"]
            self.returned.append(current)
            self.current = None
            if self.storm.is_set():
                self.renew()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


def test_sigkill_during_a_renewal_storm_loses_no_certificate(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    init = initialize(data_dir, development=True)
    with Store.open(database_url(data_dir)) as store:
        devices = enroll(data_dir, store, tmp_path / "old", 60, "storm")
    port = free_port()
    endpoint = Endpoint("127.0.0.1", port, init.hub_host, Path(init.trust_anchor))
    storm = threading.Event()
    swarm = [StormDevice(endpoint, d, pems, storm) for d, pems in devices]
    with certhub_serve(data_dir, port, log) as process:
        for device in swarm:
            device.start()
        for device in swarm:
            assert device.connected.wait(20) and device.connack == 0
            assert device.subscribed.wait(10)
        storm.set()
        for device in swarm:
            device.renew()
        deadline = time.monotonic() + 20
        while sum(len(d.returned) for d in swarm) < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        signers = children(process.pid)
        assert signers  # the signing process
        os.kill(process.pid, signal.SIGKILL)  # mid-storm: requests in flight everywhere
        process.wait(10)
        for pid in signers:  # no orphan: it saw its pipe close
            wait_gone(pid)
        storm.clear()
        for device in swarm:
            device.stop()
    returned = [r for d in swarm for r in d.returned]
    assert len(returned) >= 60, log.read_text()[-3000:]
    in_flight = [d for d in swarm if d.current is not None]
    assert in_flight  # the kill interrupted renewals (some accepted, some not yet)
    with certhub_serve(data_dir, port, log):
        # every device connects with the newest certificate it received, else its old one
        latest = [
            (d.device_id, d.returned[-1].write_pems(tmp_path / "new") if d.returned else d.pems)
            for d in swarm
        ]
        clients, codes = connect_all(endpoint, latest)  # type: ignore[arg-type]
        try:
            assert codes == [0] * len(latest)
            # a device whose last request was cut off resubmits it (same rid): no new issuance
            by_id = {c.device_id: c for c in clients}
            for device in in_flight:
                client, renewal = by_id[device.device_id], device.current
                assert renewal is not None
                assert client.subscribe(RESPONSES + "#") == [1]
                client.client.publish(ISSUE + renewal.rid, renewal.body, qos=1)
                renewal.statuses.clear()
                collect(client, renewal)
                assert renewal.statuses[-1] == 200, renewal.statuses
                assert renewal.certificates is not None
                returned.append(renewal)
        finally:
            release(clients)
    with Store.open(database_url(data_dir)) as store:
        for renewal in returned:
            assert store.get_certificate(renewal.serial()) is not None
        for device in swarm:
            hub = [
                c
                for c in store.list_certificates(device_id=device.device_id, limit=1000)
                if c.requested_via == "hub"
            ]
            ops = store.list_operations(device_id=device.device_id, limit=1000)
            issued_ops = [o for o in ops if o.certificate_serial is not None]
            assert len(hub) == len(issued_ops)  # one certificate per operation, never two
