"""The provisioning core: registration flows, assignment, issuance and their refusals."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from typing import Any

import pytest
from cryptography.x509.oid import NameOID
from dps_support import (
    CSR_API,
    HUB_HOST,
    OLD_API,
    DpsEnv,
    body,
    chain_of,
    csr_b64,
    onboarding_ca,
    p256,
)

from certhub.dps import DpsResponse, DpsSettings
from certhub.pki import revocation_id_of
from certhub.sas import derive_device_key
from serverkit import self_signed


def _assigned(response: DpsResponse) -> dict[str, Any]:
    assert response.status == 200, response.body
    assert response.body["status"] == "assigned"
    state: dict[str, Any] = response.body["registrationState"]
    return state


def test_group_sas_with_top_level_csr_issues_a_chain(any_env: DpsEnv) -> None:
    env = any_env
    att = env.attest_sas("dev-1")
    first = env.register(att, body(registrationId="dev-1", csr=csr_b64("dev-1")))
    assert first.status == 202
    assert first.body["status"] == "assigning"
    assert first.retry_after == 1
    final = env.poll(att, first.body["operationId"])
    state = _assigned(final)
    assert final.body["operationId"] == first.body["operationId"]
    assert state["registrationId"] == state["deviceId"] == "dev-1"
    assert state["assignedHub"] == HUB_HOST
    assert state["substatus"] == "initialAssignment"
    assert state["symmetricKey"] == {"enrollmentGroupId": "default"}
    assert {"createdDateTimeUtc", "lastUpdatedDateTimeUtc", "etag"} <= state.keys()
    assert "payload" not in state
    leaf, ica, root = chain_of(state)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-1"
    leaf.verify_directly_issued_by(ica)
    ica.verify_directly_issued_by(root)
    device = env.store.get_device("dev-1")
    assert device is not None
    assert device.auth_type == "certificateAuthority"
    assert device.policy_name == "default"
    assert revocation_id_of(leaf) == device.revocation_id
    cert = env.store.get_certificate(format(leaf.serial_number, "032x"))
    assert cert is not None and cert.requested_via == "dps"


def test_csr_in_payload_is_echoed_in_payload(env: DpsEnv) -> None:
    att = env.attest_sas("dev-2")
    payload = body(registrationId="dev-2", payload={"csr": csr_b64("dev-2")})
    final = env.provision(att, payload, OLD_API)
    state = _assigned(final)
    assert state["payload"] == {"issuedCertificateChain": state["issuedCertificateChain"]}
    assert len(state["issuedCertificateChain"]) == 3


def test_top_level_csr_with_old_api_version_is_accepted_by_default(env: DpsEnv) -> None:
    att = env.attest_sas("dev-3")
    final = env.provision(att, body(csr=csr_b64("dev-3")), OLD_API)
    assert "issuedCertificateChain" in _assigned(final)


def test_strict_api_version_refuses_a_top_level_csr(env: DpsEnv) -> None:
    strict = env.make_service(DpsSettings(hub_host=HUB_HOST, strict_api_version=True))
    att = env.attest_sas("dev-4")
    response = strict.respond(strict.register, att, body(csr=csr_b64("dev-4")), OLD_API)
    assert (response.status, response.body["errorCode"]) == (400, 400003)
    # payload.csr is accepted with any api-version, even in strict mode
    ok = strict.respond(strict.register, att, body(payload={"csr": csr_b64("dev-4")}), OLD_API)
    assert ok.status == 202


def test_no_csr_keeps_classic_behaviour_with_sas_keys(env: DpsEnv) -> None:
    att = env.attest_sas("classic-1")
    final = env.provision(att, body(registrationId="classic-1", payload=None), OLD_API)
    state = _assigned(final)
    assert "issuedCertificateChain" not in state
    device = env.store.get_device("classic-1")
    assert device is not None and device.auth_type == "sas"
    assert device.primary_key == derive_device_key(env.group_key, "classic-1")


def test_individual_sas_enrollment_gets_its_own_keys(env: DpsEnv) -> None:
    enrollment = env.enroll("solo-1", initial_twin={"tags": {"site": "a"}})
    key = enrollment.secondary_key
    assert key is not None
    att = env.attest_sas("solo-1", env.sas("solo-1", key))
    final = env.provision(att, b"")
    state = _assigned(final)
    assert state["symmetricKey"] == {}
    device = env.store.get_device("solo-1")
    assert device is not None
    assert (device.primary_key, device.secondary_key) == (
        enrollment.primary_key,
        enrollment.secondary_key,
    )
    assert env.store.get_twin("solo-1").tags == {"site": "a"}


def test_x509_group_registration_reports_certificate_info(env: DpsEnv) -> None:
    ca = onboarding_ca("vendor-ca")
    env.enroll_x509_group("vendor", ca)
    _, cert = ca.issue("cam-1")
    att = env.attest_cert("cam-1", cert)
    final = env.provision(att, body(csr=csr_b64("cam-1")))
    state = _assigned(final)
    info = state["x509"]
    assert info["enrollmentGroupId"] == "vendor"
    assert info["certificateInfo"]["subjectName"] == "CN=cam-1"
    assert info["signingCertificateInfo"]["subjectName"] == "CN=vendor-ca"
    assert len(state["issuedCertificateChain"]) == 3


def test_x509_without_csr_records_the_onboarding_thumbprint(env: DpsEnv) -> None:
    _, cert = self_signed("cam-2")
    env.enroll_x509_individual("cam-2", cert)
    att = env.attest_cert("cam-2", cert)
    final = env.provision(att, b" ")
    state = _assigned(final)
    device = env.store.get_device("cam-2")
    assert device is not None
    assert device.auth_type == "selfSigned"
    assert device.primary_thumbprint == state["x509"]["certificateInfo"]["sha1Thumbprint"]


# -- re-registration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "substatus", "twin_kept"),
    [
        pytest.param(
            {"updateHubAssignment": True, "migrateDeviceData": True},
            "deviceDataMigrated",
            True,
            id="migrate",
        ),
        pytest.param(
            {"updateHubAssignment": True, "migrateDeviceData": False},
            "deviceDataReset",
            False,
            id="reset",
        ),
        pytest.param(
            {"updateHubAssignment": False, "migrateDeviceData": False},
            "reprovisionedToInitialAssignment",
            True,
            id="never-reprovision",
        ),
    ],
)
def test_reregistration_issues_a_new_certificate_and_applies_the_policy(
    env: DpsEnv, policy: dict[str, bool], substatus: str, twin_kept: bool
) -> None:
    initial = {"tags": {"site": "a"}, "properties": {"desired": {"rate": 1}}}
    env.enroll("re-1", initial_twin=initial, reprovision_policy=policy)
    att = env.attest_sas("re-1", env.sas("re-1", base64.b64encode(b"p" * 32).decode()))
    first = _assigned(env.provision(att, body(csr=csr_b64("re-1"))))
    assert first["substatus"] == "initialAssignment"
    twin = env.store.get_twin("re-1")
    assert (twin.tags, twin.desired) == ({"site": "a"}, {"rate": 1})
    env.store.replace_twin_sections(
        "re-1", now=env.clock.now(), tags={"site": "b"}, desired={"rate": 5}, reported={"x": 1}
    )
    device_before = env.store.get_device("re-1")
    second = _assigned(env.provision(att, body(csr=csr_b64("re-1"))))
    assert second["substatus"] == substatus
    assert second["issuedCertificateChain"][0] != first["issuedCertificateChain"][0]
    device_after = env.store.get_device("re-1")
    assert device_before is not None and device_after is not None
    assert device_after.generation_id == device_before.generation_id  # the same device
    twin = env.store.get_twin("re-1")
    if twin_kept:
        assert (twin.tags, twin.desired, twin.reported) == ({"site": "b"}, {"rate": 5}, {"x": 1})
    else:
        assert (twin.tags, twin.desired, twin.reported) == ({"site": "a"}, {"rate": 1}, {})
    assert len(env.store.list_certificates(device_id="re-1")) == 2


def test_reused_key_is_refused_with_the_authority_reason(env: DpsEnv) -> None:
    key = p256()
    att = env.attest_sas("dev-5")
    env.provision(att, body(csr=csr_b64("dev-5", key)))
    response = env.register(att, body(csr=csr_b64("dev-5", key)))
    assert (response.status, response.body["errorCode"]) == (400, 400004)
    assert response.body["info"]["reason"] == "key-reused"
    assert "key-reused" in response.body["message"]


def test_a_repeated_register_with_the_same_csr_returns_the_same_operation(env: DpsEnv) -> None:
    att = env.attest_sas("dev-6")
    payload = body(csr=csr_b64("dev-6"))
    first = env.register(att, payload)
    again = env.register(att, payload)
    assert again.status == 202
    assert again.body["operationId"] == first.body["operationId"]
    assert len(env.store.list_certificates(device_id="dev-6")) == 1


def test_polls_are_idempotent(env: DpsEnv) -> None:
    att = env.attest_sas("dev-7")
    op = env.register(att, body(csr=csr_b64("dev-7"))).body["operationId"]
    polls = [env.poll(att, op) for _ in range(3)]
    assert polls[0].body == polls[1].body == polls[2].body
    assert len(env.store.list_certificates(device_id="dev-7")) == 1


def test_a_refused_csr_leaves_no_device_behind(env: DpsEnv) -> None:
    att = env.attest_sas("dev-8")
    response = env.register(att, body(csr=csr_b64("someone-else")))
    assert (response.status, response.body["errorCode"]) == (400, 400004)
    assert response.body["info"]["reason"] == "cn-mismatch"
    assert env.store.get_device("dev-8") is None


def test_status_lookup_never_returns_the_chain(env: DpsEnv) -> None:
    att = env.attest_sas("dev-9")
    env.provision(att, body(csr=csr_b64("dev-9")))
    response = env.service.respond(env.service.registration_status, att, b"")
    assert response.status == 200
    assert response.body["status"] == "assigned"
    assert "issuedCertificateChain" not in response.body


def test_expired_operations_are_purged(env: DpsEnv) -> None:
    att = env.attest_sas("dev-10")
    op = env.register(att, body()).body["operationId"]
    env.clock.advance(dt.timedelta(hours=2))
    assert env.service.purge_expired() == 1
    response = env.poll(att, op)
    assert (response.status, response.body["errorCode"]) == (404, 404002)


def test_throttling_answers_429_with_retry_after(env: DpsEnv) -> None:
    service = env.make_service(
        DpsSettings(hub_host=HUB_HOST, registration_rate=0.5, registration_burst=1)
    )
    att = env.attest_sas("dev-11")
    assert service.respond(service.register, att, body(), CSR_API).status == 202
    response = service.respond(service.register, att, body(), CSR_API)
    assert (response.status, response.body["errorCode"]) == (429, 429001)
    assert response.retry_after == 2


# -- refusals ----------------------------------------------------------------------------


def test_disabled_enrollment_is_refused_with_status_disabled(env: DpsEnv) -> None:
    env.enroll("off-1", provisioning_status="disabled")
    att = env.attest_sas("off-1", env.sas("off-1", base64.b64encode(b"p" * 32).decode()))
    final = env.provision(att, body(csr=csr_b64("off-1")))
    assert final.status == 200
    assert final.body["status"] == "disabled"
    state = final.body["registrationState"]
    assert (state["status"], state["errorCode"]) == ("disabled", 401003)
    assert "issuedCertificateChain" not in state
    assert env.store.get_device("off-1") is None


def test_disabled_device_is_refused_with_status_disabled(env: DpsEnv) -> None:
    att = env.attest_sas("dev-12")
    env.provision(att, body(csr=csr_b64("dev-12")))
    device = env.store.get_device("dev-12")
    assert device is not None
    env.store.update_device(
        dataclasses.replace(device, status="disabled"), None, now=env.clock.now()
    )
    final = env.provision(att, body(csr=csr_b64("dev-12")))
    assert final.body["status"] == "disabled"
    assert final.body["registrationState"]["errorCode"] == 401004
    assert len(env.store.list_certificates(device_id="dev-12")) == 1


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        pytest.param(b"{not json", 400001, "malformed-json", id="reject/malformed-json"),
        pytest.param(b"[1, 2]", 400001, "not-an-object", id="reject/not-an-object"),
        pytest.param(
            body(registrationId="other"), 400002, "registration-id-mismatch", id="reject/id"
        ),
        pytest.param(body(csr="%%%"), 400004, "csr-malformed", id="reject/csr-not-base64"),
        pytest.param(
            body(csr=base64.b64encode(b"junk").decode()),
            400004,
            "csr-malformed",
            id="reject/csr-not-der",
        ),
        pytest.param(body(csr=12), 400001, "invalid-field", id="reject/csr-not-a-string"),
        pytest.param(body(payload="x" * 70_000), 400001, "body-too-large", id="reject/large"),
        pytest.param(
            body(payload={"csr": csr_b64("someone")}), 400004, "cn-mismatch", id="reject/cn"
        ),
    ],
)
def test_bad_register_bodies(env: DpsEnv, payload: bytes, code: int, reason: str) -> None:
    att = env.attest_sas("dev-13")
    response = env.register(att, payload)
    assert (response.status, response.body["errorCode"]) == (code // 1000, code)
    assert response.body["info"]["reason"] == reason
    assert {"trackingId", "message", "timestampUtc"} <= response.body.keys()


def test_enrollment_without_policy_cannot_issue(env: DpsEnv) -> None:
    env.enroll("nopol-1", credential_policy_name=None)
    att = env.attest_sas("nopol-1", env.sas("nopol-1", base64.b64encode(b"p" * 32).decode()))
    response = env.register(att, body(csr=csr_b64("nopol-1")))
    assert (response.status, response.body["errorCode"]) == (400, 400005)


def test_a_deleted_enrollment_is_not_found(env: DpsEnv) -> None:
    env.enroll("gone-1")
    att = env.attest_sas("gone-1", env.sas("gone-1", base64.b64encode(b"p" * 32).decode()))
    env.store.delete_enrollment(env.namespace_id, "individual", "gone-1")
    response = env.register(att, body())
    assert (response.status, response.body["errorCode"]) == (404, 404001)


def test_unknown_operation_and_registration(env: DpsEnv) -> None:
    att = env.attest_sas("dev-14")
    response = env.poll(att, "4.0000.none")
    assert (response.status, response.body["errorCode"]) == (404, 404002)
    lookup = env.service.respond(env.service.registration_status, att, b"")
    assert (lookup.status, lookup.body["errorCode"]) == (404, 404003)
    bad = env.service.respond(env.service.registration_status, att, body(csr="x"))
    assert (bad.status, bad.body["errorCode"]) == (400, 400003)


def test_an_operation_of_another_registration_is_not_found(env: DpsEnv) -> None:
    mine = env.attest_sas("dev-15")
    theirs = env.attest_sas("dev-16")
    op = env.register(theirs, body()).body["operationId"]
    response = env.poll(mine, op)
    assert (response.status, response.body["errorCode"]) == (404, 404002)


def test_expired_development_certificate_recovers_by_registering_again(env: DpsEnv) -> None:
    env.create_policy("short", "60s")
    env.enroll("short-1", credential_policy_name="short")
    att = env.attest_sas("short-1", env.sas("short-1", base64.b64encode(b"p" * 32).decode()))
    first = chain_of(_assigned(env.provision(att, body(csr=csr_b64("short-1")))))
    assert first[0].not_valid_after_utc - first[0].not_valid_before_utc <= dt.timedelta(
        seconds=60 + 300
    )
    env.clock.advance(dt.timedelta(minutes=10))  # the certificate has expired
    att = env.attest_sas("short-1", env.sas("short-1", base64.b64encode(b"p" * 32).decode()))
    second = chain_of(_assigned(env.provision(att, body(csr=csr_b64("short-1")))))
    assert second[0].not_valid_after_utc > env.clock.now()


def test_the_writer_purges_expired_operations_on_its_own(env: DpsEnv) -> None:
    att = env.attest_sas("dev-17")
    op = env.register(att, body()).body["operationId"]
    env.clock.advance(dt.timedelta(hours=2))
    env.register(env.attest_sas("dev-18"), body())
    assert env.store.get_dps_operation(op) is None


def test_settings_from_the_store(env: DpsEnv) -> None:
    assert DpsSettings.from_store(env.store) == DpsSettings(hub_host="localhost")
    for key, value in {
        "hub_host": "hub.example",
        "dps.retry_after_seconds": "3",
        "dps.operation_ttl_seconds": "60",
        "dps.registration_rate": "50",
        "dps.registration_burst": "10",
        "dps.strict_api_version": "true",
    }.items():
        env.store.set_setting(key, value)
    assert DpsSettings.from_store(env.store) == DpsSettings(
        hub_host="hub.example",
        retry_after_seconds=3,
        operation_ttl=dt.timedelta(seconds=60),
        registration_rate=50.0,
        registration_burst=10,
        strict_api_version=True,
    )
