"""Every rejection: the exact error class, rule, packet type and CONNACK code."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from mqtt_wire import blob, connect, connect_body, frame, u16, utf8

from certhub.mqtt import (
    ConnAck,
    Connect,
    ConnectReturnCode,
    Decoder,
    LocalProtocolError,
    PubAck,
    Publish,
    RemoteProtocolError,
    SubAck,
    Subscribe,
    Unsubscribe,
    Will,
)

R1 = ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION
R2 = ConnectReturnCode.IDENTIFIER_REJECTED


def reject(
    wire: bytes, rule: str | None, ptype: str | None, connack: int | None, name: str
) -> object:
    return pytest.param(wire, rule, ptype, connack, id=f"reject/{name}")


WIRE_REJECTIONS = [
    # fixed header
    reject(b"\x00\x00", "§2.2.1", None, None, "reserved-type-0"),
    reject(b"\xf0\x00", "§2.2.1", None, None, "reserved-type-15"),
    reject(b"\x11" + connect()[1:], "MQTT-2.2.2-2", "CONNECT", None, "connect-flags"),
    reject(b"\x21\x02\x00\x00", "MQTT-2.2.2-2", "CONNACK", None, "connack-flags"),
    reject(b"\x48\x02\x00\x01", "MQTT-2.2.2-2", "PUBACK", None, "puback-flags"),
    reject(b"\x60\x02\x00\x01", "MQTT-3.6.1-1", "PUBREL", None, "pubrel-flags-0000"),
    reject(
        frame(0x80, u16(1) + utf8("a") + b"\x00"),
        "MQTT-3.8.1-1",
        "SUBSCRIBE",
        None,
        "subscribe-flags-0000",
    ),
    reject(
        frame(0x83, u16(1) + utf8("a") + b"\x00"),
        "MQTT-3.8.1-1",
        "SUBSCRIBE",
        None,
        "subscribe-flags-0011",
    ),
    reject(
        frame(0xA0, u16(1) + utf8("a")), "MQTT-3.10.1-1", "UNSUBSCRIBE", None, "unsubscribe-flags"
    ),
    reject(b"\xc1\x00", "MQTT-2.2.2-2", "PINGREQ", None, "pingreq-flags"),
    reject(b"\xe2\x00", "MQTT-2.2.2-2", "DISCONNECT", None, "disconnect-flags"),
    reject(frame(0x36, utf8("a")), "MQTT-3.3.1-4", "PUBLISH", None, "publish-qos-3"),
    reject(b"\x30\xff\xff\xff\xff\x01", "§2.2.3", None, None, "remaining-length-5-bytes"),
    # fixed-size packets with a wrong remaining length (trailing or missing bytes)
    reject(b"\xc0\x01\x00", "§2.2.3", "PINGREQ", None, "pingreq-trailing-byte"),
    reject(b"\xe0\x01\x00", "§2.2.3", "DISCONNECT", None, "disconnect-trailing-byte"),
    reject(b"\x40\x03\x00\x01\x00", "§2.2.3", "PUBACK", None, "puback-trailing-byte"),
    reject(b"\x40\x01\x01", "§2.2.3", "PUBACK", None, "puback-short"),
    reject(b"\x20\x03\x00\x00\x00", "§2.2.3", "CONNACK", None, "connack-trailing-byte"),
    # CONNECT
    reject(connect(name=b"MQTX"), "MQTT-3.1.2-1", "CONNECT", None, "connect-protocol-name"),
    reject(connect(level=3), "MQTT-3.1.2-2", "CONNECT", R1, "connect-level-3"),
    reject(connect(level=5), "MQTT-3.1.2-2", "CONNECT", R1, "connect-level-5"),
    reject(connect(name=b"MQIsdp", level=3), "MQTT-3.1.2-2", "CONNECT", R1, "connect-mqisdp"),
    reject(frame(0x10, blob(b"MQTT")), "§2.2.3", "CONNECT", None, "connect-no-level"),
    reject(
        frame(0x10, blob(b"MQTT") + b"\x04\x02"), "§2.2.3", "CONNECT", None, "connect-no-keepalive"
    ),
    reject(frame(0x10, u16(4) + b"MQ"), "§2.2.3", "CONNECT", None, "connect-truncated-name"),
    reject(connect(flags=0x03), "MQTT-3.1.2-3", "CONNECT", None, "connect-reserved-flag"),
    reject(connect(flags=0x0A), "MQTT-3.1.2-13", "CONNECT", None, "connect-will-qos-no-will"),
    reject(connect(flags=0x22), "MQTT-3.1.2-15", "CONNECT", None, "connect-will-retain-no-will"),
    reject(
        connect(flags=0x1E, rest=utf8("w") + blob(b"")),
        "MQTT-3.1.2-14",
        "CONNECT",
        None,
        "connect-will-qos-3",
    ),
    reject(
        connect(flags=0x42, rest=blob(b"pw")),
        "MQTT-3.1.2-22",
        "CONNECT",
        None,
        "connect-password-without-username",
    ),
    reject(
        connect("", flags=0x00), "MQTT-3.1.3-8", "CONNECT", R2, "connect-empty-client-id-persistent"
    ),
    reject(
        frame(0x10, blob(b"MQTT") + struct.pack("!BBH", 4, 2, 60) + blob(b"\xc3\x28")),
        "MQTT-1.5.3-1",
        "CONNECT",
        None,
        "connect-client-id-ill-formed-utf8",
    ),
    reject(
        frame(0x10, blob(b"MQTT") + struct.pack("!BBH", 4, 2, 60) + blob(b"\xed\xa0\x80")),
        "MQTT-1.5.3-1",
        "CONNECT",
        None,
        "connect-client-id-surrogate",
    ),
    reject(connect("a\x00b"), "MQTT-1.5.3-2", "CONNECT", None, "connect-client-id-nul"),
    reject(
        frame(0x10, connect_body() + b"\x00"), "§2.2.3", "CONNECT", None, "connect-trailing-byte"
    ),
    reject(
        frame(0x10, connect_body()[:-1]), "§2.2.3", "CONNECT", None, "connect-truncated-client-id"
    ),
    reject(
        connect(flags=0x06, rest=utf8("a/+") + blob(b"")),
        "MQTT-3.3.2-2",
        "CONNECT",
        None,
        "connect-will-topic-wildcard",
    ),
    reject(
        connect(flags=0x06, rest=utf8("w")),
        "§2.2.3",
        "CONNECT",
        None,
        "connect-will-message-missing",
    ),
    reject(connect(flags=0x82), "§2.2.3", "CONNECT", None, "connect-user-name-missing"),
    reject(
        connect(flags=0xC2, rest=utf8("u")), "§2.2.3", "CONNECT", None, "connect-password-missing"
    ),
    # CONNACK
    reject(b"\x20\x02\x02\x00", "§3.2.2.1", "CONNACK", None, "connack-reserved-flags"),
    reject(b"\x20\x02\x00\x06", "§3.2.2.3", "CONNACK", None, "connack-reserved-code"),
    reject(b"\x20\x02\x01\x04", "MQTT-3.2.2-4", "CONNACK", None, "connack-session-with-refusal"),
    # PUBLISH
    reject(frame(0x30, utf8("a/+/b")), "MQTT-3.3.2-2", "PUBLISH", None, "publish-topic-plus"),
    reject(frame(0x30, utf8("a/#")), "MQTT-3.3.2-2", "PUBLISH", None, "publish-topic-hash"),
    reject(frame(0x30, utf8("")), "MQTT-4.7.3-1", "PUBLISH", None, "publish-topic-empty"),
    reject(frame(0x30, utf8("a\x00")), "MQTT-1.5.3-2", "PUBLISH", None, "publish-topic-nul"),
    reject(frame(0x30, blob(b"\xff")), "MQTT-1.5.3-1", "PUBLISH", None, "publish-topic-utf8"),
    reject(
        frame(0x32, utf8("a") + u16(0)), "MQTT-2.3.1-1", "PUBLISH", None, "publish-qos1-packet-id-0"
    ),
    reject(frame(0x38, utf8("a")), "MQTT-3.3.1-2", "PUBLISH", None, "publish-qos0-dup"),
    reject(frame(0x30, u16(5) + b"ab"), "§2.2.3", "PUBLISH", None, "publish-truncated-topic"),
    reject(frame(0x30, b"\x00"), "§2.2.3", "PUBLISH", None, "publish-truncated-length"),
    reject(
        frame(0x32, utf8("a") + b"\x01"), "§2.2.3", "PUBLISH", None, "publish-qos1-no-packet-id"
    ),
    # acknowledgements
    reject(b"\x40\x02\x00\x00", "MQTT-2.3.1-1", "PUBACK", None, "puback-packet-id-0"),
    reject(b"\xb0\x02\x00\x00", "MQTT-2.3.1-1", "UNSUBACK", None, "unsuback-packet-id-0"),
    # SUBSCRIBE
    reject(frame(0x82, u16(1)), "MQTT-3.8.3-3", "SUBSCRIBE", None, "subscribe-no-filters"),
    reject(
        frame(0x82, u16(0) + utf8("a") + b"\x00"),
        "MQTT-2.3.1-1",
        "SUBSCRIBE",
        None,
        "subscribe-packet-id-0",
    ),
    reject(
        frame(0x82, u16(1) + utf8("a") + b"\x03"),
        "MQTT-3-8.3-4",
        "SUBSCRIBE",
        None,
        "subscribe-qos-3",
    ),
    reject(
        frame(0x82, u16(1) + utf8("a") + b"\x41"),
        "MQTT-3-8.3-4",
        "SUBSCRIBE",
        None,
        "subscribe-reserved-qos-bits",
    ),
    reject(frame(0x82, u16(1) + utf8("a")), "§2.2.3", "SUBSCRIBE", None, "subscribe-missing-qos"),
    reject(frame(0x82, b"\x00"), "§2.2.3", "SUBSCRIBE", None, "subscribe-truncated-packet-id"),
    reject(
        frame(0x82, u16(1) + utf8("") + b"\x00"),
        "MQTT-4.7.3-1",
        "SUBSCRIBE",
        None,
        "subscribe-empty-filter",
    ),
    reject(
        frame(0x82, u16(1) + utf8("a/#/b") + b"\x00"),
        "MQTT-4.7.1-2",
        "SUBSCRIBE",
        None,
        "subscribe-hash-not-last",
    ),
    reject(
        frame(0x82, u16(1) + utf8("a/b#") + b"\x00"),
        "MQTT-4.7.1-2",
        "SUBSCRIBE",
        None,
        "subscribe-hash-inside-level",
    ),
    reject(
        frame(0x82, u16(1) + utf8("a+/b") + b"\x00"),
        "MQTT-4.7.1-3",
        "SUBSCRIBE",
        None,
        "subscribe-plus-inside-level",
    ),
    reject(
        frame(0x82, u16(1) + blob(b"\xe2\x82")),
        "MQTT-1.5.3-1",
        "SUBSCRIBE",
        None,
        "subscribe-filter-utf8",
    ),
    # SUBACK
    reject(frame(0x90, u16(1)), "§3.9.3", "SUBACK", None, "suback-no-codes"),
    reject(frame(0x90, u16(1) + b"\x03"), "MQTT-3.9.3-2", "SUBACK", None, "suback-reserved-code"),
    # UNSUBSCRIBE
    reject(frame(0xA2, u16(1)), "MQTT-3.10.3-2", "UNSUBSCRIBE", None, "unsubscribe-no-filters"),
    reject(
        frame(0xA2, u16(1) + utf8("+x")),
        "MQTT-4.7.1-3",
        "UNSUBSCRIBE",
        None,
        "unsubscribe-bad-filter",
    ),
    reject(
        frame(0xA2, u16(1) + b"\x00\x05a"),
        "§2.2.3",
        "UNSUBSCRIBE",
        None,
        "unsubscribe-truncated-filter",
    ),
]


@pytest.mark.parametrize(("wire", "rule", "ptype", "connack"), WIRE_REJECTIONS)
def test_decoder_rejects(
    wire: bytes, rule: str | None, ptype: str | None, connack: int | None
) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        Decoder().feed(wire)
    error = info.value
    assert type(error) is RemoteProtocolError
    assert (error.rule, error.packet_type, error.connack_code) == (rule, ptype, connack)
    if ptype is not None:
        assert str(error).startswith(f"{ptype}: ")


@pytest.mark.parametrize(("wire", "rule", "ptype", "connack"), WIRE_REJECTIONS)
def test_decoder_rejects_byte_by_byte(
    wire: bytes, rule: str | None, ptype: str | None, connack: int | None
) -> None:
    decoder = Decoder()
    with pytest.raises(RemoteProtocolError) as info:
        for i in range(len(wire)):
            decoder.feed(wire[i : i + 1])
    assert (info.value.rule, info.value.connack_code) == (rule, connack)


def test_reserved_type_is_rejected_on_its_first_byte() -> None:
    with pytest.raises(RemoteProtocolError, match="reserved packet type 15"):
        Decoder().feed(b"\xf0")


def test_wrong_fixed_length_is_rejected_before_the_body() -> None:
    with pytest.raises(RemoteProtocolError, match="remaining length 200, must be 0"):
        Decoder().feed(b"\xc0\xc8\x01")


# --- construction: our own code building an invalid packet is a LocalProtocolError ---------

LONG = "x" * 65536


def bad(build: Callable[[], object], rule: str | None, name: str) -> object:
    return pytest.param(build, rule, id=f"reject/{name}")


CONSTRUCTION_REJECTIONS = [
    bad(lambda: Publish(topic="a/+"), "MQTT-3.3.2-2", "publish-wildcard"),
    bad(lambda: Publish(topic=""), "MQTT-4.7.3-1", "publish-empty-topic"),
    bad(lambda: Publish(topic="a\ud800"), "MQTT-1.5.3-1", "publish-lone-surrogate"),
    bad(lambda: Publish(topic=LONG), "§1.5.3", "publish-topic-too-long"),
    bad(lambda: Publish(topic="é" * 32768), "§1.5.3", "publish-utf8-topic-too-long"),
    bad(lambda: Publish(topic=b"a"), None, "publish-topic-bytes"),  # type: ignore[arg-type]
    bad(lambda: Publish(topic="a", payload="x"), None, "publish-payload-str"),  # type: ignore[arg-type]
    bad(lambda: Publish(topic="a", qos=3, packet_id=1), "MQTT-3.3.1-4", "publish-qos-3"),
    bad(lambda: Publish(topic="a", qos=True, packet_id=1), "MQTT-3.3.1-4", "publish-qos-bool"),
    bad(lambda: Publish(topic="a", qos=1), "MQTT-2.3.1-1", "publish-qos1-no-packet-id"),
    bad(lambda: Publish(topic="a", qos=1, packet_id=65536), "MQTT-2.3.1-1", "publish-id-too-big"),
    bad(lambda: Publish(topic="a", packet_id=1), "MQTT-2.3.1-5", "publish-qos0-packet-id"),
    bad(lambda: Publish(topic="a", dup=True), "MQTT-3.3.1-2", "publish-qos0-dup"),
    bad(lambda: Connect(client_id="d", password=b"p"), "MQTT-3.1.2-22", "connect-password-only"),
    bad(lambda: Connect(client_id="", clean_session=False), "MQTT-3.1.3-8", "connect-empty-id"),
    bad(lambda: Connect(client_id="d", keepalive=65536), None, "connect-keepalive-range"),
    bad(lambda: Connect(client_id="d", keepalive=-1), None, "connect-keepalive-negative"),
    bad(lambda: Connect(client_id="d", username="u", password="p"), None, "connect-password-str"),  # type: ignore[arg-type]
    bad(
        lambda: Connect(client_id="d", username="u", password=bytes(65536)),
        "§3.1.3",
        "connect-password-too-long",
    ),
    bad(lambda: Connect(client_id="d", will="w"), None, "connect-will-not-will"),  # type: ignore[arg-type]
    bad(lambda: Connect(client_id="d\x00"), "MQTT-1.5.3-2", "connect-client-id-nul"),
    bad(lambda: Will(topic="w", qos=3), "MQTT-3.1.2-14", "will-qos-3"),
    bad(lambda: Will(topic="w/#"), "MQTT-3.3.2-2", "will-topic-wildcard"),
    bad(lambda: Will(topic="w", payload=bytes(65536)), "§3.1.3", "will-payload-too-long"),
    bad(lambda: ConnAck(return_code=6), "§3.2.2.3", "connack-reserved-code"),  # type: ignore[arg-type]
    bad(
        lambda: ConnAck(session_present=True, return_code=ConnectReturnCode.NOT_AUTHORIZED),
        "MQTT-3.2.2-4",
        "connack-session-with-refusal",
    ),
    bad(lambda: PubAck(packet_id=0), "MQTT-2.3.1-1", "puback-id-0"),
    bad(lambda: PubAck(packet_id=None), "MQTT-2.3.1-1", "puback-id-none"),  # type: ignore[arg-type]
    bad(lambda: Subscribe(packet_id=1, topics=()), "MQTT-3.8.3-3", "subscribe-empty"),
    bad(lambda: Subscribe(packet_id=1, topics=("a",)), None, "subscribe-not-pairs"),  # type: ignore[arg-type]
    bad(
        lambda: Subscribe(packet_id=1, topics=(("a", 1.0),)), "MQTT-3-8.3-4", "subscribe-qos-float"
    ),  # type: ignore[arg-type]
    bad(lambda: SubAck(packet_id=1, return_codes=(1.0,)), "MQTT-3.9.3-2", "suback-code-float"),  # type: ignore[arg-type]
    bad(lambda: Subscribe(packet_id=1, topics=(("a", 3),)), "MQTT-3-8.3-4", "subscribe-qos-3"),
    bad(lambda: Subscribe(packet_id=1, topics=(("#/a", 0),)), "MQTT-4.7.1-2", "subscribe-hash"),
    bad(lambda: SubAck(packet_id=1, return_codes=(0x81,)), "MQTT-3.9.3-2", "suback-code"),
    bad(lambda: SubAck(packet_id=1, return_codes=()), "§3.9.3", "suback-empty"),
    bad(lambda: Unsubscribe(packet_id=1, topics=()), "MQTT-3.10.3-2", "unsubscribe-empty"),
    bad(lambda: Unsubscribe(packet_id=1, topics=("",)), "MQTT-4.7.3-1", "unsubscribe-empty-filter"),
]


@pytest.mark.parametrize(("build", "rule"), CONSTRUCTION_REJECTIONS)
def test_construction_rejects(build: Callable[[], object], rule: str | None) -> None:
    with pytest.raises(LocalProtocolError) as info:
        build()
    assert type(info.value) is LocalProtocolError
    assert info.value.rule == rule


def test_empty_client_id_refusal_carries_its_connack_code() -> None:
    with pytest.raises(LocalProtocolError) as info:
        Connect(client_id="", clean_session=False)
    assert info.value.connack_code == ConnectReturnCode.IDENTIFIER_REJECTED
    assert info.value.packet_type == "CONNECT"


def test_encode_rejects_a_non_packet() -> None:
    from certhub.mqtt import encode

    with pytest.raises(LocalProtocolError, match="not an MQTT packet: str"):
        encode("PINGREQ")  # type: ignore[arg-type]


def test_packets_are_frozen_and_keyword_only() -> None:
    packet = Publish(topic="a")
    with pytest.raises(AttributeError):
        packet.topic = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Publish("a")  # type: ignore[call-arg]


def test_password_is_not_in_repr() -> None:
    assert "secret" not in repr(Connect(client_id="d", username="u", password=b"secret"))


def test_subscribe_accepts_lists_and_stores_tuples() -> None:
    packet = Subscribe(packet_id=1, topics=[["a", 1]])  # type: ignore[arg-type]
    assert packet.topics == (("a", 1),)
    assert hash(packet) == hash(Subscribe(packet_id=1, topics=(("a", 1),)))
