"""The hub frontend: authenticates device CONNECTs and keeps the live sessions.

It is the listener's :class:`~certhub.listener.Frontend` for usernames shaped
``{host}/{deviceId}/?api-version=…`` and the one place that knows every live session, so it
also enforces one connection per device (a new one closes the old), reacts to the store's
change feed (a disabled, deleted or revoked device loses its session) and carries what
the service side needs (twin I/O, cloud-to-device queues, telemetry buffer).

Store calls are blocking and go through ``run`` (a bounded thread executor); the policy
issuing CAs are cached (:class:`~certhub.hub.issuers.LeafCache`) and reloaded when a
``ca.changed`` or ``policy.changed`` event arrives; device records are cached
(:class:`~certhub.hub.devices.DeviceCache`) until a ``device.*`` event or their TTL.
Connection state is written behind, once a second, in one transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certhub.clock import Clock
from certhub.hub import storage
from certhub.hub.auth import (
    HubUsername,
    Identity,
    authorize,
    is_hub_username,
    parse_username,
    refusal,
    still_admits,
)
from certhub.hub.credentials import CredentialsHandler
from certhub.hub.devices import DeviceCache
from certhub.hub.issuers import IssuerIndex, LeafCache, LeafFacts, load_issuers
from certhub.hub.metrics import REFUSALS, SESSIONS_CLOSED, count_sessions_of
from certhub.hub.relay import RELAY_KINDS, Relay
from certhub.hub.session import HubSession
from certhub.hub.telemetry import TelemetryBuffer, TelemetryMessage
from certhub.hub.topics import Subscription
from certhub.listener.api import Link, Refusal, Session
from certhub.metrics import CONNECTS_ACCEPTED
from certhub.mqtt import Connect, ConnectReturnCode, Publish, parse_property_bag
from certhub.rand import Random
from certhub.registry import Store
from certhub.registry._events import EventRecord
from certhub.registry.group_commit import BatchWriter
from certhub.registry.records import ConnectionState, DeviceRecord
from certhub.registry.schema import devices as devices_table

__all__ = ["HubFrontend", "Runner"]

_Reported = tuple[str, Mapping[str, Any], dt.datetime]  # device, patch, at

log = logging.getLogger("certhub.hub")

T = TypeVar("T")
_BAD_LOGIN = ConnectReturnCode.BAD_USERNAME_OR_PASSWORD
_RECHECK_EVENTS = frozenset({"device.auth", "device.revocation"})
_CHANGE_KINDS = frozenset(
    {"device.status", "device.revocation", "device.auth", "device.deleted", "certificate.revoked"}
)


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


class Runner(Protocol):
    """Runs a blocking call off the event loop (``loop.run_in_executor`` on a bounded pool)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


_LOOKUP_ATTEMPTS = 5
"""Store lookups at CONNECT before a device whose change events keep arriving is refused."""


