"""The hub frontend: authenticates device CONNECTs and keeps the live sessions.

It is the listener's :class:`~certhub.listener.Frontend` for usernames shaped
``{host}/{deviceId}/?api-version=…`` and the one place that knows every live session, so it
also enforces one connection per device (a new one closes the old), reacts to the store's
change feed (a disabled, deleted or revoked device loses its session) and carries what
the service side needs (twin I/O, cloud-to-device queues, telemetry buffer).

:class:`HubFrontend` is the face the listener, the service side, the sessions and the
cluster wiring use; the work is done by the small collaborators it owns:

* :class:`~certhub.hub.admission.Admission` — the CONNECT path (cached or looked-up device
  record, :func:`~certhub.hub.auth.authorize`, two-phase renewal admission);
* :class:`~certhub.hub.sessions.SessionRegistry` — live sessions here, sessions on other
  nodes; :class:`~certhub.hub.presence.PresenceWriter` — connection state;
* :class:`~certhub.hub.changes.ChangeFeed` — the reaction to store events;
* :class:`~certhub.hub.c2d.C2dQueues` — cloud-to-device delivery;
* :class:`~certhub.hub.relay.Relay` — reaching sessions on other nodes.

Store calls are blocking and go through ``run`` (a bounded thread executor); the policy
issuing CAs are cached (:class:`~certhub.hub.issuers.LeafCache`) and reloaded when a
``ca.changed`` or ``policy.changed`` event arrives; device records are cached
(:class:`~certhub.hub.devices.DeviceCache`) until a ``device.*`` event or their TTL.
Connection state is written behind, once a second, in one transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection

from certhub.clock import Clock
from certhub.hub import storage
from certhub.hub.admission import Admission
from certhub.hub.auth import is_hub_username
from certhub.hub.c2d import C2dQueues
from certhub.hub.changes import ChangeFeed
from certhub.hub.credentials import CredentialsHandler
from certhub.hub.devices import DeviceCache
from certhub.hub.issuers import load_issuers
from certhub.hub.metrics import count_sessions_of
from certhub.hub.presence import PresenceWriter
from certhub.hub.relay import Relay
from certhub.hub.session import HubSession
from certhub.hub.sessions import SessionRegistry
from certhub.hub.telemetry import TelemetryBuffer, TelemetryMessage
from certhub.hub.topics import Subscription
from certhub.listener.api import Link, Refusal, Session
from certhub.mqtt import Connect, Publish, parse_property_bag
from certhub.rand import Random
from certhub.registry import Store
from certhub.registry._events import EventRecord
from certhub.registry.group_commit import BatchWriter

__all__ = ["HubFrontend", "Runner"]

_Reported = tuple[str, Mapping[str, Any], dt.datetime]  # device, patch, at

T = TypeVar("T")


class Runner(Protocol):
    """Runs a blocking call off the event loop (``loop.run_in_executor`` on a bounded pool)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


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
        self.telemetry = telemetry if telemetry is not None else TelemetryBuffer()
        self.devices = DeviceCache(device_cache_ttl)
        self.credentials = credentials
        self.clustered = False
        """True while other nodes are live: sessions elsewhere are reached through
        :attr:`relay` (set by the cluster coordinator)."""
        self.live_nodes: frozenset[str] = frozenset()
        """Node ids of the live nodes (set by the cluster coordinator)."""
        self.presence = PresenceWriter(store, run)
        self.session_registry = SessionRegistry(self, self.presence)
        self.sessions = self.session_registry.sessions
        """device -> its live session on this node (the registry's, not a copy)."""
        self.remote_sessions = self.session_registry.remote
        """device -> node id holding its session, from ``session.opened/closed`` events."""
        self.admission = Admission(self)
        self.changes = ChangeFeed(self)
        self.c2d = C2dQueues(self, queue_size=c2d_queue_size, ttl=c2d_ttl)
        self.relay = Relay(self)
        self._reported: BatchWriter[_Reported, int] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        if credentials is not None:
            credentials.attach(self.publish_credentials)
        count_sessions_of(self.session_registry)

    @property
    def live_sessions(self) -> int:
        """Registered sessions not yet closed (``certhub_hub_connections``)."""
        return self.session_registry.live_sessions

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the issuing CAs and start writing connection state behind."""
        await self.reload_issuers()
        self.presence.start()

    async def stop(self) -> None:
        """Stop the connection-state writer after a last flush; cancel background work."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.relay.outbox.flush()
        await self.presence.stop()
        if self._reported is not None:
            writer, self._reported = self._reported, None
            await self.run(writer.close)

    async def reload_issuers(self) -> None:
        """Re-read the policy issuing CAs; close sessions whose issuer is no longer live."""
        index = await self.run(load_issuers, self.store, self.namespace)
        self.admission.trust(index)
        self.session_registry.close_untrusted(index.ids)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background (cancelled at :meth:`stop`)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        return self.admission.open_session(connect, link)

    # -- sessions (see SessionRegistry) -------------------------------------------------------

    def session_closed(self, session: HubSession, reason: str) -> None:
        """A session ended (called once per registered session)."""
        self.session_registry.closed(session, reason)

    def close_session(self, device_id: str, reason: str) -> bool:
        """Close the device's live session, if any."""
        return self.session_registry.close(device_id, reason)

    def opened_before(self, session: HubSession, at: dt.datetime) -> bool:
        """True when ``session`` is the device's live session here and opened before ``at``."""
        return self.session_registry.opened_before(session, at)

    def note_remote_session(self, device_id: str, node: str, kind: str) -> None:
        """Track which other node holds ``device_id`` (``session.opened/closed``)."""
        self.session_registry.note_remote(device_id, node, kind)

    def connected_elsewhere(self, device_id: str) -> bool:
        """True when another live node announced a session of the device (or the store
        said it was connected when this node joined: node ``""``)."""
        return self.session_registry.connected_elsewhere(device_id)

    async def load_remote_sessions(self) -> int:
        """Note the devices the store shows connected (to other nodes) when this node joins
        a cluster; announcements made later correct the picture. Returns how many."""
        return await self.session_registry.load_remote()

    # -- change feed (see ChangeFeed) ---------------------------------------------------------

    def on_events(self, batch: Sequence[EventRecord]) -> None:
        """React to store changes: close sessions, reload CAs, forward desired patches."""
        self.changes.on_events(batch)

    # -- device traffic -----------------------------------------------------------------------

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

    # -- cloud-to-device (see C2dQueues) ------------------------------------------------------

    def queue_c2d(self, device_id: str, topic: str, body: bytes) -> bool:
        """Deliver now if the device listens, else keep it (bounded, with a TTL)."""
        return self.c2d.queue(device_id, topic, body)

    def keep_c2d(self, device_id: str, topic: str, body: bytes) -> None:
        """Queue a message for the device's next session here (bounded, with a TTL)."""
        self.c2d.keep(device_id, topic, body)

    def forget_c2d(self, device_id: str, topic: str) -> None:
        """Drop the queued message with ``topic`` (delivered by another node)."""
        self.c2d.forget(device_id, topic)

    def drop_c2d(self, device_id: str, before: dt.datetime) -> None:
        """Forget the messages queued here for ``device_id`` before ``before``."""
        self.c2d.drop(device_id, before)

    def deliver_queued_c2d(self, session: HubSession) -> None:
        """Send the messages queued for the device of a session that just subscribed."""
        self.c2d.deliver_queued(session)
