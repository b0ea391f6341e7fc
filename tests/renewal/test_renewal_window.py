"""Window arithmetic: pure functions of (validity, device id, now, fleet histogram)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certhub.renewal.window import (
    Validity,
    Window,
    WindowPolicy,
    bucket_of,
    capacity_for,
    effective_validity,
    expected_rate_peak,
    fleet_histogram,
    nominal_window,
    place_window,
    rebalance,
    stable_fraction,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
MONTH = Validity(T0, T0 + 30 * DAY)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("device_id", "fraction"),
    [
        ("dev-a", 0.32896793683900283),
        ("dev-b", 0.17455203040129183),
        ("sensor-0001", 0.3364661313488068),
    ],
)
def test_stable_fraction_is_pinned(device_id: str, fraction: float) -> None:
    """The hash point must not move between releases (or every fleet re-plans)."""
    assert stable_fraction(device_id) == fraction


@pytest.mark.parametrize(
    ("device_id", "validity", "policy", "after", "before"),
    [
        pytest.param(
            "dev-a", MONTH, WindowPolicy(), "2026-01-24T06:56:54", "2026-01-24T21:20:54", id="30d"
        ),
        pytest.param(
            "dev-b", MONTH, WindowPolicy(), "2026-01-23T22:03:15", "2026-01-24T12:27:15", id="30d-b"
        ),
        pytest.param(
            "dev-a",
            Validity(T0, T0 + dt.timedelta(minutes=10)),
            WindowPolicy(),
            "2026-01-01T00:07:45",
            "2026-01-01T00:07:57",
            id="10min",
        ),
        pytest.param(
            "dev-a",
            MONTH,
            WindowPolicy(
                start_fraction=0.5, end_fraction=0.6, spill_start_fraction=0.4, width_fraction=0.1
            ),
            "2026-01-16T00:00:00",
            "2026-01-19T00:00:00",
            id="window-fills-band",
        ),
    ],
)
def test_nominal_window(
    device_id: str, validity: Validity, policy: WindowPolicy, after: str, before: str
) -> None:
    assert nominal_window(validity, device_id, policy) == Window(at(after), at(before))


# Placement on a small grid: validity 1000 s, buckets of 10 s, windows of 20 s.
SMALL = Validity(T0, T0 + dt.timedelta(seconds=1000))
GRID = WindowPolicy(width_fraction=0.02, bucket_seconds=10, capacity=1)
DEVICE = "dev-a"
NOMINAL = nominal_window(SMALL, DEVICE, GRID).renew_after  # T0 + 776 s


def _bucket(offset: int) -> int:
    """The bucket ``offset`` buckets from the nominal one."""
    return bucket_of(NOMINAL, 10) + offset


def _full(*offsets: int) -> Counter[int]:
    return Counter({_bucket(o): 1 for o in offsets})


def _all_full(lo: int, hi: int) -> Counter[int]:
    return Counter({bucket_of(T0, 10) + b: 1 for b in range(lo, hi)})


@pytest.mark.parametrize(
    ("histogram", "now_offset", "policy", "expected_offset"),
    [
        pytest.param(Counter(), 0, GRID, 0, id="empty-fleet-nominal"),
        pytest.param(
            _full(0),
            0,
            WindowPolicy(width_fraction=0.02, bucket_seconds=10),
            0,
            id="no-capacity-no-pacing",
        ),
        pytest.param(_full(0), 0, GRID, 10, id="full-nominal-pushed-later"),
        pytest.param(_full(0, 1), 0, GRID, -10, id="then-earlier"),
        pytest.param(_full(0, 1, -1, 2), 0, GRID, -20, id="nearest-free-bucket"),
        pytest.param(_all_full(75, 84), 0, GRID, -30, id="band-full-spill-nearest"),
        pytest.param(_all_full(60, 89) + _full(0), 0, GRID, 10, id="spill-full-least-loaded"),
        pytest.param(Counter(), 800, GRID, 24, id="nominal-in-the-past-starts-now"),
    ],
)
def test_place_window(
    histogram: Counter[int], now_offset: int, policy: WindowPolicy, expected_offset: int
) -> None:
    now = T0 + dt.timedelta(seconds=now_offset)
    window = place_window(SMALL, DEVICE, now, histogram, policy)
    assert window.renew_before - window.renew_after == dt.timedelta(seconds=20)
    assert window.renew_after >= now
    assert window.renew_after == NOMINAL + dt.timedelta(seconds=expected_offset)


def test_place_window_after_the_spill_band_is_now() -> None:
    now = T0 + dt.timedelta(seconds=950)
    window = place_window(SMALL, DEVICE, now, Counter(), GRID)
    assert window == Window(now, now + dt.timedelta(seconds=20))


def test_place_window_never_ends_after_expiry() -> None:
    now = T0 + dt.timedelta(seconds=990)
    window = place_window(SMALL, DEVICE, now, Counter(), GRID)
    assert window == Window(now, SMALL.not_after)


@pytest.mark.parametrize(
    ("rate", "bucket", "utilization", "capacity"),
    [(None, 60, 0.8, None), (10.0, 60, 0.8, 480), (0.001, 60, 0.8, 1), (2.5, 10, 0.5, 12)],
)
def test_capacity_for(
    rate: float | None, bucket: float, utilization: float, capacity: int | None
) -> None:
    assert capacity_for(rate, bucket, utilization) == capacity


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"start_fraction": 0.9, "end_fraction": 0.8}, id="reject/band-reversed"),
        pytest.param({"spill_start_fraction": 0.8}, id="reject/spill-inside-band"),
        pytest.param({"width_fraction": 0.2}, id="reject/window-wider-than-band"),
        pytest.param({"bucket_seconds": 0}, id="reject/bucket-zero"),
        pytest.param({"capacity": 0}, id="reject/capacity-zero"),
    ],
)
def test_window_policy_rejects(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        WindowPolicy(**kwargs)  # type: ignore[arg-type]


def test_expected_rate_peak() -> None:
    w = dt.timedelta(seconds=100)
    windows = [Window(T0, T0 + w), Window(T0 + w / 2, T0 + w * 1.5), Window(T0 + w, T0 + 2 * w)]
    assert expected_rate_peak(windows) == pytest.approx(0.02)


def test_rebalance_moves_the_excess_of_full_buckets() -> None:
    policy = WindowPolicy(width_fraction=0.02, bucket_seconds=10, capacity=2)
    crowd = [
        (f"d{i}", SMALL, Window(NOMINAL, NOMINAL + dt.timedelta(seconds=20))) for i in range(5)
    ]
    moves = rebalance(crowd, T0, policy)
    assert len(moves) == 3
    after = {d: w for d, _, w in crowd} | dict(moves)
    histogram = fleet_histogram((w.renew_after for w in after.values()), 10)
    assert max(histogram.values()) <= 2
    assert rebalance([(d, SMALL, w) for d, w in after.items()], T0, policy) == []


def test_rebalance_leaves_windows_about_to_start() -> None:
    policy = WindowPolicy(width_fraction=0.02, bucket_seconds=10, capacity=1)
    crowd = [
        (f"d{i}", SMALL, Window(NOMINAL, NOMINAL + dt.timedelta(seconds=20))) for i in range(3)
    ]
    assert rebalance(crowd, NOMINAL - dt.timedelta(seconds=5), policy) == []


def test_fleet_issued_in_one_minute_is_spread_within_the_admission_rate() -> None:
    """600 certificates issued in the same minute: the placed windows keep the expected
    renewal rate at every instant within the admission rate; hash placement alone does not."""
    rate, bucket = 0.0025, 600.0
    policy = WindowPolicy(bucket_seconds=bucket, capacity=capacity_for(rate, bucket, 0.8))
    histogram: Counter[int] = Counter()
    placed, nominal = [], []
    for i in range(600):
        issued = T0 + dt.timedelta(seconds=i % 60)
        validity = Validity(issued, issued + 30 * DAY)
        window = place_window(validity, f"sensor-{i:04d}", issued, histogram, policy)
        histogram[bucket_of(window.renew_after, bucket)] += 1
        placed.append(window)
        nominal.append(nominal_window(validity, f"sensor-{i:04d}", policy))
    assert max(histogram.values()) <= policy.capacity  # type: ignore[operator]
    assert expected_rate_peak(placed) <= rate
    assert expected_rate_peak(nominal) > rate  # the band alone would be too crowded


@settings(max_examples=60, deadline=None)
@given(
    validity_s=st.integers(min_value=60, max_value=90 * 86400),
    now_fraction=st.floats(min_value=0.0, max_value=1.2),
    device=st.text(min_size=1, max_size=12),
    crowd=st.integers(min_value=0, max_value=5),
)
def test_windows_stay_inside_validity_and_not_in_the_past(
    validity_s: int, now_fraction: float, device: str, crowd: int
) -> None:
    validity = Validity(T0, T0 + dt.timedelta(seconds=validity_s))
    now = validity.at(min(now_fraction, 0.999)).replace(microsecond=0)
    policy = WindowPolicy(bucket_seconds=max(1.0, validity_s / 500), capacity=1)
    nominal = nominal_window(validity, device, policy)
    histogram = Counter({bucket_of(nominal.renew_after, policy.bucket_seconds): crowd})
    window = place_window(validity, device, now, histogram, policy)
    assert window.renew_after < window.renew_before
    assert window.renew_after >= now
    assert window.renew_before <= max(
        validity.not_after, window.renew_after + dt.timedelta(seconds=1)
    )


# -- the effective validity: counted from issuance, not from the backdated notBefore ---------


def test_effective_validity_starts_at_issuance() -> None:
    issued = T0 + dt.timedelta(minutes=5)
    validity = effective_validity(T0, issued + dt.timedelta(seconds=60), issued)
    assert validity == Validity(issued, issued + dt.timedelta(seconds=60))


@pytest.mark.parametrize(
    ("issued_at", "start"),
    [
        pytest.param(None, T0, id="unknown-issuance-uses-not-before"),
        pytest.param(T0 - DAY, T0, id="issued-before-not-before-clamped"),
        pytest.param(T0 + 40 * DAY, T0 + 30 * DAY, id="issued-after-not-after-clamped"),
    ],
)
def test_effective_validity_bounds(issued_at: dt.datetime | None, start: dt.datetime) -> None:
    assert effective_validity(T0, T0 + 30 * DAY, issued_at) == Validity(start, T0 + 30 * DAY)


def test_sixty_second_certificate_with_five_minute_backdate_is_not_due_at_once() -> None:
    """The bug this guards: 75 % of (5 min backdate + 60 s) lies before the issuance."""
    issued = T0 + dt.timedelta(minutes=5)
    not_before, not_after = T0, issued + dt.timedelta(seconds=60)
    window = nominal_window(
        effective_validity(not_before, not_after, issued), "dev-a", WindowPolicy()
    )
    assert issued + dt.timedelta(seconds=45) <= window.renew_after
    assert window.renew_before <= issued + dt.timedelta(seconds=52)
    naive = nominal_window(Validity(not_before, not_after), "dev-a", WindowPolicy())
    assert naive.renew_after < issued  # what counting from notBefore gave
