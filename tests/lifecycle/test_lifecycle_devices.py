"""Device revocation, disable, enable and delete: refusals at CONNECT (exact CONNACK code
and reason), live sessions closed within a second, and recovery through DPS."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from lifecycle_support import (
    admin_client,
    closes_within,
    dps_register,
    refusals,
    revocation_id_in,
    serial_of,
)

from certhub.rand import SystemRandom
from certhub.registry.records import DeviceRecord
from serverkit import DeviceClient, DevicePems, RunningServer

NOT_AUTHORIZED = 5


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def revoke(running: RunningServer, device_id: str, pems: DevicePems) -> None:
    running.store.revoke_device(
        device_id, SystemRandom().token_bytes(32), now=_now(), actor="tests", reason="stolen"
    )


def revoke_serial(running: RunningServer, device_id: str, pems: DevicePems) -> None:
    running.store.set_certificate_state(serial_of(pems), "revoked", _now(), "key compromise")


def set_status(running: RunningServer, device_id: str, status: str) -> DeviceRecord:
    device = running.store.get_device(device_id)
    assert device is not None
    changed = dataclasses.replace(device, status=status, status_reason="tests")  # type: ignore[arg-type]
    return running.store.update_device_audited(changed, None, now=_now(), actor="tests")


def disable(running: RunningServer, device_id: str, pems: DevicePems) -> None:
    set_status(running, device_id, "disabled")


def delete(running: RunningServer, device_id: str, pems: DevicePems) -> None:
    running.store.delete_device_audited(device_id, now=_now(), actor="tests", reason="scrapped")


Change = Callable[[RunningServer, str, DevicePems], None]
CASES = [
    pytest.param(revoke, "revocation-id-mismatch", id="reject/revoked-identifier"),
    pytest.param(revoke_serial, "certificate-revoked", id="reject/revoked-serial"),
    pytest.param(disable, "device-disabled", id="reject/disabled"),
    pytest.param(delete, "device-not-found", id="reject/deleted"),
]


def provisioned(hub: RunningServer, device_id: str, directory: Path) -> DevicePems:
    """A device registered through DPS (default group) with its operational certificate."""
    registration = dps_register(hub, device_id, directory)
    assert registration.status == 200, registration.body
    assert registration.pems is not None
    return registration.pems


@pytest.mark.parametrize(("change", "reason"), CASES)
def test_a_change_closes_the_live_session_within_a_second_and_refuses_reconnects(
    hub: RunningServer, device_id: str, pems_dir: Path, change: Change, reason: str
) -> None:
    pems = provisioned(hub, device_id, pems_dir / "1")
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
        change(hub, device_id, pems)
        closes_within(client, 1.0)
    before = refusals(reason)
    with DeviceClient(hub, device_id, pems) as again:
        assert again.connect() == NOT_AUTHORIZED
    assert refusals(reason) == before + 1


@pytest.mark.parametrize(("change", "reason"), CASES)
def test_a_changed_device_is_refused_at_connect(
    hub: RunningServer, device_id: str, pems_dir: Path, change: Change, reason: str
) -> None:
    pems = provisioned(hub, device_id, pems_dir / "1")
    change(hub, device_id, pems)
    before = refusals(reason)
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == NOT_AUTHORIZED
    assert refusals(reason) == before + 1


def test_revoked_device_provisions_again_and_gets_the_new_identifier(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    old = provisioned(hub, device_id, pems_dir / "1")
    old_serial = serial_of(old)
    with admin_client(hub) as api:
        answer = api.post(f"/certhub/v1/devices/{device_id}/revoke", json={"reason": "stolen"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "deviceId": device_id,
        "status": "enabled",
        "revokedSerials": [old_serial],
    }
    cert = hub.store.get_certificate(old_serial)
    assert cert is not None
    assert (cert.state, cert.revocation_reason) == ("revoked", "stolen")
    new = provisioned(hub, device_id, pems_dir / "2")
    device = hub.store.get_device(device_id)
    assert device is not None
    assert revocation_id_in(new) == device.revocation_id != revocation_id_in(old)
    with DeviceClient(hub, device_id, new) as client:
        assert client.connect() == 0
    with DeviceClient(hub, device_id, old) as client:
        assert client.connect() == NOT_AUTHORIZED
    actions = [a.action for a in hub.store.list_audit("device", device_id)]
    assert "device.revoke" in actions


def test_revoke_and_disable_refuses_dps_until_enabled(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    old = provisioned(hub, device_id, pems_dir / "1")
    with admin_client(hub) as api:
        body = {"reason": "lost", "disable": True}
        answer = api.post(f"/certhub/v1/devices/{device_id}/revoke", json=body)
    assert answer.json()["status"] == "disabled"
    refused = dps_register(hub, device_id, pems_dir / "2")
    assert refused.status == 200
    assert refused.body["status"] == "disabled"
    assert refused.state["errorCode"] == 401004
    assert refused.pems is None
    set_status(hub, device_id, "enabled")
    with DeviceClient(hub, device_id, old) as client:
        assert client.connect() == NOT_AUTHORIZED  # enabling does not un-revoke
    new = provisioned(hub, device_id, pems_dir / "3")
    with DeviceClient(hub, device_id, new) as client:
        assert client.connect() == 0


def test_enable_restores_access_with_the_certificate_it_holds(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = provisioned(hub, device_id, pems_dir / "1")
    disable(hub, device_id, pems)
    refused = dps_register(hub, device_id, pems_dir / "2")
    assert (refused.body["status"], refused.state["errorCode"]) == ("disabled", 401004)
    set_status(hub, device_id, "enabled")
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
    actions = [a.action for a in hub.store.list_audit("device", device_id)]
    assert actions[:2] == ["device.enable", "device.disable"]


def test_delete_keeps_history_and_the_device_can_provision_again(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    old = provisioned(hub, device_id, pems_dir / "1")
    with admin_client(hub) as api:
        assert api.delete(f"/devices/{device_id}").status_code == 204
    assert hub.store.get_device(device_id) is None
    assert hub.store.get_certificate(serial_of(old)) is not None
    audit = hub.store.list_audit("device", device_id)
    assert audit[0].action == "device.delete" and audit[0].actor == "service-api"
    assert any(a.action == "certificate.issue" for a in audit)
    with DeviceClient(hub, device_id, old) as client:
        assert client.connect() == NOT_AUTHORIZED
    new = provisioned(hub, device_id, pems_dir / "2")
    with DeviceClient(hub, device_id, new) as client:
        assert client.connect() == 0


def test_disable_through_the_service_api_is_audited_and_closes_the_session(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = provisioned(hub, device_id, pems_dir / "1")
    with DeviceClient(hub, device_id, pems) as client, admin_client(hub) as api:
        assert client.connect() == 0
        current = api.get(f"/devices/{device_id}").json()
        body = {**current, "status": "disabled", "statusReason": "maintenance"}
        headers = {"If-Match": current["etag"]}
        assert api.put(f"/devices/{device_id}", json=body, headers=headers).status_code == 200
        closes_within(client, 1.0)
    entry = hub.store.list_audit("device", device_id)[0]
    assert (entry.action, entry.actor, entry.reason) == (
        "device.disable",
        "service-api",
        "maintenance",
    )


def test_revoking_an_unknown_device_is_404(hub: RunningServer) -> None:
    with admin_client(hub) as api:
        answer = api.post("/certhub/v1/devices/nobody/revoke", json={})
    assert answer.status_code == 404
