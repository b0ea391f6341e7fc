"""The CONNECT path: from a hub CONNECT to a registered session or a refusal.

Why shaped so: most CONNECTs are reconnects of a device the hub saw recently, so they are
answered synchronously from :class:`~certhub.hub.devices.DeviceCache` (no thread hop);
the rest look the device up in the store first. A lookup that a change event for the
device overtook may have read a record older than the change, so it is repeated (up to
``_LOOKUP_ATTEMPTS`` times): the change feed notes such events here
(:meth:`Admission.note_change`). The decision itself is :func:`certhub.hub.auth.authorize`;
a certificate the renewal path has not yet activated is checked with the credentials
handler (two-phase renewal) before the session is accepted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from certhub.hub.auth import (
    HubUsername,
    Identity,
    authorize,
    parse_username,
    refusal,
)
from certhub.hub.issuers import IssuerIndex, LeafCache, LeafFacts
from certhub.hub.metrics import REFUSALS
from certhub.hub.session import HubSession
from certhub.listener.api import Link, Refusal, Session
from certhub.metrics import CONNECTS_ACCEPTED
from certhub.mqtt import Connect, ConnectReturnCode
from certhub.registry.records import DeviceRecord

if TYPE_CHECKING:
    from certhub.hub.frontend import HubFrontend

__all__ = ["Admission"]

log = logging.getLogger("certhub.hub")

_BAD_LOGIN = ConnectReturnCode.BAD_USERNAME_OR_PASSWORD

_LOOKUP_ATTEMPTS = 5
"""Store lookups at CONNECT before a device whose change events keep arriving is refused."""

_Found = tuple[DeviceRecord | None, str | None]  # the device, its certificate's state


class Admission:
    """Authenticates hub CONNECTs (see :mod:`certhub.hub.auth`) and registers the sessions."""

    def __init__(self, hub: HubFrontend) -> None:
        self._hub = hub
        self._clock = hub.clock
        self._devices = hub.devices
        self._leaves = LeafCache(IssuerIndex(()))
        self._changed_at: dict[str, float] = {}  # device -> loop time of a closing event

    def trust(self, issuers: IssuerIndex) -> None:
        """Authenticate certificates against ``issuers`` from now on."""
        self._leaves = LeafCache(issuers)

    def open_session(
        self, connect: Connect, link: Link
    ) -> Session | Refusal | Awaitable[Session | Refusal]:
        """Authenticate the CONNECT and register the session.

        Answers at once when the device is cached; otherwise returns a coroutine that
        looks it up in the store first.
        """
        username = parse_username(connect.username)
        if username is None:
            return _refuse(connect, link, refusal("bad-username", _BAD_LOGIN))
        if username.host.lower() not in self._hub.hosts:
            return _refuse(connect, link, refusal("wrong-host", _BAD_LOGIN))
        if connect.client_id != username.device_id:
            return _refuse(connect, link, refusal("client-id-mismatch", _BAD_LOGIN))
        der = link.peer.client_cert_der
        leaf = self._leaves.facts(der) if der is not None else None
        serial = leaf.serial_hex if leaf is not None and leaf.issuer_ca_id is not None else None
        loop = asyncio.get_running_loop()
        cached = self._devices.get(username.device_id, serial, loop.time())
        if cached is not None:
            decision = self._authorize(connect, username, leaf, *cached)
            if not isinstance(decision, Refusal):
                return self._admitted(connect, link, decision, cached[1])
            # The cache can be behind a change the device already relies on (a new key,
            # enabled again, created again): a refusal is confirmed against the store.
        return self._open_after_lookup(connect, link, username, leaf, serial)

    def note_change(self, device_id: str) -> None:
        """A change event for the device arrived: forget its cached record, and make a
        lookup in flight for it read again."""
        now = asyncio.get_running_loop().time()
        if len(self._changed_at) > 10_000:
            self._changed_at = {d: t for d, t in self._changed_at.items() if now - t < 10}
        self._changed_at[device_id] = now
        self._devices.forget(device_id)

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
            return _refuse(connect, link, refusal("device-changed-during-connect"))
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
        decision = self._authorize(connect, username, leaf, device, cert_state)
        if isinstance(decision, Refusal):
            return _refuse(connect, link, decision)
        return self._admitted(connect, link, decision, cert_state)

    def _authorize(
        self,
        connect: Connect,
        username: HubUsername,
        leaf: LeafFacts | None,
        device: DeviceRecord | None,
        cert_state: str | None,
    ) -> Identity | Refusal:
        return authorize(
            device,
            host=username.host,
            password=connect.password,
            leaf=leaf,
            certificate_state=cert_state,
            now=self._clock.now(),
        )

    def _admitted(
        self, connect: Connect, link: Link, identity: Identity, cert_state: str | None
    ) -> Session | Awaitable[Session | Refusal]:
        """An authorized CONNECT: two-phase admission for a certificate not yet active."""
        if self._hub.credentials is not None and identity.serial_hex and cert_state != "active":
            return self._admit(connect, link, identity, cert_state)
        return self._accept(connect, link, identity, self._clock.now())

    async def _admit(
        self,
        connect: Connect,
        link: Link,
        identity: Identity,
        cert_state: str | None,
    ) -> Session | Refusal:
        """Two-phase renewal: ask the credentials handler whether this certificate may be used."""
        credentials = self._hub.credentials
        assert credentials is not None and identity.serial_hex is not None
        device_id, serial = identity.device_id, identity.serial_hex
        admission = await credentials.on_authenticated(device_id, serial, cert_state)
        if not admission.admitted:
            return _refuse(connect, link, refusal(admission.reason))
        if admission.reason in ("active", "activated"):
            self._devices.set_certificate_state(device_id, serial, "active")
        return self._accept(connect, link, identity, self._clock.now())

    def _accept(
        self, connect: Connect, link: Link, decision: Identity, now: dt.datetime
    ) -> Session:
        session = HubSession(self._hub, link, decision, connect.will)
        self._hub.session_registry.register(session, now)
        CONNECTS_ACCEPTED.inc()
        if decision.expires_at is not None:
            session.expire_at((decision.expires_at - now).total_seconds())
        return session

    async def _device(self, device_id: str, serial_hex: str | None) -> _Found | None:
        """The device and its certificate's state from the store (then cached); None if a
        change event for it arrived during each of ``_LOOKUP_ATTEMPTS`` lookups.

        A device just created, given a certificate and changed again (as an operator's
        script or a test does) has several events in flight, which may arrive one per
        lookup; a few attempts ride that out, and a device under endless churn is refused.
        """
        loop = asyncio.get_running_loop()
        for _ in range(_LOOKUP_ATTEMPTS):
            started = loop.time()
            device, cert_state = await self._hub.run(self._lookup, device_id, serial_hex)
            if self._changed_at.get(device_id, -1.0) < started:
                if device is not None:
                    self._devices.put(device, serial_hex, cert_state, started)
                return device, cert_state
            # A change event arrived during the lookup: what we read may predate it.
        return None

    def _lookup(self, device_id: str, serial_hex: str | None) -> _Found:
        store = self._hub.store
        device = store.get_device(device_id)
        if device is None or serial_hex is None or device.auth_type != "certificateAuthority":
            return device, None
        certificate = store.get_certificate(serial_hex)
        return device, None if certificate is None else certificate.state


def _refuse(connect: Connect, link: Link, decision: Refusal) -> Refusal:
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
