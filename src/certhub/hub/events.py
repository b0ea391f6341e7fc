"""Following the store's change feed (``events``) from the event loop.

:class:`EventPoller` reads ``events`` with ``id`` above its cursor every ``interval``
seconds (200 ms: changes reach live sessions well within a second) in the executor and
hands each batch to its handlers on the loop. It starts at the newest event: history is
not replayed.

On PostgreSQL ids are taken when a row is inserted but become visible at commit, so a
transaction that commits late can show id 7 after 8 was read. :class:`EventCursor`
(pure) keeps such gaps open for ``gap_timeout`` seconds and re-reads from the oldest
open gap, skipping what it already delivered; on SQLite (one writer at a time) gaps do
not arise and the cursor simply follows the newest id.

On PostgreSQL the poller also LISTENs on the triggers' channel (``certhub_events``) from a
small thread with its own connection and polls at once on a notification, so a change
made on another node reaches this one in a few milliseconds rather than up to one
interval; polling stays the safety net (a lost connection is reopened, nothing is missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from certhub.clock import Clock
from certhub.registry import Store
from certhub.registry._events import EVENTS_CHANNEL, EventRecord

__all__ = ["EventCursor", "EventHandler", "EventPoller"]

log = logging.getLogger("certhub.hub.events")

EventHandler = Callable[[Sequence[EventRecord]], None]


class EventCursor:
    """Which event ids were delivered, tolerating ids that become visible late."""

    def __init__(self, start: int, gap_timeout: float = 10.0) -> None:
        self.newest = start
        self._gaps: dict[int, float] = {}
        self._gap_timeout = gap_timeout

    @property
    def floor(self) -> int:
        """Read events with ids above this."""
        return min(self._gaps) - 1 if self._gaps else self.newest

    def accept(self, ids: Sequence[int], now: float) -> list[int]:
        """Of ``ids`` (ascending, all > :attr:`floor`), those not delivered yet.

        ``now`` is a monotonic time, used to give up on gaps older than the timeout.
        """
        fresh: list[int] = []
        for event_id in ids:
            if event_id in self._gaps:
                del self._gaps[event_id]
                fresh.append(event_id)
            elif event_id > self.newest:
                for missing in range(self.newest + 1, event_id):
                    self._gaps[missing] = now
                self.newest = event_id
                fresh.append(event_id)
        for missing, since in list(self._gaps.items()):
            if now - since > self._gap_timeout:
                del self._gaps[missing]
        return fresh


class EventPoller:
    """Polls the store's events and calls the handlers with each new batch."""

    def __init__(
        self,
        store: Store,
        run: Callable[..., Any],
        clock: Clock,
        *,
        interval: float = 0.2,
        min_gap: float = 0.005,
        batch: int = 500,
        retention: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        self._store = store
        self._run = run
        self._clock = clock
        self.interval = interval
        self.min_gap = min_gap
        """Seconds between two reads at least (NOTIFY bursts are coalesced)."""
        self._batch = batch
        self._retention = retention
        self._handlers: list[EventHandler] = []
        self._cursor: EventCursor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_prune = 0.0
        self._listener: _NotifyListener | None = None

    def subscribe(self, handler: EventHandler) -> None:
        """Call ``handler`` (on the loop) with every batch of new events."""
        self._handlers.append(handler)

    async def start(self) -> None:
        """Start at the newest event and poll in the background."""
        start = await self._run(self._store.last_event_id)
        self._cursor = EventCursor(start)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._loop())
        if self._store.dialect_name == "postgresql":
            url = self._store.engine.url.set(drivername="postgresql")
            dsn = url.render_as_string(hide_password=False)
            self._listener = _NotifyListener(dsn, lambda: loop.call_soon_threadsafe(self.wake))
            self._listener.start()

    async def stop(self) -> None:
        """Stop polling."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        """Poll now rather than at the next tick."""
        self._wake.set()

    async def poll_once(self) -> int:
        """Read and dispatch what is new; returns how many events were delivered."""
        assert self._cursor is not None, "poller not started"
        cursor = self._cursor
        rows: list[EventRecord] = await self._run(
            self._store.events_after, cursor.floor, self._batch
        )
        loop = asyncio.get_running_loop()
        fresh = set(cursor.accept([row.id for row in rows], loop.time()))
        batch = [row for row in rows if row.id in fresh]
        if batch:
            for handler in self._handlers:
                try:
                    handler(batch)
                except Exception:
                    log.exception("event handler failed")
        return len(batch)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                delivered = await self.poll_once()
                if loop.time() - self._last_prune > 60:
                    self._last_prune = loop.time()
                    before = self._clock.now() - self._retention
                    await self._run(self._store.prune_events, before)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("polling events failed")
                delivered = 0
            if delivered >= self._batch:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await asyncio.sleep(self.min_gap)  # a burst of NOTIFYs costs one read, not many


class _NotifyListener:
    """A thread LISTENing on the events channel; calls ``wake`` on each notification."""

    def __init__(self, dsn: str, wake: Callable[[], object]) -> None:
        self._dsn = dsn
        self._wake = wake
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="certhub-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(2.0)

    def _run(self) -> None:
        import psycopg

        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    while not self._stopped.is_set():
                        if any(True for _ in conn.notifies(timeout=0.5, stop_after=1)):
                            self._wake()
            except Exception:
                if self._stopped.is_set():
                    return
                log.warning("LISTEN %s failed; polling only for 5 s", EVENTS_CHANNEL)
                self._stopped.wait(5.0)
