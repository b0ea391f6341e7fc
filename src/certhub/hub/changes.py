"""The hub's reaction to the store's change feed (``events``, read every ~200 ms).

* ``ca.changed`` / ``policy.changed``: reload the issuing CAs (sessions whose issuer is
  no longer live are closed).
* a revoked certificate: its session here is closed.
* a device disabled, deleted, given other keys or thumbprints (``device.auth``) or a new
  revocation identifier: the live record decides (:meth:`ChangeFeed.recheck`), since the
  event may describe a change the CONNECT lookup already saw (a device disabled and
  enabled again, or deleted and created again, just before it connected).
* a desired-properties patch written by another node: forwarded to the session.
* relay kinds (:mod:`.relay`): handed to the relay.

Every device change also invalidates what the CONNECT path knows of the device
(:meth:`~certhub.hub.admission.Admission.note_change`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from certhub.hub import storage
from certhub.hub.auth import still_admits
from certhub.hub.relay import RELAY_KINDS
from certhub.hub.session import HubSession
from certhub.registry._events import EventRecord

if TYPE_CHECKING:
    from certhub.hub.frontend import HubFrontend

__all__ = ["ChangeFeed"]

log = logging.getLogger("certhub.hub")

_RELOAD_EVENTS = frozenset({"ca.changed", "policy.changed"})
_RECHECK_EVENTS = frozenset({"device.auth", "device.revocation", "device.deleted"})
_CHANGE_KINDS = frozenset(
    {"device.status", "device.revocation", "device.auth", "device.deleted", "certificate.revoked"}
)


class ChangeFeed:
    """Applies batches of store events to this node's sessions and caches."""

    def __init__(self, hub: HubFrontend) -> None:
        self._hub = hub

    def on_events(self, batch: Sequence[EventRecord]) -> None:
        """React to store changes: close sessions, reload CAs, forward desired patches."""
        hub = self._hub
        reload = False
        for event in batch:
            reload |= event.kind in _RELOAD_EVENTS
            if event.device_id is None:
                continue
            session = hub.sessions.get(event.device_id)
            if event.kind in RELAY_KINDS:
                hub.relay.on_event(event, session)
            else:
                self._device_event(event, session)
        if reload:
            asyncio.get_running_loop().create_task(self._reload_logged())

    def _device_event(self, event: EventRecord, session: HubSession | None) -> None:
        kind, payload = event.kind, event.payload
        if kind in _CHANGE_KINDS:
            self._hub.admission.note_change(event.device_id or "")
        if session is None:
            return
        if kind in _RECHECK_EVENTS or (
            kind == "device.status" and payload.get("status") != "enabled"
        ):
            self._hub.spawn(self.recheck(session))
        elif kind == "certificate.revoked" and payload.get("serial") == session.identity.serial_hex:
            session.link.close("certificate-revoked")
        elif kind == storage.DESIRED_EVENT and payload.get("origin") != self._hub.node_id:
            session.notify_desired(dict(payload.get("patch", {})), int(payload["version"]))

    async def recheck(self, session: HubSession) -> None:
        """Close ``session`` if the device's changed record no longer admits it.

        The event may describe a change the CONNECT lookup already saw (committed just
        before the device connected, read by the change feed just after), so the live
        record decides rather than the event alone."""
        hub = self._hub
        device = await hub.run(hub.store.get_device, session.device_id)
        reason = still_admits(device, session.identity)
        if reason is not None and hub.sessions.get(session.device_id) is session:
            session.link.close(reason)

    async def _reload_logged(self) -> None:
        try:
            await self._hub.reload_issuers()
        except Exception:
            log.exception("reloading the issuing CAs failed")
