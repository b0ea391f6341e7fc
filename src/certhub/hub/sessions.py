"""The device sessions live on this node, and where other nodes hold theirs.

One connection per device: registering a session closes the device's older one here and,
while clustered, announces it (:mod:`.relay`) so other nodes close theirs. Sessions on
other nodes are known from their ``session.opened/closed`` events (:attr:`remote`), seeded
from the store's connection state when this node joins a cluster. Every register and
close is noted for the connection-state writer (:class:`~certhub.hub.presence.PresenceWriter`).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Container
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from certhub.hub.metrics import SESSIONS_CLOSED
from certhub.hub.presence import PresenceWriter
from certhub.hub.session import HubSession
from certhub.registry import Store
from certhub.registry.schema import devices as devices_table

if TYPE_CHECKING:
    from certhub.hub.frontend import HubFrontend

__all__ = ["SessionRegistry"]

log = logging.getLogger("certhub.hub")


@functools.lru_cache(maxsize=256)
def _closed_counter(reason: str) -> Any:
    """The ``sessions_closed{reason}`` child (``labels()`` costs a lock and a tuple: a third
    of the hub's own work per connection)."""
    return SESSIONS_CLOSED.labels(reason)


def _connected_devices(store: Store) -> list[str]:
    stmt = sa.select(devices_table.c.device_id).where(
        devices_table.c.connection_state == "Connected"
    )
    with store.engine.connect() as conn:
        return list(conn.execute(stmt).scalars())


class SessionRegistry:
    """This node's live sessions by device, and the devices connected to other nodes."""

    def __init__(self, hub: HubFrontend, presence: PresenceWriter) -> None:
        self._hub = hub
        self._presence = presence
        self.sessions: dict[str, HubSession] = {}
        """device -> its live session on this node."""
        self.live_sessions = 0
        """Registered sessions not yet closed (``certhub_hub_connections``)."""
        self.remote: dict[str, str] = {}
        """device -> node id holding its session, from ``session.opened/closed`` events."""

    def register(self, session: HubSession, now: dt.datetime) -> None:
        """Make ``session`` the device's live session (closing an older one)."""
        device_id = session.device_id
        old = self.sessions.get(device_id)
        self.sessions[device_id] = session
        self.live_sessions += 1
        self._presence.note(device_id, "Connected", now)
        session.opened_at = now
        self.remote.pop(device_id, None)
        if self._hub.clustered:
            self._hub.relay.session_opened(device_id)
        if old is not None:
            old.link.close("replaced-by-new-connection")

    def closed(self, session: HubSession, reason: str) -> None:
        """A session ended (called once per registered session)."""
        self.live_sessions -= 1
        _closed_counter(reason).inc()
        device_id = session.device_id
        if self.sessions.get(device_id) is session:
            del self.sessions[device_id]
            hub = self._hub
            if hub.clustered:
                hub.relay.session_closed(device_id)
            self._presence.note(device_id, "Disconnected", hub.clock.now())
        log.debug("device %r disconnected: %s", device_id, reason)

    def close(self, device_id: str, reason: str) -> bool:
        """Close the device's live session, if any."""
        session = self.sessions.get(device_id)
        if session is None:
            return False
        log.info("closing the session of device %r: %s", device_id, reason)
        session.link.close(reason)
        return True

    def close_untrusted(self, issuer_ids: Container[int]) -> None:
        """Close the sessions authenticated by an issuing CA not among ``issuer_ids``."""
        for session in list(self.sessions.values()):
            ca_id = session.identity.issuer_ca_id
            if ca_id is not None and ca_id not in issuer_ids:
                session.link.close("issuer-no-longer-trusted")

    def opened_before(self, session: HubSession, at: dt.datetime) -> bool:
        """True when ``session`` is the device's live session here and opened before ``at``."""
        opened = session.opened_at
        return (
            self.sessions.get(session.device_id) is session and opened is not None and opened < at
        )

    # -- other nodes ------------------------------------------------------------------------

    def note_remote(self, device_id: str, node: str, kind: str) -> None:
        """Track which other node holds ``device_id`` (``session.opened/closed``)."""
        if kind == "session.opened":
            self.remote[device_id] = node
        elif self.remote.get(device_id) in (node, ""):
            del self.remote[device_id]

    def connected_elsewhere(self, device_id: str) -> bool:
        """True when another live node announced a session of the device (or the store
        said it was connected when this node joined: node ``""``)."""
        node = self.remote.get(device_id)
        if node is None or not self._hub.clustered:
            return False
        return node == "" or node in self._hub.live_nodes

    async def load_remote(self) -> int:
        """Note the devices the store shows connected (to other nodes) when this node joins
        a cluster; announcements made later correct the picture. Returns how many."""
        hub = self._hub
        connected = await hub.run(_connected_devices, hub.store)
        for device_id in connected:
            if device_id not in self.sessions:
                self.remote.setdefault(device_id, "")
        return len(connected)
