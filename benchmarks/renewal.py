"""Renewal benchmark: certificate renewals through the hub's credentials API, per second and
latency, next to the raw issuance rate measured in the same run.

    .venv/bin/python benchmarks/renewal.py [--devices 300] [--seconds 8] [--database URL]
        [--signing-processes 1] [--open-rate R]

* **raw** — the raw issuance rate of ``benchmarks/issuance.py`` (its ``raw_loop``: a bare
  ``cryptography`` loop that parses + verifies a CSR, then builds and signs the leaf
  profile certhub issues), in this process; also printed: a barer verify + sign with 3
  extensions, the reference of this benchmark's rows before 2026-11-27 stop 14.
* **authority** — ``CertificateAuthorityService.issue_batch`` alone, 64 CSRs per commit
  (what any issuance path costs at least: validators, signing, two rows).
* **peak** — certhub runs as its own process (``Server`` on uvloop, SQLite in a temporary
  data directory unless ``--database``); ``--devices`` devices are connected over mutual
  TLS and subscribed to ``$iothub/credentials/res/#`` before the clock starts. Each one
  renews in a loop: PUBLISH ``{"id", "csr"}`` to
  ``$iothub/credentials/POST/issueCertificate/?$rid=…`` (a fresh P-256 key each time),
  wait for the 202 and the 200, publish the next. Renewals per second over the run, and
  p50/p99 of PUBLISH -> 200.
* **half peak** — the same devices, open loop at half the peak rate (requests paced
  evenly, each to an idle device): p50/p99 latency. ``--open-rate`` sets another rate
  (to compare two configurations at one load).

Server CPU per renewal counts certhub's process and its signing processes
(``--signing-processes``, certhub's default 1; 0 signs in the server process).

Targets (issue "Renewal through the hub"): peak >= 40% of raw; p99 < 250 ms at half peak.
The load generator is one asyncio process with a raw MQTT client (``certhub.mqtt``), so
it costs the machine far less than the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import platform
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from issuance import raw_loop  # benchmarks/ is the script's directory
from procstat import tree_cpu_seconds

from certhub.app import Server, ServerConfig, freeze_startup_heap, new_event_loop
from certhub.authority import CertificateAuthorityService, IssueItem
from certhub.bootstrap import initialize
from certhub.clock import SystemClock
from certhub.datadir import DataDir
from certhub.mqtt import Connect, Decoder, PubAck, Publish, Subscribe, encode
from certhub.pki import chain_pem
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import NewDevice

HOST = "127.0.0.1"
API = "2025-08-01-preview"
RESPONSES = "$iothub/credentials/res/"


# -- setup ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    data_dir: Path
    database_url: str | None
    hub_host: str
    devices: list[tuple[str, Path, Path]]  # (device id, chain PEM, key PEM)


def csr_b64(device_id: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


def prepare(root: Path, count: int, database_url: str | None) -> Fixture:
    """A data directory with ``count`` devices (policy ``default``), each with a certificate."""
    data_dir = root / "data"
    init = initialize(data_dir, database_url=database_url)
    dd = DataDir(data_dir)
    pems = root / "devices"
    pems.mkdir()
    rng, clock = SystemRandom(), SystemClock()
    devices: list[tuple[str, Path, Path]] = []
    with Store.open(database_url or dd.database_url) as store:
        ns = store.get_namespace("default")
        assert ns is not None
        authority = CertificateAuthorityService(
            store, clock=clock, rng=rng, passphrase=dd.passphrase(rng)
        )
        with store.transaction() as conn:
            for i in range(count):
                device_id = f"renew-{i:05d}"
                store.create_device(
                    NewDevice(
                        device_id=device_id,
                        namespace_id=ns.id,
                        revocation_id=rng.token_bytes(32),
                        policy_name="default",
                    ),
                    clock.now(),
                    conn=conn,
                )
                key = ec.generate_private_key(ec.SECP256R1())
                name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
                csr = x509.CertificateSigningRequestBuilder().subject_name(name)
                leaf = authority.issue(
                    device_id=device_id,
                    csr_der=csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER),
                    policy_name="default",
                    requested_via="cli",
                    actor="benchmark",
                    conn=conn,
                )
                chain, key_path = pems / f"{device_id}.pem", pems / f"{device_id}.key"
                chain.write_bytes(chain_pem(leaf))
                key_path.write_bytes(
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
                devices.append((device_id, chain, key_path))
    return Fixture(data_dir, database_url, init.hub_host, devices)


def raw_rates(count: int) -> tuple[float, float]:
    """The references, on the same CSRs: ``issuance.raw_loop`` (parse + verify the CSR,
    build and sign the leaf profile certhub issues: 7 extensions, the raw issuance rate of
    ``benchmarks/issuance.py``) and a bare verify + sign with 3 extensions (the reference
    of this benchmark's rows before stop 14)."""
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench issuing CA")])
    now = dt.datetime.now(dt.UTC)
    issuer = (
        x509.CertificateBuilder(
            issuer_name=name,
            subject_name=name,
            public_key=issuer_key.public_key(),
            serial_number=x509.random_serial_number(),
            not_valid_before=now - dt.timedelta(days=1),
            not_valid_after=now + dt.timedelta(days=365),
        )
        .add_extension(x509.BasicConstraints(True, 0), True)
        .sign(issuer_key, hashes.SHA256())
    )
    csrs = [(f"d{i}", base64.b64decode(csr_b64(f"d{i}"))) for i in range(count)]
    profile = raw_loop(csrs, issuer_key, issuer)
    start = time.perf_counter()
    for device, der in csrs:
        csr = x509.load_der_x509_csr(der)
        assert csr.is_signature_valid
        pub = csr.public_key()
        x509.CertificateBuilder(
            issuer_name=name,
            subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device)]),
            public_key=pub,
            serial_number=x509.random_serial_number(),
            not_valid_before=now - dt.timedelta(minutes=5),
            not_valid_after=now + dt.timedelta(days=30),
            extensions=[
                x509.Extension(x509.BasicConstraints.oid, True, x509.BasicConstraints(False, None)),
                x509.Extension(
                    x509.ExtendedKeyUsage.oid,
                    False,
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                ),
                x509.Extension(
                    x509.SubjectKeyIdentifier.oid,
                    False,
                    x509.SubjectKeyIdentifier.from_public_key(pub),
                ),
            ],  # type: ignore[arg-type]
        ).sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return profile, count / (time.perf_counter() - start)


