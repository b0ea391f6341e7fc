"""Decoder and encoder against bytes built independently with struct.pack."""

from __future__ import annotations

import struct

import pytest
from mqtt_wire import blob, frame, u16, utf8, varint

from certhub.mqtt import (
    ConnAck,
    Connect,
    ConnectReturnCode,
    Decoder,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RemoteProtocolError,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)

TWIN = "$iothub/twin/PATCH/properties/reported/?$rid=1"

# (expected bytes, packet): every packet type, and the interesting variants.
CASES = [
    pytest.param(
        frame(0x10, blob(b"MQTT") + struct.pack("!BBH", 4, 0x02, 60) + utf8("dev-1")),
        Connect(client_id="dev-1"),
        id="connect/minimal",
    ),
    pytest.param(
        frame(
            0x10,
            blob(b"MQTT")
            + struct.pack("!BBH", 4, 0x80 | 0x40 | 0x20 | 0x08 | 0x04, 1200)
            + utf8("dev-1")
            + utf8("devices/dev-1/messages/events/")
            + blob(b"gone")
            + utf8("hub.example/dev-1/?api-version=2021-04-12")
            + blob(b"SharedAccessSignature sr=x"),
        ),
        Connect(
            client_id="dev-1",
            clean_session=False,
            keepalive=1200,
            username="hub.example/dev-1/?api-version=2021-04-12",
            password=b"SharedAccessSignature sr=x",
            will=Will(topic="devices/dev-1/messages/events/", payload=b"gone", qos=1, retain=True),
        ),
        id="connect/full",
    ),
    pytest.param(
        frame(0x10, blob(b"MQTT") + struct.pack("!BBH", 4, 0x82, 0) + utf8("") + utf8("")),
        Connect(client_id="", keepalive=0, username=""),
        id="connect/empty-client-id-clean",
    ),
    pytest.param(b"\x20\x02\x00\x00", ConnAck(), id="connack/accepted"),
    pytest.param(b"\x20\x02\x01\x00", ConnAck(session_present=True), id="connack/session"),
    pytest.param(
        b"\x20\x02\x00\x05",
        ConnAck(return_code=ConnectReturnCode.NOT_AUTHORIZED),
        id="connack/refused",
    ),
    pytest.param(
        frame(0x30, utf8("devices/d/messages/events/") + b"{}"),
        Publish(topic="devices/d/messages/events/", payload=b"{}"),
        id="publish/qos0",
    ),
    pytest.param(
        frame(0x32, utf8(TWIN) + u16(7) + b'{"a":1}'),
        Publish(topic=TWIN, payload=b'{"a":1}', qos=1, packet_id=7),
        id="publish/qos1",
    ),
    pytest.param(
        frame(0x3D, utf8("a/b") + u16(65535)),
        Publish(topic="a/b", qos=2, retain=True, dup=True, packet_id=65535),
        id="publish/qos2-dup-retain-empty",
    ),
    pytest.param(
        frame(0x31, utf8("t/é/✓") + bytes(range(256)) * 2),
        Publish(topic="t/é/✓", payload=bytes(range(256)) * 2, retain=True),
        id="publish/utf8-two-byte-length",
    ),
    pytest.param(b"\x40\x02\x00\x07", PubAck(packet_id=7), id="puback"),
    pytest.param(b"\x50\x02\x01\x00", PubRec(packet_id=256), id="pubrec"),
    pytest.param(b"\x62\x02\x00\x01", PubRel(packet_id=1), id="pubrel"),
    pytest.param(b"\x70\x02\xff\xff", PubComp(packet_id=65535), id="pubcomp"),
    pytest.param(
        frame(0x82, u16(3) + utf8("$iothub/twin/res/#") + b"\x01" + utf8("devices/+/x") + b"\x02"),
        Subscribe(packet_id=3, topics=(("$iothub/twin/res/#", 1), ("devices/+/x", 2))),
        id="subscribe",
    ),
    pytest.param(
        frame(0x90, u16(3) + b"\x01\x80\x00\x02"),
        SubAck(packet_id=3, return_codes=(1, 0x80, 0, 2)),
        id="suback",
    ),
    pytest.param(
        frame(0xA2, u16(9) + utf8("a/#") + utf8("b")),
        Unsubscribe(packet_id=9, topics=("a/#", "b")),
        id="unsubscribe",
    ),
    pytest.param(b"\xb0\x02\x00\x09", UnsubAck(packet_id=9), id="unsuback"),
    pytest.param(b"\xc0\x00", PingReq(), id="pingreq"),
    pytest.param(b"\xd0\x00", PingResp(), id="pingresp"),
    pytest.param(b"\xe0\x00", Disconnect(), id="disconnect"),
]


