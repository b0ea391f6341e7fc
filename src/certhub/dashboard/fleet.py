"""The fleet as the dashboard and ``/metrics`` see it: one cached snapshot of the store.

:func:`take_snapshot` reads, in a few queries, every device's lifecycle (the admin API's
rules: :meth:`~certhub.registry.Store.list_device_lifecycles`, so the counts equal
``GET /certhub/v1/devices?lifecycle=…``), the renewal windows, the certificates issued
recently and the CAs. :class:`SnapshotCache` keeps it for ``max_age`` seconds so that
a dashboard polling every few seconds and a Prometheus scrape share the work.

The timeline's scale follows the fleet: its horizon is the longest validity among the
devices' current certificates (else the longest active policy's; at least a minute, at
most 90 days) in 24 buckets, so a development fleet on 2-minute certificates is drawn
in seconds and minutes and a production one in days; the recent renewal rate covers
the same span backwards.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from certhub.metrics import CaExpiry, FleetFigures
from certhub.registry import Store
from certhub.registry._renewal import renewal_status
from certhub.registry._service import DEVICE_LIFECYCLES, DeviceLifecycle, LifecycleRule
from certhub.registry.schema import certificates

__all__ = [
    "BUCKETS",
    "FleetSnapshot",
    "SnapshotCache",
    "at_risk",
    "take_snapshot",
    "timeline",
]

BUCKETS = 24
_PAGE = 5000
_MIN_HORIZON = 60.0
_MAX_HORIZON = 90 * 86400.0
#: Lifecycles that need an operator's eye, most urgent first (the at-risk table's order).
_RISK_ORDER = ("expired", "overdue", "renewal-due", "healthy", "no-certificate")


@dataclass(frozen=True, kw_only=True)
class CaInfo:
    """A CA as the dashboard shows it."""

    name: str
    kind: str
    state: str
    not_after: dt.datetime


@dataclass(frozen=True, kw_only=True)
class FleetSnapshot:
    """The fleet at ``taken_at``: see the module docstring."""

    taken_at: dt.datetime
    development: bool
    devices: list[DeviceLifecycle]
    windows: dict[str, tuple[dt.datetime, dt.datetime]]
    issued_at: list[dt.datetime]
    cas: list[CaInfo]
    horizon_seconds: float
    counts: dict[str, int] = field(default_factory=dict)

    def figures(self) -> FleetFigures:
        """The store-derived metrics (:class:`certhub.metrics.FleetCollector`)."""
        expiry = [
            CaExpiry(
                name=ca.name,
                kind=ca.kind,
                seconds_left=(ca.not_after - self.taken_at).total_seconds(),
            )
            for ca in self.cas
            if ca.state != "retired"
        ]
        return FleetFigures(devices_by_lifecycle=dict(self.counts), ca_expiry=expiry)


def _all_lifecycles(store: Store, now: dt.datetime, rule: LifecycleRule) -> list[DeviceLifecycle]:
    out: list[DeviceLifecycle] = []
    after: str | None = None
    while True:
        page = store.list_device_lifecycles(now=now, rule=rule, limit=_PAGE, after_device_id=after)
        out.extend(page)
        if len(page) < _PAGE:
            return out
        after = page[-1].device_id


def _windows(store: Store) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    r = renewal_status
    stmt = sa.select(r.c.device_id, r.c.renew_after, r.c.renew_before)
    return {row[0]: (row[1], row[2]) for row in store.run_select(stmt)}


def _issued_since(store: Store, since: dt.datetime) -> list[dt.datetime]:
    c = certificates
    # notAfter >= since narrows through its index: anything created since then ends later.
    stmt = sa.select(c.c.created_at).where(c.c.not_after >= since, c.c.created_at >= since)
    return [row[0] for row in store.run_select(stmt)]


def _cas(store: Store, namespace: str) -> list[CaInfo]:
    ns = store.get_namespace(namespace)
    if ns is None:
        return []
    return [
        CaInfo(name=ca.name, kind=ca.kind, state=ca.state, not_after=ca.not_after)
        for ca in store.list_cas(ns.id)
    ]


def _horizon(store: Store, namespace: str, devices: Sequence[DeviceLifecycle]) -> float:
    """The longest validity among the devices' current certificates (else the policies')."""
    spans = [
        (d.not_after - d.not_before).total_seconds()
        for d in devices
        if d.not_after is not None and d.not_before is not None and d.lifecycle != "revoked"
    ]
    longest = max(spans, default=0.0)
    if not longest:
        ns = store.get_namespace(namespace)
        policies = [] if ns is None else store.list_policies(ns.id)
        longest = max((p.validity_seconds for p in policies if p.state == "active"), default=0)
    return float(min(max(longest, _MIN_HORIZON), _MAX_HORIZON))


def take_snapshot(
    store: Store, now: dt.datetime, *, namespace: str = "default", rule: LifecycleRule
) -> FleetSnapshot:
    """Read the fleet from the store (blocking; a few queries)."""
    devices = _all_lifecycles(store, now, rule)
    counts = dict.fromkeys(DEVICE_LIFECYCLES, 0)
    for device in devices:
        counts[device.lifecycle] = counts.get(device.lifecycle, 0) + 1
    horizon = _horizon(store, namespace, devices)
    return FleetSnapshot(
        taken_at=now,
        development=store.get_setting("development") == "1",
        devices=devices,
        windows=_windows(store),
        issued_at=_issued_since(store, now - dt.timedelta(seconds=horizon)),
        cas=_cas(store, namespace),
        horizon_seconds=horizon,
        counts=counts,
    )


def _bucket(offset: float, width: float) -> int | None:
    index = int(offset // width)
    return index if 0 <= index < BUCKETS else None


def timeline(snapshot: FleetSnapshot) -> dict[str, Any]:
    """Upcoming expiries and renewal-window openings per bucket, and recent issuance."""
    width = snapshot.horizon_seconds / BUCKETS
    now = snapshot.taken_at
    expiries, windows, issued = [0] * BUCKETS, [0] * BUCKETS, [0] * BUCKETS
    for device in snapshot.devices:
        if device.lifecycle in ("revoked", "disabled", "no-certificate", "expired"):
            continue
        if device.not_after is not None:
            i = _bucket((device.not_after - now).total_seconds(), width)
            if i is not None:
                expiries[i] += 1
        window = snapshot.windows.get(device.device_id)
        if window is not None and window[0] > now:
            i = _bucket((window[0] - now).total_seconds(), width)
            if i is not None:
                windows[i] += 1
    for at in snapshot.issued_at:
        i = _bucket((now - at).total_seconds(), width)
        if i is not None:
            issued[BUCKETS - 1 - i] += 1
    return {
        "bucketSeconds": width,
        "horizonSeconds": snapshot.horizon_seconds,
        "expiries": expiries,
        "renewalWindows": windows,
        "issued": issued,
    }


def _risk_key(device: DeviceLifecycle) -> tuple[int, float, str]:
    rank = _RISK_ORDER.index(device.lifecycle) if device.lifecycle in _RISK_ORDER else 9
    expiry = device.not_after.timestamp() if device.not_after is not None else float("inf")
    # Soonest expiry first; expired and overdue ones lead regardless.
    return (0 if rank <= 1 else 1, expiry, device.device_id)


def at_risk(
    devices: Sequence[DeviceLifecycle], *, search: str = "", limit: int = 50
) -> list[DeviceLifecycle]:
    """Devices sorted by soonest expiry (expired and overdue first); ``search`` filters
    by a case-insensitive substring of the device id (then every lifecycle is listed)."""
    needle = search.strip().lower()
    if needle:
        chosen = [d for d in devices if needle in d.device_id.lower()]
    else:
        chosen = [d for d in devices if d.lifecycle not in ("revoked", "disabled")]
    return sorted(chosen, key=_risk_key)[:limit]


class SnapshotCache:
    """The last snapshot, re-read when older than ``max_age`` seconds (thread-safe)."""

    def __init__(self, take: Callable[[], FleetSnapshot], max_age: float = 2.0) -> None:
        self._take = take
        self.max_age = max_age
        self._lock = threading.Lock()
        self._value: FleetSnapshot | None = None
        self._at = 0.0

    def get(self) -> FleetSnapshot:
        """The cached snapshot, or a fresh one (blocking)."""
        with self._lock:
            if self._value is None or time.monotonic() - self._at > self.max_age:
                self._value = self._take()
                self._at = time.monotonic()
            return self._value

    def invalidate(self) -> None:
        """Forget the snapshot (after the dashboard changed a device)."""
        with self._lock:
            self._value = None
