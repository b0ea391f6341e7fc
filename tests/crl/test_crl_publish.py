"""Building and publishing CRLs, and OCSP answers, against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from certhub.authority import CertificateAuthorityService
from certhub.bootstrap import initialize
from certhub.clock import FixedClock
from certhub.pki import CaKeyPair, create_root_ca
from certhub.pki.crl import (
    RevokedEntry,
    build_crl,
    build_crl_with_builder,
    crl_der_to_pem,
    reason_flag,
)
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import CaRecord
from certhub.service.pki_http import CrlRefresher, CrlSettings, PkiPublisher, crl_base_url
from serverkit import create_device, issue_certificate, make_key_and_csr, open_authority

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class Setup:
    store: Store
    authority: CertificateAuthorityService
    publisher: PkiPublisher
    clock: FixedClock
    issuer: CaRecord
    root: CaRecord


@pytest.fixture
def setup(db_url: str, tmp_path: Path) -> Iterator[Setup]:
    initialize(tmp_path / "data", database_url=db_url, development=True)
    clock = FixedClock(NOW)
    with Store.open(db_url) as store:
        authority = open_authority(tmp_path / "data", store, clock)
        ns = store.get_namespace("default")
        assert ns is not None
        [root] = store.list_cas(ns.id, kind="root")
        [issuer] = store.list_cas(ns.id, kind="issuing")
        publisher = PkiPublisher(
            store, authority, clock=clock, settings=CrlSettings(recheck_seconds=0)
        )
        yield Setup(store, authority, publisher, clock, issuer, root)


def _issue(s: Setup, device_id: str) -> x509.Certificate:
    create_device(s.store, device_id)
    _, csr = make_key_and_csr(device_id)
    return issue_certificate(s.authority, device_id, csr).certificate


def _revoke(s: Setup, device_id: str, reason: str = "keyCompromise") -> None:
    s.store.revoke_device(
        device_id, SystemRandom().token_bytes(32), now=s.clock.now(), actor="t", reason=reason
    )


def _load(der: bytes | None) -> x509.CertificateRevocationList:
    assert der is not None
    return x509.load_der_x509_crl(der)


# -- publishing ---------------------------------------------------------------------------


def test_publish_numbers_and_skips_when_current(setup: Setup) -> None:
    s = setup
    first = s.publisher.publish(s.issuer)
    assert first.number == 1 and len(_load(first.der)) == 0
    assert s.publisher.publish(s.issuer).number == 1  # nothing changed: same CRL
    cert = _issue(s, "dev-1")
    _revoke(s, "dev-1")
    second = s.publisher.current_crl(s.issuer.id)
    assert second is not None and second.number == 2
    crl = _load(second.der)
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert s.publisher.publish(s.issuer, force=True).number == 3


def test_regenerated_before_next_update(setup: Setup) -> None:
    s = setup
    assert sorted(s.publisher.refresh_all()) == [s.root.id, s.issuer.id]  # first CRLs
    first = s.publisher.publish(s.issuer)
    s.clock.advance(dt.timedelta(hours=17))  # 24 h validity, rebuilt in the last 6 h
    assert s.publisher.refresh_all() == []
    assert s.publisher.current_crl(s.issuer.id).number == first.number  # type: ignore[union-attr]
    s.clock.advance(dt.timedelta(hours=1, seconds=1))
    assert sorted(s.publisher.refresh_all()) == [s.root.id, s.issuer.id]
    latest = s.store.get_crl(s.issuer.id)
    assert latest is not None and latest.number == first.number + 1
    assert latest.next_update == s.clock.now() + dt.timedelta(hours=24)


def test_concurrent_publishers_never_reuse_a_number(setup: Setup) -> None:
    s = setup
    now_only = CrlSettings(recheck_seconds=0)
    others = [PkiPublisher(s.store, s.authority, clock=s.clock, settings=now_only) for _ in "abcd"]
    numbers: list[int] = []

    def publish(p: PkiPublisher) -> None:
        for _ in range(3):
            numbers.append(p.publish(s.issuer, force=True).number)

    threads = [threading.Thread(target=publish, args=(p,)) for p in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = s.store.get_crl(s.issuer.id)
    assert stored is not None
    assert stored.number == max(numbers) and stored.number >= 3
    assert (
        _load(stored.der).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        == stored.number
    )


def test_root_crl_lists_revoked_issuing_ca(setup: Setup) -> None:
    s = setup
    assert len(_load(s.publisher.publish(s.root).der)) == 0
    s.store.set_ca_state(s.issuer.id, "revoked", s.clock.now())
    crl = _load(s.publisher.current_crl(s.root.id).der)  # type: ignore[union-attr]
    [entry] = list(crl)
    assert entry.serial_number == int(s.issuer.serial_hex, 16)


def test_downloads_are_served_from_memory_between_rechecks(setup: Setup) -> None:
    s = setup
    cached = PkiPublisher(
        s.store, s.authority, clock=s.clock, settings=CrlSettings(recheck_seconds=60)
    )
    first = cached.current_crl(s.issuer.id)
    _issue(s, "dev-m")
    _revoke(s, "dev-m")
    assert cached.current_crl(s.issuer.id) is first  # within the recheck window
    assert s.publisher.current_crl(s.issuer.id).number == first.number + 1  # type: ignore[union-attr]


def test_no_crl_for_server_certificates_or_unknown_ids(setup: Setup) -> None:
    s = setup
    ns = s.store.get_namespace("default")
    assert ns is not None
    [server] = s.store.list_cas(ns.id, kind="server")
    assert s.publisher.current_crl(server.id) is None
    assert s.publisher.current_crl(999_999) is None


def test_expired_revocations_leave_the_crl_after_one_more_crl(setup: Setup) -> None:
    s = setup
    cert = _issue(s, "dev-old")
    _revoke(s, "dev-old")
    assert len(_load(s.publisher.current_crl(s.issuer.id).der)) == 1  # type: ignore[union-attr]
    past_expiry = cert.not_valid_after_utc + dt.timedelta(hours=1)
    s.clock.set(past_expiry)
    assert len(_load(s.publisher.publish(s.issuer, force=True).der)) == 1
    s.clock.set(past_expiry + dt.timedelta(hours=24))
    assert len(_load(s.publisher.publish(s.issuer, force=True).der)) == 0


# -- OCSP ---------------------------------------------------------------------------------


def _ask(s: Setup, cert: x509.Certificate, issuer_pem: str) -> ocsp.OCSPResponse:
    issuer = x509.load_pem_x509_certificate(issuer_pem.encode())
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build()
    der = s.publisher.ocsp_response(request.public_bytes(serialization.Encoding.DER))
    return ocsp.load_der_ocsp_response(der)


def test_ocsp_leaf_good_then_revoked(setup: Setup) -> None:
    s = setup
    cert = _issue(s, "dev-o")
    good = _ask(s, cert, s.issuer.cert_pem)
    assert good.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert good.next_update_utc == s.clock.now() + dt.timedelta(hours=1)
    _revoke(s, "dev-o", reason="cessation of operation")
    revoked = _ask(s, cert, s.issuer.cert_pem)
    assert revoked.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason is x509.ReasonFlags.cessation_of_operation
    assert revoked.revocation_time_utc == s.clock.now()


def test_ocsp_issuing_ca_status_from_the_root(setup: Setup) -> None:
    s = setup
    ica = x509.load_pem_x509_certificate(s.issuer.cert_pem.encode())
    assert _ask(s, ica, s.root.cert_pem).certificate_status is ocsp.OCSPCertStatus.GOOD
    s.store.set_ca_state(s.issuer.id, "revoked", s.clock.now())
    answer = _ask(s, ica, s.root.cert_pem)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    root = x509.load_pem_x509_certificate(s.root.cert_pem.encode())
    assert (
        answer.responder_key_hash
        == x509.SubjectKeyIdentifier.from_public_key(root.public_key()).digest
    )


# -- pure pieces ----------------------------------------------------------------------------


def _ca() -> CaKeyPair:
    return create_root_ca(common_name="test CA", clock=FixedClock(NOW), rng=SystemRandom())


def test_build_crl_fields_and_signature() -> None:
    ca = _ca()
    entries = [
        RevokedEntry(5, NOW, x509.ReasonFlags.key_compromise),
        RevokedEntry(7, NOW, None),
        RevokedEntry(9, NOW, x509.ReasonFlags.unspecified),
    ]
    der = build_crl(ca, entries, number=42, this_update=NOW, next_update=NOW + dt.timedelta(1))
    crl = x509.load_der_x509_crl(der)
    public = ca.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and crl.is_signature_valid(public)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    reasons = {e.serial_number: [x.value for x in e.extensions] for e in crl}
    assert reasons == {5: [x509.CRLReason(x509.ReasonFlags.key_compromise)], 7: [], 9: []}
    assert crl_der_to_pem(der) == crl.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("number", "next_offset", "message"),
    [
        pytest.param(0, dt.timedelta(hours=1), "positive", id="reject/number-zero"),
        pytest.param(1, dt.timedelta(0), "this_update < next_update", id="reject/empty-window"),
    ],
)
def test_build_crl_refusals(number: int, next_offset: dt.timedelta, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_crl(_ca(), [], number=number, this_update=NOW, next_update=NOW + next_offset)


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("keyCompromise", x509.ReasonFlags.key_compromise),
        ("Key compromise", x509.ReasonFlags.key_compromise),
        ("superseded", x509.ReasonFlags.superseded),
        ("cessation_of_operation", x509.ReasonFlags.cessation_of_operation),
        ("caCompromise", x509.ReasonFlags.ca_compromise),
        ("lost in transit", None),
        (None, None),
    ],
)
def test_reason_flag(text: str | None, flag: x509.ReasonFlags | None) -> None:
    assert reason_flag(text) is flag


@pytest.mark.parametrize(
    ("configured", "port", "expected"),
    [
        ("https://pki.example.com/", 8443, "https://pki.example.com"),
        (None, 8443, "https://hub.local:8443"),
        (None, 0, None),
        (None, None, None),
    ],
)
def test_crl_base_url(configured: str | None, port: int | None, expected: str | None) -> None:
    assert crl_base_url(configured, "hub.local", port) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"renew_margin": dt.timedelta(hours=25)}, id="reject/margin-too-large"),
        pytest.param({"ocsp_validity": dt.timedelta(0)}, id="reject/ocsp-validity-zero"),
        pytest.param({"refresh_interval": 0}, id="reject/interval-zero"),
        pytest.param({"recheck_seconds": -1}, id="reject/recheck-negative"),
    ],
)
def test_crl_settings_refusals(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"expected|must be positive|must not be negative"):
        CrlSettings(**kwargs)  # type: ignore[arg-type]


def test_der_assembly_matches_cryptography_builder() -> None:
    """The spliced TBSCertList is byte for byte the one cryptography's builder makes."""
    ca = _ca()
    flags = [x509.ReasonFlags.key_compromise, None, x509.ReasonFlags.aa_compromise]
    entries = [
        RevokedEntry((1 << 158) + i, NOW - dt.timedelta(seconds=i), flags[i % 3])
        for i in range(300)
    ]
    entries += [
        RevokedEntry(1, dt.datetime(2051, 1, 1, tzinfo=dt.UTC)),  # GeneralizedTime
        RevokedEntry(0x80, NOW, x509.ReasonFlags.certificate_hold),  # leading zero byte
    ]
    window = {"number": 3, "this_update": NOW, "next_update": NOW + dt.timedelta(hours=1)}
    fast = x509.load_der_x509_crl(build_crl(ca, entries, **window))  # type: ignore[arg-type]
    slow = x509.load_der_x509_crl(
        build_crl_with_builder(ca, entries, **window)  # type: ignore[arg-type]
    )
    assert fast.tbs_certlist_bytes == slow.tbs_certlist_bytes
    public = ca.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and fast.is_signature_valid(public)


