"""One worker thread that takes queued requests in batches (the shape of group commit).

Callers on any thread :meth:`~BatchThread.submit` an item and get a
``concurrent.futures.Future``; the event loop awaits :meth:`~BatchThread.run`. The thread
takes whatever is waiting — at least one item, at most ``max_batch`` — and hands the batch
to :meth:`~BatchThread.handle`, which settles every future. A lone request is handled at
once; batches form only when requests overlap, so no caller waits for a batch to fill.
:meth:`~BatchThread.close` finishes what is queued, then stops the thread.

Users: :class:`certhub.issuance_queue.IssuanceQueue` (one issuance transaction per batch)
and :class:`certhub.registry.group_commit.BatchWriter` (one store transaction per batch).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future
from typing import Generic, TypeVar

__all__ = ["BatchThread"]

Item = TypeVar("Item")
Result = TypeVar("Result")
_STOP = object()


class BatchThread(Generic[Item, Result]):
    """A worker thread handling queued items batch by batch; subclasses define
    :meth:`handle`."""

    def __init__(self, *, max_batch: int, name: str) -> None:
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        """The worker thread's name."""
        return self._thread.name

    def submit(self, item: Item) -> Future[Result]:
        """Queue ``item``; the future holds its result or the exception that refused it."""
        if self._closed:
            raise RuntimeError(f"{self._thread.name!r} is closed")
        future: Future[Result] = Future()
        self._queue.put((item, future))
        return future

    async def run(self, item: Item) -> Result:
        """Submit from the event loop and await the result."""
        return await asyncio.wrap_future(self.submit(item))

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    def handle(self, batch: list[tuple[Item, Future[Result]]]) -> None:
        """Handle one batch on the worker thread, settling every future in it."""
        raise NotImplementedError

    def _next_batch(self) -> tuple[list[tuple[Item, Future[Result]]], bool]:
        batch: list[tuple[Item, Future[Result]]] = []
        entry = self._queue.get()
        while True:
            if entry is _STOP:
                return batch, True
            batch.append(entry)  # type: ignore[arg-type]
            if len(batch) >= self._max_batch:
                return batch, False
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._next_batch()
            if batch:
                self.handle(batch)
