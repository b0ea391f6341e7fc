"""Issued certificates: the issuance hot path, atomicity, lookups, states, paging."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from certhub.registry import AlreadyExists, Conflict, NotFound, Store
from certhub.registry.records import (
    AuditEvent,
    CertificateRecord,
    DeviceRecord,
    NewCertificate,
    NewDevice,
)
from certhub.registry.schema import audit_log, certificates

LATER = dt.datetime(2025, 3, 20, tzinfo=dt.UTC)
Cert = Callable[..., NewCertificate]
Event = Callable[..., AuditEvent]


def _count(store: Store, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_record_issuance_roundtrip(store: Store, new_cert: Cert, audit_event: Event) -> None:
    cert = new_cert(
        1, not_before=dt.datetime(2025, 3, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    )
    recorded = store.record_issuance(cert, audit_event(details={"serial": cert.serial_hex}))
    stored = store.get_certificate(cert.serial_hex)
    assert stored == recorded
    assert stored is not None
    assert stored.not_before == dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    assert stored.not_before.tzinfo is dt.UTC
    assert (stored.state, stored.revoked_at, stored.first_used_at) == ("issued", None, None)
    assert stored.cert_der == cert.cert_der and stored.revocation_id == cert.revocation_id
    assert store.get_certificate_by_sha256(cert.sha256) == stored
    [entry] = store.list_audit(subject_id="dev-1")
    assert (entry.action, entry.details) == ("certificate.issued", {"serial": cert.serial_hex})
    assert entry.at == cert.created_at and entry.at.tzinfo is dt.UTC
    assert store.get_certificate("ffff") is None


def test_public_key_seen(store: Store, new_cert: Cert, audit_event: Event) -> None:
    cert = new_cert(1)
    assert not store.public_key_seen("dev-1", cert.public_key_sha256)
    store.record_issuance(cert, audit_event())
    assert store.public_key_seen("dev-1", cert.public_key_sha256)
    assert not store.public_key_seen("dev-2", cert.public_key_sha256)
    assert not store.public_key_seen("dev-1", new_cert(2).public_key_sha256)


def test_seen_public_keys_matches_pairs_not_their_cross_product(
    store: Store, new_cert: Cert, audit_event: Event
) -> None:
    a, b = new_cert(1), new_cert(2, device_id="dev-2")
    store.record_issuance(a, audit_event())
    store.record_issuance(b, audit_event("dev-2"))
    ka, kb = a.public_key_sha256, b.public_key_sha256
    asked = [("dev-1", ka), ("dev-1", kb), ("dev-2", ka), ("dev-2", kb), ("dev-3", ka)]
    asked += [(f"other-{i}", f"{i:064x}") for i in range(300)]  # a batch-sized query
    assert store.seen_public_keys(asked) == {("dev-1", ka), ("dev-2", kb)}
    assert store.seen_public_keys([]) == set()


def test_record_issuance_values_match_core_types(
    store: Store, new_cert: Cert, audit_event: Event
) -> None:
    """The driver-level fast path stores exactly what Core would (compare both rows)."""
    fast = new_cert(1)
    store.record_issuance(fast, audit_event())
    core = new_cert(2)
    with store.transaction() as conn:
        conn.execute(
            sa.insert(certificates).values(
                **{f: getattr(core, f) for f in NewCertificate.__dataclass_fields__}
            )
        )
    with store.engine.connect() as conn:
        raw = {
            row.serial_hex: (row.not_after, row.created_at)
            for row in conn.execute(
                sa.select(
                    certificates.c.serial_hex,
                    sa.cast(certificates.c.not_after, sa.String).label("not_after"),
                    sa.cast(certificates.c.created_at, sa.String).label("created_at"),
                )
            )
        }
    assert raw[fast.serial_hex] == raw[core.serial_hex]
    expiring = store.list_certificates(expiring_before=fast.not_after + dt.timedelta(seconds=1))
    assert [c.serial_hex for c in expiring] == [fast.serial_hex, core.serial_hex]
    assert store.list_certificates(expiring_before=fast.not_after) == []


def test_record_issuances_writes_a_batch_in_the_transaction(
    store: Store, new_cert: Cert, audit_event: Event
) -> None:
    batch = [new_cert(i, device_id=f"dev-{i}") for i in range(11, 14)]
    with store.transaction() as conn:
        store.record_issuances([(c, audit_event(c.device_id)) for c in batch], conn=conn)
    for cert in batch:
        stored = store.get_certificate(cert.serial_hex)
        assert stored is not None and stored.device_id == cert.device_id
        assert (stored.not_after, stored.cert_der) == (cert.not_after, cert.cert_der)
        [entry] = store.list_audit(subject_id=cert.device_id)
        assert entry.action == "certificate.issued"
    with store.transaction() as conn:
        store.record_issuances([], conn=conn)  # nothing to do


def test_record_issuances_fails_whole(store: Store, new_cert: Cert, audit_event: Event) -> None:
    """A taken serial fails the batch: AlreadyExists, and none of its rows remain."""
    taken = new_cert(21, device_id="dev-21")
    store.record_issuance(taken, audit_event("dev-21"))
    fresh = new_cert(22, device_id="dev-22")
    before = (_count(store, certificates), _count(store, audit_log))
    with pytest.raises(AlreadyExists) as info, store.transaction() as conn:
        pairs = [(fresh, audit_event("dev-22")), (taken, audit_event("dev-21"))]
        store.record_issuances(pairs, conn=conn)
    assert info.value.kind == "certificate"
    assert (_count(store, certificates), _count(store, audit_log)) == before
    assert store.get_certificate(fresh.serial_hex) is None


def test_record_issuance_joins_a_transaction(
    store: Store, ns: Any, new_cert: Cert, audit_event: Event, now: dt.datetime
) -> None:
    with store.transaction() as conn:
        store.create_device(
            NewDevice(device_id="dev-9", namespace_id=ns.id, revocation_id=bytes(32)),
            now,
            conn=conn,
        )
        store.record_issuance(new_cert(9, device_id="dev-9"), audit_event("dev-9"), conn=conn)
        store.append_audit(audit_event("dev-9", action="device.created"), conn=conn)
    assert store.get_certificate(new_cert(9).serial_hex) is not None
    assert [a.action for a in store.list_audit(subject_id="dev-9")] == [
        "device.created",
        "certificate.issued",
    ]


def test_joined_transaction_rolls_back_issuance(
    store: Store, ns: Any, new_cert: Cert, audit_event: Event, now: dt.datetime
) -> None:
    with pytest.raises(AlreadyExists), store.transaction() as conn:
        store.record_issuance(new_cert(1), audit_event(), conn=conn)
        store.create_namespace(ns.name, "other-scope", now, conn=conn)
    assert store.get_certificate(new_cert(1).serial_hex) is None
    assert _count(store, audit_log) == 0


@pytest.mark.parametrize(
    ("audit", "error", "match"),
    [
        pytest.param({"action": None}, Conflict, "audit", id="reject/audit-null-action"),
        pytest.param(
            {"details": {"bad": {1, 2}}},
            TypeError,
            "not JSON serializable",
            id="reject/audit-details-not-json",
        ),
    ],
)
def test_record_issuance_is_atomic(
    store: Store,
    new_cert: Cert,
    audit_event: Event,
    audit: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match) as info:
        store.record_issuance(new_cert(1), audit_event(**audit))
    if isinstance(info.value, Conflict):
        assert (info.value.kind, info.value.reason) == ("audit", "constraint")
    assert store.get_certificate(new_cert(1).serial_hex) is None
    assert _count(store, certificates) == 0
    assert _count(store, audit_log) == 0
    # The pool connection is healthy afterwards.
    store.record_issuance(new_cert(2), audit_event())
    assert _count(store, certificates) == 1


@pytest.mark.parametrize(
    ("overrides", "error", "reason"),
    [
        pytest.param({}, AlreadyExists, None, id="reject/duplicate-serial"),
        pytest.param({"serial_hex": "ff"}, AlreadyExists, None, id="reject/duplicate-sha256"),
        pytest.param(
            {"serial_hex": "ff", "sha256": "f" * 64, "policy_id": 9999},
            Conflict,
            "missing-reference",
            id="reject/unknown-policy",
        ),
        pytest.param(
            {"serial_hex": "ff", "sha256": "f" * 64, "issuer_ca_id": 9999},
            Conflict,
            "missing-reference",
            id="reject/unknown-issuer",
        ),
    ],
)
def test_record_issuance_rejections(
    store: Store,
    new_cert: Cert,
    audit_event: Event,
    overrides: dict[str, Any],
    error: type[Exception],
    reason: str | None,
) -> None:
    store.record_issuance(new_cert(1), audit_event())
    fields = {f: getattr(new_cert(1), f) for f in NewCertificate.__dataclass_fields__}
    duplicate = NewCertificate(**{**fields, **overrides})
    with pytest.raises(error) as info:
        store.record_issuance(duplicate, audit_event())
    err: Any = info.value
    assert (err.kind, err.key) == ("certificate", duplicate.serial_hex)
    if reason:
        assert err.reason == reason
    assert _count(store, certificates) == 1
    assert _count(store, audit_log) == 1


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        pytest.param({"serial_hex": "0A"}, "serial_hex='0A'", id="reject/upper-case-serial"),
        pytest.param({"sha256": "abc"}, "sha256='abc'", id="reject/short-sha256"),
        pytest.param({"requested_via": "mqtt"}, "requested_via='mqtt'", id="reject/unknown-via"),
        pytest.param({"state": "valid"}, "state='valid'", id="reject/unknown-state"),
        pytest.param({"revocation_id": b"x"}, "revocation_id", id="reject/short-revocation-id"),
        pytest.param({"not_after": dt.datetime(2025, 1, 1)}, "not_after=", id="reject/naive"),
    ],
)
def test_new_certificate_validation(
    cert_fields: Callable[..., dict[str, Any]], overrides: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        NewCertificate(**cert_fields(1, **overrides))


def test_list_certificates_filters_and_pages(
    store: Store, new_cert: Cert, audit_event: Event, now: dt.datetime
) -> None:
    for serial in range(1, 8):
        device = "dev-a" if serial % 2 else "dev-b"
        days = serial * 10
        store.record_issuance(
            new_cert(serial, device_id=device, not_after=now + dt.timedelta(days=days)),
            audit_event(device),
        )
    store.set_certificate_state(f"{3:032x}", "revoked", LATER, reason="keyCompromise")

    def serials(found: list[CertificateRecord]) -> list[int]:
        return [int(c.serial_hex, 16) for c in found]

    assert serials(store.list_certificates()) == [1, 2, 3, 4, 5, 6, 7]
    assert serials(store.list_certificates(device_id="dev-b")) == [2, 4, 6]
    assert serials(store.list_certificates(state="revoked")) == [3]
    soon = now + dt.timedelta(days=35)
    assert serials(store.list_certificates(expiring_before=soon)) == [1, 2, 3]
    assert serials(store.list_certificates(state="issued", expiring_before=soon)) == [1, 2]
    page = store.list_certificates(limit=3)
    page2 = store.list_certificates(limit=3, after_serial=page[-1].serial_hex)
    page3 = store.list_certificates(limit=3, after_serial=page2[-1].serial_hex)
    assert serials(page + page2 + page3) == [1, 2, 3, 4, 5, 6, 7]


def test_certificate_state_changes(store: Store, new_cert: Cert, audit_event: Event) -> None:
    serial = new_cert(1).serial_hex
    store.record_issuance(new_cert(1), audit_event())
    active = store.set_certificate_state(serial, "active", LATER)
    assert (active.state, active.first_used_at) == ("active", LATER)
    again = store.set_certificate_state(serial, "active", LATER + dt.timedelta(days=1))
    assert again.first_used_at == LATER  # first use is kept
    revoked = store.set_certificate_state(serial, "revoked", LATER, reason="keyCompromise")
    assert (revoked.state, revoked.revoked_at, revoked.revocation_reason) == (
        "revoked",
        LATER,
        "keyCompromise",
    )
    same = store.set_certificate_state(serial, "revoked", LATER + dt.timedelta(days=1), "other")
    assert (same.revoked_at, same.revocation_reason) == (LATER, "keyCompromise")


@pytest.mark.parametrize(
    ("setup", "target", "error"),
    [
        pytest.param("revoked", "active", Conflict, id="reject/revoked-to-active"),
        pytest.param("revoked", "superseded", Conflict, id="reject/revoked-to-superseded"),
        pytest.param("expired", "active", Conflict, id="reject/expired-to-active"),
        pytest.param("superseded", "issued", Conflict, id="reject/back-to-issued"),
        pytest.param(None, "active", NotFound, id="reject/unknown-serial"),
    ],
)
def test_certificate_state_rejections(
    store: Store,
    new_cert: Cert,
    audit_event: Event,
    setup: str | None,
    target: Any,
    error: type[Exception],
) -> None:
    serial = new_cert(1).serial_hex if setup else "abcdef"
    store.record_issuance(new_cert(1), audit_event())
    if setup:
        store.set_certificate_state(serial, setup, LATER)  # type: ignore[arg-type]
    with pytest.raises(error) as info:
        store.set_certificate_state(serial, target, LATER)
    err: Any = info.value
    assert (err.kind, err.key) == ("certificate", serial)
    if isinstance(err, Conflict):
        assert (err.reason, err.detail) == ("invalid-transition", f"{setup}->{target}")


def test_bulk_state_changes(
    store: Store,
    new_cert: Cert,
    audit_event: Event,
    make_device: Callable[..., DeviceRecord],
    now: dt.datetime,
) -> None:
    for serial in (1, 2, 3):
        store.record_issuance(new_cert(serial), audit_event())
    store.record_issuance(
        new_cert(4, device_id="dev-2", not_after=now + dt.timedelta(days=1)), audit_event("dev-2")
    )
    keep = new_cert(3).serial_hex
    assert store.supersede_device_certificates("dev-1", keep, LATER) == [
        new_cert(1).serial_hex,
        new_cert(2).serial_hex,
    ]
    assert store.expire_certificates(now + dt.timedelta(days=2)) == [new_cert(4).serial_hex]
    revoked = store.revoke_device_certificates("dev-1", LATER, "deviceRevoked")
    assert revoked == [new_cert(s).serial_hex for s in (1, 2, 3)]
    states = {c.serial_hex: c.state for c in store.list_certificates()}
    assert sorted(states.values()) == ["expired", "revoked", "revoked", "revoked"]
    assert store.revoke_device_certificates("dev-1", LATER, "again") == []
