"""Device-to-cloud messages, handed from device sessions to the service side in process.

The buffer is bounded and **drops the oldest message** when full (counted in
``certhub_hub_telemetry_dropped_total``) instead of pushing back on devices: a device's
QoS 1 PUBACK means "the hub accepted it", as in IoT Hub, and one slow consumer must not
stall every device's publishing. The service side (a later issue: routing, event-hub
compatible reads) consumes with :meth:`TelemetryBuffer.get`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from collections.abc import Mapping
from typing import NamedTuple

from certhub.hub.metrics import count_telemetry_of

__all__ = ["TelemetryBuffer", "TelemetryMessage"]


class TelemetryMessage(NamedTuple):
    """One device-to-cloud message and its property bag (system keys like ``$.mid``).

    A named tuple rather than a frozen dataclass: it is built once per message.
    """

    device_id: str
    payload: bytes
    properties: Mapping[str, str | None]
    received_at: dt.datetime


class TelemetryBuffer:
    """A bounded drop-oldest queue of :class:`TelemetryMessage` for one event loop."""

    def __init__(self, maxlen: int = 10_000) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.maxlen = maxlen
        self.dropped = 0
        self.accepted = 0
        self._items: deque[TelemetryMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        count_telemetry_of(self)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, message: TelemetryMessage) -> None:
        """Append ``message``, dropping the oldest one when full; never blocks."""
        items = self._items
        if len(items) >= self.maxlen:
            items.popleft()
            self.dropped += 1
        items.append(message)
        self.accepted += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> TelemetryMessage | None:
        """The oldest message, or None when empty."""
        return self._items.popleft() if self._items else None

    async def get(self) -> TelemetryMessage:
        """Wait for and return the oldest message."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()
