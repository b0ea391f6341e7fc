"""The renewal service's Prometheus metrics (process-wide, in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["ALERTS", "DEVICES", "LATENCY", "REQUESTS", "TRANSITIONS"]

REQUESTS = Counter(
    "certhub_renewal_requests",
    "Credential requests over the hub, by outcome (accepted, replayed, or the error code)",
    ["outcome"],
)
LATENCY = Histogram(
    "certhub_renewal_latency_seconds",
    "From a credential request to its final response",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DEVICES = Gauge(
    "certhub_renewal_devices",
    "Devices per renewal state (scheduled, due, overdue, expired)",
    ["state"],
)
TRANSITIONS = Counter(
    "certhub_renewal_certificate_transitions",
    "Two-phase certificate changes at connect (activated, superseded, refused, grace)",
    ["kind"],
)
ALERTS = Counter(
    "certhub_renewal_alerts",
    "Overdue/expired announcements to the webhook, by result (sent, failed)",
    ["result"],
)
