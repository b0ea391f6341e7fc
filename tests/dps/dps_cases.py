"""The DPS behaviour every transport must show, written once against a small client API.

``test_dps_https.py`` and ``test_dps_mqtt.py`` subclass :class:`TransportContract` with
a ``client`` fixture (HTTPS via httpx, MQTT via paho over TLS); each case asserts the
exact status and errorCode (or, for MQTT, the CONNACK code of a refused CONNECT).
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from dps_support import (
    CSR_API,
    OLD_API,
    DpsEnv,
    body,
    chain_of,
    csr_b64,
    onboarding_ca,
    p256,
)

from serverkit import self_signed

INDIVIDUAL_KEY = base64.b64encode(b"p" * 32).decode()
WRONG_KEY = base64.b64encode(b"w" * 32).decode()


@dataclass(frozen=True)
class Result:
    """A transport's answer: refused at connect (``connack``), or the final response."""

    status: int | None = None
    body: dict[str, Any] = dataclasses.field(default_factory=dict)
    connack: int | None = None


Credential = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


class DpsClient(Protocol):
    """Register (and poll until done) over one transport."""

    def register(
        self,
        registration_id: str,
        payload: bytes,
        *,
        sas: str | None = None,
        cert: Credential | None = None,
        api_version: str = CSR_API,
    ) -> Result: ...


def assigned(result: Result) -> dict[str, Any]:
    assert result.status == 200, result
    assert result.body["status"] == "assigned"
    state: dict[str, Any] = result.body["registrationState"]
    return state


def refused(result: Result, status: int, code: int, connack: int | None) -> None:
    """An HTTP-style refusal, or the CONNACK code when the transport refuses at connect."""
    if result.connack is not None:
        assert connack is not None, result
        assert result.connack == connack
        return
    assert (result.status, result.body.get("errorCode")) == (status, code), result


