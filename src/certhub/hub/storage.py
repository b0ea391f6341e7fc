"""The hub's twin reads and writes against the store (blocking: run in the executor).

Each write is one transaction: read the twin for update, apply the pure rules of
:mod:`certhub.hub.twin`, write the section and its ``$metadata`` back (the store bumps
the section's version). A desired patch also appends a ``twin.desired`` event in the same
transaction, so the node that holds the device's session learns of it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from certhub.hub import twin as rules
from certhub.hub.errors import DeviceNotFound
from certhub.registry import NotFound, Store
from certhub.registry.records import TwinRecord

__all__ = [
    "DESIRED_EVENT",
    "device_twin",
    "patch_desired",
    "patch_reported",
    "service_twin",
]

DESIRED_EVENT = "twin.desired"


def _twin(store: Store, device_id: str, **kwargs: Any) -> TwinRecord:
    try:
        return store.get_twin(device_id, **kwargs)
    except NotFound as exc:
        raise DeviceNotFound(device_id) from exc


def device_twin(store: Store, device_id: str) -> dict[str, Any]:
    """The device's view of its twin (the twin GET response body)."""
    twin = _twin(store, device_id)
    return rules.device_document(
        twin.desired, twin.desired_version, twin.reported, twin.reported_version
    )


def service_twin(store: Store, device_id: str) -> dict[str, Any]:
    """The twin's properties as the service API shows them (with ``$metadata``)."""
    twin = _twin(store, device_id)
    metadata = twin.metadata
    return {
        "deviceId": device_id,
        "etag": twin.etag,
        "version": twin.version,
        "tags": dict(twin.tags),
        "properties": {
            "desired": rules.section_with_metadata(
                twin.desired, metadata.get("desired", {}), twin.desired_version
            ),
            "reported": rules.section_with_metadata(
                twin.reported, metadata.get("reported", {}), twin.reported_version
            ),
        },
    }


def patch_reported(
    store: Store,
    device_id: str,
    patch: Mapping[str, Any],
    now: dt.datetime,
    conn: Connection | None = None,
) -> int:
    """Merge a device's reported patch; returns the new reported version.

    In its own transaction, or in ``conn``'s (the hub's group-commit writer).
    """
    if conn is None:
        with store.transaction() as own:
            return patch_reported(store, device_id, patch, now, own)
    twin = _twin(store, device_id, conn=conn, for_update=True)
    update = rules.apply_patch(twin.reported, twin.metadata.get("reported", {}), patch, now=now)
    record = store.replace_twin_sections(
        device_id,
        now=now,
        reported=update.section,
        reported_metadata=update.metadata,
        conn=conn,
        current=twin,
    )
    return record.reported_version


def patch_desired(
    store: Store, device_id: str, patch: Mapping[str, Any], now: dt.datetime, origin: str
) -> int:
    """Merge a service desired patch and record a ``twin.desired`` event; the new version."""
    with store.transaction() as conn:
        twin = _twin(store, device_id, conn=conn, for_update=True)
        version = twin.desired_version + 1
        update = rules.apply_patch(
            twin.desired, twin.metadata.get("desired", {}), patch, now=now, version=version
        )
        record = store.replace_twin_sections(
            device_id,
            now=now,
            desired=update.section,
            desired_metadata=update.metadata,
            conn=conn,
            current=twin,
        )
        payload = {"version": record.desired_version, "patch": dict(patch), "origin": origin}
        store.append_event(DESIRED_EVENT, device_id, payload, now, conn=conn)
        return record.desired_version
