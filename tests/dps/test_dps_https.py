"""DPS over HTTPS: the real uvicorn server (TLS, optional client certificates) and httpx."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from dps_cases import Credential, Result, TransportContract
from dps_support import CSR_API, DpsEnv, body, csr_b64, make_env

from certhub.datadir import DataDir
from certhub.dps import dps_router
from certhub.listener.tls import ServerTls
from certhub.listener.trust import trust_pems
from certhub.service import HttpsServer, create_http_app


class ServerThread:
    """certhub's HTTPS server with the DPS router, on its own event loop thread."""

    def __init__(self, env: DpsEnv) -> None:
        dd = DataDir(env.data_dir)
        self.tls = ServerTls(
            dd.server_cert_path, dd.server_key_path, trust_pems(env.store, "default")
        )
        app = create_http_app(routers=[dps_router(env.service)])
        self.server = HttpsServer(app, host="127.0.0.1", port=0, ssl_context=self.tls.context)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self._started.set()
        self.loop.run_forever()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class HttpsClient:
    """Registers with httpx (SAS in Authorization, or a TLS client certificate) and polls."""

    def __init__(self, env: DpsEnv, port: int, tmp_path: Path) -> None:
        self.env = env
        self.base_url = f"https://127.0.0.1:{port}"
        self.ca = str(DataDir(env.data_dir).server_ca_path)
        self.tmp_path = tmp_path

    def http(self, cert: Credential | None = None) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=self.ca)
        if cert is not None:
            key, certificate = cert
            key_path, cert_path = self.tmp_path / "client.key", self.tmp_path / "client.pem"
            key_path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
            ctx.load_cert_chain(cert_path, key_path)
        return httpx.Client(base_url=self.base_url, verify=ctx, timeout=10)

    def register(
        self,
        registration_id: str,
        payload: bytes,
        *,
        sas: str | None = None,
        cert: Credential | None = None,
        api_version: str = CSR_API,
    ) -> Result:
        headers = {"Content-Type": "application/json"}
        if sas:
            headers["Authorization"] = sas
        base = f"/{self.env.id_scope}/registrations/{registration_id}"
        params = {"api-version": api_version}
        with self.http(cert) as c:
            r = c.put(f"{base}/register", params=params, content=payload, headers=headers)
            while r.status_code == 202:
                time.sleep(0.01)
                op = r.json()["operationId"]
                r = c.get(f"{base}/operations/{op}", params=params, headers=headers)
        return Result(status=r.status_code, body=r.json())


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DpsEnv]:
    e = make_env(tmp_path)
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def server(env: DpsEnv) -> Iterator[ServerThread]:
    with ServerThread(env) as s:
        yield s


@pytest.fixture
def client(env: DpsEnv, server: ServerThread, tmp_path: Path) -> HttpsClient:
    return HttpsClient(env, server.server.port, tmp_path)


class TestHttpsContract(TransportContract):
    """Every DPS case over HTTPS."""

    @pytest.fixture(autouse=True)
    def _server(self, server: ServerThread) -> None:
        self.server = server

    def trust_changed(self, env: DpsEnv) -> None:
        self.server.tls.update_trust(trust_pems(env.store, "default"))


def test_202_carries_retry_after_and_location(env: DpsEnv, client: HttpsClient) -> None:
    with client.http() as c:
        r = c.put(
            f"/{env.id_scope}/registrations/h-1/register",
            params={"api-version": CSR_API},
            content=body(registrationId="h-1"),
            headers={"Authorization": env.sas("h-1")},
        )
    assert r.status_code == 202
    assert r.headers["retry-after"] == "1"
    op = r.json()["operationId"]
    assert r.headers["location"] == f"/{env.id_scope}/registrations/h-1/operations/{op}"


def test_status_lookup_over_post(env: DpsEnv, client: HttpsClient) -> None:
    client.register("h-2", body(csr=csr_b64("h-2")), sas=env.sas("h-2"))
    with client.http() as c:
        r = c.post(
            f"/{env.id_scope}/registrations/h-2",
            params={"api-version": CSR_API},
            content=body(registrationId="h-2"),
            headers={"Authorization": env.sas("h-2")},
        )
        bad = c.post(
            f"/{env.id_scope}/registrations/h-2",
            params={"api-version": CSR_API},
            content=body(csr=csr_b64("h-2")),
            headers={"Authorization": env.sas("h-2")},
        )
    assert r.status_code == 200
    state: dict[str, Any] = r.json()
    assert (state["status"], state["deviceId"]) == ("assigned", "h-2")
    assert "issuedCertificateChain" not in state
    assert (bad.status_code, bad.json()["errorCode"]) == (400, 400003)


def test_errors_carry_the_error_code_header(env: DpsEnv, client: HttpsClient) -> None:
    with client.http() as c:
        r = c.put(f"/{env.id_scope}/registrations/h-3/register", content=b"{}")
    assert r.status_code == 401
    assert r.json()["errorCode"] == 401001
    assert r.headers["x-ms-error-code"] == "401001"


def test_unknown_id_scope_is_404(env: DpsEnv, client: HttpsClient) -> None:
    with client.http() as c:
        r = c.put(
            "/0neNOPE/registrations/h-4/register",
            content=b"{}",
            headers={"Authorization": env.sas("h-4")},
        )
    assert (r.status_code, r.json()["errorCode"]) == (404, 404004)
