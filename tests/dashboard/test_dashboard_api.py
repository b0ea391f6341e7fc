"""The dashboard's JSON routes and ``/metrics`` on a real server with a small fleet.

Counts must equal the admin API's; revoke and disable act on the store and are audited;
the page's data needs the dashboard token unless the server is in the development
profile, bound to loopback and asked from loopback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetkit import EXPECTED, Fleet, admin_counts, fleet_server

from certhub.bootstrap import service_keys
from certhub.dashboard import dashboard_token

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_server(tmp_path) as running:
        yield running


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A production-profile server (no fleet): the dashboard needs its token."""
    with fleet_server(tmp_path_factory.mktemp("locked"), development=False, populate=False) as f:
        yield f


def test_overview_counts_equal_the_admin_api(fleet: Fleet) -> None:
    with fleet.client() as client:
        overview = client.get("/dashboard/api/overview").json()
    assert overview["counts"] == admin_counts(fleet) == EXPECTED
    assert overview["total"] == sum(EXPECTED.values())
    assert overview["development"] is True
    timeline = overview["timeline"]
    assert timeline["horizonSeconds"] == pytest.approx(7200 + 300, abs=1)  # 2 h + backdate
    assert sum(timeline["expiries"]) == 6 + 3 + 2  # live certificates, all within 2 h
    assert sum(timeline["issued"]) >= 6  # those issued "now" fall in the recent window


def test_metrics_export_counts_cas_node_and_issuance(fleet: Fleet) -> None:
    with fleet.client() as client:
        text = client.get("/metrics").text
    for lifecycle, count in EXPECTED.items():
        assert f'certhub_devices{{lifecycle="{lifecycle}"}} {float(count)}' in text
    assert re.search(r'certhub_node_info\{node="[^"]+"\} 1\.0', text)
    assert re.search(r'certhub_ca_expiry_seconds\{ca="root",kind="root"\} \d', text)
    issued = re.search(r'certhub_certificates_issued_total\{via="cli"\} (\d+)', text)
    assert issued is not None and float(issued.group(1)) >= 16
    assert "certhub_hub_refusals" in text or "certhub_hub_connections" in text


def test_at_risk_lists_expired_and_overdue_first_and_search_filters(fleet: Fleet) -> None:
    with fleet.client() as client:
        items = client.get("/dashboard/api/devices").json()["items"]
        found = client.get("/dashboard/api/devices", params={"search": "REVOKED-A"}).json()
    phases = [i["lifecycle"] for i in items]
    assert phases[:4] == ["expired", "expired", "overdue", "overdue"]
    assert "revoked" not in phases and "disabled" not in phases
    assert [i["deviceId"] for i in found["items"]] == ["revoked-a"]


def test_a_longer_page_of_at_risk_devices_comes_from_the_store(fleet: Fleet) -> None:
    with fleet.client() as client:
        cached = client.get("/dashboard/api/devices", params={"limit": 3}).json()["items"]
        live = client.get("/dashboard/api/devices", params={"limit": 500}).json()["items"]
        refused = client.get("/dashboard/api/devices", params={"limit": 501})
    assert live[:3] == cached
    assert len(live) == 14  # every device but the revoked and disabled ones
    assert refused.status_code == 422


def test_device_detail_has_history_twin_and_audit(fleet: Fleet) -> None:
    with fleet.client() as client:
        detail = client.get("/dashboard/api/devices/revoked-b").json()
    assert detail["lifecycle"] == "revoked"
    assert [c["state"] for c in detail["certificates"]] == ["revoked"]
    assert detail["twin"]["deviceId"] == "revoked-b"
    assert "device.revoke" in [a["action"] for a in detail["audit"]]


