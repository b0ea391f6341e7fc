"""Hub benchmark: certhub's MQTT/TLS device endpoint side by side with mosquitto.

    .venv/bin/python benchmarks/hub.py [--idle 5000] [--seconds 4] [--concurrency 16]

Both brokers run as their own process on loopback with the same server certificate, the
same mutual TLS (client certificates certhub issued, ``require_certificate true`` for
mosquitto) and the same load generator (this process, asyncio on uvloop, raw MQTT bytes):

1. CONNECT->CONNACK per second: ``--concurrency`` workers each connect (TLS 1.2, the Azure
   device SDK's version, no session tickets), wait for CONNACK 0, DISCONNECT, repeat.
2. QoS 1 telemetry per second: ``--publishers`` connections keep ``--window`` PUBLISHes
   in flight each; PUBACKs counted.
3. Idle memory: a fresh broker process, ``--idle`` connected devices (each with its own
   certificate and MQTT session, keep-alive 0), RSS growth divided by their number.

The figures and the ratios certhub/mosquitto are printed; bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import resource
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from procstat import tree_cpu_seconds

from certhub.app import Server, ServerConfig, new_event_loop
from certhub.authority import CertificateAuthorityService
from certhub.bootstrap import initialize
from certhub.clock import SystemClock
from certhub.datadir import DataDir
from certhub.mqtt import Connect, Disconnect, Publish, encode
from certhub.pki import KeyType, chain_pem, generate_private_key
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import NewDevice

MOSQUITTO = Path("/usr/sbin/mosquitto")
HOST = "127.0.0.1"
HANDSHAKE_THREADS = 1
"""certhub's TLS handshake threads (``--handshake-threads``; 0: on the event loop)."""
API = "2021-04-12"
KiB = 1024


# -- setup ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    data_dir: Path
    anchor: Path
    server_cert: Path
    server_key: Path
    ca_bundle: Path  # issuing CA + root, for mosquitto's cafile
    devices: list[tuple[str, Path, Path]]  # (device id, chain PEM, key PEM)
    hub_host: str


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def prepare(root: Path, count: int) -> Fixture:
    """A data directory with ``count`` devices, each with a certhub-issued certificate."""
    data_dir = root / "data"
    init = initialize(data_dir, development=True)
    dd = DataDir(data_dir)
    pems = root / "devices"
    pems.mkdir()
    devices: list[tuple[str, Path, Path]] = []
    rng, clock = SystemRandom(), SystemClock()
    now = dt.datetime.now(dt.UTC)
    with Store.open(dd.database_url) as store:
        ns = store.get_namespace("default")
        assert ns is not None
        authority = CertificateAuthorityService(
            store, clock=clock, rng=rng, passphrase=dd.passphrase(rng)
        )
        issuer = authority.issuer_for("default")
        bundle = chain_pem_of(issuer.ca.certificate) + chain_pem_of(issuer.root)
        for start in range(0, count, 500):
            with store.transaction() as conn:
                for i in range(start, min(count, start + 500)):
                    device_id = f"bench-{i}"
                    store.create_device(
                        NewDevice(
                            device_id=device_id,
                            namespace_id=ns.id,
                            revocation_id=rng.token_bytes(32),
                        ),
                        now,
                        conn=conn,
                    )
                    devices.append(_issue(authority, device_id, pems, conn))
    ca_bundle = root / "ca-bundle.pem"
    ca_bundle.write_bytes(bundle)
    return Fixture(
        data_dir,
        Path(init.trust_anchor),
        dd.server_cert_path,
        dd.server_key_path,
        ca_bundle,
        devices,
        init.hub_host,
    )


def chain_pem_of(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined,no-any-return]


