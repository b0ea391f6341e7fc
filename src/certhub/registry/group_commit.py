"""Group commit: one writer thread, one transaction per batch of queued writes.

SQLite lets one writer in at a time, and a writer that finds the lock taken sleeps in
coarse steps (1, 2, 5, 10 … ms) before it retries, so small writes run on several
threads mostly wait, and each pays its own commit (an fsync with ``synchronous=FULL``).
:class:`BatchWriter` sends them through one thread instead: it takes what is waiting
(up to ``max_batch``), runs each item inside its own SAVEPOINT of one transaction — a
refused item rolls back alone — and commits once (one fsync for the batch). A lone
request is written at once; batches form only when requests overlap. On PostgreSQL the
same shape saves a commit round trip per write.

Two things keep the write lock short, because every other writer of the server waits
behind it: the optional ``prepare`` step runs over the whole batch *before* the
transaction (the DPS service signs CSRs there, see :mod:`certhub.dps.presign`), and a
transaction that has run for ``max_seconds`` commits what it has done and the rest of
the batch goes on in the next one. Users: DPS registrations
(:mod:`certhub.dps.writer`) and the hub's reported-property patches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from sqlalchemy.engine import Connection

from certhub.batching import BatchThread
from certhub.registry import Store

__all__ = ["BatchWriter"]

log = logging.getLogger("certhub.registry")
_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class BatchWriter(BatchThread[_Item, _Result]):
    """Runs ``work(conn, item)`` for queued items, batch by batch, on one thread."""

    def __init__(
        self,
        store: Store,
        work: Callable[[Connection, _Item], _Result],
        *,
        max_batch: int = 64,
        max_seconds: float | None = 0.1,
        prepare: Callable[[list[_Item]], list[_Item]] | None = None,
        name: str = "certhub-group-commit",
    ) -> None:
        """``prepare(items)`` (optional) returns the items to hand to ``work``, one for one;
        it runs outside any transaction and must not write. ``max_seconds`` (None: no
        limit) caps how long one transaction runs before it commits."""
        self._store = store
        self._work = work
        self._prepare = prepare
        self._max_seconds = max_seconds
        self.batches = 0
        """Transactions committed (for tests and metrics)."""
        super().__init__(max_batch=max_batch, name=name)

    def handle(self, batch: list[tuple[_Item, Future[_Result]]]) -> None:
        """Prepare the batch, then write it in as few time-capped transactions as needed."""
        batch = self._prepared(batch)
        while batch:
            batch = self._commit_some(batch)

    def _prepared(
        self, batch: list[tuple[_Item, Future[_Result]]]
    ) -> list[tuple[_Item, Future[_Result]]]:
        if self._prepare is None:
            return batch
        try:
            items = self._prepare([item for item, _ in batch])
        except Exception:  # only an optimisation: the work function does it all anyway
            log.exception("preparing a batch failed (%s)", self.name)
            return batch
        return [(item, future) for item, (_, future) in zip(items, batch, strict=True)]

    def _commit_some(
        self, batch: list[tuple[_Item, Future[_Result]]]
    ) -> list[tuple[_Item, Future[_Result]]]:
        """Run items in one transaction until the time cap; returns those left over."""
        done: list[tuple[Future[_Result], _Result | BaseException]] = []
        try:
            with self._store.transaction() as conn:
                started = time.monotonic()  # the write lock is held from here
                for item, future in batch:
                    if done and self._over(started):
                        break
                    done.append((future, self._one(conn, item)))
            self.batches += 1
        except BaseException as exc:  # the commit (or the transaction) failed: all fail
            log.exception("a batch failed (%s)", self.name)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return []
        self._settle(done)
        return batch[len(done) :]

    def _over(self, started: float) -> bool:
        return self._max_seconds is not None and time.monotonic() - started >= self._max_seconds

    @staticmethod
    def _settle(done: list[tuple[Future[_Result], _Result | BaseException]]) -> None:
        for future, result in done:
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _one(self, conn: Connection, item: _Item) -> _Result | BaseException:
        savepoint = conn.begin_nested()
        try:
            result = self._work(conn, item)
        except Exception as exc:  # this item only: roll back to its savepoint
            savepoint.rollback()
            return exc
        savepoint.commit()
        return result