class HubFrontend:
    """IoT Hub device sessions on the shared listener."""

    name = "hub"

    def __init__(
        self,
        store: Store,
        *,
        run: Runner,
        clock: Clock,
        rng: Random,
        hosts: Iterable[str],
        namespace: str = "default",
        telemetry: TelemetryBuffer | None = None,
        c2d_queue_size: int = 50,
        c2d_ttl: float = 3600.0,
        device_cache_ttl: float = 30.0,
        credentials: CredentialsHandler | None = None,
    ) -> None:
        self.store = store
        self.run = run
        self.clock = clock
        self.namespace = namespace
        self.node_id = rng.token_bytes(8).hex()
        self.hosts = frozenset(host.lower() for host in hosts)
        self.sessions: dict[str, HubSession] = {}
        self.live_sessions = 0
        """Registered sessions not yet closed (``certhub_hub_connections``)."""
        self.telemetry = telemetry if telemetry is not None else TelemetryBuffer()
        self._leaves = LeafCache(IssuerIndex(()))
        # device -> (expires at (loop time), topic, body, queued at (clock))
        self._c2d: dict[str, deque[tuple[float, str, bytes, dt.datetime]]] = {}
        self._c2d_queue_size = c2d_queue_size
        self._c2d_ttl = c2d_ttl
        self._presence: dict[str, tuple[ConnectionState, dt.datetime]] = {}
        self._presence_task: asyncio.Task[None] | None = None
        self._reported: BatchWriter[_Reported, int] | None = None
        self._changed_at: dict[str, float] = {}  # device -> loop time of a closing event
        self.devices = DeviceCache(device_cache_ttl)
        self.credentials = credentials
        self._tasks: set[asyncio.Task[Any]] = set()
        self._opened_at: dict[str, dt.datetime] = {}
        self.clustered = False
        """True while other nodes are live: sessions elsewhere are reached through
        :attr:`relay` (set by the cluster coordinator)."""
        self.live_nodes: frozenset[str] = frozenset()
        """Node ids of the live nodes (set by the cluster coordinator)."""
        self.remote_sessions: dict[str, str] = {}
        """device -> node id holding its session, from ``session.opened/closed`` events."""
        self.relay = Relay(self)
        if credentials is not None:
            credentials.attach(self.publish_credentials)
        count_sessions_of(self)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the issuing CAs and start writing connection state behind."""
        await self.reload_issuers()
        self._presence_task = asyncio.get_running_loop().create_task(self._presence_loop())

    async def stop(self) -> None:
        """Stop the connection-state writer after a last flush; cancel background work."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.relay.outbox.flush()
        if self._presence_task is not None:
            self._presence_task.cancel()
            await asyncio.gather(self._presence_task, return_exceptions=True)
            self._presence_task = None
        await self._flush_presence()
        if self._reported is not None:
            writer, self._reported = self._reported, None
            await self.run(writer.close)

    async def reload_issuers(self) -> None:
        """Re-read the policy issuing CAs; close sessions whose issuer is no longer live."""
        index = await self.run(load_issuers, self.store, self.namespace)
        self._leaves = LeafCache(index)
        for session in list(self.sessions.values()):
            ca_id = session.identity.issuer_ca_id
            if ca_id is not None and ca_id not in index.ids:
                session.link.close("issuer-no-longer-trusted")

    # -- listener Frontend ------------------------------------------------------------------

    def accepts(self, connect: Connect) -> bool:
        """Hub usernames contain ``/?`` (``{host}/{deviceId}/?api-version=…``)."""
        return is_hub_username(connect.username)

    def open_session(
        self, connect: Connect, link: Link
    ) -> Session | Refusal | Awaitable[Session | Refusal]:
        """Authenticate the CONNECT (see :mod:`certhub.hub.auth`) and register the session.

        Answers at once when the device is cached; otherwise returns a coroutine that
        looks it up in the store first.
        """
        username = parse_username(connect.username)
        if username is None:
            return self._refuse(connect, link, refusal("bad-username", _BAD_LOGIN))
        if username.host.lower() not in self.hosts:
            return self._refuse(connect, link, refusal("wrong-host", _BAD_LOGIN))
        if connect.client_id != username.device_id:
            return self._refuse(connect, link, refusal("client-id-mismatch", _BAD_LOGIN))
        der = link.peer.client_cert_der
        leaf = self._leaves.facts(der) if der is not None else None
        serial = leaf.serial_hex if leaf is not None and leaf.issuer_ca_id is not None else None
        loop = asyncio.get_running_loop()
        cached = self.devices.get(username.device_id, serial, loop.time())
        if cached is None:
            return self._open_after_lookup(connect, link, username, leaf, serial)
        return self._decide(connect, link, username, leaf, *cached)

    async def _open_after_lookup(
        self,
        connect: Connect,
        link: Link,
        username: HubUsername,
        leaf: LeafFacts | None,
        serial: str | None,
    ) -> Session | Refusal:
        found = await self._device(username.device_id, serial)
        if found is None:
            return self._refuse(connect, link, refusal("device-changed-during-connect"))
        result = self._decide(connect, link, username, leaf, *found)
        return await result if isinstance(result, Awaitable) else result

    def _decide(
        self,
        connect: Connect,
        link: Link,
        username: HubUsername,
        leaf: LeafFacts | None,
        device: DeviceRecord | None,
        cert_state: str | None,
    ) -> Session | Refusal | Awaitable[Session | Refusal]:
        now = self.clock.now()
        decision = authorize(
            device,
            host=username.host,
            password=connect.password,
            leaf=leaf,
            certificate_state=cert_state,
            now=now,
        )
        if isinstance(decision, Refusal):
            return self._refuse(connect, link, decision)
        if self.credentials is not None and decision.serial_hex and cert_state != "active":
            return self._admit(connect, link, decision, cert_state)
        return self._accept(connect, link, decision, now)

    async def _admit(
        self,
        connect: Connect,
        link: Link,
        identity: Identity,
        cert_state: str | None,
    ) -> Session | Refusal:
        """Two-phase renewal: ask the credentials handler whether this certificate may be used."""
        assert self.credentials is not None and identity.serial_hex is not None
        device_id, serial = identity.device_id, identity.serial_hex
        admission = await self.credentials.on_authenticated(device_id, serial, cert_state)
        if not admission.admitted:
            return self._refuse(connect, link, refusal(admission.reason))
        if admission.reason in ("active", "activated"):
            self.devices.set_certificate_state(device_id, serial, "active")
        return self._accept(connect, link, identity, self.clock.now())

    def _accept(
        self, connect: Connect, link: Link, decision: Identity, now: dt.datetime
    ) -> Session:
        session = HubSession(self, link, decision, connect.will)
        self._register(session, now)
        CONNECTS_ACCEPTED.inc()
        if decision.expires_at is not None:
            session.expire_at((decision.expires_at - now).total_seconds())
        return session

    async def _device(
        self, device_id: str, serial_hex: str | None
    ) -> tuple[DeviceRecord | None, str | None] | None:
        """The device and its certificate's state from the store (then cached); None if a
        change event for it arrived during each of ``_LOOKUP_ATTEMPTS`` lookups.

        A device just created, given a certificate and changed again (as an operator's
        script or a test does) has several events in flight, which may arrive one per
        lookup; a few attempts ride that out, and a device under endless churn is refused.
        """
        loop = asyncio.get_running_loop()
        for _ in range(_LOOKUP_ATTEMPTS):
            started = loop.time()
            device, cert_state = await self.run(self._lookup, device_id, serial_hex)
            if self._changed_at.get(device_id, -1.0) < started:
                if device is not None:
                    self.devices.put(device, serial_hex, cert_state, started)
                return device, cert_state
            # A change event arrived during the lookup: what we read may predate it.
        return None

    def _lookup(
        self, device_id: str, serial_hex: str | None
    ) -> tuple[DeviceRecord | None, str | None]:
        device = self.store.get_device(device_id)
        if device is None or serial_hex is None or device.auth_type != "certificateAuthority":
            return device, None
        certificate = self.store.get_certificate(serial_hex)
        return device, None if certificate is None else certificate.state

    def _refuse(self, connect: Connect, link: Link, decision: Refusal) -> Refusal:
        peer = link.peer
        log.info(
            "refused device %r from %s:%s: %s (CONNACK %d)",
            connect.client_id,
            peer.address,
            peer.port,
            decision.reason,
            decision.code,
        )
        REFUSALS.labels(decision.reason).inc()
        return decision

    # -- sessions ---------------------------------------------------------------------------

    def _register(self, session: HubSession, now: dt.datetime) -> None:
        device_id = session.device_id
        old = self.sessions.get(device_id)
        self.sessions[device_id] = session
        self.live_sessions += 1
        self._presence[device_id] = ("Connected", now)
        self._opened_at[device_id] = now
        self.remote_sessions.pop(device_id, None)
        if self.clustered:
            self.relay.session_opened(device_id)
        if old is not None:
            old.link.close("replaced-by-new-connection")

    def session_closed(self, session: HubSession, reason: str) -> None:
        """A session ended (called once per registered session)."""
        self.live_sessions -= 1
        _closed_counter(reason).inc()
        device_id = session.device_id
        if self.sessions.get(device_id) is session:
            del self.sessions[device_id]
            self._opened_at.pop(device_id, None)
            if self.clustered:
                self.relay.session_closed(device_id)
            self._presence[device_id] = ("Disconnected", self.clock.now())
        log.debug("device %r disconnected: %s", device_id, reason)

    def note_remote_session(self, device_id: str, node: str, kind: str) -> None:
        """Track which other node holds ``device_id`` (``session.opened/closed``)."""
        if kind == "session.opened":
            self.remote_sessions[device_id] = node
        elif self.remote_sessions.get(device_id) in (node, ""):
            del self.remote_sessions[device_id]

    def connected_elsewhere(self, device_id: str) -> bool:
        """True when another live node announced a session of the device (or the store
        said it was connected when this node joined: node ``""``)."""
        node = self.remote_sessions.get(device_id)
        if node is None or not self.clustered:
            return False
        return node == "" or node in self.live_nodes

    async def load_remote_sessions(self) -> int:
        """Note the devices the store shows connected (to other nodes) when this node joins
        a cluster; announcements made later correct the picture. Returns how many."""
        connected = await self.run(_connected_devices, self.store)
        for device_id in connected:
            if device_id not in self.sessions:
                self.remote_sessions.setdefault(device_id, "")
        return len(connected)

    def opened_before(self, session: HubSession, at: dt.datetime) -> bool:
        """True when ``session`` is the device's live session here and opened before ``at``."""
        device_id = session.device_id
        opened = self._opened_at.get(device_id)
        return self.sessions.get(device_id) is session and opened is not None and opened < at

    def close_session(self, device_id: str, reason: str) -> bool:
        """Close the device's live session, if any."""
        session = self.sessions.get(device_id)
        if session is None:
            return False
        log.info("closing the session of device %r: %s", device_id, reason)
        session.link.close(reason)
        return True

    # -- device traffic -----------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background (cancelled at :meth:`stop`)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def publish_credentials(self, device_id: str, topic: str, payload: bytes) -> bool:
        """Publish a credentials response on the device's session if it listens for them."""
        session = self.sessions.get(device_id)
        if session is None and self.clustered and "/202/" not in topic:
            self.relay.credentials_ready(device_id)  # the device may be on another node
        if session is None or session.link.closed:
            return False
        if not session.subscriptions & Subscription.CREDENTIALS:
            return False
        session.link.publish(topic, payload)
        return True

    def accept_telemetry(self, device_id: str, packet: Publish, bag: str) -> None:
        """Queue a device-to-cloud message for the service side."""
        properties = parse_property_bag(bag) if bag else {}
        if packet.retain:
            properties["mqtt-retain"] = "true"
        self.telemetry.put(
            TelemetryMessage(device_id, packet.payload, properties, self.clock.now())
        )

    def accept_will(self, device_id: str, payload: bytes, bag: str) -> None:
        """Queue a device's will message as telemetry marked ``iothub-MessageType=Will``."""
        properties = parse_property_bag(bag) if bag else {}
        properties["iothub-MessageType"] = "Will"
        self.telemetry.put(TelemetryMessage(device_id, payload, properties, self.clock.now()))

    async def device_twin(self, device_id: str) -> dict[str, Any]:
        """The device's view of its twin."""
        return await self.run(storage.device_twin, self.store, device_id)

    async def patch_reported(self, device_id: str, patch: Mapping[str, Any]) -> int:
        """Merge a reported patch; the new reported version (group-committed with the
        patches of other devices that arrive meanwhile: one transaction, one fsync)."""
        return await self._reported_writer().run((device_id, patch, self.clock.now()))

    def _reported_writer(self) -> BatchWriter[_Reported, int]:
        if self._reported is None:
            self._reported = BatchWriter(self.store, self._write_reported, name="certhub-reported")
        return self._reported

    def _write_reported(self, conn: Connection, item: _Reported) -> int:
        device_id, patch, now = item
        return storage.patch_reported(self.store, device_id, patch, now, conn)

    def queue_c2d(self, device_id: str, topic: str, body: bytes) -> bool:
        """Deliver now if the device listens, else keep it (bounded, with a TTL)."""
        session = self.sessions.get(device_id)
        if session is not None and session.send_c2d(topic, body):
            return True
        self.keep_c2d(device_id, topic, body)
        return False

    def keep_c2d(self, device_id: str, topic: str, body: bytes) -> None:
        """Queue a message for the device's next session here (bounded, with a TTL)."""
        queue = self._c2d.get(device_id)
        if queue is None:
            queue = self._c2d[device_id] = deque(maxlen=self._c2d_queue_size)
        expires = asyncio.get_running_loop().time() + self._c2d_ttl
        queue.append((expires, topic, body, self.clock.now()))

    def forget_c2d(self, device_id: str, topic: str) -> None:
        """Drop the queued message with ``topic`` (delivered by another node)."""
        queue = self._c2d.get(device_id)
        if queue is not None:
            kept = deque((item for item in queue if item[1] != topic), maxlen=queue.maxlen)
            self._c2d[device_id] = kept

    def drop_c2d(self, device_id: str, before: dt.datetime) -> None:
        """Forget the messages queued here for ``device_id`` before ``before``."""
        queue = self._c2d.get(device_id)
        if queue is not None:
            kept = deque((item for item in queue if item[3] >= before), maxlen=queue.maxlen)
            self._c2d[device_id] = kept

    def deliver_queued_c2d(self, session: HubSession) -> None:
        """Send the messages queued for the device of a session that just subscribed."""
        queue = self._c2d.pop(session.device_id, None)
        now = asyncio.get_running_loop().time()
        while queue:
            item = queue.popleft()
            expires, topic, body, _ = item
            if expires <= now:
                continue
            if not session.send_c2d(topic, body):
                queue.appendleft(item)
                self._c2d[session.device_id] = queue
                return
            if self.clustered:
                self.relay.c2d_delivered(session.device_id, topic)

    # -- change feed ----------------------------------------------------------------------------

    def on_events(self, batch: Sequence[EventRecord]) -> None:
        """React to store changes: close sessions, reload CAs, forward desired patches."""
        reload = False
        for event in batch:
            reload |= event.kind in ("ca.changed", "policy.changed")
            if event.device_id is None:
                continue
            session = self.sessions.get(event.device_id)
            if event.kind in RELAY_KINDS:
                self.relay.on_event(event, session)
            else:
                self._device_event(event, session)
        if reload:
            asyncio.get_running_loop().create_task(self._reload_logged())

    def _device_event(self, event: EventRecord, session: HubSession | None) -> None:
        kind, payload = event.kind, event.payload
        if kind in _CHANGE_KINDS:
            self._note_change(event.device_id or "")
            self.devices.forget(event.device_id or "")
        if session is None:
            return
        if kind == "device.status" and payload.get("status") != "enabled":
            session.link.close("device-disabled")
        elif kind == "device.deleted":
            session.link.close("device-deleted")
        elif kind in _RECHECK_EVENTS:
            self.spawn(self._recheck(session))
        elif kind == "certificate.revoked" and payload.get("serial") == session.identity.serial_hex:
            session.link.close("certificate-revoked")
        elif kind == storage.DESIRED_EVENT and payload.get("origin") != self.node_id:
            session.notify_desired(dict(payload.get("patch", {})), int(payload["version"]))

    async def _recheck(self, session: HubSession) -> None:
        """Close ``session`` if the device's changed record no longer admits it.

        The event may describe a change the CONNECT lookup already saw (committed just
        before the device connected, read by the change feed just after), so the live
        record decides rather than the event alone."""
        device = await self.run(self.store.get_device, session.device_id)
        reason = still_admits(device, session.identity)
        if reason is not None and self.sessions.get(session.device_id) is session:
            session.link.close(reason)

    def _note_change(self, device_id: str) -> None:
        now = asyncio.get_running_loop().time()
        if len(self._changed_at) > 10_000:
            self._changed_at = {d: t for d, t in self._changed_at.items() if now - t < 10}
        self._changed_at[device_id] = now

    async def _reload_logged(self) -> None:
        try:
            await self.reload_issuers()
        except Exception:
            log.exception("reloading the issuing CAs failed")

    # -- connection state ---------------------------------------------------------------------

    async def _presence_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._flush_presence()
            except Exception:
                log.exception("writing connection state failed")

    async def _flush_presence(self) -> None:
        if self._presence:
            changes, self._presence = self._presence, {}
            try:
                await self.run(self._write_presence, changes)
            except Exception:  # keep them for the next flush (newer changes win)
                self._presence = {**changes, **self._presence}
                raise

    def _write_presence(self, changes: Mapping[str, tuple[ConnectionState, dt.datetime]]) -> None:
        storage.write_connection_states(self.store, changes)
