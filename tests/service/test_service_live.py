"""The service API over HTTPS on a running certhub, with real devices (paho over TLS):
desired patches, direct methods, cloud-to-device messages, disable and revoke."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import ServiceEndpoint, https_service

from serverkit import DeviceClient, RunningServer, device_with_certificate, running_server

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, ServiceEndpoint]]:
    with (
        running_server(tmp_path_factory.mktemp("live") / "data", https_port=0) as running,
        https_service(running) as endpoint,
    ):
        yield running, endpoint


@pytest.fixture
def http(live: tuple[RunningServer, ServiceEndpoint]) -> Iterator[httpx.Client]:
    with live[1].client() as client:
        yield client


@pytest.fixture
def device(live: tuple[RunningServer, ServiceEndpoint], tmp_path: Path) -> Iterator[DeviceClient]:
    running = live[0]
    device_id = f"live-{next(_ids)}"
    pems = device_with_certificate(running, device_id, tmp_path)
    with DeviceClient(running, device_id, pems) as client:
        assert client.connect() == 0
        for topic in (
            "$iothub/twin/PATCH/properties/desired/#",
            "$iothub/methods/POST/#",
            f"devices/{device_id}/messages/devicebound/#",
        ):
            assert client.subscribe(topic) == [1]
        yield client


def test_desired_patch_reaches_the_connected_device(
    http: httpx.Client, device: DeviceClient
) -> None:
    patch = {"properties": {"desired": {"interval": 5}}, "tags": {"site": "b"}}
    twin = http.patch(f"/twins/{device.device_id}", json=patch).json()
    version = twin["properties"]["desired"]["$version"]
    # The renewal service may announce the device's renewal window first.
    topic = f"$iothub/twin/PATCH/properties/desired/?$version={version}"
    message = device.expect(topic, timeout=3)
    assert json.loads(message.payload) == {"interval": 5, "$version": version}


def test_direct_method_round_trip_and_timeout(http: httpx.Client, device: DeviceClient) -> None:
    result: dict[str, Any] = {}

    def call() -> None:
        body = {"methodName": "reboot", "payload": {"delay": 1}, "responseTimeoutInSeconds": 10}
        result["response"] = http.post(f"/twins/{device.device_id}/methods", json=body)

    caller = threading.Thread(target=call)
    caller.start()
    request = device.expect("$iothub/methods/POST/reboot/")
    assert json.loads(request.payload) == {"delay": 1}
    rid = request.topic.split("$rid=")[1]
    device.publish(f"$iothub/methods/res/201/?$rid={rid}", b'{"ok": true}')
    caller.join(10)
    assert result["response"].json() == {"status": 201, "payload": {"ok": True}}
    slow = http.post(
        f"/twins/{device.device_id}/methods",
        json={"methodName": "slow", "responseTimeoutInSeconds": 5},
    )
    assert slow.status_code == 504
    assert slow.headers["iothub-errorcode"] == "GatewayTimeout"


def test_cloud_to_device_message(http: httpx.Client, device: DeviceClient) -> None:
    sent = http.post(
        f"/devices/{device.device_id}/messages/deviceBound",
        content=b"hello",
        headers={"iothub-app-color": "blue", "iothub-messageid": "m-1"},
    )
    assert sent.status_code == 202 and sent.json() == {"delivered": True}
    message = device.expect(f"devices/{device.device_id}/messages/devicebound/")
    assert message.payload == b"hello"
    assert "color=blue" in message.topic and "%24.mid=m-1" in message.topic


def test_disabling_a_device_drops_its_session(http: httpx.Client, device: DeviceClient) -> None:
    body = {"status": "disabled", "authentication": {"type": "certificateAuthority"}}
    response = http.put(f"/devices/{device.device_id}", json=body, headers={"If-Match": "*"})
    assert response.status_code == 200
    assert device.wait_disconnected(3)


def test_revoking_a_device_drops_its_session(http: httpx.Client, device: DeviceClient) -> None:
    response = http.post(f"/certhub/v1/devices/{device.device_id}/revoke", json={})
    assert response.status_code == 200 and len(response.json()["revokedSerials"]) == 1
    assert device.wait_disconnected(3)


def test_openapi_document_is_served(live: tuple[RunningServer, ServiceEndpoint]) -> None:
    with live[1].client() as client:
        document = client.get("/openapi.json").json()
    assert "/devices/{id}" in document["paths"]
    assert "/certhub/v1/certificates" in document["paths"]
    assert "SharedAccessSignature" in document["components"]["securitySchemes"]
