"""DPS enrollments (groups and individual enrollments), etag-checked."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certhub.registry._base import StoreBase, delete_checked, update_checked
from certhub.registry.records import (
    ATTESTATION_TYPES,
    DEVICE_STATUSES,
    EnrollmentKind,
    EnrollmentRecord,
    NewEnrollment,
    check_aware,
    check_choice,
)
from certhub.registry.schema import enrollments

__all__ = ["EnrollmentMixin"]

_T = enrollments


def _key(namespace_id: int, kind: str, name: str) -> sa.ColumnElement[bool]:
    return sa.and_(_T.c.namespace_id == namespace_id, _T.c.kind == kind, _T.c.name == name)


def _mutable(e: NewEnrollment | EnrollmentRecord) -> dict[str, Any]:
    return {
        "attestation_type": e.attestation_type,
        "primary_key": e.primary_key,
        "secondary_key": e.secondary_key,
        "x509_certificates": list(e.x509_certificates),
        "x509_thumbprints": list(e.x509_thumbprints),
        "credential_policy_name": e.credential_policy_name,
        "initial_twin": dict(e.initial_twin),
        "provisioning_status": e.provisioning_status,
        "reprovision_policy": dict(e.reprovision_policy),
    }


class EnrollmentMixin(StoreBase):
    """Enrollment methods of the store."""

    def create_enrollment(
        self, enrollment: NewEnrollment, now: dt.datetime, conn: Connection | None = None
    ) -> EnrollmentRecord:
        """Create an enrollment; AlreadyExists if (namespace, kind, name) is taken."""
        check_aware("now", now)
        values = {
            "namespace_id": enrollment.namespace_id,
            "kind": enrollment.kind,
            "name": enrollment.name,
            **_mutable(enrollment),
            "etag": self._new_etag(),
            "created_at": now,
            "updated_at": now,
        }
        stmt = sa.insert(_T).values(values).returning(*_T.c)
        with self._write(conn, f"{enrollment.kind} enrollment", enrollment.name) as c:
            return _enrollment(c.execute(stmt).one())

    def get_enrollment(
        self, namespace_id: int, kind: EnrollmentKind, name: str, conn: Connection | None = None
    ) -> EnrollmentRecord | None:
        """The enrollment, or None."""
        return self._one_enrollment(_key(namespace_id, kind, name), conn)

    def get_enrollment_by_id(
        self, enrollment_id: int, conn: Connection | None = None
    ) -> EnrollmentRecord | None:
        """The enrollment with this id, or None."""
        return self._one_enrollment(_T.c.id == enrollment_id, conn)

    def list_enrollments(
        self, namespace_id: int, kind: EnrollmentKind | None = None, conn: Connection | None = None
    ) -> list[EnrollmentRecord]:
        """Enrollments of a namespace ordered by kind then name."""
        stmt = sa.select(_T).where(_T.c.namespace_id == namespace_id).order_by(_T.c.kind, _T.c.name)
        if kind is not None:
            stmt = stmt.where(_T.c.kind == kind)
        with self._read(conn) as c:
            return [_enrollment(row) for row in c.execute(stmt)]

    def update_enrollment(
        self,
        enrollment: EnrollmentRecord,
        expected_etag: str | None,
        *,
        now: dt.datetime,
        conn: Connection | None = None,
    ) -> EnrollmentRecord:
        """Write the record's mutable fields (not kind/name/namespace) and a new etag.

        ``expected_etag`` None or ``"*"`` skips the check. Raises NotFound or EtagMismatch.
        """
        check_choice("attestation_type", enrollment.attestation_type, ATTESTATION_TYPES)
        check_choice("provisioning_status", enrollment.provisioning_status, DEVICE_STATUSES)
        check_aware("now", now)
        values = {**_mutable(enrollment), "etag": self._new_etag(), "updated_at": now}
        ident = (f"{enrollment.kind} enrollment", enrollment.name)
        where = _key(enrollment.namespace_id, enrollment.kind, enrollment.name)
        with self._write(conn, *ident) as c:
            return _enrollment(update_checked(c, _T, where, values, ident, expected_etag))

    def delete_enrollment(
        self,
        namespace_id: int,
        kind: EnrollmentKind,
        name: str,
        expected_etag: str | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Delete an enrollment (its devices keep existing, unlinked). NotFound/EtagMismatch."""
        ident = (f"{kind} enrollment", name)
        with self._write(conn, *ident) as c:
            delete_checked(c, _T, _key(namespace_id, kind, name), ident, expected_etag)

    def _one_enrollment(
        self, where: sa.ColumnElement[bool], conn: Connection | None
    ) -> EnrollmentRecord | None:
        with self._read(conn) as c:
            row = c.execute(sa.select(_T).where(where)).first()
            return None if row is None else _enrollment(row)


def _enrollment(row: sa.Row[Any]) -> EnrollmentRecord:
    data = dict(row._mapping)
    data["x509_certificates"] = tuple(data["x509_certificates"])
    data["x509_thumbprints"] = tuple(data["x509_thumbprints"])
    return EnrollmentRecord(**data)
