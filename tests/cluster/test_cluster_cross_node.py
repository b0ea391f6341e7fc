"""Cross-node behaviour: three in-process nodes (own loops) on one PostgreSQL store.

A device connects to one node; the change or request arrives at another. Each node
follows the ``events`` table, woken by ``NOTIFY``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import secrets
import time
from pathlib import Path

import pytest
from cluster_support import wait_for
from prometheus_client import REGISTRY

from certhub.hub import DeviceNotConnected, MethodTimeout
from serverkit import DeviceClient, RunningServer, device_with_certificate, make_key_and_csr

METHODS = "$iothub/methods/POST/"
C2D = "devices/{}/messages/devicebound/#"
RESPONSES = "$iothub/credentials/res/"
ISSUE = "$iothub/credentials/POST/issueCertificate/?$rid="


def _closed(reason: str) -> float:
    value = REGISTRY.get_sample_value("certhub_hub_sessions_closed_total", {"reason": reason})
    return value or 0.0


def _change(store_node: RunningServer, action: str, device_id: str, serial: str) -> None:
    store, now = store_node.store, dt.datetime.now(dt.UTC)
    if action == "disable":
        device = store.get_device(device_id)
        assert device is not None
        store.update_device(dataclasses.replace(device, status="disabled"), None, now=now)
    elif action == "delete":
        store.delete_device(device_id)
    elif action == "revoke":
        store.set_certificate_state(serial, "revoked", now, "test")


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        pytest.param("disable", "device-disabled", id="disable"),
        pytest.param("delete", "device-deleted", id="delete"),
        pytest.param("revoke", "certificate-revoked", id="revoke"),
    ],
)
def test_a_change_on_one_node_closes_the_session_on_another_within_a_second(
    nodes: list[RunningServer], pems_dir: Path, action: str, reason: str
) -> None:
    a, b, _ = nodes
    device_id = f"dev-{action}"
    pems = device_with_certificate(a, device_id, pems_dir)
    assert pems.leaf is not None
    with DeviceClient(b, device_id, pems) as client:
        assert client.connect() == 0
        before = _closed(reason)
        started = time.monotonic()
        _change(a, action, device_id, pems.leaf.serial_hex)
        assert client.wait_disconnected(1.0)
        assert time.monotonic() - started < 1.0
        assert wait_for(lambda: _closed(reason) == before + 1, 2.0)


def test_a_desired_patch_through_one_node_reaches_the_device_on_another(
    nodes: list[RunningServer], pems_dir: Path
) -> None:
    a, b, _ = nodes
    pems = device_with_certificate(a, "dev-twin", pems_dir)
    with DeviceClient(b, "dev-twin", pems) as client:
        assert client.connect() == 0
        client.subscribe("$iothub/twin/PATCH/properties/desired/#")
        version = a.call(a.server.hub.patch_desired("dev-twin", {"mode": "eco"}))
        message = client.expect(f"$iothub/twin/PATCH/properties/desired/?$version={version}", 2)
        assert json.loads(message.payload) == {"mode": "eco", "$version": version}


def test_a_method_invoked_on_one_node_reaches_the_device_on_another(
    nodes: list[RunningServer], pems_dir: Path
) -> None:
    a, b, _ = nodes
    pems = device_with_certificate(a, "dev-method", pems_dir)
    with DeviceClient(b, "dev-method", pems) as client:
        assert client.connect() == 0
        assert client.subscribe(METHODS + "#") == [1]

        def answer(_c: object, _u: object, message: object) -> None:
            topic = message.topic  # type: ignore[attr-defined]
            rid = topic.split("$rid=")[1]
            body = json.dumps({"echo": json.loads(message.payload)})  # type: ignore[attr-defined]
            client.client.publish(f"$iothub/methods/res/201/?$rid={rid}", body)

        client.client.message_callback_add(METHODS + "#", answer)
        started = time.monotonic()
        status, payload = a.call(a.server.hub.invoke_method("dev-method", "reboot", {"n": 1}, 5))
        assert (status, payload) == (201, {"echo": {"n": 1}})
        assert time.monotonic() - started < 1.0


def test_a_relayed_method_the_device_ignores_times_out_as_asked(
    nodes: list[RunningServer], pems_dir: Path
) -> None:
    a, b, _ = nodes
    pems = device_with_certificate(a, "dev-silent", pems_dir)
    with DeviceClient(b, "dev-silent", pems) as client:
        assert client.connect() == 0
        assert client.subscribe(METHODS + "#") == [1]
        started = time.monotonic()
        with pytest.raises(MethodTimeout) as caught:
            a.call(a.server.hub.invoke_method("dev-silent", "reboot", None, 1.0))
        assert caught.value.timeout == 1.0
        assert 1.0 <= time.monotonic() - started < 3.5


@pytest.mark.parametrize(
    ("subscribe", "reason"),
    [
        pytest.param(False, "not-subscribed", id="reject/not-subscribed-on-other-node"),
        pytest.param(None, "offline", id="reject/connected-nowhere"),
    ],
)
def test_a_relayed_method_to_an_unreachable_device_is_refused(
    nodes: list[RunningServer], pems_dir: Path, subscribe: bool | None, reason: str
) -> None:
    a, b, _ = nodes
    device_id = f"dev-away-{reason}"
    pems = device_with_certificate(a, device_id, pems_dir)
    with DeviceClient(b, device_id, pems) as client:
        if subscribe is not None:
            assert client.connect() == 0
        with pytest.raises(DeviceNotConnected) as caught:
            a.call(a.server.hub.invoke_method(device_id, "reboot", None, 5.0))
        assert caught.value.reason == reason


def test_a_c2d_message_sent_through_one_node_reaches_the_device_on_another(
    nodes: list[RunningServer], pems_dir: Path
) -> None:
    a, b, c = nodes
    pems = device_with_certificate(a, "dev-c2d", pems_dir)
    with DeviceClient(b, "dev-c2d", pems) as client:
        assert client.connect() == 0
        assert client.subscribe(C2D.format("dev-c2d")) == [1]
        assert a.call(a.server.hub.send_c2d("dev-c2d", b"hello", {"k": "v"})) is False
        message = client.expect("devices/dev-c2d/messages/devicebound/", 2)
        assert message.payload == b"hello" and "k=v" in message.topic
    # offline: queued on every node, delivered once by the node the device connects to
    assert a.call(a.server.hub.send_c2d("dev-c2d", b"later")) is False
    time.sleep(0.5)
    with DeviceClient(c, "dev-c2d", pems) as client:
        assert client.connect() == 0
        assert client.subscribe(C2D.format("dev-c2d")) == [1]
        assert client.expect("devices/dev-c2d/messages/devicebound/", 2).payload == b"later"
    time.sleep(0.5)  # node a heard of the session on c and dropped its copy
    with DeviceClient(a, "dev-c2d", pems) as client:
        assert client.connect() == 0
        assert client.subscribe(C2D.format("dev-c2d")) == [1]
        with pytest.raises(AssertionError):
            client.expect("devices/dev-c2d/messages/devicebound/", 1)


def test_one_connection_per_device_holds_across_nodes(
    nodes: list[RunningServer], pems_dir: Path
) -> None:
    a, b, _ = nodes
    pems = device_with_certificate(a, "dev-twice", pems_dir)
    reason = "replaced-by-connection-on-another-node"
    before = _closed(reason)
    with DeviceClient(a, "dev-twice", pems) as first, DeviceClient(b, "dev-twice", pems) as second:
        assert first.connect() == 0
        time.sleep(0.05)
        assert second.connect() == 0
        assert first.wait_disconnected(1.0)
        assert not second.wait_disconnected(0.5)
        assert wait_for(lambda: _closed(reason) == before + 1, 2.0)
        assert "dev-twice" in b.server.hub_frontend.sessions
        assert "dev-twice" not in a.server.hub_frontend.sessions


def test_a_renewal_accepted_on_one_node_is_answered_on_the_next(
    nodes: list[RunningServer], pems_dir: Path
) -> None:
    a, b, _ = nodes
    pems = device_with_certificate(a, "dev-moves", pems_dir)
    _key, csr = make_key_and_csr("dev-moves")
    body = json.dumps({"id": "dev-moves", "csr": base64.b64encode(csr).decode(), "replace": None})
    rid = secrets.token_hex(4)
    with DeviceClient(a, "dev-moves", pems) as client:
        assert client.connect() == 0
        # not subscribed to the responses: the final 200 waits in the store
        assert client.publish(ISSUE + rid, body)
        assert wait_for(lambda: _operation_state(a, "dev-moves") == "completed", 10)
    with DeviceClient(b, "dev-moves", pems) as client:
        assert client.connect() == 0
        assert client.subscribe(RESPONSES + "#") == [1]
        message = client.expect(f"{RESPONSES}200/?$rid={rid}", 5)
        assert json.loads(message.payload)["certificates"]


def test_a_renewal_finishing_after_the_device_moved_reaches_it_on_the_new_node(
    nodes: list[RunningServer], pems_dir: Path
) -> None:
    a, b, _ = nodes
    pems = device_with_certificate(a, "dev-race", pems_dir)
    with DeviceClient(b, "dev-race", pems) as client:
        assert client.connect() == 0
        assert client.subscribe(RESPONSES + "#") == [1]
        time.sleep(0.3)  # node a knows the device is elsewhere
        # node a finishes an operation for the device (as if accepted before it moved)
        _pending_response(a, "dev-race")
        message = client.expect(RESPONSES, 5)
        assert message.topic == f"{RESPONSES}200/?$rid=moved-1"
        assert json.loads(message.payload)["certificates"]


def _operation_state(node: RunningServer, device_id: str) -> str | None:
    ops = node.store.list_operations(device_id=device_id, limit=10)
    return ops[0].state if ops else None


def _pending_response(node: RunningServer, device_id: str) -> None:
    """Accept and complete a renewal on ``node`` while the device listens elsewhere."""
    _key, csr = make_key_and_csr(device_id)
    body = json.dumps({"id": device_id, "csr": base64.b64encode(csr).decode(), "replace": None})
    renewal = node.server._renewal
    assert renewal is not None
    node.call(renewal.handle_request(device_id, "moved-1", body.encode()))
