"""The DPS and hub clients on their own, against the scripted peer: wire shapes and the
mapping of every error answer to the agent's exceptions."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from agent_support import DEVICE, make_config, run
from fakeserver import HUB_HOST, ID_SCOPE, FakeServer, FakeTime, FakeTransport, HubSession

from certhub.agent import (
    ClientCertificate,
    DeviceDisabled,
    Endpoint,
    Handlers,
    HubConnection,
    ProvisioningError,
    RenewalError,
    SymmetricKeyOnboarding,
)
from certhub.agent.certs import chain_to_pem, key_to_pem, make_csr
from certhub.agent.dps import DpsClient, dps_username
from certhub.agent.hub import hub_username
from certhub.pki import KeyType, generate_private_key


def dps_client(tmp_path: Path, server: FakeServer, time: FakeTime, **changes: Any) -> DpsClient:
    config = make_config(tmp_path, **changes)
    assert config.onboarding is not None
    return DpsClient(
        FakeTransport(server),
        config.dps,
        config.onboarding,
        clock=time,
        sleep=time.sleep,
        timeout=2.0,
    )


def csr() -> bytes:
    return make_csr(generate_private_key(KeyType.P256), DEVICE)


def test_usernames() -> None:
    config = make_config(Path("/tmp"))
    assert dps_username(config.dps, "certhub-agent/0.1") == (
        f"{ID_SCOPE}/registrations/{DEVICE}/api-version=2025-07-01-preview"
        "&ClientVersion=certhub-agent%2F0.1"
    )
    assert hub_username("h.example", "d1", "2025-08-01-preview", "a/1") == (
        "h.example/d1/?api-version=2025-08-01-preview&DeviceClientType=a%2F1"
    )


def test_dps_register_returns_the_assignment(
    tmp_path: Path, time: FakeTime, server: FakeServer
) -> None:
    client = dps_client(tmp_path, server, time)
    reg = run(server, client.register(csr(), server_now=time.now()))
    assert (reg.device_id, reg.assigned_hub, reg.substatus) == (
        DEVICE,
        HUB_HOST,
        "initialAssignment",
    )
    assert len(reg.chain) == 3
    assert reg.chain[0].subject.rfc4514_string() == f"CN={DEVICE}"
    assert reg.server_time == reg.sent_at == reg.answered_at
    assert time.slept == [1.0]  # waited the retry-after of the 202 before polling


@pytest.mark.parametrize(
    ("script", "reason", "status", "code", "transient", "retry_after"),
    [
        pytest.param(
            (401, {"errorCode": 401002, "message": "Invalid certificate."}),
            "dps-error",
            401,
            401002,
            False,
            None,
            id="reject/401002",
        ),
        pytest.param(
            (400, {"errorCode": 400004, "message": "bad csr"}),
            "dps-error",
            400,
            400004,
            False,
            None,
            id="reject/400004",
        ),
        pytest.param(
            (429, {"errorCode": 429001, "retryAfter": 9}),
            "dps-throttled",
            429,
            429001,
            True,
            9.0,
            id="reject/429-throttled",
        ),
        pytest.param(
            (503, {"errorCode": 503001}),
            "dps-error",
            503,
            503001,
            True,
            3.0,
            id="reject/503-unavailable",
        ),
    ],
)
def test_dps_errors(
    tmp_path: Path,
    time: FakeTime,
    server: FakeServer,
    script: tuple[int, dict[str, Any]],
    reason: str,
    status: int,
    code: int,
    transient: bool,
    retry_after: float | None,
) -> None:
    server.dps_script.append(script)
    client = dps_client(tmp_path, server, time)
    with pytest.raises(ProvisioningError) as info:
        run(server, client.register(csr(), server_now=time.now()))
    err = info.value
    assert (err.reason, err.status, err.error_code, err.transient) == (
        reason,
        status,
        code,
        transient,
    )
    assert err.retry_after == retry_after


def test_dps_wrong_key_is_refused_at_connect(
    tmp_path: Path, time: FakeTime, server: FakeServer
) -> None:
    wrong = SymmetricKeyOnboarding(device_key=base64.b64encode(b"w" * 32).decode())
    client = dps_client(tmp_path, server, time, onboarding=wrong)
    with pytest.raises(ProvisioningError) as info:
        run(server, client.register(csr(), server_now=time.now()))
    assert info.value.reason == "onboarding-refused" and not info.value.transient
    assert server.events == [("dps-connect", DEVICE, "refused")]


@pytest.mark.parametrize("what", ["device", "enrollment"])
def test_dps_disabled(tmp_path: Path, time: FakeTime, server: FakeServer, what: str) -> None:
    if what == "device":
        from fakeserver import Device

        server.devices[DEVICE] = Device(status="disabled")
    else:
        server.enrollment_disabled = True
    client = dps_client(tmp_path, server, time)
    with pytest.raises(DeviceDisabled) as info:
        run(server, client.register(csr(), server_now=time.now()))
    assert info.value.source == "dps" and info.value.error_code == 401004


# -- hub ---------------------------------------------------------------------------------


def provisioned(tmp_path: Path, server: FakeServer) -> ClientCertificate:
    key = generate_private_key(KeyType.P256)
    from fakeserver import Device

    server.devices[DEVICE] = Device()
    from cryptography import x509

    chain = [
        x509.load_der_x509_certificate(base64.b64decode(c))
        for c in server.issue(DEVICE, make_csr(key, DEVICE))
    ]
    (tmp_path / "chain.pem").write_bytes(chain_to_pem(chain))
    (tmp_path / "key.pem").write_bytes(key_to_pem(key))
    return ClientCertificate(tmp_path / "chain.pem", tmp_path / "key.pem")


async def open_hub(
    server: FakeServer, cert: ClientCertificate, handlers: Handlers | None = None
) -> HubConnection:
    return await HubConnection.open(
        FakeTransport(server),
        Endpoint("127.0.0.1", 8883, HUB_HOST),
        device_id=DEVICE,
        api_version="2025-08-01-preview",
        client_cert=cert,
        handlers=handlers or Handlers(),
        keepalive=0,
        timeout=2.0,
    )


def test_twin_get_and_report(tmp_path: Path, server: FakeServer) -> None:
    cert = provisioned(tmp_path, server)

    async def body() -> tuple[dict[str, Any], int | None, dict[str, Any]]:
        conn = await open_hub(server, cert)
        version = await conn.report({"certificate": {"serialNumber": "01"}})
        twin = await conn.get_twin()
        await conn.close()
        return twin, version, server.devices[DEVICE].reported

    twin, version, reported = run(server, body())
    assert version == 2
    assert twin["reported"]["certificate"] == {"serialNumber": "01"}
    assert reported == {"certificate": {"serialNumber": "01"}}


def test_issue_certificate_202_then_200(tmp_path: Path, server: FakeServer) -> None:
    cert = provisioned(tmp_path, server)
    accepted: list[Any] = []

    async def body() -> Any:
        conn = await open_hub(server, cert)
        request = base64.b64encode(csr()).decode()
        chain = await conn.issue_certificate(request, "rid-1", on_accepted=accepted.append)
        await conn.close()
        return chain

    chain = run(server, body())
    assert len(chain) == 3 and chain[0].subject.rfc4514_string() == f"CN={DEVICE}"
    assert accepted[0].correlation_id == "c-rid-1"
    assert accepted[0].operation_expires == dt.datetime(2099, 1, 1, tzinfo=dt.UTC)
    assert ("credentials", DEVICE, "rid-1", "None") in server.events


@pytest.mark.parametrize(
    ("status", "body", "code", "transient", "retry_after"),
    [
        pytest.param(
            400,
            {"errorCode": 400040, "message": "x", "info": {"credentialError": "FailedToDecodeCsr"}},
            400040,
            False,
            None,
            id="reject/400040",
        ),
        pytest.param(
            400, {"errorCode": 400001}, 400001, False, None, id="reject/400001-protocol-version"
        ),
        pytest.param(403, {"errorCode": 403010}, 403010, False, None, id="reject/403010"),
        pytest.param(404, {"errorCode": 404001}, 404001, False, None, id="reject/404001"),
        pytest.param(
            409,
            {"errorCode": 409005, "info": {"requestId": "r0"}},
            409005,
            False,
            None,
            id="reject/409005",
        ),
        pytest.param(412, {"errorCode": 412001}, 412001, False, None, id="reject/412001"),
        pytest.param(
            429, {"errorCode": 429002, "retryAfter": 5}, 429002, True, 5.0, id="reject/429002"
        ),
        pytest.param(429, {"errorCode": 429003}, 429003, True, None, id="reject/429003"),
        pytest.param(500, {"errorCode": 500001}, 500001, True, None, id="reject/500001"),
        pytest.param(503, {"errorCode": 503102}, 503102, True, None, id="reject/503102"),
        pytest.param(502, {}, None, True, None, id="reject/502-no-body"),
    ],
)
def test_credentials_errors(
    tmp_path: Path,
    server: FakeServer,
    status: int,
    body: dict[str, Any],
    code: int | None,
    transient: bool,
    retry_after: float | None,
) -> None:
    cert = provisioned(tmp_path, server)
    server.credentials_script.append((status, body))

    async def scenario() -> None:
        conn = await open_hub(server, cert)
        try:
            await conn.issue_certificate(base64.b64encode(csr()).decode(), "r1")
        finally:
            await conn.close()

    with pytest.raises(RenewalError) as info:
        run(server, scenario())
    err = info.value
    assert (err.status, err.error_code, err.transient, err.retry_after) == (
        status,
        code,
        transient,
        retry_after,
    )
    assert err.info == body.get("info", {})


def test_credentials_response_on_the_learn_spelling(tmp_path: Path, server: FakeServer) -> None:
    cert = provisioned(tmp_path, server)

    def answer_singular(session: HubSession, rid: str, body: dict[str, Any]) -> bool:
        chain = server.issue(DEVICE, base64.b64decode(body["csr"]))
        session.publish(
            f"$iothub/credential/res/200/?$rid={rid}", json.dumps({"certificates": chain}).encode()
        )
        return False

    server.credentials_hook = answer_singular

    async def scenario() -> int:
        conn = await open_hub(server, cert)
        chain = await conn.issue_certificate(base64.b64encode(csr()).decode(), "r1")
        await conn.close()
        return len(chain)

    assert run(server, scenario()) == 3


def test_credentials_subscription_refused_is_noted(tmp_path: Path, server: FakeServer) -> None:
    cert = provisioned(tmp_path, server)
    server.credentials_refused_subscribe = True

    async def scenario() -> bool:
        conn = await open_hub(server, cert)
        await conn.close()
        return conn.credentials_available

    assert run(server, scenario()) is False


def test_hub_refuses_unknown_certificate(tmp_path: Path, server: FakeServer) -> None:
    from certhub.agent import ConnectionRefused

    cert = provisioned(tmp_path, server)
    server.revoke(DEVICE)
    with pytest.raises(ConnectionRefused) as info:
        run(server, open_hub(server, cert))
    assert info.value.code == 5 and not info.value.transient


def test_closed_connection_fails_a_pending_request(tmp_path: Path, server: FakeServer) -> None:
    from certhub.agent import TransportError

    cert = provisioned(tmp_path, server)

    def hang_up(session: HubSession, rid: str, body: dict[str, Any]) -> bool:
        asyncio.get_running_loop().call_later(0.05, session.close)
        return False

    server.credentials_hook = hang_up

    async def scenario() -> None:
        conn = await open_hub(server, cert)
        await conn.issue_certificate(base64.b64encode(csr()).decode(), "r1")

    with pytest.raises(TransportError) as info:
        run(server, scenario())
    assert info.value.reason == "connection-lost"
