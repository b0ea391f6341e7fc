"""Admission control: the token bucket and where a throttled device retries."""

from __future__ import annotations

import datetime as dt

import pytest

from certhub.renewal.admission import TokenBucket, retry_after_seconds
from certhub.renewal.window import Window

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_bucket_admits_a_burst_then_spaces_the_refused() -> None:
    bucket = TokenBucket(rate=2.0, burst=2)
    assert [bucket.take(0.0) for _ in range(2)] == [0.0, 0.0]
    waits = [bucket.take(0.0) for _ in range(3)]
    assert waits == pytest.approx([0.5, 1.0, 1.5])  # each refusal reserves the next slot


def test_bucket_refills_at_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=1)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.05) > 0
    assert bucket.take(1.0) == 0.0


def test_bucket_rejects_a_zero_rate() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0.0)


WINDOW = Window(T0 + dt.timedelta(hours=10), T0 + dt.timedelta(hours=12))


@pytest.mark.parametrize(
    ("now", "wait", "window", "low", "high"),
    [
        pytest.param(T0, 3.0, None, 3, 3, id="no-window-after-the-wait"),
        pytest.param(T0, 0.2, None, 1, 1, id="at-least-one-second"),
        pytest.param(T0, 3.0, WINDOW, 10 * 3600, 12 * 3600, id="window-ahead-lands-inside"),
        pytest.param(T0 + dt.timedelta(hours=11), 4.0, WINDOW, 4, 4, id="inside-window-wait"),
        pytest.param(T0 + dt.timedelta(hours=13), 4.0, WINDOW, 4, 4, id="past-window-wait"),
    ],
)
def test_retry_after(
    now: dt.datetime, wait: float, window: Window | None, low: int, high: int
) -> None:
    seconds = retry_after_seconds(now, wait, window, "dev-1")
    assert low <= seconds <= high
    if window is not None and now < window.renew_after:
        assert window.renew_after <= now + dt.timedelta(seconds=seconds) <= window.renew_before
