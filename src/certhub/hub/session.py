"""One authenticated device connection on the hub: the topics of wire doc §3.

Telemetry is handled synchronously (no task, no store call); twin requests return a
coroutine, which makes the listener hold the device's later packets until the store call
is done, so a device's twin requests are answered in order. Subscriptions are flags, and
direct-method calls waiting for the device's answer live in a dict created on first use,
so an idle session stays a handful of slots.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from certhub.hub import topics
from certhub.hub.auth import Identity
from certhub.hub.errors import DeviceNotConnected, DeviceNotFound, TwinError
from certhub.hub.topics import PublishKind, Subscription
from certhub.hub.twin import desired_notification, parse_patch
from certhub.listener.api import CLIENT_DISCONNECT, Link
from certhub.mqtt import Publish, RemoteProtocolError, Will

if TYPE_CHECKING:
    from certhub.hub.frontend import HubFrontend

__all__ = ["HubSession"]

log = logging.getLogger("certhub.hub")

_CREDENTIALS_UNAVAILABLE = {
    "errorCode": 403010,
    "message": "Certificate management over the hub is not available on this server yet",
}


class HubSession:
    """The hub's side of one device connection (a :class:`certhub.listener.Session`)."""

    __slots__ = (
        "_expiry",
        "_hub",
        "_methods",
        "_next_rid",
        "_prefix",
        "_will",
        "identity",
        "link",
        "opened_at",
        "subscriptions",
    )

    def __init__(self, hub: HubFrontend, link: Link, identity: Identity, will: Will | None) -> None:
        self._hub = hub
        self.link = link
        self.identity = identity
        self.subscriptions = Subscription.NONE
        self._prefix = topics.telemetry_prefix(identity.device_id)
        self._will = will
        self._methods: dict[str, asyncio.Future[tuple[int, bytes]]] | None = None
        self._next_rid = 0
        self._expiry: asyncio.TimerHandle | None = None
        self.opened_at: dt.datetime | None = None
        """When the hub registered it as the device's live session."""

    @property
    def device_id(self) -> str:
        """The authenticated device."""
        return self.identity.device_id

    def expire_at(self, delay: float) -> None:
        """Close the session when its credential expires (in ``delay`` seconds)."""
        self._expiry = asyncio.get_running_loop().call_later(
            delay, self.link.close, "credential-expired"
        )

    # -- listener Session ---------------------------------------------------------------

    def on_subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        """Grant the device's own topic families (QoS 2 granted as 1); else close."""
        codes: list[int] = []
        added = Subscription.NONE
        for topic_filter, qos in filters:
            family = topics.classify_filter(self.device_id, topic_filter)
            if family is None:
                raise RemoteProtocolError(
                    f"subscription to {topic_filter!r} is not allowed", packet_type="SUBSCRIBE"
                )
            added |= family
            codes.append(min(qos, 1))
        new = added & ~self.subscriptions
        self.subscriptions |= added
        if new & Subscription.C2D:
            asyncio.get_running_loop().call_soon(self._hub.deliver_queued_c2d, self)
        credentials = self._hub.credentials
        if new & Subscription.CREDENTIALS and credentials is not None:
            self._hub.spawn(credentials.on_subscribed(self.device_id))
        return codes

    def on_unsubscribe(self, filters: Sequence[str]) -> None:
        """Forget the families of ``filters``."""
        for topic_filter in filters:
            family = topics.classify_filter(self.device_id, topic_filter)
            if family is not None:
                self.subscriptions &= ~family

    def on_publish(self, packet: Publish) -> Awaitable[None] | None:
        """Telemetry (synchronous), twin requests (a coroutine), method answers."""
        topic = packet.topic
        prefix = self._prefix
        if topic.startswith(prefix):
            self._hub.accept_telemetry(self.device_id, packet, topic[len(prefix) :])
            return None
        if topic == prefix[:-1]:
            self._hub.accept_telemetry(self.device_id, packet, "")
            return None
        request = topics.classify_publish(topic)
        if request is None:
            raise RemoteProtocolError(f"publish to {topic!r} is not allowed", packet_type="PUBLISH")
        if request.kind is PublishKind.TWIN_GET:
            return self._twin_get(request.rid)
        if request.kind is PublishKind.TWIN_PATCH_REPORTED:
            return self._twin_patch(request.rid, packet.payload)
        if request.kind is PublishKind.METHOD_RESPONSE:
            assert request.status is not None
            self._method_answered(request.rid, request.status, packet.payload)
            return None
        credentials = self._hub.credentials
        if credentials is not None:
            coro = credentials.handle_request(
                self.device_id, request.rid, packet.payload, request.operation
            )
            self._hub.spawn(coro)  # 202 now, 200 after issuance: not in the packet order
            return None
        self._publish(
            Subscription.CREDENTIALS,
            topics.credentials_response_topic(403, request.rid),
            json.dumps(_CREDENTIALS_UNAVAILABLE).encode(),
        )
        return None

    def on_close(self, reason: str) -> None:
        """Unregister; fail waiting method calls; publish the will unless clean."""
        if self._expiry is not None:
            self._expiry.cancel()
        for future in (self._methods or {}).values():
            if not future.done():
                future.set_exception(DeviceNotConnected(self.device_id, "disconnected"))
        will = self._will
        if reason != CLIENT_DISCONNECT and will is not None and will.topic.startswith(self._prefix):
            bag = will.topic[len(self._prefix) :]
            self._hub.accept_will(self.device_id, will.payload, bag)
        self._hub.session_closed(self, reason)

    # -- twin ----------------------------------------------------------------------------

    async def _twin_get(self, rid: str) -> None:
        try:
            document = await self._hub.device_twin(self.device_id)
        except DeviceNotFound:
            self._twin_response(404, rid, b"{}")
            return
        self._twin_response(200, rid, json.dumps(document).encode())

    async def _twin_patch(self, rid: str, body: bytes) -> None:
        try:
            version = await self._hub.patch_reported(self.device_id, parse_patch(body))
        except TwinError as exc:
            log.info("device %r: reported patch refused: %s", self.device_id, exc)
            error = {"errorCode": 400004, "message": str(exc), "reason": exc.reason}
            self._twin_response(exc.status, rid, json.dumps(error).encode())
            return
        except DeviceNotFound:
            self._twin_response(404, rid, b"{}")
            return
        self._twin_response(204, rid, b"", version)

    def _twin_response(
        self, status: int, rid: str, body: bytes, version: int | None = None
    ) -> None:
        topic = topics.twin_response_topic(status, rid, version)
        self._publish(Subscription.TWIN_RESPONSES, topic, body)

    def notify_desired(self, patch: dict[str, Any], version: int) -> None:
        """Send a desired-properties notification (if the device subscribed to them)."""
        body = json.dumps(desired_notification(patch, version)).encode()
        self._publish(Subscription.DESIRED, topics.desired_topic(version), body)

    # -- methods and C2D -----------------------------------------------------------------

    def start_method(
        self, name: str, payload: bytes
    ) -> tuple[str, asyncio.Future[tuple[int, bytes]]]:
        """Send a direct-method request; the future gets the device's (status, body)."""
        if not self.subscriptions & Subscription.METHODS:
            raise DeviceNotConnected(self.device_id, "not-subscribed")
        self._next_rid += 1
        rid = format(self._next_rid, "x")
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        if self._methods is None:
            self._methods = {}
        self._methods[rid] = future
        self.link.publish(topics.method_request_topic(name, rid), payload)
        return rid, future

    def forget_method(self, rid: str) -> None:
        """Drop the bookkeeping of a finished or abandoned method call."""
        if self._methods is not None:
            self._methods.pop(rid, None)
            if not self._methods:
                self._methods = None

    def _method_answered(self, rid: str, status: int, payload: bytes) -> None:
        future = (self._methods or {}).get(rid)
        if future is None:
            log.info("device %r answered unknown method call %r", self.device_id, rid)
            return
        if not future.done():
            future.set_result((status, payload))

    def send_c2d(self, topic: str, body: bytes) -> bool:
        """Deliver a cloud-to-device message at QoS 1; False if not subscribed."""
        if not self.subscriptions & Subscription.C2D or self.link.closed:
            return False
        self.link.publish(topic, body, qos=1)
        return True

    def _publish(self, family: Subscription, topic: str, body: bytes) -> None:
        if self.subscriptions & family:
            self.link.publish(topic, body)
