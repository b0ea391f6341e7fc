"""next_renewal, backoff and the small parsers of the schedule: table tests."""

from __future__ import annotations

import datetime as dt

import pytest

from certhub.agent.schedule import (
    RenewalWindow,
    backoff_delay,
    estimate_offset,
    next_renewal,
    parse_timestamp,
    parse_window,
    uniform,
)
from certhub.rand import SeededRandom

T = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
D = dt.timedelta(days=1)
H = dt.timedelta(hours=1)
END = T + 30 * D  # a 30-day certificate issued at T


class Fixed:
    """Randomness that always returns the same byte (0x00 -> uniform 0, 0xff -> ~1)."""

    def __init__(self, byte: int) -> None:
        self.byte = byte

    def token_bytes(self, n: int) -> bytes:
        return bytes([self.byte]) * n


LOW, HIGH = Fixed(0x00), Fixed(0xFF)


def W(after: dt.datetime, before: dt.datetime) -> RenewalWindow:
    return RenewalWindow(renew_after=after, renew_before=before)


CASES = [
    # (now on device clock, window, rng, jitter, offset, expected on device clock)
    pytest.param(T + D, None, LOW, 0.0, dt.timedelta(0), T + 24 * D, id="fraction-0.8"),
    pytest.param(T + D, None, LOW, 0.1, dt.timedelta(0), T + 21 * D, id="jitter-low-end"),
    pytest.param(T, None, HIGH, 0.1, dt.timedelta(0), T + 27 * D, id="jitter-high-end"),
    pytest.param(END + H, None, LOW, 0.0, dt.timedelta(0), END + H, id="woke-up-after-expiry"),
    pytest.param(T + 25 * D, None, LOW, 0.0, dt.timedelta(0), T + 25 * D, id="past-renewal-point"),
    pytest.param(
        T + D,
        W(T + 10 * D, T + 12 * D),
        LOW,
        0.0,
        dt.timedelta(0),
        T + 10 * D,
        id="window-start",
    ),
    pytest.param(
        T + D,
        W(T + 10 * D, T + 12 * D),
        HIGH,
        0.0,
        dt.timedelta(0),
        T + 12 * D,
        id="window-end",
    ),
    pytest.param(
        T + 11 * D,
        W(T + 10 * D, T + 12 * D),
        LOW,
        0.0,
        dt.timedelta(0),
        T + 11 * D,
        id="inside-window-clamped-to-now",
    ),
    pytest.param(
        T + 5 * D,
        W(T + 2 * D, T + 3 * D),
        LOW,
        0.0,
        dt.timedelta(0),
        T + 5 * D,
        id="window-in-the-past-renew-now",
    ),
    pytest.param(
        T + D,
        W(T - 5 * D, T - 4 * D),
        LOW,
        0.0,
        dt.timedelta(0),
        T + 24 * D,
        id="window-of-an-older-certificate-ignored",
    ),
    pytest.param(
        T + D,
        W(T - 1 * D, T + 2 * D),
        LOW,
        0.0,
        dt.timedelta(0),
        T + 24 * D,
        id="window-placed-before-issue-ignored",
    ),
    pytest.param(
        T + D,
        W(T + 12 * D, T + 10 * D),
        LOW,
        0.0,
        dt.timedelta(0),
        T + 24 * D,
        id="inverted-window-ignored",
    ),
    pytest.param(
        T + D,
        W(END + D, END + 2 * D),
        LOW,
        0.0,
        dt.timedelta(0),
        T + 24 * D,
        id="window-after-expiry-ignored",
    ),
    pytest.param(
        T + D,
        W(T + 29 * D, END + 5 * D),
        HIGH,
        0.0,
        dt.timedelta(0),
        END,
        id="window-clamped-to-expiry",
    ),
    pytest.param(
        T + D - 2 * H,
        None,
        LOW,
        0.0,
        2 * H,
        T + 24 * D - 2 * H,
        id="skew-device-clock-2h-behind",
    ),
    pytest.param(
        T + D + 3 * H,
        None,
        LOW,
        0.0,
        -3 * H,
        T + 24 * D + 3 * H,
        id="skew-device-clock-3h-ahead",
    ),
    pytest.param(
        END - H,
        None,
        LOW,
        0.0,
        2 * H,
        END - H,
        id="skew-expired-by-server-time-only",
    ),
    pytest.param(
        END + H,
        None,
        LOW,
        0.0,
        -2 * H,
        END + H,
        id="skew-device-thinks-expired-server-does-not",
    ),
    pytest.param(
        T + D + 3 * H,
        W(T + 10 * D, T + 12 * D),
        HIGH,
        0.0,
        -3 * H,
        T + 12 * D + 3 * H,
        id="skew-ahead-window-end",
    ),
    pytest.param(
        T + D - 2 * H,
        W(T + 10 * D, T + 12 * D),
        LOW,
        0.0,
        2 * H,
        T + 10 * D - 2 * H,
        id="skew-window-in-server-time",
    ),
]