def authority_rate(fixture: Fixture, rounds: int = 8, batch: int = 64) -> float:
    """The ceiling from below: ``CertificateAuthorityService.issue_batch`` alone (validators,
    signing, certificate + audit rows), ``batch`` CSRs per transaction, no MQTT, no renewal."""
    dd = DataDir(fixture.data_dir)
    rng = SystemRandom()
    with Store.open(fixture.database_url or dd.database_url) as store:
        authority = CertificateAuthorityService(
            store, clock=SystemClock(), rng=rng, passphrase=dd.passphrase(rng)
        )
        ids = [d for d, _, _ in fixture.devices]
        items = [
            IssueItem(
                device_id=ids[i % len(ids)],
                csr_der=base64.b64decode(csr_b64(ids[i % len(ids)])),
                policy_name="default",
                requested_via="api",
                actor="benchmark",
            )
            for i in range(rounds * batch)
        ]
        start = time.perf_counter()
        for k in range(0, len(items), batch):
            authority.issue_batch(items[k : k + batch])
        return len(items) / (time.perf_counter() - start)


# -- the server process ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int

    def cpu_seconds(self) -> float:
        """CPU time of certhub and its signing processes (live children)."""
        return tree_cpu_seconds(self.process.pid)


@contextlib.contextmanager
def certhub_server(fixture: Fixture, signing_processes: int) -> Iterator[ServerProcess]:
    port = free_port()
    command = [sys.executable, __file__, "--serve", str(fixture.data_dir), str(port)]
    command.append(str(signing_processes))
    if fixture.database_url:
        command.append(fixture.database_url)
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(b"READY"):
            raise RuntimeError(f"certhub did not start: {line!r}")
        yield ServerProcess(process, port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def serve(data_dir: str, port: str, signing: str, database_url: str | None = None) -> None:
    """``--serve``: run certhub's Server until SIGTERM."""

    async def main() -> None:
        config = ServerConfig(
            data_dir=Path(data_dir),
            database_url=database_url,
            mqtt_port=int(port),
            signing_processes=int(signing),
        )
        server = Server(config)
        await server.start()
        freeze_startup_heap()  # as `certhub serve` does
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        await stop.wait()
        await server.stop()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


# -- the devices -------------------------------------------------------------------------------


@dataclass
class Device(asyncio.Protocol):
    """One connected device that renews on demand (raw MQTT over TLS)."""

    device_id: str
    connect_bytes: bytes
    transport: asyncio.Transport | None = None
    decoder: Decoder = field(default_factory=Decoder)
    ready: asyncio.Future[None] | None = None
    done: asyncio.Future[float] | None = None
    started: float = 0.0
    next_rid: int = 0
    next_pid: int = 0
    csrs: list[str] = field(default_factory=list)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        subscribe = Subscribe(packet_id=1, topics=((RESPONSES + "#", 1),))
        transport.write(self.connect_bytes + encode(subscribe))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        for packet in self.decoder.feed(data):
            name = type(packet).__name__
            if name == "SubAck" and self.ready is not None and not self.ready.done():
                self.ready.set_result(None)
            elif isinstance(packet, Publish):
                self._response(packet)

    def _response(self, packet: Publish) -> None:
        assert self.transport is not None
        if packet.qos == 1 and packet.packet_id is not None:
            self.transport.write(encode(PubAck(packet_id=packet.packet_id)))
        status = int(packet.topic.split("/")[3])
        if status == 202 or self.done is None or self.done.done():
            return
        if status != 200:
            self.done.set_exception(RuntimeError(f"{self.device_id}: {status} {packet.payload!r}"))
        else:
            self.done.set_result(time.perf_counter() - self.started)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.ready, self.done):
            if future is not None and not future.done():
                future.set_exception(ConnectionError(f"{self.device_id} lost its connection"))

    def renew(self) -> asyncio.Future[float]:
        """Publish a CSR; the future resolves with the seconds until the 200."""
        assert self.transport is not None
        self.next_rid += 1
        self.next_pid = self.next_pid % 65535 + 1
        csr = self.csrs.pop() if self.csrs else csr_b64(self.device_id)
        body = json.dumps({"id": self.device_id, "csr": csr}).encode()
        topic = f"$iothub/credentials/POST/issueCertificate/?$rid={self.next_rid}"
        self.done = asyncio.get_running_loop().create_future()
        self.started = time.perf_counter()
        self.transport.write(
            encode(Publish(topic=topic, payload=body, qos=1, packet_id=self.next_pid))
        )
        return self.done


