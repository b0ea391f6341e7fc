"""The renewal service's periodic work.

* **detection** (every ``detection_interval``): expire operations past
  ``operationExpires`` and delete those over for longer than ``operation_retention``;
  give windows to certificates issued elsewhere (DPS
  re-registration, the CLI) — a cursor over ``certificates.created_at`` kept in the
  ``renewal.sync_cursor`` setting; drop rows of revoked certificates; recompute every
  device's renewal state in one UPDATE; announce new ``overdue``/``expired`` devices to
  the webhook; refresh the gauges.
* **rebalancing** (every ``rebalance_interval``): reload the fleet histogram from the
  store and move windows out of over-full buckets (:func:`~certhub.renewal.window.rebalance`),
  writing the moved windows to the twins.

Store work is blocking and runs through ``run`` (the server's executor).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from certhub.clock import Clock
from certhub.registry import Store
from certhub.registry._renewal import NewRenewalWindow, RenewalStatusRecord
from certhub.registry.records import CertificateRecord
from certhub.renewal import flow, twin
from certhub.renewal.alerts import WebhookNotifier, alert_payload
from certhub.renewal.config import RenewalConfig
from certhub.renewal.metrics import ALERTS, DEVICES
from certhub.renewal.placer import WindowPlacer
from certhub.renewal.window import Window, effective_validity, rebalance

__all__ = ["DetectionReport", "RenewalJobs", "Runner"]

log = logging.getLogger("certhub.renewal")
T = TypeVar("T")
SYNC_CURSOR = "renewal.sync_cursor"
_SYNC_OVERLAP = dt.timedelta(minutes=2)  # commits may land out of created_at order
_SYNC_PAGE = 1000
_PURGE_BATCH = 1000


class Runner(Protocol):
    """Runs a blocking call off the event loop (a bounded executor)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class DetectionReport:
    """What one detection run did."""

    operations_expired: int
    operations_purged: int
    windows_assigned: int
    rows_dropped: int
    states_changed: int
    alerts_sent: int
    alerts_failed: int
    counts: dict[str, int]


class RenewalJobs:
    """Detection, alerts and rebalancing over the store."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        run: Runner,
        config: RenewalConfig,
        placer: WindowPlacer,
        notifier: WebhookNotifier | None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._run = run
        self._config = config
        self._placer = placer
        self._notifier = notifier

    async def detect(self) -> DetectionReport:
        """One detection run (see the module docstring)."""
        now = self._clock.now()
        expired = await self._run(self._store.expire_operations, now)
        purged = await self._run(self.purge_operations, now)
        assigned = await self._run(self.sync_certificates, now)
        dropped = await self._run(self._store.drop_dead_renewal_status)
        changed = await self._run(self._store.refresh_renewal_states, now)
        sent, failed = await self._alert(now)
        counts = await self._run(self._store.count_renewal_states)
        for state, count in counts.items():
            DEVICES.labels(state).set(count)
        return DetectionReport(
            operations_expired=expired,
            operations_purged=purged,
            windows_assigned=assigned,
            rows_dropped=dropped,
            states_changed=changed,
            alerts_sent=sent,
            alerts_failed=failed,
            counts=counts,
        )

    def purge_operations(self, now: dt.datetime) -> int:
        """Delete operations over for longer than ``operation_retention`` (blocking; in
        short transactions of ``_PURGE_BATCH`` rows, so other writers get the lock)."""
        before = now - self._config.operation_retention
        purged = 0
        while True:
            count = self._store.purge_operations(before, limit=_PURGE_BATCH)
            purged += count
            if count < _PURGE_BATCH:
                return purged

    # -- certificates issued elsewhere -------------------------------------------------------

    def sync_certificates(self, now: dt.datetime) -> int:
        """Give windows to live certificates created since the cursor (blocking).

        The cursor is the newest ``created_at`` seen; each run starts a little before it
        (group commits may land out of ``created_at`` order) — seeing a certificate twice
        is harmless.
        """
        newest = self._cursor()
        since, after = newest - _SYNC_OVERLAP, ""
        assigned = 0
        while True:
            certs = self._store.live_certificates_since(since, after, _SYNC_PAGE)
            for start in range(0, len(certs), self._config.max_batch):
                assigned += self._assign(certs[start : start + self._config.max_batch], now)
            if certs:
                since, after = certs[-1].created_at, certs[-1].serial_hex
                newest = max(newest, since)
            if len(certs) < _SYNC_PAGE:
                break
        self._store.set_setting(SYNC_CURSOR, json.dumps({"createdAt": newest.isoformat()}))
        return assigned

    def _assign(self, certs: list[CertificateRecord], now: dt.datetime) -> int:
        facts = [flow.CertFacts.of(c) for c in certs]
        with self._store.transaction() as conn:
            pairs = flow.assign_windows(
                self._store,
                facts,
                now=now,
                placer=self._placer,
                origin=self._config.origin,
                conn=conn,
            )
        return len(pairs)

    def _cursor(self) -> dt.datetime:
        raw = self._store.get_setting(SYNC_CURSOR)
        if raw is None:
            return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + _SYNC_OVERLAP
        return dt.datetime.fromisoformat(json.loads(raw)["createdAt"])

    # -- alerts ------------------------------------------------------------------------------

    async def _alert(self, now: dt.datetime) -> tuple[int, int]:
        if self._notifier is None:
            return 0, 0
        rows = await self._run(self._store.renewal_alerts_due, self._config.alert_batch)
        sent = 0
        for row in rows:
            if not await self._notifier.send(alert_payload(row, now)):
                ALERTS.labels("failed").inc()
                return sent, 1  # the webhook is down: try again next run
            await self._run(self._store.mark_renewal_alerted, row.device_id, row.state, now)
            ALERTS.labels("sent").inc()
            sent += 1
        return sent, 0

    # -- rebalancing -------------------------------------------------------------------------

    async def rebalance(self) -> int:
        """Reload the histogram and move windows out of over-full buckets; returns moves."""
        now = self._clock.now()
        rows = await self._run(self._store.renewal_windows_after, now)
        self._placer.load(r.renew_after for r in rows)
        entries = [
            (
                r.device_id,
                effective_validity(r.not_before, r.not_after, r.issued_at),
                Window(r.renew_after, r.renew_before),
            )
            for r in rows
        ]
        moves = rebalance(entries, now, self._placer.policy)
        if moves:
            by_id = {r.device_id: r for r in rows}
            await self._run(self._apply_moves, by_id, moves, now)
        return len(moves)

    def _apply_moves(
        self,
        rows: dict[str, RenewalStatusRecord],
        moves: list[tuple[str, Window]],
        now: dt.datetime,
    ) -> None:
        windows = [_moved(rows[device_id], window) for device_id, window in moves]
        with self._store.transaction() as conn:
            self._store.put_renewal_windows(windows, now, conn=conn)
            twin.write_windows(self._store, moves, now, self._config.origin, conn)
        for device_id, window in moves:
            old = rows[device_id]
            self._placer.move(Window(old.renew_after, old.renew_before), window)


def _moved(row: RenewalStatusRecord, window: Window) -> NewRenewalWindow:
    return NewRenewalWindow(
        device_id=row.device_id,
        serial_hex=row.serial_hex,
        not_before=row.not_before,
        not_after=row.not_after,
        renew_after=window.renew_after,
        renew_before=window.renew_before,
    )
