"""A token bucket for the registration rate (per process).

``rate`` registrations per second on average, bursts up to ``burst``. Polls and
status lookups are not counted: only register requests, which may issue a
certificate. Several processes each keep their own bucket.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """Thread-safe token bucket; :meth:`take` returns 0 or the seconds to wait."""

    def __init__(
        self, rate: float, burst: int, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._monotonic = monotonic
        self._tokens = float(burst)
        self._stamp = monotonic()
        self._lock = threading.Lock()

    def take(self) -> int:
        """Take one token: 0 when granted, else whole seconds until one is available (>= 1)."""
        with self._lock:
            now = self._monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0
            return max(1, math.ceil((1 - self._tokens) / self.rate))
