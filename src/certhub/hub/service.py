"""The hub's service-side API: what the REST service API (a later issue) calls.

Everything here runs on the server's event loop. Twin writes go to the store (in the
executor) and reach the device's live session at once when it is on this node, or
through the change feed (``twin.desired`` events) when it is on another. Direct methods
and cloud-to-device messages go to a session on this node directly; when other nodes are
live (``HubFrontend.clustered``) they are relayed to whichever node holds the session
(:mod:`certhub.hub.relay`) with the same timeout semantics.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from typing import Any

from certhub.hub import storage
from certhub.hub.errors import DeviceNotConnected, DeviceNotFound, MethodTimeout
from certhub.hub.frontend import HubFrontend
from certhub.hub.telemetry import TelemetryBuffer
from certhub.hub.topics import c2d_topic
from certhub.hub.twin import check_patch
from certhub.mqtt import format_property_bag

__all__ = ["HubService"]

_METHOD_NAME_FORBIDDEN = frozenset("/+#?\x00")


class HubService:
    """Service-side operations on devices connected to this hub."""

    def __init__(self, frontend: HubFrontend) -> None:
        self._hub = frontend

    @property
    def telemetry(self) -> TelemetryBuffer:
        """Device-to-cloud messages (bounded, drop-oldest)."""
        return self._hub.telemetry

    def is_connected(self, device_id: str) -> bool:
        """True when the device has a live session on this node or, on a cluster, on
        another live node that announced it (``session.opened`` since this node started)."""
        return device_id in self._hub.sessions or self._hub.connected_elsewhere(device_id)

    async def get_twin(self, device_id: str) -> dict[str, Any]:
        """The twin (tags, desired and reported with ``$metadata`` and ``$version``).

        Raises :class:`~certhub.hub.errors.DeviceNotFound`.
        """
        return await self._hub.run(storage.service_twin, self._hub.store, device_id)

    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> int:
        """Merge ``patch`` into the desired properties; returns the new desired version.

        The device gets ``$iothub/twin/PATCH/properties/desired/?$version=n`` with the patch
        and ``$version`` if it subscribed. Raises DeviceNotFound or TwinError (400).
        """
        hub = self._hub
        clean = check_patch(dict(patch))
        version = await hub.run(
            storage.patch_desired, hub.store, device_id, clean, hub.clock.now(), hub.node_id
        )
        session = hub.sessions.get(device_id)
        if session is not None:
            session.notify_desired(clean, version)
        return version

    async def invoke_method(
        self, device_id: str, name: str, payload: Any = None, timeout: float = 30.0
    ) -> tuple[int, Any]:
        """Call direct method ``name``; returns the device's (status, JSON payload).

        Raises DeviceNotConnected (no session here, or not subscribed to methods) and
        MethodTimeout. A body that is not JSON comes back as a string. On a cluster, a
        device on another node is reached through the relay; "not connected" then takes up
        to ``relay.ack_timeout`` (2 s) to establish.
        """
        if not name or _METHOD_NAME_FORBIDDEN & set(name):
            raise ValueError(f"invalid method name {name!r}")
        hub = self._hub
        session = hub.sessions.get(device_id)
        if session is None and hub.clustered:
            request = json.dumps(payload).encode()
            status, body = await hub.relay.invoke_method(device_id, name, request, timeout)
            return status, _decode(body)
        if session is None:
            raise DeviceNotConnected(device_id)
        rid, future = session.start_method(name, json.dumps(payload).encode())
        try:
            status, body = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise MethodTimeout(device_id, name, timeout) from None
        finally:
            session.forget_method(rid)
        return status, _decode(body)

    async def send_c2d(
        self,
        device_id: str,
        body: bytes,
        properties: Mapping[str, str | None] | None = None,
    ) -> bool:
        """Send a cloud-to-device message (QoS 1) with a property bag.

        True when it went to a live session on this node now; False when it is queued in
        memory for the device's next session (at most 50 per device, for an hour). On a
        cluster the message is also offered to the other nodes: the one holding the
        session delivers it, the others keep it queued until the device connects to one of
        them (see :mod:`certhub.hub.relay`). Raises DeviceNotFound for a device that does not
        exist.
        """
        hub = self._hub
        if device_id not in hub.sessions and await hub.run(hub.store.get_device, device_id) is None:
            raise DeviceNotFound(device_id)
        bag: dict[str, str | None] = {
            "$.mid": str(uuid.uuid4()),
            "$.to": f"/devices/{device_id}/messages/deviceBound",
        }
        bag.update(properties or {})
        topic = c2d_topic(device_id, format_property_bag(bag))
        if self._hub.queue_c2d(device_id, topic, body):
            return True
        if hub.clustered:
            hub.relay.send_c2d(device_id, topic, body)
        return False


def _decode(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return body.decode(errors="replace")
