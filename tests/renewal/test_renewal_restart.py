"""All state is in the store: what a dead server accepted is completed after a restart,
and never issued twice."""

from __future__ import annotations

import datetime as dt

from renewal_support import Harness, World, pending_operation, request_body

from certhub.renewal import RenewalConfig


def test_accepted_operation_is_completed_after_restart(world: World) -> None:
    device = world.add_device()
    op_id = pending_operation(world, device, "r1")
    h = Harness(world)  # the restarted server
    try:
        op = world.store.get_operation(op_id)
        assert op is not None and (op.state, op.delivered) == ("completed", False)
        (cert,) = world.certificates(device)
        assert cert.operation_id == op_id and op.certificate_serial == cert.serial_hex
        (msg,) = h.subscribe(device)  # the device reconnects and subscribes
        assert (msg.status, msg.rid) == (200, "r1")
        again = h.request(device, request_body(device), rid="r1")  # and resubmits
        assert [m.status for m in again] == [202, 200]
        assert again[1].body == msg.body
        assert len(world.certificates(device)) == 1
    finally:
        h.close()


def test_certificate_recorded_before_the_crash_is_not_issued_again(world: World) -> None:
    device = world.add_device()
    op_id = pending_operation(world, device, "r2")
    op = world.store.get_operation(op_id)
    assert op is not None
    leaf = world.authority.issue(
        device_id=device,
        csr_der=op.csr_der,
        policy_name="default",
        requested_via="hub",
        actor="hub",
        operation_id=op_id,
    )
    h = Harness(world)
    try:
        op = world.store.get_operation(op_id)
        assert op is not None and op.state == "completed"
        assert op.certificate_serial == leaf.serial_hex
        assert [c.serial_hex for c in world.certificates(device)] == [leaf.serial_hex]
    finally:
        h.close()


def test_operation_past_its_expiry_at_restart_is_expired_not_issued(world: World) -> None:
    device = world.add_device()
    op_id = pending_operation(world, device, "r3")
    world.clock.advance(dt.timedelta(minutes=6))
    h = Harness(world)
    try:
        op = world.store.get_operation(op_id)
        assert op is not None and op.state == "expired"
        assert world.certificates(device) == []
        assert [m.status for m in h.request(device, request_body(device))] == [202, 200]
    finally:
        h.close()


def test_stuck_operation_is_recovered_by_the_detection_run(world: World) -> None:
    h = Harness(world, RenewalConfig(detection_interval=0, stuck_after=dt.timedelta(seconds=30)))
    try:
        device = world.add_device()
        op_id = pending_operation(world, device, "r4")  # e.g. another node died
        h.publisher.subscribed.add(device)
        h.call(h.service.run_detection())
        op = world.store.get_operation(op_id)
        assert op is not None and op.state == "pending"  # not stuck yet
        world.clock.advance(dt.timedelta(seconds=31))
        h.call(h.service.run_detection())
        h.sync()
        op = world.store.get_operation(op_id)
        assert op is not None and (op.state, op.delivered) == ("completed", True)
        assert [m.status for m in h.publisher.take(device)] == [200]
    finally:
        h.close()


def test_restart_keeps_undelivered_responses(world: World) -> None:
    device = world.add_device()
    h = Harness(world)
    h.request(device, request_body(device), rid="r5", subscribed=False)
    h.close()
    h = Harness(world)
    try:
        (msg,) = h.subscribe(device)
        assert (msg.status, msg.rid) == (200, "r5")
    finally:
        h.close()
