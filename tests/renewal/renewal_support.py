"""Helpers for the renewal tests: an initialized store ("world") and a service harness.

The harness runs a real :class:`RenewalService` on its own event loop against a real
store; the hub's side is played by :class:`Publisher`, which records what would be
published on a device's session and says whether the device is "subscribed".
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
import os
import secrets
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from certhub.authority import CertificateAuthorityService
from certhub.clock import FixedClock
from certhub.datadir import DataDir
from certhub.pki import IssuedLeaf
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import NewDevice
from certhub.renewal import RenewalConfig, RenewalService

T = TypeVar("T")
PG_ADMIN_DSN = os.environ.get("CERTHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
START = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
_ids = itertools.count(1)


def create_pg_database() -> str:
    """A fresh PostgreSQL database (as tests/conftest.py makes them, for wider scopes)."""
    import psycopg

    name = "certhub_renewal_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"


def drop_pg_database(url: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def new_device_id(prefix: str = "dev") -> str:
    return f"{prefix}-{next(_ids):05d}"


def make_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_der(cn: str, key: Any = None) -> bytes:
    key = key or make_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def csr_b64(cn: str, key: Any = None) -> str:
    return base64.b64encode(csr_der(cn, key)).decode()


def request_body(device_id: str, replace: Any = ..., cn: str | None = None) -> bytes:
    body: dict[str, Any] = {"id": device_id, "csr": csr_b64(cn or device_id)}
    if replace is not ...:
        body["replace"] = replace
    return json.dumps(body).encode()


@dataclass
class World:
    """An initialized namespace on one store, shared by a module's tests."""

    store: Store
    authority: CertificateAuthorityService
    clock: FixedClock
    data_dir: Path
    url: str

    def add_device(self, device_id: str | None = None, policy: str | None = "default") -> str:
        device_id = device_id or new_device_id()
        self.store.create_device(
            NewDevice(
                device_id=device_id,
                namespace_id=self.authority.namespace.id,
                revocation_id=SystemRandom().token_bytes(32),
                policy_name=policy,
            ),
            self.clock.now(),
        )
        return device_id

    def issue(self, device_id: str, via: str = "dps", policy: str = "default") -> IssuedLeaf:
        """A certificate as DPS (or the CLI) would issue it."""
        return self.authority.issue(
            device_id=device_id,
            csr_der=csr_der(device_id),
            policy_name=policy,
            requested_via=via,  # type: ignore[arg-type]
            actor="test",
        )

    def certificates(self, device_id: str) -> list[Any]:
        return self.store.list_certificates(device_id=device_id, limit=1000)


def open_world(tmp: Path, url: str, clock: FixedClock | None = None) -> World:
    from certhub.bootstrap import initialize

    clock = clock or FixedClock(START)
    initialize(tmp, database_url=url, clock=clock)
    rng = SystemRandom()
    store = Store.open(url)
    authority = CertificateAuthorityService(
        store, clock=clock, rng=rng, passphrase=DataDir(tmp).passphrase(rng)
    )
    return World(store, authority, clock, tmp, url)


def pending_operation(world: World, device_id: str, rid: str) -> int:
    """A stored, accepted operation not yet issued: what a server leaves when it dies after
    the 202 (or what another node is working on). Returns its id."""
    from certhub.renewal.flow import Accepted, Submission, accept

    with world.store.transaction() as conn:
        (outcome,) = accept(
            world.store,
            [Submission(device_id, rid, csr_der(device_id), None)],
            now=world.clock.now(),
            ttl=dt.timedelta(minutes=5),
            admit=lambda _device, _status: None,
            new_id=lambda: str(uuid.uuid4()),
            conn=conn,
        )
    assert isinstance(outcome, Accepted)
    return outcome.operation.id


@dataclass(frozen=True)
class Message:
    device_id: str
    topic: str
    body: Any

    @property
    def status(self) -> int:
        return int(self.topic.split("/")[3])

    @property
    def rid(self) -> str:
        return self.topic.split("?$rid=", 1)[1]


@dataclass
class Publisher:
    """The hub's side: a device is 'subscribed' when its id is in ``subscribed``."""

    subscribed: set[str] = field(default_factory=set)
    messages: list[Message] = field(default_factory=list)

    def __call__(self, device_id: str, topic: str, payload: bytes) -> bool:
        if device_id not in self.subscribed:
            return False
        self.messages.append(Message(device_id, topic, json.loads(payload)))
        return True

    def take(self, device_id: str) -> list[Message]:
        mine = [m for m in self.messages if m.device_id == device_id]
        self.messages = [m for m in self.messages if m.device_id != device_id]
        return mine


class Harness:
    """A started RenewalService on a private event loop."""

    def __init__(self, world: World, config: RenewalConfig | None = None, **kwargs: Any) -> None:
        self.world = world
        self.loop = asyncio.new_event_loop()
        self.executor = ThreadPoolExecutor(4, "test-store")
        self.publisher = Publisher()
        config = config or RenewalConfig(detection_interval=0)
        self.service = RenewalService(
            world.store,
            world.authority,
            clock=world.clock,
            rng=SystemRandom(),
            run=self._run,
            config=config,
            publisher=self.publisher,
            **kwargs,
        )
        self.call(self.service.start())

    def _run(self, fn: Any, /, *args: Any) -> Any:
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def request(
        self,
        device_id: str,
        body: bytes,
        rid: str | None = None,
        *,
        subscribed: bool = True,
        operation: str = "issueCertificate",
    ) -> list[Message]:
        """One request; the messages the device got for it."""
        if subscribed:
            self.publisher.subscribed.add(device_id)
        else:
            self.publisher.subscribed.discard(device_id)
        rid = rid or f"r{next(_ids)}"
        self.call(self.service.handle_request(device_id, rid, body, operation))
        self.sync()
        return self.publisher.take(device_id)

    def sync(self) -> None:
        """Wait until the writer has processed everything queued so far."""
        self.call(self._drain())

    async def _drain(self) -> None:
        await asyncio.wrap_future(self.service.writer.issue(-1))

    def subscribe(self, device_id: str) -> list[Message]:
        self.publisher.subscribed.add(device_id)
        self.call(self.service.on_subscribed(device_id))
        self.sync()
        return self.publisher.take(device_id)

    def close(self) -> None:
        self.call(self.service.stop())
        self.loop.close()
        self.executor.shutdown(wait=True)


@contextmanager
def captured_sql(engine: sa.Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every statement ``engine`` runs meanwhile, with its (first) parameters."""
    statements: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        statements.append((sql, params[0] if many else params))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)


def query_plans(world: World, statements: list[tuple[str, Any]]) -> list[tuple[str, Any, str]]:
    """``(sql, parameters, plan)`` of each statement that reads rows (SQLite's EXPLAIN
    QUERY PLAN, its lines joined with `` | ``)."""
    explained = []
    with world.store.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        for sql, params in statements:
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
                continue
            rows = driver.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            explained.append((sql, params, " | ".join(str(r[3]) for r in rows)))
    return explained
