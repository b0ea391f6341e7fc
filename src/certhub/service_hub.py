"""Wiring: the service API (:mod:`certhub.service`) joined to the hub and the store.

Like :mod:`certhub.app`, this module may import both sides; the service layer itself
only knows the :class:`~certhub.service.gateway.HubGateway` protocol, which
:class:`HubServiceGateway` implements:

* twin reads use the hub's service view (``$metadata``, ``$version``);
* twin writes run in ONE store transaction: lock the twin, check ``If-Match``, merge or
  replace tags, apply the desired patch with the hub's twin rules (keys, depth, size,
  ``$metadata``), and append a ``twin.desired`` event carrying the patch; the hub's
  change-feed poller hands it to the device's live session on whichever node holds it
  (origin ``service-api``, so this node's hub delivers it too, within one poll);
* direct methods and cloud-to-device messages go to :class:`certhub.hub.HubService`.

:func:`build_service_context` makes the router context from a running
:class:`certhub.app.Server`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from certhub.authority import CertificateAuthorityService
from certhub.bootstrap import service_keys
from certhub.clock import Clock
from certhub.datadir import DataDir
from certhub.hub import DeviceNotConnected, HubService, MethodTimeout, TwinError
from certhub.hub import twin as rules
from certhub.hub.errors import DeviceNotFound
from certhub.hub.storage import DESIRED_EVENT, service_twin
from certhub.registry import EtagMismatch, Store
from certhub.registry import NotFound as StoreNotFound
from certhub.service.auth import ServiceAuth
from certhub.service.context import Runner, ServiceContext
from certhub.service.errors import (
    BadRequest,
    DeviceOffline,
    GatewayTimeout,
    NotFound,
    PreconditionFailed,
)
from certhub.service.gateway import MethodResult, TwinChange

if TYPE_CHECKING:
    from certhub.app import Server

__all__ = ["ORIGIN", "HubServiceGateway", "build_service_context", "replacement_patch"]

ORIGIN = "service-api"


def replacement_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``old`` into ``new`` (``None`` for removed members)."""
    patch: dict[str, Any] = {k: None for k in old if new.get(k) is None}
    for key, value in new.items():
        current = old.get(key)
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(current, dict):
            inner = replacement_patch(current, value)
            if inner:
                patch[key] = inner
        elif key not in old or _json(current) != _json(value):
            patch[key] = value
    return patch


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _not_found(device_id: str) -> NotFound:
    return NotFound(f"device {device_id!r} not found", reason="not-found")


def _bad_twin(exc: TwinError) -> BadRequest:
    return BadRequest(str(exc), reason=f"twin-{exc.reason}")


def write_twin(
    store: Store, device_id: str, change: TwinChange, now: dt.datetime, origin: str = ORIGIN
) -> dict[str, Any]:
    """Apply a service twin change in one transaction; the service view of the twin."""
    try:
        with store.transaction() as conn:
            twin = store.get_twin(device_id, conn=conn, for_update=True)
            if change.expected_etag not in (None, "*", twin.etag):
                raise EtagMismatch("twin", device_id, str(change.expected_etag), twin.etag)
            kwargs: dict[str, Any] = {}
            if change.tags is not None:
                tags = rules.check_patch(dict(change.tags))
                kwargs["tags"] = tags if change.replace else rules.merge_patch(twin.tags, tags)
            patch: dict[str, Any] | None = None
            if change.desired is not None:
                wanted = rules.check_patch(dict(change.desired))
                patch = replacement_patch(twin.desired, wanted) if change.replace else wanted
                version = twin.desired_version + 1
                metadata = twin.metadata.get("desired", {})
                update = rules.apply_patch(twin.desired, metadata, patch, now=now, version=version)
                kwargs.update(desired=update.section, desired_metadata=update.metadata)
            if kwargs:
                record = store.replace_twin_sections(device_id, now=now, conn=conn, **kwargs)
                if patch:
                    payload = {"version": record.desired_version, "patch": patch, "origin": origin}
                    store.append_event(DESIRED_EVENT, device_id, payload, now, conn=conn)
    except StoreNotFound as exc:
        raise _not_found(device_id) from exc
    except EtagMismatch as exc:
        raise PreconditionFailed(
            f"twin {device_id!r}: the If-Match etag is not the current one ({exc.actual})",
            reason="etag-mismatch",
        ) from exc
    except TwinError as exc:
        raise _bad_twin(exc) from exc
    return service_twin(store, device_id)


class HubServiceGateway:
    """The :class:`~certhub.service.gateway.HubGateway` of a certhub server."""

    def __init__(self, store: Store, run: Runner, clock: Clock, hub: HubService | None) -> None:
        self._store = store
        self._run = run
        self._clock = clock
        self._hub = hub

    def is_connected(self, device_id: str) -> bool:
        return self._hub is not None and self._hub.is_connected(device_id)

    async def get_twin(self, device_id: str) -> dict[str, Any]:
        try:
            twin: dict[str, Any] = await self._run(service_twin, self._store, device_id)
        except DeviceNotFound as exc:
            raise _not_found(device_id) from exc
        return twin

    async def update_twin(self, device_id: str, change: TwinChange) -> dict[str, Any]:
        result: dict[str, Any] = await self._run(
            write_twin, self._store, device_id, change, self._clock.now()
        )
        return result

    async def invoke_method(
        self, device_id: str, name: str, payload: Any, timeout: float
    ) -> MethodResult:
        if self._hub is None:
            raise DeviceOffline("no hub runs in this process", reason="no-hub")
        try:
            status, body = await self._hub.invoke_method(device_id, name, payload, timeout)
        except DeviceNotConnected as exc:
            raise DeviceOffline(str(exc), reason=exc.reason) from exc
        except MethodTimeout as exc:
            raise GatewayTimeout(str(exc), reason="method-timeout") from exc
        except ValueError as exc:
            raise BadRequest(str(exc), reason="invalid-method-name") from exc
        return MethodResult(status=status, payload=body)

    async def send_c2d(self, device_id: str, body: bytes, properties: Mapping[str, str]) -> bool:
        if self._hub is None:
            return False
        try:
            return await self._hub.send_c2d(device_id, body, dict(properties))
        except DeviceNotFound as exc:
            raise _not_found(device_id) from exc


def _hosts(store: Store) -> list[str]:
    hosts = list(json.loads(store.get_setting("hosts") or "[]"))
    hub_host = store.get_setting("hub_host")
    if hub_host:
        hosts.append(hub_host)
    return list(dict.fromkeys(hosts or ["localhost", "127.0.0.1"]))


async def build_service_context(
    server: Server, https_port: int, *, authority: CertificateAuthorityService | None = None
) -> ServiceContext:
    """The service routers' context for a started server whose HTTPS port is known.

    Pass the server's ``authority`` to share its caches (else one is opened here).
    """
    store = server.store
    hosts = await server.run(_hosts, store)
    auth = ServiceAuth(
        lambda: service_keys(store), hosts=hosts, port=https_port, clock=server.clock
    )
    await server.run(auth.refresh)
    if authority is None:
        passphrase = await server.run(DataDir(server.config.data_dir).passphrase, server.rng)
        authority = CertificateAuthorityService(
            store,
            clock=server.clock,
            rng=server.rng,
            passphrase=passphrase,
            namespace=server.config.namespace,
        )
    return ServiceContext(
        store=store,
        run=server.run,
        clock=server.clock,
        rng=server.rng,
        auth=auth,
        hub=HubServiceGateway(store, server.run, server.clock, server.hub),
        authority=authority,
        namespace=server.config.namespace,
    )
