"""Admission control: a token bucket over renewals, and where a throttled device retries.

Why shaped so: windows (:mod:`certhub.renewal.window`) spread a fleet that follows
them; the bucket protects the authority from everything else (devices without the
feature, a fleet coming back from an outage). A request that finds no token gets
``429002`` and a ``retryAfter``; each refusal reserves the next free slot
(``1/rate`` apart), so a crowd of refused devices comes back spread out, not all at once.
When the device's window is still ahead, the retry lands inside it instead.

Requests before ``renewAfter`` are admitted while tokens last: devices that do not
read their twin must keep working.
"""

from __future__ import annotations

import datetime as dt
import math
import threading

from certhub.renewal.window import Window, stable_fraction

__all__ = ["TokenBucket", "retry_after_seconds"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored. Thread-safe.

    Time is passed in (seconds on any monotonic scale), so tests drive it directly.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._tokens = self.burst
        self._last: float | None = None
        self._next_slot = -math.inf
        self._lock = threading.Lock()

    def take(self, now: float) -> float:
        """Take a token: 0.0 when admitted, else the seconds until this caller's slot."""
        with self._lock:
            if self._last is not None:
                elapsed = max(0.0, now - self._last)
                self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            slot = max(self._next_slot, now + (1.0 - self._tokens) / self.rate)
            self._next_slot = slot + 1.0 / self.rate
            return slot - now


def retry_after_seconds(
    now: dt.datetime, wait: float, window: Window | None, device_id: str
) -> int:
    """Whole seconds until a throttled device should retry (at least 1).

    ``wait`` is the bucket's answer. A device whose window is still ahead retries at
    its hash point inside the window; otherwise after ``wait``.
    """
    earliest = now + dt.timedelta(seconds=wait)
    target = earliest
    if window is not None and earliest < window.renew_after:
        span = window.renew_before - window.renew_after
        target = window.renew_after + span * stable_fraction("retry:" + device_id)
    return max(1, math.ceil((target - now).total_seconds()))
