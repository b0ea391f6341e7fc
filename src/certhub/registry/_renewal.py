"""Renewal through the hub: the ``renewal_status`` table and batch statements for it.

The renewal service (:mod:`certhub.renewal`) group-commits: one transaction accepts a
batch of CSR requests, the next issues them. So the methods here take and return
*batches* (``IN`` lookups, ``executemany`` writes) and never commit on their own when
given ``conn``.

``renewal_status`` holds one row per device: the window the server assigned to the
device's newest live certificate (``issued`` or ``active``) and the device's renewal
state, which the detection job keeps current::

    scheduled   now < renew_after
    due         renew_after <= now < renew_before
    overdue     renew_before <= now < not_after (no newer certificate exists)
    expired     not_after <= now (the newest certificate has expired)

``alerted_state`` is the last state announced to the operator's webhook, so each device
is announced once per change into ``overdue`` or ``expired``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from certhub.registry._audit import audit_params
from certhub.registry._base import StoreBase
from certhub.registry._events import events
from certhub.registry._types import JSONType, UTCDateTime
from certhub.registry.errors import Conflict, NotFound
from certhub.registry.records import (
    AuditEvent,
    CertificateRecord,
    DeviceRecord,
    NewOperation,
    OperationRecord,
    OperationState,
    TwinRecord,
    check_aware,
)
from certhub.registry.schema import (
    NOT_VIA_HUB,
    audit_log,
    certificates,
    credential_operations,
    devices,
    metadata,
    twins,
)

__all__ = [
    "RENEWAL_STATES",
    "DesiredWrite",
    "NewRenewalWindow",
    "OperationFinish",
    "RenewalMixin",
    "RenewalState",
    "RenewalStatusRecord",
    "renewal_state",
    "renewal_status",
]

RenewalState = Literal["scheduled", "due", "overdue", "expired"]
RENEWAL_STATES: tuple[str, ...] = get_args(RenewalState)
ALERT_STATES = ("overdue", "expired")

renewal_status = sa.Table(
    "renewal_status",
    metadata,
    sa.Column(
        "device_id",
        sa.String(),
        sa.ForeignKey("devices.device_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("serial_hex", sa.String(), nullable=False),
    sa.Column("not_before", UTCDateTime(), nullable=False),
    sa.Column("not_after", UTCDateTime(), nullable=False),
    sa.Column("renew_after", UTCDateTime(), nullable=False),
    sa.Column("renew_before", UTCDateTime(), nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("state_changed_at", UTCDateTime(), nullable=False),
    sa.Column("alerted_state", sa.String(), nullable=True),
    sa.Column("alerted_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint(
        "state IN ('scheduled', 'due', 'overdue', 'expired')", name="ck_renewal_status_state"
    ),
    sa.Index("ix_renewal_status_state", "state"),
    sa.Index("ix_renewal_status_renew_after", "renew_after"),
)

#: Recovery looks certificates up by the operation that issued them (migration 0006).
certificates_operation_index = sa.Index("ix_certificates_operation_id", certificates.c.operation_id)

_R = renewal_status
_C = certificates
_O = credential_operations
_FINISHED = ("completed", "failed")
_LIVE = ("issued", "active")


def renewal_state(
    not_after: dt.datetime, renew_after: dt.datetime, renew_before: dt.datetime, now: dt.datetime
) -> RenewalState:
    """The renewal state of a device whose newest certificate has these times."""
    if not_after <= now:
        return "expired"
    if renew_before <= now:
        return "overdue"
    if renew_after <= now:
        return "due"
    return "scheduled"


@dataclass(frozen=True, kw_only=True, slots=True)
class RenewalStatusRecord:
    """A device's renewal window (for its newest live certificate) and renewal state."""

    device_id: str
    serial_hex: str
    not_before: dt.datetime
    not_after: dt.datetime
    renew_after: dt.datetime
    renew_before: dt.datetime
    state: RenewalState
    state_changed_at: dt.datetime
    alerted_state: str | None
    alerted_at: dt.datetime | None
    updated_at: dt.datetime
    issued_at: dt.datetime | None = None
    """When the certificate was signed (its ``created_at``); only
    :meth:`RenewalMixin.renewal_windows_after` fills it in."""


