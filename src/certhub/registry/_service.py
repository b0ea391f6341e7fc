"""What the service API reads and writes beyond the basic CRUD of the other parts.

* device statistics in one ``GROUP BY``;
* read-only execution of a statement built elsewhere (the query compiler's);
* the certificate inventory with each certificate's policy name, filtered by device,
  stored state, expiry and lifecycle phase (computed in SQL, so paging stays keyset);
* each device's lifecycle, derived from its status and its newest certificate;
* device revocation: rotate the revocation identifier, revoke the live certificates,
  optionally disable, and audit — one transaction (the triggers of migration 0003 emit
  ``device.revocation`` and ``certificate.revoked`` so the hub closes the session).

Lifecycle of a certificate at ``now``::

    revoked / superseded     its stored state
    expired                  stored "expired", or now >= notAfter
    overdue                  now >= renew_before
    renewal-due              now >= renew_after
    healthy                  otherwise

``renew_after``/``renew_before`` are the renewal window the renewal service assigned to
the certificate (table ``renewal_status``, :mod:`certhub.registry._renewal`) when it has
one, else ``notBefore`` + ``renew_fraction`` / ``overdue_fraction`` of the validity
(:class:`LifecycleRule`, 80 % / 90 %).

A device's lifecycle is ``disabled`` when its status is, ``no-certificate`` when it has
none, else the lifecycle of its newest certificate (by issue time).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.util import ClauseAdapter

from certhub.registry._audit import AuditMixin
from certhub.registry._certificates import CertificateMixin
from certhub.registry._devices import DeviceMixin
from certhub.registry._renewal import renewal_status
from certhub.registry._types import UTCDateTime
from certhub.registry.records import (
    AuditEvent,
    CertificateRecord,
    DeviceRecord,
    check_aware,
)
from certhub.registry.schema import certificates, devices, policies, twins

__all__ = [
    "CERTIFICATE_PHASES",
    "DEVICE_LIFECYCLES",
    "QUERY_INDEXES",
    "CertificateListing",
    "DeviceLifecycle",
    "DeviceStatistics",
    "LifecycleRule",
    "LifecycleSource",
    "ServiceMixin",
    "device_lifecycle_source",
]

CERTIFICATE_PHASES: Final = ("healthy", "renewal-due", "overdue", "expired")
DEVICE_LIFECYCLES: Final = (
    "healthy",
    "renewal-due",
    "overdue",
    "expired",
    "revoked",
    "disabled",
    "no-certificate",
)
_C = certificates
_D = devices
_R = renewal_status
#: The newest certificate's columns the lifecycle and its callers read.
_NEWEST_COLUMNS = ("serial_hex", "device_id", "not_before", "not_after", "state", "created_at")

# Migration 0005 creates the query indexes, 0009 rebuilds the validUntil one on SQLite
# (expressions must match the query compiler's text; the PostgreSQL ones carry
# COLLATE "C"). Alembic reflects PostgreSQL index expressions without their COLLATE
# clause and cannot reflect SQLite expression indexes at all, so these declarations
# mirror what reflection sees: the head-versus-metadata comparison then holds on both
# stores. ``ddl_if`` keeps them out of ``create_all`` on SQLite; the migration, not this
# metadata, is what builds the schema.
QUERY_INDEXES: Final = (
    sa.Index(
        "ix_twins_reported_valid_until",
        sa.text("(reported #>> '{certificate,validUntil}')"),
        _table=twins,
    ).ddl_if(dialect="postgresql"),
    sa.Index("ix_devices_status_c", sa.text("status"), _table=devices).ddl_if(dialect="postgresql"),
    sa.Index("ix_devices_device_id_c", sa.text("device_id"), _table=devices).ddl_if(
        dialect="postgresql"
    ),
    sa.Index("ix_certificates_serial_hex_c", sa.text("serial_hex"), _table=certificates).ddl_if(
        dialect="postgresql"
    ),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class LifecycleRule:
    """When a certificate counts as due for renewal and as overdue (fractions of validity)."""

    renew_fraction: float = 0.8
    overdue_fraction: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.renew_fraction <= self.overdue_fraction < 1:
            raise ValueError("expected 0 < renew_fraction <= overdue_fraction < 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceStatistics:
    """Device counts (``GET /statistics/devices``) and how many are connected."""

    total: int
    enabled: int
    disabled: int
    connected: int


@dataclass(frozen=True, kw_only=True, slots=True)
class CertificateListing:
    """A certificate with its policy's name and lifecycle phase at the time asked."""

    certificate: CertificateRecord
    policy_name: str
    lifecycle: str


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceLifecycle:
    """A device, its lifecycle and the newest certificate that decides it (if any)."""

    device_id: str
    status: str
    status_reason: str | None
    connection_state: str
    lifecycle: str
    serial_hex: str | None
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    certificate_state: str | None


