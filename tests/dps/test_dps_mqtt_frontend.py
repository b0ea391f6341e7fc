"""The DPS frontend against the listener contract, with an in-process Link (the transport)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from dps_support import DpsEnv, csr_b64, der, onboarding_ca

from certhub.dps import DpsFrontend, DpsSession
from certhub.listener.api import PeerInfo, Refusal
from certhub.mqtt import Connect, ConnectReturnCode, Publish, RemoteProtocolError

API = "api-version=2025-07-01-preview&ClientVersion=test"


class FakeLink:
    """Records what the frontend sends: the transport, not certhub logic."""

    def __init__(self, cert_der: bytes | None = None) -> None:
        self.peer = PeerInfo(address="127.0.0.1", port=50000, client_cert_der=cert_der)
        self.sent: list[tuple[str, bytes, int]] = []
        self.closed = False

    def publish(self, topic: str, payload: bytes, *, qos: int = 0) -> None:
        self.sent.append((topic, payload, qos))

    def close(self, reason: str) -> None:
        self.closed = True


def _connect(
    env: DpsEnv, reg: str, password: bytes | None, client_id: str | None = None
) -> Connect:
    return Connect(
        client_id=reg if client_id is None else client_id,
        username=f"{env.id_scope}/registrations/{reg}/{API}",
        password=password,
    )


def _open(frontend: DpsFrontend, connect: Connect, link: FakeLink) -> DpsSession | Refusal:
    result = asyncio.run(frontend.open_session(connect, link))
    assert isinstance(result, DpsSession | Refusal)
    return result


def _last(link: FakeLink) -> tuple[str, dict[str, Any]]:
    topic, payload, _ = link.sent[-1]
    return topic, json.loads(payload)


def test_accepts_only_dps_usernames(env: DpsEnv) -> None:
    frontend = DpsFrontend(env.service)
    assert frontend.accepts(_connect(env, "d1", None))
    hub = Connect(client_id="d1", username="hub.test/d1/?api-version=2021-04-12")
    assert not frontend.accepts(hub)


def test_register_and_poll_over_the_link(env: DpsEnv) -> None:
    frontend = DpsFrontend(env.service)
    link = FakeLink()
    session = _open(frontend, _connect(env, "m-1", env.sas("m-1").encode()), link)
    assert isinstance(session, DpsSession)

    async def flow() -> None:
        granted = session.on_subscribe([("$dps/registrations/res/#", 1), ("other/#", 0)])
        assert granted == [1, 0x80]
        body = json.dumps({"registrationId": "m-1", "csr": csr_b64("m-1")}).encode()
        await session.on_publish(
            Publish(
                topic="$dps/registrations/PUT/iotdps-register/?$rid=1",
                payload=body,
                qos=1,
                packet_id=1,
            )
        )
        topic, answer = _last(link)
        assert topic == "$dps/registrations/res/202/?$rid=1&retry-after=1"
        assert link.sent[-1][2] == 1
        op = answer["operationId"]
        await session.on_publish(
            Publish(
                topic=f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId={op}",
                payload=b" ",
            )
        )
        topic, answer = _last(link)
        assert topic == "$dps/registrations/res/200/?$rid=2"
        assert answer["status"] == "assigned"
        assert len(answer["registrationState"]["issuedCertificateChain"]) == 3
        session.on_close("client-disconnect")

    asyncio.run(flow())


def test_errors_are_answered_on_their_status_topic(env: DpsEnv) -> None:
    frontend = DpsFrontend(env.service)
    link = FakeLink()
    session = _open(frontend, _connect(env, "m-2", env.sas("m-2").encode()), link)
    assert isinstance(session, DpsSession)

    async def flow() -> None:
        await session.on_publish(
            Publish(topic="$dps/registrations/PUT/iotdps-register/?$rid=9", payload=b"{bad")
        )
        topic, answer = _last(link)
        assert topic == "$dps/registrations/res/400/?$rid=9"
        assert answer["errorCode"] == 400001
        await session.on_publish(
            Publish(topic="$dps/registrations/GET/iotdps-get-operationstatus/?$rid=10", payload=b"")
        )
        assert _last(link)[0] == "$dps/registrations/res/400/?$rid=10"
        with pytest.raises(RemoteProtocolError):
            await session.on_publish(Publish(topic="devices/m-2/messages/events/", payload=b""))

    asyncio.run(flow())


def test_x509_connect_uses_the_peer_certificate(env: DpsEnv) -> None:
    ca = onboarding_ca("mqtt-vendor")
    env.enroll_x509_group("mqtt-vendor", ca)
    _, cert = ca.issue("m-3")
    session = _open(DpsFrontend(env.service), _connect(env, "m-3", None), FakeLink(der(cert)))
    assert isinstance(session, DpsSession)
    assert session.attestation.enrollment_name == "mqtt-vendor"


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        pytest.param("wrong-key", 5, "sas-signature-mismatch", id="reject/wrong-key"),
        pytest.param("expired", 5, "sas-expired", id="reject/expired"),
        pytest.param("wrong-sr", 5, "sas-wrong-resource", id="reject/wrong-sr"),
        pytest.param("wrong-skn", 5, "sas-wrong-key-name", id="reject/wrong-skn"),
        pytest.param("no-credential", 5, "no-credential", id="reject/no-credential"),
        pytest.param("not-utf8", 5, "sas-malformed", id="reject/password-not-utf8"),
        pytest.param("client-id", 2, "client-id-mismatch", id="reject/client-id"),
        pytest.param("scope", 5, "id-scope-not-found", id="reject/unknown-scope"),
        pytest.param("bad-id", 2, "invalid-registration-id", id="reject/invalid-id"),
    ],
)
def test_connect_refusals(env: DpsEnv, case: str, code: int, reason: str) -> None:
    reg = "m-4"
    password: bytes | None = {
        "wrong-key": lambda: env.sas(reg, "eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg="),
        "expired": lambda: env.sas(reg, ttl=-5),
        "wrong-sr": lambda: env.sas(reg, env.device_key(reg), sr=f"{env.id_scope}/registrations/x"),
        "wrong-skn": lambda: env.sas(reg, skn="device"),
    }.get(case, lambda: env.sas(reg))().encode()
    connect = _connect(env, reg, password)
    if case == "no-credential":
        connect = _connect(env, reg, None)
    elif case == "not-utf8":
        connect = _connect(env, reg, b"\xff\xfe")
    elif case == "client-id":
        connect = _connect(env, reg, password, client_id="someone-else")
    elif case == "scope":
        connect = Connect(
            client_id=reg, username=f"0neNOPE/registrations/{reg}/{API}", password=password
        )
    elif case == "bad-id":
        connect = Connect(
            client_id="a!b", username=f"{env.id_scope}/registrations/a!b/{API}", password=password
        )
    refusal = _open(DpsFrontend(env.service), connect, FakeLink())
    assert isinstance(refusal, Refusal)
    assert (refusal.code, refusal.reason) == (ConnectReturnCode(code), reason)