@dataclass(frozen=True, kw_only=True, slots=True)
class NewRenewalWindow:
    """The window assigned to a device's certificate."""

    device_id: str
    serial_hex: str
    not_before: dt.datetime
    not_after: dt.datetime
    renew_after: dt.datetime
    renew_before: dt.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class OperationFinish:
    """How a pending credential operation ended."""

    operation_id: int
    state: OperationState
    response_status: int
    response_body: Any
    certificate_serial: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class DesiredWrite:
    """A twin's new desired section and whole ``metadata`` document, written in a batch.

    ``version`` is the desired version the section had when it was read (the write
    bumps it by one); ``event`` is the payload of a ``twin.desired`` change-feed event.
    """

    device_id: str
    desired: Mapping[str, Any]
    metadata: Mapping[str, Any]
    version: int
    event: Mapping[str, Any]


def _unindexed(column: Any) -> Any:
    """``column || ''``: the same value, which SQLite cannot look up in an index. For a
    condition that filters rows found through a better index: given ``device_id IN
    (…) AND state IN ('issued', 'active')`` SQLite chose the state index and walked every
    live certificate of the fleet."""
    return column.concat("")


# Built once: constructing these per call cost more than running them (an activation
# runs both, once per device reconnecting with a renewed certificate).
_ACTIVATE = (
    sa.update(_C)
    .where(
        _C.c.serial_hex == sa.bindparam("b_serial"),
        sa.or_(*(_C.c.state == state for state in _LIVE)),
    )
    .values(
        state="active",
        first_used_at=sa.func.coalesce(
            _C.c.first_used_at, sa.bindparam("b_at", type_=UTCDateTime())
        ),
    )
    .returning(*_C.c)
)
_SUPERSEDE_OLDER = (
    sa.update(_C)
    .where(
        _C.c.device_id == sa.bindparam("b_device"),
        sa.or_(*(_C.c.state == state for state in _LIVE)),
        _C.c.serial_hex != sa.bindparam("b_serial"),
        _C.c.created_at <= sa.bindparam("b_at", type_=UTCDateTime()),
    )
    .values(state="superseded")
    .returning(_C.c.serial_hex)
)


