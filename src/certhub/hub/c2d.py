"""Cloud-to-device messages: delivered at once when the device listens, else kept for it.

Why here and bounded: a message waits for the device's next session on this node (a
deque of ``queue_size`` per device, oldest dropped first, each with a TTL in loop time).
While clustered, a message delivered here is announced (``c2d.delivered``) so other nodes
drop their queued copy (:mod:`.relay`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from typing import TYPE_CHECKING

from certhub.hub.session import HubSession

if TYPE_CHECKING:
    from certhub.hub.frontend import HubFrontend

__all__ = ["C2dQueues"]

_Queued = tuple[float, str, bytes, dt.datetime]  # expires at (loop time), topic, body, queued at


class C2dQueues:
    """Per-device queues of cloud-to-device messages waiting for a session."""

    def __init__(self, hub: HubFrontend, *, queue_size: int = 50, ttl: float = 3600.0) -> None:
        self._hub = hub
        self._queue_size = queue_size
        self._ttl = ttl
        self._queues: dict[str, deque[_Queued]] = {}

    def queue(self, device_id: str, topic: str, body: bytes) -> bool:
        """Deliver now if the device listens, else keep it (bounded, with a TTL)."""
        session = self._hub.sessions.get(device_id)
        if session is not None and session.send_c2d(topic, body):
            return True
        self.keep(device_id, topic, body)
        return False

    def keep(self, device_id: str, topic: str, body: bytes) -> None:
        """Queue a message for the device's next session here (bounded, with a TTL)."""
        queue = self._queues.get(device_id)
        if queue is None:
            queue = self._queues[device_id] = deque(maxlen=self._queue_size)
        expires = asyncio.get_running_loop().time() + self._ttl
        queue.append((expires, topic, body, self._hub.clock.now()))

    def forget(self, device_id: str, topic: str) -> None:
        """Drop the queued message with ``topic`` (delivered by another node)."""
        queue = self._queues.get(device_id)
        if queue is not None:
            kept = deque((item for item in queue if item[1] != topic), maxlen=queue.maxlen)
            self._queues[device_id] = kept

    def drop(self, device_id: str, before: dt.datetime) -> None:
        """Forget the messages queued here for ``device_id`` before ``before``."""
        queue = self._queues.get(device_id)
        if queue is not None:
            kept = deque((item for item in queue if item[3] >= before), maxlen=queue.maxlen)
            self._queues[device_id] = kept

    def deliver_queued(self, session: HubSession) -> None:
        """Send the messages queued for the device of a session that just subscribed."""
        queue = self._queues.pop(session.device_id, None)
        now = asyncio.get_running_loop().time()
        while queue:
            item = queue.popleft()
            expires, topic, body, _ = item
            if expires <= now:
                continue
            if not session.send_c2d(topic, body):
                queue.appendleft(item)
                self._queues[session.device_id] = queue
                return
            if self._hub.clustered:
                self._hub.relay.c2d_delivered(session.device_id, topic)
