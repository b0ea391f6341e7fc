"""Connection state machines: the transition table, stickiness, CONNACK refusals, keep-alive."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from mqtt_wire import connect, frame, u16, utf8

from certhub.mqtt import (
    KEEPALIVE_TIMEOUT_CAP,
    TRANSITIONS,
    ClientConnection,
    ConnAck,
    Connect,
    ConnectReturnCode,
    Disconnect,
    LocalProtocolError,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RemoteProtocolError,
    Role,
    ServerConnection,
    State,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    encode,
)
from certhub.mqtt.session import PacketKind, Qos2Publish, RefusedConnAck, packet_kind

SAMPLES: dict[PacketKind, Packet] = {
    Connect: Connect(client_id="dev-1"),
    ConnAck: ConnAck(),
    RefusedConnAck: ConnAck(return_code=ConnectReturnCode.NOT_AUTHORIZED),
    Publish: Publish(topic="devices/dev-1/messages/events/", payload=b"{}", qos=1, packet_id=1),
    Qos2Publish: Publish(topic="t", qos=2, packet_id=2),
    PubAck: PubAck(packet_id=1),
    PubRec: PubRec(packet_id=1),
    PubRel: PubRel(packet_id=1),
    PubComp: PubComp(packet_id=1),
    Subscribe: Subscribe(packet_id=1, topics=(("$iothub/twin/res/#", 1),)),
    SubAck: SubAck(packet_id=1, return_codes=(1,)),
    Unsubscribe: Unsubscribe(packet_id=1, topics=("a",)),
    UnsubAck: UnsubAck(packet_id=1),
    PingReq: PingReq(),
    PingResp: PingResp(),
    Disconnect: Disconnect(),
}
LIVE_STATES = [State.AWAIT_CONNECT, State.AWAIT_CONNACK, State.CONNECTED, State.CLOSED]


def server_in(state: State) -> ServerConnection:
    conn = ServerConnection()
    steps: list[Callable[[], object]] = [
        lambda: conn.receive_data(connect()),
        lambda: conn.send(ConnAck()),
        lambda: conn.receive_data(b"\xe0\x00"),
    ]
    for step in steps[: LIVE_STATES.index(state)]:
        step()
    conn.data_to_send()
    assert conn.state is state
    return conn


def client_in(state: State) -> ClientConnection:
    conn = ClientConnection()
    steps: list[Callable[[], object]] = [
        lambda: conn.send(Connect(client_id="dev-1")),
        lambda: conn.receive_data(b"\x20\x02\x00\x00"),
        lambda: conn.send(Disconnect()),
    ]
    for step in steps[: LIVE_STATES.index(state)]:
        step()
    conn.data_to_send()
    assert conn.state is state
    return conn


def connection_in(state: State, role: Role) -> ServerConnection | ClientConnection:
    return server_in(state) if role is Role.SERVER else client_in(state)


ALL = list(itertools.product(LIVE_STATES, Role, SAMPLES))


def _id(case: tuple[State, Role, PacketKind]) -> str:
    state, role, kind = case
    return f"{state.name}/{role.name}/{kind.__name__}"


@pytest.mark.parametrize("case", ALL, ids=[_id(c) for c in ALL])
def test_receiving_follows_the_table(case: tuple[State, Role, PacketKind]) -> None:
    state, sender, kind = case
    receiver = Role.SERVER if sender is Role.CLIENT else Role.CLIENT
    conn = connection_in(state, receiver)
    wire = encode(SAMPLES[kind])
    expected = TRANSITIONS.get((state, sender, kind))
    if expected is not None:
        assert conn.receive_data(wire) == [SAMPLES[kind]]
        assert conn.state is expected
        return
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(wire)
    assert info.value.packet_type == kind.packet_type.name
    assert info.value.state == state.name
    assert f"{kind.packet_type.name}" in str(info.value)
    assert f"(state {state.name})" in str(info.value)
    assert conn.state is State.ERROR
    assert conn.data_to_send() == b""


@pytest.mark.parametrize("case", ALL, ids=[_id(c) for c in ALL])
def test_sending_follows_the_table(case: tuple[State, Role, PacketKind]) -> None:
    state, sender, kind = case
    conn = connection_in(state, sender)
    expected = TRANSITIONS.get((state, sender, kind))
    if expected is not None:
        conn.send(SAMPLES[kind])
        assert conn.state is expected
        assert conn.data_to_send() == encode(SAMPLES[kind])
        return
    with pytest.raises(LocalProtocolError) as info:
        conn.send(SAMPLES[kind])
    assert (info.value.packet_type, info.value.state) == (kind.packet_type.name, state.name)
    assert conn.state is state  # a refused send changes nothing
    assert conn.data_to_send() == b""


def test_table_has_no_error_state_entries_and_only_known_kinds() -> None:
    assert all(state is not State.ERROR for state, _, _ in TRANSITIONS)
    assert {kind for _, _, kind in TRANSITIONS} <= set(SAMPLES)
    assert not any(kind in (Qos2Publish, PubRec, PubRel, PubComp) for _, _, kind in TRANSITIONS)


def test_packet_kind_refines_refusals_and_qos2() -> None:
    assert packet_kind(ConnAck()) is ConnAck
    assert packet_kind(ConnAck(return_code=ConnectReturnCode.SERVER_UNAVAILABLE)) is RefusedConnAck
    assert packet_kind(Publish(topic="t", qos=2, packet_id=1)) is Qos2Publish
    assert packet_kind(Publish(topic="t")) is Publish


# --- rules named by the spec -------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "wire", "rule"),
    [
        pytest.param(
            State.AWAIT_CONNECT, b"\xc0\x00", "MQTT-3.1.0-1", id="reject/first-not-connect"
        ),
        pytest.param(State.AWAIT_CONNACK, connect(), "MQTT-3.1.0-2", id="reject/second-connect"),
        pytest.param(
            State.CONNECTED, connect(), "MQTT-3.1.0-2", id="reject/connect-when-connected"
        ),
        pytest.param(State.CONNECTED, b"\x20\x02\x00\x00", None, id="reject/connack-from-client"),
        pytest.param(
            State.CONNECTED, frame(0x90, u16(1) + b"\x01"), None, id="reject/suback-from-client"
        ),
        pytest.param(State.CONNECTED, b"\xd0\x00", None, id="reject/pingresp-from-client"),
        pytest.param(State.CONNECTED, b"\x62\x02\x00\x01", None, id="reject/pubrel-from-client"),
        pytest.param(State.CLOSED, b"\xc0\x00", None, id="reject/data-after-disconnect"),
    ],
)
def test_server_rejects(setup: State, wire: bytes, rule: str | None) -> None:
    conn = server_in(setup)
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(wire)
    assert (info.value.rule, info.value.connack_code) == (rule, None)
    assert conn.state is State.ERROR


def test_qos2_publish_from_client_closes_the_connection() -> None:
    conn = server_in(State.CONNECTED)
    with pytest.raises(RemoteProtocolError, match="QoS 2") as info:
        conn.receive_data(frame(0x34, utf8("devices/d/messages/events/") + u16(5)))
    assert info.value.connack_code is None
    assert conn.state is State.ERROR


def test_qos2_subscription_request_is_not_an_error() -> None:
    conn = server_in(State.CONNECTED)
    wire = frame(0x82, u16(4) + utf8("devices/d/messages/devicebound/#") + b"\x02")
    assert conn.receive_data(wire) == [
        Subscribe(packet_id=4, topics=(("devices/d/messages/devicebound/#", 2),))
    ]
    conn.send(SubAck(packet_id=4, return_codes=(1,)))  # IoT Hub grants QoS 1
    assert conn.data_to_send() == b"\x90\x03\x00\x04\x01"


def test_server_may_not_send_before_its_connack() -> None:
    conn = server_in(State.AWAIT_CONNACK)
    with pytest.raises(LocalProtocolError) as info:
        conn.send(Publish(topic="t"))
    assert info.value.rule == "MQTT-3.2.0-1"


# --- errors are sticky; CONNACK refusals are queued -------------------------------------


def test_error_state_is_sticky() -> None:
    conn = server_in(State.CONNECTED)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"\x00\x00")
    for data in (b"", b"\xc0\x00", connect()):
        with pytest.raises(RemoteProtocolError, match="already failed") as info:
            conn.receive_data(data)
        assert info.value.state == "ERROR"
        assert conn.state is State.ERROR
    with pytest.raises(LocalProtocolError):
        conn.send(PingResp())


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        pytest.param(connect(level=3), 1, id="reject/protocol-level-3"),
        pytest.param(connect(name=b"MQIsdp", level=3), 1, id="reject/mqisdp"),
        pytest.param(connect("", flags=0x00), 2, id="reject/empty-client-id-persistent"),
    ],
)
def test_connect_refusal_queues_its_connack(wire: bytes, code: int) -> None:
    conn = ServerConnection()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(wire)
    assert info.value.connack_code == code
    assert info.value.state == "AWAIT_CONNECT"
    assert conn.state is State.ERROR
    assert conn.data_to_send() == bytes([0x20, 0x02, 0x00, code])
    assert conn.data_to_send() == b""


def test_bad_protocol_name_closes_without_connack() -> None:
    conn = ServerConnection()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(connect(name=b"HTTP"))
    assert info.value.connack_code is None
    assert conn.data_to_send() == b""


def test_bad_second_connect_gets_no_connack() -> None:
    conn = ServerConnection()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(connect() + connect(level=3))
    assert info.value.connack_code is None
    assert info.value.state == "AWAIT_CONNACK"
    assert conn.connect == Connect(client_id="dev-1")
    assert conn.data_to_send() == b""


def test_server_refusal_connack_closes() -> None:
    conn = server_in(State.AWAIT_CONNACK)
    conn.send(ConnAck(return_code=ConnectReturnCode.BAD_USERNAME_OR_PASSWORD))
    assert conn.state is State.CLOSED
    assert conn.data_to_send() == b"\x20\x02\x00\x04"


# --- a whole conversation ----------------------------------------------------------------


def test_server_conversation() -> None:
    conn = ServerConnection()
    hello = connect("dev-1", flags=0x00, keepalive=60)
    sub = frame(0x82, u16(1) + utf8("$iothub/twin/res/#") + b"\x01")
    get = frame(0x32, utf8("$iothub/twin/GET/?$rid=1") + u16(2) + b" ")
    # a client may pipeline behind CONNECT; the adapter holds these until it accepts
    assert conn.receive_data(hello + sub) == [
        Connect(client_id="dev-1", clean_session=False),
        Subscribe(packet_id=1, topics=(("$iothub/twin/res/#", 1),)),
    ]
    assert conn.state is State.AWAIT_CONNACK
    conn.send(ConnAck())
    conn.send(SubAck(packet_id=1, return_codes=(1,)))
    assert conn.receive_data(get) == [
        Publish(topic="$iothub/twin/GET/?$rid=1", payload=b" ", qos=1, packet_id=2)
    ]
    conn.send(PubAck(packet_id=2))
    conn.send(Publish(topic="$iothub/twin/res/200/?$rid=1", payload=b"{}"))
    assert conn.receive_data(b"\xc0\x00") == [PingReq()]
    conn.send(PingResp())
    assert conn.data_to_send() == (
        b"\x20\x02\x00\x00"
        + b"\x90\x03\x00\x01\x01"
        + b"\x40\x02\x00\x02"
        + frame(0x30, utf8("$iothub/twin/res/200/?$rid=1") + b"{}")
        + b"\xd0\x00"
    )
    assert conn.receive_data(b"\xe0\x00") == [Disconnect()]
    assert conn.state.name == "CLOSED"  # (mypy keeps the earlier narrowing)


def test_client_and_server_talk_through_bytes() -> None:
    client, server = ClientConnection(), ServerConnection()
    client.send(Connect(client_id="dev-1", keepalive=30))
    client.send(Subscribe(packet_id=1, topics=(("devices/dev-1/messages/devicebound/#", 1),)))
    assert client.state is State.AWAIT_CONNACK
    got = server.receive_data(client.data_to_send())
    assert [type(p) for p in got] == [Connect, Subscribe]
    server.send(ConnAck())
    server.send(SubAck(packet_id=1, return_codes=(1,)))
    c2d = Publish(topic="devices/dev-1/messages/devicebound/%24.mid=1", qos=1, packet_id=9)
    server.send(c2d)
    assert client.receive_data(server.data_to_send()) == [
        ConnAck(),
        SubAck(packet_id=1, return_codes=(1,)),
        c2d,
    ]
    assert client.state.name == "CONNECTED"
    client.send(PubAck(packet_id=9))
    client.send(Disconnect())
    assert server.receive_data(client.data_to_send()) == [PubAck(packet_id=9), Disconnect()]
    assert (client.state, server.state) == (State.CLOSED, State.CLOSED)
    assert client.keepalive == server.keepalive == 30


def test_client_sees_a_refusal() -> None:
    client = client_in(State.AWAIT_CONNACK)
    assert client.receive_data(b"\x20\x02\x00\x05") == [
        ConnAck(return_code=ConnectReturnCode.NOT_AUTHORIZED)
    ]
    assert client.state is State.CLOSED


def test_client_must_connect_first() -> None:
    with pytest.raises(LocalProtocolError) as info:
        ClientConnection().send(Publish(topic="t"))
    assert (info.value.rule, info.value.state) == ("MQTT-3.1.0-1", "AWAIT_CONNECT")


def test_send_rejects_non_packets() -> None:
    with pytest.raises(LocalProtocolError, match="not an MQTT packet"):
        ServerConnection().send(b"\x20\x02\x00\x00")  # type: ignore[arg-type]


def test_packets_before_a_malformed_one_are_applied() -> None:
    conn = ServerConnection()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(connect() + b"\xff")
    assert conn.connect == Connect(client_id="dev-1")
    assert conn.state is State.ERROR


def test_max_packet_size_reaches_the_decoder() -> None:
    conn = ServerConnection(max_packet_size=100)
    with pytest.raises(RemoteProtocolError, match="exceeds the 100-byte maximum"):
        conn.receive_data(b"\x10\x63")  # 2 + 99 bytes


# --- keep-alive --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keepalive", "deadline"),
    [
        pytest.param(60, 1090.0, id="1.5x"),
        pytest.param(1, 1001.5, id="one-second"),
        pytest.param(1178, 1000.0 + KEEPALIVE_TIMEOUT_CAP, id="capped"),
        pytest.param(65535, 2767.0, id="max-capped"),
        pytest.param(0, None, id="off"),
    ],
)
def test_keepalive_deadline(keepalive: int, deadline: float | None) -> None:
    conn = ServerConnection()
    conn.receive_data(connect(keepalive=keepalive))
    assert conn.keepalive == keepalive
    assert conn.keepalive_deadline(1000.0) == deadline


def test_keepalive_deadline_needs_a_connect() -> None:
    conn = ServerConnection()
    assert conn.keepalive is None
    with pytest.raises(LocalProtocolError, match="no CONNECT"):
        conn.keepalive_deadline(0.0)


def test_client_never_reports_a_connack_to_send() -> None:
    client = ClientConnection()
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(connect(level=3))
    assert info.value.connack_code is None
    assert client.data_to_send() == b""
