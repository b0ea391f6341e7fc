"""The fleet in aggregate, for the dashboard and ``/metrics``: counts, histograms, at-risk.

Why shaped so: the dashboard polls every few seconds, so nothing here loads one row per
device into Python. Every statement reads the join that defines a device's lifecycle
(:func:`certhub.registry._service.device_lifecycle_source`, the admin API's rules — not
a second definition) and aggregates with ``GROUP BY`` or cuts with ``ORDER BY … LIMIT``
in the database, on SQLite and PostgreSQL alike. The lifecycle ``CASE`` is evaluated
once a device: the per-device rows are a subquery the planners may not merge
(``OFFSET 0``), or, when :meth:`FleetMixin.fleet_aggregate` also returns the at-risk
list, a materialized CTE read by both halves of a ``UNION ALL`` (one pass over the fleet
instead of two). PostgreSQL's JIT is switched off for these statements (compiling cost
more than it saved).

Histogram buckets are given as :class:`Buckets` — ascending offsets from ``now`` — and
the database only compares timestamps against them (exact on both stores: SQLite's
fixed-width UTC text, PostgreSQL's ``timestamptz``), by bisection (log2 of the bucket
count comparisons a row), so whoever computes the edges decides where they fall to the
microsecond. Validity spans are taken in whole microseconds (``unixepoch`` of the whole
seconds plus the fraction on SQLite, ``extract(epoch)`` on PostgreSQL), not through
``julianday``'s millisecond-rounded floats.

A device's renewal window here is its ``renewal_status`` row by device id (the one the
renewal service keeps for the device's newest live certificate), as the dashboard shows it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certhub.registry._base import StoreBase
from certhub.registry._renewal import renewal_status
from certhub.registry._service import (
    DEVICE_LIFECYCLES,
    DeviceLifecycle,
    LifecycleRule,
    device_lifecycle_source,
)
from certhub.registry._types import UTCDateTime
from certhub.registry.records import check_aware
from certhub.registry.schema import certificates, devices

__all__ = [
    "INACTIVE_LIFECYCLES",
    "URGENT_LIFECYCLES",
    "AtRiskDevice",
    "Buckets",
    "FleetAggregate",
    "FleetMixin",
]

#: Lifecycles whose certificate neither expires nor opens a window ahead (not histogrammed).
INACTIVE_LIFECYCLES = ("revoked", "disabled", "no-certificate", "expired")
#: Lifecycles the at-risk list puts first, whatever their expiry.
URGENT_LIFECYCLES = ("expired", "overdue")
_HIDDEN = ("revoked", "disabled")  # left out of the at-risk list unless searching
_C = certificates
_D = devices
_W = renewal_status.alias("window_by_device")
_UNIXEPOCH = sqlite3.sqlite_version_info >= (3, 38)  # else strftime('%s'), 3 times slower
_MATERIALIZED = sqlite3.sqlite_version_info >= (3, 35)  # "AS MATERIALIZED" (else implied)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_UTC_TYPE = UTCDateTime()  # one instance for every bind (a new one per bind is slow)


@dataclass(frozen=True, kw_only=True, slots=True)
class Buckets:
    """Time buckets around ``now``: bucket ``i`` holds offsets in ``[edges[i], edges[i+1])``.

    Forward (:meth:`FleetMixin.fleet_aggregate`): times ``now + offset``. Backward
    (:meth:`FleetMixin.count_issued`): times ``now - offset``.
    """

    now: dt.datetime
    edges: tuple[dt.timedelta, ...]

    def __post_init__(self) -> None:
        check_aware("now", self.now)
        if len(self.edges) < 2 or self.edges[0] < dt.timedelta(0):
            raise ValueError("expected at least two edges, the first not negative")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must ascend strictly")

    @property
    def count(self) -> int:
        """How many buckets."""
        return len(self.edges) - 1


@dataclass(frozen=True, kw_only=True, slots=True)
class FleetAggregate:
    """Devices per lifecycle and connection, the longest current validity, histograms.

    ``longest_validity`` is the longest ``notAfter - notBefore`` among the devices'
    newest certificates, revoked lifecycles excepted (None without any). ``expiries``
    and ``renewal_windows`` count, per bucket, devices in a lifecycle outside
    :data:`INACTIVE_LIFECYCLES` by ``notAfter`` and by a renewal window opening after
    ``now`` (empty when no buckets were asked for). ``at_risk``: the first devices of
    the unfiltered at-risk list, when asked for.
    """

    counts: dict[str, int]
    total: int
    connected: int
    longest_validity: dt.timedelta | None
    expiries: list[int]
    renewal_windows: list[int]
    at_risk: list[AtRiskDevice]


@dataclass(frozen=True, kw_only=True, slots=True)
class AtRiskDevice:
    """A device of the at-risk list: its lifecycle and when its renewal window opens."""

    device: DeviceLifecycle
    renew_after: dt.datetime | None


class FleetMixin(StoreBase):
    """Fleet aggregates of the store (see the module docstring)."""

    @contextmanager
    def _fleet_read(self, conn: Connection | None) -> Iterator[Connection]:
        """:meth:`_read`, without PostgreSQL's JIT for the rest of the transaction: these
        statements visit every device, so the planner's costs pass ``jit_above_cost`` and
        compiling took ~335 ms of a 725 ms at-risk query at 100,000 devices."""
        with self._read(conn) as c:
            if self.dialect_name == "postgresql":
                c.exec_driver_sql("SET LOCAL jit = off")
            yield c

    def fleet_aggregate(
        self,
        *,
        now: dt.datetime,
        rule: LifecycleRule | None = None,
        buckets: Buckets | None = None,
        at_risk: int = 0,
        conn: Connection | None = None,
    ) -> FleetAggregate:
        """Counts by lifecycle (every one of :data:`DEVICE_LIFECYCLES`, zeros included),
        connected devices, the longest validity and, with ``buckets``, the expiry and
        renewal-window histograms — one ``GROUP BY`` over the lifecycle join. With
        ``at_risk``, the same statement also returns the first ``at_risk`` devices of
        :meth:`list_at_risk` (unfiltered): the per-device rows are materialized once
        (``WITH … AS MATERIALIZED``) and read by both parts of a ``UNION ALL``."""
        check_aware("now", now)
        if at_risk < 0:
            raise ValueError(f"at_risk={at_risk}: expected 0 or more")
        select = _per_device_select(self.dialect_name, now, rule)
        d: sa.Subquery | sa.CTE
        if at_risk:
            cte = select.cte("per_device")
            materialized = _MATERIALIZED or self.dialect_name != "sqlite"
            d = cte.prefix_with("MATERIALIZED") if materialized else cte
        else:
            d = select.offset(0).subquery("per_device")  # see _per_device_select
        keys, params = self._aggregate_keys(d, now, buckets)
        span = _epoch_us(self.dialect_name, d.c.not_after) - _epoch_us(
            self.dialect_name, d.c.not_before
        )
        longest = sa.func.max(sa.case((d.c.lifecycle != "revoked", span)))
        totals = [sa.literal(0).label("part"), *keys, sa.func.count(), longest]
        if not at_risk:
            stmt: sa.Select[Any] | sa.CompoundSelect[Any] = sa.select(*totals).group_by(*keys)
        else:
            padding = [sa.cast(sa.null(), column.type) for column in _risk_columns(d)]
            first = sa.select(*totals, *padding).group_by(*keys)
            listed = self._risk_select(d, at_risk, hide=True).subquery("listed")
            blanks = [sa.null()] * (len(totals) - 1)
            stmt = first.union_all(sa.select(sa.literal(1), *blanks, *_risk_columns(listed)))
        with self._fleet_read(conn) as c:
            rows = c.execute(stmt, params).all()
        width = len(totals)
        totals_rows = [row[1:width] for row in rows if row[0] == 0]
        risk_rows = sorted((_at_risk(row[width:]) for row in rows if row[0] == 1), key=_risk_key)
        return _aggregate(totals_rows, buckets, risk_rows)

    def _aggregate_keys(
        self, d: sa.Subquery | sa.CTE, now: dt.datetime, buckets: Buckets | None
    ) -> tuple[list[sa.ColumnElement[Any]], dict[str, dt.datetime]]:
        keys: list[sa.ColumnElement[Any]] = [
            d.c.lifecycle,
            sa.case((d.c.connection_state == "Connected", 1), else_=0).label("connected"),
        ]
        if buckets is None:
            return keys, {}
        active = d.c.lifecycle.not_in(INACTIVE_LIFECYCLES)
        opens_later = sa.and_(active, d.c.renew_after > _at(now))
        keys += [
            _forward("expiry", d.c.not_after, buckets.count, active).label("expiry"),
            _forward("window", d.c.renew_after, buckets.count, opens_later).label("window"),
        ]
        return keys, _edge_values("expiry", buckets) | _edge_values("window", buckets)

    def _risk_select(self, d: sa.Subquery | sa.CTE, limit: int, hide: bool) -> sa.Select[Any]:
        """The at-risk order over per-device rows, ``LIMIT``-ed; ``hide``: without the
        revoked and disabled devices."""
        device_id: sa.ColumnElement[str] = d.c.device_id
        if self.dialect_name == "postgresql":
            device_id = sa.collate(device_id, "C")  # code-point order, as SQLite and Python
        stmt = sa.select(*_risk_columns(d))
        if hide:
            stmt = stmt.where(d.c.lifecycle.not_in(_HIDDEN))
        return stmt.order_by(
            sa.case((d.c.lifecycle.in_(URGENT_LIFECYCLES), 0), else_=1),
            sa.case((d.c.not_after.is_(None), 1), else_=0),
            d.c.not_after,
            device_id,
        ).limit(limit)

    def count_issued(self, *, buckets: Buckets, conn: Connection | None = None) -> list[int]:
        """Certificates created per backward bucket (``now - created_at``), oldest bucket
        last — any device's, deleted ones included, ending after the oldest edge. One
        ``GROUP BY``."""
        created, count = _C.c.created_at, buckets.count
        since = _edge("issued", count)
        not_after: sa.ColumnElement[dt.datetime] = _C.c.not_after
        if self.dialect_name == "sqlite":
            # Not through ix_certificates_not_after: on a fleet renewing within the horizon
            # that range is nearly every row, fetched one by one (8 times a scan at 100k).
            not_after = sa.func.coalesce(not_after, not_after)
        bucket = _tree("issued", created, count, backward=True)
        stmt = (
            sa.select(bucket, sa.func.count())
            .where(not_after >= since, created > since, created <= _edge("issued", 0))
            .group_by(bucket)
        )
        out = [0] * count
        with self._fleet_read(conn) as c:
            for index, found in c.execute(stmt, _edge_values("issued", buckets)):
                out[int(index)] += int(found)
        return out

    def list_at_risk(
        self,
        *,
        now: dt.datetime,
        rule: LifecycleRule | None = None,
        search: str = "",
        limit: int = 50,
        conn: Connection | None = None,
    ) -> list[AtRiskDevice]:
        """Expired and overdue devices first, then by soonest ``notAfter`` (none: last),
        then by id; revoked and disabled ones are left out unless ``search`` (a
        case-insensitive substring of the device id) is given. ``ORDER BY … LIMIT``."""
        check_aware("now", now)
        if limit < 1:
            raise ValueError(f"limit={limit}: expected 1 or more")
        needle = search.strip().lower()
        where = sa.func.lower(_D.c.device_id).contains(needle, autoescape=True) if needle else None
        select = _per_device_select(self.dialect_name, now, rule, where)
        stmt = self._risk_select(select.offset(0).subquery("per_device"), limit, not needle)
        with self._fleet_read(conn) as c:
            return [_at_risk(row) for row in c.execute(stmt)]


def _per_device_select(
    dialect: str,
    now: dt.datetime,
    rule: LifecycleRule | None,
    where: sa.ColumnElement[bool] | None = None,
) -> sa.Select[Any]:
    """Each device's lifecycle columns (:class:`DeviceLifecycle`'s fields) and its window
    (``renew_after``, by device id), to be read as one subquery or CTE.

    Used as a subquery it gets ``OFFSET 0``: that keeps both databases from merging it
    into the statement over it, which would copy the lifecycle ``CASE`` into every
    expression reading it (the filter, the sort key, the buckets) and evaluate it that
    many times a row.
    """
    source, state, cert = device_lifecycle_source(dialect, now, rule or LifecycleRule())
    columns: dict[str, sa.ColumnElement[Any]] = {
        "device_id": _D.c.device_id,
        "status": _D.c.status,
        "status_reason": _D.c.status_reason,
        "connection_state": _D.c.connection_state,
        "lifecycle": state,
        "serial_hex": cert.c.serial_hex,
        "not_before": cert.c.not_before,
        "not_after": cert.c.not_after,
        "certificate_state": cert.c.state,
        "renew_after": _W.c.renew_after,
    }
    stmt = sa.select(*(column.label(name) for name, column in columns.items())).select_from(
        source.outerjoin(_W, _W.c.device_id == _D.c.device_id)
    )
    return stmt if where is None else stmt.where(where)


def _risk_columns(d: sa.Subquery | sa.CTE) -> list[sa.ColumnElement[Any]]:
    """The at-risk columns: :class:`DeviceLifecycle`'s fields, then ``renew_after``."""
    return [*(d.c[name] for name in _LIFECYCLE_FIELDS), d.c.renew_after]


