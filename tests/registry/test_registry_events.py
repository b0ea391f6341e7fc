"""The change feed: events written by triggers in the changing transaction, and the
store's methods to append, read and prune them (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from certhub.registry import NotFound, Store
from certhub.registry.migrate import downgrade, upgrade
from certhub.registry.records import (
    CaRecord,
    NamespaceRecord,
    NewCertificate,
    NewEnrollment,
    PolicyRecord,
)

NOW = dt.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


def _kinds(store: Store, after: int = 0) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [(e.kind, e.device_id, dict(e.payload)) for e in store.events_after(after)]


def test_device_changes_emit_events(store: Store, make_device: Callable[..., Any]) -> None:
    device = make_device("d1")
    start = store.last_event_id()
    store.update_device(dataclasses.replace(device, status="disabled"), None, now=NOW)
    store.rotate_revocation_id("d1", b"\x09" * 32, NOW)
    current = store.get_device("d1")
    assert current is not None
    store.update_device(dataclasses.replace(current, primary_key="k2V5"), None, now=NOW)
    store.update_device(dataclasses.replace(current, primary_key="k2V5"), None, now=NOW)  # same
    store.delete_device("d1")
    assert _kinds(store, start) == [
        ("device.status", "d1", {"status": "disabled", "previous": "enabled"}),
        ("device.revocation", "d1", {}),
        ("device.auth", "d1", {}),
        ("device.deleted", "d1", {}),
    ]


def test_unrelated_device_updates_emit_nothing(
    store: Store, make_device: Callable[..., Any]
) -> None:
    device = make_device("d1")
    start = store.last_event_id()
    store.update_device(dataclasses.replace(device, status_reason="why not"), None, now=NOW)
    store.set_connection_state("d1", "Connected", NOW)
    store.replace_twin_sections("d1", now=NOW, reported={"a": 1})
    assert store.events_after(start) == []


def test_certificate_revocation_emits_once(
    store: Store, make_device: Callable[..., Any], new_cert: Callable[..., NewCertificate],
    audit_event: Callable[..., Any],
) -> None:  # fmt: skip
    make_device("dev-1")
    cert = store.record_issuance(new_cert(5), audit_event())
    start = store.last_event_id()
    store.set_certificate_state(cert.serial_hex, "active", NOW)
    store.set_certificate_state(cert.serial_hex, "revoked", NOW, "key compromise")
    store.set_certificate_state(cert.serial_hex, "revoked", NOW)
    assert _kinds(store, start) == [
        ("certificate.revoked", "dev-1", {"serial": cert.serial_hex}),
    ]


def test_ca_and_policy_changes_emit_events(
    store: Store, make_ca: Callable[..., CaRecord], policy: PolicyRecord
) -> None:
    start = store.last_event_id()
    ca = make_ca("ica2", policy_id=policy.id)
    store.set_ca_state(ca.id, "revoked", NOW)
    store.set_policy_state(policy.id, "deleted", NOW)
    assert _kinds(store, start) == [
        ("ca.changed", None, {"id": ca.id, "kind": "issuing", "state": "active"}),
        ("ca.changed", None, {"id": ca.id, "kind": "issuing", "state": "revoked"}),
        ("policy.changed", None, {"id": policy.id, "state": "deleted"}),
    ]


def test_only_x509_enrollments_emit_events(store: Store, ns: NamespaceRecord) -> None:
    start = store.last_event_id()
    store.create_enrollment(
        NewEnrollment(
            namespace_id=ns.id, kind="group", name="sym", attestation_type="symmetricKey",
            primary_key="a2V5",
        ),
        NOW,
    )  # fmt: skip
    x509 = store.create_enrollment(
        NewEnrollment(
            namespace_id=ns.id, kind="group", name="x", attestation_type="x509",
            x509_certificates=("pem",),
        ),
        NOW,
    )  # fmt: skip
    store.delete_enrollment(ns.id, "group", "x")
    assert _kinds(store, start) == [
        ("enrollment.changed", None, {"id": x509.id}),
        ("enrollment.changed", None, {"id": x509.id}),
    ]


def test_an_event_appended_in_a_failed_transaction_is_not_kept(
    store: Store, make_device: Callable[..., Any]
) -> None:
    make_device("d1")
    start = store.last_event_id()
    with pytest.raises(NotFound), store.transaction() as conn:
        store.append_event("twin.desired", "d1", {"version": 2}, NOW, conn=conn)
        store.delete_device("missing", conn=conn)
    assert store.events_after(start) == []


def test_append_read_and_prune(store: Store) -> None:
    first = store.append_event("twin.desired", "d1", {"version": 2, "patch": {"a": None}}, NOW)
    later = NOW + dt.timedelta(hours=2)
    second = store.append_event("custom", None, {}, later)
    assert second > first == store.last_event_id() - 1
    events = store.events_after(first - 1)
    assert [(e.id, e.kind, e.at) for e in events] == [
        (first, "twin.desired", NOW),
        (second, "custom", later),
    ]
    assert events[0].payload == {"version": 2, "patch": {"a": None}}
    assert [e.id for e in store.events_after(first - 1, limit=1)] == [first]
    assert store.prune_events(NOW + dt.timedelta(hours=1)) >= 1
    assert [e.id for e in store.events_after(0)] == [second]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"kind": ""}, ValueError, id="reject/empty-kind"),
        pytest.param({"now": dt.datetime(2025, 1, 1)}, ValueError, id="reject/naive-time"),
    ],
)
def test_append_rejections(store: Store, kwargs: dict[str, Any], error: type[Exception]) -> None:
    args: dict[str, Any] = {"kind": "k", "device_id": None, "payload": {}, "now": NOW}
    args.update(kwargs)
    with pytest.raises(error):
        store.append_event(**args)


def test_last_event_id_of_an_empty_feed_is_zero(store: Store) -> None:
    assert store.last_event_id() == 0


def test_downgrade_removes_the_feed_and_its_triggers(db_url: str) -> None:
    with Store.open(db_url) as store:
        engine = store.engine
        downgrade(engine, "0004")
        assert "events" not in sa.inspect(engine).get_table_names()
        ns = store.create_namespace("default", "0ne1", NOW)
        store.create_policy(ns.id, "p", 86400, ["p256"], 0, False, NOW)  # no trigger fires
        upgrade(engine)
        assert "events" in sa.inspect(engine).get_table_names()
        policy = store.get_policy(ns.id, "p")
        assert policy is not None
        store.set_policy_state(policy.id, "deleted", NOW)
        assert [e.kind for e in store.events_after(0)] == ["policy.changed"]
