"""The append-only audit log (the database refuses UPDATE and DELETE on it)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certhub.registry._base import StoreBase, record
from certhub.registry.records import AuditEvent, AuditRecord, check_aware
from certhub.registry.schema import audit_log

__all__ = ["AuditMixin", "audit_params"]

_INSERT_AUDIT_ID = sa.insert(audit_log).returning(audit_log.c.id)


def audit_params(event: AuditEvent) -> dict[str, Any]:
    """Insert parameters for one audit event."""
    return {
        "at": event.at,
        "actor": event.actor,
        "action": event.action,
        "subject_type": event.subject_type,
        "subject_id": event.subject_id,
        "reason": event.reason,
        "details": event.details,
    }


class AuditMixin(StoreBase):
    """Audit log methods of the store."""

    def append_audit(self, event: AuditEvent, conn: Connection | None = None) -> int:
        """Append ``event`` and return its id (ids grow with insertion order)."""
        with self._write(conn, "audit", event.subject_id) as c:
            return int(c.execute(_INSERT_AUDIT_ID, audit_params(event)).scalar_one())

    def list_audit(
        self,
        subject_type: str | None = None,
        subject_id: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        conn: Connection | None = None,
        *,
        action: str | None = None,
        since: dt.datetime | None = None,
    ) -> list[AuditRecord]:
        """Newest entries first; page with ``before_id`` = the last id of the previous page.

        ``action`` matches exactly, or as a prefix when it ends in ``*`` (``device.*``);
        ``since`` keeps entries at or after that time.
        """
        stmt = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if action is not None:
            stmt = stmt.where(_action_filter(action))
        if since is not None:
            check_aware("since", since)
            stmt = stmt.where(audit_log.c.at >= since)
        if subject_type is not None:
            stmt = stmt.where(audit_log.c.subject_type == subject_type)
        if subject_id is not None:
            stmt = stmt.where(audit_log.c.subject_id == subject_id)
        if before_id is not None:
            stmt = stmt.where(audit_log.c.id < before_id)
        with self._read(conn) as c:
            return [_audit(row) for row in c.execute(stmt)]


def _action_filter(action: str) -> sa.ColumnElement[bool]:
    if not action.endswith("*"):
        return audit_log.c.action == action
    prefix = action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return audit_log.c.action.like(prefix + "%", escape="\\")


def _audit(row: sa.Row[Any]) -> AuditRecord:
    result = record(AuditRecord, row)
    assert result is not None
    return result
