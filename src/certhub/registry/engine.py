"""Building the store's SQLAlchemy engine for SQLite or PostgreSQL.

SQLite is tuned on every new DBAPI connection (WAL journal, foreign keys, full
sync, a 5 s busy timeout) and SQLAlchemy, not the ``sqlite3`` driver, emits BEGIN
(the "serializable isolation" recipe of the SQLAlchemy SQLite docs). Reads begin
``DEFERRED``; connections carrying the :data:`WRITE_OPTIONS` execution options
begin ``IMMEDIATE``, taking the write lock up front so two writers queue on the
busy timeout instead of failing with "database is locked" when a reader upgrades.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["SQLITE_PRAGMAS", "WRITE_OPTIONS", "create_store_engine", "normalize_url"]

#: Applied, in this order, to every SQLite connection.
SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=FULL",
)

_BEGIN_OPTION = "certhub_sqlite_begin"
#: Execution options marking a connection as a writer (BEGIN IMMEDIATE on SQLite).
WRITE_OPTIONS: dict[str, Any] = {_BEGIN_OPTION: "IMMEDIATE"}


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; plain ``postgresql://`` (or ``postgres://``) gets the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_store_engine(url: str | URL, *, pool_size: int | None = None) -> Engine:
    """Create a thread-safe pooled engine for ``url`` with the store's settings."""
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, pool_size)
    if backend == "postgresql":
        kwargs: dict[str, Any] = {"pool_size": pool_size} if pool_size else {}
        return sa.create_engine(parsed, connect_args={"application_name": "certhub"}, **kwargs)
    raise ValueError(f"unsupported database {parsed.drivername!r}: use sqlite or postgresql")


def _sqlite_engine(url: URL, pool_size: int | None) -> Engine:
    kwargs: dict[str, Any] = {}
    if pool_size and url.database not in (None, "", ":memory:"):
        kwargs["pool_size"] = pool_size
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 5.0}, **kwargs
    )
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Take BEGIN away from the sqlite3 driver; _on_sqlite_begin emits it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
    if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise ValueError(f"{_BEGIN_OPTION}={mode!r}")
    # Straight to the driver: this runs once per transaction, on the issuance hot path.
    conn.connection.driver_connection.execute(f"BEGIN {mode}")  # type: ignore[union-attr]
