"""Device identities and their twins.

A device and its twin are created in one transaction and the twin goes with the
device (ON DELETE CASCADE); certificates stay. Connection state and activity are
bookkeeping and do not change the device etag; everything else does.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certhub.registry._base import StoreBase, delete_checked, update_checked
from certhub.registry.errors import EtagMismatch, NotFound
from certhub.registry.records import (
    AUTH_TYPES,
    CONNECTION_STATES,
    DEVICE_STATUSES,
    ConnectionState,
    DeviceRecord,
    DeviceStatus,
    NewDevice,
    TwinRecord,
    check_aware,
    check_choice,
)
from certhub.registry.schema import devices, twins

__all__ = ["DeviceMixin"]

_D = devices
_AT = _D.c.connection_state_updated_at.type
_SET_STATE = (
    sa.update(_D)
    .where(_D.c.device_id == sa.bindparam("b_device"))
    .values(
        connection_state=sa.bindparam("b_state"),
        connection_state_updated_at=sa.bindparam("b_at", type_=_AT),
    )
)
_SET_CONNECTED = _SET_STATE.values(last_activity_at=sa.bindparam("b_at", type_=_AT))


def _mutable(d: NewDevice | DeviceRecord) -> dict[str, Any]:
    return {
        "status": d.status,
        "status_reason": d.status_reason,
        "auth_type": d.auth_type,
        "primary_key": d.primary_key,
        "secondary_key": d.secondary_key,
        "primary_thumbprint": d.primary_thumbprint,
        "secondary_thumbprint": d.secondary_thumbprint,
        "policy_name": d.policy_name,
        "enrollment_id": d.enrollment_id,
    }


class DeviceMixin(StoreBase):
    """Device and twin methods of the store."""

    def create_device(
        self, device: NewDevice, now: dt.datetime, conn: Connection | None = None
    ) -> DeviceRecord:
        """Create a device and its twin (version 1); AlreadyExists if the id is taken."""
        check_aware("now", now)
        values = {
            "device_id": device.device_id,
            "namespace_id": device.namespace_id,
            **_mutable(device),
            "revocation_id": device.revocation_id,
            "generation_id": self._new_generation_id(),
            "etag": self._new_etag(),
            "connection_state": "Disconnected",
            "status_updated_at": now,
            "created_at": now,
            "updated_at": now,
        }
        twin = {
            "device_id": device.device_id,
            "tags": dict(device.initial_tags),
            "desired": dict(device.initial_desired),
            "reported": {},
            "desired_version": 1,
            "reported_version": 1,
            "version": 1,
            "etag": self._new_etag(),
            "metadata": {"desired": {}, "reported": {}},
            "updated_at": now,
        }
        with self._write(conn, "device", device.device_id) as c:
            row = c.execute(sa.insert(_D).values(values).returning(*_D.c)).one()
            c.execute(sa.insert(twins).values(twin))
            return DeviceRecord(**row._mapping)

    def get_device(self, device_id: str, conn: Connection | None = None) -> DeviceRecord | None:
        """The device, or None."""
        with self._read(conn) as c:
            row = c.execute(sa.select(_D).where(_D.c.device_id == device_id)).first()
            return None if row is None else DeviceRecord(**row._mapping)

    def revocation_ids(
        self, device_ids: Iterable[str], conn: Connection | None = None
    ) -> dict[str, bytes]:
        """The current revocation identifier of each existing device (one query)."""
        ids = set(device_ids)
        if not ids:
            return {}
        stmt = sa.select(devices.c.device_id, devices.c.revocation_id).where(
            devices.c.device_id.in_(ids)
        )
        with self._read(conn) as c:
            return {row[0]: bytes(row[1]) for row in c.execute(stmt)}

    def list_devices(
        self,
        limit: int = 100,
        after_device_id: str | None = None,
        namespace_id: int | None = None,
        conn: Connection | None = None,
    ) -> list[DeviceRecord]:
        """Devices ordered by id; page with ``after_device_id`` = the last id seen."""
        stmt = sa.select(_D).order_by(_D.c.device_id).limit(limit)
        if after_device_id is not None:
            stmt = stmt.where(_D.c.device_id > after_device_id)
        if namespace_id is not None:
            stmt = stmt.where(_D.c.namespace_id == namespace_id)
        with self._read(conn) as c:
            return [DeviceRecord(**row._mapping) for row in c.execute(stmt)]

    def count_devices(
        self, status: DeviceStatus | None = None, conn: Connection | None = None
    ) -> int:
        """Number of devices, optionally only those with ``status``."""
        stmt = sa.select(sa.func.count()).select_from(_D)
        if status is not None:
            stmt = stmt.where(_D.c.status == status)
        with self._read(conn) as c:
            return int(c.execute(stmt).scalar_one())

    def update_device(
        self,
        device: DeviceRecord,
        expected_etag: str | None,
        *,
        now: dt.datetime,
        conn: Connection | None = None,
    ) -> DeviceRecord:
        """Write the record's settable fields with a new etag.

        Settable: status, status_reason, auth_type, keys, thumbprints, policy_name,
        enrollment_id (revocation id: :meth:`rotate_revocation_id`). A status change
        stamps ``status_updated_at``. Raises NotFound or EtagMismatch.
        """
        check_choice("status", device.status, DEVICE_STATUSES)
        check_choice("auth_type", device.auth_type, AUTH_TYPES)
        check_aware("now", now)
        status_changed = _D.c.status != sa.literal(device.status, sa.String())
        values = {
            **_mutable(device),
            "status_updated_at": sa.case(
                (status_changed, sa.literal(now, _D.c.updated_at.type)),
                else_=_D.c.status_updated_at,
            ),
            "etag": self._new_etag(),
            "updated_at": now,
        }
        return self._update(device.device_id, values, conn, expected_etag)

    def rotate_revocation_id(
        self, device_id: str, new_id: bytes, now: dt.datetime, conn: Connection | None = None
    ) -> DeviceRecord:
        """Replace the device's revocation identifier (revokes every earlier certificate)."""
        if len(new_id) != 32:
            raise ValueError(f"revocation_id: expected 32 bytes, got {len(new_id)}")
        check_aware("now", now)
        values = {"revocation_id": new_id, "etag": self._new_etag(), "updated_at": now}
        return self._update(device_id, values, conn)

    def set_connection_state(
        self,
        device_id: str,
        state: ConnectionState,
        now: dt.datetime,
        conn: Connection | None = None,
    ) -> None:
        """Record Connected/Disconnected (and activity); the etag stays. NotFound."""
        check_choice("connection_state", state, CONNECTION_STATES)
        check_aware("now", now)
        values = {"connection_state": state, "connection_state_updated_at": now}
        if state == "Connected":
            values["last_activity_at"] = now
        self._touch(device_id, values, conn)

    def set_connection_states(
        self,
        changes: Mapping[str, tuple[ConnectionState, dt.datetime]],
        conn: Connection | None = None,
    ) -> None:
        """:meth:`set_connection_state` for many devices in one transaction, one
        executemany per state (the hub writes its sessions' changes once a second);
        devices that no longer exist are skipped."""
        rows: dict[str, list[dict[str, Any]]] = {state: [] for state in CONNECTION_STATES}
        for device_id, (state, at) in changes.items():
            check_choice("connection_state", state, CONNECTION_STATES)
            check_aware("now", at)
            rows[state].append({"b_device": device_id, "b_state": state, "b_at": at})
        with self._write(conn, "device", "*") as c:
            for name, batch in rows.items():
                if batch:
                    c.execute(_SET_CONNECTED if name == "Connected" else _SET_STATE, batch)

    def record_activity(
        self, device_id: str, now: dt.datetime, conn: Connection | None = None
    ) -> None:
        """Stamp ``last_activity_at``; the etag stays. NotFound."""
        check_aware("now", now)
        self._touch(device_id, {"last_activity_at": now}, conn)

    def delete_device(
        self, device_id: str, expected_etag: str | None = None, conn: Connection | None = None
    ) -> None:
        """Delete a device and its twin; its certificates stay. NotFound/EtagMismatch."""
        ident = ("device", device_id)
        with self._write(conn, *ident) as c:
            delete_checked(c, _D, _D.c.device_id == device_id, ident, expected_etag)

    def get_twin(
        self, device_id: str, conn: Connection | None = None, for_update: bool = False
    ) -> TwinRecord:
        """The device's twin; NotFound without a device.

        ``for_update`` locks the row (PostgreSQL) for a read-modify-write in ``conn``.
        """
        stmt = _TWIN_FOR_UPDATE if for_update else _TWIN
        with self._read(conn) as c:
            row = c.execute(stmt, {"b_device": device_id}).first()
        if row is None:
            raise NotFound("twin", device_id)
        return TwinRecord(**row._mapping)

    def replace_twin_sections(
        self,
        device_id: str,
        *,
        now: dt.datetime,
        tags: Mapping[str, Any] | None = None,
        desired: Mapping[str, Any] | None = None,
        reported: Mapping[str, Any] | None = None,
        desired_metadata: Mapping[str, Any] | None = None,
        reported_metadata: Mapping[str, Any] | None = None,
        expected_etag: str | None = None,
        conn: Connection | None = None,
        current: TwinRecord | None = None,
    ) -> TwinRecord:
        """Replace the given sections whole (None keeps a section) and bump versions.

        ``version`` and the etag change on every call; ``desired_version`` when
        ``desired`` is given, ``reported_version`` when ``reported`` is. The metadata
        halves replace ``metadata["desired"]`` / ``metadata["reported"]``.
        ``current``: the twin as the caller read it with ``get_twin(..., for_update=True)``
        in ``conn``'s transaction (it is read here otherwise). Raises NotFound or
        EtagMismatch.
        """
        if tags is None and desired is None and reported is None:
            raise ValueError("replace_twin_sections: give tags, desired or reported")
        if current is not None and conn is None:
            raise ValueError("replace_twin_sections: current needs the conn it was read in")
        check_aware("now", now)
        with self._write(conn, "twin", device_id) as c:
            twin = current or self.get_twin(device_id, conn=c, for_update=True)
            if expected_etag not in (None, "*", twin.etag):
                raise EtagMismatch("twin", device_id, str(expected_etag), twin.etag)
            values = _twin_values(
                twin, tags, desired, reported, desired_metadata, reported_metadata
            )
            values.update(etag=self._new_etag(), updated_at=now)
            params = {f"v_{name}": value for name, value in values.items()}
            row = c.execute(_twin_update(tuple(sorted(values))), {"b_device": device_id, **params})
            updated = row.first()
            if updated is None:
                raise NotFound("twin", device_id)
            return TwinRecord(**updated._mapping)

    def _update(
        self,
        device_id: str,
        values: Mapping[str, Any],
        conn: Connection | None,
        expected_etag: str | None = None,
    ) -> DeviceRecord:
        ident = ("device", device_id)
        where = _D.c.device_id == device_id
        with self._write(conn, *ident) as c:
            return DeviceRecord(
                **update_checked(c, _D, where, values, ident, expected_etag)._mapping
            )

    def _touch(self, device_id: str, values: Mapping[str, Any], conn: Connection | None) -> None:
        ident = ("device", device_id)
        with self._write(conn, *ident) as c:
            result = c.execute(sa.update(_D).where(_D.c.device_id == device_id).values(**values))
            if result.rowcount == 0:
                raise NotFound(*ident)

    def _new_generation_id(self) -> str:
        # IoT Hub generation ids are 18 decimal digits.
        value = int.from_bytes(self._random.token_bytes(8), "big") % 10**18
        return f"{value:018d}"


