"""The twin property ``properties.desired.certificateRenewal``, written in batches.

``{"renewAfter": "2026-03-24T06:00:00Z", "renewBefore": "2026-03-24T20:24:00Z"}`` (UTC,
whole seconds). The write follows the hub's twin rules (``certhub.hub.twin``: the same
merge, the same ``$metadata`` stamps with ``$lastUpdatedVersion``) for this one key, and
appends the hub's ``twin.desired`` change-feed event in the same transaction, so the node
holding the device's session sends the desired-properties notification. Pure apart
from the store calls in :func:`write_windows`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from certhub.registry import Store
from certhub.registry._renewal import DesiredWrite
from certhub.registry.records import TwinRecord
from certhub.renewal.window import Window

__all__ = ["RENEWAL_PROPERTY", "desired_write", "window_value", "write_windows"]

RENEWAL_PROPERTY = "certificateRenewal"
_LAST_UPDATED = "$lastUpdated"


def iso_seconds(value: dt.datetime) -> str:
    """``2026-03-24T06:00:00Z``."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_value(window: Window) -> dict[str, str]:
    """The property's value for ``window``."""
    return {
        "renewAfter": iso_seconds(window.renew_after),
        "renewBefore": iso_seconds(window.renew_before),
    }


def _stamp(now: dt.datetime, version: int) -> dict[str, Any]:
    utc = now.astimezone(dt.UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0Z"
    return {_LAST_UPDATED: text, "$lastUpdatedVersion": version}


def desired_write(
    twin: TwinRecord, value: Mapping[str, str], now: dt.datetime, origin: str
) -> DesiredWrite | None:
    """The write that sets the property to ``value``; None when it already has it."""
    if twin.desired.get(RENEWAL_PROPERTY) == dict(value):
        return None
    version = twin.desired_version + 1
    stamp = _stamp(now, version)
    desired = {**twin.desired, RENEWAL_PROPERTY: dict(value)}
    meta_desired = dict(twin.metadata.get("desired", {}))
    member = {key: dict(stamp) for key in value}
    member.update(stamp)
    meta_desired[RENEWAL_PROPERTY] = member
    meta_desired.update(stamp)
    metadata = {"reported": {}, **twin.metadata}
    metadata["desired"] = meta_desired
    patch = {RENEWAL_PROPERTY: dict(value)}
    event = {"version": version, "patch": patch, "origin": origin}
    return DesiredWrite(
        device_id=twin.device_id,
        desired=desired,
        metadata=metadata,
        version=twin.desired_version,
        event=event,
    )


def write_windows(
    store: Store,
    windows: Sequence[tuple[str, Window]],
    now: dt.datetime,
    origin: str,
    conn: Connection,
) -> list[str]:
    """Set the property of each device in ``conn``'s transaction; returns those changed."""
    if not windows:
        return []
    latest = dict(windows)
    twins = store.twins_by_id(latest, conn=conn, for_update=True)
    writes = []
    for device_id, window in latest.items():
        twin = twins.get(device_id)
        write = None if twin is None else desired_write(twin, window_value(window), now, origin)
        if write is not None:
            writes.append(write)
    store.write_desired_sections(writes, now, conn=conn)
    return [w.device_id for w in writes]
