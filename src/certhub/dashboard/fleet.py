"""The fleet as the dashboard and ``/metrics`` see it: one cached snapshot of the store.

:func:`take_snapshot` asks the store for aggregates, never for one row per device
(:mod:`certhub.registry._fleet`): counts by lifecycle (the admin API's rules, so they
equal ``GET /certhub/v1/devices?lifecycle=…``), connected devices, the expiry and
renewal-window histograms and the first :data:`AT_RISK_KEPT` at-risk devices (``ORDER BY
… LIMIT``) in one statement over the lifecycle join; certificates issued recently in
another; and the CAs.
:class:`SnapshotCache` keeps it for ``max_age`` seconds so that a dashboard polling
every few seconds and a Prometheus scrape share the work.

The timeline's scale follows the fleet: its horizon is the longest validity among the
devices' current certificates (else the longest active policy's; at least a minute, at
most 90 days) in 24 buckets, so a development fleet on 2-minute certificates is drawn
in seconds and minutes and a production one in days; the recent renewal rate covers
the same span backwards. The histogram needs the horizon before it can bucket, so
:func:`take_snapshot` buckets with the previous snapshot's horizon (``horizon_hint``)
and asks again only when the horizon moved. Bucket edges reproduce the former float
arithmetic (:func:`certhub.dashboard.reference.bucket_of`) to the microsecond.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from certhub.metrics import CaExpiry, FleetFigures
from certhub.registry import Store
from certhub.registry._fleet import AtRiskDevice, Buckets, FleetAggregate
from certhub.registry._service import LifecycleRule

__all__ = [
    "AT_RISK_KEPT",
    "AT_RISK_LIMIT",
    "BUCKETS",
    "MAX_HORIZON",
    "MIN_HORIZON",
    "CaInfo",
    "FleetSnapshot",
    "SnapshotCache",
    "bucket_edges",
    "clamp_horizon",
    "take_snapshot",
]

BUCKETS = 24
"""Timeline buckets."""
MIN_HORIZON = 60.0
MAX_HORIZON = 90 * 86400.0


def clamp_horizon(longest: float, policy_longest: float) -> float:
    """The timeline's span: ``longest`` (else the policies'), within 1 minute … 90 days."""
    chosen = longest if longest else policy_longest
    return float(min(max(chosen, MIN_HORIZON), MAX_HORIZON))


#: At-risk devices kept in a snapshot (the page asks for 50; a larger ``limit`` or a
#: search asks the store).
AT_RISK_KEPT = 100
#: The most ``GET /dashboard/api/devices`` returns.
AT_RISK_LIMIT = 500


@dataclass(frozen=True, kw_only=True)
class CaInfo:
    """A CA as the dashboard shows it."""

    name: str
    kind: str
    state: str
    not_after: dt.datetime


@dataclass(frozen=True, kw_only=True)
class FleetSnapshot:
    """The fleet at ``taken_at``: see the module docstring.

    ``timeline`` is the overview's JSON object (``bucketSeconds``, ``horizonSeconds``,
    ``expiries``, ``renewalWindows``, ``issued`` — oldest issuance bucket first);
    ``at_risk`` the first :data:`AT_RISK_KEPT` devices of the unfiltered at-risk list.
    """

    taken_at: dt.datetime
    development: bool
    total: int
    connected: int
    counts: dict[str, int]
    timeline: dict[str, Any]
    at_risk: list[AtRiskDevice]
    cas: list[CaInfo]
    horizon_seconds: float

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


def _index(microseconds: int, width: float) -> int:
    """:func:`~certhub.dashboard.reference.bucket_of`'s arithmetic, before its range check
    (``timedelta.total_seconds()`` is the microseconds over 10**6, correctly rounded)."""
    return int((microseconds / 10**6) // width)


def _first_offset(index: int, width: float, hi: int) -> int:
    """The smallest offset in microseconds whose :func:`_index` is at least ``index``."""
    lo = 0
    while _index(hi, width) < index:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if _index(mid, width) >= index:
            hi = mid
        else:
            lo = mid + 1
    return lo


@functools.lru_cache(maxsize=16)
def bucket_edges(horizon_seconds: float, buckets: int = BUCKETS) -> tuple[dt.timedelta, ...]:
    """``buckets + 1`` edges: an offset falls in bucket ``i`` of
    :func:`~certhub.dashboard.reference.bucket_of` exactly when it lies in
    ``[edges[i], edges[i+1])`` (offsets in whole microseconds). Cached per horizon."""
    width = horizon_seconds / buckets
    hi = int(horizon_seconds * 1e6) + 1
    return tuple(dt.timedelta(microseconds=_first_offset(i, width, hi)) for i in range(buckets + 1))


def _cas(store: Store, namespace: str) -> list[CaInfo]:
    ns = store.get_namespace(namespace)
    if ns is None:
        return []
    return [
        CaInfo(name=ca.name, kind=ca.kind, state=ca.state, not_after=ca.not_after)
        for ca in store.list_cas(ns.id)
    ]


def _horizon(store: Store, namespace: str, aggregate: FleetAggregate) -> float:
    span = aggregate.longest_validity
    longest = span.total_seconds() if span is not None else 0.0
    if longest:
        return clamp_horizon(longest, 0.0)
    ns = store.get_namespace(namespace)
    policies = [] if ns is None else store.list_policies(ns.id)
    policy = max((p.validity_seconds for p in policies if p.state == "active"), default=0)
    return clamp_horizon(0.0, float(policy))


def _aggregate(
    store: Store, now: dt.datetime, rule: LifecycleRule, namespace: str, hint: float | None
) -> tuple[FleetAggregate, float, Buckets]:
    """The aggregate (with the at-risk list) bucketed by its own horizon, that horizon and
    its buckets."""
    buckets = None if hint is None else Buckets(now=now, edges=bucket_edges(hint))
    first = store.fleet_aggregate(now=now, rule=rule, buckets=buckets, at_risk=AT_RISK_KEPT)
    horizon = _horizon(store, namespace, first)
    if buckets is not None and horizon == hint:
        return first, horizon, buckets
    buckets = Buckets(now=now, edges=bucket_edges(horizon))
    again = store.fleet_aggregate(now=now, rule=rule, buckets=buckets)
    return dataclasses.replace(again, at_risk=first.at_risk), horizon, buckets


def take_snapshot(
    store: Store,
    now: dt.datetime,
    *,
    namespace: str = "default",
    rule: LifecycleRule,
    horizon_hint: float | None = None,
) -> FleetSnapshot:
    """Read the fleet from the store (blocking; a few aggregate statements).

    ``horizon_hint``: the previous snapshot's ``horizon_seconds``; when it still holds,
    counts and histograms come from one statement (else two).
    """
    aggregate, horizon, buckets = _aggregate(store, now, rule, namespace, horizon_hint)
    issued = store.count_issued(buckets=buckets)
    timeline = {
        "bucketSeconds": horizon / BUCKETS,
        "horizonSeconds": horizon,
        "expiries": aggregate.expiries,
        "renewalWindows": aggregate.renewal_windows,
        "issued": issued[::-1],
    }
    return FleetSnapshot(
        taken_at=now,
        development=store.get_setting("development") == "1",
        total=aggregate.total,
        connected=aggregate.connected,
        counts=aggregate.counts,
        timeline=timeline,
        at_risk=aggregate.at_risk,
        cas=_cas(store, namespace),
        horizon_seconds=horizon,
    )


class SnapshotCache:
    """The last snapshot, re-read when older than its age limit (thread-safe).

    The limit is ``max_age`` seconds, or ``cost_factor`` times what the last snapshot
    took when that is longer: a fleet whose snapshot takes 0.5 s is re-read every 5 s,
    so an open dashboard costs a store thread at most ~1/``cost_factor`` of its time
    however large the fleet. ``take`` receives the previous snapshot's horizon (None at
    first), for :func:`take_snapshot`'s ``horizon_hint``.
    """

    def __init__(
        self,
        take: Callable[[float | None], FleetSnapshot],
        max_age: float = 2.0,
        *,
        cost_factor: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._take = take
        self.max_age = max_age
        self.cost_factor = cost_factor
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._value: FleetSnapshot | None = None
        self._horizon: float | None = None
        self._at = 0.0
        self._cost = 0.0

    @property
    def age_limit(self) -> float:
        """How old the cached snapshot may get before it is re-read (seconds)."""
        return max(self.max_age, self.cost_factor * self._cost)

    def get(self) -> FleetSnapshot:
        """The cached snapshot, or a fresh one (blocking)."""
        with self._lock:
            if self._value is None or self._monotonic() - self._at > self.age_limit:
                started = self._monotonic()
                self._value = self._take(self._horizon)
                self._horizon = self._value.horizon_seconds
                self._at = self._monotonic()
                self._cost = self._at - started
            return self._value

    def invalidate(self) -> None:
        """Forget the snapshot (after the dashboard changed a device); keep the horizon."""
        with self._lock:
            self._value = None