class RenewalMixin(StoreBase):
    """Batch methods for renewal through the hub (see the module docstring)."""

    # -- devices and twins -------------------------------------------------------------

    def devices_by_id(
        self, device_ids: Iterable[str], conn: Connection | None = None
    ) -> dict[str, DeviceRecord]:
        """The existing devices among ``device_ids`` (one query)."""
        return self._records_by_device(devices, DeviceRecord, device_ids, conn)

    def device_policies(
        self, device_ids: Iterable[str], conn: Connection | None = None
    ) -> dict[str, str | None]:
        """``device_id -> policy_name`` of the existing devices among ``device_ids``."""
        ids = sorted(set(device_ids))
        if not ids:
            return {}
        stmt = sa.select(devices.c.device_id, devices.c.policy_name).where(
            devices.c.device_id.in_(ids)
        )
        with self._read(conn) as c:
            return {row[0]: row[1] for row in c.execute(stmt)}

    def twins_by_id(
        self, device_ids: Iterable[str], conn: Connection | None = None, for_update: bool = False
    ) -> dict[str, TwinRecord]:
        """The twins of the existing devices among ``device_ids`` (one query)."""
        return self._records_by_device(twins, TwinRecord, device_ids, conn, for_update=for_update)

    def write_desired_sections(
        self, writes: Sequence[DesiredWrite], now: dt.datetime, conn: Connection | None = None
    ) -> None:
        """Write desired sections and append their ``twin.desired`` events (two executemany).

        Read the twins with ``twins_by_id(..., for_update=True)`` in the same transaction
        first: each write bumps the desired version it was computed from by one, and a
        twin whose desired version moved meanwhile is left alone.
        """
        check_aware("now", now)
        if not writes:
            return
        stmt = (
            sa.update(twins)
            .where(
                twins.c.device_id == sa.bindparam("b_device"),
                twins.c.desired_version == sa.bindparam("b_version"),
            )
            .values(
                desired=sa.bindparam("b_desired", type_=JSONType),
                metadata=sa.bindparam("b_metadata", type_=JSONType),
                desired_version=sa.bindparam("b_version", type_=sa.Integer()) + 1,
                version=twins.c.version + 1,
                etag=sa.bindparam("b_etag"),
                updated_at=sa.bindparam("b_at", type_=UTCDateTime()),
            )
        )
        params = [
            {
                "b_device": w.device_id,
                "b_version": w.version,
                "b_desired": dict(w.desired),
                "b_metadata": dict(w.metadata),
                "b_etag": self._new_etag(),
                "b_at": now,
            }
            for w in writes
        ]
        rows = [
            {"at": now, "kind": "twin.desired", "device_id": w.device_id, "payload": dict(w.event)}
            for w in writes
        ]
        with self._write(conn, "twin", "*") as c:
            c.execute(stmt, params)
            c.execute(sa.insert(events), rows)

    # -- certificates --------------------------------------------------------------------

    def activate_certificate(
        self, serial_hex: str, now: dt.datetime, conn: Connection | None = None
    ) -> tuple[CertificateRecord, list[str]]:
        """First use of a certificate: ``issued`` -> ``active``; older live ones superseded.

        Only certificates of the same device issued *before* this one are superseded
        (a newer certificate whose response the device lost stays ``issued``). Returns
        the certificate and the superseded serials, and audits ``certificate.supersede``
        when there are any. NotFound; Conflict if it is not ``issued`` or ``active``.
        """
        check_aware("now", now)
        params = {"b_serial": serial_hex, "b_at": now}
        with self._write(conn, "certificate", serial_hex) as c:
            row = c.execute(_ACTIVATE, params).first()
            if row is None:
                current = c.execute(
                    sa.select(_C.c.state).where(_C.c.serial_hex == serial_hex)
                ).scalar_one_or_none()
                if current is None:
                    raise NotFound("certificate", serial_hex)
                raise Conflict(
                    "certificate", serial_hex, "invalid-transition", f"{current}->active"
                )
            cert = CertificateRecord(**row._mapping)
            older = {"b_device": cert.device_id, "b_serial": serial_hex, "b_at": cert.created_at}
            superseded = sorted(c.execute(_SUPERSEDE_OLDER, older).scalars())
            if superseded:
                event = AuditEvent(
                    at=now,
                    actor="hub",
                    action="certificate.supersede",
                    subject_type="device",
                    subject_id=cert.device_id,
                    reason=f"certificate {serial_hex} first used",
                    details={"activated": serial_hex, "superseded": superseded},
                )
                c.execute(sa.insert(audit_log), audit_params(event))
            return cert, superseded

    def successor_first_used_at(
        self, cert: CertificateRecord, conn: Connection | None = None
    ) -> dt.datetime | None:
        """When a newer certificate of the same device was first used (None: never)."""
        stmt = sa.select(sa.func.min(_C.c.first_used_at)).where(
            _C.c.device_id == cert.device_id,
            _C.c.created_at >= cert.created_at,
            _C.c.serial_hex != cert.serial_hex,
            _C.c.first_used_at.is_not(None),
        )
        with self._read(conn) as c:
            value: dt.datetime | None = c.execute(stmt).scalar()
        if value is None:
            return None
        return UTCDateTime().process_result_value(value, self.engine.dialect)

    def newest_live_certificates(
        self, device_ids: Iterable[str], conn: Connection | None = None
    ) -> dict[str, CertificateRecord]:
        """Each device's newest ``issued``/``active`` certificate (by issue time)."""
        ids = sorted(set(device_ids))
        if not ids:
            return {}
        stmt = (
            sa.select(_C)
            .where(_C.c.device_id.in_(ids), _unindexed(_C.c.state).in_(_LIVE))
            .order_by(_C.c.created_at, _C.c.serial_hex)
        )
        newest: dict[str, CertificateRecord] = {}
        with self._read(conn) as c:
            for row in c.execute(stmt):
                newest[row.device_id] = CertificateRecord(**row._mapping)
        return newest

    def live_certificates_since(
        self,
        since: dt.datetime,
        after_serial: str = "",
        limit: int = 1000,
        conn: Connection | None = None,
    ) -> list[CertificateRecord]:
        """Live certificates issued other than through the hub (which gives its own a
        window as it issues them), created at/after ``since``, by (created_at, serial):
        a cursor over the partial index of migration 0013."""
        check_aware("since", since)
        stmt = (
            sa.select(_C)
            .where(
                sa.text(NOT_VIA_HUB),
                _C.c.created_at >= since,  # the index range; then past the cursor's serial
                sa.or_(_C.c.created_at > since, _C.c.serial_hex > after_serial),
                _unindexed(_C.c.state).in_(_LIVE),  # the partial index, in cursor order
            )
            .order_by(_C.c.created_at, _C.c.serial_hex)
            .limit(limit)
        )
        with self._read(conn) as c:
            return [CertificateRecord(**row._mapping) for row in c.execute(stmt)]

    def certificates_for_operations(
        self, operation_ids: Iterable[int], conn: Connection | None = None
    ) -> dict[int, CertificateRecord]:
        """The certificate recorded for each operation that has one."""
        ids = sorted(set(operation_ids))
        if not ids:
            return {}
        stmt = sa.select(_C).where(_C.c.operation_id.in_(ids))
        with self._read(conn) as c:
            return {
                int(row.operation_id): CertificateRecord(**row._mapping) for row in c.execute(stmt)
            }

    # -- credential operations -------------------------------------------------------------

    def relevant_operations(
        self, requests: Iterable[tuple[str, str]], conn: Connection | None = None
    ) -> list[OperationRecord]:
        """The operations that new ``(device_id, rid)`` requests must look at: those of
        the same device and rid (any state) and the devices' pending ones (expired or
        not: the caller checks the time). Two queries; ordered by id."""
        pairs = sorted(set(requests))
        if not pairs:
            return []
        wanted, device, rid = self._pair_list(pairs)
        # One probe of the (device_id, rid) unique index per pair. With two IN lists
        # SQLite probed every combination (65,536 probes, 13 ms, for 256 requests); a
        # row-value IN scanned the table; a VALUES list is compiled anew each time.
        same = sa.select(_O).select_from(
            wanted.join(_O, sa.and_(_O.c.device_id == device, _O.c.rid == rid))
        )
        ids = sorted({d for d, _ in pairs})
        pending = sa.select(_O).where(_O.c.state == "pending", _O.c.device_id.in_(ids))
        found: dict[int, OperationRecord] = {}
        with self._read(conn) as c:
            for stmt in (same, pending):
                for row in c.execute(stmt):
                    found[row.id] = OperationRecord(**row._mapping)
        return [found[i] for i in sorted(found)]

    def _pair_list(self, pairs: Sequence[tuple[str, str]]) -> tuple[Any, Any, Any]:
        """A table of ``(d, r)`` string pairs from one JSON parameter, and its columns:
        one statement (compiled once) for any number of pairs."""
        text = json.dumps([{"d": d, "r": r} for d, r in pairs])
        doc = sa.bindparam("pairs", text, type_=sa.String())
        if self.dialect_name == "postgresql":
            table = (
                sa.func.jsonb_to_recordset(sa.cast(doc, JSONB))
                .table_valued(sa.column("d", sa.String()), sa.column("r", sa.String()))
                .render_derived(name="wanted", with_types=True)
            )
            return table, table.c.d, table.c.r
        table = sa.func.json_each(doc).table_valued("value").alias("wanted")
        extract = sa.func.json_extract
        return table, extract(table.c.value, "$.d"), extract(table.c.value, "$.r")

    def insert_operations(
        self, operations: Sequence[NewOperation], conn: Connection | None = None
    ) -> list[OperationRecord]:
        """Store pending operations (in order); AlreadyExists on a taken (device, rid)."""
        if not operations:
            return []
        rows: list[dict[str, Any]] = [
            {
                "device_id": o.device_id,
                "rid": o.rid,
                "correlation_id": o.correlation_id,
                "state": "pending",
                "csr_der": o.csr_der,
                "delivered": False,
                "expires_at": o.expires_at,
                "created_at": o.created_at,
                "updated_at": o.created_at,
            }
            for o in operations
        ]
        stmt = sa.insert(_O).returning(_O.c.id, sort_by_parameter_order=True)
        with self._write(conn, "operation", operations[0].device_id) as c:
            ids = [int(row[0]) for row in c.execute(stmt, rows)]
        return [
            OperationRecord(
                id=op_id,
                certificate_serial=None,
                response_status=None,
                response_body=None,
                **row,
            )
            for op_id, row in zip(ids, rows, strict=True)
        ]

    def replace_operation(
        self, operation_id: int, now: dt.datetime, conn: Connection | None = None
    ) -> bool:
        """Mark a pending operation ``replaced``; False if it is no longer pending."""
        check_aware("now", now)
        stmt = (
            sa.update(_O)
            .where(_O.c.id == operation_id, _O.c.state == "pending")
            .values(state="replaced", updated_at=now)
        )
        with self._write(conn, "operation", str(operation_id)) as c:
            return bool(c.execute(stmt).rowcount)

    def lock_pending_operations(
        self, operation_ids: Iterable[int], conn: Connection | None = None
    ) -> list[OperationRecord]:
        """The operations among ``operation_ids`` still pending, locked (PostgreSQL)."""
        ids = sorted(set(operation_ids))
        if not ids:
            return []
        stmt = (
            sa.select(_O)
            .where(_O.c.id.in_(ids), _O.c.state == "pending")
            .order_by(_O.c.id)
            .with_for_update()
        )
        with self._read(conn) as c:
            return [OperationRecord(**row._mapping) for row in c.execute(stmt)]

    def finish_operations(
        self, finishes: Sequence[OperationFinish], now: dt.datetime, conn: Connection | None = None
    ) -> int:
        """Complete or fail pending operations with their responses; returns rows changed."""
        check_aware("now", now)
        if not finishes:
            return 0
        stmt = (
            sa.update(_O)
            .where(_O.c.id == sa.bindparam("b_id"), _O.c.state == "pending")
            .values(
                state=sa.bindparam("b_state"),
                certificate_serial=sa.bindparam("b_serial"),
                response_status=sa.bindparam("b_status"),
                response_body=sa.bindparam("b_body", type_=JSONType),
                updated_at=sa.bindparam("b_at", type_=UTCDateTime()),
            )
        )
        params = [
            {
                "b_id": f.operation_id,
                "b_state": f.state,
                "b_serial": f.certificate_serial,
                "b_status": f.response_status,
                "b_body": f.response_body,
                "b_at": now,
            }
            for f in finishes
        ]
        with self._write(conn, "operation", "*") as c:
            return int(c.execute(stmt, params).rowcount)

    def mark_operations_delivered(
        self, operation_ids: Iterable[int], now: dt.datetime, conn: Connection | None = None
    ) -> int:
        """Record that these finished operations' responses reached their devices."""
        check_aware("now", now)
        ids = sorted(set(operation_ids))
        if not ids:
            return 0
        # One primary-key probe per id (executemany). With ``id IN (...)`` SQLite chose
        # the (state, expires_at) index for the state condition and walked every
        # finished operation ever stored, on every renewal turn.
        stmt = (
            sa.update(_O)
            .where(
                _O.c.id == sa.bindparam("b_id"),
                sa.or_(*(_O.c.state == state for state in _FINISHED)),  # no IN in executemany
                _O.c.delivered.is_(False),
            )
            .values(delivered=True, updated_at=sa.bindparam("b_at", type_=UTCDateTime()))
        )
        with self._write(conn, "operation", "*") as c:
            return int(c.execute(stmt, [{"b_id": i, "b_at": now} for i in ids]).rowcount)

    def undelivered_operations(
        self, device_id: str, now: dt.datetime, conn: Connection | None = None
    ) -> list[OperationRecord]:
        """The device's finished operations whose response is undelivered and unexpired."""
        check_aware("now", now)
        # No condition on ``state`` in SQL: with one, SQLite searched the (state,
        # expires_at) index — every unexpired finished operation of the fleet, 5-25 ms a
        # call at 2,000 devices, on every subscription — instead of this device's rows.
        stmt = (
            sa.select(_O)
            .where(
                _O.c.device_id == device_id,
                _O.c.delivered.is_(False),
                _O.c.expires_at > now,
            )
            .order_by(_O.c.id)
        )
        with self._read(conn) as c:
            rows = [OperationRecord(**row._mapping) for row in c.execute(stmt)]
        return [op for op in rows if op.state in _FINISHED]

    def pending_operations(
        self, created_before: dt.datetime, limit: int = 500, conn: Connection | None = None
    ) -> list[OperationRecord]:
        """Pending operations created before ``created_before``, oldest first."""
        check_aware("created_before", created_before)
        stmt = (
            sa.select(_O)
            .where(_O.c.state == "pending", _O.c.created_at < created_before)
            .order_by(_O.c.id)
            .limit(limit)
        )
        with self._read(conn) as c:
            return [OperationRecord(**row._mapping) for row in c.execute(stmt)]

    # -- renewal status ------------------------------------------------------------------------

    def put_renewal_windows(
        self, windows: Sequence[NewRenewalWindow], now: dt.datetime, conn: Connection | None = None
    ) -> None:
        """Create or move devices' windows; an older certificate never displaces a newer one."""
        check_aware("now", now)
        if not windows:
            return
        rows = [
            {
                "device_id": w.device_id,
                "serial_hex": w.serial_hex,
                "not_before": w.not_before,
                "not_after": w.not_after,
                "renew_after": w.renew_after,
                "renew_before": w.renew_before,
                "state": renewal_state(w.not_after, w.renew_after, w.renew_before, now),
                "state_changed_at": now,
                "alerted_state": None,
                "alerted_at": None,
                "updated_at": now,
            }
            for w in sorted(windows, key=lambda w: w.device_id)  # stable: a device's order kept
        ]  # one lock order for every writer: concurrent upserts (two nodes) cannot deadlock
        with self._write(conn, "renewal_status", windows[0].device_id) as c:
            c.execute(self._upsert_window(), rows)

    def _upsert_window(self) -> Any:
        if self.dialect_name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        ins = insert(_R)
        x = ins.excluded
        same_state = _R.c.state == x.state
        alerting = [x.state == sa.literal_column(f"'{state}'") for state in ALERT_STATES]
        keep_alert = sa.or_(same_state, *alerting)  # no IN: executemany cannot expand it
        return ins.on_conflict_do_update(
            index_elements=[_R.c.device_id],
            set_={
                "serial_hex": x.serial_hex,
                "not_before": x.not_before,
                "not_after": x.not_after,
                "renew_after": x.renew_after,
                "renew_before": x.renew_before,
                "state": x.state,
                "state_changed_at": sa.case(
                    (same_state, _R.c.state_changed_at), else_=x.state_changed_at
                ),
                "alerted_state": sa.case((keep_alert, _R.c.alerted_state), else_=None),
                "updated_at": x.updated_at,
            },
            where=x.not_before >= _R.c.not_before,
        )

    def get_renewal_status(
        self, device_id: str, conn: Connection | None = None
    ) -> RenewalStatusRecord | None:
        """The device's renewal status row, or None."""
        return self.renewal_statuses([device_id], conn).get(device_id)

    def renewal_statuses(
        self, device_ids: Iterable[str], conn: Connection | None = None
    ) -> dict[str, RenewalStatusRecord]:
        """Renewal status rows of these devices (one query)."""
        return self._records_by_device(_R, RenewalStatusRecord, device_ids, conn)

    def renewal_windows_after(
        self, now: dt.datetime, conn: Connection | None = None
    ) -> list[RenewalStatusRecord]:
        """Rows whose window has not closed at ``now`` (``renew_before > now``), each with
        its certificate's ``issued_at``."""
        check_aware("now", now)
        stmt = (
            sa.select(_R, _C.c.created_at.label("issued_at"))
            .select_from(_R.outerjoin(_C, _C.c.serial_hex == _R.c.serial_hex))
            .where(_R.c.renew_before > now)
            .order_by(_R.c.device_id)
        )
        with self._read(conn) as c:
            return [RenewalStatusRecord(**row._mapping) for row in c.execute(stmt)]

    def refresh_renewal_states(self, now: dt.datetime, conn: Connection | None = None) -> int:
        """Recompute every row's state at ``now`` (one UPDATE); returns rows changed."""
        check_aware("now", now)
        at = sa.literal(now, UTCDateTime())
        state = sa.case(
            (_R.c.not_after <= at, sa.literal("expired")),
            (_R.c.renew_before <= at, sa.literal("overdue")),
            (_R.c.renew_after <= at, sa.literal("due")),
            else_=sa.literal("scheduled"),
        )
        stmt = (
            sa.update(_R)
            .where(_R.c.state != state)
            .values(
                state=state,
                state_changed_at=at,
                alerted_state=sa.case(
                    (state.in_(ALERT_STATES), _R.c.alerted_state), else_=sa.null()
                ),
                updated_at=at,
            )
        )
        with self._write(conn, "renewal_status", "*") as c:
            return int(c.execute(stmt).rowcount)

    def drop_dead_renewal_status(self, conn: Connection | None = None) -> int:
        """Delete rows whose certificate was revoked (the device must re-provision)."""
        revoked = sa.select(_C.c.serial_hex).where(
            _C.c.serial_hex == _R.c.serial_hex, _C.c.state == "revoked"
        )
        with self._write(conn, "renewal_status", "*") as c:
            return int(c.execute(sa.delete(_R).where(revoked.exists())).rowcount)

    def renewal_alerts_due(
        self, limit: int = 500, conn: Connection | None = None
    ) -> list[RenewalStatusRecord]:
        """Enabled devices in ``overdue``/``expired`` not yet announced in that state."""
        stmt = (
            sa.select(_R)
            .join(devices, devices.c.device_id == _R.c.device_id)
            .where(
                devices.c.status == "enabled",
                _R.c.state.in_(ALERT_STATES),
                sa.or_(_R.c.alerted_state.is_(None), _R.c.alerted_state != _R.c.state),
            )
            .order_by(_R.c.state_changed_at, _R.c.device_id)
            .limit(limit)
        )
        with self._read(conn) as c:
            return [RenewalStatusRecord(**row._mapping) for row in c.execute(stmt)]

    def mark_renewal_alerted(
        self, device_id: str, state: str, now: dt.datetime, conn: Connection | None = None
    ) -> bool:
        """Record that the device was announced in ``state`` (if it is still in it)."""
        check_aware("now", now)
        stmt = (
            sa.update(_R)
            .where(_R.c.device_id == device_id, _R.c.state == state)
            .values(alerted_state=state, alerted_at=now)
        )
        with self._write(conn, "renewal_status", device_id) as c:
            return bool(c.execute(stmt).rowcount)

    def count_renewal_states(self, conn: Connection | None = None) -> dict[str, int]:
        """Devices per renewal state (every state present, zero when none)."""
        stmt = sa.select(_R.c.state, sa.func.count()).group_by(_R.c.state)
        counts = dict.fromkeys(RENEWAL_STATES, 0)
        with self._read(conn) as c:
            for state, count in c.execute(stmt):
                counts[state] = int(count)
        return counts
