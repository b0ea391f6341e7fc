"""The credentials API through RenewalService, against a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from renewal_support import (
    Harness,
    Message,
    World,
    csr_b64,
    csr_der,
    make_key,
    new_device_id,
    pending_operation,
    request_body,
)

from certhub.pki import LeafPolicy
from certhub.renewal import RENEWAL_PROPERTY, RenewalConfig

ERROR_MEMBERS = {"errorCode", "message", "trackingId", "timestampUtc", "info"}


def assert_error(msg: Message, code: int) -> dict[str, Any]:
    assert msg.status == code // 1000
    assert set(msg.body) >= ERROR_MEMBERS
    assert msg.body["errorCode"] == code
    assert msg.body["timestampUtc"].endswith("Z")
    return dict(msg.body)


def test_renewal_answers_202_then_200_with_the_chain(harness: Harness, world: World) -> None:
    device = world.add_device()
    key = make_key()
    body = json.dumps({"id": device, "csr": csr_b64(device, key), "replace": None}).encode()
    accepted, done = harness.request(device, body, rid="42")
    assert (accepted.status, done.status) == (202, 200)
    assert accepted.topic == "$iothub/credentials/res/202/?$rid=42"
    assert done.topic == "$iothub/credentials/res/200/?$rid=42"
    assert set(accepted.body) == {"correlationId", "operationExpires"}
    expires = dt.datetime.fromisoformat(accepted.body["operationExpires"].replace("Z", "+00:00"))
    assert expires == (world.clock.now() + dt.timedelta(minutes=5)).replace(microsecond=0)
    assert done.body["correlationId"] == accepted.body["correlationId"]
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in done.body["certificates"]]
    assert len(chain) == 3
    leaf, ica, root = chain
    assert leaf.subject.rfc4514_string() == f"CN={device}"
    assert leaf.issuer == ica.subject and ica.issuer == root.subject == root.issuer
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert leaf.public_key().public_bytes(der, pub) == key.public_key().public_bytes(der, pub)
    (record,) = world.certificates(device)
    assert (record.state, record.requested_via) == ("issued", "hub")
    op = world.store.find_operation(device, "42")
    assert op is not None and (op.state, op.delivered, op.certificate_serial) == (
        "completed",
        True,
        record.serial_hex,
    )
    assert record.operation_id == op.id


def test_the_window_is_written_to_the_twin_and_the_status(harness: Harness, world: World) -> None:
    device = world.add_device()
    harness.request(device, request_body(device))
    (cert,) = world.certificates(device)
    status = world.store.get_renewal_status(device)
    assert status is not None and status.serial_hex == cert.serial_hex
    assert status.state == "scheduled"
    validity = (cert.not_after - cert.not_before).total_seconds()
    fraction = (status.renew_after - cert.not_before).total_seconds() / validity
    assert 0.75 <= fraction <= 0.85
    twin = world.store.get_twin(device)
    assert twin.desired[RENEWAL_PROPERTY] == {
        "renewAfter": status.renew_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "renewBefore": status.renew_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    meta = twin.metadata["desired"][RENEWAL_PROPERTY]
    assert meta["$lastUpdatedVersion"] == twin.desired_version
    events = [e for e in world.store.events_after(0, limit=100_000) if e.device_id == device]
    assert [e.kind for e in events] == ["twin.desired"]
    assert events[0].payload["patch"] == {RENEWAL_PROPERTY: twin.desired[RENEWAL_PROPERTY]}
    assert events[0].payload["version"] == twin.desired_version


@pytest.mark.parametrize(
    "replace",
    [pytest.param(None, id="replace-null"), pytest.param(..., id="replace-missing")],
)
def test_null_and_missing_replace_mean_the_same(
    harness: Harness, world: World, replace: Any
) -> None:
    device = world.add_device()
    pending_operation(world, device, "a")
    (conflict,) = harness.request(device, request_body(device, replace))
    assert assert_error(conflict, 409005)["info"]["requestId"] == "a"


# -- every error code ------------------------------------------------------------------------


def _p521_csr(device: str) -> str:
    key = ec.generate_private_key(ec.SECP521R1())
    return csr_b64(device, key)


def _ed25519_csr(device: str) -> str:
    return csr_b64(device, ed25519.Ed25519PrivateKey.generate())


def _bad_signature_csr(device: str) -> str:
    der = bytearray(csr_der(device))
    der[-5] ^= 0x55  # inside the signature
    return base64.b64encode(bytes(der)).decode()


def _no_cn_csr(device: str) -> str:
    key = make_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


BodyMaker = Callable[[str], bytes]

IMMEDIATE_REJECTIONS = [
    pytest.param(lambda d: b"{not json", 400004, None, id="reject/not-json"),
    pytest.param(lambda d: b"[1, 2]", 400004, None, id="reject/not-an-object"),
    pytest.param(
        lambda d: json.dumps({"csr": csr_b64(d)}).encode(), 400004, None, id="reject/no-id"
    ),
    pytest.param(lambda d: json.dumps({"id": d}).encode(), 400004, None, id="reject/no-csr"),
    pytest.param(
        lambda d: json.dumps({"id": 7, "csr": csr_b64(d)}).encode(),
        400004,
        None,
        id="reject/id-not-a-string",
    ),
    pytest.param(
        lambda d: json.dumps({"id": d, "csr": ["x"]}).encode(),
        400004,
        None,
        id="reject/csr-not-a-string",
    ),
    pytest.param(
        lambda d: json.dumps({"id": d, "csr": csr_b64(d), "replace": 5}).encode(),
        400004,
        None,
        id="reject/replace-not-a-string",
    ),
    pytest.param(
        lambda d: json.dumps({"id": d, "csr": csr_b64(d), "replace": ""}).encode(),
        400004,
        None,
        id="reject/replace-empty",
    ),
    pytest.param(
        lambda d: json.dumps({"id": d, "csr": "not base64!"}).encode(),
        400040,
        "FailedToDecodeCsr",
        id="reject/csr-not-base64",
    ),
    pytest.param(
        lambda d: json.dumps({"id": d, "csr": "A" * 40_000}).encode(),
        400040,
        "CsrTooLarge",
        id="reject/csr-too-large",
    ),
    pytest.param(
        lambda d: json.dumps({"id": "someone-else", "csr": csr_b64(d)}).encode(),
        401002,
        None,
        id="reject/id-not-the-authenticated-device",
    ),
]


@pytest.mark.parametrize(("make", "code", "credential_error"), IMMEDIATE_REJECTIONS)
def test_requests_refused_before_an_operation_exists(
    harness: Harness, world: World, make: BodyMaker, code: int, credential_error: str | None
) -> None:
    device = world.add_device()
    (msg,) = harness.request(device, make(device), rid="7")
    body = assert_error(msg, code)
    assert msg.rid == "7"
    if credential_error is not None:
        assert body["info"]["credentialError"] == credential_error
        assert body["info"]["credentialMessage"]
    assert world.store.find_operation(device, "7") is None
    assert world.certificates(device) == []


CSR_REJECTIONS = [
    pytest.param(
        lambda d: base64.b64encode(b"\x30\x03\x02\x01\x00").decode(),
        "FailedToDecodeCsr",
        id="reject/csr-malformed",
    ),
    pytest.param(_bad_signature_csr, "InvalidCsrSignature", id="reject/csr-signature-invalid"),
    pytest.param(
        lambda d: csr_b64("another-device"), "CommonNameMismatch", id="reject/cn-mismatch"
    ),
    pytest.param(_no_cn_csr, "CommonNameMissing", id="reject/cn-missing"),
    pytest.param(_p521_csr, "KeyTypeNotAllowed", id="reject/key-type-p521"),
    pytest.param(_ed25519_csr, "KeyTypeNotAllowed", id="reject/key-type-ed25519"),
]


@pytest.mark.parametrize(("make_csr", "credential_error"), CSR_REJECTIONS)
def test_csr_refused_by_the_authority_is_400040_after_the_202(
    harness: Harness, world: World, make_csr: Callable[[str], str], credential_error: str
) -> None:
    device = world.add_device()
    body = json.dumps({"id": device, "csr": make_csr(device)}).encode()
    accepted, failed = harness.request(device, body, rid="9")
    assert accepted.status == 202
    error = assert_error(failed, 400040)
    assert error["info"]["credentialError"] == credential_error
    assert error["info"]["correlationId"] == accepted.body["correlationId"]
    assert "retryAfter" not in error
    op = world.store.find_operation(device, "9")
    assert op is not None and (op.state, op.response_status) == ("failed", 400)
    assert world.certificates(device) == []


def test_reject_key_reused(harness: Harness, world: World) -> None:
    device = world.add_device()
    key = make_key()
    body = json.dumps({"id": device, "csr": csr_b64(device, key)}).encode()
    assert [m.status for m in harness.request(device, body)] == [202, 200]
    _, failed = harness.request(device, body)
    assert assert_error(failed, 400040)["info"]["credentialError"] == "KeyReused"
    assert len(world.certificates(device)) == 1


def test_reject_unknown_operation(harness: Harness, world: World) -> None:
    device = world.add_device()
    (msg,) = harness.request(device, request_body(device), operation="getCertificate")
    assert_error(msg, 400004)


def test_reject_device_not_found(harness: Harness, world: World) -> None:
    (msg,) = harness.request("ghost", request_body("ghost"))
    assert_error(msg, 404001)


def test_reject_device_without_policy(harness: Harness, world: World) -> None:
    device = world.add_device(policy=None)
    (msg,) = harness.request(device, request_body(device))
    assert_error(msg, 412005)


def test_reject_operation_active(harness: Harness, world: World) -> None:
    device = world.add_device()
    pending_operation(world, device, "a")
    (msg,) = harness.request(device, request_body(device), rid="b")
    error = assert_error(msg, 409005)
    op = world.store.find_operation(device, "a")
    assert op is not None
    assert error["info"]["requestId"] == "a"
    assert error["info"]["operationExpires"] == op.expires_at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert world.store.find_operation(device, "b") is None


def test_reject_replace_names_another_request(harness: Harness, world: World) -> None:
    device = world.add_device()
    pending_operation(world, device, "a")
    (msg,) = harness.request(device, request_body(device, "zzz"), rid="b")
    assert_error(msg, 412001)


def test_reject_replace_with_nothing_active(harness: Harness, world: World) -> None:
    device = world.add_device()
    (msg,) = harness.request(device, request_body(device, "a"), rid="b")
    assert_error(msg, 412001)


def test_reject_resubmitting_a_replaced_rid(harness: Harness, world: World) -> None:
    device = world.add_device()
    pending_operation(world, device, "a")
    harness.request(device, request_body(device, "*"), rid="b")
    (msg,) = harness.request(device, request_body(device), rid="a")
    assert_error(msg, 400004)


def test_reject_throttled_with_retry_after(world: World) -> None:
    config = RenewalConfig(detection_interval=0, admission_rate=1.0, admission_burst=1)
    h = Harness(world, config)
    try:
        first, second = world.add_device(), world.add_device()
        assert [m.status for m in h.request(first, request_body(first))] == [202, 200]
        (msg,) = h.request(second, request_body(second), rid="t")
        error = assert_error(msg, 429002)
        assert error["retryAfter"] >= 1
        assert world.store.find_operation(second, "t") is None
        world.clock.advance(dt.timedelta(seconds=error["retryAfter"]))
        assert [m.status for m in h.request(second, request_body(second), rid="t")] == [202, 200]
    finally:
        h.close()


# -- replace --------------------------------------------------------------------------------


@pytest.mark.parametrize("replace", [pytest.param("*", id="star"), pytest.param("a", id="rid")])
def test_replace_takes_over_the_active_operation(
    harness: Harness, world: World, replace: str
) -> None:
    device = world.add_device()
    pending_operation(world, device, "a")
    accepted, done = harness.request(device, request_body(device, replace), rid="b")
    assert (accepted.status, done.status, done.rid) == (202, 200, "b")
    old = world.store.find_operation(device, "a")
    assert old is not None and old.state == "replaced"
    harness.call(harness.service.recover())  # a replaced operation is never issued
    assert harness.subscribe(device) == []
    assert len(world.certificates(device)) == 1


def test_an_undelivered_response_does_not_block_a_new_request(
    harness: Harness, world: World
) -> None:
    device = world.add_device()
    assert harness.request(device, request_body(device), rid="a", subscribed=False) == []
    assert [m.status for m in harness.request(device, request_body(device), rid="b")] == [202, 200]
    (kept,) = harness.subscribe(device)  # the first response is still delivered
    assert (kept.status, kept.rid) == (200, "a")


def test_star_replace_without_an_active_operation_is_a_plain_request(
    harness: Harness, world: World
) -> None:
    device = world.add_device()
    assert [m.status for m in harness.request(device, request_body(device, "*"))] == [202, 200]


def test_after_delivery_a_new_request_needs_no_replace(harness: Harness, world: World) -> None:
    device = world.add_device()
    assert [m.status for m in harness.request(device, request_body(device))] == [202, 200]
    assert [m.status for m in harness.request(device, request_body(device))] == [202, 200]
    assert len(world.certificates(device)) == 2


# -- same rid, reconnect, restart --------------------------------------------------------------


def test_same_rid_returns_the_same_result_and_no_second_certificate(
    harness: Harness, world: World
) -> None:
    device = world.add_device()
    first = harness.request(device, request_body(device), rid="same")
    again = harness.request(device, request_body(device), rid="same")
    assert [m.status for m in again] == [202, 200]
    assert [m.body for m in again] == [m.body for m in first]
    assert len(world.certificates(device)) == 1


def test_same_rid_replays_a_failure(harness: Harness, world: World) -> None:
    device = world.add_device()
    bad = json.dumps({"id": device, "csr": csr_b64("other")}).encode()
    first = harness.request(device, bad, rid="x")
    again = harness.request(device, request_body(device), rid="x")
    assert [m.body for m in again] == [m.body for m in first]
    assert world.certificates(device) == []


def test_response_kept_for_a_disconnected_device_until_it_subscribes(
    harness: Harness, world: World
) -> None:
    device = world.add_device()
    assert harness.request(device, request_body(device), rid="r", subscribed=False) == []
    op = world.store.find_operation(device, "r")
    assert op is not None and (op.state, op.delivered) == ("completed", False)
    (msg,) = harness.subscribe(device)
    assert (msg.status, msg.rid) == (200, "r")
    assert msg.body == op.response_body
    op = world.store.find_operation(device, "r")
    assert op is not None and op.delivered
    assert harness.subscribe(device) == []


def test_response_not_delivered_after_operation_expires(harness: Harness, world: World) -> None:
    device = world.add_device()
    harness.request(device, request_body(device), rid="r", subscribed=False)
    world.clock.advance(dt.timedelta(minutes=5, seconds=1))
    assert harness.subscribe(device) == []
    # and it no longer blocks a new request
    assert [m.status for m in harness.request(device, request_body(device))] == [202, 200]


def test_window_counts_from_issuance_not_from_the_backdated_not_before(
    harness: Harness, world: World
) -> None:
    """A 60-second development certificate backdated 5 minutes is due 45-51 s after it
    was issued — not at once, as 75 % of its 6-minute notBefore..notAfter would say."""
    name = f"dev60-{new_device_id('p')}"
    world.authority.create_policy(
        LeafPolicy.create(name, "60s", backdate="5m", development=True), actor="test"
    )
    device = world.add_device(policy=name)
    issued_at = world.clock.now()
    harness.request(device, request_body(device))
    (cert,) = world.certificates(device)
    assert cert.not_before <= issued_at - dt.timedelta(minutes=4)  # backdated
    status = world.store.get_renewal_status(device)
    assert status is not None and status.state == "scheduled"
    assert issued_at + dt.timedelta(seconds=45) <= status.renew_after
    assert status.renew_before <= issued_at + dt.timedelta(seconds=52)
    # the rebalancing job reads the same issuance time back with the window
    (row,) = [r for r in world.store.renewal_windows_after(issued_at) if r.device_id == device]
    assert row.issued_at == cert.created_at
