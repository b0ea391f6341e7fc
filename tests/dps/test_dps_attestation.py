"""Attestation: SAS tokens (individual, group-derived) and onboarding certificates."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable

import pytest
from dps_support import DpsEnv, OnboardingCa, der, onboarding_ca

from certhub.dps.attestation import SasCredential, X509Credential
from certhub.dps.errors import BadRequest, DpsError, NotFound, Unauthorized
from certhub.pki import CaKeyPair
from certhub.sas import generate_sas_token
from serverkit import self_signed

OTHER_KEY = base64.b64encode(b"x" * 32).decode()
INDIVIDUAL_KEY = base64.b64encode(b"p" * 32).decode()
INDIVIDUAL_SECONDARY = base64.b64encode(b"s" * 32).decode()


def _refused(call: Callable[[], object]) -> DpsError:
    with pytest.raises(DpsError) as info:
        call()
    return info.value


def test_group_device_key_is_derived_from_the_group_key(env: DpsEnv) -> None:
    att = env.attest_sas("dev-1")
    assert (att.enrollment_kind, att.enrollment_name) == ("group", "default")
    assert att.device_keys is not None
    assert att.device_keys[0] == env.device_key("dev-1")


def test_secondary_group_key_also_attests(env: DpsEnv) -> None:
    group = env.store.get_enrollment(env.namespace_id, "group", "default")
    assert group is not None and group.secondary_key is not None
    token = env.sas("dev-2", env.device_key("dev-2", group.secondary_key))
    assert env.attest_sas("dev-2", token).enrollment_name == "default"


def test_individual_enrollment_takes_precedence_over_groups(env: DpsEnv) -> None:
    env.enroll("solo")
    assert env.attest_sas("solo", env.sas("solo", INDIVIDUAL_KEY)).enrollment_kind == "individual"
    assert env.attest_sas("solo", env.sas("solo", INDIVIDUAL_SECONDARY)).enrollment_id
    # the group-derived key no longer works for an individually enrolled id
    error = _refused(lambda: env.attest_sas("solo"))
    assert (error.error_code, error.reason) == (401002, "sas-signature-mismatch")


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        pytest.param(
            lambda e: e.sas("dev-3", OTHER_KEY), "sas-signature-mismatch", id="reject/wrong-key"
        ),
        pytest.param(lambda e: e.sas("dev-3", ttl=-1), "sas-expired", id="reject/expired"),
        pytest.param(lambda e: e.sas("dev-3", ttl=0), "sas-expired", id="reject/expires-now"),
        pytest.param(
            lambda e: e.sas("dev-3", e.device_key("dev-3"), sr=f"{e.id_scope}/registrations/x"),
            "sas-wrong-resource",
            id="reject/wrong-sr",
        ),
        pytest.param(
            lambda e: e.sas("dev-3", e.device_key("dev-3"), sr="0neOTHER/registrations/dev-3"),
            "sas-wrong-resource",
            id="reject/wrong-scope-in-sr",
        ),
        pytest.param(
            lambda e: e.sas("dev-3", skn="iothubowner"), "sas-wrong-key-name", id="reject/skn"
        ),
        pytest.param(lambda e: "SharedAccessSignature sr=x", "sas-malformed", id="reject/fields"),
        pytest.param(
            lambda e: e.sas("dev-3").replace("sig=", "sig=%%"), "sas-malformed", id="reject/sig"
        ),
        pytest.param(
            lambda e: e.sas("dev-3").replace(f"se={e.now_unix() + 3600}", "se=soon"),
            "sas-malformed",
            id="reject/se",
        ),
    ],
)
def test_bad_sas_tokens(env: DpsEnv, make_token: Callable[[DpsEnv], str], reason: str) -> None:
    token = make_token(env)
    error = _refused(lambda: env.attest_sas("dev-3", token))
    assert isinstance(error, Unauthorized)
    assert (error.status, error.error_code, error.reason) == (401, 401002, reason)


def test_a_token_without_skn_is_accepted(env: DpsEnv) -> None:
    # azure-iot-device 2.14 signs DPS tokens without skn; the C SDK sends skn=registration.
    token = env.sas("dev-9", skn=None)
    assert "skn=" not in token
    assert env.attest_sas("dev-9", token).enrollment_name == "default"


def test_wrong_individual_key_is_refused(env: DpsEnv) -> None:
    env.enroll("solo-2")
    error = _refused(lambda: env.attest_sas("solo-2", env.sas("solo-2", OTHER_KEY)))
    assert (error.error_code, error.reason) == (401002, "sas-signature-mismatch")


def test_token_for_another_registration_is_refused(env: DpsEnv) -> None:
    token = env.sas("dev-4")
    error = _refused(lambda: env.attest_sas("dev-5", token))
    assert (error.error_code, error.reason) == (401002, "sas-wrong-resource")


def test_lower_case_percent_escapes_verify(env: DpsEnv) -> None:
    token = env.sas("dev-6").replace("%2F", "%2f")
    assert env.attest_sas("dev-6", token).registration_id == "dev-6"


def test_unknown_id_scope_and_invalid_registration_id(env: DpsEnv) -> None:
    error = _refused(
        lambda: env.service.attest("0neNOPE", "dev-7", SasCredential(env.sas("dev-7")))
    )
    assert isinstance(error, NotFound) and error.error_code == 404004
    error = _refused(lambda: env.service.attest(env.id_scope, "bad id!", SasCredential("x")))
    assert isinstance(error, BadRequest) and error.error_code == 400002


def test_no_symmetric_key_group_means_unknown_enrollment(env: DpsEnv) -> None:
    env.store.delete_enrollment(env.namespace_id, "group", "default")
    token = generate_sas_token(f"{env.id_scope}/registrations/dev-8", OTHER_KEY, 2**40, "x")
    error = _refused(lambda: env.attest_sas("dev-8", token))
    assert (error.status, error.error_code) == (404, 404001)


# -- X.509 -------------------------------------------------------------------------------


@pytest.fixture
def vendor(env: DpsEnv) -> OnboardingCa:
    ca = onboarding_ca("vendor-ca")
    env.enroll_x509_group("vendor", ca)
    return ca


def test_group_certificate_directly_issued_attests(env: DpsEnv, vendor: OnboardingCa) -> None:
    _, cert = vendor.issue("cam-1")
    att = env.attest_cert("cam-1", cert)
    assert (att.enrollment_name, att.attestation_type) == ("vendor", "x509")
    assert att.signing_certificate == vendor.pair.certificate


def test_second_signing_ca_of_a_group_attests(env: DpsEnv) -> None:
    first, second = onboarding_ca("ca-one"), onboarding_ca("ca-two")
    env.enroll_x509_group("two-cas", first, second)
    _, cert = second.issue("cam-2")
    assert env.attest_cert("cam-2", cert).signing_certificate == second.pair.certificate


def test_individual_certificate_and_thumbprint_attest(env: DpsEnv) -> None:
    _, cert = self_signed("cam-3")
    env.enroll_x509_individual("cam-3", cert)
    assert env.attest_cert("cam-3", cert).enrollment_kind == "individual"
    _, other = self_signed("cam-4")
    env.enroll_x509_individual("cam-4", other, thumbprint_only=True)
    assert env.attest_cert("cam-4", other).enrollment_name == "cam-4"


def _not_directly_issued(vendor: OnboardingCa) -> bytes:
    sub_key, sub_cert = vendor.issue("vendor-sub-ca")
    sub = OnboardingCa(CaKeyPair(sub_cert, sub_key), "vendor-sub-ca")
    return der(sub.issue("cam-5")[1])


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("cn-mismatch", "certificate-cn-mismatch", id="reject/cn-mismatch"),
        pytest.param("not-enrolled", "certificate-not-enrolled", id="reject/not-directly-issued"),
        pytest.param("forged-ca", "certificate-signature-invalid", id="reject/forged-ca"),
        pytest.param("expired", "certificate-expired", id="reject/expired"),
        pytest.param("wrong-individual", "certificate-mismatch", id="reject/wrong-certificate"),
        pytest.param("sas-enrollment", "attestation-mismatch", id="reject/attestation-type"),
        pytest.param("garbage", "certificate-malformed", id="reject/malformed"),
    ],
)
def test_bad_certificates(env: DpsEnv, vendor: OnboardingCa, case: str, reason: str) -> None:
    registration_id = "cam-5"
    cert_der: bytes
    if case == "cn-mismatch":
        cert_der = der(vendor.issue("cam-other")[1])
    elif case == "not-enrolled":
        cert_der = _not_directly_issued(vendor)
    elif case == "forged-ca":
        cert_der = der(onboarding_ca("vendor-ca").issue("cam-5")[1])  # same name, other key
    elif case == "expired":
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        cert_der = der(vendor.issue("cam-5", not_after=past)[1])
    elif case == "wrong-individual":
        env.enroll_x509_individual("cam-5", self_signed("cam-5")[1])
        cert_der = der(self_signed("cam-5")[1])
    elif case == "sas-enrollment":
        env.enroll("cam-5")
        cert_der = der(vendor.issue("cam-5")[1])
    else:
        cert_der = b"\x30\x03junk"
    error = _refused(
        lambda: env.service.attest(env.id_scope, registration_id, X509Credential(cert_der))
    )
    assert isinstance(error, Unauthorized)
    assert (error.status, error.error_code, error.reason) == (401, 401002, reason)


def test_no_x509_enrollment_means_unknown_enrollment(env: DpsEnv) -> None:
    _, cert = self_signed("cam-6")
    error = _refused(lambda: env.attest_cert("cam-6", cert))
    assert (error.status, error.error_code) == (404, 404001)
