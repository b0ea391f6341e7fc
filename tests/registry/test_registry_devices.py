"""Devices and twins: CRUD, etags, revocation ids, cascade, paging."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from certhub.registry import AlreadyExists, Conflict, EtagMismatch, NotFound, Store
from certhub.registry.records import (
    AuditEvent,
    DeviceRecord,
    NamespaceRecord,
    NewCertificate,
    NewDevice,
)

LATER = dt.datetime(2025, 6, 1, 8, 0, tzinfo=dt.UTC)


def test_create_device_with_twin(
    store: Store, ns: NamespaceRecord, now: dt.datetime, make_device: Callable[..., DeviceRecord]
) -> None:
    device = make_device(
        "dev-1",
        auth_type="sas",
        primary_key="cHJp",
        policy_name="default",
        initial_tags={"site": "berlin"},
        initial_desired={"certificateRenewal": {"window": 0.8}},
    )
    assert (device.status, device.auth_type, device.connection_state) == (
        "enabled",
        "sas",
        "Disconnected",
    )
    assert device.revocation_id == bytes(range(32))
    assert len(device.generation_id) == 18 and device.generation_id.isdigit()
    assert device.status_updated_at == now and device.last_activity_at is None
    assert store.get_device("dev-1") == device
    assert store.get_device("nope") is None

    twin = store.get_twin("dev-1")
    assert twin.tags == {"site": "berlin"}
    assert twin.desired == {"certificateRenewal": {"window": 0.8}}
    assert twin.reported == {}
    assert (twin.version, twin.desired_version, twin.reported_version) == (1, 1, 1)
    assert twin.metadata == {"desired": {}, "reported": {}}
    assert twin.etag and twin.etag != device.etag


def test_update_device(store: Store, make_device: Callable[..., DeviceRecord]) -> None:
    device = make_device()
    renamed = store.update_device(
        dataclasses.replace(device, policy_name="dev", primary_thumbprint="AB" * 20),
        device.etag,
        now=LATER,
    )
    assert renamed.etag != device.etag
    assert (renamed.policy_name, renamed.primary_thumbprint) == ("dev", "AB" * 20)
    assert renamed.status_updated_at == device.status_updated_at  # status unchanged
    assert renamed.updated_at == LATER and renamed.generation_id == device.generation_id

    later = LATER + dt.timedelta(hours=1)
    disabled = store.update_device(
        dataclasses.replace(renamed, status="disabled", status_reason="stolen"), "*", now=later
    )
    assert (disabled.status, disabled.status_reason) == ("disabled", "stolen")
    assert disabled.status_updated_at == later
    assert store.count_devices() == 1
    assert store.count_devices(status="disabled") == 1
    assert store.count_devices(status="enabled") == 0

    rotated = store.rotate_revocation_id("dev-1", b"\xff" * 32, LATER)
    assert rotated.revocation_id == b"\xff" * 32
    assert rotated.etag != disabled.etag and rotated.updated_at == LATER


def test_connection_state_and_activity_keep_the_etag(
    store: Store, make_device: Callable[..., DeviceRecord]
) -> None:
    device = make_device()
    store.set_connection_state("dev-1", "Connected", LATER)
    store.record_activity("dev-1", LATER + dt.timedelta(minutes=5))
    seen = store.get_device("dev-1")
    assert seen is not None
    assert (seen.connection_state, seen.connection_state_updated_at) == ("Connected", LATER)
    assert seen.last_activity_at == LATER + dt.timedelta(minutes=5)
    assert seen.etag == device.etag
    store.set_connection_state("dev-1", "Disconnected", LATER + dt.timedelta(hours=1))
    seen = store.get_device("dev-1")
    assert seen is not None and seen.connection_state == "Disconnected"


def test_delete_cascades_twin_but_keeps_certificates(
    store: Store,
    make_device: Callable[..., DeviceRecord],
    new_cert: Callable[..., NewCertificate],
    audit_event: Callable[..., AuditEvent],
) -> None:
    device = make_device()
    store.record_issuance(new_cert(1), audit_event())
    store.delete_device("dev-1", expected_etag=device.etag)
    assert store.get_device("dev-1") is None
    with pytest.raises(NotFound) as info:
        store.get_twin("dev-1")
    assert (info.value.kind, info.value.key) == ("twin", "dev-1")
    kept = store.get_certificate(new_cert(1).serial_hex)
    assert kept is not None and kept.device_id == "dev-1"
    # The id can be used again, with a fresh twin.
    make_device("dev-1")
    assert store.get_twin("dev-1").version == 1


def test_list_devices_pages_by_id(
    store: Store, ns: NamespaceRecord, now: dt.datetime, make_device: Callable[..., DeviceRecord]
) -> None:
    for i in (3, 1, 4, 0, 2):
        make_device(f"dev-{i}")
    other = store.create_namespace("other", "0ne-o", now)
    store.create_device(
        NewDevice(device_id="dev-5", namespace_id=other.id, revocation_id=bytes(32)), now
    )
    first = store.list_devices(limit=2)
    second = store.list_devices(limit=2, after_device_id=first[-1].device_id)
    rest = store.list_devices(limit=10, after_device_id=second[-1].device_id)
    assert [d.device_id for d in first + second + rest] == [f"dev-{i}" for i in range(6)]
    in_ns = store.list_devices(limit=10, namespace_id=ns.id)
    assert [d.device_id for d in in_ns] == [f"dev-{i}" for i in range(5)]


def test_replace_twin_sections(store: Store, make_device: Callable[..., DeviceRecord]) -> None:
    make_device()
    twin = store.get_twin("dev-1")
    desired = store.replace_twin_sections(
        "dev-1",
        now=LATER,
        desired={"p": 17},
        desired_metadata={"$lastUpdated": "2025-06-01T08:00:00Z", "$lastUpdatedVersion": 2},
        expected_etag=twin.etag,
    )
    assert (desired.version, desired.desired_version, desired.reported_version) == (2, 2, 1)
    assert desired.desired == {"p": 17} and desired.etag != twin.etag
    assert desired.metadata["desired"]["$lastUpdatedVersion"] == 2
    reported = store.replace_twin_sections(
        "dev-1",
        now=LATER,
        reported={"certificate": {"validUntil": "2025-07-01T00:00:00Z"}},
        reported_metadata={"$lastUpdated": "2025-06-01T08:00:00Z"},
    )
    assert (reported.version, reported.desired_version, reported.reported_version) == (3, 2, 2)
    assert reported.metadata == {
        "desired": {"$lastUpdated": "2025-06-01T08:00:00Z", "$lastUpdatedVersion": 2},
        "reported": {"$lastUpdated": "2025-06-01T08:00:00Z"},
    }
    tagged = store.replace_twin_sections("dev-1", now=LATER, tags={"site": "b"})
    assert (tagged.version, tagged.desired_version, tagged.reported_version) == (4, 2, 2)
    assert tagged.desired == {"p": 17} and tagged.tags == {"site": "b"}
    assert store.get_twin("dev-1") == tagged


def test_twin_read_modify_write_in_one_transaction(
    store: Store, make_device: Callable[..., DeviceRecord]
) -> None:
    make_device()
    with store.transaction() as conn:
        twin = store.get_twin("dev-1", conn=conn, for_update=True)
        patched = {**twin.reported, "n": 1}
        store.replace_twin_sections("dev-1", now=LATER, reported=patched, conn=conn)
    assert store.get_twin("dev-1").reported == {"n": 1}
    with store.transaction() as conn:  # the twin already read is passed on, not read again
        twin = store.get_twin("dev-1", conn=conn, for_update=True)
        record = store.replace_twin_sections(
            "dev-1", now=LATER, reported={"n": 2}, conn=conn, current=twin, expected_etag=twin.etag
        )
    assert (record.reported, record.reported_version, record.version) == ({"n": 2}, 3, 3)
    assert store.get_twin("dev-1") == record
    with pytest.raises(ValueError, match="current needs the conn"):
        store.replace_twin_sections("dev-1", now=LATER, reported={}, current=record)


@pytest.mark.parametrize(
    ("action", "expected", "kind"),
    [
        pytest.param("create-duplicate", AlreadyExists, "device", id="reject/duplicate-id"),
        pytest.param("create-unknown-namespace", Conflict, "device", id="reject/unknown-namespace"),
        pytest.param(
            "create-unknown-enrollment", Conflict, "device", id="reject/unknown-enrollment"
        ),
        pytest.param("update-stale-etag", EtagMismatch, "device", id="reject/update-stale-etag"),
        pytest.param("update-missing", NotFound, "device", id="reject/update-missing"),
        pytest.param("delete-stale-etag", EtagMismatch, "device", id="reject/delete-stale-etag"),
        pytest.param("delete-missing", NotFound, "device", id="reject/delete-missing"),
        pytest.param("rotate-missing", NotFound, "device", id="reject/rotate-missing"),
        pytest.param("connect-missing", NotFound, "device", id="reject/connection-missing"),
        pytest.param("twin-stale-etag", EtagMismatch, "twin", id="reject/twin-stale-etag"),
        pytest.param("twin-missing", NotFound, "twin", id="reject/twin-missing"),
    ],
)
def test_rejections(
    store: Store,
    ns: NamespaceRecord,
    now: dt.datetime,
    make_device: Callable[..., DeviceRecord],
    action: str,
    expected: type[Exception],
    kind: str,
) -> None:
    device = make_device()
    current = store.update_device(device, None, now=now)
    ghost = dataclasses.replace(device, device_id="ghost")
    calls: dict[str, Callable[[], object]] = {
        "create-duplicate": lambda: make_device("dev-1"),
        "create-unknown-namespace": lambda: make_device("dev-2", namespace_id=9999),
        "create-unknown-enrollment": lambda: make_device("dev-2", enrollment_id=9999),
        "update-stale-etag": lambda: store.update_device(current, device.etag, now=now),
        "update-missing": lambda: store.update_device(ghost, None, now=now),
        "delete-stale-etag": lambda: store.delete_device("dev-1", expected_etag=device.etag),
        "delete-missing": lambda: store.delete_device("ghost"),
        "rotate-missing": lambda: store.rotate_revocation_id("ghost", bytes(32), now),
        "connect-missing": lambda: store.set_connection_state("ghost", "Connected", now),
        "twin-stale-etag": lambda: store.replace_twin_sections(
            "dev-1", now=now, tags={}, expected_etag="stale"
        ),
        "twin-missing": lambda: store.replace_twin_sections("ghost", now=now, tags={}),
    }
    with pytest.raises(expected) as info:
        calls[action]()
    error: Any = info.value
    assert error.kind == kind
    if isinstance(error, Conflict):
        assert error.reason == "missing-reference"
    if isinstance(error, EtagMismatch):
        assert error.actual in (current.etag, store.get_twin("dev-1").etag)
    assert store.get_device("dev-1") == current
    assert store.count_devices() == 1


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        pytest.param({"device_id": ""}, "device_id", id="reject/empty-id"),
        pytest.param(
            {"revocation_id": b"x" * 31}, "revocation_id", id="reject/short-revocation-id"
        ),
        pytest.param({"auth_type": "tpm"}, "auth_type='tpm'", id="reject/unknown-auth-type"),
        pytest.param({"status": "paused"}, "status='paused'", id="reject/unknown-status"),
    ],
)
def test_new_device_validation(overrides: dict[str, Any], error: str) -> None:
    fields: dict[str, Any] = {"device_id": "d", "namespace_id": 1, "revocation_id": bytes(32)}
    with pytest.raises(ValueError, match=error):
        NewDevice(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(
            lambda s: s.replace_twin_sections("d", now=LATER),
            "give tags, desired or reported",
            id="reject/twin-without-sections",
        ),
        pytest.param(
            lambda s: s.rotate_revocation_id("d", b"short", LATER),
            "expected 32 bytes, got 5",
            id="reject/short-new-revocation-id",
        ),
        pytest.param(
            lambda s: s.set_connection_state("d", "Online", LATER),
            "connection_state='Online'",
            id="reject/unknown-connection-state",
        ),
        pytest.param(
            lambda s: s.record_activity("d", dt.datetime(2025, 1, 1)),
            "timezone-aware",
            id="reject/naive-activity-time",
        ),
    ],
)
def test_device_argument_validation(
    offline_store: Store, call: Callable[[Store], object], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        call(offline_store)


def test_connection_states_in_one_batch(
    store: Store, make_device: Callable[..., DeviceRecord]
) -> None:
    make_device("dev-1")
    make_device("dev-2")
    store.set_connection_state("dev-2", "Connected", LATER)
    store.set_connection_states(
        {
            "dev-1": ("Connected", LATER + dt.timedelta(minutes=1)),
            "dev-2": ("Disconnected", LATER + dt.timedelta(minutes=2)),
            "gone": ("Connected", LATER),  # deleted meanwhile: skipped
        }
    )
    one, two = store.get_device("dev-1"), store.get_device("dev-2")
    assert one is not None and two is not None
    assert (one.connection_state, one.last_activity_at) == (
        "Connected",
        LATER + dt.timedelta(minutes=1),
    )
    assert (two.connection_state, two.connection_state_updated_at) == (
        "Disconnected",
        LATER + dt.timedelta(minutes=2),
    )
    assert two.last_activity_at == LATER  # a disconnect is no activity
    with pytest.raises(ValueError, match="connection_state"):
        store.set_connection_states({"dev-1": ("Away", LATER)})  # type: ignore[dict-item]
