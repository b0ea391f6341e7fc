"""Credential operations: CSRs a device sent over the hub, and their responses.

An operation is ``pending`` until it is finished (``completed``/``failed``),
``replaced`` by a newer request of the same device, or ``expired``. The response is
kept so it can be delivered again after a reconnect (``delivered`` tracks that).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certhub.registry._base import StoreBase, record
from certhub.registry.errors import Conflict, NotFound
from certhub.registry.records import (
    OPERATION_STATES,
    NewOperation,
    OperationRecord,
    OperationState,
    check_aware,
)
from certhub.registry.schema import credential_operations

__all__ = ["OperationMixin"]

_T = credential_operations
_FINAL = ("completed", "failed")


class OperationMixin(StoreBase):
    """Credential operation methods of the store."""

    def create_operation(
        self, operation: NewOperation, conn: Connection | None = None
    ) -> OperationRecord:
        """Store a pending operation; AlreadyExists on a taken (device, rid) or correlation id."""
        values = {
            "device_id": operation.device_id,
            "rid": operation.rid,
            "correlation_id": operation.correlation_id,
            "state": "pending",
            "csr_der": operation.csr_der,
            "delivered": False,
            "expires_at": operation.expires_at,
            "created_at": operation.created_at,
            "updated_at": operation.created_at,
        }
        stmt = sa.insert(_T).values(values).returning(*_T.c)
        with self._write(conn, "operation", f"{operation.device_id}/{operation.rid}") as c:
            return OperationRecord(**c.execute(stmt).one()._mapping)

    def get_operation(
        self, operation_id: int, conn: Connection | None = None
    ) -> OperationRecord | None:
        """The operation with this id, or None."""
        return self._one_operation(_T.c.id == operation_id, conn)

    def get_operation_by_correlation(
        self, correlation_id: str, conn: Connection | None = None
    ) -> OperationRecord | None:
        """The operation with this correlation id, or None."""
        return self._one_operation(_T.c.correlation_id == correlation_id, conn)

    def find_operation(
        self, device_id: str, rid: str, conn: Connection | None = None
    ) -> OperationRecord | None:
        """The device's operation for request id ``rid``, or None."""
        return self._one_operation(sa.and_(_T.c.device_id == device_id, _T.c.rid == rid), conn)

    def list_operations(
        self,
        device_id: str | None = None,
        state: OperationState | None = None,
        limit: int = 100,
        conn: Connection | None = None,
    ) -> list[OperationRecord]:
        """Operations, oldest first."""
        stmt = sa.select(_T).order_by(_T.c.id).limit(limit)
        if device_id is not None:
            stmt = stmt.where(_T.c.device_id == device_id)
        if state is not None:
            stmt = stmt.where(_T.c.state == state)
        with self._read(conn) as c:
            return [OperationRecord(**row._mapping) for row in c.execute(stmt)]

    def finish_operation(
        self,
        operation_id: int,
        state: OperationState,
        now: dt.datetime,
        *,
        certificate_serial: str | None = None,
        response_status: int | None = None,
        response_body: Any = None,
        conn: Connection | None = None,
    ) -> OperationRecord:
        """Complete or fail a pending operation with its response.

        Raises ValueError for a state other than completed/failed, NotFound, or
        Conflict("invalid-transition") when the operation is no longer pending.
        """
        if state not in _FINAL:
            raise ValueError(f"state={state!r}: expected one of {list(_FINAL)}")
        check_aware("now", now)
        values = {
            "state": state,
            "certificate_serial": certificate_serial,
            "response_status": response_status,
            "response_body": response_body,
            "updated_at": now,
        }
        return self._transition(operation_id, ("pending",), values, state, conn)

    def mark_operation_delivered(
        self, operation_id: int, now: dt.datetime, conn: Connection | None = None
    ) -> OperationRecord:
        """Record that the finished operation's response reached the device."""
        check_aware("now", now)
        values = {"delivered": True, "updated_at": now}
        return self._transition(operation_id, _FINAL, values, "delivered", conn)

    def replace_pending_operations(
        self, device_id: str, now: dt.datetime, conn: Connection | None = None
    ) -> int:
        """Mark the device's pending operations replaced; returns how many."""
        where = sa.and_(_T.c.device_id == device_id, _T.c.state == "pending")
        return self._bulk(where, {"state": "replaced", "updated_at": now}, conn)

    def expire_operations(self, now: dt.datetime, conn: Connection | None = None) -> int:
        """Mark pending operations past ``expires_at`` expired; returns how many."""
        where = sa.and_(_T.c.state == "pending", _T.c.expires_at <= now)
        return self._bulk(where, {"state": "expired", "updated_at": now}, conn)

    def purge_operations(
        self, expired_before: dt.datetime, *, limit: int = 1000, conn: Connection | None = None
    ) -> int:
        """Delete up to ``limit`` operations that are over (finished, replaced or
        expired) and whose ``expires_at`` is before ``expired_before``; returns how many.

        Their responses can no longer be delivered nor replayed. Call again while it
        returns ``limit``: each call is one short transaction.
        """
        check_aware("expired_before", expired_before)
        over = [state for state in OPERATION_STATES if state != "pending"]
        doomed = (
            sa.select(_T.c.id)
            .where(_T.c.state.in_(over), _T.c.expires_at < expired_before)
            .limit(limit)
            .scalar_subquery()
        )
        with self._write(conn, "operation", "*") as c:
            return int(c.execute(sa.delete(_T).where(_T.c.id.in_(doomed))).rowcount)

    def _transition(
        self,
        operation_id: int,
        sources: tuple[str, ...],
        values: dict[str, Any],
        target: str,
        conn: Connection | None,
    ) -> OperationRecord:
        where = _T.c.id == operation_id
        stmt = sa.update(_T).where(where, _T.c.state.in_(sources)).values(values)
        key = str(operation_id)
        with self._write(conn, "operation", key) as c:
            row = c.execute(stmt.returning(*_T.c)).first()
            if row is not None:
                return OperationRecord(**row._mapping)
            current = c.execute(sa.select(_T.c.state).where(where)).scalar_one_or_none()
            if current is None:
                raise NotFound("operation", key)
            raise Conflict("operation", key, "invalid-transition", f"{current}->{target}")

    def _bulk(
        self, where: sa.ColumnElement[bool], values: dict[str, Any], conn: Connection | None
    ) -> int:
        check_aware("now", values["updated_at"])
        with self._write(conn, "operation", "*") as c:
            return int(c.execute(sa.update(_T).where(where).values(values)).rowcount)

    def _one_operation(
        self, where: sa.ColumnElement[bool], conn: Connection | None
    ) -> OperationRecord | None:
        with self._read(conn) as c:
            return record(OperationRecord, c.execute(sa.select(_T).where(where)).first())
