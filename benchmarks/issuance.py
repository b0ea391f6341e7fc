"""Persisted issuance rate (CSR in → certificate row + audit event committed) versus a
raw ``cryptography`` verify-CSR + sign-certificate loop measured in the same run.

    .venv/bin/python benchmarks/issuance.py [--count 2000] [--database postgresql://…]

Target (issue "Foundation"): persisted ≥ 50% of the raw rate on SQLite. The persisted
figure is measured with 32 requests in flight through the group-commit queue (as a
server sees concurrent registrations); the one-at-a-time figure is printed beside it.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from rich.console import Console
from rich.progress import track
from rich.table import Table

from certhub.authority import CertificateAuthorityService, IssueItem
from certhub.bootstrap import initialize
from certhub.clock import SystemClock
from certhub.datadir import DataDir
from certhub.issuance_queue import IssuanceQueue
from certhub.pki import IssuedLeaf
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import NewDevice

console = Console()


def make_csrs(count: int, devices: int) -> list[tuple[str, bytes]]:
    out = []
    for i in track(range(count), description="making CSRs", console=console):
        device = f"bench-{i % devices:05d}"
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device)]))
            .sign(key, hashes.SHA256())
        )
        out.append((device, csr.public_bytes(serialization.Encoding.DER)))
    return out


def raw_loop(
    csrs: list[tuple[str, bytes]], issuer_key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate
) -> float:
    """The reference: parse + verify the CSR, build and sign the same leaf profile.

    Plain ``cryptography`` with the extensions certhub's leaves carry (basic
    constraints, key usage, EKU, SKI, AKI, CRL distribution point, a 32-byte private
    extension), so the ratio shows what certhub's validators and store add.
    """
    now = dt.datetime.now(dt.UTC)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
    ku = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    crl = x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                [x509.UniformResourceIdentifier("https://h/crl/1.crl")], None, None, None
            )
        ]
    )
    private = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.25.1"), b"\x04\x20" + b"\0" * 32)
    start = time.perf_counter()
    for device, der in csrs:
        csr = x509.load_der_x509_csr(der)
        assert csr.is_signature_valid
        pub = csr.public_key()
        exts: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(False, None), True),
            (ku, True),
            (eku, False),
            (x509.SubjectKeyIdentifier.from_public_key(pub), False),  # type: ignore[arg-type]
            (aki, False),
            (crl, False),
            (private, False),
        ]
        x509.CertificateBuilder(
            issuer_name=issuer.subject,
            subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device)]),
            public_key=pub,
            serial_number=x509.random_serial_number(),
            not_valid_before=now - dt.timedelta(minutes=5),
            not_valid_after=now + dt.timedelta(days=30),
            extensions=[x509.Extension(v.oid, c, v) for v, c in exts],
        ).sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return len(csrs) / (time.perf_counter() - start)


def persisted_loop(service: CertificateAuthorityService, csrs: list[tuple[str, bytes]]) -> float:
    """One request at a time: each waits for its own commit."""
    start = time.perf_counter()
    for device, der in csrs:
        service.issue(
            device_id=device,
            csr_der=der,
            policy_name="default",
            requested_via="api",
            actor="benchmark",
        )
    return len(csrs) / (time.perf_counter() - start)


def queued_loop(queue: IssuanceQueue, csrs: list[tuple[str, bytes]], window: int) -> float:
    """``window`` requests in flight, as when many devices register at once (group commit)."""
    start = time.perf_counter()
    pending: collections.deque[Future[IssuedLeaf]] = collections.deque()
    for device, der in csrs:
        if len(pending) >= window:
            pending.popleft().result()
        item = IssueItem(
            device_id=device,
            csr_der=der,
            policy_name="default",
            requested_via="api",
            actor="benchmark",
        )
        pending.append(queue.submit(item))
    for fut in pending:
        fut.result()
    return len(csrs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--window", type=int, default=32, help="requests in flight")
    parser.add_argument(
        "--database", default=None, help="store URL (default: SQLite in a temp dir)"
    )
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        initialize(Path(tmp), database_url=args.database)
        rng = SystemRandom()
        store = Store.open(args.database or DataDir(Path(tmp)).database_url)
        service = CertificateAuthorityService(
            store,
            clock=SystemClock(),
            rng=rng,
            passphrase=DataDir(Path(tmp)).passphrase(rng),
            crl_base_url="https://localhost:8443",
        )
        ns = service.namespace
        for i in range(args.devices):
            store.create_device(
                NewDevice(
                    device_id=f"bench-{i:05d}",
                    namespace_id=ns.id,
                    revocation_id=rng.token_bytes(32),
                ),
                service.clock.now(),
            )
        csrs = make_csrs(args.count, args.devices)
        issuer = service.issuer_for("default")
        assert isinstance(issuer.ca.private_key, ec.EllipticCurvePrivateKey)
        # Warm every path; then measure each twice and keep the best, to even out noise.
        persisted_loop(service, csrs[:50])
        rest = csrs[50:]
        quarter = len(rest) // 4
        parts = [rest[i * quarter : (i + 1) * quarter] for i in range(4)]
        raw = max(raw_loop(csrs, issuer.ca.private_key, issuer.ca.certificate) for _ in range(2))
        sequential = max(persisted_loop(service, parts[0]), persisted_loop(service, parts[1]))
        queue = IssuanceQueue(service)
        queued = max(
            queued_loop(queue, parts[2], args.window), queued_loop(queue, parts[3], args.window)
        )
        queue.close()
        recorded = len(store.list_certificates(limit=100_000))
        store_kind = store.dialect_name
        store.close()

    table = Table(title=f"issuance ({store_kind}, P-256 issuing CA, {args.count} CSRs)")
    table.add_column("path")
    table.add_column("per second", justify="right")
    table.add_column("µs each", justify="right")
    rows = [
        ("raw cryptography (verify CSR + sign)", raw),
        ("certhub persisted, one at a time", sequential),
        (f"certhub persisted, {args.window} in flight (group commit)", queued),
    ]
    for label, rate in rows:
        table.add_row(label, f"{rate:,.0f}", f"{1e6 / rate:,.0f}")
    console.print(table)
    console.print(f"certificates recorded: {recorded:,}")
    ratio = queued / raw
    verdict = "meets" if ratio >= 0.5 else "MISSES"
    console.print(f"ratio persisted/raw = [bold]{ratio:.2f}[/] ({verdict} the 0.50 target)")
    result = {
        "store": store_kind,
        "raw_per_s": raw,
        "sequential_per_s": sequential,
        "persisted_per_s": queued,
        "window": args.window,
        "ratio": ratio,
        "machine": platform.platform(),
        "cores": os.cpu_count(),
        "date": dt.date.today().isoformat(),
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
