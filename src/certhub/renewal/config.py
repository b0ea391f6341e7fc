"""Settings of renewal through the hub (all with working defaults)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

from certhub.renewal.window import WindowPolicy, capacity_for

__all__ = ["RenewalConfig"]


@dataclass(frozen=True, kw_only=True)
class RenewalConfig:
    """How the renewal service behaves.

    * ``operation_ttl`` — how long a response waits for its device (``operationExpires``).
    * ``admission_rate`` — renewals per second this node admits (token bucket, burst
      ``admission_burst``, default one second's worth); None: unlimited.
    * ``windows`` — where renewal windows go; its ``capacity`` is derived from the
      admission rate (``rate · bucket_seconds · capacity_utilization``) unless set.
    * ``detection_interval`` — seconds between runs of the overdue/expiry detection
      (also: stuck operations, new certificates from DPS, gauges); ``rebalance_interval``
      — seconds between rebalancing passes over upcoming windows.
    * ``alert_webhook_url`` — where overdue/expired announcements are POSTed (None: off),
      with ``alert_attempts`` tries, exponential backoff from ``alert_backoff`` seconds
      capped at ``alert_backoff_cap``, each try timing out after ``alert_timeout``.
    """

    operation_ttl: dt.timedelta = dt.timedelta(minutes=5)
    admission_rate: float | None = None
    admission_burst: float | None = None
    windows: WindowPolicy = field(default_factory=WindowPolicy)
    capacity_utilization: float = 0.8
    detection_interval: float = 60.0
    rebalance_interval: float = 600.0
    stuck_after: dt.timedelta = dt.timedelta(seconds=30)
    alert_webhook_url: str | None = None
    alert_attempts: int = 5
    alert_backoff: float = 1.0
    alert_backoff_cap: float = 30.0
    alert_timeout: float = 10.0
    alert_batch: int = 200
    max_batch: int = 64
    origin: str = "certhub-renewal"
    """``origin`` of the ``twin.desired`` events this service writes."""

    def window_policy(self) -> WindowPolicy:
        """``windows`` with its capacity derived from the admission rate when unset."""
        if self.windows.capacity is not None or self.admission_rate is None:
            return self.windows
        capacity = capacity_for(
            self.admission_rate, self.windows.bucket_seconds, self.capacity_utilization
        )
        return dataclasses.replace(self.windows, capacity=capacity)
