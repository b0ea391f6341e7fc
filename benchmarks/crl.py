"""CRL benchmark: publish the CRL of an issuing CA with 100,000 revoked certificates.

    .venv/bin/python benchmarks/crl.py [--count 100000] [--database URL] [--no-openssl]

* **certhub** — :meth:`certhub.service.pki_http.PkiPublisher.publish` on a store holding
  ``--count`` revoked certificates of one issuing CA (SQLite in a temporary data directory
  unless ``--database``): the fingerprint and the entries in two queries, the CRL built in
  one go and signed (ECDSA P-256), the DER stored in the registry. Also timed apart: the
  read, the build + sign, and a download that re-checks the store (metadata + the
  fingerprint aggregate; within ``recheck_seconds`` a download is served from memory).
* **raw cryptography** — the same serials and reasons straight into
  ``CertificateRevocationListBuilder(revoked_certificates=[...])`` and signed: the floor
  for any CRL built with ``cryptography``.
* **openssl ca -gencrl** — ``openssl ca`` over an ``index.txt`` of the same entries.

Target (issue 8): certhub under 5 s for 100,000 entries. Ratios are against the references
measured in the same run (the machine is shared; absolute numbers drift).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certhub.authority import CertificateAuthorityService
from certhub.bootstrap import initialize
from certhub.clock import SystemClock
from certhub.datadir import DataDir
from certhub.pki import CaKeyPair
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import CaRecord
from certhub.registry.schema import certificates
from certhub.service.pki_http import CrlSettings, PkiPublisher

REASONS = ("keyCompromise", "superseded", "cessationOfOperation", "lost in transit")


def _fill(store: Store, ca: CaRecord, count: int, now: dt.datetime) -> list[int]:
    """Insert ``count`` revoked certificates of ``ca`` (untimed setup)."""
    rng = SystemRandom()
    serials = [int.from_bytes(rng.token_bytes(16), "big") >> 1 for _ in range(count)]
    rows = [
        {
            "serial_hex": format(serial, "032x"),
            "device_id": f"bench-{i}",
            "policy_id": ca.policy_id,
            "issuer_ca_id": ca.id,
            "not_before": now - dt.timedelta(days=1),
            "not_after": now + dt.timedelta(days=30),
            "sha256": format(serial, "064x"),
            "sha1": format(serial, "040x"),
            "public_key_sha256": format(serial, "064x"),
            "key_type": "p256",
            "revocation_id": serial.to_bytes(32, "big"),
            "requested_via": "cli",
            "state": "revoked",
            "revoked_at": now - dt.timedelta(seconds=i),
            "revocation_reason": REASONS[i % len(REASONS)],
            "cert_der": b"-",
            "created_at": now - dt.timedelta(days=1),
        }
        for i, serial in enumerate(serials)
    ]
    with store.transaction() as conn:
        for start in range(0, count, 10_000):
            conn.execute(sa.insert(certificates), rows[start : start + 10_000])
    return serials


def _timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def _raw_cryptography(pair: CaKeyPair, serials: list[int], now: dt.datetime) -> float:
    start = time.perf_counter()
    reasons = [x509.ReasonFlags.key_compromise, x509.ReasonFlags.superseded]
    revoked = [
        x509.RevokedCertificateBuilder()
        .serial_number(serial)
        .revocation_date(now)
        .add_extension(x509.CRLReason(reasons[i % 2]), critical=False)
        .build()
        for i, serial in enumerate(serials)
    ]
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=pair.certificate.subject,
        last_update=now,
        next_update=now + dt.timedelta(days=1),
        revoked_certificates=revoked,
    ).add_extension(x509.CRLNumber(1), critical=False)
    builder.sign(pair.private_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return time.perf_counter() - start


def _openssl_ca(pair: CaKeyPair, serials: list[int], now: dt.datetime, work: Path) -> float:
    (work / "ca.pem").write_bytes(pair.certificate.public_bytes(serialization.Encoding.PEM))
    (work / "ca.key").write_bytes(
        pair.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    expiry = (now + dt.timedelta(days=30)).strftime("%y%m%d%H%M%SZ")
    revoked = now.strftime("%y%m%d%H%M%SZ")
    with (work / "index.txt").open("w") as index:
        for i, serial in enumerate(serials):
            reason = ",keyCompromise" if i % 2 == 0 else ",superseded"
            index.write(f"R\t{expiry}\t{revoked}{reason}\t{serial:032X}\tunknown\t/CN=bench-{i}\n")
    (work / "crlnumber").write_text("01\n")
    (work / "openssl.cnf").write_text(
        "[ca]\ndefault_ca = bench\n[bench]\n"
        f"database = {work}/index.txt\ncrlnumber = {work}/crlnumber\n"
        f"certificate = {work}/ca.pem\nprivate_key = {work}/ca.key\n"
        "default_md = sha256\ndefault_crl_days = 1\nunique_subject = no\n"
    )
    start = time.perf_counter()
    subprocess.run(
        [
            "openssl",
            "ca",
            "-gencrl",
            "-config",
            str(work / "openssl.cnf"),
            "-out",
            str(work / "crl.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--database", default=None, help="store URL (default: SQLite)")
    parser.add_argument("--no-openssl", action="store_true", help="skip openssl ca -gencrl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng, clock = SystemRandom(), SystemClock()
        initialize(work / "data", database_url=args.database, rng=rng)
        dd = DataDir(work / "data")
        with Store.open(args.database or dd.database_url) as store:
            authority = CertificateAuthorityService(
                store, clock=clock, rng=rng, passphrase=dd.passphrase(rng)
            )
            ns = store.get_namespace("default")
            assert ns is not None
            [ca] = store.list_cas(ns.id, kind="issuing")
            now = clock.now().replace(microsecond=0)
            fill, serials = _timed(_fill, store, ca, args.count, now)
            publisher = PkiPublisher(store, authority, clock=clock)
            pair = authority.ca_pair(ca)
            read, (_, rows) = _timed(publisher._entries, ca)
            build, _ = _timed(publisher._sign, ca, rows, 1, "-")
            total, crl = _timed(publisher.publish, ca, force=True)
            fresh = PkiPublisher(
                store, authority, clock=clock, settings=CrlSettings(recheck_seconds=0)
            )
            fresh.current_crl(ca.id)  # loads the DER into this process once
            serve, _ = _timed(fresh.current_crl, ca.id)
            raw = _raw_cryptography(pair, serials, now)
            gencrl = None if args.no_openssl else _openssl_ca(pair, serials, now, work)
        store_name = "SQLite" if args.database is None else "PostgreSQL"
        print(
            f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
            f"{dt.date.today()}, {store_name}, {args.count:,} revoked (setup {fill:.1f} s)"
        )
        print(f"certhub publish    {total:6.2f} s  (CRL #{crl.number}, {len(crl.der):,} bytes)")
        print(f"  read entries     {read:6.2f} s")
        print(f"  build + sign     {build:6.2f} s  build/raw = {build / raw:.2f}")
        print(f"  serve, checked   {serve:6.3f} s  (a download re-checking the store)")
        print(f"raw cryptography   {raw:6.2f} s  certhub/raw = {total / raw:.2f}")
        if gencrl is not None:
            print(f"openssl ca -gencrl {gencrl:6.2f} s  certhub/openssl = {total / gencrl:.2f}")
        verdict = "met" if total < 5 else "missed"
        print(f"target < 5 s: {verdict}")


if __name__ == "__main__":
    main()
