"""Credential operations (CSRs sent over the hub) and their responses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from certhub.registry import AlreadyExists, Conflict, NotFound, Store
from certhub.registry.records import NewOperation

NOW = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=1)


def _op(rid: str = "1", device_id: str = "dev-1", **overrides: Any) -> NewOperation:
    fields: dict[str, Any] = {
        "device_id": device_id,
        "rid": rid,
        "correlation_id": f"corr-{device_id}-{rid}",
        "csr_der": b"\x30\x82csr",
        "expires_at": NOW + dt.timedelta(minutes=5),
        "created_at": NOW,
    }
    fields.update(overrides)
    return NewOperation(**fields)


def test_operation_lifecycle(store: Store) -> None:
    op = store.create_operation(_op())
    assert (op.state, op.delivered, op.certificate_serial, op.response_body) == (
        "pending",
        False,
        None,
        None,
    )
    assert store.get_operation(op.id) == op
    assert store.get_operation_by_correlation(op.correlation_id) == op
    assert store.find_operation("dev-1", "1") == op
    assert store.find_operation("dev-1", "2") is None

    done = store.finish_operation(
        op.id,
        "completed",
        LATER,
        certificate_serial="0a",
        response_status=200,
        response_body={"certificates": ["MIIB"], "correlationId": op.correlation_id},
    )
    assert (done.state, done.response_status, done.updated_at) == ("completed", 200, LATER)
    assert done.response_body == {"certificates": ["MIIB"], "correlationId": op.correlation_id}
    delivered = store.mark_operation_delivered(op.id, LATER)
    assert delivered.delivered
    assert [o.id for o in store.list_operations(device_id="dev-1", state="completed")] == [op.id]


def test_replace_and_expire(store: Store) -> None:
    old = store.create_operation(_op("1"))
    store.create_operation(_op("1", device_id="dev-2", expires_at=NOW))
    assert store.replace_pending_operations("dev-1", LATER) == 1
    new = store.create_operation(_op("2"))
    assert store.expire_operations(NOW) == 1
    states = {(o.device_id, o.rid): o.state for o in store.list_operations()}
    assert states == {
        ("dev-1", "1"): "replaced",
        ("dev-2", "1"): "expired",
        ("dev-1", "2"): "pending",
    }
    assert store.get_operation(old.id).state == "replaced"  # type: ignore[union-attr]
    assert store.get_operation(new.id).state == "pending"  # type: ignore[union-attr]


def test_purge_deletes_only_operations_over_before_the_cutoff(store: Store) -> None:
    old = NOW - dt.timedelta(days=8)
    done = store.create_operation(_op("done", expires_at=old))
    store.finish_operation(done.id, "failed", LATER, response_status=400, response_body={})
    replaced = store.create_operation(_op("replaced", device_id="dev-2", expires_at=old))
    store.replace_pending_operations("dev-2", LATER)
    expired = store.create_operation(_op("expired", device_id="dev-3", expires_at=old))
    store.expire_operations(NOW)
    pending = store.create_operation(_op("pending", device_id="dev-4", expires_at=old))
    recent = store.create_operation(_op("recent", device_id="dev-5"))
    store.finish_operation(recent.id, "failed", LATER, response_status=400, response_body={})
    before = NOW - dt.timedelta(days=7)
    assert store.purge_operations(before, limit=2) == 2  # one short transaction each
    assert store.purge_operations(before, limit=2) == 1
    assert store.purge_operations(before) == 0
    left = {o.id for o in store.list_operations()}
    assert left == {pending.id, recent.id}  # never a pending one; recent ones stay
    assert not left & {done.id, replaced.id, expired.id}
    with pytest.raises(ValueError):
        store.purge_operations(dt.datetime(2025, 1, 1))  # naive


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        pytest.param("duplicate-rid", AlreadyExists, id="reject/duplicate-device-rid"),
        pytest.param("duplicate-correlation", AlreadyExists, id="reject/duplicate-correlation"),
        pytest.param("finish-twice", Conflict, id="reject/finish-twice"),
        pytest.param("deliver-pending", Conflict, id="reject/deliver-pending"),
        pytest.param("finish-missing", NotFound, id="reject/finish-missing"),
    ],
)
def test_operation_rejections(store: Store, action: str, expected: type[Exception]) -> None:
    op = store.create_operation(_op())
    with pytest.raises(expected) as info:
        if action == "duplicate-rid":
            store.create_operation(_op(correlation_id="other"))
        elif action == "duplicate-correlation":
            store.create_operation(_op("2", correlation_id=op.correlation_id))
        elif action == "finish-twice":
            store.finish_operation(op.id, "failed", LATER, response_status=400)
            store.finish_operation(op.id, "completed", LATER)
        elif action == "deliver-pending":
            store.mark_operation_delivered(op.id, LATER)
        else:
            store.finish_operation(op.id + 100, "completed", LATER)
    err: Any = info.value
    assert err.kind == "operation"
    if isinstance(err, Conflict):
        assert err.reason == "invalid-transition"
        assert err.detail in ("failed->completed", "pending->delivered")


def test_finish_needs_a_final_state(offline_store: Store) -> None:
    with pytest.raises(ValueError, match="state='expired'"):
        offline_store.finish_operation(1, "expired", LATER)


def test_new_operation_validation() -> None:
    with pytest.raises(ValueError, match="expires_at"):
        _op(expires_at=dt.datetime(2025, 1, 1))
