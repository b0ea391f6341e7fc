"""IoT Hub session rules on the wire: one connection per device, keep-alive, QoS, own
topics only, packets pipelined behind CONNECT, credential expiry."""

from __future__ import annotations

import time
from pathlib import Path

from hub_support import RawClient
from prometheus_client import REGISTRY

from certhub.mqtt import (
    ConnAck,
    ConnectReturnCode,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
)
from serverkit import (
    DeviceClient,
    RunningServer,
    create_device,
    device_with_certificate,
    random_key,
    sas_password,
)


def _closed(reason: str) -> float:
    value = REGISTRY.get_sample_value("certhub_hub_sessions_closed_total", {"reason": reason})
    return value or 0.0


def test_a_second_connection_closes_the_first(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    with DeviceClient(hub, device_id, pems) as first, DeviceClient(hub, device_id, pems) as second:
        assert first.connect() == 0
        old = hub.server.hub_frontend.sessions[device_id]
        assert second.connect() == 0
        assert first.wait_disconnected()
        assert not second.wait_disconnected(0.3)
        assert hub.server.hub_frontend.sessions[device_id] is not old
        assert old.link.closed


def test_keepalive_is_enforced_at_one_and_a_half_times(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    client = RawClient(hub, pems)
    before = _closed("keepalive-timeout")
    try:
        client.send(client.connect_packet(device_id, keepalive=1))
        assert client.receive() == [ConnAck()]
        client.send(PingReq())
        assert client.receive() == [PingResp()]  # activity re-arms the deadline
        silent_for = client.wait_closed(timeout=5)
    finally:
        client.close()
    assert silent_for is not None and 1.3 <= silent_for <= 2.5
    assert _closed("keepalive-timeout") == before + 1


def test_qos2_publish_closes_the_connection(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
        client.client.publish(f"devices/{device_id}/messages/events/", b"x", qos=2)
        assert client.wait_disconnected()


def test_publishing_to_another_devices_topic_closes(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
        client.client.publish("devices/someone-else/messages/events/", b"x", qos=1)
        assert client.wait_disconnected()


def test_subscribing_to_another_devices_topic_closes(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
        client.client.subscribe("devices/someone-else/messages/devicebound/#", 1)
        assert client.wait_disconnected()


def test_qos2_subscriptions_are_granted_qos1_and_the_c_sdk_filter_is_accepted(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
        assert client.subscribe("$iothub/twin/res/#", qos=2) == [1]
        assert client.subscribe("devices/+/messages/devicebound/#", qos=0) == [0]
        assert not client.wait_disconnected(0.2)


def test_packets_pipelined_behind_connect_are_held_until_accepted(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    client = RawClient(hub, pems)
    try:
        client.send(
            client.connect_packet(device_id),
            Subscribe(packet_id=1, topics=(("$iothub/twin/res/#", 1),)),
            Publish(topic="$iothub/twin/GET/?$rid=7", payload=b" ", qos=1, packet_id=2),
            Publish(
                topic=f"devices/{device_id}/messages/events/", payload=b"t", qos=1, packet_id=3
            ),
        )
        packets = client.receive(count=5)
    finally:
        client.close()
    assert packets[:2] == [ConnAck(), SubAck(packet_id=1, return_codes=(1,))]
    assert isinstance(packets[2], Publish) and packets[2].topic == "$iothub/twin/res/200/?$rid=7"
    assert packets[3:] == [PubAck(packet_id=2), PubAck(packet_id=3)]


def test_a_refused_connect_drops_the_pipelined_packets(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    create_device(hub.store, device_id)  # a certificate-authority device, but no certificate
    client = RawClient(hub)
    try:
        client.send(
            client.connect_packet(device_id),
            Publish(
                topic=f"devices/{device_id}/messages/events/", payload=b"t", qos=1, packet_id=1
            ),
        )
        packets = client.receive(count=2)
        assert client.wait_closed(5) is not None
    finally:
        client.close()
    assert packets == [ConnAck(return_code=ConnectReturnCode.NOT_AUTHORIZED)]


def test_an_expiring_sas_token_ends_the_session(hub: RunningServer, device_id: str) -> None:
    key = random_key()
    create_device(hub.store, device_id, auth_type="sas", primary_key=key)
    password = sas_password(hub.hub_host, device_id, key, ttl=2)
    with DeviceClient(hub, device_id, password=password) as client:
        assert client.connect() == 0
        assert client.wait_disconnected(5)
    assert device_id not in hub.server.hub_frontend.sessions


def test_connection_state_is_written_behind(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            device = hub.store.get_device(device_id)
            if device is not None and device.connection_state == "Connected":
                break
            time.sleep(0.1)
        assert device is not None and device.connection_state == "Connected"
