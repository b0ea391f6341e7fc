"""Twins over the service API: merge and replace, etags, the desired event, refusals."""

from __future__ import annotations

from typing import Any

import pytest
from service_support import Harness


def _error(response: Any, status: int, code: str, reason: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["iothub-errorcode"] == code
    assert response.headers["certhub-reason"] == reason
    message: str = response.json()["Message"]
    return message


def _desired_events(api: Harness, device_id: str) -> list[dict[str, Any]]:
    return [
        dict(e.payload)
        for e in api.store.events_after(0)
        if e.kind == "twin.desired" and e.device_id == device_id
    ]


def test_get_twin_has_device_fields_and_metadata(api: Harness) -> None:
    api.create_device("d1")
    twin = api.call("GET", "/twins/d1").json()
    device = api.store.get_device("d1")
    assert device is not None
    assert twin["deviceId"] == "d1"
    assert twin["deviceEtag"] == device.etag
    assert twin["authenticationType"] == "certificateAuthority"
    assert twin["status"] == "enabled"
    assert twin["tags"] == {}
    assert twin["properties"]["desired"]["$version"] == 1
    assert twin["properties"]["reported"]["$version"] == 1
    assert "$metadata" in twin["properties"]["desired"]


def test_patch_merges_tags_and_desired_and_emits_the_patch(api: Harness) -> None:
    api.create_device("d1")
    first = {"tags": {"site": {"floor": 1, "room": "a"}}, "properties": {"desired": {"x": 1}}}
    api.call("PATCH", "/twins/d1", json=first)
    second = {"tags": {"site": {"room": None}}, "properties": {"desired": {"y": {"z": 2}}}}
    twin = api.call("PATCH", "/twins/d1", json=second).json()
    assert twin["tags"] == {"site": {"floor": 1}}
    desired = twin["properties"]["desired"]
    assert {k: v for k, v in desired.items() if not k.startswith("$")} == {"x": 1, "y": {"z": 2}}
    assert desired["$version"] == 3
    assert desired["$metadata"]["y"]["$lastUpdatedVersion"] == 3
    events = _desired_events(api, "d1")
    assert [e["patch"] for e in events] == [{"x": 1}, {"y": {"z": 2}}]
    assert [e["version"] for e in events] == [2, 3]
    assert {e["origin"] for e in events} == {"service-api"}


def test_tags_only_patch_emits_no_desired_event(sqlite_api: Harness) -> None:
    sqlite_api.create_device("d1")
    sqlite_api.call("PATCH", "/twins/d1", json={"tags": {"a": 1}})
    assert _desired_events(sqlite_api, "d1") == []


def test_put_replaces_tags_and_desired(api: Harness) -> None:
    api.create_device("d1")
    api.call(
        "PATCH",
        "/twins/d1",
        json={"tags": {"a": 1, "b": 2}, "properties": {"desired": {"x": 1, "o": {"p": 1, "q": 2}}}},
    )
    replaced = api.call(
        "PUT", "/twins/d1", json={"tags": {"c": 3}, "properties": {"desired": {"o": {"p": 1}}}}
    ).json()
    assert replaced["tags"] == {"c": 3}
    desired = {k: v for k, v in replaced["properties"]["desired"].items() if k[0] != "$"}
    assert desired == {"o": {"p": 1}}
    assert _desired_events(api, "d1")[-1]["patch"] == {"x": None, "o": {"q": None}}


def test_if_match_on_twins(api: Harness) -> None:
    api.create_device("d1")
    etag = api.call("GET", "/twins/d1").json()["etag"]
    ok = api.call("PATCH", "/twins/d1", json={"tags": {"a": 1}}, headers={"If-Match": f'"{etag}"'})
    assert ok.status_code == 200 and ok.json()["etag"] != etag
    stale = api.call(
        "PATCH", "/twins/d1", json={"tags": {"a": 2}}, headers={"If-Match": f'"{etag}"'}
    )
    _error(stale, 412, "PreconditionFailed", "etag-mismatch")
    stale_put = api.call("PUT", "/twins/d1", json={}, headers={"If-Match": f'"{etag}"'})
    _error(stale_put, 412, "PreconditionFailed", "etag-mismatch")
    assert api.call("GET", "/twins/d1").json()["tags"] == {"a": 1}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param({"tags": {"a.b": 1}}, "twin-invalid-key", id="reject/dotted-tag-key"),
        pytest.param(
            {"properties": {"desired": {"has space": 1}}}, "twin-invalid-key", id="reject/space-key"
        ),
        pytest.param(
            {"properties": {"desired": {"big": "x" * 40000}}},
            "twin-too-large",
            id="reject/too-large",
        ),
        pytest.param({"tags": [1]}, "invalid-field", id="reject/tags-not-object"),
    ],
)
def test_bad_twin_patches_are_400(sqlite_api: Harness, body: Any, reason: str) -> None:
    sqlite_api.create_device("d1")
    _error(sqlite_api.call("PATCH", "/twins/d1", json=body), 400, "ArgumentInvalid", reason)
    assert sqlite_api.call("GET", "/twins/d1").json()["tags"] == {}


def test_malformed_twin_json_is_400(sqlite_api: Harness) -> None:
    sqlite_api.create_device("d1")
    response = sqlite_api.call(
        "PATCH", "/twins/d1", content=b"{tags", headers={"Content-Type": "application/json"}
    )
    assert "malformed JSON" in _error(response, 400, "ArgumentInvalid", "malformed-json")


def test_method_on_an_offline_device_is_404_device_not_online(sqlite_api: Harness) -> None:
    sqlite_api.create_device("d1")
    response = sqlite_api.call("POST", "/twins/d1/methods", json={"methodName": "reboot"})
    _error(response, 404, "DeviceNotOnline", "offline")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param({"payload": 1}, "methodName", id="reject/no-method-name"),
        pytest.param(
            {"methodName": "m", "responseTimeoutInSeconds": 1},
            "responseTimeout",
            id="reject/timeout",
        ),
    ],
)
def test_bad_method_calls_are_400(sqlite_api: Harness, body: Any, needle: str) -> None:
    sqlite_api.create_device("d1")
    response = sqlite_api.call("POST", "/twins/d1/methods", json=body)
    assert needle in _error(response, 400, "ArgumentInvalid", "invalid-field")


def test_method_on_unknown_device_is_404(sqlite_api: Harness) -> None:
    response = sqlite_api.call("POST", "/twins/nope/methods", json={"methodName": "m"})
    _error(response, 404, "DeviceNotFound", "not-found")


def test_c2d_to_unknown_device_is_404_and_too_large_is_400(sqlite_api: Harness) -> None:
    _error(
        sqlite_api.call("POST", "/devices/nope/messages/deviceBound", content=b"hi"),
        404,
        "DeviceNotFound",
        "not-found",
    )
    sqlite_api.create_device("d1")
    big = sqlite_api.call(
        "POST", "/devices/d1/messages/deviceBound", content=b"x" * (64 * 1024 + 1)
    )
    _error(big, 400, "MessageTooLarge", "too-large")
    queued = sqlite_api.call("POST", "/devices/d1/messages/deviceBound", content=b"hi")
    assert queued.status_code == 202 and queued.json() == {"delivered": False}
