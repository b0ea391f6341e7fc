"""Server-paced renewal windows: pure functions of (validity, device id, now, fleet histogram).

Why shaped so: a fleet onboarded in one afternoon would otherwise renew in one
afternoon, every validity period, forever. Each device is told a *window*
(``properties.desired.certificateRenewal = {"renewAfter", "renewBefore"}``) and renews at
a random point inside it, so the server controls the fleet's renewal rate by where it
puts the windows:

* the **band** is 75%-85% of the certificate's *effective* validity (configurable): from
  when it was issued to its notAfter. notBefore is backdated for devices' clock skew
  (5 minutes by default), so counting from it would put a 60-second certificate's
  window in the past the moment it is issued; a window is
  ``width_fraction`` of the validity wide (default 2%, at least ``min_width_seconds``);
* the device's **nominal** window starts at a point of the band given by a stable hash
  of its device id (the same device gets the same point every period);
* the fleet **histogram** counts window starts per bucket (``bucket_seconds``). A bucket
  holds at most ``capacity`` starts; a device whose nominal bucket is full is shifted by
  whole buckets, nearest first, later before earlier, inside the band, then inside the
  wider **spill** band (60%-90%), else to the least-loaded bucket of the spill band.

Why counting starts bounds the rate: a device renews uniformly inside its window of
width ``w``, so the expected fleet rate at any instant is at most
``capacity · (1/B + 1/w)`` — with ``capacity = rate · B · utilization`` that is
``rate · utilization · (1 + B/w)``, within the admission rate for ``utilization ≤ 0.8``
and ``w ≥ 4 B``.

A window never starts in the past; when even the spill band is over, the window is
"now" (renew at once). Times are whole seconds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Validity",
    "Window",
    "WindowPolicy",
    "bucket_of",
    "capacity_for",
    "effective_validity",
    "expected_rate_peak",
    "fleet_histogram",
    "nominal_window",
    "place_window",
    "rebalance",
    "stable_fraction",
]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, kw_only=True, slots=True)
class WindowPolicy:
    """Where windows go (fractions of a certificate's validity) and the fleet's capacity."""

    start_fraction: float = 0.75
    end_fraction: float = 0.85
    spill_start_fraction: float = 0.60
    spill_end_fraction: float = 0.90
    width_fraction: float = 0.02
    min_width_seconds: float = 1.0
    bucket_seconds: float = 60.0
    capacity: int | None = None
    """Window starts allowed per bucket; None: no pacing (hash placement only)."""

    def __post_init__(self) -> None:
        s, e = self.start_fraction, self.end_fraction
        ss, se = self.spill_start_fraction, self.spill_end_fraction
        if not 0 < ss <= s < e <= se < 1:
            raise ValueError("expected 0 < spill_start <= start < end <= spill_end < 1")
        if not 0 < self.width_fraction <= e - s + 1e-9:
            raise ValueError("expected 0 < width_fraction <= end - start")
        if self.bucket_seconds <= 0 or self.min_width_seconds <= 0:
            raise ValueError("bucket_seconds and min_width_seconds must be positive")
        if self.capacity is not None and self.capacity < 1:
            raise ValueError("capacity must be at least 1 (or None)")


@dataclass(frozen=True, slots=True)
class Validity:
    """A certificate's validity period."""

    not_before: dt.datetime
    not_after: dt.datetime

    @property
    def seconds(self) -> float:
        return (self.not_after - self.not_before).total_seconds()

    def at(self, fraction: float) -> dt.datetime:
        """The instant ``fraction`` of the way through the validity."""
        return self.not_before + dt.timedelta(seconds=self.seconds * fraction)


def effective_validity(
    not_before: dt.datetime, not_after: dt.datetime, issued_at: dt.datetime | None
) -> Validity:
    """The validity windows are placed in: from ``issued_at`` (when the server signed the
    certificate, kept in the store) to ``not_after``. notBefore is backdated for clock
    skew and says nothing about when the certificate began to be used. Without
    ``issued_at`` (unknown) the full validity is used; a value outside the validity
    is clamped into it."""
    if issued_at is None:
        return Validity(not_before, not_after)
    return Validity(min(max(issued_at, not_before), not_after), not_after)


@dataclass(frozen=True, slots=True)
class Window:
    """``renewAfter``..``renewBefore``."""

    renew_after: dt.datetime
    renew_before: dt.datetime


def stable_fraction(device_id: str) -> float:
    """A number in [0, 1) fixed by the device id (SHA-256), uniform over a fleet."""
    digest = hashlib.sha256(device_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def bucket_of(instant: dt.datetime, bucket_seconds: float) -> int:
    """The histogram bucket holding ``instant`` (buckets are aligned on the epoch)."""
    return math.floor((instant - _EPOCH).total_seconds() / bucket_seconds)


def capacity_for(rate: float | None, bucket_seconds: float, utilization: float) -> int | None:
    """Window starts per bucket for an admission ``rate`` (per second); None if unlimited."""
    if rate is None:
        return None
    return max(1, math.floor(rate * bucket_seconds * utilization))


def fleet_histogram(starts: Iterable[dt.datetime], bucket_seconds: float) -> Counter[int]:
    """Window starts per bucket."""
    return Counter(bucket_of(start, bucket_seconds) for start in starts)


def _width(validity: Validity, policy: WindowPolicy) -> dt.timedelta:
    seconds = max(policy.min_width_seconds, validity.seconds * policy.width_fraction)
    return dt.timedelta(seconds=math.ceil(seconds))


def _range(
    validity: Validity, lo: float, hi: float, width: dt.timedelta
) -> tuple[dt.datetime, dt.datetime]:
    """Earliest and latest window start inside the band ``lo``..``hi``."""
    start, end = validity.at(lo), validity.at(hi) - width
    return start, max(start, end)


def _second(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=0)


def _window(start: dt.datetime, width: dt.timedelta, validity: Validity) -> Window:
    start = _second(start)
    end = min(start + width, _second(validity.not_after))
    return Window(start, max(end, start + dt.timedelta(seconds=1)))


def nominal_window(validity: Validity, device_id: str, policy: WindowPolicy) -> Window:
    """The device's unpaced window: its hash point in the band."""
    width = _width(validity, policy)
    lo, hi = _range(validity, policy.start_fraction, policy.end_fraction, width)
    return _window(lo + (hi - lo) * stable_fraction(device_id), width, validity)


def _shifts(
    nominal: dt.datetime, lo: dt.datetime, hi: dt.datetime, step: dt.timedelta
) -> Iterator[dt.datetime]:
    """``nominal`` moved by 0, +1, -1, +2, -2, … buckets, kept within ``lo``..``hi``."""
    if nominal < lo or nominal > hi:
        nominal = min(max(nominal, lo), hi)
    yield nominal
    k = 1
    while True:
        later, earlier = nominal + step * k, nominal - step * k
        if later > hi and earlier < lo:
            return
        if later <= hi:
            yield later
        if earlier >= lo:
            yield earlier
        k += 1


def place_window(
    validity: Validity,
    device_id: str,
    now: dt.datetime,
    histogram: Mapping[int, int],
    policy: WindowPolicy,
) -> Window:
    """The window to give the device (see the module docstring). Does not change
    ``histogram``: the caller adds the returned start's bucket."""
    width = _width(validity, policy)
    nominal = nominal_window(validity, device_id, policy).renew_after
    spill_lo, spill_hi = _range(
        validity, policy.spill_start_fraction, policy.spill_end_fraction, width
    )
    if now > spill_hi:
        return _window(now, width, validity)
    if policy.capacity is None:
        return _window(max(nominal, now), width, validity)
    step = dt.timedelta(seconds=policy.bucket_seconds)
    band_lo, band_hi = _range(validity, policy.start_fraction, policy.end_fraction, width)
    for lo, hi in ((band_lo, band_hi), (spill_lo, spill_hi)):
        if now > hi:
            continue
        for start in _shifts(nominal, max(lo, now), hi, step):
            if histogram.get(bucket_of(start, policy.bucket_seconds), 0) < policy.capacity:
                return _window(start, width, validity)
    candidates = _shifts(nominal, max(spill_lo, now), spill_hi, step)
    best = min(candidates, key=lambda s: histogram.get(bucket_of(s, policy.bucket_seconds), 0))
    return _window(best, width, validity)


def rebalance(
    entries: Sequence[tuple[str, Validity, Window]],
    now: dt.datetime,
    policy: WindowPolicy,
) -> list[tuple[str, Window]]:
    """Move windows out of over-full buckets; returns ``(device_id, new window)`` moves.

    ``entries`` are the fleet's upcoming windows. A window that starts within one
    bucket of ``now`` stays put (its device may be renewing). In an over-full bucket the
    windows whose nominal bucket it is stay first, then by stable hash; the rest are
    placed again against the histogram of those that stay.
    """
    if policy.capacity is None:
        return []
    horizon = now + dt.timedelta(seconds=policy.bucket_seconds)
    b = policy.bucket_seconds
    histogram = fleet_histogram((w.renew_after for _, _, w in entries), b)
    by_bucket: dict[int, list[tuple[str, Validity, Window]]] = {}
    for entry in entries:
        if entry[2].renew_after > horizon:
            by_bucket.setdefault(bucket_of(entry[2].renew_after, b), []).append(entry)
    excess: list[tuple[str, Validity, Window]] = []
    for bucket, members in sorted(by_bucket.items()):
        over = histogram[bucket] - policy.capacity
        if over <= 0:
            continue
        members.sort(key=lambda e: _keep_order(e, policy, bucket))
        movable = members[-over:] if over < len(members) else members
        excess.extend(movable)
        histogram[bucket] -= len(movable)
    moves = []
    for device_id, validity, old in sorted(excess, key=lambda e: e[0]):
        new = place_window(validity, device_id, horizon, histogram, policy)
        histogram[bucket_of(new.renew_after, b)] += 1
        if new != old:
            moves.append((device_id, new))
    return moves


def _keep_order(
    entry: tuple[str, Validity, Window], policy: WindowPolicy, bucket: int
) -> tuple[int, float]:
    device_id, validity, _ = entry
    home = bucket_of(nominal_window(validity, device_id, policy).renew_after, policy.bucket_seconds)
    return (0 if home == bucket else 1, stable_fraction(device_id))


def expected_rate_peak(windows: Iterable[Window]) -> float:
    """The highest expected renewals per second of devices renewing uniformly in
    their windows (an exact sweep over window edges)."""
    edges: list[tuple[dt.datetime, float]] = []
    for w in windows:
        density = 1.0 / max((w.renew_before - w.renew_after).total_seconds(), 1e-9)
        edges.append((w.renew_after, density))
        edges.append((w.renew_before, -density))
    edges.sort(key=lambda e: (e[0], e[1]))
    peak = current = 0.0
    for _, delta in edges:
        current += delta
        peak = max(peak, current)
    return peak