class TransportContract:
    """The cases; subclasses provide ``client`` and ``env`` fixtures."""

    refuses_bad_credentials_at_connect = False

    def _bad_credential(self, result: Result) -> None:
        refused(result, 401, 401002, 5 if self.refuses_bad_credentials_at_connect else None)

    def test_group_sas_top_level_csr(self, env: DpsEnv, client: DpsClient) -> None:
        state = assigned(
            client.register("t-sas-1", body(csr=csr_b64("t-sas-1")), sas=env.sas("t-sas-1"))
        )
        assert state["deviceId"] == "t-sas-1"
        assert len(chain_of(state)) == 3
        assert "payload" not in state

    def test_group_sas_payload_csr(self, env: DpsEnv, client: DpsClient) -> None:
        payload = body(registrationId="t-sas-2", payload={"csr": csr_b64("t-sas-2")})
        state = assigned(
            client.register("t-sas-2", payload, sas=env.sas("t-sas-2"), api_version=OLD_API)
        )
        assert state["payload"]["issuedCertificateChain"] == state["issuedCertificateChain"]

    def test_individual_sas(self, env: DpsEnv, client: DpsClient) -> None:
        env.enroll("t-ind-1")
        token = env.sas("t-ind-1", INDIVIDUAL_KEY)
        state = assigned(client.register("t-ind-1", body(csr=csr_b64("t-ind-1")), sas=token))
        assert state["symmetricKey"] == {}

    def test_x509_group(self, env: DpsEnv, client: DpsClient) -> None:
        ca = onboarding_ca("t-vendor")
        env.enroll_x509_group("t-vendor", ca)
        self.trust_changed(env)
        cred = ca.issue("t-x-1")
        state = assigned(client.register("t-x-1", body(csr=csr_b64("t-x-1")), cert=cred))
        assert state["x509"]["enrollmentGroupId"] == "t-vendor"
        assert len(state["issuedCertificateChain"]) == 3

    def test_x509_individual(self, env: DpsEnv, client: DpsClient) -> None:
        cred = self_signed("t-x-2")
        env.enroll_x509_individual("t-x-2", cred[1])
        self.trust_changed(env)
        state = assigned(client.register("t-x-2", body(csr=csr_b64("t-x-2")), cert=cred))
        assert state["x509"]["certificateInfo"]["subjectName"] == "CN=t-x-2"

    def test_reregistration_issues_a_new_certificate(self, env: DpsEnv, client: DpsClient) -> None:
        first = assigned(
            client.register("t-re-1", body(csr=csr_b64("t-re-1")), sas=env.sas("t-re-1"))
        )
        second = assigned(
            client.register("t-re-1", body(csr=csr_b64("t-re-1")), sas=env.sas("t-re-1"))
        )
        assert second["substatus"] == "deviceDataMigrated"
        assert second["deviceId"] == first["deviceId"]
        assert chain_of(second)[0].serial_number != chain_of(first)[0].serial_number

    def test_disabled_enrollment(self, env: DpsEnv, client: DpsClient) -> None:
        env.enroll("t-off-1", provisioning_status="disabled")
        token = env.sas("t-off-1", INDIVIDUAL_KEY)
        result = client.register("t-off-1", body(csr=csr_b64("t-off-1")), sas=token)
        assert (result.status, result.body["status"]) == (200, "disabled")
        assert result.body["registrationState"]["errorCode"] == 401003

    def test_disabled_device(self, env: DpsEnv, client: DpsClient) -> None:
        assigned(client.register("t-off-2", body(), sas=env.sas("t-off-2")))
        device = env.store.get_device("t-off-2")
        assert device is not None
        env.store.update_device(
            dataclasses.replace(device, status="disabled"), None, now=env.clock.now()
        )
        result = client.register("t-off-2", body(csr=csr_b64("t-off-2")), sas=env.sas("t-off-2"))
        assert (result.status, result.body["status"]) == (200, "disabled")
        assert result.body["registrationState"]["errorCode"] == 401004

    @pytest.mark.parametrize(
        "case",
        [
            pytest.param("wrong-key", id="reject/wrong-key"),
            pytest.param("expired", id="reject/expired"),
            pytest.param("wrong-sr", id="reject/wrong-sr"),
            pytest.param("wrong-skn", id="reject/wrong-skn"),
        ],
    )
    def test_bad_sas(self, env: DpsEnv, client: DpsClient, case: str) -> None:
        reg = "t-bad-1"
        token = {
            "wrong-key": lambda: env.sas(reg, WRONG_KEY),
            "expired": lambda: env.sas(reg, ttl=-10),
            "wrong-sr": lambda: env.sas(
                reg, env.device_key(reg), sr=f"{env.id_scope}/registrations/other"
            ),
            "wrong-skn": lambda: env.sas(reg, skn="iothubowner"),
        }[case]()
        self._bad_credential(client.register(reg, body(csr=csr_b64(reg)), sas=token))

    def test_onboarding_certificate_cn_mismatch(self, env: DpsEnv, client: DpsClient) -> None:
        ca = onboarding_ca("t-vendor-2")
        env.enroll_x509_group("t-vendor-2", ca)
        self.trust_changed(env)
        cred = ca.issue("t-someone")
        self._bad_credential(client.register("t-x-3", body(csr=csr_b64("t-x-3")), cert=cred))

    def test_malformed_json(self, env: DpsEnv, client: DpsClient) -> None:
        refused(client.register("t-bad-2", b"{oops", sas=env.sas("t-bad-2")), 400, 400001, None)

    def test_malformed_csr(self, env: DpsEnv, client: DpsClient) -> None:
        result = client.register("t-bad-3", body(csr="bm90IGEgY3Ny"), sas=env.sas("t-bad-3"))
        refused(result, 400, 400004, None)
        assert result.body["info"]["reason"] == "csr-malformed"

    def test_csr_cn_mismatch(self, env: DpsEnv, client: DpsClient) -> None:
        result = client.register("t-bad-4", body(csr=csr_b64("other")), sas=env.sas("t-bad-4"))
        refused(result, 400, 400004, None)
        assert result.body["info"]["reason"] == "cn-mismatch"

    def test_reused_key(self, env: DpsEnv, client: DpsClient) -> None:
        key = p256()
        assigned(
            client.register("t-bad-5", body(csr=csr_b64("t-bad-5", key)), sas=env.sas("t-bad-5"))
        )
        result = client.register(
            "t-bad-5", body(csr=csr_b64("t-bad-5", key)), sas=env.sas("t-bad-5")
        )
        refused(result, 400, 400004, None)
        assert result.body["info"]["reason"] == "key-reused"

    def trust_changed(self, env: DpsEnv) -> None:
        """Hook: the transport's TLS trust must follow a new X.509 enrollment."""
