"""The store's fleet aggregates equal the reference computation, on SQLite and PostgreSQL.

The reference (:mod:`certhub.dashboard.reference`) is how the dashboard computed its
snapshot from every device's row; :func:`certhub.dashboard.fleet.take_snapshot` now asks
the store for ``GROUP BY`` aggregates and a ``LIMIT``-ed at-risk list. Both run over the
synthetic fleet of :mod:`fleetrows` (every lifecycle, renewal windows, history, ties,
ids needing ``LIKE`` escapes) and over hand-placed devices sitting on bucket edges.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest
from fleetrows import (
    FleetRows,
    certificate_row,
    device_row,
    insert_rows,
    load_fleet,
    prepare,
    window_row,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from certhub.dashboard.fleet import AT_RISK_KEPT, BUCKETS, bucket_edges, take_snapshot
from certhub.dashboard.reference import (
    ReferenceFleet,
    at_risk,
    bucket_of,
    reference_fleet,
    timeline,
)
from certhub.registry import Store
from certhub.registry._fleet import AtRiskDevice, Buckets
from certhub.registry._service import DEVICE_LIFECYCLES, LifecycleRule

NOW = dt.datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=dt.UTC)
RULES = [
    pytest.param(LifecycleRule(), id="rule-80-90"),
    pytest.param(LifecycleRule(renew_fraction=0.5, overdue_fraction=0.6), id="rule-50-60"),
]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as opened:
        yield opened


@pytest.fixture
def fleet_store(store: Store) -> Store:
    load_fleet(store, 600, NOW, seed=7)
    return store


def _reference_at_risk(ref: ReferenceFleet, search: str, limit: int) -> list[AtRiskDevice]:
    return [
        AtRiskDevice(device=d, renew_after=ref.windows[d.device_id][0])
        if d.device_id in ref.windows
        else AtRiskDevice(device=d, renew_after=None)
        for d in at_risk(ref.devices, search=search, limit=limit)
    ]


def _assert_snapshot_equals_reference(
    store: Store, rule: LifecycleRule, hint: float | None = None
) -> ReferenceFleet:
    ref = reference_fleet(store, NOW, rule=rule)
    snap = take_snapshot(store, NOW, rule=rule, horizon_hint=hint)
    assert snap.counts == ref.counts
    assert (snap.total, snap.connected) == (len(ref.devices), ref.connected)
    assert snap.horizon_seconds == ref.horizon_seconds
    assert snap.timeline == timeline(ref)
    assert snap.at_risk == _reference_at_risk(ref, "", AT_RISK_KEPT)
    return ref


@pytest.mark.parametrize("rule", RULES)
def test_snapshot_equals_the_reference_over_a_fleet_in_every_state(
    fleet_store: Store, rule: LifecycleRule
) -> None:
    ref = _assert_snapshot_equals_reference(fleet_store, rule)
    assert set(DEVICE_LIFECYCLES) == {d.lifecycle for d in ref.devices}
    t = timeline(ref)
    assert sum(t["expiries"]) and sum(t["renewalWindows"]) and sum(t["issued"])
    assert 0 < ref.connected < len(ref.devices)


@pytest.mark.parametrize(
    "hint",
    [
        pytest.param(None, id="no-hint"),
        pytest.param(60.0, id="stale-hint"),
        pytest.param(30 * 86400.0 + 0.5, id="near-miss-hint"),
    ],
)
def test_a_wrong_or_missing_horizon_hint_changes_nothing(fleet_store: Store, hint: float) -> None:
    _assert_snapshot_equals_reference(fleet_store, LifecycleRule(), hint)
    right = reference_fleet(fleet_store, NOW, rule=LifecycleRule()).horizon_seconds
    _assert_snapshot_equals_reference(fleet_store, LifecycleRule(), right)


@pytest.mark.parametrize(
    ("search", "limit"),
    [
        pytest.param("", 1, id="first"),
        pytest.param("", 37, id="page"),
        pytest.param("dev_", 500, id="underscore-is-literal"),
        pytest.param("%x", 500, id="percent-is-literal"),
        pytest.param("DEV-00001", 500, id="case-insensitive"),
        pytest.param("  0000  ", 20, id="trimmed"),
        pytest.param("-", 500, id="every-lifecycle"),
        pytest.param("no-such-device", 500, id="none"),
    ],
)
def test_at_risk_equals_the_reference(fleet_store: Store, search: str, limit: int) -> None:
    ref = reference_fleet(fleet_store, NOW, rule=LifecycleRule())
    got = fleet_store.list_at_risk(now=NOW, search=search, limit=limit)
    assert got == _reference_at_risk(ref, search, limit)


def test_searching_lists_revoked_and_disabled_devices_too(fleet_store: Store) -> None:
    found = {r.device.lifecycle for r in fleet_store.list_at_risk(now=NOW, search="-", limit=500)}
    unfiltered = {r.device.lifecycle for r in fleet_store.list_at_risk(now=NOW, limit=500)}
    assert {"revoked", "disabled"} <= found
    assert not {"revoked", "disabled"} & unfiltered


def test_an_empty_fleet_takes_its_horizon_from_the_policies(store: Store) -> None:
    _assert_snapshot_equals_reference(store, LifecycleRule())
    assert take_snapshot(store, NOW, rule=LifecycleRule()).horizon_seconds == 60.0
    prepare(store, NOW)  # a 30-day policy, no devices
    ref = _assert_snapshot_equals_reference(store, LifecycleRule())
    assert ref.horizon_seconds == 30 * 86400.0


def _edge_fleet(store: Store, horizon: dt.timedelta) -> None:
    """One device defining the horizon; others expiring, opening their window and issued
    exactly on each bucket edge and a microsecond before it."""
    ns_id, policy_id, ca_id = prepare(store, NOW)
    ids = (policy_id, ca_id)
    rows = FleetRows()
    rows.devices.append(device_row("anchor", ns_id, NOW, "enabled", True))
    anchor = (NOW - horizon / 2, NOW - horizon / 2 + horizon)
    rows.certificates.append(certificate_row("a0", "anchor", ids, anchor, NOW, "active"))
    micro = dt.timedelta(microseconds=1)
    for i, edge in enumerate(bucket_edges(horizon.total_seconds())[1:]):
        for j, at in enumerate((edge, edge - micro)):
            device_id, serial = f"edge-{i:02d}-{j}", f"{i:02x}{j:02x}"
            rows.devices.append(device_row(device_id, ns_id, NOW, "enabled", False))
            validity = (NOW + at - dt.timedelta(seconds=60), NOW + at)  # shorter than the anchor
            rows.certificates.append(
                certificate_row(serial, device_id, ids, validity, NOW - at, "active")
            )
            start = (validity[0], 1.0)
            rows.windows.append(window_row(device_id, serial, start, NOW + at, NOW + at, NOW))
    insert_rows(store, rows)


@pytest.mark.parametrize(
    "horizon",
    [
        pytest.param(dt.timedelta(hours=2), id="2h"),
        pytest.param(dt.timedelta(days=7, microseconds=333), id="7d-odd"),
    ],
)
def test_devices_on_bucket_edges_land_where_the_reference_puts_them(
    store: Store, horizon: dt.timedelta
) -> None:
    _edge_fleet(store, horizon)
    ref = _assert_snapshot_equals_reference(store, LifecycleRule(), horizon.total_seconds())
    assert ref.horizon_seconds == horizon.total_seconds()
    t = timeline(ref)
    assert sum(t["expiries"]) > BUCKETS


@settings(max_examples=200, deadline=None)
@given(
    horizon=st.floats(min_value=60.0, max_value=90 * 86400.0),
    fraction=st.floats(min_value=-0.01, max_value=1.01),
    nudge=st.integers(min_value=-2, max_value=2),
)
def test_bucket_edges_reproduce_the_float_bucketing(
    horizon: float, fraction: float, nudge: int
) -> None:
    edges = bucket_edges(horizon)
    width = horizon / BUCKETS
    offset = int(horizon * 1e6 * fraction) + nudge
    near_edge = edges[int(abs(fraction) * BUCKETS) % len(edges)]
    for micro in (offset, near_edge // dt.timedelta(microseconds=1) + nudge):
        delta = dt.timedelta(microseconds=micro)
        expected = bucket_of(delta.total_seconds(), width)
        inside = [i for i in range(BUCKETS) if edges[i] <= delta < edges[i + 1]]
        assert inside == ([] if expected is None else [expected])


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        pytest.param((dt.timedelta(0),), "at least two edges", id="reject/one-edge"),
        pytest.param(
            (dt.timedelta(seconds=-1), dt.timedelta(0)), "at least two edges", id="reject/negative"
        ),
        pytest.param(
            (dt.timedelta(0), dt.timedelta(1), dt.timedelta(1)), "ascend", id="reject/not-ascending"
        ),
    ],
)
def test_buckets_refuse_bad_edges(edges: tuple[dt.timedelta, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Buckets(now=NOW, edges=edges)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda s: s.list_at_risk(now=NOW, limit=0), "limit=0", id="reject/at-risk-limit-0"
        ),
        pytest.param(
            lambda s: s.fleet_aggregate(now=NOW, at_risk=-1), "at_risk=-1", id="reject/at-risk-neg"
        ),
        pytest.param(
            lambda s: s.fleet_aggregate(now=NOW.replace(tzinfo=None)),
            "timezone-aware",
            id="reject/naive-now",
        ),
    ],
)
def test_fleet_queries_refuse_bad_arguments(
    sqlite_url: str, call: Callable[[Store], object], message: str
) -> None:
    with Store.open(sqlite_url) as opened, pytest.raises(ValueError, match=message):
        call(opened)


def test_buckets_refuse_a_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Buckets(now=NOW.replace(tzinfo=None), edges=(dt.timedelta(0), dt.timedelta(1)))


def test_snapshot_follows_a_revocation(fleet_store: Store) -> None:
    before = take_snapshot(fleet_store, NOW, rule=LifecycleRule())
    listed = fleet_store.list_at_risk(now=NOW, limit=500)
    healthy = next(r.device for r in listed if r.device.lifecycle == "healthy")
    fleet_store.revoke_device(healthy.device_id, b"\x02" * 32, now=NOW, actor="t", reason="t")
    after = take_snapshot(fleet_store, NOW, rule=LifecycleRule())
    assert after.counts["revoked"] == before.counts["revoked"] + 1
    assert after.counts["healthy"] == before.counts["healthy"] - 1
    still = fleet_store.list_at_risk(now=NOW, limit=500)
    assert healthy.device_id not in {r.device.device_id for r in still}
    _assert_snapshot_equals_reference(fleet_store, LifecycleRule())


def test_lifecycles_agree_between_sqlite_and_postgresql(sqlite_url: str, pg_url: str) -> None:
    """PostgreSQL finds the newest certificate by ``LATERAL``, SQLite by a scalar
    subquery: the same fleet gives the same lifecycles and the same snapshot."""
    listings, snapshots = [], []
    for url in (sqlite_url, pg_url):
        with Store.open(url) as opened:
            load_fleet(opened, 300, NOW, seed=11)
            listings.append(opened.list_device_lifecycles(now=NOW, limit=1000))
            snapshots.append(take_snapshot(opened, NOW, rule=LifecycleRule()))
    assert listings[0] == sorted(listings[1], key=lambda d: d.device_id)
    assert snapshots[0] == snapshots[1]
