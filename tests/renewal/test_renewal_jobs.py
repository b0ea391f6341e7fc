"""Periodic jobs: overdue/expired detection, webhook alerts, certificates from DPS,
rebalancing — each against a store of its own (they look at the whole fleet)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import REGISTRY
from renewal_support import (
    START,
    Harness,
    World,
    captured_sql,
    csr_der,
    pending_operation,
    query_plans,
    request_body,
)

from certhub.rand import SeededRandom
from certhub.registry._renewal import NewRenewalWindow
from certhub.renewal import RENEWAL_PROPERTY, RenewalConfig, Validity, Window, WindowPolicy
from certhub.renewal.alerts import WebhookNotifier
from certhub.renewal.window import expected_rate_peak, nominal_window


class Webhook:
    """An HTTP endpoint (httpx MockTransport) answering with ``statuses`` in turn."""

    def __init__(self, *statuses: int | Exception) -> None:
        self.statuses = list(statuses)
        self.received: list[dict[str, object]] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        outcome = self.statuses.pop(0) if self.statuses else 204
        if isinstance(outcome, Exception):
            raise outcome
        if outcome < 300:
            self.received.append(json.loads(request.content))
        return httpx.Response(outcome)


def config(**kwargs: object) -> RenewalConfig:
    base = RenewalConfig(
        detection_interval=0,
        alert_webhook_url="https://ops.example/hooks/certhub",
        alert_backoff=0.001,
        alert_backoff_cap=0.002,
    )
    return dataclasses.replace(base, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def webhook() -> Webhook:
    return Webhook()


@pytest.fixture
def jobs(fresh_world: World, webhook: Webhook) -> Iterator[Harness]:
    h = Harness(fresh_world, config(), webhook_transport=webhook.transport)
    try:
        yield h
    finally:
        h.close()


def detect(h: Harness) -> dict[str, int]:
    return h.call(h.service.run_detection()).counts


def state(world: World, device: str) -> str:
    status = world.store.get_renewal_status(device)
    assert status is not None
    return status.state


def move_to(world: World, device: str, attr: str, delta: dt.timedelta = dt.timedelta()) -> None:
    status = world.store.get_renewal_status(device)
    assert status is not None
    world.clock.set(getattr(status, attr) + delta)


def test_detection_walks_through_due_overdue_expired(jobs: Harness, fresh_world: World) -> None:
    world = fresh_world
    device = world.add_device()
    jobs.request(device, request_body(device))
    assert detect(jobs) == {"scheduled": 1, "due": 0, "overdue": 0, "expired": 0}
    move_to(world, device, "renew_after")
    detect(jobs)
    assert state(world, device) == "due"
    move_to(world, device, "renew_before")
    assert detect(jobs)["overdue"] == 1
    assert REGISTRY.get_sample_value("certhub_renewal_devices", {"state": "overdue"}) == 1
    move_to(world, device, "not_after")
    assert detect(jobs)["expired"] == 1
    assert state(world, device) == "expired"


def test_each_device_is_announced_once_per_state_change(
    jobs: Harness, fresh_world: World, webhook: Webhook
) -> None:
    world = fresh_world
    device = world.add_device()
    jobs.request(device, request_body(device))
    move_to(world, device, "renew_before")
    detect(jobs)
    detect(jobs)
    world.clock.advance(dt.timedelta(days=1))
    detect(jobs)
    assert [(a["deviceId"], a["state"]) for a in webhook.received] == [(device, "overdue")]
    alert = webhook.received[0]
    assert alert["event"] == "certificateRenewal.overdue"
    assert set(alert) >= {"serialNumber", "notAfter", "renewAfter", "renewBefore", "detectedAt"}
    move_to(world, device, "not_after")
    detect(jobs)
    detect(jobs)
    assert [a["state"] for a in webhook.received] == ["overdue", "expired"]


def test_renewing_clears_overdue_and_a_later_overdue_is_announced_again(
    jobs: Harness, fresh_world: World, webhook: Webhook
) -> None:
    world = fresh_world
    device = world.add_device()
    jobs.request(device, request_body(device))
    move_to(world, device, "renew_before")
    detect(jobs)
    jobs.request(device, request_body(device))  # renews late: a newer certificate exists
    detect(jobs)
    assert state(world, device) == "scheduled"
    status = world.store.get_renewal_status(device)
    assert status is not None and status.alerted_state is None
    move_to(world, device, "renew_before")
    detect(jobs)
    assert [a["state"] for a in webhook.received] == ["overdue", "overdue"]


def test_disabled_devices_are_not_announced(
    jobs: Harness, fresh_world: World, webhook: Webhook
) -> None:
    world = fresh_world
    device = world.add_device()
    jobs.request(device, request_body(device))
    record = world.store.get_device(device)
    assert record is not None
    world.store.update_device(
        dataclasses.replace(record, status="disabled"), None, now=world.clock.now()
    )
    move_to(world, device, "renew_before")
    assert detect(jobs)["overdue"] == 1
    assert webhook.received == []


def test_a_failing_webhook_is_retried_then_tried_again_next_run(fresh_world: World) -> None:
    world = fresh_world
    hook = Webhook(500, httpx.ConnectError("down"), 503, 500, 502, 200)
    h = Harness(world, config(alert_attempts=3), webhook_transport=hook.transport)
    try:
        device = world.add_device()
        h.request(device, request_body(device))
        move_to(world, device, "renew_before")
        report = h.call(h.service.run_detection())
        assert (report.alerts_sent, report.alerts_failed) == (0, 1)
        assert hook.received == []
        report = h.call(h.service.run_detection())
        assert (report.alerts_sent, report.alerts_failed) == (1, 0)
        assert [a["deviceId"] for a in hook.received] == [device]
    finally:
        h.close()


def test_webhook_backoff_is_capped_exponential_with_jitter() -> None:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    hook = Webhook(500, 500, 500, 500)
    notifier = WebhookNotifier(
        "https://x.example/h",
        rng=SeededRandom(3),
        attempts=4,
        backoff=1.0,
        backoff_cap=3.0,
        transport=hook.transport,
        sleep=sleep,
    )
    assert asyncio.run(notifier.send({"a": 1})) is False
    assert len(delays) == 3
    for delay, base in zip(delays, (1.0, 2.0, 3.0), strict=True):
        assert base / 2 <= delay <= base


def test_certificates_issued_by_dps_get_a_window_and_twin_property(
    jobs: Harness, fresh_world: World
) -> None:
    world = fresh_world
    device = world.add_device()
    leaf = world.issue(device, via="dps")
    report = jobs.call(jobs.service.run_detection())
    assert report.windows_assigned == 1
    status = world.store.get_renewal_status(device)
    assert status is not None and status.serial_hex == leaf.serial_hex
    assert RENEWAL_PROPERTY in world.store.get_twin(device).desired
    cursor = world.store.get_setting("renewal.sync_cursor")
    assert jobs.call(jobs.service.run_detection()).windows_assigned == 0
    assert world.store.get_setting("renewal.sync_cursor") == cursor  # does not drift back
    world.clock.advance(dt.timedelta(days=1))
    newer = world.issue(device, via="dps")  # DPS re-registration: the window follows it
    assert jobs.call(jobs.service.run_detection()).windows_assigned == 1
    status = world.store.get_renewal_status(device)
    assert status is not None and status.serial_hex == newer.serial_hex


def test_the_sync_reads_only_certificates_issued_elsewhere(
    jobs: Harness, fresh_world: World
) -> None:
    """Hub renewals get their window as they are issued; the detection run's cursor
    reads past them through the partial index of migration 0013 (searched, in order)."""
    world = fresh_world
    renewed, provisioned = world.add_device(), world.add_device()
    jobs.call(jobs.service.run_detection())
    start = world.clock.now()
    for _ in range(3):
        world.clock.advance(dt.timedelta(seconds=1))
        [_, done] = jobs.request(renewed, request_body(renewed))
        assert done.status == 200
    world.clock.advance(dt.timedelta(seconds=1))
    dps_leaf = world.issue(provisioned, via="dps")
    seen = world.store.live_certificates_since(start)
    assert [c.serial_hex for c in seen] == [dps_leaf.serial_hex]
    assert jobs.call(jobs.service.run_detection()).windows_assigned == 1
    status = world.store.get_renewal_status(renewed)  # windowed when issued
    hub_certs = [c for c in world.certificates(renewed) if c.requested_via == "hub"]
    assert (
        status is not None
        and status.serial_hex == max(hub_certs, key=lambda c: c.created_at).serial_hex
    )
    if world.store.dialect_name == "sqlite":
        with captured_sql(world.store.engine) as statements:
            world.store.live_certificates_since(start, "", 10)
        [(_, _, plan)] = query_plans(world, statements)
        assert (
            plan
            == "SEARCH certificates USING INDEX ix_certificates_created_at_not_hub (created_at>?)"
        )


def test_revoked_certificates_leave_the_renewal_status(jobs: Harness, fresh_world: World) -> None:
    world = fresh_world
    device = world.add_device()
    jobs.request(device, request_body(device))
    (cert,) = world.certificates(device)
    world.store.set_certificate_state(cert.serial_hex, "revoked", world.clock.now(), "test")
    assert jobs.call(jobs.service.run_detection()).rows_dropped == 1
    assert world.store.get_renewal_status(device) is None


def test_rebalancing_moves_crowded_windows_and_updates_twins(fresh_world: World) -> None:
    world = fresh_world
    policy = WindowPolicy(bucket_seconds=3600, capacity=2)
    h = Harness(world, config(windows=policy))
    try:
        devices = [world.add_device() for _ in range(5)]
        for device in devices:
            h.request(device, request_body(device))
        crowded = world.store.renewal_statuses(devices)
        first = crowded[devices[0]]
        world.store.put_renewal_windows(
            [
                NewRenewalWindow(
                    device_id=d,
                    serial_hex=s.serial_hex,
                    not_before=s.not_before,
                    not_after=s.not_after,
                    renew_after=first.renew_after,
                    renew_before=first.renew_before,
                )
                for d, s in crowded.items()
            ],
            world.clock.now(),
        )
        assert h.call(h.service.run_rebalance()) == 3
        after = world.store.renewal_statuses(devices)
        starts = [s.renew_after for s in after.values()]
        assert max(starts.count(t) for t in starts) <= 2
        moved = {d: s for d, s in after.items() if s.renew_after != first.renew_after}
        assert len(moved) == 3
        for device, status in moved.items():
            value = world.store.get_twin(device).desired[RENEWAL_PROPERTY]
            assert value["renewAfter"] == status.renew_after.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert h.call(h.service.run_rebalance()) == 0
    finally:
        h.close()


def test_a_fleet_issued_in_one_minute_gets_windows_within_the_admission_rate(
    fresh_world: World,
) -> None:
    """400 certificates issued in the same minute (DPS, CLI): the windows the server assigns
    keep the fleet's expected renewal rate within the admission rate at every instant,
    where the hash points alone would not."""
    world, rate = fresh_world, 0.0015
    h = Harness(world, config(admission_rate=rate, windows=WindowPolicy(bucket_seconds=1000)))
    try:
        devices = [world.add_device() for _ in range(400)]
        with world.store.transaction() as conn:
            for i, device in enumerate(devices):
                world.clock.set(START + dt.timedelta(seconds=i % 60))
                world.authority.issue(
                    device_id=device,
                    csr_der=csr_der(device),
                    policy_name="default",
                    requested_via="dps",
                    actor="test",
                    conn=conn,
                )
        assert h.call(h.service.run_detection()).windows_assigned == 400
        statuses = world.store.renewal_statuses(devices).values()
        placed = [Window(s.renew_after, s.renew_before) for s in statuses]
        policy = h.service.placer.policy
        hashed = [
            nominal_window(Validity(s.not_before, s.not_after), s.device_id, policy)
            for s in statuses
        ]
        assert expected_rate_peak(placed) <= rate
        assert expected_rate_peak(hashed) > rate
        assert h.call(h.service.run_rebalance()) == 0  # nothing to move
    finally:
        h.close()


def test_operations_are_deleted_after_their_retention(fresh_world: World) -> None:
    """Finished operations stay for ``operation_retention`` after they expire (their
    ``$rid`` answered again), then the detection run deletes them; pending ones stay."""
    world = fresh_world
    retention = dt.timedelta(hours=1)
    h = Harness(world, config(alert_webhook_url=None, operation_retention=retention))
    try:
        done, waiting = world.add_device(), world.add_device()
        [_, first] = h.request(done, request_body(done), rid="old")
        assert first.status == 200
        world.clock.advance(dt.timedelta(minutes=30))
        kept = pending_operation(world, waiting, "in-flight")  # expires, never finished
        world.clock.advance(h.service.config.operation_ttl + retention - dt.timedelta(minutes=30))
        report = h.call(h.service.run_detection())
        assert (report.operations_expired, report.operations_purged) == (1, 0)
        *_, again = h.request(done, request_body(done), rid="old")  # still kept: replayed
        assert (again.status, again.body) == (200, first.body)
        world.clock.advance(dt.timedelta(minutes=31))
        report = h.call(h.service.run_detection())
        assert report.operations_purged == 2  # "old" and the expired "in-flight"
        assert world.store.get_operation(kept) is None
        fresh = h.request(done, request_body(done), rid="old")  # a new request now
        assert [m.status for m in fresh] == [202, 200]
        assert fresh[1].body["correlationId"] != first.body["correlationId"]
    finally:
        h.close()
