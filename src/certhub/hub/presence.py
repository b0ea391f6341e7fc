"""Devices' connection state (``Connected``/``Disconnected``), written behind.

Why behind: a connect or disconnect would otherwise cost a store transaction (and an
fsync) of its own. Changes are kept by device (the newest wins) and written once a
second in one transaction; a failed write keeps them for the next one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from certhub.registry import Store
from certhub.registry.records import ConnectionState

if TYPE_CHECKING:
    from certhub.hub.frontend import Runner

__all__ = ["PresenceWriter"]

log = logging.getLogger("certhub.hub")


class PresenceWriter:
    """Connection-state changes by device, written to the store once a second."""

    def __init__(self, store: Store, run: Runner, interval: float = 1.0) -> None:
        self._store = store
        self._run = run
        self._interval = interval
        self._changes: dict[str, tuple[ConnectionState, dt.datetime]] = {}
        self._task: asyncio.Task[None] | None = None

    def note(self, device_id: str, state: ConnectionState, at: dt.datetime) -> None:
        """Record the device's new state (written with the next flush)."""
        self._changes[device_id] = (state, at)

    def start(self) -> None:
        """Start the periodic flush on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the periodic flush and write what is left."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Write the pending changes in one transaction (kept for the next flush on error)."""
        if self._changes:
            changes, self._changes = self._changes, {}
            try:
                await self._run(self._write, changes)
            except Exception:  # keep them for the next flush (newer changes win)
                self._changes = {**changes, **self._changes}
                raise

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:
                log.exception("writing connection state failed")

    def _write(self, changes: Mapping[str, tuple[ConnectionState, dt.datetime]]) -> None:
        self._store.set_connection_states(changes)