@pytest.mark.parametrize(("wire", "packet"), CASES)
def test_encode_matches_independent_bytes(wire: bytes, packet: Packet) -> None:
    assert encode(packet) == wire


@pytest.mark.parametrize(("wire", "packet"), CASES)
def test_decode_whole(wire: bytes, packet: Packet) -> None:
    decoder = Decoder()
    assert decoder.feed(wire) == [packet]
    assert decoder.buffered == 0


@pytest.mark.parametrize(("wire", "packet"), CASES)
def test_decode_byte_by_byte(wire: bytes, packet: Packet) -> None:
    decoder = Decoder()
    got = [decoder.feed(wire[i : i + 1]) for i in range(len(wire))]
    assert got[-1] == [packet]
    assert all(chunk == [] for chunk in got[:-1])
    assert decoder.buffered == 0


@pytest.mark.parametrize(("wire", "packet"), CASES)
def test_decode_with_trailing_data(wire: bytes, packet: Packet) -> None:
    other = b"\x40\x02\x12\x34"  # PUBACK 0x1234
    decoder = Decoder()
    stream = wire + other + wire
    cut = len(wire) + len(other) + len(wire) // 2
    assert decoder.feed(stream[:cut]) == [packet, PubAck(packet_id=0x1234)]
    assert decoder.buffered == cut - len(wire) - len(other)
    assert decoder.feed(stream[cut:]) == [packet]
    assert decoder.buffered == 0


def test_empty_feed_is_harmless() -> None:
    decoder = Decoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\xc0") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\x00") == [PingReq()]


# --- remaining length ------------------------------------------------------------------

BOUNDARIES = [
    pytest.param(0, b"\x00", id="0"),
    pytest.param(127, b"\x7f", id="127"),
    pytest.param(128, b"\x80\x01", id="128"),
    pytest.param(16383, b"\xff\x7f", id="16383"),
    pytest.param(16384, b"\x80\x80\x01", id="16384"),
    pytest.param(2097151, b"\xff\xff\x7f", id="2097151"),
    pytest.param(2097152, b"\x80\x80\x80\x01", id="2097152"),
    pytest.param(268435455, b"\xff\xff\xff\x7f", id="268435455"),
]


@pytest.mark.parametrize(("length", "encoded"), BOUNDARIES)
def test_remaining_length_header_is_read_without_the_body(length: int, encoded: bytes) -> None:
    assert varint(length) == encoded  # the test helper agrees with the spec's table
    decoder = Decoder(max_packet_size=268435455 + 5)
    first = 0xC0 if length == 0 else 0x30
    assert decoder.feed(bytes([first]) + encoded) == ([PingReq()] if length == 0 else [])
    assert decoder.buffered == (0 if length == 0 else 1 + len(encoded))


@pytest.mark.parametrize(("length", "encoded"), BOUNDARIES[2:-1])
def test_remaining_length_boundaries_round_trip(length: int, encoded: bytes) -> None:
    payload = b"p" * (length - 3)
    wire = b"\x30" + encoded + utf8("t") + payload
    packet = Publish(topic="t", payload=payload)
    assert encode(packet) == wire
    decoder = Decoder(max_packet_size=len(wire))
    half = len(wire) // 2
    assert decoder.feed(wire[:half]) == []
    assert decoder.feed(wire[half:]) == [packet]


