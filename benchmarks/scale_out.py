"""Scale-out benchmark: connect rate and renewals per second with 1, 2 and 4 worker processes.

    .venv/bin/python benchmarks/scale_out.py [--workers 1,2,4] [--seconds 4] [--devices 200]

``certhub serve --workers N --database postgresql://…`` runs as in production (N processes
sharing the MQTT port with ``SO_REUSEPORT`` under the supervisor; N=1 is one process) on
a temporary database of the PostgreSQL at 127.0.0.1:5432 (``CERTHUB_TEST_PG`` to change).
For each N, after a one-second warm-up:

1. **connect rate** — ``--generators`` load processes (default 2), ``--concurrency``
   connections each, CONNECT->CONNACK->DISCONNECT over fresh mutual-TLS connections
   (TLS 1.2, no tickets: every connect is a full handshake), cycles per second;
2. **renewals/s** — ``--renewers`` connected devices renew back to back (a pre-made CSR
   per request) through ``$iothub/credentials/POST/issueCertificate``; 200s per second.

The machine's core count is printed with the figures and the ratio of each N to N=1
measured in the same run. Load generators, PostgreSQL and the workers share the cores,
so the ratios show what one machine gains, not what separate machines would.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))

import hub as hub_bench
import renewal as renewal_bench
from certhub.app import new_event_loop
from certhub.authority import CertificateAuthorityService
from certhub.bootstrap import initialize
from certhub.clock import SystemClock
from certhub.cluster import NodeRegistry
from certhub.datadir import DataDir
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import NewDevice

HOST = "127.0.0.1"
ADMIN = os.environ.get("CERTHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


# -- setup ------------------------------------------------------------------------------------


@contextlib.contextmanager
def temporary_database() -> Iterator[str]:
    name = "certhub_scale_" + secrets.token_hex(5)
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare(root: Path, url: str, count: int) -> hub_bench.Fixture:
    """An initialised data directory on ``url`` with ``count`` devices and certificates."""
    data_dir = root / "data"
    init = initialize(data_dir, database_url=url, development=True)
    dd = DataDir(data_dir)
    pems = root / "devices"
    pems.mkdir()
    rng, now = SystemRandom(), dt.datetime.now(dt.UTC)
    devices: list[tuple[str, Path, Path]] = []
    with Store.open(url) as store:
        ns = store.get_namespace("default")
        assert ns is not None
        authority = CertificateAuthorityService(
            store, clock=SystemClock(), rng=rng, passphrase=dd.passphrase(rng)
        )
        with store.transaction() as conn:
            for i in range(count):
                device_id = f"scale-{i}"
                new = NewDevice(
                    device_id=device_id,
                    namespace_id=ns.id,
                    revocation_id=rng.token_bytes(32),
                    policy_name="default",
                )
                store.create_device(new, now, conn=conn)
                devices.append(hub_bench._issue(authority, device_id, pems, conn))
    return hub_bench.Fixture(
        data_dir, Path(init.trust_anchor), dd.server_cert_path, dd.server_key_path,
        dd.server_cert_path, devices, init.hub_host,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def cluster(fixture: hub_bench.Fixture, url: str, workers: int, log: Path) -> Iterator[int]:
    """``certhub serve --workers N`` until the block ends; yields the MQTT port."""
    port = free_port()
    command = [sys.executable, "-m", "certhub.cli", "serve", "--data-dir", str(fixture.data_dir)]
    command += ["--database", url, "--workers", str(workers), "--node-name", "bench"]
    command += ["--mqtt-port", str(port), "--https-port", str(free_port())]
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, workers, process, log)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_ready(url: str, workers: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    with Store.open(url) as store:
        registry = NodeRegistry(store.engine)
        while True:
            live = registry.live(dt.datetime.now(dt.UTC), dt.timedelta(seconds=5))
            if len(live) >= workers:
                time.sleep(0.5)  # the listeners bind right after registering
                return
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"certhub serve did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)


# -- load -------------------------------------------------------------------------------------


def connect_generator(
    fixture: hub_bench.Fixture, port: int, seconds: float, indices: list[int]
) -> int:
    """One load process: connect cycles with one connection per device index; the count."""
    clients = hub_bench.Clients(fixture)

    async def run() -> int:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + seconds
        done = 0

        async def worker(index: int) -> None:
            nonlocal done
            context, connect = clients.fast_context(index), clients.connect_bytes(index)
            while time.monotonic() < deadline:
                accepted: asyncio.Future[bool] = loop.create_future()
                factory = functools.partial(hub_bench._Cycle, connect, accepted)
                await loop.create_connection(factory, HOST, port, ssl=context)
                if not await accepted:
                    raise RuntimeError(f"device {index} was refused")
                done += 1

        await asyncio.gather(*(worker(i) for i in indices))
        return done

    loop = new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


def connect_rate(
    pool: concurrent.futures.Executor,
    fixture: hub_bench.Fixture,
    port: int,
    seconds: float,
    generators: int,
    concurrency: int,
) -> float:
    shares = [list(range(g * concurrency, (g + 1) * concurrency)) for g in range(generators)]
    started = time.monotonic()
    futures = [pool.submit(connect_generator, fixture, port, seconds, s) for s in shares]
    total = sum(f.result() for f in futures)
    return total / max(seconds, time.monotonic() - started - 0.2)


def renewal_rate(fixture: hub_bench.Fixture, url: str, port: int, seconds: float, n: int) -> float:
    devices = fixture.devices[-n:]
    target = renewal_bench.Fixture(fixture.data_dir, url, fixture.hub_host, devices)
    loop = new_event_loop()
    try:
        per_device = int(seconds * 200 / n) + 8
        connected = loop.run_until_complete(renewal_bench.connect_all(target, port, per_device))
        loop.run_until_complete(renewal_bench.closed_loop(connected, 1.0))  # warm up
        rate, _ = loop.run_until_complete(renewal_bench.closed_loop(connected, seconds))
        for device in connected:
            if device.transport is not None:
                device.transport.close()
        loop.run_until_complete(asyncio.sleep(0.2))
        return rate
    finally:
        loop.close()


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts (1,2,4)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement (4)")
    parser.add_argument("--devices", type=int, default=120, help="devices prepared (120)")
    parser.add_argument("--generators", type=int, default=2, help="connect load processes (2)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections each (16)")
    parser.add_argument("--renewers", type=int, default=64, help="renewing devices (64)")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    need = max(args.generators * args.concurrency, args.renewers)
    root = Path(tempfile.mkdtemp(prefix="certhub-scale-bench-"))
    hub_bench.raise_nofile()
    results: dict[int, dict[str, float]] = {}
    spawn = concurrent.futures.ProcessPoolExecutor(args.generators)
    with temporary_database() as url, spawn as pool:
        print(f"preparing {max(need, args.devices)} devices on PostgreSQL ...", flush=True)
        fixture = prepare(root, url, max(need, args.devices))
        for n in counts:
            with cluster(fixture, url, n, root / f"serve-{n}.log") as port:
                connect_rate(pool, fixture, port, 1.0, args.generators, args.concurrency)
                connects = connect_rate(
                    pool, fixture, port, args.seconds, args.generators, args.concurrency
                )
                renewals = renewal_rate(fixture, url, port, args.seconds, args.renewers)
            results[n] = {"connects_per_s": connects, "renewals_per_s": renewals}
            print(f"  {n} worker(s): {connects:7.0f} connects/s  {renewals:6.1f} renewals/s")
    report(results, args)


def report(results: dict[int, dict[str, float]], args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    base = results[min(results)]
    print(f"\ncores: {cores} ({platform.machine()}, Python {platform.python_version()})")
    print("workers  connects/s  ratio   renewals/s  ratio")
    for n, r in sorted(results.items()):
        c_ratio = r["connects_per_s"] / base["connects_per_s"]
        r_ratio = r["renewals_per_s"] / base["renewals_per_s"]
        print(
            f"{n:7d}  {r['connects_per_s']:10.0f}  {c_ratio:4.2f}x  "
            f"{r['renewals_per_s']:10.1f}  {r_ratio:4.2f}x"
        )
    if args.json_out:
        out = {"date": dt.date.today().isoformat(), "cores": cores, "results": results}
        Path(args.json_out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
