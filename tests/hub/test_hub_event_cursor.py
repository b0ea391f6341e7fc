"""EventCursor: delivers each event id once, waits for ids that become visible late."""

from __future__ import annotations

from certhub.hub import EventCursor


def test_follows_consecutive_ids() -> None:
    cursor = EventCursor(start=10)
    assert cursor.floor == 10
    assert cursor.accept([11, 12], now=0.0) == [11, 12]
    assert cursor.floor == 12
    assert cursor.accept([], now=1.0) == []


def test_a_gap_is_reread_and_the_late_id_delivered_once() -> None:
    cursor = EventCursor(start=0)
    assert cursor.accept([1, 3], now=0.0) == [1, 3]
    assert cursor.floor == 1  # id 2 may still commit: read again from above 1
    assert cursor.accept([3], now=0.1) == []  # 3 already delivered
    assert cursor.accept([2, 3, 4], now=0.2) == [2, 4]
    assert cursor.floor == 4


def test_gaps_are_given_up_after_the_timeout() -> None:
    cursor = EventCursor(start=0, gap_timeout=5.0)
    cursor.accept([2], now=0.0)
    assert cursor.floor == 0
    cursor.accept([2], now=6.0)
    assert cursor.floor == 2