class ServiceMixin(AuditMixin, CertificateMixin, DeviceMixin):
    """Service API methods of the store."""

    def device_statistics(self, conn: Connection | None = None) -> DeviceStatistics:
        """Total, enabled, disabled and connected devices (one scan of ``devices``)."""
        connected = sa.func.sum(sa.case((_D.c.connection_state == "Connected", 1), else_=0))
        stmt = sa.select(_D.c.status, sa.func.count(), connected).group_by(_D.c.status)
        counts = {"enabled": 0, "disabled": 0}
        online = 0
        with self._read(conn) as c:
            for status, count, conn_count in c.execute(stmt):
                counts[status] = int(count)
                online += int(conn_count or 0)
        total = sum(counts.values())
        return DeviceStatistics(
            total=total, enabled=counts["enabled"], disabled=counts["disabled"], connected=online
        )

    def run_select(self, statement: sa.Select[Any], conn: Connection | None = None) -> list[Any]:
        """Run a read-only statement (e.g. a compiled query) and return all its rows."""
        with self._read(conn) as c:
            return list(c.execute(statement).all())

    def list_certificate_inventory(
        self,
        *,
        now: dt.datetime,
        rule: LifecycleRule | None = None,
        device_id: str | None = None,
        serial_hex: str | None = None,
        states: Sequence[str] = (),
        lifecycle: str | None = None,
        expiring_before: dt.datetime | None = None,
        limit: int = 100,
        after_serial: str | None = None,
        conn: Connection | None = None,
    ) -> list[CertificateListing]:
        """Certificates by serial with policy names; filters combine with AND.

        ``states`` are stored states; ``lifecycle`` one of :data:`CERTIFICATE_PHASES`
        (live certificates only, except ``expired``, which also matches stored "expired").
        """
        check_aware("now", now)
        phase = _certificate_phase(self.dialect_name, now, rule or LifecycleRule())
        stmt = (
            sa.select(_C, policies.c.name.label("policy_name"), phase.label("lifecycle"))
            .select_from(
                _C.join(policies, _C.c.policy_id == policies.c.id).outerjoin(
                    _R, _R.c.serial_hex == _C.c.serial_hex
                )
            )
            .order_by(_C.c.serial_hex)
            .limit(limit)
        )
        if device_id is not None:
            stmt = stmt.where(_C.c.device_id == device_id)
        if serial_hex is not None:
            stmt = stmt.where(_C.c.serial_hex == serial_hex)
        if states:
            stmt = stmt.where(_C.c.state.in_(list(states)))
        if lifecycle is not None:
            _check_choice("lifecycle", lifecycle, CERTIFICATE_PHASES)
            stmt = stmt.where(phase == lifecycle)
        if expiring_before is not None:
            stmt = stmt.where(_C.c.not_after < expiring_before)
        if after_serial is not None:
            stmt = stmt.where(_C.c.serial_hex > after_serial)
        with self._read(conn) as c:
            return [_listing(row) for row in c.execute(stmt)]

    def list_device_lifecycles(
        self,
        *,
        now: dt.datetime,
        rule: LifecycleRule | None = None,
        lifecycle: str | None = None,
        device_id: str | None = None,
        limit: int = 100,
        after_device_id: str | None = None,
        conn: Connection | None = None,
    ) -> list[DeviceLifecycle]:
        """Devices by id with their lifecycle (see the module docstring)."""
        check_aware("now", now)
        source, state, cert = device_lifecycle_source(
            self.dialect_name, now, rule or LifecycleRule()
        )
        stmt = (
            sa.select(
                _D.c.device_id,
                _D.c.status,
                _D.c.status_reason,
                _D.c.connection_state,
                state.label("lifecycle"),
                cert.c.serial_hex,
                cert.c.not_before,
                cert.c.not_after,
                cert.c.state.label("certificate_state"),
            )
            .select_from(source)
            .order_by(_D.c.device_id)
            .limit(limit)
        )
        if lifecycle is not None:
            _check_choice("lifecycle", lifecycle, DEVICE_LIFECYCLES)
            stmt = stmt.where(state == lifecycle)
        if device_id is not None:
            stmt = stmt.where(_D.c.device_id == device_id)
        if after_device_id is not None:
            stmt = stmt.where(_D.c.device_id > after_device_id)
        with self._read(conn) as c:
            return [DeviceLifecycle(**row._mapping) for row in c.execute(stmt)]

    def revoke_device(
        self,
        device_id: str,
        new_revocation_id: bytes,
        *,
        now: dt.datetime,
        actor: str,
        reason: str,
        disable: bool = False,
        conn: Connection | None = None,
    ) -> tuple[DeviceRecord, list[str]]:
        """Rotate the revocation id, revoke every live certificate, optionally disable.

        Returns the device and the revoked serials. Raises NotFound. One transaction
        (the caller's with ``conn``), including the audit entry.
        """
        if conn is None:
            with self.transaction() as own:
                return self.revoke_device(
                    device_id,
                    new_revocation_id,
                    now=now,
                    actor=actor,
                    reason=reason,
                    disable=disable,
                    conn=own,
                )
        device = self.rotate_revocation_id(device_id, new_revocation_id, now, conn)
        serials = self.revoke_device_certificates(device_id, now, reason, conn)
        if disable and device.status != "disabled":
            changed = dataclasses.replace(device, status="disabled", status_reason=reason[:128])
            device = self.update_device(changed, None, now=now, conn=conn)
        event = AuditEvent(
            at=now,
            actor=actor,
            action="device.revoke",
            subject_type="device",
            subject_id=device_id,
            reason=reason,
            details={"revokedSerials": serials, "disabled": device.status == "disabled"},
        )
        self.append_audit(event, conn=conn)
        return device, serials

    def update_device_audited(
        self,
        device: DeviceRecord,
        expected_etag: str | None,
        *,
        now: dt.datetime,
        actor: str,
        conn: Connection | None = None,
    ) -> DeviceRecord:
        """:meth:`update_device`, plus an audit entry (``device.enable`` /
        ``device.disable``, reason = status reason) when the status changes."""
        if conn is None:
            with self.transaction() as own:
                return self.update_device_audited(
                    device, expected_etag, now=now, actor=actor, conn=own
                )
        before = self.get_device(device.device_id, conn=conn)
        updated = self.update_device(device, expected_etag, now=now, conn=conn)
        if before is not None and before.status != updated.status:
            action = "device.enable" if updated.status == "enabled" else "device.disable"
            details = {"status": updated.status, "previous": before.status}
            self.append_audit(
                AuditEvent(
                    at=now,
                    actor=actor,
                    action=action,
                    subject_type="device",
                    subject_id=device.device_id,
                    reason=updated.status_reason,
                    details=details,
                ),
                conn=conn,
            )
        return updated

    def delete_device_audited(
        self,
        device_id: str,
        expected_etag: str | None = None,
        *,
        now: dt.datetime,
        actor: str,
        reason: str | None = None,
        conn: Connection | None = None,
    ) -> None:
        """:meth:`delete_device` (identity and twin; certificates and audit stay) with a
        ``device.delete`` audit entry, in one transaction. NotFound/EtagMismatch."""
        if conn is None:
            with self.transaction() as own:
                self.delete_device_audited(
                    device_id, expected_etag, now=now, actor=actor, reason=reason, conn=own
                )
                return
        self.delete_device(device_id, expected_etag, conn=conn)
        event = AuditEvent(
            at=now,
            actor=actor,
            action="device.delete",
            subject_type="device",
            subject_id=device_id,
            reason=reason,
            details={},
        )
        self.append_audit(event, conn=conn)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}: expected one of {list(choices)}")


