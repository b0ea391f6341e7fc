"""When to renew, and how long to wait after a failure: pure functions of their inputs.

Why pure: the schedule is where renewal agents go wrong (renewing in a loop, sleeping
past expiry, a whole fleet renewing in the same second), so it is written as functions
of (certificate times, now, the server's window, randomness) that table tests can pin
down, and the agent only sleeps until the answer.

Times: the certificate and the server's window are on the **server's** clock; ``now``
is the **device's** clock and ``clock_offset`` is server minus device (estimated by
:func:`estimate_offset`). The decision is made in server time and the answer is given
back on the device's clock, so the caller simply sleeps until it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from certhub.rand import Random

__all__ = [
    "RenewalWindow",
    "backoff_delay",
    "estimate_offset",
    "next_renewal",
    "parse_timestamp",
    "parse_window",
    "uniform",
]

_ZERO = dt.timedelta(0)


@dataclass(frozen=True, kw_only=True)
class RenewalWindow:
    """The server's suggestion ``properties.desired.certificateRenewal`` (server time)."""

    renew_after: dt.datetime
    renew_before: dt.datetime


def uniform(rng: Random) -> float:
    """A float in [0, 1) from 53 random bits of ``rng``."""
    return (int.from_bytes(rng.token_bytes(7), "big") >> 3) / float(1 << 53)


def next_renewal(
    cert_not_before: dt.datetime,
    cert_not_after: dt.datetime,
    now: dt.datetime,
    server_window: RenewalWindow | None,
    rng: Random,
    fraction: float = 0.8,
    jitter: float = 0.05,
    clock_offset: dt.timedelta = _ZERO,
) -> dt.datetime:
    """When to renew a certificate valid ``cert_not_before``..``cert_not_after``, on the
    device clock (``now`` is the device clock, ``clock_offset`` = server - device).

    * Already expired ("woke up after expiry") or past the chosen point: ``now``.
    * A usable server window: a uniformly random point inside it (clamped to ``now``).
      A window is ignored when it is empty, starts before the certificate was issued (it
      was placed for an earlier certificate and not yet replaced) or starts after the
      certificate expires.
    * Otherwise ``fraction`` of the validity, moved by a random ±``jitter`` (of the
      validity), kept before expiry.

    The agent passes the certificate's issue time (``notBefore`` + the server's backdate)
    as ``cert_not_before`` so that the fraction is taken of the time it really has.
    """
    server_now = now + clock_offset
    if server_now >= cert_not_after:
        return now
    target = _in_window(cert_not_before, cert_not_after, server_window, rng)
    if target is None:
        target = _by_fraction(cert_not_before, cert_not_after, rng, fraction, jitter)
    return max(target, server_now) - clock_offset


def _usable(window: RenewalWindow | None, start: dt.datetime, end: dt.datetime) -> bool:
    return (
        window is not None
        and window.renew_after < window.renew_before
        and window.renew_after >= start
        and window.renew_after < end
    )


def _in_window(
    start: dt.datetime, end: dt.datetime, window: RenewalWindow | None, rng: Random
) -> dt.datetime | None:
    if window is None or not _usable(window, start, end):
        return None
    low = max(window.renew_after, start)
    high = min(window.renew_before, end)
    return low + (high - low) * uniform(rng)


def _by_fraction(
    start: dt.datetime, end: dt.datetime, rng: Random, fraction: float, jitter: float
) -> dt.datetime:
    share = fraction + jitter * (2.0 * uniform(rng) - 1.0)
    share = min(max(share, 0.0), 0.99)
    return start + (end - start) * share


def backoff_delay(
    attempt: int,
    rng: Random,
    *,
    initial: float,
    cap: float,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    Capped exponential (``initial`` · 2^attempt, at most ``cap``) with "equal jitter":
    a uniform pick in the upper half, so retries spread out but never collapse to zero.
    A server's ``retry_after`` is a floor.
    """
    base = min(cap, initial * (2.0 ** min(attempt, 62)))
    delay = base / 2.0 + (base / 2.0) * uniform(rng)
    return max(delay, retry_after or 0.0)


def estimate_offset(
    server_time: dt.datetime, sent_at: dt.datetime, received_at: dt.datetime
) -> dt.timedelta:
    """Server - device clock, from a server timestamp taken while a request was in flight
    (device clock ``sent_at``..``received_at``): the midpoint is the best guess."""
    return server_time - (sent_at + (received_at - sent_at) / 2)


def parse_window(value: Any) -> RenewalWindow | None:
    """``{"renewAfter": iso, "renewBefore": iso}`` as a :class:`RenewalWindow`; None when
    absent or malformed (the agent then uses its own fraction)."""
    if not isinstance(value, dict):
        return None
    after, before = _iso(value.get("renewAfter")), _iso(value.get("renewBefore"))
    if after is None or before is None:
        return None
    return RenewalWindow(renew_after=after, renew_before=before)


def _iso(text: Any) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    return parse_timestamp(text)


def parse_timestamp(text: str) -> dt.datetime | None:
    """An ISO 8601 timestamp as aware UTC (``Z``, offsets and 7-digit fractions accepted)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    head, dot, rest = value.partition(".")
    if dot:  # Azure writes 100 ns ticks (7 digits); Python takes at most 6
        digits = len(rest) - len(rest.lstrip("0123456789"))
        rest = rest[: min(digits, 6)] + rest[digits:]
        value = f"{head}.{rest}"
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)
