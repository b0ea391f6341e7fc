"""End-to-end DPS registrations with a CSR per second over MQTT/TLS, next to the raw
issuance rate (``cryptography``: verify CSR + sign leaf) measured in the same run.

    .venv/bin/python benchmarks/dps.py [--count 2000] [--concurrency 32] [--database URL]

Each registration is what a device does: TLS handshake, CONNECT with a SAS token
(group-derived key), SUBSCRIBE, PUBLISH ``iotdps-register`` with a top-level ``csr``,
wait for ``202``, PUBLISH ``iotdps-get-operationstatus`` at once (no retry-after
sleep), receive ``200`` with ``issuedCertificateChain``, DISCONNECT. Latency is from
opening the TCP connection to the chain. The server runs in its own process (the real
``certhub serve`` by default); the clients run here on one event loop (uvloop), with
keys, CSRs and SAS tokens made before the clock starts.

Target (issue "Provisioning service (DPS)"): >= 100 registrations/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from procstat import tree_cpu_seconds
from rich.console import Console
from rich.table import Table

from certhub.bootstrap import initialize
from certhub.datadir import DataDir
from certhub.mqtt import (
    ClientConnection,
    ConnAck,
    Connect,
    Disconnect,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
)
from certhub.registry import Store
from certhub.sas import derive_device_key, generate_sas_token

console = Console()
API = "2025-07-01-preview"


# -- the device side ---------------------------------------------------------------------


def make_requests(count: int, id_scope: str, group_key: str) -> list[tuple[str, str, bytes]]:
    """(registration id, SAS token, register body) per device, made before timing."""
    out = []
    expiry = int(time.time()) + 3600
    run = os.urandom(3).hex()
    for i in range(count):
        reg = f"bench-{run}-{i:06d}"
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, reg)]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
        token = generate_sas_token(
            f"{id_scope}/registrations/{reg}",
            derive_device_key(group_key, reg),
            expiry,
            "registration",
        )
        body = json.dumps({"registrationId": reg, "csr": base64.b64encode(csr).decode()})
        out.append((reg, token, body.encode()))
    return out


class Device(asyncio.Protocol):
    """One registering device on a sans-I/O MQTT client connection."""

    def __init__(self) -> None:
        self.conn = ClientConnection()
        self.transport: Any = None
        self.inbox: asyncio.Queue[object] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for packet in self.conn.receive_data(data):
            if isinstance(packet, Publish) and packet.qos == 1:
                assert packet.packet_id is not None
                self.send(PubAck(packet_id=packet.packet_id))
            self.inbox.put_nowait(packet)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbox.put_nowait(None)

    def send(self, packet: Any) -> None:
        self.conn.send(packet)
        self.transport.write(self.conn.data_to_send())

    async def expect(self, kind: type[Any], topic_prefix: str | None = None) -> Any:
        while True:
            packet = await self.inbox.get()
            if packet is None:
                raise ConnectionError("server closed the connection")
            if isinstance(packet, kind) and (
                topic_prefix is None or packet.topic.startswith(topic_prefix)
            ):
                return packet


async def register_one(
    host: str, port: int, ctx: ssl.SSLContext, id_scope: str, req: tuple[str, str, bytes]
) -> float:
    reg, token, body = req
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    transport, device = await loop.create_connection(
        Device, host, port, ssl=ctx, server_hostname="localhost"
    )
    try:
        username = f"{id_scope}/registrations/{reg}/api-version={API}&ClientVersion=bench"
        device.send(Connect(client_id=reg, username=username, password=token.encode()))
        connack = await device.expect(ConnAck)
        if connack.return_code != 0:
            raise RuntimeError(f"CONNACK {connack.return_code}")
        device.send(Subscribe(packet_id=1, topics=(("$dps/registrations/res/#", 1),)))
        await device.expect(SubAck)
        device.send(
            Publish(
                topic="$dps/registrations/PUT/iotdps-register/?$rid=1",
                payload=body,
                qos=1,
                packet_id=2,
            )
        )
        first = await device.expect(Publish, "$dps/registrations/res/")
        if not first.topic.startswith("$dps/registrations/res/202/"):
            raise RuntimeError(f"register answered {first.topic}: {first.payload[:200]!r}")
        op = json.loads(first.payload)["operationId"]
        device.send(
            Publish(
                topic=f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId={op}",
                payload=b" ",
                qos=1,
                packet_id=3,
            )
        )
        final = await device.expect(Publish, "$dps/registrations/res/")
        state = json.loads(final.payload)["registrationState"]
        if len(state["issuedCertificateChain"]) != 3:
            raise RuntimeError("no chain")
        elapsed = time.perf_counter() - start
        device.send(Disconnect())
        return elapsed
    finally:
        transport.close()


async def run_clients(
    host: str,
    port: int,
    ca_file: str,
    id_scope: str,
    requests: list[tuple[str, str, bytes]],
    concurrency: int,
) -> tuple[float, list[float], int]:
    ctx = ssl.create_default_context(cafile=ca_file)
    queue = list(reversed(requests))
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while queue:
            req = queue.pop()
            try:
                latencies.append(await register_one(host, port, ctx, id_scope, req))
            except Exception as exc:  # count and go on: the benchmark reports failures
                errors += 1
                if errors <= 3:
                    console.print(f"[red]registration failed:[/] {exc!r}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies, errors


# -- the reference ---------------------------------------------------------------------------


def raw_issuance_rate(requests: list[tuple[str, str, bytes]]) -> float:
    """cryptography alone: parse + verify each CSR, build and sign a comparable leaf."""
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench issuing CA")])
    csrs = [base64.b64decode(json.loads(body)["csr"]) for _, _, body in requests]
    now = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    for der in csrs:
        csr = x509.load_der_x509_csr(der)
        assert csr.is_signature_valid
        pub = csr.public_key()
        x509.CertificateBuilder(
            issuer_name=issuer,
            subject_name=csr.subject,
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
            ],
        ).sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return len(csrs) / (time.perf_counter() - start)


# -- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    data_dir: Path, database: str | None, port: int, signing_processes: int
) -> subprocess.Popen[bytes]:
    certhub = Path(sys.executable).with_name("certhub")
    cmd = [str(certhub), "serve", "--data-dir", str(data_dir), "--mqtt-port", str(port)]
    cmd += ["--signing-processes", str(signing_processes)]
    if database:
        cmd += ["--database", database]
    with Store.open(database or DataDir(data_dir).database_url) as store:
        store.set_setting("https_port", str(free_port()))  # not 8443: it may be taken
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32, help="devices in flight")
    parser.add_argument("--database", default=None, help="store URL (default: SQLite)")
    parser.add_argument(
        "--signing-processes", type=int, default=1, help="certhub's (1; 0: in the server)"
    )
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        facts = initialize(data_dir, database_url=args.database, development=True)
        console.print("making keys, CSRs and tokens …")
        requests = make_requests(args.count + args.warmup, facts.id_scope, facts.group_primary_key)
        raw = max(raw_issuance_rate(requests[: args.count]) for _ in range(2))
        port = free_port()
        server = start_server(data_dir, args.database, port, args.signing_processes)
        try:
            warm, rest = requests[: args.warmup], requests[args.warmup :]
            asyncio.run(run_clients("127.0.0.1", port, facts.trust_anchor, facts.id_scope, warm, 8))
            cpu_before = tree_cpu_seconds(server.pid)
            elapsed, latencies, errors = asyncio.run(
                run_clients(
                    "127.0.0.1", port, facts.trust_anchor, facts.id_scope, rest, args.concurrency
                )
            )
            server_cpu = tree_cpu_seconds(server.pid) - cpu_before
        finally:
            server.terminate()
            server.wait(10)

    done = len(latencies)
    if not done:
        raise SystemExit("no registration succeeded")
    rate = done / elapsed
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(done - 1, int(done * 0.99))] * 1000
    store = "postgresql" if args.database else "sqlite"
    table = Table(title=f"DPS over MQTT/TLS ({store}, {done} registrations with a CSR)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("registrations per second", f"{rate:,.0f}")
    table.add_row("latency p50 (ms)", f"{p50:,.1f}")
    table.add_row("latency p99 (ms)", f"{p99:,.1f}")
    table.add_row("failed registrations", str(errors))
    table.add_row("server CPU per registration (ms)", f"{server_cpu / done * 1000:,.2f}")
    table.add_row("raw issuance per second (verify CSR + sign)", f"{raw:,.0f}")
    table.add_row("registrations / raw issuance", f"{rate / raw:.3f}")
    console.print(table)
    verdict = "meets" if rate >= 100 and errors == 0 else "MISSES"
    console.print(f"[bold]{verdict}[/] the target of 100 registrations/s")
    result = {
        "date": dt.date.today().isoformat(),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "store": store,
        "count": done,
        "concurrency": args.concurrency,
        "registrations_per_s": rate,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": errors,
        "raw_issuance_per_s": raw,
        "server_cpu_ms": server_cpu / done * 1000,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
