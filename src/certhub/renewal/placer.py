"""The fleet histogram behind window placement, shared by the writer and the jobs.

The arithmetic is pure (:mod:`certhub.renewal.window`); this object only keeps the
histogram of window starts in memory (loaded from ``renewal_status`` at start and by
every rebalancing pass) and serialises updates to it.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterable

from certhub.renewal.window import (
    Validity,
    Window,
    WindowPolicy,
    bucket_of,
    fleet_histogram,
    place_window,
)

__all__ = ["WindowPlacer"]


class WindowPlacer:
    """Places windows against the fleet histogram and counts them in."""

    def __init__(self, policy: WindowPolicy) -> None:
        self.policy = policy
        self._histogram: Counter[int] = Counter()
        self._lock = threading.Lock()

    def load(self, starts: Iterable[dt.datetime]) -> None:
        """Replace the histogram with these window starts."""
        histogram = fleet_histogram(starts, self.policy.bucket_seconds)
        with self._lock:
            self._histogram = histogram

    def histogram(self) -> Counter[int]:
        """A copy of the histogram."""
        with self._lock:
            return Counter(self._histogram)

    def place(
        self,
        validity: Validity,
        device_id: str,
        now: dt.datetime,
        previous: Window | None = None,
    ) -> Window:
        """The window for a device's certificate; ``previous`` (its old window) is let go."""
        with self._lock:
            if previous is not None:
                self._forget(previous)
            window = place_window(validity, device_id, now, self._histogram, self.policy)
            self._histogram[bucket_of(window.renew_after, self.policy.bucket_seconds)] += 1
            return window

    def move(self, old: Window, new: Window) -> None:
        """Account for a window moved by rebalancing."""
        with self._lock:
            self._forget(old)
            self._histogram[bucket_of(new.renew_after, self.policy.bucket_seconds)] += 1

    def _forget(self, window: Window) -> None:
        bucket = bucket_of(window.renew_after, self.policy.bucket_seconds)
        if self._histogram.get(bucket, 0) > 0:
            self._histogram[bucket] -= 1
