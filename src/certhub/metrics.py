"""certhub's Prometheus metrics: the shared registry, the event counters, ``GET /metrics``.

Every counter lives in prometheus-client's default :data:`REGISTRY` (process-wide), so
the metrics the parts define themselves are exported too:

=========================================== ==================================================
``certhub_hub_connects_accepted_total``     device CONNECTs the hub accepted (here)
``certhub_hub_refusals_total{reason}``      CONNECTs refused, by reason (:mod:`certhub.hub`)
``certhub_listener_unrouted_total``         CONNECTs no frontend recognised (listener)
``certhub_hub_connections``                 live device sessions (hub)
``certhub_certificates_issued_total{via}``  certificates signed, by path (dps, hub, cli, api)
``certhub_renewal_requests_total{outcome}`` hub credential requests, by outcome (renewal)
``certhub_renewal_latency_seconds``         credential request to response (renewal)
``certhub_dps_registrations_total{status}`` DPS registrations written, by status (here)
``certhub_devices{lifecycle}``              devices per lifecycle, read at scrape time
``certhub_ca_expiry_seconds{ca,kind}``      seconds until each CA's notAfter
``certhub_node_info{node}``                 this node's name (always 1)
=========================================== ==================================================

The store-derived gauges are per server, not process-wide (tests run several servers
in one process): :class:`FleetCollector` asks a callable for the figures when scraped,
and :func:`metrics_router` serves the default registry followed by the server's own.
This module imports nothing from certhub, so any part can import its counters.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = [
    "CERTIFICATES_ISSUED",
    "CONNECTS_ACCEPTED",
    "DPS_REGISTRATIONS",
    "LEAVES_SIGNED",
    "METRICS_PATH",
    "REGISTRY",
    "CaExpiry",
    "FleetCollector",
    "FleetFigures",
    "metrics_router",
    "node_name",
    "render",
]

METRICS_PATH = "/metrics"

CONNECTS_ACCEPTED = Counter(
    "certhub_hub_connects_accepted", "Device CONNECTs the hub accepted (a session opened)"
)
LEAVES_SIGNED = Counter(
    "certhub_leaves_signed",
    "CSRs validated and signed (recorded or not), by where: signing-process or server",
    ["where"],
)
CERTIFICATES_ISSUED = Counter(
    "certhub_certificates_issued",
    "Device certificates signed and recorded, by path (dps, hub, cli, api)",
    ["via"],
)
DPS_REGISTRATIONS = Counter(
    "certhub_dps_registrations",
    "DPS registrations written, by final status (assigned, disabled)",
    ["status"],
)


def node_name(configured: str | None = None) -> str:
    """The node label: the configured name, else the host name."""
    return configured or socket.gethostname()


@dataclass(frozen=True, kw_only=True)
class CaExpiry:
    """One CA and how long it has left."""

    name: str
    kind: str
    seconds_left: float


@dataclass(frozen=True, kw_only=True)
class FleetFigures:
    """What the store says at scrape time."""

    devices_by_lifecycle: Mapping[str, int]
    ca_expiry: list[CaExpiry] = field(default_factory=list)


class FleetCollector:
    """Collects ``certhub_devices``, ``certhub_ca_expiry_seconds`` and the node info.

    ``figures`` is a blocking call (it reads the store), made once per scrape.
    """

    def __init__(self, figures: Callable[[], FleetFigures], node: str) -> None:
        self._figures = figures
        self.node = node

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("certhub_node_info", "This node's name", labels=["node"])
        info.add_metric([self.node], 1.0)
        yield info
        figures = self._figures()
        devices = GaugeMetricFamily(
            "certhub_devices", "Devices per lifecycle state (store-wide)", labels=["lifecycle"]
        )
        for lifecycle, count in sorted(figures.devices_by_lifecycle.items()):
            devices.add_metric([lifecycle], float(count))
        yield devices
        expiry = GaugeMetricFamily(
            "certhub_ca_expiry_seconds",
            "Seconds until the CA certificate's notAfter (negative: expired)",
            labels=["ca", "kind"],
        )
        for ca in figures.ca_expiry:
            expiry.add_metric([ca.name, ca.kind], ca.seconds_left)
        yield expiry


def render(own: CollectorRegistry | None = None) -> bytes:
    """The text exposition of the default registry, then ``own`` (blocking)."""
    body = generate_latest(REGISTRY)
    if own is not None:
        body += generate_latest(own)
    return body


def metrics_router(collector: FleetCollector, run: Callable[..., Awaitable[bytes]]) -> APIRouter:
    """``GET /metrics`` (no authentication: counts only, no device ids).

    ``run`` runs a blocking call off the event loop (the server's store executor).
    """
    own = CollectorRegistry(auto_describe=False)
    own.register(collector)
    router = APIRouter()

    @router.get(METRICS_PATH, include_in_schema=False)
    async def metrics() -> Response:
        body = await run(render, own)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
