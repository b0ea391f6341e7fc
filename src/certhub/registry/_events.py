"""The change feed: an append-only ``events`` table every server process polls.

Why a table: a device disabled with the CLI, or on another server node, must lose its
live connection within a second. Each change appends an event **in the same
transaction** as the change, and every server polls ``id > last seen`` every ~200 ms
(an indexed range scan on both SQLite and PostgreSQL).

Most events are written by database triggers (migration 0003), so every writer — the
store's methods, the CLI, another node, a hand-written UPDATE — emits them without
knowing about this table:

==========================  ==============================================  ===============
kind                        when                                            payload
==========================  ==============================================  ===============
``device.status``           ``devices.status`` changes                      status, previous
``device.revocation``       ``devices.revocation_id`` changes (rotation)    {}
``device.auth``             auth type, keys or thumbprints change           {}
``device.deleted``          a device row is deleted                         {}
``certificate.revoked``     a certificate enters state ``revoked``          serial
``ca.changed``              a CA row is added, deleted or changes state     id, kind, state
``policy.changed``          a policy changes state                          id, state
``enrollment.changed``      an x509 enrollment is added, changed, deleted   id
==========================  ==============================================  ===============

Application code appends its own kinds with :meth:`EventsMixin.append_event` (e.g. the
hub's ``twin.desired``, carrying the patch to the node holding the device's session).
On PostgreSQL the triggers also ``pg_notify('certhub_events', kind)`` so a poller can be
woken early with LISTEN. Events are pruned by age (:meth:`EventsMixin.prune_events`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certhub.registry._base import StoreBase
from certhub.registry._types import JSONType, UTCDateTime
from certhub.registry.records import check_aware
from certhub.registry.schema import BigId, metadata

__all__ = ["EVENTS_CHANNEL", "TRIGGER_KINDS", "EventRecord", "EventsMixin", "events"]

EVENTS_CHANNEL = "certhub_events"
"""PostgreSQL NOTIFY channel the triggers signal on."""

TRIGGER_KINDS = (
    "device.status",
    "device.revocation",
    "device.auth",
    "device.deleted",
    "certificate.revoked",
    "ca.changed",
    "policy.changed",
    "enrollment.changed",
)
"""Event kinds written by the database triggers."""

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("device_id", sa.String(), nullable=True),
    sa.Column("payload", JSONType, nullable=False),
    sa.Index("ix_events_at", "at"),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class EventRecord:
    """One change, as stored; ``id`` grows with insertion order."""

    id: int
    at: dt.datetime
    kind: str
    device_id: str | None
    payload: Mapping[str, Any]


_INSERT = sa.insert(events).returning(events.c.id)


class EventsMixin(StoreBase):
    """Change-feed methods of the store."""

    def append_event(
        self,
        kind: str,
        device_id: str | None,
        payload: Mapping[str, Any],
        now: dt.datetime,
        conn: Connection | None = None,
    ) -> int:
        """Append an event (pass ``conn`` to make it part of a change) and return its id."""
        check_aware("now", now)
        if not kind:
            raise ValueError("kind: must not be empty")
        values = {"at": now, "kind": kind, "device_id": device_id, "payload": dict(payload)}
        with self._write(conn, "event", kind) as c:
            return int(c.execute(_INSERT, values).scalar_one())

    def events_after(
        self, after_id: int, limit: int = 500, conn: Connection | None = None
    ) -> list[EventRecord]:
        """Events with ``id > after_id``, oldest first, at most ``limit``."""
        stmt = sa.select(events).where(events.c.id > after_id).order_by(events.c.id).limit(limit)
        with self._read(conn) as c:
            return [_event(row) for row in c.execute(stmt)]

    def last_event_id(self, conn: Connection | None = None) -> int:
        """The newest event id (0 when there is none)."""
        with self._read(conn) as c:
            return int(c.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0)

    def prune_events(self, before: dt.datetime, conn: Connection | None = None) -> int:
        """Delete events older than ``before``; returns how many."""
        check_aware("before", before)
        with self._write(conn, "event", "*") as c:
            return int(c.execute(sa.delete(events).where(events.c.at < before)).rowcount)


def _event(row: sa.Row[Any]) -> EventRecord:
    data = dict(row._mapping)
    data["payload"] = data["payload"] or {}
    return EventRecord(**data)
