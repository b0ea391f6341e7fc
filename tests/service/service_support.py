"""The service routers on a real store, called through httpx (ASGI), and SAS helpers.

:class:`Harness` initialises a data directory (``certhub.bootstrap.initialize``) on the
given database, mounts :func:`certhub.service.api.service_routers` on the DPS helper's
app factory, and talks to it with Starlette's ``TestClient`` (httpx over ASGI). The hub
gateway is the real one without a hub process (methods: offline; C2D: queued nowhere).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx

from certhub.authority import CertificateAuthorityService
from certhub.bootstrap import initialize, service_keys
from certhub.clock import FixedClock
from certhub.datadir import DataDir
from certhub.pki import IssuedLeaf
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import DeviceRecord, NewDevice
from certhub.service.api import service_routers
from certhub.service.auth import ServiceAuth
from certhub.service.context import ServiceContext
from certhub.service.http import create_http_app
from certhub.service_hub import HubServiceGateway

__all__ = [
    "HOST",
    "PORT",
    "AsgiClient",
    "Harness",
    "harness_on",
    "initialize_in_the_past",
    "sas_token",
]

HOST = "localhost"
PORT = 8443


def sas_token(
    key: str,
    policy: str | None,
    *,
    resource: str = f"{HOST}:{PORT}",
    expiry: int | None = None,
    quote: Callable[[str], str] = quote_plus,
) -> str:
    """A service token as the Python SDK builds it (``sr=quote_plus(host:port)``)."""
    import base64
    import hashlib
    import hmac

    se = expiry if expiry is not None else int(time.time()) + 3600
    sr = quote(resource)
    sig = hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()
    token = f"SharedAccessSignature sr={sr}&sig={quote_plus(base64.b64encode(sig))}&se={se}"
    return token + (f"&skn={policy}" if policy is not None else "")


class AsgiClient:
    """A blocking facade over ``httpx.AsyncClient(transport=ASGITransport(app))``.

    The app runs on its own event loop in a background thread, as in the server.
    """

    def __init__(self, app: Any, base_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        transport = httpx.ASGITransport(app=app)
        self._client = httpx.AsyncClient(transport=transport, base_url=base_url)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        coro = self._client.request(method, url, **kwargs)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@dataclass
class Harness:
    """A real store, the service app on it, and a client."""

    store: Store
    ctx: ServiceContext
    client: AsgiClient
    data_dir: Path
    clock: FixedClock
    keys: dict[str, dict[str, str]]
    app: Any = None

    def headers(self, policy: str = "iothubowner", **extra: str) -> dict[str, str]:
        """Headers with a valid token for ``policy``."""
        key = self.keys[policy]["primaryKey"]
        return {"Authorization": sas_token(key, policy, expiry=self._expiry()), **extra}

    def _expiry(self) -> int:
        return int(self.clock.now().timestamp()) + 3600

    def call(self, method: str, path: str, policy: str = "iothubowner", **kwargs: Any) -> Any:
        """A request with a valid token (``headers=`` adds headers)."""
        headers = {**self.headers(policy), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def authority(self) -> CertificateAuthorityService:
        """The namespace's authority over this store."""
        rng = SystemRandom()
        return CertificateAuthorityService(
            self.store,
            clock=self.clock,
            rng=rng,
            passphrase=DataDir(self.data_dir).passphrase(rng),
        )

    def create_device(self, device_id: str, **fields: Any) -> DeviceRecord:
        """A device created directly in the store."""
        ns = self.store.get_namespace("default")
        assert ns is not None
        new = NewDevice(
            device_id=device_id,
            namespace_id=ns.id,
            revocation_id=SystemRandom().token_bytes(32),
            policy_name="default",
            **fields,
        )
        return self.store.create_device(new, self.clock.now())

    def issue(self, device_id: str, policy: str = "default") -> IssuedLeaf:
        """Issue and record a certificate for an existing device (at the harness clock)."""
        from serverkit import make_key_and_csr

        _, csr = make_key_and_csr(device_id)
        return self.authority().issue(
            device_id=device_id,
            csr_der=csr,
            policy_name=policy,
            requested_via="api",
            actor="tests",
        )


def _runner(pool: ThreadPoolExecutor) -> Callable[..., Any]:
    def run(fn: Callable[..., Any], /, *args: Any) -> Any:
        return asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))

    return run


def initialize_in_the_past(data_dir: Path, db_url: str) -> None:
    """``certhub init`` 90 days ago, so that tests can issue certificates in the past."""
    past = FixedClock(dt.datetime.now(dt.UTC) - dt.timedelta(days=90))
    initialize(data_dir, database_url=db_url, clock=past)


@contextmanager
def harness_on(data_dir: Path, db_url: str, *, initialized: bool = False) -> Iterator[Harness]:
    """Serve the routers on ``db_url`` (initialised here unless ``initialized``)."""
    if not initialized:
        initialize_in_the_past(data_dir, db_url)
    clock = FixedClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    store = Store.open(db_url)
    pool = ThreadPoolExecutor(4, "service-tests")
    run = _runner(pool)
    keys = service_keys(store)
    auth = ServiceAuth(
        lambda: service_keys(store), hosts=[HOST, "127.0.0.1"], port=PORT, clock=clock
    )
    ctx = ServiceContext(
        store=store,
        run=run,
        clock=clock,
        rng=SystemRandom(),
        auth=auth,
        hub=HubServiceGateway(store, run, clock, None),
        authority=CertificateAuthorityService(
            store,
            clock=clock,
            rng=SystemRandom(),
            passphrase=DataDir(data_dir).passphrase(SystemRandom()),
        ),
    )
    app = create_http_app(routers=service_routers(ctx))
    client = AsgiClient(app, f"https://{HOST}:{PORT}")
    try:
        yield Harness(store, ctx, client, data_dir, clock, keys, app)
    finally:
        client.close()
        pool.shutdown(wait=True)
        store.close()