def _epoch(dialect: str, col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Seconds since 1970 of a timestamp column (SQLite keeps UTC text, PG timestamptz)."""
    if dialect == "sqlite":
        return (sa.func.julianday(col) - 2440587.5) * 86400.0
    return sa.extract("epoch", col)


def _certificate_phase(
    dialect: str, now: dt.datetime, rule: LifecycleRule
) -> sa.ColumnElement[str]:
    nb, na = _epoch(dialect, _C.c.not_before), _epoch(dialect, _C.c.not_after)
    t = now.timestamp()
    at = sa.literal(now, UTCDateTime())
    windowed = _R.c.serial_hex.is_not(None)

    def reached(fraction: float) -> sa.ColumnElement[bool]:
        return nb * (1 - fraction) + na * fraction <= t

    return sa.case(
        (_C.c.state.in_(("revoked", "superseded")), _C.c.state),
        (sa.or_(_C.c.state == "expired", na <= t), sa.literal("expired")),
        (sa.and_(windowed, _R.c.renew_before <= at), sa.literal("overdue")),
        (sa.and_(windowed, _R.c.renew_after <= at), sa.literal("renewal-due")),
        (windowed, sa.literal("healthy")),
        (reached(rule.overdue_fraction), sa.literal("overdue")),
        (reached(rule.renew_fraction), sa.literal("renewal-due")),
        else_=sa.literal("healthy"),
    )


def _device_lifecycle(dialect: str, now: dt.datetime, rule: LifecycleRule) -> sa.ColumnElement[str]:
    return sa.case(
        (_D.c.status == "disabled", sa.literal("disabled")),
        (_C.c.serial_hex.is_(None), sa.literal("no-certificate")),
        (_C.c.state == "superseded", sa.literal("healthy")),
        else_=_certificate_phase(dialect, now, rule),
    )


class LifecycleSource(NamedTuple):
    """What :func:`device_lifecycle_source` returns."""

    source: sa.FromClause
    """``devices`` outer-joined to the newest certificate and its renewal window."""
    lifecycle: sa.ColumnElement[str]
    """The device lifecycle over that join."""
    certificate: sa.FromClause
    """Where the newest certificate's columns are (``serial_hex``, ``not_before``,
    ``not_after``, ``state``, ``created_at``): ``certificates`` itself, or on PostgreSQL a
    ``LATERAL`` subquery of it."""


def device_lifecycle_source(dialect: str, now: dt.datetime, rule: LifecycleRule) -> LifecycleSource:
    """``devices`` joined to each device's newest certificate (by issue time, then serial)
    and its renewal window (``renewal_status``), and the device lifecycle column over
    that join.

    The one definition of a device's lifecycle (module docstring): the admin API's
    listing and the dashboard's fleet aggregates (:mod:`certhub.registry._fleet`) both
    select from it. On PostgreSQL the newest certificate is a ``LATERAL`` subquery, found
    once per device through ``ix_certificates_device_id_created_at`` (a scalar subquery
    in the join condition was evaluated twice per device by the hash join: 276 vs 113 ms
    at 100,000 devices); SQLite has no ``LATERAL`` and keeps the scalar subquery.
    """
    order = ("created_at", "serial_hex")
    if dialect == "postgresql":
        newest = (
            sa.select(*(_C.c[name] for name in _NEWEST_COLUMNS))
            .where(_C.c.device_id == _D.c.device_id)
            .order_by(*(_C.c[name].desc() for name in order))
            .limit(1)
            .lateral("newest_certificate")
        )
        source = _D.outerjoin(newest, sa.true()).outerjoin(
            _R, sa.and_(_R.c.device_id == _D.c.device_id, _R.c.serial_hex == newest.c.serial_hex)
        )
        state = ClauseAdapter(newest).traverse(_device_lifecycle(dialect, now, rule))
        return LifecycleSource(source, state, newest)
    mine = _C.alias("device_certificates")
    newest_serial = (
        sa.select(mine.c.serial_hex)
        .where(mine.c.device_id == _D.c.device_id)
        .order_by(*(mine.c[name].desc() for name in order))
        .limit(1)
        .correlate(_D)
        .scalar_subquery()
    )
    source = _D.outerjoin(_C, _C.c.serial_hex == newest_serial).outerjoin(
        _R, sa.and_(_R.c.device_id == _D.c.device_id, _R.c.serial_hex == _C.c.serial_hex)
    )
    return LifecycleSource(source, _device_lifecycle(dialect, now, rule), _C)


def _listing(row: sa.Row[Any]) -> CertificateListing:
    data = dict(row._mapping)
    policy_name = data.pop("policy_name")
    lifecycle = data.pop("lifecycle")
    return CertificateListing(
        certificate=CertificateRecord(**data), policy_name=policy_name, lifecycle=lifecycle
    )
