"""Fixtures for the registry tests: a migrated store per backend and small builders."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from certhub.rand import SeededRandom
from certhub.registry import Store
from certhub.registry.engine import create_store_engine
from certhub.registry.records import (
    AuditEvent,
    CaRecord,
    NamespaceRecord,
    NewCa,
    NewCertificate,
    NewDevice,
    PolicyRecord,
)

NOW = dt.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


def sha(text: str) -> str:
    """A lower-case hex SHA-256 of ``text`` (stands in for fingerprints)."""
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def now() -> dt.datetime:
    return NOW


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url, random=SeededRandom(7))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def ns(store: Store) -> NamespaceRecord:
    return store.create_namespace("default", "0ne00000001", NOW)


@pytest.fixture
def policy(store: Store, ns: NamespaceRecord) -> PolicyRecord:
    return store.create_policy(ns.id, "default", 30 * 86400, ["ec-p256"], 300, False, NOW)


@pytest.fixture
def make_ca(store: Store, ns: NamespaceRecord) -> Callable[..., CaRecord]:
    def make(name: str = "ica", **overrides: Any) -> CaRecord:
        fields: dict[str, Any] = {
            "namespace_id": ns.id,
            "kind": "issuing",
            "name": name,
            "cert_pem": f"-----BEGIN CERTIFICATE-----\n{name}\n-----END CERTIFICATE-----\n",
            "subject": f"CN={name}",
            "serial_hex": "0a1b",
            "sha256": sha(f"ca:{name}"),
            "not_before": NOW,
            "not_after": NOW + dt.timedelta(days=365),
            "created_at": NOW,
        }
        fields.update(overrides)
        return store.add_ca(NewCa(**fields))

    return make


@pytest.fixture
def issuing_ca(make_ca: Callable[..., CaRecord], policy: PolicyRecord) -> CaRecord:
    return make_ca(policy_id=policy.id, key_pem_encrypted=b"\x00secret")


@pytest.fixture
def make_device(store: Store, ns: NamespaceRecord) -> Callable[..., Any]:
    def make(device_id: str = "dev-1", **overrides: Any) -> Any:
        fields: dict[str, Any] = {
            "device_id": device_id,
            "namespace_id": ns.id,
            "revocation_id": bytes(range(32)),
        }
        fields.update(overrides)
        return store.create_device(NewDevice(**fields), NOW)

    return make


@pytest.fixture
def new_cert(policy: PolicyRecord, issuing_ca: CaRecord) -> Callable[..., NewCertificate]:
    def make(serial: int = 1, device_id: str = "dev-1", **overrides: Any) -> NewCertificate:
        ids = {"policy_id": policy.id, "issuer_ca_id": issuing_ca.id, "device_id": device_id}
        return NewCertificate(**certificate_fields(serial, **{**ids, **overrides}))

    return make


def issued_event(subject_id: str = "dev-1", **overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "at": NOW,
        "actor": "dps",
        "action": "certificate.issued",
        "subject_type": "device",
        "subject_id": subject_id,
        "details": {"policy": "default"},
    }
    fields.update(overrides)
    return AuditEvent(**fields)


@pytest.fixture
def audit_event() -> Callable[..., AuditEvent]:
    return issued_event


@pytest.fixture
def offline_store() -> Iterator[Store]:
    """A store over an empty in-memory database, for checks that must fail before any SQL.

    Such checks cannot differ between backends; if one did reach the database it
    would fail here with "no such table", which the test would report.
    """
    s = Store(create_store_engine("sqlite://"), SeededRandom(1))
    try:
        yield s
    finally:
        s.close()


def certificate_fields(serial: int = 1, **overrides: Any) -> dict[str, Any]:
    """Fields of a valid NewCertificate whose policy and issuer ids are 1."""
    fields: dict[str, Any] = {
        "serial_hex": f"{serial:032x}",
        "device_id": "dev-1",
        "policy_id": 1,
        "issuer_ca_id": 1,
        "not_before": NOW,
        "not_after": NOW + dt.timedelta(days=30),
        "sha256": sha(f"cert:{serial}"),
        "sha1": sha(f"cert:{serial}")[:40],
        "public_key_sha256": sha(f"key:{serial}"),
        "key_type": "ec-p256",
        "revocation_id": bytes(range(32)),
        "requested_via": "dps",
        "cert_der": b"\x30\x82" + serial.to_bytes(4, "big"),
        "created_at": NOW,
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def cert_fields() -> Callable[..., dict[str, Any]]:
    return certificate_fields
