"""Device identities: create/read/update/delete, etags, authentication types, refusals."""

from __future__ import annotations

from typing import Any

import pytest
from service_support import Harness

CA = {"type": "certificateAuthority"}
THUMB = "ab" * 20


def _error(response: Any, status: int, code: str, reason: str | None = None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["iothub-errorcode"] == code
    if reason is not None:
        assert response.headers["certhub-reason"] == reason
    message: str = response.json()["Message"]
    assert message.startswith(f"ErrorCode:{code};")
    return message


def test_create_a_certificate_authority_device_and_read_it(api: Harness) -> None:
    body = {"deviceId": "d1", "status": "enabled", "authentication": CA}
    created = api.call("PUT", "/devices/d1", json=body)
    assert created.status_code == 200, created.text
    device = created.json()
    assert device["deviceId"] == "d1"
    assert device["authentication"]["type"] == "certificateAuthority"
    assert device["status"] == "enabled"
    assert device["connectionState"] == "Disconnected"
    assert device["lastActivityTime"] == "0001-01-01T00:00:00Z"
    assert len(device["generationId"]) == 18
    assert device["policyName"] == "default"
    fetched = api.call("GET", "/devices/d1").json()
    assert fetched == device
    record = api.store.get_device("d1")
    assert record is not None and len(record.revocation_id) == 32


def test_sas_device_keys_are_generated_or_kept(sqlite_api: Harness) -> None:
    generated = sqlite_api.call(
        "PUT", "/devices/s1", json={"authentication": {"type": "sas"}}
    ).json()
    keys = generated["authentication"]["symmetricKey"]
    assert (
        keys["primaryKey"] and keys["secondaryKey"] and keys["primaryKey"] != keys["secondaryKey"]
    )
    given = {"primaryKey": "A" * 44, "secondaryKey": "B" * 44}
    body = {"authentication": {"type": "sas", "symmetricKey": given}}
    kept = sqlite_api.call("PUT", "/devices/s2", json=body).json()
    assert kept["authentication"]["symmetricKey"] == given


def test_self_signed_device_stores_thumbprints(sqlite_api: Harness) -> None:
    thumbs = {"primaryThumbprint": THUMB.upper(), "secondaryThumbprint": "cd" * 32}
    body = {"authentication": {"type": "selfSigned", "x509Thumbprint": thumbs}}
    device = sqlite_api.call("PUT", "/devices/x1", json=body).json()
    assert device["authentication"]["x509Thumbprint"] == {
        "primaryThumbprint": THUMB,
        "secondaryThumbprint": "cd" * 32,
    }
    assert device["policyName"] is None


def test_update_with_etag_disables_and_stale_etag_is_refused(api: Harness) -> None:
    first = api.call("PUT", "/devices/d1", json={"authentication": CA}).json()
    body = {"status": "disabled", "statusReason": "stolen", "authentication": CA}
    updated = api.call("PUT", "/devices/d1", json=body, headers={"If-Match": f'"{first["etag"]}"'})
    assert updated.status_code == 200
    device = updated.json()
    assert (device["status"], device["statusReason"]) == ("disabled", "stolen")
    assert device["etag"] != first["etag"]
    assert device["statusUpdatedTime"] != "0001-01-01T00:00:00Z"
    stale = api.call("PUT", "/devices/d1", json=body, headers={"If-Match": f'"{first["etag"]}"'})
    _error(stale, 412, "PreconditionFailed", "etag-mismatch")
    star = api.call("PUT", "/devices/d1", json={"authentication": CA}, headers={"If-Match": "*"})
    assert star.json()["status"] == "enabled"


def test_delete_with_etags(api: Harness) -> None:
    device = api.call("PUT", "/devices/d1", json={"authentication": CA}).json()
    stale = api.call("DELETE", "/devices/d1", headers={"If-Match": '"not-the-etag"'})
    _error(stale, 412, "PreconditionFailed", "etag-mismatch")
    gone = api.call("DELETE", "/devices/d1", headers={"If-Match": f'"{device["etag"]}"'})
    assert gone.status_code == 204
    _error(api.call("GET", "/devices/d1"), 404, "DeviceNotFound", "not-found")


def test_list_devices_with_top(sqlite_api: Harness) -> None:
    for i in range(5):
        sqlite_api.create_device(f"d{i}")
    listed = sqlite_api.call("GET", "/devices", params={"top": 3})
    assert [d["deviceId"] for d in listed.json()] == ["d0", "d1", "d2"]
    assert len(sqlite_api.call("GET", "/devices").json()) == 5


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        pytest.param("GET", "/devices/nope", {}, id="reject/get-unknown"),
        pytest.param("DELETE", "/devices/nope", {}, id="reject/delete-unknown"),
        pytest.param(
            "PUT",
            "/devices/nope",
            {"json": {"authentication": CA}, "headers": {"If-Match": "*"}},
            id="reject/update-unknown",
        ),
        pytest.param("GET", "/twins/nope", {}, id="reject/twin-unknown"),
        pytest.param("PATCH", "/twins/nope", {"json": {"tags": {}}}, id="reject/patch-unknown"),
    ],
)
def test_unknown_device_is_404(sqlite_api: Harness, method: str, path: str, kwargs: Any) -> None:
    _error(sqlite_api.call(method, path, **kwargs), 404, "DeviceNotFound", "not-found")


