"""certhub's admin API: policies, enrollments, the certificate inventory, lifecycles,
device revocation and the audit log."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from service_support import Harness

V1 = "/certhub/v1"
DAY = dt.timedelta(days=1)


def _error(response: Any, status: int, reason: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["certhub-reason"] == reason
    message: str = response.json()["Message"]
    return message


# -- namespaces and policies -------------------------------------------------------------------


def test_namespaces_and_policies(sqlite_api: Harness) -> None:
    api = sqlite_api
    namespaces = api.call("GET", f"{V1}/namespaces").json()
    assert [n["name"] for n in namespaces["items"]] == ["default"]
    assert namespaces["next"] is None
    assert api.call("GET", f"{V1}/namespaces/default").json()["idScope"].startswith("0ne")
    created = api.call("POST", f"{V1}/policies", json={"name": "fleet", "validity": "10d"})
    assert created.status_code == 201, created.text
    assert created.json()["validitySeconds"] == 10 * 86400
    names = [p["name"] for p in api.call("GET", f"{V1}/policies").json()["items"]]
    assert names == ["default", "fleet"]
    assert api.call("GET", f"{V1}/policies/fleet").json()["keyTypes"] == ["p256", "p384"]


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        pytest.param({"name": "default"}, 409, "already-exists", id="reject/duplicate"),
        pytest.param(
            {"name": "pol", "validity": "soon"}, 400, "invalid-duration", id="reject/validity"
        ),
        pytest.param(
            {"name": "pol", "keyTypes": ["dsa"]}, 400, "unknown-key-type", id="reject/key-type"
        ),
        pytest.param(
            {"name": "pol", "validity": "1h"}, 400, "validity-out-of-range", id="reject/short"
        ),
        pytest.param(
            {"name": "pol", "caKeyType": "rsa1"}, 400, "invalid-policy", id="reject/ca-key"
        ),
        pytest.param({"name": "no spaces"}, 400, "invalid-name", id="reject/name"),
    ],
)
def test_policy_refusals(sqlite_api: Harness, body: Any, status: int, reason: str) -> None:
    _error(sqlite_api.call("POST", f"{V1}/policies", json=body), status, reason)


def test_policy_lookups_and_revoke_issuer_of_an_unknown_policy(sqlite_api: Harness) -> None:
    _error(sqlite_api.call("GET", f"{V1}/policies/nope"), 404, "not-found")
    _error(sqlite_api.call("POST", f"{V1}/policies/nope/revoke-issuer"), 404, "not-found")


# -- enrollments --------------------------------------------------------------------------------


def test_enrollment_crud_with_etags(sqlite_api: Harness) -> None:
    body = {"enrollmentGroupId": "line-1", "initialTwin": {"tags": {"line": 1}}}
    created = sqlite_api.call("POST", f"{V1}/enrollments", json=body)
    assert created.status_code == 201, created.text
    group = created.json()
    assert group["attestation"]["symmetricKey"]["primaryKey"]
    assert group["credentialPolicyName"] == "default"
    path = f"{V1}/enrollments/groups/line-1"
    assert sqlite_api.call("GET", path).json() == group
    stale = sqlite_api.call(
        "PUT", path, json={**body, "provisioningStatus": "disabled"}, headers={"If-Match": '"x"'}
    )
    _error(stale, 412, "etag-mismatch")
    updated = sqlite_api.call(
        "PUT",
        path,
        json={**body, "provisioningStatus": "disabled"},
        headers={"If-Match": f'"{group["etag"]}"'},
    )
    assert updated.json()["provisioningStatus"] == "disabled"
    kinds = sqlite_api.call("GET", f"{V1}/enrollments", params={"kind": "group"}).json()["items"]
    assert sorted(e["enrollmentGroupId"] for e in kinds) == ["default", "line-1"]
    assert sqlite_api.call("DELETE", path).status_code == 204
    _error(sqlite_api.call("GET", path), 404, "not-found")


def test_x509_individual_enrollment(sqlite_api: Harness) -> None:
    pem = sqlite_api.data_dir / "tls" / "server-ca.pem"
    pem = pem if pem.exists() else next(Path(sqlite_api.data_dir).rglob("*ca*.pem"))
    body = {
        "registrationId": "dev-x",
        "attestation": {"type": "x509", "x509": {"certificates": [pem.read_text()]}},
    }
    created = sqlite_api.call("POST", f"{V1}/enrollments", json=body).json()
    assert len(created["attestation"]["x509"]["thumbprints"][0]) == 40
    fetched = sqlite_api.call("GET", f"{V1}/enrollments/individuals/dev-x")
    assert fetched.json()["registrationId"] == "dev-x"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(
            {"registrationId": "a", "enrollmentGroupId": "b"}, "kind", id="reject/both-ids"
        ),
        pytest.param({}, "kind", id="reject/no-id"),
        pytest.param(
            {"enrollmentGroupId": "g", "credentialPolicyName": "nope"},
            "unknown-policy",
            id="reject/unknown-policy",
        ),
        pytest.param(
            {"enrollmentGroupId": "g", "attestation": {"type": "x509"}}, "x509", id="reject/no-pem"
        ),
        pytest.param(
            {
                "enrollmentGroupId": "g",
                "attestation": {"type": "x509", "x509": {"certificates": ["x"]}},
            },
            "x509",
            id="reject/bad-pem",
        ),
        pytest.param(
            {"enrollmentGroupId": "g", "attestation": {"symmetricKey": {"primaryKey": "c2hvcnQ="}}},
            "bad-key",
            id="reject/short-key",
        ),
        pytest.param(
            {"enrollmentGroupId": "g", "initialTwin": {"desired": {}}},
            "initial-twin",
            id="reject/initial-twin",
        ),
        pytest.param({"enrollmentGroupId": "default"}, "exists", id="reject/duplicate"),
    ],
)
def test_enrollment_refusals(sqlite_api: Harness, body: Any, reason: str) -> None:
    response = sqlite_api.call("POST", f"{V1}/enrollments", json=body)
    _error(response, 409 if reason == "exists" else 400, reason)


# -- certificates and lifecycles ----------------------------------------------------------------


def _fleet(api: Harness) -> dict[str, str]:
    """Devices in every lifecycle; returns device id -> serial of its newest certificate."""
    start = api.clock.now()
    serials: dict[str, str] = {}
    api.clock.set(start - 40 * DAY)
    api.create_device("expired")
    serials["expired"] = api.issue("expired").serial_hex
    api.clock.set(start - 29 * DAY)
    api.create_device("overdue")
    serials["overdue"] = api.issue("overdue").serial_hex
    api.clock.set(start - 25 * DAY)
    api.create_device("due")
    serials["due"] = api.issue("due").serial_hex
    api.clock.set(start - 40 * DAY)
    api.create_device("renewed")
    api.issue("renewed")
    api.clock.set(start - 1 * DAY)
    serials["renewed"] = api.issue("renewed").serial_hex
    api.create_device("healthy")
    serials["healthy"] = api.issue("healthy").serial_hex
    api.create_device("off", status="disabled")
    api.issue("off")
    api.create_device("bare")
    api.create_device("gone")
    serials["gone"] = api.issue("gone").serial_hex
    api.clock.set(start)
    assert api.call("POST", f"{V1}/devices/gone/revoke", json={}).status_code == 200
    return serials


def test_device_lifecycles_are_derived_from_status_and_newest_certificate(api: Harness) -> None:
    serials = _fleet(api)
    listed = api.call("GET", f"{V1}/devices").json()
    lifecycles = {d["deviceId"]: d["lifecycle"] for d in listed["items"]}
    assert lifecycles == {
        "bare": "no-certificate",
        "due": "renewal-due",
        "expired": "expired",
        "gone": "revoked",
        "healthy": "healthy",
        "off": "disabled",
        "overdue": "overdue",
        "renewed": "healthy",
    }
    one = api.call("GET", f"{V1}/devices/renewed").json()
    assert one["certificate"]["serialNumber"] == serials["renewed"]
    overdue = api.call("GET", f"{V1}/devices", params={"lifecycle": "overdue"}).json()
    assert [d["deviceId"] for d in overdue["items"]] == ["overdue"]
    first = api.call("GET", f"{V1}/devices", params={"limit": 3}).json()
    assert [d["deviceId"] for d in first["items"]] == ["bare", "due", "expired"]
    rest = api.call("GET", f"{V1}/devices", params={"cursor": first["next"]}).json()
    assert rest["items"][0]["deviceId"] == "gone" and rest["next"] is None
    _error(api.call("GET", f"{V1}/devices", params={"lifecycle": "sad"}), 400, "invalid-lifecycle")
    _error(api.call("GET", f"{V1}/devices/nope"), 404, "not-found")


def test_certificate_inventory_filters(api: Harness) -> None:
    serials = _fleet(api)
    every = api.call("GET", f"{V1}/certificates", params={"limit": 1000}).json()["items"]
    assert len(every) == 8
    assert {c["policy"] for c in every} == {"default"}
    mine = api.call("GET", f"{V1}/certificates", params={"deviceId": "renewed"}).json()["items"]
    assert sorted(c["lifecycle"] for c in mine) == ["expired", "healthy"]

    def serials_for(**params: Any) -> set[str]:
        items = api.call("GET", f"{V1}/certificates", params=params).json()["items"]
        return {c["serialNumber"] for c in items}

    assert serials_for(state="overdue") == {serials["overdue"]}
    assert serials_for(state="renewal-due") == {serials["due"]}
    assert serials_for(state="revoked") == {serials["gone"]}
    expiring = (api.clock.now() + 7 * DAY).isoformat()
    soon = serials_for(expiringBefore=expiring, state="overdue")
    assert soon == {serials["overdue"]}
    page = api.call("GET", f"{V1}/certificates", params={"limit": 5}).json()
    more = api.call("GET", f"{V1}/certificates", params={"limit": 5, "cursor": page["next"]})
    assert len(page["items"]) + len(more.json()["items"]) == 8
    detail = api.call("GET", f"{V1}/certificates/{serials['healthy']}").json()
    assert detail["pem"].startswith("-----BEGIN CERTIFICATE-----")
    _error(api.call("GET", f"{V1}/certificates/abc"), 404, "not-found")
    _error(api.call("GET", f"{V1}/certificates", params={"state": "sad"}), 400, "invalid-state")
    naive = api.call("GET", f"{V1}/certificates", params={"expiringBefore": "2026-01-01T00:00:00"})
    _error(naive, 400, "naive-time")


# -- revocation and audit -----------------------------------------------------------------------


def test_revoke_device_rotates_id_revokes_certificates_and_audits(api: Harness) -> None:
    api.create_device("d1")
    first, second = api.issue("d1"), api.issue("d1")
    before = api.store.get_device("d1")
    assert before is not None
    last_event = api.store.last_event_id()
    response = api.call(
        "POST", f"{V1}/devices/d1/revoke", json={"reason": "key leaked", "disable": True}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "disabled"
    assert body["revokedSerials"] == sorted([first.serial_hex, second.serial_hex])
    after = api.store.get_device("d1")
    assert after is not None and after.revocation_id != before.revocation_id
    kinds = [e.kind for e in api.store.events_after(last_event)]
    assert "device.revocation" in kinds and kinds.count("certificate.revoked") == 2
    assert "device.status" in kinds
    audit = api.call("GET", f"{V1}/audit", params={"subjectId": "d1"}).json()["items"]
    assert audit[0]["action"] == "device.revoke"
    assert audit[0]["reason"] == "key leaked"
    assert audit[0]["actor"] == "admin-api"
    _error(api.call("POST", f"{V1}/devices/nope/revoke", json={}), 404, "not-found")


def test_audit_log_pages_newest_first(sqlite_api: Harness) -> None:
    for i in range(3):
        sqlite_api.call("POST", f"{V1}/policies", json={"name": f"pol{i}"})
    page = sqlite_api.call("GET", f"{V1}/audit", params={"subjectType": "policy", "limit": 2})
    first = page.json()
    assert [a["subjectId"] for a in first["items"]] == ["pol2", "pol1"]
    rest = sqlite_api.call(
        "GET", f"{V1}/audit", params={"subjectType": "policy", "cursor": first["next"]}
    ).json()
    assert [a["subjectId"] for a in rest["items"]] == ["pol0", "default"]
    assert rest["next"] is None


def test_lifecycle_follows_the_renewal_window_the_server_assigned(api: Harness) -> None:
    from certhub.registry._renewal import NewRenewalWindow

    api.create_device("w1")
    leaf = api.issue("w1")
    now = api.clock.now()

    def window(after: dt.timedelta, before: dt.timedelta) -> None:
        new = NewRenewalWindow(
            device_id="w1",
            serial_hex=leaf.serial_hex,
            not_before=leaf.not_before,
            not_after=leaf.not_after,
            renew_after=now + after,
            renew_before=now + before,
        )
        api.store.put_renewal_windows([new], now)

    def lifecycle() -> tuple[str, str]:
        device = api.call("GET", f"{V1}/devices/w1").json()["lifecycle"]
        cert = api.call("GET", f"{V1}/certificates/{leaf.serial_hex}").json()["lifecycle"]
        return device, cert

    assert lifecycle() == ("healthy", "healthy")  # a fresh 30-day certificate, no window
    window(-DAY, DAY)
    assert lifecycle() == ("renewal-due", "renewal-due")
    window(-2 * DAY, -DAY)
    assert lifecycle() == ("overdue", "overdue")