@pytest.mark.parametrize(
    "serial",
    [
        pytest.param(0, id="reject/serial-zero"),
        pytest.param(-5, id="reject/serial-negative"),
        pytest.param(1 << 159, id="reject/serial-160-bits"),
    ],
)
def test_build_crl_refuses_bad_serials(serial: int) -> None:
    with pytest.raises(ValueError, match="positive serial of <= 159 bits"):
        build_crl(
            _ca(),
            [RevokedEntry(serial, NOW)],
            number=1,
            this_update=NOW,
            next_update=NOW + dt.timedelta(hours=1),
        )


# -- the refresher ----------------------------------------------------------------------------


@dataclass
class _Event:
    kind: str


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def test_refresher_runs_on_schedule_and_on_revocation_events(setup: Setup) -> None:
    s = setup

    async def scenario() -> None:
        refresher = CrlRefresher(s.publisher, _in_thread)
        stop = asyncio.Event()
        task = asyncio.create_task(refresher.run(stop))
        while refresher.passes == 0:
            await asyncio.sleep(0.01)
        first = s.store.get_crl(s.issuer.id, with_der=False)
        assert first is not None and s.store.get_crl(s.root.id, with_der=False) is not None
        await asyncio.to_thread(_issue, s, "dev-ev")
        await asyncio.to_thread(_revoke, s, "dev-ev")
        refresher.on_events([_Event("twin.desired")])  # not a revocation: no pass
        assert refresher._task is None
        refresher.on_events([_Event("certificate.revoked")])
        await refresher.stop()
        after = s.store.get_crl(s.issuer.id, with_der=False)
        assert after is not None and after.number == first.number + 1
        stop.set()
        await task

    asyncio.run(scenario())


def test_crl_settings_from_store(setup: Setup) -> None:
    s = setup
    assert CrlSettings.from_store(s.store) == CrlSettings()
    s.store.set_setting("crl_validity", "4h")
    s.store.set_setting("ocsp_validity", "10m")
    loaded = CrlSettings.from_store(s.store)
    assert loaded.crl_validity == dt.timedelta(hours=4)
    assert loaded.renew_margin == dt.timedelta(hours=1)
    assert loaded.ocsp_validity == dt.timedelta(minutes=10)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"crl_validity": "soon"}, "setting crl_validity='soon'", id="reject/syntax"),
        pytest.param(
            {"crl_validity": "2h", "crl_renew_margin": "3h"},
            "renew_margin < crl_validity",
            id="reject/margin-over-validity",
        ),
    ],
)
def test_crl_settings_from_store_refusals(
    sqlite_url: str, settings: dict[str, str], message: str
) -> None:
    with Store.open(sqlite_url) as store:
        for key, value in settings.items():
            store.set_setting(key, value)
        with pytest.raises(ValueError, match=message):
            CrlSettings.from_store(store)
