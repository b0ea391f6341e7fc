"""Two-phase renewal at connect: issued -> active on first use, older ones superseded,
the old certificate admitted until the new one is used (and within the grace period)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from renewal_support import Harness, World, request_body

from certhub.pki import LeafPolicy
from certhub.registry import Conflict, NotFound
from certhub.renewal import Admission


def connect(h: Harness, device: str, serial: str, state: str | None = None) -> Admission:
    return h.call(h.service.on_authenticated(device, serial, state))


def state_of(world: World, serial: str) -> str:
    cert = world.store.get_certificate(serial)
    assert cert is not None
    return cert.state


def renew_through_hub(h: Harness, world: World, device: str) -> str:
    assert [m.status for m in h.request(device, request_body(device))] == [202, 200]
    return max(world.certificates(device), key=lambda c: c.created_at).serial_hex


@pytest.fixture(scope="module")
def graceful(world: World) -> str:
    """A policy whose superseded certificates are admitted for 60 s after the new one is used."""
    policy = world.authority.create_policy(LeafPolicy.create("graceful", "30d"), actor="test")
    world.store.update_policy(policy.id, world.clock.now(), superseded_grace_seconds=60)
    world.authority.invalidate()
    return policy.name


def test_first_use_activates_the_new_certificate_and_supersedes_the_old(
    harness: Harness, world: World
) -> None:
    device = world.add_device()
    old = world.issue(device).serial_hex
    assert connect(harness, device, old) == Admission(True, "activated")
    assert state_of(world, old) == "active"
    world.clock.advance(dt.timedelta(minutes=1))
    new = renew_through_hub(harness, world, device)
    assert state_of(world, new) == "issued"
    # until the new certificate is used, the old one keeps working
    assert connect(harness, device, old, "active") == Admission(True, "active")
    assert connect(harness, device, old) == Admission(True, "active")
    assert state_of(world, new) == "issued"
    # the device swaps: issued -> active, active -> superseded
    assert connect(harness, device, new) == Admission(True, "activated")
    assert (state_of(world, new), state_of(world, old)) == ("active", "superseded")
    [audit] = world.store.list_audit("device", device, action="certificate.supersede")
    assert audit.details == {"activated": new, "superseded": [old]}
    assert (audit.actor, audit.at) == ("hub", world.clock.now())
    record = world.store.get_certificate(new)
    assert record is not None and record.first_used_at == world.clock.now()
    # and the old one is refused from then on (grace 0)
    assert connect(harness, device, old) == Admission(False, "certificate-superseded")
    assert connect(harness, device, new) == Admission(True, "active")


def test_superseded_admitted_within_the_grace_period_then_refused(
    harness: Harness, world: World, graceful: str
) -> None:
    device = world.add_device(policy=graceful)
    old = world.issue(device, policy=graceful).serial_hex
    connect(harness, device, old)
    world.clock.advance(dt.timedelta(minutes=1))
    new = renew_through_hub(harness, world, device)
    assert connect(harness, device, new) == Admission(True, "activated")
    world.clock.advance(dt.timedelta(seconds=59))
    assert connect(harness, device, old) == Admission(True, "superseded-within-grace")
    assert state_of(world, old) == "superseded"
    world.clock.advance(dt.timedelta(seconds=1))
    assert connect(harness, device, old) == Admission(False, "certificate-superseded")


def test_dps_reissued_certificates_follow_the_same_two_phases(
    harness: Harness, world: World
) -> None:
    device = world.add_device()
    old = world.issue(device, via="dps").serial_hex
    connect(harness, device, old)
    world.clock.advance(dt.timedelta(minutes=1))
    new = world.issue(device, via="dps").serial_hex
    assert connect(harness, device, old) == Admission(True, "active")
    assert connect(harness, device, new) == Admission(True, "activated")
    assert connect(harness, device, old) == Admission(False, "certificate-superseded")


def test_never_used_issued_certificate_is_superseded_by_a_newer_one_in_use(
    harness: Harness, world: World
) -> None:
    device = world.add_device()
    first = world.issue(device).serial_hex
    world.clock.advance(dt.timedelta(seconds=1))
    second = world.issue(device).serial_hex
    assert connect(harness, device, second) == Admission(True, "activated")
    assert state_of(world, first) == "superseded"


def test_activating_an_older_certificate_leaves_a_newer_issued_one_alone(
    harness: Harness, world: World
) -> None:
    """The device lost the response of its second renewal and connects with the first."""
    device = world.add_device()
    first = world.issue(device).serial_hex
    world.clock.advance(dt.timedelta(seconds=1))
    second = world.issue(device).serial_hex
    assert connect(harness, device, first) == Admission(True, "activated")
    assert (state_of(world, first), state_of(world, second)) == ("active", "issued")
    assert connect(harness, device, second) == Admission(True, "activated")
    assert state_of(world, first) == "superseded"


def test_activation_keeps_the_window_on_the_newest_certificate(
    harness: Harness, world: World
) -> None:
    device = world.add_device()
    serial = world.issue(device).serial_hex
    assert world.store.get_renewal_status(device) is None  # DPS issued it: no window yet
    connect(harness, device, serial)
    status = world.store.get_renewal_status(device)
    assert status is not None and status.serial_hex == serial
    assert "certificateRenewal" in world.store.get_twin(device).desired


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param("unknown", Admission(True, "not-in-inventory"), id="admit/not-in-inventory"),
        pytest.param("revoked", Admission(False, "certificate-revoked"), id="reject/revoked"),
        pytest.param("expired", Admission(False, "certificate-expired"), id="reject/expired"),
        pytest.param(
            "other-device", Admission(False, "certificate-of-another-device"), id="reject/other"
        ),
    ],
)
def test_other_certificate_states(
    harness: Harness, world: World, setup: str, expected: Admission
) -> None:
    device = world.add_device()
    serial = world.issue(device).serial_hex
    now = world.clock.now()
    if setup == "unknown":
        serial = "ab" * 16
    elif setup in ("revoked", "expired"):
        world.store.set_certificate_state(serial, setup, now, reason="test")  # type: ignore[arg-type]
    elif setup == "other-device":
        device = world.add_device()
    assert connect(harness, device, serial) == expected


def test_a_turn_of_activations_is_decided_one_by_one(harness: Harness, world: World) -> None:
    """Activations queued together share one writer turn (one window assignment for all):
    each still gets its own answer; an unknown or revoked serial changes nothing."""
    devices = [world.add_device() for _ in range(3)]
    serials = [world.issue(d).serial_hex for d in devices]
    revoked = devices[2]
    world.store.set_certificate_state(serials[2], "revoked", world.clock.now(), "test")
    writer = harness.service.writer

    async def together() -> list[object]:
        futures = [writer.activate(s) for s in [serials[0], "ab" * 16, serials[2], serials[1]]]
        return await asyncio.gather(
            *(asyncio.wrap_future(f) for f in futures), return_exceptions=True
        )

    first, unknown, refused, second = harness.call(together())
    assert isinstance(unknown, NotFound)
    assert isinstance(refused, Conflict) and refused.reason == "invalid-transition"
    for result, device, serial in (
        (first, devices[0], serials[0]),
        (second, devices[1], serials[1]),
    ):
        assert isinstance(result, tuple)
        cert, superseded = result
        assert (cert.serial_hex, cert.state, superseded) == (serial, "active", [])
        status = world.store.get_renewal_status(device)
        assert status is not None and status.serial_hex == serial
        assert "certificateRenewal" in world.store.get_twin(device).desired
    assert state_of(world, serials[2]) == "revoked"
    assert world.store.get_renewal_status(revoked) is None