def test_revoke_and_disable_through_the_dashboard(fleet: Fleet) -> None:
    with fleet.client() as client:
        revoked = client.post("/dashboard/api/devices/dev-00-healthy/revoke", json={})
        disabled = client.post("/dashboard/api/devices/dev-01-healthy/disable", json={})
        overview = client.get("/dashboard/api/overview").json()
        audit = client.get("/dashboard/api/devices/dev-01-healthy").json()["audit"]
    assert revoked.status_code == 200 and len(revoked.json()["revokedSerials"]) == 1
    assert disabled.json() == {"deviceId": "dev-01-healthy", "status": "disabled"}
    assert overview["counts"]["revoked"] == EXPECTED["revoked"] + 1
    assert overview["counts"]["disabled"] == EXPECTED["disabled"] + 1
    assert overview["counts"] == admin_counts(fleet)
    assert (audit[0]["action"], audit[0]["actor"]) == ("device.disable", "dashboard")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("post", "/dashboard/api/devices/nobody/revoke", id="reject/revoke-unknown"),
        pytest.param("post", "/dashboard/api/devices/nobody/disable", id="reject/disable-unknown"),
        pytest.param("get", "/dashboard/api/devices/nobody", id="reject/detail-unknown"),
        pytest.param("get", "/dashboard/static/secrets.txt", id="reject/static-unknown"),
    ],
)
def test_unknown_things_are_404(fleet: Fleet, method: str, path: str) -> None:
    with fleet.client() as client:
        response = client.request(method.upper(), path, json={} if method == "post" else None)
    assert response.status_code == 404


def test_page_and_assets_are_served(fleet: Fleet) -> None:
    with fleet.client() as client:
        redirect = client.get("/dashboard")
        page = client.get("/dashboard/")
        script = client.get("/dashboard/static/app.js")
    assert redirect.status_code == 307 and redirect.headers["location"] == "/dashboard/"
    assert page.headers["content-type"].startswith("text/html") and "app.js" in page.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert "https://" not in page.text + script.text  # nothing from the internet


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="reject/no-token"),
        pytest.param("Bearer not-the-token", id="reject/wrong-token"),
        pytest.param("SharedAccessSignature sr=x&sig=y&se=1", id="reject/not-bearer"),
    ],
)
def test_locked_dashboard_refuses_without_the_token(
    locked: Fleet, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with locked.client(**headers) as client:
        response = client.get("/dashboard/api/overview")
        session = client.get("/dashboard/api/session").json()
    assert response.status_code == 401
    assert response.json()["detail"] == "dashboard token required"
    assert session["loginRequired"] is True


@pytest.mark.parametrize("key_name", ["primaryKey", "secondaryKey"])
def test_locked_dashboard_accepts_the_derived_token(locked: Fleet, key_name: str) -> None:
    key = service_keys(locked.running.store)["iothubowner"][key_name]
    with locked.client(Authorization=f"Bearer {dashboard_token(key)}") as client:
        response = client.get("/dashboard/api/overview")
    assert response.status_code == 200 and response.json()["development"] is False


def test_development_server_on_all_interfaces_is_not_open(tmp_path: Path) -> None:
    from serverkit import running_server

    with running_server(tmp_path / "data", https_port=0, bind="0.0.0.0") as running:
        url = f"https://127.0.0.1:{running.server.https_port}"
        import httpx

        with httpx.Client(base_url=url, verify=False) as client:
            session = client.get("/dashboard/api/session").json()
            response = client.get("/dashboard/api/overview")
    assert session["loginRequired"] is True and session["development"] is True
    assert response.status_code == 401


def test_query_box_runs_the_iot_hub_query_language(fleet: Fleet) -> None:
    text = "SELECT deviceId FROM devices WHERE status = 'disabled'"
    count = "SELECT COUNT() AS n FROM certificates WHERE state = 'revoked'"
    with fleet.client() as client:
        disabled = client.post("/dashboard/api/query", json={"query": text}).json()
        revoked = client.post("/dashboard/api/query", json={"query": count}).json()
    assert disabled == {"items": [{"deviceId": "off-01"}], "itemType": "raw", "more": False}
    assert revoked["items"] == [{"n": 2}]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("SELEC * FROM devices", "query-syntax", id="reject/syntax"),
        pytest.param("SELECT * FROM jobs", "query-unknown-collection", id="reject/collection"),
    ],
)
def test_query_box_reports_bad_queries(fleet: Fleet, text: str, reason: str) -> None:
    with fleet.client() as client:
        response = client.post("/dashboard/api/query", json={"query": text})
    assert response.status_code == 400 and response.json()["reason"] == reason


def test_locked_query_needs_the_token(locked: Fleet) -> None:
    with locked.client() as client:
        response = client.post("/dashboard/api/query", json={"query": "SELECT * FROM devices"})
    assert response.status_code == 401
