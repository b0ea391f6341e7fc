"""Reaching a device whose session is on another node, through the store's ``events``.

Why events: every node already follows the ``events`` table (every ~200 ms, woken at
once by PostgreSQL ``NOTIFY``), so a request for "whoever holds device X" is one
appended row; no node needs to know where a device is. Only nodes clustered with
others (more than one live node, see :mod:`certhub.cluster`) use this path; a single
node answers from its own sessions as before.

==========================  ================================================  ===========
kind                        meaning                                           answered by
==========================  ================================================  ===========
``session.opened``          a device connected on ``origin``: others close     nobody
                            their older session of it (and note where it is)
``session.closed``          that session ended                                 nobody
``method.call``             invoke a direct method (``call``, ``name``,         the holder
                            ``payload``, ``timeout``)
``method.ack``              the holder started the call                         —
``method.result``           ``status`` + ``body`` (base64), or ``error``        —
                            ("not-subscribed", "timeout", "disconnected")
``c2d.message``             a cloud-to-device message (``topic``, ``body``)     the holder
                            (others keep it queued until the device shows up)
``c2d.delivered``           the message with ``topic`` reached the device:      nobody
                            others drop their queued copy
``credentials.ready``       a renewal response waits in the store               the holder
==========================  ================================================  ===========

Every payload carries ``origin`` (the writing node); replies carry ``to``.
:class:`Outbox` writes appended events behind in one transaction per batch: requests and
replies within ``delay`` (5 ms) with a ``NOTIFY`` that wakes every node at once;
``session.opened/closed`` and ``c2d.delivered`` (one per connect: the hot path) within
``lazy_delay`` (50 ms) and without a ``NOTIFY`` of their own — the nodes' next poll
(200 ms) or an urgent batch picks them up.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from certhub.hub.errors import DeviceNotConnected, MethodTimeout
from certhub.hub.topics import Subscription
from certhub.registry._events import EVENTS_CHANNEL, EventRecord

if TYPE_CHECKING:
    from certhub.hub.frontend import HubFrontend
    from certhub.hub.session import HubSession

__all__ = [
    "C2D_DELIVERED",
    "C2D_MESSAGE",
    "CREDENTIALS_READY",
    "METHOD_ACK",
    "METHOD_CALL",
    "METHOD_RESULT",
    "RELAY_KINDS",
    "SESSION_CLOSED",
    "SESSION_OPENED",
    "Outbox",
    "Relay",
]

log = logging.getLogger("certhub.hub.relay")

SESSION_OPENED = "session.opened"
SESSION_CLOSED = "session.closed"
METHOD_CALL = "method.call"
METHOD_ACK = "method.ack"
METHOD_RESULT = "method.result"
C2D_MESSAGE = "c2d.message"
C2D_DELIVERED = "c2d.delivered"
CREDENTIALS_READY = "credentials.ready"
RELAY_KINDS = frozenset(
    {
        SESSION_OPENED,
        SESSION_CLOSED,
        METHOD_CALL,
        METHOD_ACK,
        METHOD_RESULT,
        C2D_MESSAGE,
        C2D_DELIVERED,
        CREDENTIALS_READY,
    }
)
_NOTIFY = sa.text("SELECT pg_notify(:channel, 'relay')")


class Outbox:
    """Events appended now, written behind in batches (see the module docstring)."""

    def __init__(self, hub: HubFrontend, delay: float = 0.005, lazy_delay: float = 0.05) -> None:
        self._hub = hub
        self._delay = delay
        self._lazy_delay = lazy_delay
        self._pending: list[tuple[str, str | None, dict[str, Any], dt.datetime]] = []
        self._urgent = False
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    def append(
        self, kind: str, device_id: str | None, payload: Mapping[str, Any], *, urgent: bool = True
    ) -> None:
        """Queue one event (written within ``delay``, or ``lazy_delay`` if not urgent)."""
        self._pending.append((kind, device_id, dict(payload), self._hub.clock.now()))
        self._urgent |= urgent
        loop = asyncio.get_running_loop()
        due = loop.time() + (self._delay if urgent else self._lazy_delay)
        if self._timer is None or due < self._due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._due = loop.call_at(due, self._flush_soon), due

    def _flush_soon(self) -> None:
        self._timer = None
        self._hub.spawn(self.flush())

    async def flush(self) -> None:
        """Write what is queued now."""
        batch, self._pending = self._pending, []
        notify, self._urgent = self._urgent, False
        if batch:
            try:
                await self._hub.run(self._write, batch, notify)
            except Exception:
                log.exception("writing %d relay events failed", len(batch))

    def _write(
        self, batch: list[tuple[str, str | None, dict[str, Any], dt.datetime]], notify: bool
    ) -> None:
        store = self._hub.store
        with store.transaction() as conn:
            for kind, device_id, payload, at in batch:
                store.append_event(kind, device_id, payload, at, conn=conn)
            if notify and store.dialect_name == "postgresql":
                conn.execute(_NOTIFY, {"channel": EVENTS_CHANNEL})


@dataclass
class _Call:
    ack: asyncio.Future[None]
    result: asyncio.Future[tuple[int, bytes]]
    device_id: str
    name: str
    timeout: float


class Relay:
    """Cross-node requests of one hub frontend (see the module docstring)."""

    def __init__(self, hub: HubFrontend, *, ack_timeout: float = 2.0) -> None:
        self._hub = hub
        self.outbox = Outbox(hub)
        self.ack_timeout = ack_timeout
        self._calls: dict[str, _Call] = {}

    @property
    def origin(self) -> str:
        return self._hub.node_id

    # -- the calling side -----------------------------------------------------------------

    async def invoke_method(
        self, device_id: str, name: str, payload: bytes, timeout: float
    ) -> tuple[int, bytes]:
        """Invoke ``name`` on the node holding ``device_id``; its (status, body).

        Raises DeviceNotConnected when no node acknowledges within ``ack_timeout`` (or
        the holder reports the device not subscribed / gone), MethodTimeout when the
        device does not answer within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        call_id = uuid.uuid4().hex
        call = _Call(loop.create_future(), loop.create_future(), device_id, name, timeout)
        self._calls[call_id] = call
        body = {"call": call_id, "name": name, "payload": payload.decode(), "timeout": timeout}
        self.outbox.append(METHOD_CALL, device_id, {"origin": self.origin, **body})
        started = loop.time()
        try:
            try:
                await asyncio.wait_for(asyncio.shield(call.ack), min(timeout, self.ack_timeout))
            except TimeoutError:
                if not call.result.done():
                    raise DeviceNotConnected(device_id, "offline") from None
            remaining = timeout - (loop.time() - started) + self.ack_timeout
            try:
                return await asyncio.wait_for(call.result, max(0.0, remaining))
            except TimeoutError:
                raise MethodTimeout(device_id, name, timeout) from None
        finally:
            del self._calls[call_id]

    def send_c2d(self, device_id: str, topic: str, body: bytes) -> None:
        """Offer a cloud-to-device message to the node holding the device."""
        payload = {"origin": self.origin, "topic": topic, "body": _b64(body)}
        self.outbox.append(C2D_MESSAGE, device_id, payload)

    def c2d_delivered(self, device_id: str, topic: str) -> None:
        """Tell the other nodes to drop their queued copy of a delivered message."""
        payload = {"origin": self.origin, "topic": topic}
        self.outbox.append(C2D_DELIVERED, device_id, payload, urgent=False)

    def session_opened(self, device_id: str) -> None:
        """Tell the other nodes to close their (older) session of ``device_id``."""
        self.outbox.append(SESSION_OPENED, device_id, {"origin": self.origin}, urgent=False)

    def session_closed(self, device_id: str) -> None:
        """Tell the other nodes that this node no longer holds ``device_id``."""
        self.outbox.append(SESSION_CLOSED, device_id, {"origin": self.origin}, urgent=False)

    def credentials_ready(self, device_id: str) -> None:
        """Tell the node holding ``device_id`` that a renewal response waits in the store."""
        self.outbox.append(CREDENTIALS_READY, device_id, {"origin": self.origin})

    # -- events --------------------------------------------------------------------------

    def on_event(self, event: EventRecord, session: HubSession | None) -> None:
        """Handle one relay event (``event.kind`` in :data:`RELAY_KINDS`)."""
        payload = event.payload
        if payload.get("origin") == self.origin:
            return
        kind = event.kind
        if kind in (SESSION_OPENED, SESSION_CLOSED):
            self._hub.note_remote_session(event.device_id or "", str(payload["origin"]), kind)
        if kind in (METHOD_ACK, METHOD_RESULT):
            if payload.get("to") == self.origin:
                self._answered(kind, payload)
        elif kind == C2D_DELIVERED:
            self._hub.forget_c2d(event.device_id or "", str(payload["topic"]))
        elif session is not None:
            self._for_session(event, session)
        elif kind == C2D_MESSAGE:
            self._hub.keep_c2d(event.device_id or "", payload["topic"], _unb64(payload["body"]))
        elif kind == SESSION_OPENED:
            # the new holder has its own copy of what was queued before it connected
            self._hub.drop_c2d(event.device_id or "", event.at)

    def _for_session(self, event: EventRecord, session: HubSession) -> None:
        kind, payload = event.kind, event.payload
        if kind == SESSION_OPENED:
            if self._hub.opened_before(session, event.at):
                session.link.close("replaced-by-connection-on-another-node")
        elif kind == METHOD_CALL:
            self._hub.spawn(self._serve_call(session, payload))
        elif kind == C2D_MESSAGE:
            topic = str(payload["topic"])
            if self._hub.queue_c2d(session.device_id, topic, _unb64(payload["body"])):
                self.c2d_delivered(session.device_id, topic)
        elif kind == CREDENTIALS_READY:
            credentials = self._hub.credentials
            if credentials is not None and session.subscriptions & Subscription.CREDENTIALS:
                self._hub.spawn(credentials.on_subscribed(session.device_id))

    async def _serve_call(self, session: HubSession, payload: Mapping[str, Any]) -> None:
        reply = {"origin": self.origin, "to": payload["origin"], "call": payload["call"]}
        device_id = session.device_id
        try:
            rid, future = session.start_method(payload["name"], str(payload["payload"]).encode())
        except DeviceNotConnected as exc:
            self.outbox.append(METHOD_RESULT, device_id, {**reply, "error": exc.reason})
            return
        self.outbox.append(METHOD_ACK, device_id, reply)
        try:
            status, body = await asyncio.wait_for(future, float(payload["timeout"]))
        except TimeoutError:
            result: dict[str, Any] = {"error": "timeout"}
        except DeviceNotConnected as exc:
            result = {"error": exc.reason}
        else:
            result = {"status": status, "body": _b64(body)}
        finally:
            session.forget_method(rid)
        self.outbox.append(METHOD_RESULT, device_id, {**reply, **result})

    def _answered(self, kind: str, payload: Mapping[str, Any]) -> None:
        call = self._calls.get(str(payload.get("call")))
        if call is None:
            return
        if not call.ack.done():
            call.ack.set_result(None)
        if kind != METHOD_RESULT or call.result.done():
            return
        error = payload.get("error")
        if error == "timeout":
            call.result.set_exception(MethodTimeout(call.device_id, call.name, call.timeout))
        elif error is not None:
            call.result.set_exception(DeviceNotConnected(call.device_id, str(error)))
        else:
            call.result.set_result((int(payload["status"]), _unb64(payload["body"])))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
