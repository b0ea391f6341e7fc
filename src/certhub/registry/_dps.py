"""DPS registration state: registration records and registration operations.

Kept in the store (not in process memory) so several server processes behind one
PostgreSQL share it: a device may register on one node and poll on another.

* ``dps_registrations`` — one row per (namespace, registration id): the last outcome
  (``DeviceRegistrationResult`` without the certificate chain), the device it is
  assigned to, and when it was first assigned (which makes later ones re-provisionings).
* ``dps_operations`` — one row per register request: its final
  ``RegistrationOperationStatus`` body, kept until ``expires_at`` so a retried poll
  gets the same answer (and the same certificate) instead of a second issuance.

The tables are declared here on the registry's shared metadata (migration 0004).

Registration is a hot path (every device, every renewal by re-registration), so the
statements on these two tables go straight through the driver, prepared once per
dialect, as :mod:`certhub.registry._issuance` does: SQLAlchemy Core costs 0.2 to 0.5 ms
of CPU per statement here, the driver tens of microseconds. Values are converted as
the column types would (a test reads them back through Core on both backends).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certhub.registry._base import StoreBase, translate_dbapi_integrity_error
from certhub.registry._issuance import sqlite_timestamp
from certhub.registry._types import JSONType, UTCDateTime
from certhub.registry.records import EnrollmentRecord, check_aware, check_choice
from certhub.registry.schema import BigId, enrollments, metadata

__all__ = [
    "DPS_OPERATION_STATUSES",
    "DPS_REGISTRATION_STATUSES",
    "DpsMixin",
    "DpsOperationRecord",
    "DpsOperationStatus",
    "DpsRegistrationRecord",
    "DpsRegistrationStatus",
    "NewDpsOperation",
    "NewDpsRegistration",
    "dps_operations",
    "dps_registrations",
]

DpsRegistrationStatus = Literal["assigned", "failed", "disabled"]
DpsOperationStatus = Literal["assigning", "assigned", "failed", "disabled"]
DPS_REGISTRATION_STATUSES: tuple[str, ...] = get_args(DpsRegistrationStatus)
DPS_OPERATION_STATUSES: tuple[str, ...] = get_args(DpsOperationStatus)


def _choice(table: str, column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({quoted})", name=f"ck_{table}_{column}")


dps_registrations = sa.Table(
    "dps_registrations",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("namespace_id", sa.Integer(), sa.ForeignKey("namespaces.id"), nullable=False),
    sa.Column("registration_id", sa.String(), nullable=False),
    sa.Column("device_id", sa.String(), nullable=False),
    sa.Column(
        "enrollment_id",
        sa.Integer(),
        sa.ForeignKey("enrollments.id", ondelete="SET NULL"),
        nullable=True,
    ),
    sa.Column("attestation_type", sa.String(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("substatus", sa.String(), nullable=True),
    sa.Column("error_code", sa.Integer(), nullable=True),
    sa.Column("error_message", sa.String(), nullable=True),
    sa.Column("assigned_hub", sa.String(), nullable=True),
    sa.Column("attestation", JSONType, nullable=False),
    sa.Column("etag", sa.String(), nullable=False),
    sa.Column("first_assigned_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint(
        "namespace_id", "registration_id", name="uq_dps_registrations_namespace_id_registration_id"
    ),
    _choice("dps_registrations", "status", DPS_REGISTRATION_STATUSES),
    sa.Index("ix_dps_registrations_device_id", "device_id"),
)

dps_operations = sa.Table(
    "dps_operations",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("operation_id", sa.String(), nullable=False),
    sa.Column("namespace_id", sa.Integer(), sa.ForeignKey("namespaces.id"), nullable=False),
    sa.Column("registration_id", sa.String(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("request_sha256", sa.String(), nullable=True),
    sa.Column("certificate_serial", sa.String(), nullable=True),
    sa.Column("response", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("operation_id", name="uq_dps_operations_operation_id"),
    _choice("dps_operations", "status", DPS_OPERATION_STATUSES),
    sa.Index("ix_dps_operations_registration", "namespace_id", "registration_id", "id"),
    sa.Index("ix_dps_operations_expires_at", "expires_at"),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class NewDpsRegistration:
    """The outcome of one registration, to create or overwrite the record with."""

    namespace_id: int
    registration_id: str
    device_id: str
    enrollment_id: int | None
    attestation_type: str
    status: DpsRegistrationStatus
    substatus: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    assigned_hub: str | None = None
    attestation: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("status", self.status, DPS_REGISTRATION_STATUSES)
        if not self.registration_id:
            raise ValueError("registration_id: must not be empty")


@dataclass(frozen=True, kw_only=True, slots=True)
class DpsRegistrationRecord:
    """A stored registration record (``DeviceRegistrationResult`` minus the chain)."""

    id: int
    namespace_id: int
    registration_id: str
    device_id: str
    enrollment_id: int | None
    attestation_type: str
    status: DpsRegistrationStatus
    substatus: str | None
    error_code: int | None
    error_message: str | None
    assigned_hub: str | None
    attestation: Mapping[str, Any]
    etag: str
    first_assigned_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class NewDpsOperation:
    """A finished register request and its response body."""

    operation_id: str
    namespace_id: int
    registration_id: str
    status: DpsOperationStatus
    response: Mapping[str, Any]
    created_at: dt.datetime
    expires_at: dt.datetime
    request_sha256: str | None = None
    certificate_serial: str | None = None

    def __post_init__(self) -> None:
        check_choice("status", self.status, DPS_OPERATION_STATUSES)
        check_aware("created_at", self.created_at)
        check_aware("expires_at", self.expires_at)


@dataclass(frozen=True, kw_only=True, slots=True)
class DpsOperationRecord:
    """A stored register operation."""

    id: int
    operation_id: str
    namespace_id: int
    registration_id: str
    status: DpsOperationStatus
    request_sha256: str | None
    certificate_serial: str | None
    response: Mapping[str, Any]
    created_at: dt.datetime
    expires_at: dt.datetime


_R = dps_registrations
_O = dps_operations
_UTC = dt.UTC
_REG_COLUMNS = tuple(c.name for c in _R.c)
_OP_COLUMNS = tuple(c.name for c in _O.c)
_REG_JSON = frozenset({"attestation"})
_REG_TIMES = frozenset({"first_assigned_at", "created_at", "updated_at"})
_OP_JSON = frozenset({"response"})
_OP_TIMES = frozenset({"created_at", "expires_at"})
_REG_WRITE = tuple(c for c in _REG_COLUMNS if c != "id")
_REG_UPDATE = tuple(
    c for c in _REG_WRITE if c not in ("namespace_id", "registration_id", "created_at")
)
_OP_WRITE = tuple(c for c in _OP_COLUMNS if c != "id")
_ENR_COLUMNS = tuple(c.name for c in enrollments.c)
_ENR_JSON = frozenset(
    {"x509_certificates", "x509_thumbprints", "initial_twin", "reprovision_policy"}
)
_ENR_TIMES = frozenset({"created_at", "updated_at"})


class _Sql:
    """The DPS statements for one dialect, and value conversion both ways."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        m = "?" if self.sqlite else "%s"
        jm = m if self.sqlite else "%s::jsonb"
        self.ts_in: Callable[[dt.datetime], Any] = sqlite_timestamp if self.sqlite else _same

        def marks(cols: Sequence[str], json_cols: frozenset[str]) -> str:
            return ", ".join(jm if c in json_cols else m for c in cols)

        reg_cols, op_cols = ", ".join(_REG_COLUMNS), ", ".join(_OP_COLUMNS)
        self.reg_get = (
            f"SELECT {reg_cols} FROM dps_registrations"
            f" WHERE namespace_id = {m} AND registration_id = {m}"
        )
        self.reg_insert = (
            f"INSERT INTO dps_registrations ({', '.join(_REG_WRITE)})"
            f" VALUES ({marks(_REG_WRITE, _REG_JSON)}) RETURNING id"
        )
        sets = ", ".join(f"{c} = {jm if c in _REG_JSON else m}" for c in _REG_UPDATE)
        self.reg_update = f"UPDATE dps_registrations SET {sets} WHERE id = {m}"
        self.op_insert = (
            f"INSERT INTO dps_operations ({', '.join(_OP_WRITE)})"
            f" VALUES ({marks(_OP_WRITE, _OP_JSON)})"
        )
        self.op_get = f"SELECT {op_cols} FROM dps_operations WHERE operation_id = {m}"
        self.op_latest = (
            f"SELECT {op_cols} FROM dps_operations"
            f" WHERE namespace_id = {m} AND registration_id = {m} ORDER BY id DESC LIMIT 1"
        )
        self.op_purge = f"DELETE FROM dps_operations WHERE expires_at <= {m}"
        self.enrollment_etag = f"SELECT etag FROM enrollments WHERE id = {m}"
        self.device_probe = f"SELECT namespace_id, status FROM devices WHERE device_id = {m}"
        self.candidates = (
            f"SELECT {', '.join(_ENR_COLUMNS)} FROM enrollments WHERE namespace_id = {m}"
            f" AND ((kind = 'individual' AND name = {m})"
            f" OR (kind = 'group' AND attestation_type = {m})) ORDER BY kind, name"
        )

    def json_in(self, value: Any) -> str:
        return json.dumps(value)

    def row(
        self,
        columns: Sequence[str],
        values: Sequence[Any],
        json_cols: frozenset[str],
        time_cols: frozenset[str],
    ) -> dict[str, Any]:
        out = dict(zip(columns, values, strict=True))
        for name in time_cols:
            out[name] = self._ts_out(out[name])
        for name in json_cols:
            if isinstance(out[name], str):
                out[name] = json.loads(out[name])
        return out

    def _ts_out(self, value: Any) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=_UTC)
        return value.astimezone(_UTC)