def test_creating_an_existing_device_is_409(api: Harness) -> None:
    api.create_device("d1")
    response = api.call("PUT", "/devices/d1", json={"authentication": CA})
    message = _error(response, 409, "DeviceAlreadyExists", "already-exists")
    assert "A device with ID 'd1' is already registered." in message


@pytest.mark.parametrize(
    ("path", "content", "reason", "needle"),
    [
        pytest.param(
            "/devices/d1",
            b'{"deviceId": ',
            "malformed-json",
            "malformed JSON",
            id="reject/malformed-json",
        ),
        pytest.param("/devices/d1", b"[1, 2]", "invalid-field", "body", id="reject/not-an-object"),
        pytest.param(
            "/devices/d1",
            b'{"status": "sleeping"}',
            "invalid-field",
            "status",
            id="reject/bad-status",
        ),
        pytest.param(
            "/devices/d1", b'{"deviceId": "d2"}', "id-mismatch", "differs", id="reject/id-mismatch"
        ),
        pytest.param("/devices/d%20x", b"{}", "invalid-field", "id", id="reject/bad-device-id"),
        pytest.param(
            "/devices/d1",
            b'{"authentication": {"type": "selfSigned"}}',
            "x509",
            "primaryThumbprint",
            id="reject/self-signed-without-thumbprint",
        ),
        pytest.param(
            "/devices/d1",
            b'{"authentication": {"type": "selfSigned",'
            b' "x509Thumbprint": {"primaryThumbprint": "xyz"}}}',
            "thumbprint",
            "hex",
            id="reject/bad-thumbprint",
        ),
        pytest.param(
            "/devices/d1",
            b'{"authentication": {"type": "sas", "symmetricKey": {"primaryKey": "***"}}}',
            "invalid-key",
            "base64",
            id="reject/bad-sas-key",
        ),
        pytest.param(
            "/devices/d1",
            b'{"policyName": "no-such-policy"}',
            "unknown-policy",
            "no-such-policy",
            id="reject/unknown-policy",
        ),
        pytest.param(
            "/devices/d1",
            b'{"statusReason": "' + b"x" * 129 + b'"}',
            "invalid-field",
            "statusReason",
            id="reject/status-reason-too-long",
        ),
    ],
)
def test_bad_device_bodies_are_400(
    sqlite_api: Harness, path: str, content: bytes, reason: str, needle: str
) -> None:
    response = sqlite_api.call(
        "PUT", path, content=content, headers={"Content-Type": "application/json"}
    )
    message = _error(response, 400, "ArgumentInvalid", reason)
    assert needle in message
    assert sqlite_api.store.get_device("d1") is None


def test_statistics_count_devices(api: Harness) -> None:
    api.create_device("a")
    api.create_device("b", status="disabled")
    api.create_device("c")
    api.store.set_connection_state("c", "Connected", api.clock.now())
    stats = api.call("GET", "/statistics/devices").json()
    assert stats == {"totalDeviceCount": 3, "enabledDeviceCount": 2, "disabledDeviceCount": 1}
    assert api.call("GET", "/statistics/service").json() == {"connectedDeviceCount": 1}
