"""Announcing overdue and expired devices to the operator's webhook (JSON POST).

Each device is announced once per change into ``overdue`` or ``expired`` (the store
remembers ``alerted_state``), not once per certificate per run. A POST that fails
(connection error, timeout, a non-2xx answer) is retried with capped exponential
backoff and "equal jitter"; a delivery that still fails is left unmarked and tried
again by the next detection run. The HTTP transport is injectable (tests pass
``httpx.MockTransport``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from certhub.rand import Random
from certhub.registry._renewal import RenewalStatusRecord
from certhub.renewal.twin import iso_seconds

__all__ = ["WebhookNotifier", "alert_payload"]

log = logging.getLogger("certhub.renewal")


def alert_payload(row: RenewalStatusRecord, now: dt.datetime) -> dict[str, Any]:
    """The JSON body announcing ``row``'s state."""
    return {
        "event": f"certificateRenewal.{row.state}",
        "deviceId": row.device_id,
        "state": row.state,
        "previousAlertState": row.alerted_state,
        "serialNumber": row.serial_hex,
        "notAfter": iso_seconds(row.not_after),
        "renewAfter": iso_seconds(row.renew_after),
        "renewBefore": iso_seconds(row.renew_before),
        "stateChangedAt": iso_seconds(row.state_changed_at),
        "detectedAt": iso_seconds(now),
    }


def _uniform(rng: Random) -> float:
    return (int.from_bytes(rng.token_bytes(7), "big") >> 3) / float(1 << 53)


class WebhookNotifier:
    """POSTs alerts to one URL with retries."""

    def __init__(
        self,
        url: str,
        *,
        rng: Random,
        attempts: int = 5,
        backoff: float = 1.0,
        backoff_cap: float = 30.0,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.url = url
        self._rng = rng
        self._attempts = attempts
        self._backoff = backoff
        self._cap = backoff_cap
        self._sleep = sleep
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def send(self, payload: dict[str, Any]) -> bool:
        """POST ``payload``; True once a 2xx answer came back within the attempts."""
        for attempt in range(self._attempts):
            if attempt:
                await self._sleep(self.delay(attempt - 1))
            try:
                response = await self._client.post(self.url, json=payload)
            except httpx.HTTPError as exc:
                log.warning("alert webhook %s: %s (attempt %d)", self.url, exc, attempt + 1)
                continue
            if response.is_success:
                return True
            log.warning(
                "alert webhook %s answered %d (attempt %d)",
                self.url,
                response.status_code,
                attempt + 1,
            )
        return False

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0-based): capped exponential, jittered."""
        base = min(self._cap, self._backoff * 2.0 ** min(retry, 30))
        return base / 2.0 + base / 2.0 * _uniform(self._rng)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
