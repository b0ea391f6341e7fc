"""Device twin semantics, as pure functions (no store, no clock, no I/O).

Why pure: the same rules serve a device's reported PATCH, the service's desired PATCH
and later the REST API, and they are easiest to pin down with unit tests.

* A patch is a JSON object merged into a section: objects merge member by member,
  ``null`` deletes a member, any other value replaces it (arrays whole).
* Keys follow IoT Hub: non-empty, at most 1 KiB, no ``.``, ``$``, space or control
  characters. Top-level keys starting with ``$`` (``$version``, ``$metadata`` that some
  clients echo) are ignored rather than refused.
* A section may hold at most 32 KiB (its compact JSON) and nest at most 10 levels.
* ``$metadata`` mirrors the section: every leaf the patch set gets
  ``{"$lastUpdated": …}`` (plus ``"$lastUpdatedVersion"`` in desired), every object
  its own ``$lastUpdated`` beside its members' entries; deleted members lose theirs.
* Versions are the store's (one per section, bumped per write); they appear as
  ``$version`` in the documents built here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from certhub.hub.errors import TwinError

__all__ = [
    "MAX_DEPTH",
    "MAX_KEY_BYTES",
    "MAX_SECTION_BYTES",
    "SectionUpdate",
    "apply_patch",
    "check_patch",
    "desired_notification",
    "device_document",
    "merge_patch",
    "parse_patch",
    "section_with_metadata",
    "timestamp",
]

MAX_SECTION_BYTES = 32 * 1024
MAX_DEPTH = 10
MAX_KEY_BYTES = 1024
_FORBIDDEN_KEY_CHARS = frozenset(".$ ")
_LAST_UPDATED = "$lastUpdated"
_LAST_UPDATED_VERSION = "$lastUpdatedVersion"


@dataclass(frozen=True, slots=True)
class SectionUpdate:
    """A section after a patch, and its ``$metadata``."""

    section: dict[str, Any]
    metadata: dict[str, Any]


def timestamp(now: dt.datetime) -> str:
    """IoT Hub's ``$lastUpdated`` form: UTC, seven fractional digits, ``Z``."""
    utc = now.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0Z"


def parse_patch(body: bytes) -> dict[str, Any]:
    """Decode a PATCH body into a checked patch object; :class:`TwinError` (400) if bad."""
    if len(body) > MAX_SECTION_BYTES:
        raise TwinError("too-large", f"patch of {len(body)} bytes exceeds {MAX_SECTION_BYTES}")
    try:
        patch = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise TwinError("malformed-json", f"the patch is not JSON: {exc}") from exc
    return check_patch(patch)


def check_patch(patch: object) -> dict[str, Any]:
    """``patch`` without top-level ``$`` keys, its keys and depth checked (TwinError)."""
    if not isinstance(patch, dict):
        raise TwinError("not-an-object", "a twin patch must be a JSON object")
    cleaned = {k: v for k, v in patch.items() if not (isinstance(k, str) and k.startswith("$"))}
    _check_keys(cleaned, 1)
    return cleaned


def _check_keys(value: Mapping[str, Any], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise TwinError("too-deep", f"twin objects nest at most {MAX_DEPTH} levels")
    for key, member in value.items():
        if not isinstance(key, str):
            raise TwinError("invalid-key", f"twin keys are strings, not {type(key).__name__}")
        _check_key(key)
        if isinstance(member, dict):
            _check_keys(member, depth + 1)


def _check_key(key: str) -> None:
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise TwinError("invalid-key", f"twin keys are 1..{MAX_KEY_BYTES} bytes: {key[:40]!r}")
    if any(c in _FORBIDDEN_KEY_CHARS or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in key):
        raise TwinError("invalid-key", f"twin key {key!r} contains '.', '$', space or a control")


def merge_patch(section: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``section`` with ``patch`` merged in (a new dict; the inputs are not changed)."""
    merged = dict(section)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            current = merged.get(key)
            merged[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            merged[key] = value
    return merged


def _merge_metadata(
    metadata: Mapping[str, Any], patch: Mapping[str, Any], stamp: dict[str, Any]
) -> dict[str, Any]:
    merged = dict(metadata)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            current = merged.get(key)
            base = current if isinstance(current, dict) and _LAST_UPDATED in current else {}
            merged[key] = _merge_metadata(base, value, stamp)
        else:
            merged[key] = dict(stamp)
    merged.update(stamp)
    return merged


def apply_patch(
    section: Mapping[str, Any],
    metadata: Mapping[str, Any],
    patch: Mapping[str, Any],
    *,
    now: dt.datetime,
    version: int | None = None,
) -> SectionUpdate:
    """Merge ``patch`` into ``section`` and its ``$metadata``; check the size limit.

    ``version`` is the section's version after this write, recorded as
    ``$lastUpdatedVersion`` (IoT Hub does so for desired properties only: pass None for
    reported). Raises :class:`TwinError` ("too-large") when the result exceeds
    :data:`MAX_SECTION_BYTES`.
    """
    _check_keys(patch, 1)
    merged = merge_patch(section, patch)
    size = len(json.dumps(merged, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_SECTION_BYTES:
        raise TwinError("too-large", f"the section would be {size} bytes (max {MAX_SECTION_BYTES})")
    stamp: dict[str, Any] = {_LAST_UPDATED: timestamp(now)}
    if version is not None:
        stamp[_LAST_UPDATED_VERSION] = version
    return SectionUpdate(merged, _merge_metadata(metadata, patch, stamp))


def device_document(
    desired: Mapping[str, Any],
    desired_version: int,
    reported: Mapping[str, Any],
    reported_version: int,
) -> dict[str, Any]:
    """The body of a device's twin GET response."""
    return {
        "desired": {**desired, "$version": desired_version},
        "reported": {**reported, "$version": reported_version},
    }


def desired_notification(patch: Mapping[str, Any], version: int) -> dict[str, Any]:
    """The body of a desired-properties notification: the patch and the new version."""
    return {**patch, "$version": version}


def section_with_metadata(
    section: Mapping[str, Any], metadata: Mapping[str, Any], version: int
) -> dict[str, Any]:
    """A section as the service API shows it: members, ``$metadata`` and ``$version``."""
    return {**section, "$metadata": dict(metadata), "$version": version}