def _at(value: dt.datetime) -> sa.BindParameter[dt.datetime]:
    return sa.literal(value, _UTC_TYPE)


def _epoch_us(dialect: str, col: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
    """Whole microseconds since 1970 of a timestamp column, exactly."""
    if dialect == "sqlite":
        # Stored as "YYYY-MM-DD HH:MM:SS.ffffff": whole seconds, then the fraction.
        whole = sa.func.substr(col, 1, 19)
        seconds = sa.func.unixepoch(whole) if _UNIXEPOCH else sa.func.strftime("%s", whole)
        return sa.cast(seconds, sa.BigInteger) * 1_000_000 + sa.cast(
            sa.func.substr(col, 21, 6), sa.BigInteger
        )
    return sa.cast(sa.func.round(sa.extract("epoch", col) * 1_000_000), sa.BigInteger)


def _edge(name: str, i: int) -> sa.BindParameter[dt.datetime]:
    return sa.bindparam(f"{name}_{i}", type_=_UTC_TYPE)


def _edge_values(name: str, buckets: Buckets) -> dict[str, dt.datetime]:
    """The bind values of :func:`_edge` for these buckets (``issued`` counts backward)."""
    now, backward = buckets.now, name == "issued"
    return {
        f"{name}_{i}": now - edge if backward else now + edge
        for i, edge in enumerate(buckets.edges)
    }


def _tree(
    name: str, col: sa.ColumnElement[Any], count: int, *, backward: bool = False
) -> sa.ColumnElement[int]:
    """The bucket of ``col`` by bisection over the edge parameters ``name_i``: about
    log2(count) comparisons a row instead of one per bucket."""

    def below(i: int) -> sa.ColumnElement[bool]:  # in a bucket before i
        return col > _edge(name, i) if backward else col < _edge(name, i)

    def search(lo: int, hi: int) -> sa.ColumnElement[int]:
        if hi - lo == 1:
            return sa.literal(lo, sa.Integer)
        mid = (lo + hi) // 2
        return sa.case((below(mid), search(lo, mid)), else_=search(mid, hi))

    return search(0, count)


def _forward(
    name: str, col: sa.ColumnElement[Any], count: int, where: sa.ColumnElement[bool]
) -> sa.ColumnElement[Any]:
    """The bucket of ``col`` counting forward from now (None outside or unless ``where``)."""
    inside = sa.and_(where, col >= _edge(name, 0), col < _edge(name, count))
    return sa.case((inside, _tree(name, col, count)), else_=sa.null())


def _risk_key(device: AtRiskDevice) -> tuple[int, bool, dt.datetime, str]:
    """The at-risk order (as the statement's ``ORDER BY``), for rows a ``UNION`` returned."""
    d = device.device
    urgent = 0 if d.lifecycle in URGENT_LIFECYCLES else 1
    return (urgent, d.not_after is None, d.not_after or _EPOCH, d.device_id)


def _aggregate(
    rows: Sequence[Any], buckets: Buckets | None, at_risk: list[AtRiskDevice]
) -> FleetAggregate:
    counts = dict.fromkeys(DEVICE_LIFECYCLES, 0)
    width = buckets.count if buckets is not None else 0
    expiries, windows = [0] * width, [0] * width
    connected, longest = 0, None
    for row in rows:
        lifecycle, online, count, span = row[0], row[1], int(row[-2]), row[-1]
        counts[lifecycle] = counts.get(lifecycle, 0) + count
        connected += count if online else 0
        if span is not None and (longest is None or int(span) > longest):
            longest = int(span)
        if buckets is not None:
            if row[2] is not None:
                expiries[int(row[2])] += count
            if row[3] is not None:
                windows[int(row[3])] += count
    return FleetAggregate(
        counts=counts,
        total=sum(counts.values()),
        connected=connected,
        longest_validity=None if longest is None else dt.timedelta(microseconds=longest),
        expiries=expiries,
        renewal_windows=windows,
        at_risk=at_risk,
    )


_LIFECYCLE_FIELDS = tuple(f.name for f in dataclasses.fields(DeviceLifecycle))


def _at_risk(row: Any) -> AtRiskDevice:
    *values, renew_after = row
    fields = dict(zip(_LIFECYCLE_FIELDS, values, strict=True))
    return AtRiskDevice(device=DeviceLifecycle(**fields), renew_after=renew_after)
