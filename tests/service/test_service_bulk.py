"""Bulk registry operations (``POST /devices``): every import mode and every refusal."""

from __future__ import annotations

from typing import Any

import pytest
from service_support import Harness

CA = {"type": "certificateAuthority"}


def _bulk(api: Harness, entries: Any) -> Any:
    return api.call("POST", "/devices", json=entries)


def _created(api: Harness, *ids: str) -> None:
    response = _bulk(api, [{"id": i, "importMode": "create", "authentication": CA} for i in ids])
    assert response.status_code == 200, response.text
    assert response.json() == {"isSuccessful": True, "errors": [], "warnings": []}


def test_create_registers_devices_with_their_twins(api: Harness) -> None:
    entries = [
        {
            "id": "b1",
            "importMode": "create",
            "authentication": CA,
            "tags": {"site": "lab"},
            "properties": {"desired": {"interval": 5}},
        },
        {"id": "b2", "importMode": "create", "status": "disabled", "authentication": CA},
    ]
    response = _bulk(api, entries)
    assert response.status_code == 200, response.text
    assert response.json()["isSuccessful"] is True
    b1 = api.call("GET", "/twins/b1").json()
    assert b1["tags"] == {"site": "lab"}
    assert b1["properties"]["desired"]["interval"] == 5
    b2 = api.call("GET", "/devices/b2").json()
    assert (b2["status"], b2["authentication"]["type"]) == ("disabled", "certificateAuthority")


def test_update_delete_and_twin_modes(sqlite_api: Harness) -> None:
    api = sqlite_api
    _created(api, "u1", "u2", "u3", "u4")
    u2 = api.call("GET", "/devices/u2").json()
    u4 = api.call("GET", "/twins/u4").json()
    entries = [
        {"id": "u1", "importMode": "update", "status": "disabled", "authentication": CA},
        {"id": "u2", "importMode": "deleteIfMatchETag", "eTag": f'"{u2["etag"]}"'},
        {"id": "u3", "importMode": "updateTwin", "tags": {"floor": 2}},
        {
            "id": "u4",
            "importMode": "updateTwinIfMatchETag",
            "twinETag": u4["etag"],
            "properties": {"desired": {"mode": "eco"}},
        },
    ]
    response = _bulk(api, entries)
    assert response.status_code == 200, response.text
    assert api.call("GET", "/devices/u1").json()["status"] == "disabled"
    assert api.call("GET", "/devices/u2").status_code == 404
    assert api.call("GET", "/twins/u3").json()["tags"] == {"floor": 2}
    assert api.call("GET", "/twins/u4").json()["properties"]["desired"]["mode"] == "eco"


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        pytest.param(
            {"id": "e1", "importMode": "create"}, "DeviceAlreadyExists", id="reject/taken"
        ),
        pytest.param({"id": "nope", "importMode": "update"}, "DeviceNotFound", id="reject/update"),
        pytest.param({"id": "nope", "importMode": "delete"}, "DeviceNotFound", id="reject/delete"),
        pytest.param(
            {"id": "e1", "importMode": "updateIfMatchETag", "eTag": "stale"},
            "PreconditionFailed",
            id="reject/stale-etag",
        ),
        pytest.param(
            {"id": "e1", "importMode": "deleteIfMatchETag"},
            "ArgumentInvalid",
            id="reject/etag-missing",
        ),
        pytest.param(
            {"id": "e1", "importMode": "updateTwinIfMatchETag", "twinETag": "stale", "tags": {}},
            "PreconditionFailed",
            id="reject/stale-twin-etag",
        ),
        pytest.param(
            {"id": "bad id/", "importMode": "create"}, "ArgumentInvalid", id="reject/invalid-id"
        ),
        pytest.param(
            {"id": "e1", "moduleId": "m", "importMode": "updateTwin"},
            "ArgumentInvalid",
            id="reject/module",
        ),
    ],
)
def test_a_failing_entry_is_reported_and_the_others_applied(
    sqlite_api: Harness, entry: dict[str, Any], code: str
) -> None:
    api = sqlite_api
    _created(api, "e1")
    before = api.call("GET", "/devices/e1").json()
    response = _bulk(api, [entry, {"id": "e2", "importMode": "create", "authentication": CA}])
    assert response.status_code == 400, response.text
    result = response.json()
    assert result["isSuccessful"] is False and result["warnings"] == []
    [error] = result["errors"]
    assert (error["deviceId"], error["errorCode"], error["operation"]) == (
        entry["id"],
        code,
        entry["importMode"],
    )
    assert error["errorStatus"]
    assert api.call("GET", "/devices/e2").status_code == 200
    assert api.call("GET", "/devices/e1").json() == before


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param([], "bulk-empty", id="reject/empty"),
        pytest.param(
            [{"id": f"d{i}", "importMode": "create"} for i in range(101)],
            "bulk-too-many",
            id="reject/over-100",
        ),
        pytest.param(
            [{"id": "d", "importMode": "create"}, {"id": "d", "importMode": "delete"}],
            "bulk-duplicate",
            id="reject/duplicate-id",
        ),
        pytest.param({"id": "d"}, "invalid-field", id="reject/not-a-list"),
        pytest.param([{"id": "d", "importMode": "upsert"}], "invalid-field", id="reject/mode"),
    ],
)
def test_an_unusable_list_changes_nothing(sqlite_api: Harness, body: Any, reason: str) -> None:
    response = _bulk(sqlite_api, body)
    assert response.status_code == 400, response.text
    assert response.headers["iothub-errorcode"] == "ArgumentInvalid"
    assert response.headers["certhub-reason"] == reason
    assert sqlite_api.call("GET", "/devices").json() == []


def test_bulk_needs_registry_write(sqlite_api: Harness) -> None:
    response = sqlite_api.call(
        "POST", "/devices", policy="registryRead", json=[{"id": "x", "importMode": "create"}]
    )
    assert response.status_code == 403
    assert sqlite_api.call("GET", "/devices").json() == []
