"""The issuance hot path: certificate rows plus their audit rows, straight through the driver.

Every certificate signed is recorded here (thousands per second): ``record_issuances``
writes a batch in the caller's transaction, ``record_issuance`` one certificate (in
its own transaction when given no ``conn``: this path checks a DBAPI connection out
of the engine's pool and commits itself). The SQLAlchemy Connection lifecycle and
statement compilation cost more than SQLite itself there, so the two INSERTs are
built once per dialect and run as ``executemany``: about half the CPU of Core, and on
PostgreSQL one round trip for BEGIN and both INSERTs (psycopg pipeline mode) plus one
for COMMIT. Values are converted exactly as the column types of
:mod:`certhub.registry.schema` would (a test reads them back through Core).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import PoolProxiedConnection

from certhub.registry._base import translate_dbapi_integrity_error
from certhub.registry.records import AuditEvent, NewCertificate
from certhub.registry.schema import audit_log, certificates

__all__ = ["IssuanceWriter", "sqlite_timestamp"]

_CERT_COLUMNS = (
    "serial_hex",
    "device_id",
    "policy_id",
    "issuer_ca_id",
    "not_before",
    "not_after",
    "sha256",
    "sha1",
    "public_key_sha256",
    "key_type",
    "revocation_id",
    "requested_via",
    "cert_der",
    "created_at",
    "state",
    "operation_id",
)
_AUDIT_COLUMNS = ("at", "actor", "action", "subject_type", "subject_id", "reason", "details")
_UTC = dt.UTC


def sqlite_timestamp(value: dt.datetime) -> str:
    """A datetime in SQLAlchemy's SQLite DATETIME storage format, in UTC."""
    v = value.astimezone(_UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


def _failed_table(exc: Exception) -> str:
    """The table a driver integrity error names (psycopg diag, or sqlite3's message)."""
    return str(getattr(getattr(exc, "diag", None), "table_name", None) or exc)


def _same(value: dt.datetime) -> dt.datetime:
    return value


def _insert_sql(table: sa.Table, columns: Sequence[str], marks: Sequence[str]) -> str:
    for name in columns:
        table.c[name]  # a renamed column fails here, at import, not at issuance
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join(marks)})"


class IssuanceWriter:
    """Prepared INSERT pair for one dialect ("sqlite" or "postgresql")."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._sqlite = engine.dialect.name == "sqlite"
        mark = "?" if self._sqlite else "%s"
        json_mark = mark if self._sqlite else "%s::jsonb"
        self._ts: Callable[[dt.datetime], Any] = sqlite_timestamp if self._sqlite else _same
        self.cert_sql = _insert_sql(certificates, _CERT_COLUMNS, [mark] * len(_CERT_COLUMNS))
        self.audit_sql = _insert_sql(audit_log, _AUDIT_COLUMNS, [mark] * 6 + [json_mark])

    def params(self, cert: NewCertificate, audit: AuditEvent) -> tuple[tuple[Any, ...], ...]:
        """Driver parameters for the certificate row and the audit row."""
        ts = self._ts
        cert_row = (
            cert.serial_hex,
            cert.device_id,
            cert.policy_id,
            cert.issuer_ca_id,
            ts(cert.not_before),
            ts(cert.not_after),
            cert.sha256,
            cert.sha1,
            cert.public_key_sha256,
            cert.key_type,
            cert.revocation_id,
            cert.requested_via,
            cert.cert_der,
            ts(cert.created_at),
            cert.state,
            cert.operation_id,
        )
        audit_row = (
            ts(audit.at),
            audit.actor,
            audit.action,
            audit.subject_type,
            audit.subject_id,
            audit.reason,
            json.dumps(dict(audit.details)),
        )
        return cert_row, audit_row

    def write(self, cert: NewCertificate, audit: AuditEvent, conn: Connection | None) -> None:
        """Insert both rows: in ``conn``'s transaction, or in a new committed one."""
        if conn is not None:
            self.write_many([(cert, audit)], conn)
            return
        raw = self._engine.raw_connection()
        try:
            driver = raw.driver_connection
            if self._sqlite:
                self._guarded("BEGIN IMMEDIATE", driver.execute, "BEGIN IMMEDIATE")  # type: ignore[union-attr]
            self._execute(driver, [(cert, audit)])
            self._guarded("COMMIT", raw.commit)
        except BaseException as exc:
            self._abandon(raw, exc)
            raise
        finally:
            raw.close()

    def write_many(
        self, entries: Sequence[tuple[NewCertificate, AuditEvent]], conn: Connection
    ) -> None:
        """Insert the certificate rows and their audit rows in ``conn``'s transaction
        (two ``executemany``); any failure fails them all, as the transaction will."""
        if not entries:
            return
        if not conn.in_transaction():
            conn.begin()
        self._execute(conn.connection.driver_connection, entries)

    def _execute(self, driver: Any, entries: Sequence[tuple[NewCertificate, AuditEvent]]) -> None:
        # PostgreSQL: both INSERTs (and the implicit BEGIN) go out in one round trip.
        pairs = [self.params(cert, audit) for cert, audit in entries]
        key = entries[0][0].serial_hex if len(entries) == 1 else "*"
        batch = nullcontext() if self._sqlite else driver.pipeline()
        cursor = driver.cursor()
        try:
            with batch:
                cursor.executemany(self.cert_sql, [cert_row for cert_row, _ in pairs])
                cursor.executemany(self.audit_sql, [audit_row for _, audit_row in pairs])
        except self._dialect.loaded_dbapi.IntegrityError as exc:
            kind = "audit" if "audit_log" in _failed_table(exc) else "certificate"
            raise translate_dbapi_integrity_error(exc, kind, key) from exc
        except self._dialect.loaded_dbapi.Error as exc:
            raise self._wrap(exc, self.cert_sql, pairs[0][0]) from exc
        finally:
            cursor.close()

    def _guarded(self, sql: str, fn: Callable[..., Any], *args: Any) -> None:
        """Call a driver method, raising its errors as SQLAlchemy would."""
        try:
            fn(*args)
        except self._dialect.loaded_dbapi.Error as exc:
            raise self._wrap(exc, sql, ()) from exc

    def _wrap(self, exc: Exception, sql: str, row: tuple[Any, ...]) -> BaseException:
        """The error SQLAlchemy Core would raise (a ``sqlalchemy.exc.DBAPIError``)."""
        return sa.exc.DBAPIError.instance(
            sql, row, exc, self._dialect.loaded_dbapi.Error, dialect=self._dialect
        )

    def _abandon(self, raw: PoolProxiedConnection, exc: BaseException) -> None:
        """Roll back after a failure; drop the connection if it is broken."""
        orig = getattr(exc, "orig", exc) if isinstance(exc, sa.exc.DBAPIError) else exc
        dbapi_error = self._dialect.loaded_dbapi.Error
        if isinstance(orig, dbapi_error) and self._dialect.is_disconnect(
            orig, raw.dbapi_connection, None
        ):
            raw.invalidate(orig)
            return
        try:
            raw.rollback()
        except dbapi_error:
            raw.invalidate()