@pytest.mark.parametrize(("now", "window", "rng", "jitter", "offset", "expected"), CASES)
def test_next_renewal_table(
    now: dt.datetime,
    window: RenewalWindow | None,
    rng: Fixed,
    jitter: float,
    offset: dt.timedelta,
    expected: dt.datetime,
) -> None:
    got = next_renewal(T, END, now, window, rng, 0.8, jitter, offset)
    assert abs(got - expected) < dt.timedelta(seconds=1)


def test_next_renewal_is_never_after_expiry() -> None:
    for seed in range(200):
        got = next_renewal(T, END, T, None, SeededRandom(seed), 0.95, 0.04)
        assert T <= got < END


def test_jitter_spreads_a_fleet() -> None:
    picks = {next_renewal(T, END, T, None, SeededRandom(s), 0.8, 0.05) for s in range(50)}
    assert len(picks) == 50
    assert all(T + 22.5 * D <= p <= T + 25.5 * D for p in picks)


def test_window_pick_is_uniform_inside() -> None:
    window = W(T + 10 * D, T + 20 * D)
    picks = [next_renewal(T, END, T, window, SeededRandom(s), 0.8, 0.05) for s in range(200)]
    assert all(T + 10 * D <= p <= T + 20 * D for p in picks)
    assert min(picks) < T + 12 * D and max(picks) > T + 18 * D


def test_sixty_second_certificate() -> None:
    start = T
    got = next_renewal(start, start + dt.timedelta(seconds=60), start, None, LOW, 0.8, 0.0)
    assert got == start + dt.timedelta(seconds=48)


# -- backoff ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "rng", "expected"),
    [
        pytest.param(0, LOW, 0.5, id="first-low"),
        pytest.param(0, HIGH, 1.0, id="first-high"),
        pytest.param(3, LOW, 4.0, id="doubles"),
        pytest.param(10, LOW, 30.0, id="capped-low"),
        pytest.param(10, HIGH, 60.0, id="capped-high"),
        pytest.param(500, HIGH, 60.0, id="huge-attempt-capped"),
    ],
)
def test_backoff_delay(attempt: int, rng: Fixed, expected: float) -> None:
    assert backoff_delay(attempt, rng, initial=1.0, cap=60.0) == pytest.approx(expected, rel=1e-6)


def test_backoff_honours_retry_after() -> None:
    assert backoff_delay(0, LOW, initial=1.0, cap=60.0, retry_after=7.0) == 7.0
    assert backoff_delay(9, LOW, initial=1.0, cap=60.0, retry_after=7.0) == 30.0


def test_uniform_range() -> None:
    assert uniform(LOW) == 0.0
    assert 0.999 < uniform(HIGH) < 1.0


# -- parsers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2026-03-01T00:00:00Z", T, id="zulu"),
        pytest.param("2026-03-01T01:00:00+01:00", T, id="offset"),
        pytest.param("2026-03-01T00:00:00.1234567Z", T.replace(microsecond=123456), id="7-digits"),
        pytest.param("2026-03-01T00:00:00", T, id="naive-is-utc"),
        pytest.param("yesterday", None, id="reject/not-a-date"),
    ],
)
def test_parse_timestamp(text: str, expected: dt.datetime | None) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            {"renewAfter": "2026-03-01T00:00:00Z", "renewBefore": "2026-03-02T00:00:00Z"},
            W(T, T + D),
            id="window",
        ),
        pytest.param(None, None, id="reject/absent"),
        pytest.param({"renewAfter": "2026-03-01T00:00:00Z"}, None, id="reject/half"),
        pytest.param({"renewAfter": 5, "renewBefore": 6}, None, id="reject/numbers"),
        pytest.param("soon", None, id="reject/not-an-object"),
    ],
)
def test_parse_window(value: object, expected: RenewalWindow | None) -> None:
    assert parse_window(value) == expected


def test_estimate_offset_uses_the_midpoint() -> None:
    sent, received = T, T + dt.timedelta(seconds=2)
    server = T + dt.timedelta(seconds=61)
    assert estimate_offset(server, sent, received) == dt.timedelta(seconds=60)
