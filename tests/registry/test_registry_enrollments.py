"""DPS enrollments: CRUD, etags, and unlinking devices on delete."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from certhub.registry import AlreadyExists, Conflict, EtagMismatch, NotFound, Store
from certhub.registry.records import EnrollmentRecord, NamespaceRecord, NewEnrollment

LATER = dt.datetime(2025, 5, 1, tzinfo=dt.UTC)


def _group(ns: NamespaceRecord, name: str = "default", **overrides: Any) -> NewEnrollment:
    fields: dict[str, Any] = {
        "namespace_id": ns.id,
        "kind": "group",
        "name": name,
        "attestation_type": "symmetricKey",
        "primary_key": "cHJpbWFyeQ==",
        "secondary_key": "c2Vjb25kYXJ5",
        "credential_policy_name": "default",
        "initial_twin": {"tags": {"fleet": "a"}, "properties": {"desired": {"x": 1}}},
    }
    fields.update(overrides)
    return NewEnrollment(**fields)


def test_create_get_list(store: Store, ns: NamespaceRecord, now: dt.datetime) -> None:
    group = store.create_enrollment(_group(ns), now)
    x509 = store.create_enrollment(
        NewEnrollment(
            namespace_id=ns.id,
            kind="individual",
            name="dev-7",
            attestation_type="x509",
            x509_certificates=("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n",),
            x509_thumbprints=("ab" * 32,),
            provisioning_status="disabled",
            reprovision_policy={"updateHubAssignment": False, "migrateDeviceData": True},
        ),
        now,
    )
    assert group.primary_key == "cHJpbWFyeQ==" and group.x509_certificates == ()
    assert group.reprovision_policy == {"updateHubAssignment": True, "migrateDeviceData": True}
    assert group.initial_twin["properties"] == {"desired": {"x": 1}}
    assert x509.primary_key is None and x509.x509_thumbprints == ("ab" * 32,)
    assert x509.provisioning_status == "disabled"
    assert group.etag and group.etag != x509.etag
    assert (group.created_at, group.updated_at) == (now, now)
    assert store.get_enrollment(ns.id, "group", "default") == group
    assert store.get_enrollment_by_id(x509.id) == x509
    assert store.get_enrollment(ns.id, "individual", "default") is None
    assert [e.name for e in store.list_enrollments(ns.id)] == ["default", "dev-7"]
    assert [e.name for e in store.list_enrollments(ns.id, kind="individual")] == ["dev-7"]


def test_update_changes_etag(store: Store, ns: NamespaceRecord, now: dt.datetime) -> None:
    group = store.create_enrollment(_group(ns), now)
    changed = dataclasses.replace(
        group, provisioning_status="disabled", credential_policy_name="dev", secondary_key=None
    )
    updated = store.update_enrollment(changed, group.etag, now=LATER)
    assert updated.etag != group.etag
    assert (updated.provisioning_status, updated.credential_policy_name) == ("disabled", "dev")
    assert updated.secondary_key is None
    assert (updated.created_at, updated.updated_at) == (now, LATER)
    again = store.update_enrollment(updated, None, now=LATER)
    assert again.etag != updated.etag
    assert store.update_enrollment(again, "*", now=LATER).etag != again.etag


def test_delete_unlinks_devices(
    store: Store, ns: NamespaceRecord, now: dt.datetime, make_device: Callable[..., Any]
) -> None:
    group = store.create_enrollment(_group(ns), now)
    make_device("dev-1", enrollment_id=group.id)
    store.delete_enrollment(ns.id, "group", "default", expected_etag=group.etag)
    assert store.get_enrollment(ns.id, "group", "default") is None
    device = store.get_device("dev-1")
    assert device is not None and device.enrollment_id is None


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        pytest.param("create-duplicate", AlreadyExists, id="reject/duplicate"),
        pytest.param("create-unknown-namespace", Conflict, id="reject/unknown-namespace"),
        pytest.param("update-stale-etag", EtagMismatch, id="reject/update-stale-etag"),
        pytest.param("update-missing", NotFound, id="reject/update-missing"),
        pytest.param("delete-stale-etag", EtagMismatch, id="reject/delete-stale-etag"),
        pytest.param("delete-missing", NotFound, id="reject/delete-missing"),
    ],
)
def test_rejections(
    store: Store, ns: NamespaceRecord, now: dt.datetime, action: str, expected: type[Exception]
) -> None:
    group = store.create_enrollment(_group(ns), now)
    fresh = store.update_enrollment(group, None, now=now)
    gone = dataclasses.replace(group, name="gone")
    calls: dict[str, Callable[[], object]] = {
        "create-duplicate": lambda: store.create_enrollment(_group(ns), now),
        "create-unknown-namespace": lambda: store.create_enrollment(
            _group(ns, namespace_id=9999), now
        ),
        "update-stale-etag": lambda: store.update_enrollment(fresh, group.etag, now=now),
        "update-missing": lambda: store.update_enrollment(gone, None, now=now),
        "delete-stale-etag": lambda: store.delete_enrollment(ns.id, "group", "default", "stale"),
        "delete-missing": lambda: store.delete_enrollment(ns.id, "group", "gone"),
    }
    with pytest.raises(expected) as info:
        calls[action]()
    error: Any = info.value
    assert error.kind == "group enrollment"
    if isinstance(error, EtagMismatch):
        assert error.actual == fresh.etag
    if isinstance(error, NotFound):
        assert error.key == "gone"
    assert store.get_enrollment(ns.id, "group", "default") == fresh


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        pytest.param({"kind": "batch"}, "kind='batch'", id="reject/unknown-kind"),
        pytest.param({"attestation_type": "tpm"}, "attestation_type='tpm'", id="reject/tpm"),
        pytest.param({"primary_key": None}, "primary_key", id="reject/symmetric-without-key"),
        pytest.param(
            {"provisioning_status": "on"}, "provisioning_status='on'", id="reject/unknown-status"
        ),
    ],
)
def test_new_enrollment_validation(overrides: dict[str, Any], error: str) -> None:
    fields: dict[str, Any] = {
        "namespace_id": 1,
        "kind": "group",
        "name": "g",
        "attestation_type": "symmetricKey",
        "primary_key": "k",
    }
    with pytest.raises(ValueError, match=error):
        NewEnrollment(**{**fields, **overrides})


def test_symmetric_key_rule_also_holds_in_the_database(
    store: Store, ns: NamespaceRecord, now: dt.datetime
) -> None:
    group: EnrollmentRecord = store.create_enrollment(_group(ns), now)
    with pytest.raises(Conflict) as info:
        store.update_enrollment(dataclasses.replace(group, primary_key=None), None, now=now)
    assert info.value.reason == "constraint"
    assert "ck_enrollments_symmetric_key" in info.value.detail
