"""The contract between the listener and the protocol frontends (hub, DPS).

Shaped so that a frontend never touches sockets or TLS: it sees the decoded CONNECT,
what TLS learned about the peer, and a :class:`Link` to publish on or close.

Handlers may be plain or ``async`` methods: the listener calls each one and, when the
result is awaitable, awaits it before it handles the next packet of that connection
(packets of one connection are always handled in order). A plain method costs no task,
which matters for telemetry; an ``async def`` is simpler wherever a store call is
needed. The listener holds every packet a client pipelines behind its CONNECT until
``open_session`` has answered, and drops them on a refusal (MQTT-3.1.4-5).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

from certhub.mqtt import Connect, ConnectReturnCode, Publish

__all__ = ["CLIENT_DISCONNECT", "Frontend", "Link", "PeerInfo", "Refusal", "Session"]

CLIENT_DISCONNECT = "client-disconnect"
"""The ``on_close`` reason of a clean close (the client sent DISCONNECT): no will."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerInfo:
    """What the transport knows about the client."""

    address: str
    port: int
    client_cert_der: bytes | None
    """DER of the client's leaf certificate when it presented one, else None.

    TLS verified its chain against the listener's trust store (every policy issuing CA,
    the namespace root, onboarding CAs) but **not its validity period**: the listener
    sets ``X509_V_FLAG_NO_CHECK_TIME`` so that an expired certificate reaches the
    frontend and is refused with a CONNACK and a logged reason instead of a TLS alert.
    Every frontend must check ``notBefore``/``notAfter`` against its own clock, and
    decide which CA it accepts (the trust store is the union for hub and DPS)."""
    tls_version: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Refusal:
    """A refused CONNECT: the CONNACK code to answer and the reason to log and count."""

    code: ConnectReturnCode
    reason: str
    """Machine-readable, e.g. ``"certificate-expired"``, ``"device-disabled"``."""


class Link(Protocol):
    """The frontend's handle on one live connection."""

    @property
    def peer(self) -> PeerInfo:
        """What TLS learned about the client."""
        ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 0) -> None:
        """Send a PUBLISH to the client (QoS 1 gets a packet id; its PUBACK is consumed).

        Does nothing once the link is closed.
        """
        ...

    def close(self, reason: str) -> None:
        """Close the connection (after flushing what was already queued)."""
        ...

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        ...


class Session(Protocol):
    """One accepted client connection, as a frontend sees it."""

    def on_subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int] | Awaitable[list[int]]:
        """Return the SUBACK codes (granted QoS 0/1, or 0x80 for failure) in order.

        Raise :class:`certhub.mqtt.RemoteProtocolError` to close the connection instead.
        """
        ...

    def on_unsubscribe(self, filters: Sequence[str]) -> Awaitable[None] | None:
        """The client removed these filters (the listener answers UNSUBACK)."""
        ...

    def on_publish(self, packet: Publish) -> Awaitable[None] | None:
        """Handle a client PUBLISH. The listener sends the PUBACK for QoS 1 after this
        returns (or after its awaitable completes). Raise
        :class:`certhub.mqtt.RemoteProtocolError` to close the connection."""
        ...

    def on_close(self, reason: str) -> Awaitable[None] | None:
        """The connection ended: :data:`CLIENT_DISCONNECT`, or e.g. ``"keepalive-timeout"``,
        ``"connection-lost"``, ``"server-shutdown"``, or the reason given to
        :meth:`Link.close`. Called exactly once per accepted session."""
        ...


class Frontend(Protocol):
    """A protocol served on the listener (IoT Hub devices, DPS registrations)."""

    name: str

    def accepts(self, connect: Connect) -> bool:
        """True when this CONNECT is for this frontend (decided from the username)."""
        ...

    def open_session(
        self, connect: Connect, link: Link
    ) -> Session | Refusal | Awaitable[Session | Refusal]:
        """Authenticate the CONNECT; a Session accepts it, a Refusal refuses it.

        An ``async def`` is fine; a plain method that can answer at once (e.g. from a
        cache) saves the listener a task per CONNECT.
        """
        ...