def _same(value: dt.datetime) -> dt.datetime:
    return value


class DpsMixin(StoreBase):
    """DPS registration and operation methods of the store."""

    _dps_sql_cache: _Sql | None = None

    @property
    def _dps_sql(self) -> _Sql:
        if self._dps_sql_cache is None:
            self._dps_sql_cache = _Sql(self.dialect_name)
        return self._dps_sql_cache

    @contextmanager
    def _cursor(self, conn: Connection | None, kind: str, key: str) -> Iterator[Any]:
        """A driver cursor: in ``conn``'s transaction, or on a pooled connection
        (autocommit reads on SQLite; the pool rolls PostgreSQL back on return)."""
        dbapi = self.engine.dialect.loaded_dbapi
        if conn is not None:
            if not conn.in_transaction():
                conn.begin()
            driver = conn.connection.driver_connection
            raw = None
        else:
            raw = self.engine.raw_connection()
            driver = raw.driver_connection
        cursor = driver.cursor()  # type: ignore[union-attr]
        try:
            yield cursor
        except dbapi.IntegrityError as exc:
            raise translate_dbapi_integrity_error(exc, kind, key) from exc
        finally:
            cursor.close()
            if raw is not None:
                raw.close()

    # -- registration records ------------------------------------------------------------

    def get_dps_registration(
        self,
        namespace_id: int,
        registration_id: str,
        conn: Connection | None = None,
        for_update: bool = False,
    ) -> DpsRegistrationRecord | None:
        """The registration record, or None (``for_update`` locks it on PostgreSQL)."""
        sql = self._dps_sql
        stmt = sql.reg_get + ("" if sql.sqlite or not for_update else " FOR UPDATE")
        with self._cursor(conn, "dps registration", registration_id) as cur:
            cur.execute(stmt, (namespace_id, registration_id))
            row = cur.fetchone()
        if row is None:
            return None
        return DpsRegistrationRecord(**sql.row(_REG_COLUMNS, row, _REG_JSON, _REG_TIMES))

    def save_dps_registration(
        self,
        registration: NewDpsRegistration,
        now: dt.datetime,
        conn: Connection | None = None,
        *,
        previous: DpsRegistrationRecord | None = None,
        known_new: bool = False,
    ) -> DpsRegistrationRecord:
        """Create or overwrite the registration record with a new etag.

        ``first_assigned_at`` is set by the first ``assigned`` outcome and kept after;
        ``created_at`` stays from the first save. Pass the ``previous`` record read in
        the same transaction (or ``known_new`` when none exists) to save a lookup.
        AlreadyExists if a concurrent first save won the race (retry the transaction).
        """
        check_aware("now", now)
        if conn is None:
            with self.transaction() as own:
                return self.save_dps_registration(
                    registration, now, own, previous=previous, known_new=known_new
                )
        reg = registration
        if previous is None and not known_new:
            previous = self.get_dps_registration(reg.namespace_id, reg.registration_id, conn)
        first = previous.first_assigned_at if previous is not None else None
        if first is None and reg.status == "assigned":
            first = now
        values: dict[str, Any] = {
            "namespace_id": reg.namespace_id,
            "registration_id": reg.registration_id,
            "device_id": reg.device_id,
            "enrollment_id": reg.enrollment_id,
            "attestation_type": reg.attestation_type,
            "status": reg.status,
            "substatus": reg.substatus,
            "error_code": reg.error_code,
            "error_message": reg.error_message,
            "assigned_hub": reg.assigned_hub,
            "attestation": dict(reg.attestation),
            "etag": self._new_etag(),
            "first_assigned_at": first,
            "created_at": previous.created_at if previous is not None else now,
            "updated_at": now,
        }
        sql = self._dps_sql
        params = self._dps_params(values, _REG_JSON, _REG_TIMES)
        key = f"{reg.namespace_id}/{reg.registration_id}"
        with self._cursor(conn, "dps registration", key) as cur:
            if previous is None:
                cur.execute(sql.reg_insert, tuple(params[c] for c in _REG_WRITE))
                row_id = int(cur.fetchone()[0])
            else:
                row_id = previous.id
                update = [params[c] for c in _REG_UPDATE]
                cur.execute(sql.reg_update, (*update, row_id))
        return DpsRegistrationRecord(id=row_id, **values)

    def list_dps_registrations(
        self,
        namespace_id: int,
        limit: int = 100,
        after_registration_id: str | None = None,
        conn: Connection | None = None,
    ) -> list[DpsRegistrationRecord]:
        """Registration records ordered by registration id; page with the last id seen."""
        stmt = (
            sa.select(_R)
            .where(_R.c.namespace_id == namespace_id)
            .order_by(_R.c.registration_id)
            .limit(limit)
        )
        if after_registration_id is not None:
            stmt = stmt.where(_R.c.registration_id > after_registration_id)
        with self._read(conn) as c:
            return [DpsRegistrationRecord(**row._mapping) for row in c.execute(stmt)]

    def delete_dps_registration(
        self, namespace_id: int, registration_id: str, conn: Connection | None = None
    ) -> bool:
        """Delete the registration record (and its operations); True if it existed."""
        key = f"{namespace_id}/{registration_id}"
        with self._write(conn, "dps registration", key) as c:
            c.execute(
                sa.delete(_O).where(
                    _O.c.namespace_id == namespace_id, _O.c.registration_id == registration_id
                )
            )
            result = c.execute(
                sa.delete(_R).where(
                    _R.c.namespace_id == namespace_id, _R.c.registration_id == registration_id
                )
            )
            return bool(result.rowcount)

    def dps_enrollment_candidates(
        self,
        namespace_id: int,
        registration_id: str,
        attestation_type: str,
        conn: Connection | None = None,
    ) -> tuple[EnrollmentRecord | None, list[EnrollmentRecord]]:
        """In one query: the individual enrollment of ``registration_id`` (any
        attestation type) and the groups of ``attestation_type`` (ordered by name)."""
        sql = self._dps_sql
        with self._cursor(conn, "enrollment", registration_id) as cur:
            cur.execute(sql.candidates, (namespace_id, registration_id, attestation_type))
            rows = cur.fetchall()
        individual: EnrollmentRecord | None = None
        groups: list[EnrollmentRecord] = []
        for row in rows:
            data = sql.row(_ENR_COLUMNS, row, _ENR_JSON, _ENR_TIMES)
            data["x509_certificates"] = tuple(data["x509_certificates"])
            data["x509_thumbprints"] = tuple(data["x509_thumbprints"])
            e = EnrollmentRecord(**data)
            if e.kind == "individual":
                individual = e
            else:
                groups.append(e)
        return individual, groups

    def enrollment_etag(self, enrollment_id: int, conn: Connection | None = None) -> str | None:
        """The enrollment's current etag (None if it is gone): is a record still fresh?"""
        with self._cursor(conn, "enrollment", str(enrollment_id)) as cur:
            cur.execute(self._dps_sql.enrollment_etag, (enrollment_id,))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def device_probe(
        self, device_id: str, conn: Connection | None = None
    ) -> tuple[int, str] | None:
        """``(namespace_id, status)`` of a device, or None: the cheap "does it exist"."""
        with self._cursor(conn, "device", device_id) as cur:
            cur.execute(self._dps_sql.device_probe, (device_id,))
            row = cur.fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    # -- operations ------------------------------------------------------------------------

    def create_dps_operation(
        self, operation: NewDpsOperation, conn: Connection | None = None
    ) -> None:
        """Store a register operation; AlreadyExists if the operation id is taken."""
        if conn is None:
            with self.transaction() as own:
                return self.create_dps_operation(operation, own)
        values = {
            "operation_id": operation.operation_id,
            "namespace_id": operation.namespace_id,
            "registration_id": operation.registration_id,
            "status": operation.status,
            "request_sha256": operation.request_sha256,
            "certificate_serial": operation.certificate_serial,
            "response": dict(operation.response),
            "created_at": operation.created_at,
            "expires_at": operation.expires_at,
        }
        params = self._dps_params(values, _OP_JSON, _OP_TIMES)
        with self._cursor(conn, "dps operation", operation.operation_id) as cur:
            cur.execute(self._dps_sql.op_insert, tuple(params[c] for c in _OP_WRITE))
        return None

    def get_dps_operation(
        self, operation_id: str, conn: Connection | None = None
    ) -> DpsOperationRecord | None:
        """The operation with this operation id, or None."""
        return self._one_op(self._dps_sql.op_get, (operation_id,), conn)

    def latest_dps_operation(
        self, namespace_id: int, registration_id: str, conn: Connection | None = None
    ) -> DpsOperationRecord | None:
        """The newest operation of this registration, or None."""
        return self._one_op(self._dps_sql.op_latest, (namespace_id, registration_id), conn)

    def purge_dps_operations(self, now: dt.datetime, conn: Connection | None = None) -> int:
        """Delete operations whose ``expires_at`` has passed; returns how many."""
        check_aware("now", now)
        if conn is None:
            with self.transaction() as own:
                return self.purge_dps_operations(now, own)
        with self._cursor(conn, "dps operation", "*") as cur:
            cur.execute(self._dps_sql.op_purge, (self._dps_sql.ts_in(now),))
            return int(cur.rowcount)

    def _one_op(
        self, stmt: str, params: tuple[Any, ...], conn: Connection | None
    ) -> DpsOperationRecord | None:
        with self._cursor(conn, "dps operation", str(params[0])) as cur:
            cur.execute(stmt, params)
            row = cur.fetchone()
        if row is None:
            return None
        return DpsOperationRecord(**self._dps_sql.row(_OP_COLUMNS, row, _OP_JSON, _OP_TIMES))

    def _dps_params(
        self, values: Mapping[str, Any], json_cols: frozenset[str], time_cols: frozenset[str]
    ) -> dict[str, Any]:
        sql = self._dps_sql
        out = dict(values)
        for name in json_cols:
            out[name] = sql.json_in(out[name])
        for name in time_cols:
            if out[name] is not None:
                check_aware(name, out[name])
                out[name] = sql.ts_in(out[name])
        return out
