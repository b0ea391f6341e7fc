"""The hub's Prometheus metrics (process-wide, in the default registry).

Telemetry counts are read from the live :class:`~certhub.hub.telemetry.TelemetryBuffer`
objects when Prometheus scrapes (a custom collector), so the per-message path costs two
integer additions rather than two locked counter increments. The live-session gauge is
read the same way from the hub frontends' ``live_sessions`` counts (an integer addition
per connect and per close instead of a locked gauge update).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = [
    "REFUSALS",
    "SESSIONS_CLOSED",
    "count_sessions_of",
    "count_telemetry_of",
]

REFUSALS = Counter(
    "certhub_hub_refusals",
    "Device CONNECTs the hub refused, by reason",
    ["reason"],
)
SESSIONS_CLOSED = Counter(
    "certhub_hub_sessions_closed",
    "Device sessions ended, by reason",
    ["reason"],
)


class _Counted(Protocol):
    accepted: int
    dropped: int


class _Live(Protocol):
    live_sessions: int


class _SessionsCollector:
    """``certhub_hub_connections``: the live sessions of every hub frontend, at scrape time."""

    def __init__(self) -> None:
        self.frontends: weakref.WeakSet[_Live] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "certhub_hub_connections",
            "Live device sessions on the hub",
            value=sum(f.live_sessions for f in list(self.frontends)),
        )


class _TelemetryCollector:
    """``certhub_hub_telemetry_messages_total`` and ``…_dropped_total`` at scrape time."""

    def __init__(self) -> None:
        self.buffers: weakref.WeakSet[_Counted] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        buffers = list(self.buffers)
        yield CounterMetricFamily(
            "certhub_hub_telemetry_messages",
            "Device-to-cloud messages accepted",
            value=sum(b.accepted for b in buffers),
        )
        yield CounterMetricFamily(
            "certhub_hub_telemetry_dropped",
            "Device-to-cloud messages dropped from a full in-process queue (oldest first)",
            value=sum(b.dropped for b in buffers),
        )


_TELEMETRY = _TelemetryCollector()
REGISTRY.register(_TELEMETRY)
_SESSIONS = _SessionsCollector()
REGISTRY.register(_SESSIONS)


def count_sessions_of(frontend: _Live) -> None:
    """Include ``frontend``'s live sessions in ``certhub_hub_connections`` (while it lives)."""
    _SESSIONS.frontends.add(frontend)


def count_telemetry_of(buffer: _Counted) -> None:
    """Include ``buffer``'s counts in the telemetry metrics (while it lives)."""
    _TELEMETRY.buffers.add(buffer)
