"""Fleet statistics, fed by the agents' structured log events.

:class:`FleetStats` is a :class:`logging.Handler` on the ``certhub.agent`` logger: every
agent event (``event``/``device`` attributes, see :mod:`certhub.agent.logs`) updates a
per-device record and fleet-wide counters. :meth:`FleetStats.snapshot` returns the
figures the live display, the summary and the JSON report show.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["DeviceStats", "FleetStats", "percentile"]

_AGENT_LOGGER = "certhub.agent"
#: events counted as failures (keyed ``event`` or ``event:reason``)
_FAILURES = frozenset(
    {
        "retry",
        "renewal-retry",
        "hub-refused",
        "device-disabled",
        "renewal-fallback",
        "renewal-abandoned",
        "report-failed",
        "twin-unavailable",
        "reonboard-required",
    }
)


@dataclass
class DeviceStats:
    """What one simulated device has done so far."""

    provisioned: bool = False
    connected: bool = False
    renewals: int = 0
    recoveries: int = 0
    dps_renewals: int = 0
    expiries: int = 0
    disabled_events: int = 0
    started_at: float | None = None
    renewal_started: float | None = None
    recovering: bool = False
    last_connected_at: float | None = None


class FleetStats(logging.Handler):
    """Counts agent events per device; see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logging.INFO)
        self.clock = clock
        self.devices: dict[str, DeviceStats] = {}
        self.failures: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.started = 0
        self.provisioned = 0
        """Devices that have provisioned (kept up to date for the fleet's pacing)."""

    def device(self, device_id: str) -> DeviceStats:
        """The record of ``device_id`` (created on first use)."""
        record = self.devices.get(device_id)
        if record is None:
            record = self.devices[device_id] = DeviceStats()
        return record

    def emit(self, record: logging.LogRecord) -> None:
        device_id = getattr(record, "device", None)
        event = getattr(record, "event", None)
        if isinstance(device_id, str) and isinstance(event, str):
            fields = getattr(record, "fields", None)
            self.observe(device_id, event, fields if isinstance(fields, dict) else {})

    def observe(self, device_id: str, event: str, fields: dict[str, Any]) -> None:
        """Apply one agent event."""
        dev = self.device(device_id)
        now = self.clock()
        if event == "renewal-request" or (
            event == "dps-register" and fields.get("reason") == "renewal"
        ):
            if dev.renewal_started is None:
                dev.renewal_started = now
            if event == "dps-register":
                dev.dps_renewals += 1
        elif event == "dps-register" and dev.provisioned:
            dev.recovering = True
        elif event == "certificate-activated":
            self._activated(dev, now)
        elif event == "hub-connected":
            dev.connected = True
            dev.last_connected_at = now
        elif event in ("hub-disconnected", "hub-refused", "stopped"):
            dev.connected = False
        elif event == "certificate-expired":
            dev.expiries += 1
        if event == "device-disabled":
            dev.disabled_events += 1
            dev.connected = False
        if event in _FAILURES:
            reason = fields.get("reason")
            self.failures[f"{event}:{reason}" if isinstance(reason, str) else event] += 1

    def _activated(self, dev: DeviceStats, now: float) -> None:
        if not dev.provisioned:
            dev.provisioned = True
            self.provisioned += 1
        elif dev.recovering:
            dev.recoveries += 1
        else:
            dev.renewals += 1
            if dev.renewal_started is not None:
                self.latencies.append(now - dev.renewal_started)
        dev.recovering = False
        dev.renewal_started = None

    @contextmanager
    def installed(self) -> Iterator[FleetStats]:
        """Attach to the agents' logger (and keep their records off the console)."""
        logger = logging.getLogger(_AGENT_LOGGER)
        old = (logger.level, logger.propagate)
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(old[0])
            logger.propagate = old[1]

    def snapshot(self, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Fleet figures; ``exclude`` leaves devices out of the per-device renewal figures
        and the expiries (e.g. the ones a demo disabled on purpose: kept out, their
        certificates expire)."""
        devs = list(self.devices.values())
        kept = [d for k, d in self.devices.items() if k not in exclude]
        counted = [d.renewals for d in kept]
        now = self.clock()
        return {
            "devices": self.started,
            "provisioned": sum(d.provisioned for d in devs),
            "connected": sum(d.connected for d in devs),
            "renewals": sum(d.renewals for d in devs),
            "renewals_via_dps": sum(d.dps_renewals for d in devs),
            "renewals_in_flight": sum(d.renewal_started is not None for d in devs),
            "recoveries": sum(d.recoveries for d in devs),
            "renewals_per_device": {
                "min": min(counted, default=0),
                "avg": round(sum(counted) / len(counted), 2) if counted else 0.0,
                "max": max(counted, default=0),
            },
            "expiries": sum(d.expiries for d in kept),
            "expired_devices": sum(d.expiries > 0 for d in kept),
            "failures": dict(sorted(self.failures.items())),
            "renewal_latency_seconds": {
                "count": len(self.latencies),
                "p50": percentile(self.latencies, 50),
                "p99": percentile(self.latencies, 99),
                "max": round(max(self.latencies), 3) if self.latencies else None,
            },
            "oldest_in_flight_seconds": round(
                max((now - d.renewal_started for d in devs if d.renewal_started), default=0.0),
                1,
            ),
        }


def percentile(values: list[float], pct: float) -> float | None:
    """The ``pct`` percentile (nearest rank) of ``values``, rounded to ms; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return round(ordered[rank], 3)
