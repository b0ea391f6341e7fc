"""Tables mirroring the registry schema, a fleet loader, and a query runner.

The registry's real schema is written in parallel; these tables have the columns the
query mappings read, with the same names and types (JSON is JSONB on PostgreSQL,
timestamps are aware UTC). ``Store`` loads a fleet given as plain records, builds the
reference documents from the same records, and runs a query through SQL page by page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from certhub.query import (
    CollectionMapping,
    certificates_mapping,
    compile_query,
    devices_mapping,
    format_timestamp,
    parse,
)

JSONType = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Aware UTC in, aware UTC out (naive text on SQLite, timestamptz on PostgreSQL)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


metadata = sa.MetaData()

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("device_id", sa.String(), primary_key=True),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("status_reason", sa.String(), nullable=True),
    sa.Column("connection_state", sa.String(), nullable=False),
    sa.Column("last_activity_at", UTCDateTime(), nullable=True),
    sa.Column("auth_type", sa.String(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

twins = sa.Table(
    "twins",
    metadata,
    sa.Column(
        "device_id",
        sa.String(),
        sa.ForeignKey("devices.device_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("tags", JSONType, nullable=False),
    sa.Column("desired", JSONType, nullable=False),
    sa.Column("reported", JSONType, nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("etag", sa.String(), nullable=False),
)

certificates = sa.Table(
    "certificates",
    metadata,
    sa.Column("serial_hex", sa.String(), primary_key=True),
    sa.Column("device_id", sa.String(), nullable=False),
    sa.Column("policy_name", sa.String(), nullable=False),
    sa.Column("not_before", UTCDateTime(), nullable=False),
    sa.Column("not_after", UTCDateTime(), nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("requested_via", sa.String(), nullable=False),
    sa.Column("sha256", sa.String(), nullable=False),
)

#: Not in the registry yet: exercises a collection keyed by two columns.
modules = sa.Table(
    "modules",
    metadata,
    sa.Column("device_id", sa.String(), primary_key=True),
    sa.Column("module_id", sa.String(), primary_key=True),
    sa.Column("tags", JSONType, nullable=False),
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass
class Device:
    """One device and its twin, as plain data."""

    device_id: str
    status: str = "enabled"
    status_reason: str | None = None
    connection_state: str = "Disconnected"
    last_activity_at: dt.datetime | None = None
    auth_type: str = "certificateAuthority"
    tags: dict[str, Any] = field(default_factory=dict)
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    etag: str = "AAAAAAAAAAE="

    def rows(self) -> tuple[dict[str, Any], dict[str, Any]]:
        device = {
            "device_id": self.device_id,
            "status": self.status,
            "status_reason": self.status_reason,
            "connection_state": self.connection_state,
            "last_activity_at": self.last_activity_at,
            "auth_type": self.auth_type,
            "created_at": T0,
        }
        twin = {
            "device_id": self.device_id,
            "tags": self.tags,
            "desired": self.desired,
            "reported": self.reported,
            "version": self.version,
            "etag": self.etag,
        }
        return device, twin

    def document(self) -> dict[str, Any]:
        """The twin as the reference evaluator sees it (built independently of src)."""
        last = self.last_activity_at
        return {
            "deviceId": self.device_id,
            "status": self.status,
            "statusReason": self.status_reason,
            "connectionState": self.connection_state,
            "lastActivityTime": format_timestamp(last) if last is not None else None,
            "authenticationType": self.auth_type,
            "version": self.version,
            "etag": self.etag,
            "tags": self.tags,
            "properties": {"desired": self.desired, "reported": self.reported},
        }


@dataclass
class Certificate:
    serial: str
    device_id: str
    not_after: dt.datetime
    policy: str = "default"
    state: str = "active"
    requested_via: str = "dps"
    not_before: dt.datetime = T0

    def row(self) -> dict[str, Any]:
        return {
            "serial_hex": self.serial,
            "device_id": self.device_id,
            "policy_name": self.policy,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "state": self.state,
            "requested_via": self.requested_via,
            "sha256": "ab" * 32,
        }

    def document(self) -> dict[str, Any]:
        return {
            "serialNumber": self.serial,
            "deviceId": self.device_id,
            "policy": self.policy,
            "notBefore": format_timestamp(self.not_before),
            "notAfter": format_timestamp(self.not_after),
            "state": self.state,
            "issuedVia": self.requested_via,
            "thumbprint": "ab" * 32,
        }


class Store:
    """A database with the mirrored tables; loads fleets and runs queries through SQL."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        metadata.create_all(self.engine)
        self.dialect = self.engine.dialect.name
        self.mappings: dict[str, CollectionMapping] = {
            "devices": devices_mapping(devices, twins),
            "certificates": certificates_mapping(certificates),
        }

    def load(self, fleet: Sequence[Device], certs: Sequence[Certificate] = ()) -> None:
        with self.engine.begin() as conn:
            for table in (twins, devices, certificates):
                conn.execute(table.delete())
            for device in fleet:
                device_row, twin_row = device.rows()
                conn.execute(devices.insert(), device_row)
                conn.execute(twins.insert(), twin_row)
            if certs:
                conn.execute(certificates.insert(), [c.row() for c in certs])

    def query(self, text: str, page_size: int | None = None) -> list[dict[str, Any]]:
        """All result items, following continuation tokens page by page."""
        query = parse(text)
        mapping = self.mappings[query.collection]
        items: list[dict[str, Any]] = []
        token: str | None = None
        with self.engine.connect() as conn:
            for _ in range(1000):
                compiled = compile_query(query, mapping, self.dialect, page_size, token)
                page = compiled.page(conn.execute(compiled.statement).all())
                items.extend(page.items)
                token = page.continuation
                if token is None:
                    return items
        raise AssertionError("paging did not end")

    def close(self) -> None:
        self.engine.dispose()
