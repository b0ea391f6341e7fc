"""The fleet snapshot computed in Python from every device's row: the specification.

This is how the dashboard computed its figures before the store aggregated them
(:mod:`certhub.registry._fleet`, ~60 ms per 1,000 devices here): page through every
device's lifecycle (:meth:`~certhub.registry.Store.list_device_lifecycles`), read every
renewal window, then count, bucket and sort in Python. The server no longer uses it; it
stays as the reference the SQL snapshot is compared with (``tests/dashboard``) and as a
baseline of ``benchmarks/dashboard.py``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from certhub.dashboard.fleet import BUCKETS, clamp_horizon
from certhub.registry import Store
from certhub.registry._renewal import renewal_status
from certhub.registry._service import DEVICE_LIFECYCLES, DeviceLifecycle, LifecycleRule
from certhub.registry.schema import certificates

__all__ = [
    "ReferenceFleet",
    "at_risk",
    "bucket_of",
    "reference_fleet",
    "timeline",
]

_PAGE = 5000
#: Lifecycles that need an operator's eye, most urgent first (the at-risk table's order).
_RISK_ORDER = ("expired", "overdue", "renewal-due", "healthy", "no-certificate")


@dataclass(frozen=True, kw_only=True)
class ReferenceFleet:
    """Every device's lifecycle and window, recent issue times, and the horizon."""

    taken_at: dt.datetime
    devices: list[DeviceLifecycle]
    windows: dict[str, tuple[dt.datetime, dt.datetime]]
    issued_at: list[dt.datetime]
    horizon_seconds: float

    @property
    def counts(self) -> dict[str, int]:
        """Devices per lifecycle (every lifecycle, zeros included)."""
        counts = dict.fromkeys(DEVICE_LIFECYCLES, 0)
        for device in self.devices:
            counts[device.lifecycle] = counts.get(device.lifecycle, 0) + 1
        return counts

    @property
    def connected(self) -> int:
        """Devices whose connection state is ``Connected``."""
        return sum(1 for d in self.devices if d.connection_state == "Connected")


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
    stmt = sa.select(c.c.created_at).where(c.c.not_after >= since, c.c.created_at >= since)
    return [row[0] for row in store.run_select(stmt)]


def _policy_longest(store: Store, namespace: str) -> float:
    ns = store.get_namespace(namespace)
    policies = [] if ns is None else store.list_policies(ns.id)
    return float(max((p.validity_seconds for p in policies if p.state == "active"), default=0))


def _horizon(store: Store, namespace: str, devices: Sequence[DeviceLifecycle]) -> float:
    spans = [
        (d.not_after - d.not_before).total_seconds()
        for d in devices
        if d.not_after is not None and d.not_before is not None and d.lifecycle != "revoked"
    ]
    longest = max(spans, default=0.0)
    return clamp_horizon(longest, 0.0 if longest else _policy_longest(store, namespace))


def reference_fleet(
    store: Store, now: dt.datetime, *, namespace: str = "default", rule: LifecycleRule
) -> ReferenceFleet:
    """Read every device from the store (blocking; O(devices) rows into Python)."""
    devices = _all_lifecycles(store, now, rule)
    horizon = _horizon(store, namespace, devices)
    return ReferenceFleet(
        taken_at=now,
        devices=devices,
        windows=_windows(store),
        issued_at=_issued_since(store, now - dt.timedelta(seconds=horizon)),
        horizon_seconds=horizon,
    )


def bucket_of(offset: float, width: float) -> int | None:
    """The bucket of an offset in seconds (None outside the :data:`BUCKETS` buckets)."""
    index = int(offset // width)
    return index if 0 <= index < BUCKETS else None


def timeline(fleet: ReferenceFleet) -> dict[str, Any]:
    """Upcoming expiries and renewal-window openings per bucket, and recent issuance."""
    width = fleet.horizon_seconds / BUCKETS
    now = fleet.taken_at
    expiries, windows, issued = [0] * BUCKETS, [0] * BUCKETS, [0] * BUCKETS
    for device in fleet.devices:
        if device.lifecycle in ("revoked", "disabled", "no-certificate", "expired"):
            continue
        if device.not_after is not None:
            i = bucket_of((device.not_after - now).total_seconds(), width)
            if i is not None:
                expiries[i] += 1
        window = fleet.windows.get(device.device_id)
        if window is not None and window[0] > now:
            i = bucket_of((window[0] - now).total_seconds(), width)
            if i is not None:
                windows[i] += 1
    for at in fleet.issued_at:
        i = bucket_of((now - at).total_seconds(), width)
        if i is not None:
            issued[BUCKETS - 1 - i] += 1
    return {
        "bucketSeconds": width,
        "horizonSeconds": fleet.horizon_seconds,
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
