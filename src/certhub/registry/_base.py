"""Plumbing shared by the store's parts: transactions, etags, error translation.

Write transactions begin ``IMMEDIATE`` on SQLite and wait up to the busy timeout (5 s)
for the write lock. Under load (group-commit writers holding the lock for a batch, a
CPU-starved machine) a small write — a twin patch, a presence flush, an activation —
could wait longer and fail with "database is locked", refusing a device's connection
or dropping a handler. Beginning is therefore retried with jittered backoff until
:attr:`StoreBase.lock_wait_seconds` have passed: it fails before anything ran, so a
retry is always safe.
"""

from __future__ import annotations

import base64
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RootTransaction, Row

from certhub.rand import Random
from certhub.registry.engine import WRITE_OPTIONS
from certhub.registry.errors import AlreadyExists, Conflict, EtagMismatch, NotFound, StoreError

__all__ = [
    "StoreBase",
    "delete_checked",
    "record",
    "translate_dbapi_integrity_error",
    "translate_integrity_error",
    "update_checked",
    "update_one",
]

T = TypeVar("T")

_UNIQUE = {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}
_BACKOFF_CAP = 0.5
log = logging.getLogger("certhub.registry")


def _locked(exc: BaseException) -> bool:
    """SQLite's "database is locked" (SQLITE_BUSY), raised when BEGIN IMMEDIATE gives up."""
    name = getattr(exc, "sqlite_errorname", None)
    return name == "SQLITE_BUSY" or (name is None and "database is locked" in str(exc))


class StoreBase:
    """Connections and transactions; the table-specific parts build on this."""

    engine: Engine
    dialect_name: str
    lock_wait_seconds: float = 30.0
    """How long a write keeps retrying to begin while SQLite's write lock is taken."""

    def __init__(self, engine: Engine, random: Random) -> None:
        self.engine = engine
        self.dialect_name = engine.dialect.name
        self._writer = engine.execution_options(**WRITE_OPTIONS)
        self._random = random

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite); commits unless an error escapes.

        Pass the connection as ``conn=`` to store methods to make them one atomic step.
        After a :class:`~certhub.registry.errors.StoreError` inside it, let the error
        escape (PostgreSQL has aborted the transaction).
        """
        with self._writer.connect() as conn, self._begin(conn):
            yield conn

    def _begin(self, conn: Connection) -> RootTransaction:
        """``conn.begin()``, retried while SQLite answers "database is locked"."""
        started = time.monotonic()
        delay, retries = 0.01, 0
        while True:
            try:
                transaction = conn.begin()
            except sqlite3.OperationalError as exc:
                if not _locked(exc) or time.monotonic() - started >= self.lock_wait_seconds:
                    raise
            else:
                if retries:
                    waited = time.monotonic() - started
                    log.warning("write lock taken after %d retries (%.1f s)", retries, waited)
                return transaction
            retries += 1
            time.sleep(delay * (0.5 + self._random.token_bytes(1)[0] / 510))
            delay = min(delay * 2, _BACKOFF_CAP)

    @contextmanager
    def _write(self, conn: Connection | None, kind: str, key: object) -> Iterator[Connection]:
        try:
            if conn is not None:
                yield conn
            else:
                with self.transaction() as own:
                    yield own
        except sa.exc.IntegrityError as exc:
            raise translate_integrity_error(exc, kind, str(key)) from exc

    @contextmanager
    def _read(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.engine.connect() as own:
                yield own

    def _records_by_device(
        self,
        table: sa.Table,
        cls: type[T],
        device_ids: Iterable[str],
        conn: Connection | None,
        *,
        for_update: bool = False,
    ) -> dict[str, T]:
        """``device_id -> record`` for the rows of ``table`` among ``device_ids`` (one
        query; the row's columns are the record's fields)."""
        ids = sorted(set(device_ids))
        if not ids:
            return {}
        stmt = sa.select(table).where(table.c.device_id.in_(ids))
        if for_update:
            stmt = stmt.with_for_update()
        with self._read(conn) as c:
            result = c.execute(stmt)
            names = tuple(result.keys())
            at = names.index("device_id")
            return {row[at]: cls(**dict(zip(names, row, strict=True))) for row in result}

    def _new_etag(self) -> str:
        return base64.b64encode(self._random.token_bytes(8)).decode("ascii")


def record(cls: type[T], row: Row[Any] | None) -> T | None:
    """Build a record from a row whose column names are the record's fields."""
    return None if row is None else cls(**row._mapping)


def _where(
    table: sa.Table, where: sa.ColumnElement[bool], expected_etag: str | None
) -> sa.ColumnElement[bool]:
    if expected_etag is None or expected_etag == "*":
        return where
    return sa.and_(where, table.c.etag == expected_etag)


def _missing(
    conn: Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    ident: tuple[str, str],
    expected_etag: str | None,
) -> StoreError:
    current = conn.execute(sa.select(table.c.etag).where(where)).scalar_one_or_none()
    if current is None:
        return NotFound(*ident)
    return EtagMismatch(ident[0], ident[1], str(expected_etag), current)


def update_checked(
    conn: Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    values: Mapping[str, Any],
    ident: tuple[str, str],
    expected_etag: str | None = None,
) -> Row[Any]:
    """UPDATE one row (etag-checked unless ``expected_etag`` is None or ``"*"``), RETURNING it.

    Raises NotFound or EtagMismatch (``ident`` is ``(kind, key)``). One round trip
    when it succeeds.
    """
    stmt = sa.update(table).where(_where(table, where, expected_etag)).values(**values)
    row = conn.execute(stmt.returning(*table.c)).first()
    if row is None:
        raise _missing(conn, table, where, ident, expected_etag)
    return row


def delete_checked(
    conn: Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    ident: tuple[str, str],
    expected_etag: str | None = None,
) -> None:
    """DELETE one row (etag-checked like :func:`update_checked`)."""
    result = conn.execute(sa.delete(table).where(_where(table, where, expected_etag)))
    if result.rowcount == 0:
        raise _missing(conn, table, where, ident, expected_etag)


def update_one(
    conn: Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    values: Mapping[str, Any],
    ident: tuple[str, str],
) -> Row[Any]:
    """UPDATE one row of a table without etags, RETURNING it; NotFound if absent."""
    stmt = sa.update(table).where(where).values(**values).returning(*table.c)
    row = conn.execute(stmt).first()
    if row is None:
        raise NotFound(*ident)
    return row


def translate_integrity_error(exc: sa.exc.IntegrityError, kind: str, key: str) -> StoreError:
    """Map SQLAlchemy's integrity error to AlreadyExists or Conflict."""
    return translate_dbapi_integrity_error(exc.orig, kind, key)


def translate_dbapi_integrity_error(orig: BaseException | None, kind: str, key: str) -> StoreError:
    """Map a driver (sqlite3/psycopg) integrity error to AlreadyExists or Conflict."""
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    sqlstate = getattr(orig, "sqlstate", None)
    diag = getattr(orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None) or str(orig).split("\n")[0]
    if sqlite_name in _UNIQUE or sqlstate == "23505":
        return AlreadyExists(kind, key, constraint)
    if sqlite_name == "SQLITE_CONSTRAINT_FOREIGNKEY" or sqlstate == "23503":
        return Conflict(kind, key, "missing-reference", constraint)
    return Conflict(kind, key, "constraint", constraint)
