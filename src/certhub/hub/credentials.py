"""The hub's hook for the IoT Hub credentials API (wire doc §2.2) and two-phase renewal.

The hub does not issue certificates itself: a :class:`CredentialsHandler` (in certhub,
``certhub.renewal.RenewalService``, wired in ``certhub.app``) answers
``$iothub/credentials/POST/{operation}/?$rid=…`` requests, re-sends kept responses when
the device subscribes to ``$iothub/credentials/res/#``, and decides at connect whether a
certificate the store knows may be used (an ``issued`` one becomes ``active``, an older
one ``superseded``). Without a handler the hub answers every request 403 (403010).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["AdmissionLike", "CredentialsHandler", "Publisher"]

Publisher = Callable[[str, str, bytes], bool]
"""``(device_id, topic, payload) -> sent``: publish on the device's live session if it is
subscribed to credentials responses; False tells the handler to keep the response."""


class AdmissionLike(Protocol):
    """Whether a certificate may connect now, and a machine-readable reason."""

    @property
    def admitted(self) -> bool: ...

    @property
    def reason(self) -> str: ...


class CredentialsHandler(Protocol):
    """What the hub calls for the credentials API and at connect."""

    def attach(self, publisher: Publisher) -> None:
        """Where responses go."""
        ...

    async def handle_request(
        self, device_id: str, rid: str, payload: bytes, operation: str = "issueCertificate"
    ) -> None:
        """Answer one request of the authenticated device (202 then 200, or an error)."""
        ...

    async def on_subscribed(self, device_id: str) -> int:
        """Deliver the responses kept for the device."""
        ...

    async def on_authenticated(
        self, device_id: str, serial_hex: str, state: str | None = None
    ) -> AdmissionLike:
        """Whether the device may connect with this certificate (``state`` if known)."""
        ...