async def connect_all(fixture: Fixture, port: int, csrs_each: int) -> list[Device]:
    loop = asyncio.get_running_loop()
    devices: list[Device] = []
    gate = asyncio.Semaphore(32)

    async def one(device_id: str, chain: Path, key: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(chain, key)
        username = f"{fixture.hub_host}/{device_id}/?api-version={API}"
        device = Device(device_id, encode(Connect(client_id=device_id, username=username)))
        device.csrs = [csr_b64(device_id) for _ in range(csrs_each)]
        device.ready = loop.create_future()
        async with gate:
            await loop.create_connection(lambda: device, HOST, port, ssl=context)
            await asyncio.wait_for(device.ready, 30)
        devices.append(device)

    await asyncio.gather(*(one(*d) for d in fixture.devices))
    return devices


async def closed_loop(devices: list[Device], seconds: float) -> tuple[float, list[float]]:
    """Every device renews back to back for ``seconds``: renewals/s and latencies."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(device: Device) -> None:
        while time.perf_counter() < deadline:
            latencies.append(await device.renew())

    start = time.perf_counter()
    await asyncio.gather(*(worker(d) for d in devices))
    return len(latencies) / (time.perf_counter() - start), latencies


async def open_loop(devices: list[Device], rate: float, seconds: float) -> list[float]:
    """Requests paced at ``rate`` per second, each to an idle device: latencies."""
    idle = list(devices)
    latencies: list[float] = []
    pending: set[asyncio.Task[None]] = set()

    async def one(device: Device) -> None:
        latencies.append(await device.renew())
        idle.append(device)

    start = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) - start < seconds:
        due = int((now - start) * rate) + 1
        while sent < due and idle:
            task = asyncio.get_running_loop().create_task(one(idle.pop(0)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.sleep(min(0.005, 1 / rate))
    await asyncio.gather(*pending)
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=300, help="connected devices (300)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement (8)")
    parser.add_argument("--raw-count", type=int, default=2000, help="raw loop CSRs (2000)")
    parser.add_argument("--database", default=None, help="store URL (default: SQLite)")
    parser.add_argument(
        "--open-rate",
        type=float,
        default=None,
        help="renewals/s of the open-loop run (default: half the peak)",
    )
    parser.add_argument(
        "--signing-processes",
        type=int,
        default=1,
        help="certhub's signing processes (1, the default; 0: sign in the server process)",
    )
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    root = Path(tempfile.mkdtemp(prefix="certhub-renewal-bench-"))
    print(f"preparing {args.devices} devices with certificates ...", flush=True)
    fixture = prepare(root, args.devices, args.database)
    authority = authority_rate(fixture)
    loop = new_event_loop()
    try:
        with certhub_server(fixture, args.signing_processes) as server:
            devices = loop.run_until_complete(connect_all(fixture, server.port, 30))
            loop.run_until_complete(closed_loop(devices, 1.0))  # warm up
            raws = [raw_rates(args.raw_count) for _ in range(2)]
            cpu, own = server.cpu_seconds(), time.process_time()
            peak, peak_lat = loop.run_until_complete(closed_loop(devices, args.seconds))
            cpu_each = (server.cpu_seconds() - cpu) / max(1, len(peak_lat))
            load_each = (time.process_time() - own) / max(1, len(peak_lat))
            open_rate = args.open_rate or peak / 2
            half = loop.run_until_complete(open_loop(devices, open_rate, args.seconds))
            raws.append(raw_rates(args.raw_count))
    finally:
        loop.close()
    raw = max(profile for profile, _ in raws)
    bare = max(bare for _, bare in raws)
    results = {
        "date": dt.date.today().isoformat(),
        "store": "postgresql" if args.database else "sqlite",
        "devices": args.devices,
        "signing_processes": args.signing_processes,
        "raw_per_s": round(raw),
        "bare_verify_sign_per_s": round(bare),
        "authority_issue_batch_per_s": round(authority),
        "peak_per_s": round(peak),
        "ratio": round(peak / raw, 3),
        "server_cpu_ms_per_renewal": round(cpu_each * 1000, 2),
        "load_generator_cpu_ms_per_renewal": round(load_each * 1000, 2),
        "peak_p50_ms": round(pct(peak_lat, 0.5), 1),
        "peak_p99_ms": round(pct(peak_lat, 0.99), 1),
        "half_rate_per_s": round(open_rate),
        "half_p50_ms": round(pct(half, 0.5), 1),
        "half_p99_ms": round(pct(half, 0.99), 1),
        "half_mean_ms": round(statistics.fmean(half) * 1000, 1),
        "python": platform.python_version(),
    }
    print()
    print(f"raw issuance (issuance.py's reference) {raw:>8,.0f} /s")
    print(f"bare verify CSR + sign, 3 extensions   {bare:>8,.0f} /s")
    print(
        f"authority issue_batch alone (64/commit) {authority:>8,.0f} /s   "
        f"ratio {authority / raw:.2f}"
    )
    print(f"renewals over MQTT, {args.devices} devices     {peak:>8,.0f} /s   "
          f"ratio {peak / raw:.2f} (target >= 0.40; bare loop {peak / bare:.2f})")  # fmt: skip
    print(f"  server CPU per renewal               {cpu_each * 1000:>8.2f} ms "
          f"(with its {args.signing_processes} signing processes)")  # fmt: skip
    print(f"  load generator CPU per renewal       {load_each * 1000:>8.2f} ms")
    print(
        f"  latency at peak      p50 {results['peak_p50_ms']:>7} ms  "
        f"p99 {results['peak_p99_ms']:>7} ms"
    )
    print(f"  latency at {open_rate:,.0f}/s   p50 {results['half_p50_ms']:>7} ms  "
          f"p99 {results['half_p99_ms']:>7} ms (target p99 < 250 ms)")  # fmt: skip
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
