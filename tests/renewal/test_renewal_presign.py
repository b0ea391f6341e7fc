"""Renewals signed between the writer's turns: recorded only while still valid."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from renewal_support import World, csr_der, make_key

from certhub.authority import SignedItem
from certhub.registry.records import OperationRecord
from certhub.renewal.flow import Accepted, Finished, Submission, accept, issue
from certhub.renewal.placer import WindowPlacer
from certhub.renewal.presign import begin_presign, presign
from certhub.renewal.window import WindowPolicy


def _pending(world: World, device_id: str, csr: bytes) -> OperationRecord:
    with world.store.transaction() as conn:
        (outcome,) = accept(
            world.store,
            [Submission(device_id, str(uuid.uuid4()), csr, None)],
            now=world.clock.now(),
            ttl=dt.timedelta(minutes=5),
            admit=lambda _device, _status: None,
            new_id=lambda: str(uuid.uuid4()),
            conn=conn,
        )
    assert isinstance(outcome, Accepted)
    assert outcome.policy_name == "default"  # the policy it was accepted under
    return outcome.operation


def _issue(world: World, op: OperationRecord, presigned: dict[int, SignedItem]) -> Finished:
    with world.store.transaction() as conn:
        (finished,) = issue(
            world.store,
            world.authority,
            [op.id],
            now=world.clock.now(),
            placer=WindowPlacer(WindowPolicy()),
            new_id=lambda: str(uuid.uuid4()),
            origin="test",
            conn=conn,
            presigned=presigned,
        )
    return finished


def _body(finished: Finished) -> Any:
    body = finished.operation.response_body
    assert body is not None
    return body


def test_the_presigned_leaf_is_the_one_recorded(world: World) -> None:
    device = world.add_device()
    op = _pending(world, device, csr_der(device))
    presigned = presign(world.store, world.authority, [op])
    assert set(presigned) == {op.id}
    assert world.certificates(device) == []  # signing wrote nothing
    finished = _issue(world, op, presigned)
    assert finished.operation.state == "completed"
    assert finished.operation.certificate_serial == presigned[op.id].leaf.serial_hex
    assert [c.serial_hex for c in world.certificates(device)] == [presigned[op.id].leaf.serial_hex]


def test_reject_key_certified_between_signing_and_recording(world: World) -> None:
    device = world.add_device()
    key = make_key()
    op = _pending(world, device, csr_der(device, key))
    presigned = presign(world.store, world.authority, [op])
    world.authority.issue(  # the same key certified meanwhile (say, through DPS)
        device_id=device,
        csr_der=csr_der(device, key),
        policy_name="default",
        requested_via="dps",
        actor="test",
    )
    finished = _issue(world, op, presigned)
    assert finished.operation.state == "failed"
    body = _body(finished)
    assert (body["errorCode"], body["info"]["credentialError"]) == (400040, "KeyReused")
    serials = {c.serial_hex for c in world.certificates(device)}
    assert presigned[op.id].leaf.serial_hex not in serials


def test_a_key_certified_before_is_refused_in_the_transaction(world: World) -> None:
    """Pre-signing does not look up the device's key history (no query, no CSR parse in
    the server): the transaction does, and the answer is the same KeyReused."""
    device = world.add_device()
    key = make_key()
    world.authority.issue(
        device_id=device,
        csr_der=csr_der(device, key),
        policy_name="default",
        requested_via="dps",
        actor="test",
    )
    op = _pending(world, device, csr_der(device, key))
    presigned = presign(world.store, world.authority, [op])
    assert set(presigned) == {op.id}  # signed, not yet judged against the history
    finished = _issue(world, op, presigned)
    assert finished.operation.state == "failed"
    body = _body(finished)
    assert (body["errorCode"], body["info"]["credentialError"]) == (400040, "KeyReused")
    assert len(world.certificates(device)) == 1


def test_a_new_revocation_id_after_signing_makes_the_transaction_sign_again(
    world: World,
) -> None:
    device = world.add_device()
    op = _pending(world, device, csr_der(device))
    presigned = presign(world.store, world.authority, [op])
    world.store.rotate_revocation_id(device, b"\x01" * 32, world.clock.now())
    finished = _issue(world, op, presigned)
    assert finished.operation.state == "completed"
    assert finished.operation.certificate_serial != presigned[op.id].leaf.serial_hex
    [cert] = world.certificates(device)
    assert cert.revocation_id == b"\x01" * 32


def test_nothing_is_presigned_for_a_device_without_a_policy(world: World) -> None:
    device = world.add_device(policy=None)
    op = dataclasses.replace(_pending(world, world.add_device(), csr_der(device)), device_id=device)
    assert presign(world.store, world.authority, [op]) == {}


def test_begin_presign_takes_the_policies_the_caller_read(world: World) -> None:
    """The writer passes the policies its accept read in the same transaction."""
    device = world.add_device()
    op = _pending(world, device, csr_der(device))
    none = begin_presign(world.store, world.authority, [op], policies={device: None})
    assert none.result() == {}
    signed = begin_presign(world.store, world.authority, [op], policies={device: "default"})
    (entry,) = signed.result().values()
    assert (entry.item.operation_id, entry.item.policy_name) == (op.id, "default")
