"""Signing before the write transaction: what may be recorded, and the writer's time cap."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
from dps_support import CSR_API, HUB_HOST, DpsEnv, body, csr_b64, p256
from sqlalchemy.engine import Connection

from certhub.dps import Attestation
from certhub.dps.assign import Assigner
from certhub.dps.errors import BadRequest
from certhub.dps.presign import Presigned, Presigner
from certhub.dps.wire import RegisterRequest, parse_register_body
from certhub.dps.writer import BatchWriter
from certhub.rand import SystemRandom


def _request(att: Attestation, payload: bytes) -> RegisterRequest:
    return parse_register_body(payload, att.registration_id, CSR_API, strict_api_version=False)


def _presign(env: DpsEnv, att: Attestation, req: RegisterRequest) -> Presigned | None:
    [presigned] = Presigner(env.store, env.authority, SystemRandom()).presign([(att, req)])
    return presigned


def _assign(env: DpsEnv, att: Attestation, req: RegisterRequest, pre: Presigned | None) -> Any:
    assigner = Assigner(env.store, env.authority, hub_host=HUB_HOST, rng=SystemRandom())
    with env.store.transaction() as conn:
        return assigner.assign(conn, att, req, env.clock.now(), pre)


def test_the_presigned_leaf_is_the_one_recorded_for_a_new_device(env: DpsEnv) -> None:
    att = env.attest_sas("pre-1")
    req = _request(att, body(csr=csr_b64("pre-1")))
    pre = _presign(env, att, req)
    assert pre is not None and pre.new_device
    assert env.store.get_device("pre-1") is None  # signing wrote nothing
    outcome = _assign(env, att, req, pre)
    assert outcome.certificate_serial == pre.signed.leaf.serial_hex
    device = env.store.get_device("pre-1")
    assert device is not None and device.revocation_id == pre.signed.revocation_id
    [cert] = env.store.list_certificates(device_id="pre-1")
    assert cert.serial_hex == pre.signed.leaf.serial_hex


def test_reject_key_certified_between_signing_and_recording(env: DpsEnv) -> None:
    att = env.attest_sas("pre-2")
    env.provision(att, body(csr=csr_b64("pre-2")))
    key = p256()
    req = _request(att, body(csr=csr_b64("pre-2", key)))
    pre = _presign(env, att, req)
    assert pre is not None and not pre.new_device
    env.provision(att, body(csr=csr_b64("pre-2", key)))  # the same key, certified meanwhile
    with pytest.raises(BadRequest) as caught:
        _assign(env, att, req, pre)
    assert (caught.value.reason, caught.value.error_code) == ("key-reused", 400004)
    serials = {c.serial_hex for c in env.store.list_certificates(device_id="pre-2")}
    assert pre.signed.leaf.serial_hex not in serials


def test_a_key_certified_before_signing_is_refused_in_the_transaction(env: DpsEnv) -> None:
    """Pre-signing skips the key-history lookup; the transaction's check refuses it."""
    att = env.attest_sas("pre-5")
    key = p256()
    env.provision(att, body(csr=csr_b64("pre-5", key)))
    req = _request(att, body(csr=csr_b64("pre-5", key)))
    pre = _presign(env, att, req)
    assert pre is not None  # signed without looking at the history
    with pytest.raises(BadRequest) as caught:
        _assign(env, att, req, pre)
    assert (caught.value.reason, caught.value.error_code) == ("key-reused", 400004)
    assert len(env.store.list_certificates(device_id="pre-5")) == 1


def test_a_policy_change_after_signing_makes_the_transaction_sign_again(env: DpsEnv) -> None:
    env.create_policy("other", "120s")
    enrollment = env.enroll("pre-3")
    key = env.sas("pre-3", enrollment.primary_key)
    att = env.attest_sas("pre-3", key)
    req = _request(att, body(csr=csr_b64("pre-3")))
    pre = _presign(env, att, req)
    assert pre is not None and pre.signed.item.policy_name == "default"
    changed = dataclasses.replace(enrollment, credential_policy_name="other")
    env.store.update_enrollment(changed, None, now=env.clock.now())
    outcome = _assign(env, att, req, pre)
    assert outcome.certificate_serial != pre.signed.leaf.serial_hex
    [cert] = env.store.list_certificates(device_id="pre-3")
    assert cert.serial_hex == outcome.certificate_serial
    policy = env.store.get_policy(env.namespace_id, "other")
    assert policy is not None and cert.policy_id == policy.id


@pytest.mark.parametrize(
    ("setup", "payload"),
    [
        pytest.param("none", body(), id="skip/no-csr"),
        pytest.param("disabled-enrollment", body(csr=csr_b64("pre-4")), id="skip/disabled"),
        pytest.param("none", body(csr=csr_b64("someone-else")), id="skip/refused-csr"),
    ],
)
def test_nothing_is_presigned_where_the_transaction_must_decide(
    env: DpsEnv, setup: str, payload: bytes
) -> None:
    enrollment = env.enroll("pre-4")
    att = env.attest_sas("pre-4", env.sas("pre-4", enrollment.primary_key))
    if setup == "disabled-enrollment":
        disabled = dataclasses.replace(enrollment, provisioning_status="disabled")
        env.store.update_enrollment(disabled, None, now=env.clock.now())
    assert _presign(env, att, _request(att, payload)) is None


# -- the writer ---------------------------------------------------------------------------


def _writer(
    env: DpsEnv, gate: threading.Event, started: threading.Event | None = None, **kwargs: Any
) -> BatchWriter[int, int]:
    def work(conn: Connection, item: int) -> int:
        if item == 0 and started is not None:
            started.set()
            gate.wait(10)  # hold the first batch until the others are queued
        env.store.set_setting(f"pre.k{item}", "v", conn=conn)
        return item

    return BatchWriter(env.store, work, **kwargs)


@pytest.mark.parametrize(
    ("max_seconds", "batches"),
    [pytest.param(None, 2, id="one-transaction"), pytest.param(0.0, 6, id="capped")],
)
def test_the_time_cap_splits_a_batch_into_transactions(
    env: DpsEnv, max_seconds: float | None, batches: int
) -> None:
    gate, started = threading.Event(), threading.Event()
    writer = _writer(env, gate, started, max_seconds=max_seconds)
    futures = [writer.submit(0)]
    assert started.wait(10)
    futures += [writer.submit(i) for i in range(1, 6)]
    gate.set()
    assert [f.result(10) for f in futures] == list(range(6))
    writer.close()
    assert writer.batches == batches
    assert all(env.store.get_setting(f"pre.k{i}") == "v" for i in range(6))


def test_a_failing_prepare_step_leaves_the_work_to_the_transaction(env: DpsEnv) -> None:
    def prepare(items: list[int]) -> list[int]:
        raise RuntimeError("boom")

    writer = _writer(env, threading.Event(), prepare=prepare)
    assert writer.submit(3).result(10) == 3
    writer.close()
    assert env.store.get_setting("pre.k3") == "v"