# Built once (building a statement per call cost about as much as running it).
_TWIN = sa.select(twins).where(twins.c.device_id == sa.bindparam("b_device"))
_TWIN_FOR_UPDATE = _TWIN.with_for_update()


@functools.cache
def _twin_update(columns: tuple[str, ...]) -> Any:
    """UPDATE of these twin columns (bound as ``v_<name>``) RETURNING the row; one per
    combination of sections, built on first use."""
    values = {name: sa.bindparam(f"v_{name}", type_=twins.c[name].type) for name in columns}
    return (
        sa.update(twins)
        .where(twins.c.device_id == sa.bindparam("b_device"))
        .values(values)
        .returning(*twins.c)
    )


def _twin_values(
    twin: TwinRecord,
    tags: Mapping[str, Any] | None,
    desired: Mapping[str, Any] | None,
    reported: Mapping[str, Any] | None,
    desired_metadata: Mapping[str, Any] | None,
    reported_metadata: Mapping[str, Any] | None,
) -> dict[str, Any]:
    values: dict[str, Any] = {"version": twin.version + 1}
    metadata = {"desired": {}, "reported": {}, **twin.metadata}
    if tags is not None:
        values["tags"] = dict(tags)
    if desired is not None:
        values["desired"] = dict(desired)
        values["desired_version"] = twin.desired_version + 1
    if reported is not None:
        values["reported"] = dict(reported)
        values["reported_version"] = twin.reported_version + 1
    if desired_metadata is not None:
        metadata["desired"] = dict(desired_metadata)
    if reported_metadata is not None:
        metadata["reported"] = dict(reported_metadata)
    values["metadata"] = metadata
    return values
