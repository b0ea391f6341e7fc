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
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certhub.registry._base import StoreBase, record
from certhub.registry._types import JSONType, UTCDateTime
from certhub.registry.records import check_aware, check_choice
from certhub.registry.schema import BigId, metadata

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


class DpsMixin(StoreBase):
    """DPS registration and operation methods of the store."""

    def get_dps_registration(
        self,
        namespace_id: int,
        registration_id: str,
        conn: Connection | None = None,
        for_update: bool = False,
    ) -> DpsRegistrationRecord | None:
        """The registration record, or None (``for_update`` locks it on PostgreSQL)."""
        stmt = sa.select(_R).where(
            _R.c.namespace_id == namespace_id, _R.c.registration_id == registration_id
        )
        if for_update:
            stmt = stmt.with_for_update()
        with self._read(conn) as c:
            return record(DpsRegistrationRecord, c.execute(stmt).first())

    def save_dps_registration(
        self,
        registration: NewDpsRegistration,
        now: dt.datetime,
        conn: Connection | None = None,
    ) -> DpsRegistrationRecord:
        """Create or overwrite the registration record with a new etag.

        ``first_assigned_at`` is set by the first ``assigned`` outcome and kept after.
        ``created_at`` stays from the first save. AlreadyExists if a concurrent first
        save won the race (retry the whole transaction).
        """
        check_aware("now", now)
        values: dict[str, Any] = {
            "device_id": registration.device_id,
            "enrollment_id": registration.enrollment_id,
            "attestation_type": registration.attestation_type,
            "status": registration.status,
            "substatus": registration.substatus,
            "error_code": registration.error_code,
            "error_message": registration.error_message,
            "assigned_hub": registration.assigned_hub,
            "attestation": dict(registration.attestation),
            "etag": self._new_etag(),
            "updated_at": now,
        }
        assigned = registration.status == "assigned"
        key = f"{registration.namespace_id}/{registration.registration_id}"
        with self._write(conn, "dps registration", key) as c:
            where = sa.and_(
                _R.c.namespace_id == registration.namespace_id,
                _R.c.registration_id == registration.registration_id,
            )
            first = sa.func.coalesce(_R.c.first_assigned_at, sa.literal(now, UTCDateTime()))
            update = {**values, "first_assigned_at": first} if assigned else values
            stmt = sa.update(_R).where(where).values(update).returning(*_R.c)
            row = c.execute(stmt).first()
            if row is None:
                insert = {
                    **values,
                    "namespace_id": registration.namespace_id,
                    "registration_id": registration.registration_id,
                    "first_assigned_at": now if assigned else None,
                    "created_at": now,
                }
                row = c.execute(sa.insert(_R).values(insert).returning(*_R.c)).one()
            return DpsRegistrationRecord(**row._mapping)

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

    def create_dps_operation(
        self, operation: NewDpsOperation, conn: Connection | None = None
    ) -> DpsOperationRecord:
        """Store a register operation; AlreadyExists if the operation id is taken."""
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
        with self._write(conn, "dps operation", operation.operation_id) as c:
            row = c.execute(sa.insert(_O).values(values).returning(*_O.c)).one()
            return DpsOperationRecord(**row._mapping)

    def get_dps_operation(
        self, operation_id: str, conn: Connection | None = None
    ) -> DpsOperationRecord | None:
        """The operation with this operation id, or None."""
        with self._read(conn) as c:
            row = c.execute(sa.select(_O).where(_O.c.operation_id == operation_id)).first()
            return record(DpsOperationRecord, row)

    def latest_dps_operation(
        self, namespace_id: int, registration_id: str, conn: Connection | None = None
    ) -> DpsOperationRecord | None:
        """The newest operation of this registration, or None."""
        stmt = (
            sa.select(_O)
            .where(_O.c.namespace_id == namespace_id, _O.c.registration_id == registration_id)
            .order_by(_O.c.id.desc())
            .limit(1)
        )
        with self._read(conn) as c:
            return record(DpsOperationRecord, c.execute(stmt).first())

    def purge_dps_operations(self, now: dt.datetime, conn: Connection | None = None) -> int:
        """Delete operations whose ``expires_at`` has passed; returns how many."""
        check_aware("now", now)
        with self._write(conn, "dps operation", "*") as c:
            return int(c.execute(sa.delete(_O).where(_O.c.expires_at <= now)).rowcount)