def _issue(
    authority: CertificateAuthorityService, device_id: str, directory: Path, conn: object
) -> tuple[str, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = generate_private_key(KeyType.P256)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    leaf = authority.issue(
        device_id=device_id,
        csr_der=csr.public_bytes(serialization.Encoding.DER),
        policy_name="default",
        requested_via="cli",
        actor="benchmark",
        conn=conn,  # type: ignore[arg-type]
    )
    chain, key_path = directory / f"{device_id}.pem", directory / f"{device_id}.key"
    chain.write_bytes(chain_pem(leaf))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return device_id, chain, key_path


# -- the brokers ----------------------------------------------------------------------------


@dataclass
class Broker:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    def rss(self) -> int:
        """Resident set size of the broker process, bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KiB
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """CPU time of the broker (and its children: certhub's signing process)."""
        return tree_cpu_seconds(self.process.pid)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def certhub_broker(fixture: Fixture) -> Iterator[Broker]:
    port = free_port()
    command = [sys.executable, __file__, "--serve", str(fixture.data_dir), str(port)]
    command.append(str(HANDSHAKE_THREADS))
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(b"READY"):
            raise RuntimeError(f"certhub did not start: {line!r}")
        yield Broker("certhub", process, port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def mosquitto_broker(fixture: Fixture, root: Path) -> Iterator[Broker]:
    port = free_port()
    config = root / "mosquitto.conf"
    config.write_text(
        f"listener {port} {HOST}\n"
        "user root\n"  # files live in a private temporary directory
        f"cafile {fixture.ca_bundle}\n"
        f"certfile {fixture.server_cert}\n"
        f"keyfile {fixture.server_key}\n"
        "require_certificate true\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "log_type none\n"
        "max_keepalive 65535\n"
    )
    process = subprocess.Popen(
        [str(MOSQUITTO), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection((HOST, port), 1).close()
                break
            time.sleep(0.05)
        yield Broker("mosquitto", process, port)
    finally:
        process.terminate()
        process.wait(10)


def serve(data_dir: str, port: str, handshake_threads: str = "1") -> None:
    """``--serve``: run certhub's Server until SIGTERM (the broker process)."""
    raise_nofile()

    async def main() -> None:
        config = ServerConfig(
            data_dir=Path(data_dir), mqtt_port=int(port), handshake_threads=int(handshake_threads)
        )
        server = Server(config)
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        await stop.wait()
        await server.stop()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


# -- the load generator ---------------------------------------------------------------------


class Clients:
    """TLS client contexts (one per device certificate) and CONNECT bytes."""

    def __init__(self, fixture: Fixture) -> None:
        self.fixture = fixture
        self._contexts: dict[int, ssl.SSLContext] = {}
        anchor = fixture.anchor.read_text()
        self._anchor = anchor

    def context(self, index: int) -> ssl.SSLContext:
        context = self._contexts.get(index)
        if context is None:
            context = ssl.create_default_context(cadata=self._anchor)
            context.maximum_version = ssl.TLSVersion.TLSv1_2
            context.options |= ssl.OP_NO_TICKET
            _, chain, key = self.fixture.devices[index]
            context.load_cert_chain(chain, key)
            self._contexts[index] = context
        return context

    def fast_context(self, index: int) -> ssl.SSLContext:
        """Like :meth:`context` without checking the server certificate (load generation)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_TICKET
        _, chain, key = self.fixture.devices[index]
        context.load_cert_chain(chain, key)
        return context

    def connect_bytes(self, index: int, keepalive: int = 60) -> bytes:
        device_id = self.fixture.devices[index][0]
        username = f"{self.fixture.hub_host}/{device_id}/?api-version={API}"
        return encode(Connect(client_id=device_id, username=username, keepalive=keepalive))


async def _open(
    clients: Clients, index: int, port: int, keepalive: int = 60
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(
        HOST, port, ssl=clients.context(index), server_hostname=HOST
    )
    writer.write(clients.connect_bytes(index, keepalive))
    connack = await reader.readexactly(4)
    if connack != b"\x20\x02\x00\x00":
        raise RuntimeError(f"CONNACK {connack!r} for device {index}")
    return reader, writer


class _Cycle(asyncio.Protocol):
    """One CONNECT -> CONNACK -> DISCONNECT over a fresh TLS connection."""

    def __init__(self, connect: bytes, done: asyncio.Future[bool]) -> None:
        self._connect, self._done = connect, done
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        transport.write(self._connect)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self._done.done():
            self._done.set_result(data[:4] == b"\x20\x02\x00\x00")
            assert self._transport is not None
            self._transport.write(_DISCONNECT)
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(False)


_DISCONNECT = encode(Disconnect())


async def connect_rate(clients: Clients, port: int, seconds: float, workers: int) -> float:
    """CONNECT->CONNACK->DISCONNECT cycles per second with ``workers`` in parallel.

    The client side is kept cheap (a bare protocol, no server-certificate check: the
    brokers are ours) so that one generator process can keep a broker busy.
    """
    loop = asyncio.get_running_loop()
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(index: int) -> None:
        nonlocal done
        context, connect = clients.fast_context(index), clients.connect_bytes(index)
        while time.monotonic() < deadline:
            accepted: asyncio.Future[bool] = loop.create_future()
            await loop.create_connection(
                functools.partial(_Cycle, connect, accepted),
                HOST,
                port,
                ssl=context,
                server_hostname=None,
            )
            if not await accepted:
                raise RuntimeError(f"device {index} was refused")
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    return done / (time.monotonic() - start)


def _publish_packets(device_id: str, payload: bytes) -> list[bytes]:
    topic = f"devices/{device_id}/messages/events/"
    template = encode(Publish(topic=topic, payload=payload, qos=1, packet_id=1))
    cut = len(template) - len(payload) - 2
    head, tail = template[:cut], template[cut + 2 :]
    return [head + struct.pack("!H", pid) + tail for pid in range(1, 65536)]


async def publish_rate(
    clients: Clients, port: int, seconds: float, publishers: int, window: int
) -> float:
    """PUBACKed QoS 1 PUBLISHes per second over ``publishers`` connections."""
    acked = 0
    payload = b'{"temperature": 21.5, "humidity": 40, "seq": 123456789}'

    async def publisher(index: int) -> None:
        nonlocal acked
        reader, writer = await _open(clients, index, port, keepalive=0)
        packets = _publish_packets(clients.fixture.devices[index][0], payload)
        pid, outstanding, pending = 0, 0, b""
        deadline = time.monotonic() + seconds

        def send(count: int) -> None:
            nonlocal pid, outstanding
            end = pid + count
            if end <= len(packets):
                writer.write(b"".join(packets[pid:end]))
            else:
                writer.write(b"".join(packets[pid:] + packets[: end - len(packets)]))
            pid = end % len(packets)
            outstanding += count

        send(window)
        while True:
            data = pending + await reader.read(65536)
            if not data:
                raise RuntimeError("broker closed the publisher")
            whole = len(data) // 4
            pending = data[whole * 4 :]
            outstanding -= whole
            acked += whole
            if time.monotonic() < deadline:
                send(whole)
            elif outstanding == 0:
                break
        writer.close()

    start = time.monotonic()
    await asyncio.gather(*(publisher(i) for i in range(publishers)))
    return acked / (time.monotonic() - start)


async def idle_connections(
    clients: Clients, port: int, count: int, parallel: int = 64
) -> list[asyncio.StreamWriter]:
    """Open ``count`` connected MQTT sessions (keep-alive 0) and keep them."""
    writers: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(parallel)

    async def one(index: int) -> None:
        async with gate:
            _, writer = await _open(clients, index, port, keepalive=0)
            writers.append(writer)

    await asyncio.gather(*(one(i) for i in range(count)))
    return writers


# -- orchestration --------------------------------------------------------------------------


@dataclass
class Figures:
    connects_per_s: float = 0.0
    connect_cpu_per_s: float = 0.0
    publishes_per_s: float = 0.0
    publish_cpu_per_s: float = 0.0
    idle_bytes_per_connection: float = 0.0


def measure_rates(
    brokers: list[Broker], clients: Clients, args: argparse.Namespace,
    loop: asyncio.AbstractEventLoop,
) -> dict[str, Figures]:  # fmt: skip
    """Alternate the brokers for ``--rounds`` rounds; keep each one's best round.

    Both brokers stay up (idle while the other is measured), so a burst of load from
    elsewhere on the machine hits one round, not one broker.
    """
    best = {broker.name: Figures() for broker in brokers}
    for broker in brokers:  # warm up: TLS contexts, device caches
        loop.run_until_complete(connect_rate(clients, broker.port, 0.5, args.concurrency))
    for round_ in range(args.rounds):
        for broker in brokers:
            cpu, started = broker.cpu_seconds(), time.monotonic()
            rate = loop.run_until_complete(
                connect_rate(clients, broker.port, args.seconds, args.concurrency)
            )  # the workers finish their last cycle after the deadline: divide by the real time
            cores = (broker.cpu_seconds() - cpu) / (time.monotonic() - started)
            cpu, started = broker.cpu_seconds(), time.monotonic()
            publishes = loop.run_until_complete(
                publish_rate(clients, broker.port, args.seconds, args.publishers, args.window)
            )
            pub_cores = (broker.cpu_seconds() - cpu) / (time.monotonic() - started)
            figures = best[broker.name]
            if rate > figures.connects_per_s:
                figures.connects_per_s, figures.connect_cpu_per_s = rate, cores
            if publishes > figures.publishes_per_s:
                figures.publishes_per_s, figures.publish_cpu_per_s = publishes, pub_cores
            print(f"  round {round_ + 1} {broker.name}: {rate:,.0f} connects/s "
                  f"({1000 * cores / max(rate, 1e-9):.2f} ms broker CPU each), "
                  f"{publishes:,.0f} QoS 1 publishes/s "
                  f"({1e6 * pub_cores / max(publishes, 1e-9):.1f} us each)",
                  flush=True)  # fmt: skip
    return best


def measure_idle(
    name: str, start: contextlib.AbstractContextManager[Broker], clients: Clients,
    count: int, loop: asyncio.AbstractEventLoop,
) -> float:  # fmt: skip
    with start as broker:
        warm = loop.run_until_complete(idle_connections(clients, broker.port, 50))
        for writer in warm:
            writer.close()
        time.sleep(1.0)
        before = broker.rss()
        writers = loop.run_until_complete(idle_connections(clients, broker.port, count))
        time.sleep(2.0)
        after = broker.rss()
        for writer in writers:
            writer.transport.abort()
    per = (after - before) / count
    print(f"  {name}: {count} idle connections, RSS +{(after - before) / KiB / KiB:.1f} MiB "
          f"= {per / KiB:.1f} KiB each", flush=True)  # fmt: skip
    return per


def report(certhub: Figures, mosquitto: Figures) -> None:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "n/a"

    rows = [
        ("mutual-TLS CONNECT->CONNACK /s", certhub.connects_per_s, mosquitto.connects_per_s,
         ">= 0.8x"),
        ("QoS 1 telemetry msgs /s", certhub.publishes_per_s, mosquitto.publishes_per_s, ">= 0.5x"),
    ]  # fmt: skip
    print()
    print(f"{'':34} {'certhub':>12} {'mosquitto':>12} {'ratio':>8}  target")
    for label, ours, theirs, target in rows:
        print(f"{label:34} {ours:>12,.0f} {theirs:>12,.0f} {ratio(ours, theirs):>8}  {target}")
    ours_ms = 1000 * certhub.connect_cpu_per_s / max(certhub.connects_per_s, 1e-9)
    theirs_ms = 1000 * mosquitto.connect_cpu_per_s / max(mosquitto.connects_per_s, 1e-9)
    print(f"{'broker CPU per connect (ms)':34} {ours_ms:>12.2f} {theirs_ms:>12.2f} "
          f"{ratio(ours_ms, theirs_ms):>8}  (lower is better)")  # fmt: skip
    ours_us = 1e6 * certhub.publish_cpu_per_s / max(certhub.publishes_per_s, 1e-9)
    theirs_us = 1e6 * mosquitto.publish_cpu_per_s / max(mosquitto.publishes_per_s, 1e-9)
    print(f"{'broker CPU per QoS 1 message (us)':34} {ours_us:>12.1f} {theirs_us:>12.1f} "
          f"{ratio(ours_us, theirs_us):>8}  (lower is better)")  # fmt: skip
    ours_kib = certhub.idle_bytes_per_connection / KiB
    theirs_kib = mosquitto.idle_bytes_per_connection / KiB
    print(f"{'idle connection memory (KiB)':34} {ours_kib:>12.1f} {theirs_kib:>12.1f} "
          f"{ratio(ours_kib, theirs_kib):>8}  <= 64 KiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--serve", nargs=3, metavar=("DATA_DIR", "PORT", "THREADS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--idle", type=int, default=5000, help="idle connections (5000)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per rate measurement (4)")
    parser.add_argument("--concurrency", type=int, default=64, help="connecting workers (64)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--publishers", type=int, default=4, help="publishing connections (4)")
    parser.add_argument("--window", type=int, default=200, help="QoS 1 in flight each (200)")
    parser.add_argument(
        "--handshake-threads",
        type=int,
        default=1,
        help="certhub's TLS handshake threads (1; 0: on the event loop)",
    )
    args = parser.parse_args()
    global HANDSHAKE_THREADS
    HANDSHAKE_THREADS = args.handshake_threads
    if args.serve:
        serve(*args.serve)
        return
    if not MOSQUITTO.exists():
        raise SystemExit(f"{MOSQUITTO} is needed for the side-by-side figures")
    raise_nofile()
    root = Path(tempfile.mkdtemp(prefix="certhub-bench-"))
    loop = new_event_loop()
    try:
        count = max(args.idle, args.concurrency, args.publishers) + 50
        print(f"preparing {count} devices with certificates ...", flush=True)
        fixture = prepare(root, count)
        clients = Clients(fixture)
        print(f"rates, best of {args.rounds} alternating rounds ({args.seconds:.0f} s each, "
              f"{args.concurrency} connecting workers, {args.publishers} publishers x "
              f"{args.window} in flight):", flush=True)  # fmt: skip
        with certhub_broker(fixture) as ours_broker, mosquitto_broker(fixture, root) as theirs_b:
            best = measure_rates([ours_broker, theirs_b], clients, args, loop)
        ours, theirs = best["certhub"], best["mosquitto"]
        print("idle memory (fresh broker processes):", flush=True)
        ours.idle_bytes_per_connection = measure_idle(
            "certhub", certhub_broker(fixture), clients, args.idle, loop
        )
        theirs.idle_bytes_per_connection = measure_idle(
            "mosquitto", mosquitto_broker(fixture, root), clients, args.idle, loop
        )
        report(ours, theirs)
    finally:
        loop.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
