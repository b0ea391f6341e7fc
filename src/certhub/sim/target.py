"""The server side of a simulation (the only simulator module that imports the server).

* :func:`prepare_target` — on a data directory (its store): make sure a development
  policy with the wanted validity and a small backdate exists, and an enrollment group
  issuing under it; returns the :class:`~certhub.sim.fleet.Target` the fleet connects to.
* :class:`EmbeddedServer` — a :class:`certhub.app.Server` on its own event loop in a
  background thread (``certhub demo`` runs the server in-process, with its HTTPS side:
  service API, dashboard, metrics).
* :func:`dashboard_login` — the dashboard URL and token of a running embedded server.
* :func:`revoke_device`, :func:`disable_device` — what an operator does to a device.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from certhub.app import Server, ServerConfig, new_event_loop
from certhub.authority import CertificateAuthorityService
from certhub.bootstrap import InitResult, initialize
from certhub.clock import Clock, SystemClock
from certhub.datadir import DataDir
from certhub.pki import LeafPolicy
from certhub.pki.errors import PkiError
from certhub.rand import Random, SystemRandom
from certhub.registry import Store
from certhub.registry.records import NewEnrollment
from certhub.sim.errors import SetupError
from certhub.sim.fleet import Target

__all__ = [
    "EmbeddedServer",
    "dashboard_login",
    "disable_device",
    "enable_device",
    "prepare_target",
    "revoke_device",
]

T = TypeVar("T")


def _names(validity: float, backdate: float) -> tuple[str, str]:
    policy = f"sim-{validity:g}s-bd{backdate:g}s"
    return policy, f"{policy}-group"


def prepare_target(
    data_dir: Path,
    *,
    database_url: str | None = None,
    validity: float,
    backdate: float,
    host: str = "127.0.0.1",
    port: int | None = None,
    clock: Clock | None = None,
    rng: Random | None = None,
) -> tuple[Target, InitResult]:
    """Initialise (or reuse) ``data_dir`` in the development profile, create the policy
    ``sim-<validity>s-bd<backdate>s`` and its enrollment group unless they exist, and
    return the fleet's target (``port`` defaults to the data directory's MQTT port)."""
    clock = clock or SystemClock()
    rng = rng or SystemRandom()
    init = initialize(data_dir, database_url=database_url, development=True)
    policy_name, group_name = _names(validity, backdate)
    with Store.open(database_url or DataDir(data_dir).database_url) as store:
        namespace = store.get_namespace(init.namespace)
        if namespace is None:
            raise SetupError("namespace", f"no namespace {init.namespace!r} in {data_dir}")
        if store.get_policy(namespace.id, policy_name) is None:
            authority = CertificateAuthorityService(
                store, clock=clock, rng=rng, passphrase=DataDir(data_dir).passphrase(rng)
            )
            try:
                leaf = LeafPolicy.create(
                    policy_name, f"{validity:g}s", backdate=f"{backdate:g}s", development=True
                )
            except (PkiError, ValueError) as exc:
                raise SetupError("policy", str(exc)) from exc
            authority.create_policy(leaf, actor="certhub-sim")
        group = store.get_enrollment(namespace.id, "group", group_name)
        if group is None:
            group = store.create_enrollment(
                NewEnrollment(
                    namespace_id=namespace.id,
                    kind="group",
                    name=group_name,
                    attestation_type="symmetricKey",
                    primary_key=base64.b64encode(rng.token_bytes(32)).decode(),
                    secondary_key=base64.b64encode(rng.token_bytes(32)).decode(),
                    credential_policy_name=policy_name,
                ),
                clock.now(),
            )
    assert group.primary_key is not None
    target = Target(
        host=host,
        port=init.mqtt_port if port is None else port,
        hub_host=init.hub_host,
        id_scope=init.id_scope,
        group_key=group.primary_key,
        trust_anchor=Path(init.trust_anchor).resolve(),
        backdate=backdate,
    )
    return target, init


class EmbeddedServer:
    """A certhub server on its own (uvloop) event loop in a daemon thread."""

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        bind: str = "127.0.0.1",
        port: int = 8883,
        https_port: int | None = None,
    ) -> None:
        config = ServerConfig(
            data_dir=data_dir,
            database_url=database_url,
            bind=bind,
            mqtt_port=port,
            https_port=https_port,
        )
        self.server = Server(config)
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="certhub-server")
        self.thread.daemon = True
        self.started = False

    @property
    def address(self) -> tuple[str, int]:
        """Where the MQTT/TLS listener is bound."""
        return self.server.mqtt_address

    @property
    def https_address(self) -> tuple[str, int] | None:
        """Where the HTTPS side (service API, dashboard, metrics) is bound, if it runs."""
        return None if self.server.https_port is None else self.server.https_address

    @property
    def store(self) -> Store:
        """The server's store (thread-safe)."""
        return self.server.store

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        """Start the thread and the server (binds the listener)."""
        self.thread.start()
        try:
            self.call(self.server.start())
        except Exception:
            self._end_loop()
            raise
        self.started = True

    def refresh_trust(self) -> None:
        """Re-read trusted and issuing CAs now (after creating a policy)."""
        self.call(self.server.reload_trust())
        self.call(self.server.hub_frontend.reload_issuers())

    def stop(self) -> None:
        """Stop the server and its loop (idempotent)."""
        if self.started:
            self.started = False
            try:
                self.call(self.server.stop())
            finally:
                self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


def revoke_device(store: Store, device_id: str, rng: Random, now: dt.datetime) -> list[str]:
    """Rotate the revocation id and mark every live certificate revoked; the serials."""
    _, serials = store.revoke_device(
        device_id, rng.token_bytes(32), now=now, actor="certhub-demo", reason="unspecified"
    )
    return serials


def disable_device(store: Store, device_id: str, now: dt.datetime) -> None:
    """Disable the device (the hub refuses it, DPS answers ``disabled``)."""
    device = store.get_device(device_id)
    if device is None:
        raise SetupError("disable", f"no device {device_id!r}")
    store.update_device(dataclasses.replace(device, status="disabled"), None, now=now)


def enable_device(store: Store, device_id: str, now: dt.datetime) -> bool:
    """Enable the device if it exists and is disabled (a demo run before disabled it);
    True when it changed."""
    device = store.get_device(device_id)
    if device is None or device.status == "enabled":
        return False
    store.update_device(dataclasses.replace(device, status="enabled"), None, now=now)
    return True


def dashboard_login(store: Store, host: str, https_port: int) -> tuple[str, str]:
    """The dashboard's URL and its token (derived from the ``iothubowner`` key)."""
    from certhub.bootstrap import service_keys
    from certhub.dashboard import dashboard_token

    key = service_keys(store)["iothubowner"]["primaryKey"]
    return f"https://{host}:{https_port}/dashboard/", dashboard_token(key)
