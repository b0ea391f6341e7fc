"""Policy issuer lifecycle on a running server: revoke-issuer, delete, rotate, retire."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lifecycle_support import (
    add_group,
    admin_client,
    closes_within,
    dps_register,
    leaf_of,
    lifecycle,
    refusals,
    serial_of,
)

from certhub.clock import FixedClock
from certhub.issuer_lifecycle import IssuerLifecycle
from certhub.registry.errors import NotFound
from certhub.registry.records import CaRecord
from serverkit import DeviceClient, DevicePems, RunningServer, create_policy, open_authority

_names = itertools.count(1)


def new_policy(hub: RunningServer, validity: str = "1h") -> tuple[str, str]:
    """A policy with its own enrollment group; (policy name, group key)."""
    name = f"pol-{next(_names)}"
    create_policy(hub, name, validity)
    return name, add_group(hub, f"grp-{name}", name)


def issuing_cas(hub: RunningServer, policy: str) -> list[CaRecord]:
    ns = hub.store.get_namespace("default")
    assert ns is not None
    record = hub.store.get_policy(ns.id, policy)
    assert record is not None
    return hub.store.list_cas(ns.id, kind="issuing", policy_id=record.id)


def provision(hub: RunningServer, device_id: str, key: str, directory: Path) -> DevicePems:
    registration = dps_register(hub, device_id, directory, key)
    assert registration.status == 200, registration.body
    assert registration.pems is not None
    return registration.pems


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_revoke_issuer_closes_sessions_refuses_old_leaves_and_dps_issues_from_the_new_ca(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    policy, key = new_policy(hub)
    old_pems = provision(hub, device_id, key, pems_dir / "1")
    [old_ca] = issuing_cas(hub, policy)
    with DeviceClient(hub, device_id, old_pems) as client:
        assert client.connect() == 0
        with admin_client(hub) as api:
            answer = api.post(
                f"/certhub/v1/policies/{policy}/revoke-issuer", json={"reason": "ca key leaked"}
            )
        closes_within(client, 1.0)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["previousCas"][0]["state"] == "revoked"
    assert body["revokedCertificates"] == 1
    old_ca_now, new_ca = issuing_cas(hub, policy)
    assert (old_ca_now.id, old_ca_now.state, new_ca.state) == (old_ca.id, "revoked", "active")
    assert old_ca_now.revoked_at is not None
    assert old_ca_now.revocation_reason == "ca key leaked"
    assert body["issuingCa"]["serialNumber"] == new_ca.serial_hex
    leaf = hub.store.get_certificate(serial_of(old_pems))
    assert leaf is not None and (leaf.state, leaf.revocation_reason) == ("revoked", "ca key leaked")
    before = refusals("issuer-not-a-policy-ca")
    with DeviceClient(hub, device_id, old_pems) as client:
        assert client.connect() == 5
    assert refusals("issuer-not-a-policy-ca") == before + 1
    new_pems = provision(hub, device_id, key, pems_dir / "2")
    assert leaf_of(new_pems).issuer.rfc4514_string() == new_ca.subject
    cert = hub.store.get_certificate(serial_of(new_pems))
    assert cert is not None and cert.issuer_ca_id == new_ca.id
    with DeviceClient(hub, device_id, new_pems) as client:
        assert client.connect() == 0
    audit = [(a.action, a.actor) for a in hub.store.list_audit("policy", policy)]
    assert audit[0] == ("policy.revoke-issuer", "admin-api")
    assert hub.store.list_audit("ca", old_ca.serial_hex)[0].action == "ca.revoke"


def test_delete_policy_keeps_certificates_working_and_refuses_dps(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    policy, key = new_policy(hub)
    pems = provision(hub, device_id, key, pems_dir / "1")
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
        with admin_client(hub) as api:
            answer = api.request("DELETE", f"/certhub/v1/policies/{policy}", json={"reason": "eol"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == "deleted"
        time.sleep(1.0)  # the change feed has delivered policy.changed by now
        assert not client.record.disconnected.is_set()
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
    wait_for(lambda: _dps_refuses(hub, device_id, key, pems_dir))
    refused = dps_register(hub, device_id, pems_dir / "3", key)
    assert refused.status == 400
    assert refused.body["errorCode"] == 400005
    assert policy in refused.body["message"]
    [ca] = issuing_cas(hub, policy)
    assert ca.state == "active"  # trusted until its last leaf expires
    assert hub.store.list_audit("policy", policy)[0].action == "policy.delete"


def _dps_refuses(hub: RunningServer, device_id: str, key: str, pems_dir: Path) -> bool:
    return dps_register(hub, device_id, pems_dir / "probe", key).status == 400


def test_rotate_issuer_keeps_sessions_and_new_issuance_uses_the_successor(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    policy, key = new_policy(hub)
    old_pems = provision(hub, device_id, key, pems_dir / "1")
    with DeviceClient(hub, device_id, old_pems) as client:
        assert client.connect() == 0
        with admin_client(hub) as api:
            answer = api.post(f"/certhub/v1/policies/{policy}/rotate-issuer", json={})
        assert answer.status_code == 200, answer.text
        time.sleep(1.0)
        assert not client.record.disconnected.is_set()
    old_ca, new_ca = issuing_cas(hub, policy)
    assert (old_ca.state, new_ca.state) == ("active", "active")
    assert answer.json()["issuingCa"]["serialNumber"] == new_ca.serial_hex
    assert "G2" in new_ca.subject
    new_pems = provision(hub, f"{device_id}-b", key, pems_dir / "2")
    assert leaf_of(new_pems).issuer.rfc4514_string() == new_ca.subject
    for name, pems in ((device_id, old_pems), (f"{device_id}-b", new_pems)):
        with DeviceClient(hub, name, pems) as client:
            assert client.connect() == 0


def test_retirement_waits_for_the_last_leaf_then_the_old_ca_is_no_longer_trusted(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    policy, key = new_policy(hub, "1h")
    old_pems = provision(hub, device_id, key, pems_dir / "1")
    lc = lifecycle(hub)
    lc.rotate_issuer(policy, actor="tests")
    old_ca, new_ca = issuing_cas(hub, policy)
    assert old_ca.id not in {c.id for c in lc.retire_drained()}  # a leaf is still valid
    later = FixedClock(leaf_of(old_pems).not_valid_after_utc + dt.timedelta(seconds=1))
    future = IssuerLifecycle(open_authority(hub.data_dir, hub.store, later))
    retired = future.retire_drained(actor="tests")
    assert old_ca.id in {c.id for c in retired}
    assert new_ca.id not in {c.id for c in retired}  # the current issuer is kept
    assert issuing_cas(hub, policy)[0].state == "retired"
    assert hub.store.list_audit("ca", old_ca.serial_hex)[0].action == "ca.retire"
    assert future.retire_drained() == []  # idempotent
    hub.refresh_trust()
    with DeviceClient(hub, device_id, old_pems) as client:
        assert client.connect() == 5


def test_a_deleted_policy_retires_its_ca_once_drained(hub: RunningServer) -> None:
    policy, _ = new_policy(hub)
    lc = lifecycle(hub)
    [ca] = issuing_cas(hub, policy)
    assert ca.id not in {c.id for c in lc.retire_drained()}  # current issuer: kept
    lc.delete_policy(policy, actor="tests")
    assert ca.id in {c.id for c in lc.retire_drained()}  # no leaves at all


@pytest.mark.parametrize(
    "action",
    [
        pytest.param("revoke_issuer", id="reject/revoke-issuer-unknown"),
        pytest.param("rotate_issuer", id="reject/rotate-issuer-unknown"),
        pytest.param("delete_policy", id="reject/delete-unknown"),
    ],
)
def test_actions_on_an_unknown_policy_are_not_found(hub: RunningServer, action: str) -> None:
    with pytest.raises(NotFound):
        getattr(lifecycle(hub), action)("no-such-policy", actor="tests")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("POST", "revoke-issuer", id="reject/api-revoke-issuer-unknown"),
        pytest.param("POST", "rotate-issuer", id="reject/api-rotate-issuer-unknown"),
        pytest.param("DELETE", "", id="reject/api-delete-unknown"),
    ],
)
def test_admin_api_answers_404_for_an_unknown_policy(
    hub: RunningServer, method: str, path: str
) -> None:
    url = f"/certhub/v1/policies/nope/{path}".rstrip("/")
    with admin_client(hub) as api:
        answer = api.request(method, url)
    assert answer.status_code == 404
    assert "no active policy" in answer.text


def test_deleted_policy_cannot_be_deleted_or_rotated_again(hub: RunningServer) -> None:
    policy, _ = new_policy(hub)
    lc = lifecycle(hub)
    lc.delete_policy(policy, actor="tests")
    with pytest.raises(NotFound):
        lc.delete_policy(policy, actor="tests")
    with pytest.raises(NotFound):
        lc.rotate_issuer(policy, actor="tests")


def test_expiring_cas_are_listed_soonest_first(hub: RunningServer) -> None:
    lc = lifecycle(hub)
    assert lc.expiring(dt.timedelta(days=1)) == []
    soon = lc.expiring(dt.timedelta(days=366))  # issuing CAs are valid 365 days
    assert soon and all(c.state in ("active", "successor") for c in soon)
    assert [c.not_after for c in soon] == sorted(c.not_after for c in soon)
    with admin_client(hub) as api:
        listed = api.get("/certhub/v1/cas", params={"expiringWithin": "366d"}).json()["items"]
        bad = api.get("/certhub/v1/cas", params={"expiringWithin": "soon"})
    assert [c["id"] for c in listed] == [c.id for c in soon]
    assert bad.status_code == 400
