"""DPS over MQTT/TLS against the real certhub server (shared 8883-style listener), with
paho-mqtt 2; plus DPS over HTTPS as the server wires it, and certificate recovery."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from dps_cases import Credential, Result, TransportContract, assigned
from dps_support import CSR_API, DpsEnv, body, csr_b64, make_env, p256

from certhub.clock import FixedClock
from serverkit import DeviceClient, DevicePems, RunningServer, create_policy, running_server

RES = "$dps/registrations/res/"


def _write_credential(directory: Path, name: str, cred: Credential) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = cred
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


class MqttClient:
    """Registers like a device SDK: CONNECT, SUBSCRIBE, register, poll until done."""

    def __init__(self, running: RunningServer, env: DpsEnv, tmp_path: Path) -> None:
        self.running = running
        self.env = env
        self.tmp_path = tmp_path

    def register(
        self,
        registration_id: str,
        payload: bytes,
        *,
        sas: str | None = None,
        cert: Credential | None = None,
        api_version: str = CSR_API,
    ) -> Result:
        files = (None, None)
        if cert is not None:
            files = _write_credential(self.tmp_path / "onboarding", registration_id, cert)
        username = (
            f"{self.env.id_scope}/registrations/{registration_id}"
            f"/api-version={api_version}&ClientVersion=paho"
        )
        client = DeviceClient(
            self.running,
            registration_id,
            username=username,
            password=sas,
            cert_file=files[0],
            key_file=files[1],
        )
        try:
            code = client.connect()
            if code != 0:
                return Result(connack=-1 if code is None else code)
            assert client.subscribe(f"{RES}#") == [1]
            client.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", payload)
            status, answer = self._answer(client)
            rid = 2
            while status == 202:
                op = answer["operationId"]
                topic = f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}"
                client.publish(f"{topic}&operationId={op}", b" ")
                status, answer = self._answer(client)
                rid += 1
            return Result(status=status, body=answer)
        finally:
            client.close()

    @staticmethod
    def _answer(client: DeviceClient) -> tuple[int, dict[str, object]]:
        message = client.expect(RES, timeout=10)
        return int(message.topic.split("/")[3]), json.loads(message.payload)


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, DpsEnv]]:
    tmp = tmp_path_factory.mktemp("dps-mqtt")
    env = make_env(tmp)
    try:
        with running_server(env.data_dir, https_port=0) as running:
            yield running, env
    finally:
        env.close()


@pytest.fixture
def env(server_env: tuple[RunningServer, DpsEnv]) -> DpsEnv:
    return server_env[1]


@pytest.fixture
def running(server_env: tuple[RunningServer, DpsEnv]) -> RunningServer:
    return server_env[0]


@pytest.fixture
def client(running: RunningServer, env: DpsEnv, tmp_path: Path) -> MqttClient:
    return MqttClient(running, env, tmp_path)


class TestMqttContract(TransportContract):
    """Every DPS case over MQTT/TLS on the server's listener."""

    refuses_bad_credentials_at_connect = True

    @pytest.fixture(autouse=True)
    def _running(self, running: RunningServer) -> None:
        self.running = running

    def trust_changed(self, env: DpsEnv) -> None:
        self.running.refresh_trust()


def test_https_is_served_by_the_server(running: RunningServer, env: DpsEnv) -> None:
    port = running.server.https_address[1]
    verify = ssl.create_default_context(cafile=str(running.trust_anchor))
    with httpx.Client(verify=verify, timeout=10) as http:
        r = http.put(
            f"https://127.0.0.1:{port}/{env.id_scope}/registrations/app-1/register",
            params={"api-version": CSR_API},
            content=body(csr=csr_b64("app-1")),
            headers={"Authorization": env.sas("app-1")},
        )
        assert r.status_code == 202
        op = r.json()["operationId"]
        r = http.get(
            f"https://127.0.0.1:{port}/{env.id_scope}/registrations/app-1/operations/{op}",
            params={"api-version": CSR_API},
            headers={"Authorization": env.sas("app-1")},
        )
    assert r.status_code == 200
    assert len(r.json()["registrationState"]["issuedCertificateChain"]) == 3


def _chain_pems(directory: Path, name: str, key: object, state: dict[str, object]) -> DevicePems:
    directory.mkdir(parents=True, exist_ok=True)
    chain = state["issuedCertificateChain"]
    assert isinstance(chain, list)
    pems = "".join(
        "-----BEGIN CERTIFICATE-----\n"
        + "\n".join(c[i : i + 64] for i in range(0, len(c), 64))
        + "\n-----END CERTIFICATE-----\n"
        for c in chain
    )
    chain_path = directory / f"{name}-chain.pem"
    chain_path.write_text(pems)
    key_path = directory / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return DevicePems(key=key_path, cert=chain_path, chain=chain_path)


def test_expired_certificate_recovers_by_registering_again(tmp_path: Path) -> None:
    """A 60 s development certificate expires; the device registers again and reconnects.

    The server runs on a clock the test moves, so "expired" takes no real minute (TLS
    does not check validity periods; the hub checks them against the server's clock).
    """
    env = make_env(tmp_path)
    clock = FixedClock(dt.datetime.now(dt.UTC))
    try:
        with running_server(env.data_dir, clock=clock, https_port=0) as running:
            create_policy(running, "minute", "60s", clock=clock)
            env.enroll("short-1", credential_policy_name="minute")
            key_b64 = base64.b64encode(b"p" * 32).decode()
            client = MqttClient(running, env, tmp_path)
            hub_user = f"{running.hub_host}/short-1/?api-version=2021-04-12"

            def provision() -> DevicePems:
                key = p256()
                token = env.sas("short-1", key_b64, ttl=7200)
                state = assigned(
                    client.register("short-1", body(csr=csr_b64("short-1", key)), sas=token)
                )
                return _chain_pems(tmp_path / "pems", "short-1", key, state)

            def hub_connack(pems: DevicePems) -> int | None:
                with DeviceClient(running, "short-1", pems, username=hub_user) as device:
                    return device.connect()

            first = provision()
            assert hub_connack(first) == 0
            clock.advance(dt.timedelta(minutes=2))
            assert hub_connack(first) not in (0, None)  # expired: refused by the hub
            second = provision()
            assert hub_connack(second) == 0
    finally:
        env.close()
