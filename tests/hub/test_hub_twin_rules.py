"""Twin semantics (certhub.hub.twin): merge, null deletes, $metadata, limits — pure."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from certhub.hub import twin
from certhub.hub.errors import TwinError

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
STAMP = "2026-03-01T12:00:00.1234560Z"


def test_merge_sets_replaces_and_merges_objects() -> None:
    section = {"a": 1, "obj": {"x": 1, "y": 2}, "arr": [1, 2]}
    merged = twin.merge_patch(section, {"a": 2, "obj": {"y": 3, "z": 4}, "arr": [9], "new": "s"})
    assert merged == {"a": 2, "obj": {"x": 1, "y": 3, "z": 4}, "arr": [9], "new": "s"}
    assert section == {"a": 1, "obj": {"x": 1, "y": 2}, "arr": [1, 2]}  # input untouched


def test_null_deletes_members_at_any_depth() -> None:
    section = {"a": 1, "obj": {"x": 1, "y": 2}}
    assert twin.merge_patch(section, {"a": None, "obj": {"x": None}}) == {"obj": {"y": 2}}
    assert twin.merge_patch(section, {"missing": None}) == section
    assert twin.merge_patch(section, {"obj": None}) == {"a": 1}


def test_object_replaces_scalar_and_scalar_replaces_object() -> None:
    assert twin.merge_patch({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert twin.merge_patch({"a": {"b": 2}}, {"a": 5}) == {"a": 5}


def test_reported_metadata_stamps_every_patched_leaf() -> None:
    update = twin.apply_patch({}, {}, {"temp": 20, "fw": {"v": "1.0"}}, now=NOW)
    assert update.section == {"temp": 20, "fw": {"v": "1.0"}}
    assert update.metadata == {
        "$lastUpdated": STAMP,
        "temp": {"$lastUpdated": STAMP},
        "fw": {"$lastUpdated": STAMP, "v": {"$lastUpdated": STAMP}},
    }


def test_desired_metadata_records_the_version() -> None:
    update = twin.apply_patch({}, {}, {"p": 1}, now=NOW, version=7)
    assert update.metadata["p"] == {"$lastUpdated": STAMP, "$lastUpdatedVersion": 7}
    assert update.metadata["$lastUpdatedVersion"] == 7


def test_metadata_of_deleted_members_goes_and_others_stay() -> None:
    first = twin.apply_patch({}, {}, {"a": 1, "b": {"c": 2, "d": 3}}, now=NOW)
    later = NOW + dt.timedelta(minutes=1)
    second = twin.apply_patch(
        first.section, first.metadata, {"a": None, "b": {"c": None}}, now=later
    )
    assert second.section == {"b": {"d": 3}}
    assert "a" not in second.metadata
    assert "c" not in second.metadata["b"]
    assert second.metadata["b"]["d"] == {"$lastUpdated": STAMP}  # untouched member keeps its stamp
    assert second.metadata["$lastUpdated"] == twin.timestamp(later)


def test_parse_patch_ignores_top_level_dollar_keys() -> None:
    assert twin.parse_patch(b'{"a": 1, "$version": 4, "$metadata": {}}') == {"a": 1}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for i in range(depth - 1):
        value = {f"k{i}": value}
    return value


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"{not json", "malformed-json", id="reject/malformed-json"),
        pytest.param(b"\xff\xfe", "malformed-json", id="reject/not-utf8"),
        pytest.param(b"[1, 2]", "not-an-object", id="reject/array"),
        pytest.param(b"null", "not-an-object", id="reject/null"),
        pytest.param(b'{"a.b": 1}', "invalid-key", id="reject/key-with-dot"),
        pytest.param(b'{"a b": 1}', "invalid-key", id="reject/key-with-space"),
        pytest.param(b'{"o": {"$x": 1}}', "invalid-key", id="reject/nested-dollar-key"),
        pytest.param(b'{"": 1}', "invalid-key", id="reject/empty-key"),
        pytest.param(b'{"a\\u0001": 1}', "invalid-key", id="reject/control-character"),
        pytest.param(
            json.dumps({"k" * 1025: 1}).encode(), "invalid-key", id="reject/key-over-1KiB"
        ),
        pytest.param(json.dumps(_nested(11)).encode(), "too-deep", id="reject/eleven-levels"),
        pytest.param(b'{"a": "' + b"x" * 33000 + b'"}', "too-large", id="reject/body-over-32KiB"),
    ],
)
def test_parse_patch_rejects(body: bytes, reason: str) -> None:
    with pytest.raises(TwinError) as info:
        twin.parse_patch(body)
    assert info.value.reason == reason
    assert info.value.status == 400


def test_ten_levels_are_allowed() -> None:
    assert twin.parse_patch(json.dumps(_nested(10)).encode()) == _nested(10)


def test_section_over_32KiB_after_merge_is_refused() -> None:
    section = {f"k{i}": "x" * 1000 for i in range(32)}  # ~32.3 KB already with keys
    with pytest.raises(TwinError) as info:
        twin.apply_patch(section, {}, {"more": "y" * 1000}, now=NOW)
    assert info.value.reason == "too-large"


def test_a_patch_that_shrinks_an_oversized_section_passes() -> None:
    section = {f"k{i}": "x" * 1100 for i in range(30)}
    update = twin.apply_patch(section, {}, {"k0": None, "k1": None}, now=NOW)
    assert len(update.section) == 28


def test_device_document_and_desired_notification() -> None:
    doc = twin.device_document({"a": 1}, 3, {"b": 2}, 5)
    assert doc == {"desired": {"a": 1, "$version": 3}, "reported": {"b": 2, "$version": 5}}
    assert twin.desired_notification({"a": None}, 4) == {"a": None, "$version": 4}


def test_timestamp_has_seven_fractional_digits_and_z() -> None:
    assert twin.timestamp(NOW) == STAMP
    other = dt.datetime(2026, 3, 1, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert twin.timestamp(other) == "2026-03-01T12:00:00.0000000Z"
