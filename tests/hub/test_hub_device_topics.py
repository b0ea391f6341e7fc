"""Every device topic of the hub over paho-mqtt 2, and the service-side API behind them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certhub.hub import (
    DeviceNotConnected,
    DeviceNotFound,
    MethodTimeout,
    TelemetryMessage,
    TwinError,
)
from serverkit import DeviceClient, RunningServer, device_with_certificate


@pytest.fixture
def device(hub: RunningServer, device_id: str, pems_dir: Path) -> Iterator[DeviceClient]:
    """A connected device subscribed to twin responses, desired patches, methods and C2D."""
    pems = device_with_certificate(hub, device_id, pems_dir)
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
        for topic in (
            "$iothub/twin/res/#",
            "$iothub/twin/PATCH/properties/desired/#",
            "$iothub/methods/POST/#",
            f"devices/{device_id}/messages/devicebound/#",
        ):
            assert client.subscribe(topic) == [1]
        yield client


def _telemetry_of(hub: RunningServer, device_id: str) -> list[TelemetryMessage]:
    buffer = hub.server.hub.telemetry
    found: list[TelemetryMessage] = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not found:
        for _ in range(len(buffer)):
            message = buffer.get_nowait()
            if message is not None and message.device_id == device_id:
                found.append(message)
        time.sleep(0.02)
    return found


def test_telemetry_is_acknowledged_and_its_property_bag_parsed(
    hub: RunningServer, device: DeviceClient
) -> None:
    topic = (
        f"devices/{device.device_id}/messages/events/%24.mid=m1&%24.ct=application%2Fjson&flag&e="
    )
    assert device.publish(topic, b'{"t": 21}', qos=1)
    (message,) = _telemetry_of(hub, device.device_id)
    assert message.payload == b'{"t": 21}'
    assert message.properties == {"$.mid": "m1", "$.ct": "application/json", "flag": None, "e": ""}


def test_twin_get_returns_both_sections_with_versions(
    hub: RunningServer, device: DeviceClient
) -> None:
    device.publish("$iothub/twin/GET/?$rid=1", b" ")
    response = device.expect("$iothub/twin/res/")
    assert response.topic == "$iothub/twin/res/200/?$rid=1"
    twin = hub.store.get_twin(device.device_id)
    assert json.loads(response.payload) == {
        "desired": {**twin.desired, "$version": twin.desired_version},
        "reported": {"$version": 1},
    }


def test_reported_patch_bumps_the_version_and_keeps_metadata(
    hub: RunningServer, device: DeviceClient
) -> None:
    device.publish("$iothub/twin/PATCH/properties/reported/?$rid=a", json.dumps({"fw": {"v": 1}}))
    assert device.expect("$iothub/twin/res/").topic == "$iothub/twin/res/204/?$rid=a&$version=2"
    device.publish("$iothub/twin/PATCH/properties/reported/?$rid=b", b'{"fw": null, "x": 2}')
    assert device.expect("$iothub/twin/res/").topic == "$iothub/twin/res/204/?$rid=b&$version=3"
    twin = hub.store.get_twin(device.device_id)
    assert twin.reported == {"x": 2}
    assert set(twin.metadata["reported"]) == {"$lastUpdated", "x"}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{oops", id="reject/malformed-json"),
        pytest.param(json.dumps({"big": "x" * 33_000}).encode(), id="reject/over-32KiB"),
        pytest.param(b'{"a.b": 1}', id="reject/invalid-key"),
    ],
)
def test_bad_reported_patches_get_400(
    hub: RunningServer, device: DeviceClient, body: bytes
) -> None:
    device.publish("$iothub/twin/PATCH/properties/reported/?$rid=9", body)
    response = device.expect("$iothub/twin/res/")
    assert response.topic == "$iothub/twin/res/400/?$rid=9"
    assert json.loads(response.payload)["errorCode"] == 400004
    assert hub.store.get_twin(device.device_id).reported_version == 1
    assert not device.wait_disconnected(0.1)


def test_desired_patch_from_the_service_is_notified(
    hub: RunningServer, device: DeviceClient
) -> None:
    version = hub.call(hub.server.hub.patch_desired(device.device_id, {"interval": 5}))
    message = device.expect("$iothub/twin/PATCH/properties/desired/")
    if "certificateRenewal" in json.loads(message.payload):
        # the renewal window written when the device's certificate became active (its
        # notification comes through the change feed, so before or after this patch's)
        message = device.expect("$iothub/twin/PATCH/properties/desired/")
    assert message.topic == f"$iothub/twin/PATCH/properties/desired/?$version={version}"
    assert json.loads(message.payload) == {"interval": 5, "$version": version}
    twin = hub.call(hub.server.hub.get_twin(device.device_id))
    desired = twin["properties"]["desired"]
    assert desired["interval"] == 5
    assert desired["$metadata"]["interval"]["$lastUpdatedVersion"] == version


def test_service_desired_patch_is_validated(hub: RunningServer, device: DeviceClient) -> None:
    with pytest.raises(TwinError):
        hub.call(hub.server.hub.patch_desired(device.device_id, {"a.b": 1}))


def test_direct_method_round_trip(hub: RunningServer, device: DeviceClient) -> None:
    call = asyncio.run_coroutine_threadsafe(
        hub.server.hub.invoke_method(device.device_id, "reboot", {"delay": 3}, 5), hub.loop
    )
    request = device.expect("$iothub/methods/POST/")
    assert request.topic.startswith("$iothub/methods/POST/reboot/?$rid=")
    assert json.loads(request.payload) == {"delay": 3}
    rid = request.topic.split("$rid=")[1]
    device.publish(f"$iothub/methods/res/201/?$rid={rid}", b'{"ok": true}')
    assert call.result(5) == (201, {"ok": True})


def test_direct_method_timeout_and_offline_device(hub: RunningServer, device: DeviceClient) -> None:
    with pytest.raises(MethodTimeout):
        hub.call(hub.server.hub.invoke_method(device.device_id, "slow", None, 0.3))
    with pytest.raises(DeviceNotConnected) as info:
        hub.call(hub.server.hub.invoke_method("nobody-here", "x", None, 1))
    assert info.value.reason == "offline"


def test_direct_method_needs_the_subscription(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
        with pytest.raises(DeviceNotConnected) as info:
            hub.call(hub.server.hub.invoke_method(device_id, "x", None, 1))
    assert info.value.reason == "not-subscribed"


def test_cloud_to_device_message_with_properties(hub: RunningServer, device: DeviceClient) -> None:
    sent = hub.call(hub.server.hub.send_c2d(device.device_id, b"hi", {"k": "v w"}))
    assert sent is True
    message = device.expect(f"devices/{device.device_id}/messages/devicebound/")
    assert message.payload == b"hi"
    assert message.qos == 1
    assert "k=v%20w" in message.topic and "%24.mid=" in message.topic


def test_cloud_to_device_messages_wait_for_the_next_session(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    assert hub.call(hub.server.hub.send_c2d(device_id, b"queued")) is False
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
        client.subscribe(f"devices/{device_id}/messages/devicebound/#")
        assert client.expect("devices/").payload == b"queued"


def test_cloud_to_device_message_for_an_unknown_device_is_refused(hub: RunningServer) -> None:
    with pytest.raises(DeviceNotFound):
        hub.call(hub.server.hub.send_c2d("no-such-device", b"x"))


def test_will_becomes_telemetry_when_the_connection_drops(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    client = DeviceClient(hub, device_id, pems)
    client.client.will_set(f"devices/{device_id}/messages/events/", b"gone", qos=1)
    assert client.connect() == 0
    client.client.publish(f"devices/{device_id}/messages/events/", b"x", qos=2)  # server closes
    assert client.wait_disconnected()
    client.client.loop_stop()
    messages = _telemetry_of(hub, device_id)
    assert [m.payload for m in messages] == [b"gone"]
    assert messages[0].properties == {"iothub-MessageType": "Will"}


def test_credentials_requests_reach_the_renewal_service(
    hub: RunningServer, device: DeviceClient
) -> None:
    assert device.subscribe("$iothub/credentials/res/#") == [1]
    request = json.dumps({"id": device.device_id, "csr": "not base64 DER"})
    device.publish("$iothub/credentials/POST/issueCertificate/?$rid=5", request)
    response = device.expect("$iothub/credentials/res/")
    if response.topic.startswith("$iothub/credentials/res/202/"):  # accepted, then the verdict
        response = device.expect("$iothub/credentials/res/")
    assert response.topic == "$iothub/credentials/res/400/?$rid=5"
    assert json.loads(response.payload)["errorCode"] == 400040
    assert not device.wait_disconnected(0.1)
