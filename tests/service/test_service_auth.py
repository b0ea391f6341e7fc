"""SAS authentication and policy rights of the service API: every refusal is named."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import pytest
from service_support import HOST, PORT, Harness, sas_token


def _refusal(response: Any, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["iothub-errorcode"] == "IotHubUnauthorizedAccess"
    assert response.headers["certhub-reason"] == reason
    body: dict[str, Any] = response.json()
    assert body["Message"].startswith("ErrorCode:IotHubUnauthorizedAccess;")
    assert body["ExceptionMessage"].startswith("Tracking ID:")
    return body


def _owner_key(api: Harness, which: str = "primaryKey") -> str:
    return api.keys["iothubowner"][which]


def _token(api: Harness, case: str) -> str | None:
    key = _owner_key(api)
    now = int(time.time())
    tokens: dict[str, Any] = {
        "missing": None,
        "malformed": "Bearer abc",
        "malformed-fields": "SharedAccessSignature sr=x&sig=y",
        "expired": sas_token(key, "iothubowner", expiry=now - 5),
        "wrong-sr-host": sas_token(key, "iothubowner", resource=f"otherhub:{PORT}"),
        "wrong-sr-port": sas_token(key, "iothubowner", resource=f"{HOST}:9999"),
        "wrong-sr-no-port": sas_token(key, "iothubowner", resource=HOST),
        "wrong-sr-other-device": sas_token(
            key, "iothubowner", resource=f"{HOST}:{PORT}/devices/other"
        ),
        "wrong-skn": sas_token(key, "nosuchpolicy"),
        "no-skn": sas_token(key, None),
        "bad-signature": sas_token(api.keys["registryRead"]["primaryKey"], "iothubowner"),
    }
    return tokens[case]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("missing", "missing", id="reject/missing"),
        pytest.param("malformed", "malformed", id="reject/malformed-scheme"),
        pytest.param("malformed-fields", "malformed", id="reject/malformed-fields"),
        pytest.param("expired", "expired", id="reject/expired"),
        pytest.param("wrong-sr-host", "wrong-resource", id="reject/wrong-sr-host"),
        pytest.param("wrong-sr-port", "wrong-resource", id="reject/wrong-sr-port"),
        pytest.param("wrong-sr-no-port", "wrong-resource", id="reject/wrong-sr-without-port"),
        pytest.param("wrong-sr-other-device", "wrong-resource", id="reject/wrong-sr-device"),
        pytest.param("wrong-skn", "wrong-key-name", id="reject/wrong-skn"),
        pytest.param("no-skn", "wrong-key-name", id="reject/device-token-without-skn"),
        pytest.param("bad-signature", "signature-mismatch", id="reject/bad-signature"),
    ],
)
def test_unauthenticated_requests_are_refused_with_401(
    sqlite_api: Harness, case: str, reason: str
) -> None:
    token = _token(sqlite_api, case)
    headers = {} if token is None else {"Authorization": token}
    response = sqlite_api.client.get("/devices/dev-1", headers=headers)
    _refusal(response, 401, reason)
    assert response.headers["www-authenticate"] == "SharedAccessSignature"


@pytest.mark.parametrize(
    ("policy", "method", "path", "body"),
    [
        pytest.param(
            "registryRead", "PUT", "/devices/d-new", {"deviceId": "d-new"}, id="reject/read-put"
        ),
        pytest.param("registryRead", "DELETE", "/devices/d1", None, id="reject/read-delete"),
        pytest.param(
            "registryRead", "PATCH", "/twins/d1", {"tags": {"a": 1}}, id="reject/read-patch-twin"
        ),
        pytest.param(
            "registryReadWrite",
            "PATCH",
            "/twins/d1",
            {"tags": {"a": 1}},
            id="reject/readwrite-patch-twin",
        ),
        pytest.param(
            "registryRead",
            "POST",
            "/twins/d1/methods",
            {"methodName": "m"},
            id="reject/read-method",
        ),
        pytest.param("service", "GET", "/devices", None, id="reject/service-list-devices"),
        pytest.param(
            "service", "PUT", "/devices/d-new", {"deviceId": "d-new"}, id="reject/service-put"
        ),
        pytest.param("service", "GET", "/statistics/devices", None, id="reject/service-stats"),
        pytest.param(
            "registryReadWrite",
            "POST",
            "/certhub/v1/devices/d1/revoke",
            {},
            id="reject/readwrite-admin-revoke",
        ),
        pytest.param("registryRead", "GET", "/certhub/v1/policies", None, id="reject/read-admin"),
        pytest.param("service", "GET", "/certhub/v1/audit", None, id="reject/service-admin"),
    ],
)
def test_valid_tokens_without_the_right_are_refused_with_403(
    sqlite_api: Harness, policy: str, method: str, path: str, body: Any
) -> None:
    sqlite_api.create_device("d1")
    response = sqlite_api.call(method, path, policy=policy, json=body)
    message = _refusal(response, 403, "insufficient-permission")["Message"]
    assert f"Authorization rule '{policy}' does not allow access for '{method} {path}'" in message
    assert sqlite_api.store.get_device("d-new") is None


@pytest.mark.parametrize(
    ("policy", "method", "path", "status"),
    [
        pytest.param("registryRead", "GET", "/devices/d1", 200, id="read-get-device"),
        pytest.param("registryRead", "GET", "/twins/d1", 200, id="read-get-twin"),
        pytest.param("service", "GET", "/twins/d1", 200, id="service-get-twin"),
        pytest.param("service", "PATCH", "/twins/d1", 200, id="service-patch-twin"),
        pytest.param("registryReadWrite", "GET", "/certhub/v1/devices", 200, id="rw-admin-read"),
        pytest.param("registryRead", "GET", "/statistics/devices", 200, id="read-stats"),
    ],
)
def test_policies_grant_their_rights(
    sqlite_api: Harness, policy: str, method: str, path: str, status: int
) -> None:
    sqlite_api.create_device("d1")
    body = {"tags": {"k": 1}} if method == "PATCH" else None
    assert sqlite_api.call(method, path, policy=policy, json=body).status_code == status


def test_secondary_key_and_lowercase_escapes_are_accepted(sqlite_api: Harness) -> None:
    key = _owner_key(sqlite_api, "secondaryKey")
    lower = sas_token(key, "iothubowner", quote=lambda s: quote(s, safe="").lower())
    response = sqlite_api.client.get("/statistics/devices", headers={"Authorization": lower})
    assert response.status_code == 200


def test_a_token_scoped_to_a_device_covers_only_that_device(sqlite_api: Harness) -> None:
    sqlite_api.create_device("d1")
    key = _owner_key(sqlite_api)
    scoped = sas_token(key, "iothubowner", resource=f"{HOST}:{PORT}/devices/d1")
    ok = sqlite_api.client.get("/devices/d1", headers={"Authorization": scoped})
    assert ok.status_code == 200
    other = sqlite_api.client.get("/devices/d2", headers={"Authorization": scoped})
    _refusal(other, 401, "wrong-resource")


def test_host_names_compare_case_insensitively(sqlite_api: Harness) -> None:
    token = sas_token(_owner_key(sqlite_api), "iothubowner", resource=f"LocalHost:{PORT}")
    response = sqlite_api.client.get("/statistics/devices", headers={"Authorization": token})
    assert response.status_code == 200