def test_remaining_length_of_five_bytes_is_rejected() -> None:
    decoder = Decoder(max_packet_size=268435455 + 5)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(b"\x30\xff\xff\xff\xff\x01")
    assert info.value.rule == "§2.2.3"
    assert info.value.connack_code is None


def test_four_continuation_bytes_fail_without_waiting_for_a_fifth() -> None:
    decoder = Decoder(max_packet_size=268435455 + 5)
    assert decoder.feed(b"\x30\xff\xff\xff") == []
    with pytest.raises(RemoteProtocolError, match="longer than 4 bytes"):
        decoder.feed(b"\xff")


# --- maximum packet size ---------------------------------------------------------------


def test_too_large_packet_is_rejected_on_its_fixed_header() -> None:
    decoder = Decoder(max_packet_size=1024)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(b"\x30" + varint(1022))  # 1 + 2 + 1022 = 1025 bytes
    assert "exceeds the 1024-byte maximum" in str(info.value)
    assert info.value.packet_type == "PUBLISH"
    assert decoder.buffered == 0


def test_too_large_packet_is_rejected_byte_by_byte_before_any_body() -> None:
    decoder = Decoder(max_packet_size=1024)
    assert decoder.feed(b"\x30") == []
    assert decoder.feed(b"\xfe") == []  # continuation: length still unknown
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"\x07")
    assert decoder.buffered == 0


def test_default_maximum_is_256_kib() -> None:
    decoder = Decoder()
    assert decoder.max_packet_size == 256 * 1024
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"\x30" + varint(256 * 1024 - 3))  # 4-byte header + body = 256 KiB + 1


def test_packet_of_exactly_the_maximum_is_accepted() -> None:
    wire = frame(0x30, utf8("t") + b"x" * 1017)  # 1 + 2 + 1020
    assert len(wire) == 1023
    assert Decoder(max_packet_size=1023).feed(wire) == [Publish(topic="t", payload=b"x" * 1017)]


def test_large_packet_fed_byte_by_byte_stays_linear() -> None:
    payload = bytes(200_000)
    wire = frame(0x30, utf8("t") + payload)
    decoder = Decoder()
    for i in range(0, len(wire) - 1):
        decoder.feed(wire[i : i + 1])
    assert decoder.buffered == len(wire) - 1
    assert decoder.feed(wire[-1:]) == [Publish(topic="t", payload=payload)]


@pytest.mark.parametrize("size", [0, 1, 268435455 + 6])
def test_decoder_rejects_impossible_maximum(size: int) -> None:
    from certhub.mqtt import LocalProtocolError

    with pytest.raises(LocalProtocolError):
        Decoder(max_packet_size=size)


def test_decoder_errors_are_sticky() -> None:
    decoder = Decoder()
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"\x00\x00")
    with pytest.raises(RemoteProtocolError, match="decoder already failed"):
        decoder.feed(b"\xc0\x00")


def test_feed_partial_returns_packets_before_the_error() -> None:
    decoder = Decoder()
    packets, error = decoder.feed_partial(b"\xc0\x00\xe0\x00\xf0\x00")
    assert packets == [PingReq(), Disconnect()]
    assert isinstance(error, RemoteProtocolError)
    assert error.rule == "§2.2.1"


def test_decoded_publish_is_a_plain_frozen_publish() -> None:
    packet = Decoder().feed(frame(0x32, utf8("a/b") + u16(7) + b"x"))[0]
    assert type(packet) is Publish
    assert packet == Publish(topic="a/b", payload=b"x", qos=1, packet_id=7)
    assert hash(packet) == hash(Publish(topic="a/b", payload=b"x", qos=1, packet_id=7))
    with pytest.raises(AttributeError):
        packet.topic = "c"  # type: ignore[misc]
