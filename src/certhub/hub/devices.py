"""What the hub remembers about devices between connections: their auth-relevant records.

Why: a reconnecting device would otherwise cost two store queries and a thread hop per
CONNECT, more than the rest of the hub's work on it together. An entry holds the device
record and the stored state of the certificate serial it last presented; it is dropped
when the change feed reports a change to the device or a revocation of its certificate
(``device.*``, ``certificate.revoked`` events, ~200 ms after the commit), and it expires
after ``ttl`` seconds anyway, which bounds staleness if events are lost. Only devices
that exist are remembered (their creation emits no event).

The window this leaves: a CONNECT served from the cache between a change's commit and its
event being read is admitted, and the same event then closes the session.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from certhub.registry.records import DeviceRecord

__all__ = ["DeviceCache"]


@dataclass(frozen=True, slots=True)
class _Entry:
    device: DeviceRecord
    serial_hex: str | None
    certificate_state: str | None
    expires: float


class DeviceCache:
    """Device records (and one certificate state each) by device id, with a TTL."""

    def __init__(self, ttl: float = 30.0, size: int = 200_000) -> None:
        self.ttl = ttl
        self._size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, device_id: str, serial_hex: str | None, now: float
    ) -> tuple[DeviceRecord, str | None] | None:
        """The cached (device, certificate state) for this serial, or None."""
        entry = self._entries.get(device_id)
        if entry is None or entry.expires <= now or entry.serial_hex != serial_hex:
            return None
        return entry.device, entry.certificate_state

    def put(
        self,
        device: DeviceRecord,
        serial_hex: str | None,
        certificate_state: str | None,
        now: float,
    ) -> None:
        """Remember a lookup made at ``now``."""
        entries = self._entries
        entries[device.device_id] = _Entry(device, serial_hex, certificate_state, now + self.ttl)
        entries.move_to_end(device.device_id)
        if len(entries) > self._size:
            entries.popitem(last=False)

    def set_certificate_state(self, device_id: str, serial_hex: str, state: str) -> None:
        """Record a state the hub itself gave the device's current certificate."""
        entry = self._entries.get(device_id)
        if entry is not None and entry.serial_hex == serial_hex:
            self._entries[device_id] = _Entry(entry.device, serial_hex, state, entry.expires)

    def forget(self, device_id: str) -> None:
        """Drop what is known about the device."""
        self._entries.pop(device_id, None)

    def clear(self) -> None:
        """Drop everything."""
        self._entries.clear()
