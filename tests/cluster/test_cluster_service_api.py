"""The service API of one node reaches devices connected to another: a direct method and
a cloud-to-device message sent over node A's HTTPS, device on node B."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster_support import FAST, wait_for

from certhub.bootstrap import service_keys
from certhub.sas import generate_sas_token
from serverkit import DeviceClient, RunningServer, device_with_certificate, running_server


@pytest.fixture(scope="module")
def pair(
    module_pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, RunningServer]]:
    data_dir = tmp_path_factory.mktemp("api") / "data"
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(
                running_server(
                    data_dir,
                    database_url=module_pg_url,
                    node_name=name,
                    https_port=0 if name == "a" else None,
                    **FAST,
                )
            )
            for name in ("a", "b")
        )
        assert wait_for(lambda: a.server.hub_frontend.clustered and b.server.hub_frontend.clustered)
        yield a, b


def _client(node: RunningServer) -> httpx.Client:
    port = node.server.https_port
    key = service_keys(node.store)["iothubowner"]["primaryKey"]
    token = generate_sas_token(f"localhost:{port}", key, int(time.time()) + 3600, "iothubowner")
    return httpx.Client(
        base_url=f"https://localhost:{port}",
        headers={"Authorization": token},
        verify=ssl.create_default_context(cafile=str(node.trust_anchor)),
        timeout=30,
    )


def test_a_method_through_one_nodes_service_api_reaches_a_device_on_another(
    pair: tuple[RunningServer, RunningServer], tmp_path: Path
) -> None:
    a, b = pair
    pems = device_with_certificate(a, "api-method", tmp_path)
    with DeviceClient(b, "api-method", pems) as device, _client(a) as http:
        assert device.connect() == 0
        assert device.subscribe("$iothub/methods/POST/#") == [1]
        assert wait_for(lambda: a.server.hub.is_connected("api-method"), 3)
        result: dict[str, Any] = {}

        def call() -> None:
            body = {"methodName": "reboot", "payload": {"delay": 1}, "responseTimeoutInSeconds": 5}
            result["response"] = http.post("/twins/api-method/methods", json=body)

        caller = threading.Thread(target=call)
        caller.start()
        request = device.expect("$iothub/methods/POST/reboot/", 5)
        rid = request.topic.split("$rid=")[1]
        device.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"ok": true}')
        caller.join(10)
        assert result["response"].json() == {"status": 200, "payload": {"ok": True}}
        slow = http.post(
            "/twins/api-method/methods", json={"methodName": "slow", "responseTimeoutInSeconds": 5}
        )
        assert (slow.status_code, slow.headers["iothub-errorcode"]) == (504, "GatewayTimeout")


def test_a_method_to_a_device_connected_nowhere_is_refused_as_offline(
    pair: tuple[RunningServer, RunningServer], tmp_path: Path
) -> None:
    a, b = pair
    pems = device_with_certificate(a, "api-gone", tmp_path)
    with DeviceClient(b, "api-gone", pems) as device:
        assert device.connect() == 0
        assert wait_for(lambda: a.server.hub.is_connected("api-gone"), 3)
    assert wait_for(lambda: not a.server.hub.is_connected("api-gone"), 3)
    with _client(a) as http:
        response = http.post("/twins/api-gone/methods", json={"methodName": "m"})
        assert response.status_code == 404
        assert response.headers["iothub-errorcode"] == "DeviceNotOnline"


def test_a_c2d_message_through_one_nodes_service_api_reaches_a_device_on_another(
    pair: tuple[RunningServer, RunningServer], tmp_path: Path
) -> None:
    a, b = pair
    pems = device_with_certificate(a, "api-c2d", tmp_path)
    with DeviceClient(b, "api-c2d", pems) as device, _client(a) as http:
        assert device.connect() == 0
        assert device.subscribe("devices/api-c2d/messages/devicebound/#") == [1]
        sent = http.post("/devices/api-c2d/messages/deviceBound", content=b"hi")
        assert sent.status_code == 202
        message = device.expect("devices/api-c2d/messages/devicebound/", 3)
        assert message.payload == b"hi"
        assert json.loads(sent.text) == {"delivered": False}  # relayed, not sent by node a


def test_a_node_that_joins_later_knows_devices_connected_before(
    pair: tuple[RunningServer, RunningServer], tmp_path: Path, module_pg_url: str
) -> None:
    a, b = pair
    pems = device_with_certificate(a, "api-early", tmp_path)
    with DeviceClient(b, "api-early", pems) as device:
        assert device.connect() == 0
        assert device.subscribe("$iothub/methods/POST/#") == [1]
        device.client.message_callback_add(
            "$iothub/methods/POST/#",
            lambda _c, _u, m: device.client.publish(
                f"$iothub/methods/res/200/?$rid={m.topic.split('$rid=')[1]}", b"1"
            ),
        )
        assert wait_for(lambda: _state(a, "api-early") == "Connected", 5)  # written behind
        with running_server(a.data_dir, database_url=module_pg_url, node_name="c", **FAST) as c:
            assert wait_for(lambda: c.server.hub.is_connected("api-early"), 5)
            assert c.call(c.server.hub.invoke_method("api-early", "ping", None, 5)) == (200, 1)


def _state(node: RunningServer, device_id: str) -> str | None:
    device = node.store.get_device(device_id)
    return None if device is None else device.connection_state
