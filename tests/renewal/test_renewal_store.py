"""The store side of renewal: migration 0006, the batch methods, the twin write format."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from renewal_support import World

from certhub.hub.twin import apply_patch
from certhub.registry._renewal import NewRenewalWindow, renewal_state, renewal_status
from certhub.registry.engine import create_store_engine
from certhub.registry.migrate import current_revision, downgrade, head_revision, upgrade
from certhub.registry.records import NewOperation, TwinRecord
from certhub.registry.schema import metadata
from certhub.renewal.twin import desired_write

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def test_migration_0006_matches_the_table_and_downgrades(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = [
                d
                for d in compare_metadata(context, metadata)
                if "renewal_status" in str(d) or "operation_id" in str(d)
            ]
        assert diffs == []
        downgrade(engine, "0005")
        assert "renewal_status" not in sa.inspect(engine).get_table_names()
        upgrade(engine)
        assert "renewal_status" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (T0, "scheduled"),
        (T0 + 10 * H, "due"),
        (T0 + 12 * H, "overdue"),
        (T0 + 20 * H, "expired"),
    ],
)
def test_renewal_state(now: dt.datetime, expected: str) -> None:
    assert renewal_state(T0 + 20 * H, T0 + 10 * H, T0 + 12 * H, now) == expected


def test_an_older_certificate_never_displaces_a_newer_window(world: World) -> None:
    device = world.add_device()
    now = world.clock.now()

    def row(serial: str, not_before: dt.datetime) -> NewRenewalWindow:
        return NewRenewalWindow(
            device_id=device,
            serial_hex=serial,
            not_before=not_before,
            not_after=not_before + 30 * 24 * H,
            renew_after=not_before + 20 * 24 * H,
            renew_before=not_before + 21 * 24 * H,
        )

    world.store.put_renewal_windows([row("bb", now)], now)
    world.store.put_renewal_windows([row("aa", now - H)], now)
    status = world.store.get_renewal_status(device)
    assert status is not None and status.serial_hex == "bb"
    world.store.delete_device(device)
    assert world.store.get_renewal_status(device) is None  # cascades with the device


def test_desired_write_matches_the_hub_twin_rules() -> None:
    twin = TwinRecord(
        device_id="d",
        tags={},
        desired={"other": 1},
        reported={},
        desired_version=4,
        reported_version=1,
        version=7,
        etag="e",
        metadata={"desired": {"other": {"$lastUpdated": "x"}}, "reported": {"r": 1}},
        updated_at=T0,
    )
    value = {"renewAfter": "2026-01-24T06:56:54Z", "renewBefore": "2026-01-24T21:20:54Z"}
    write = desired_write(twin, value, T0, "certhub-renewal")
    assert write is not None
    hub = apply_patch(
        twin.desired, twin.metadata["desired"], {"certificateRenewal": value}, now=T0, version=5
    )
    assert write.desired == hub.section
    assert write.metadata == {"desired": hub.metadata, "reported": {"r": 1}}
    assert write.event == {
        "version": 5,
        "patch": {"certificateRenewal": value},
        "origin": "certhub-renewal",
    }
    same = dataclasses.replace(twin, desired=hub.section)
    assert desired_write(same, value, T0, "certhub-renewal") is None


def test_table_is_declared_on_the_registry_metadata() -> None:
    assert metadata.tables["renewal_status"] is renewal_status


def test_relevant_operations_matches_pairs_not_their_cross_product(world: World) -> None:
    """Each request's own (device, rid), any state, plus the devices' pending operations,
    ordered by id; rids are any strings (quotes, non-ASCII)."""
    a, b, c = world.add_device(), world.add_device(), world.add_device()
    now = world.clock.now()

    def op(device: str, rid: str) -> int:
        new = NewOperation(
            device_id=device,
            rid=rid,
            correlation_id=f"{device}/{rid}",
            csr_der=b"csr",
            expires_at=now + H,
            created_at=now,
        )
        return world.store.create_operation(new).id

    a_done = op(a, "r'1\"é")
    world.store.finish_operation(a_done, "failed", now, response_status=400, response_body={})
    a_other = op(a, "r2")  # pending: found as a's pending operation
    b_done = op(b, "r2")
    world.store.finish_operation(b_done, "failed", now, response_status=400, response_body={})
    b_skip = op(b, "r'1\"é")  # b's rid of a's request: not asked
    world.store.finish_operation(b_skip, "failed", now, response_status=400, response_body={})
    c_pending = op(c, "x")
    asked = [(a, "r'1\"é"), (b, "r2"), (c, "new"), ("no-such-device", "r2")]
    found = world.store.relevant_operations(asked)
    assert [o.id for o in found] == [a_done, a_other, b_done, c_pending]
    assert world.store.relevant_operations([]) == []
