"""The renewal writer's statements stay cheap as the tables grow (SQLite query plans).

Every statement the writer runs for a turn of many devices (renewals, then the devices'
first connections with their new certificates) is captured and explained: none may scan
a stored table or walk the certificates' state index, and none may reach
``credential_operations`` through its ``(state, expires_at)`` index except for
``pending`` rows (the operations in flight).
Finished operations are never deleted, so a statement that walks them gets slower with
every renewal the fleet ever made: ``mark_operations_delivered`` did, on every turn,
once its ``id IN (...)`` list was long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from renewal_support import Harness, World, captured_sql, open_world, query_plans, request_body

STATE_INDEX = "ix_credential_operations_state_expires_at"
TABLES = ("credential_operations", "certificates", "devices", "twins", "renewal_status")


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[World]:
    world = open_world(tmp_path, f"sqlite:///{tmp_path / 'certhub.db'}")
    try:
        yield world
    finally:
        world.store.close()


def renew_all(harness: Harness, devices: list[str], tag: str) -> None:
    """One request per device, all queued at once (one or two writer turns)."""
    harness.publisher.subscribed.update(devices)

    async def requests() -> None:
        await asyncio.gather(
            *(
                harness.service.handle_request(d, f"{tag}-{d}", request_body(d), "issueCertificate")
                for d in devices
            )
        )

    harness.call(requests())
    harness.sync()
    harness.sync()  # the delivery marks of the last turn
    for message in harness.publisher.messages:
        assert message.status in (200, 202), message
    harness.publisher.messages.clear()


def activate_newest(harness: Harness, world: World, devices: list[str]) -> None:
    """Each device's first connection with its newest certificate, all at once."""
    newest = world.store.newest_live_certificates(devices)
    writer = harness.service.writer

    async def together() -> None:
        futures = [writer.activate(cert.serial_hex) for cert in newest.values()]
        await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))

    harness.call(together())
    assert {c.state for c in world.store.newest_live_certificates(devices).values()} == {"active"}


def test_a_turn_of_many_devices_reads_by_key(sqlite_world: World) -> None:
    devices = [sqlite_world.add_device() for _ in range(40)]
    for device in devices:
        sqlite_world.issue(device)
    harness = Harness(sqlite_world)
    try:
        renew_all(harness, devices, "first")  # finished operations to walk past
        with captured_sql(sqlite_world.store.engine) as statements:
            renew_all(harness, devices, "second")
            activate_newest(harness, sqlite_world, devices)  # the devices reconnect
    finally:
        harness.close()

    explained = query_plans(sqlite_world, statements)
    assert any("SET delivered" in sql for sql, _, _ in explained)  # the turn was captured
    assert any("SET state=?, first_used_at" in sql for sql, _, _ in explained)  # activations
    assert len(explained) >= 10
    for sql, params, plan in explained:
        for table in TABLES:
            assert f"SCAN {table}" not in plan, (sql, plan)
        assert "ix_certificates_state_not_after" not in plan, (sql, plan)  # every live one
        if STATE_INDEX in plan:  # only the operations in flight
            assert "pending" in params or "'pending'" in sql, (sql, params, plan)
