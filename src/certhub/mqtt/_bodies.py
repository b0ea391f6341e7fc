"""Packet bodies: one decoder and one encoder per packet type (the framing is in codec).

Decoders take the fixed header's flags nibble and the body, whose length the framing has
already checked for the fixed-size packets; they raise :class:`RemoteProtocolError` for what
the packet classes cannot represent and let the classes' own validation (a
:class:`LocalProtocolError`) propagate for the framing to re-raise as remote.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from certhub.mqtt.errors import LocalProtocolError, RemoteProtocolError
from certhub.mqtt.packets import (
    ConnAck,
    Connect,
    ConnectReturnCode,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
    _build_publish,
)

__all__ = ["DECODERS", "ENCODERS", "MAX_REMAINING_LENGTH", "TYPE_NAMES"]

MAX_REMAINING_LENGTH = 268_435_455  # four bytes of 7 bits (§2.2.3)
TYPE_NAMES = {t.value: t.name for t in PacketType}
_U16 = struct.Struct("!H").pack
_MAX_RETURN_CODE = max(ConnectReturnCode)
_BodyDecoder = Callable[[int, bytes], Packet]


def _error(ptype: str, message: str, rule: str | None = None) -> RemoteProtocolError:
    return RemoteProtocolError(message, rule=rule, packet_type=ptype)


def _short(ptype: str, what: str) -> RemoteProtocolError:
    """The remaining length ends inside a field."""
    return RemoteProtocolError(f"body ends inside {what}", rule="§2.2.3", packet_type=ptype)


def _u16(body: bytes, pos: int, what: str, ptype: str) -> int:
    if pos + 2 > len(body):
        raise _short(ptype, what)
    return (body[pos] << 8) | body[pos + 1]


def _binary(body: bytes, pos: int, what: str, ptype: str) -> tuple[bytes, int]:
    end = pos + 2 + _u16(body, pos, what, ptype)
    if end > len(body):
        raise _short(ptype, what)
    return body[pos + 2 : end], end


def _string(body: bytes, pos: int, what: str, ptype: str) -> tuple[str, int]:
    raw, end = _binary(body, pos, what, ptype)
    try:
        return raw.decode("utf-8"), end
    except UnicodeDecodeError:
        raise _error(ptype, f"{what} is not well-formed UTF-8", "MQTT-1.5.3-1") from None


def _check_end(body: bytes, pos: int, ptype: str) -> None:
    if pos != len(body):
        raise _error(ptype, f"{len(body) - pos} trailing bytes inside the packet", "§2.2.3")


def _protocol(body: bytes) -> tuple[int, int, int]:
    """Check protocol name and level; return (connect flags, keepalive, next position)."""
    name, pos = _string(body, 0, "protocol name", "CONNECT")
    if name not in ("MQTT", "MQIsdp"):
        raise _error("CONNECT", f"unknown protocol name {name!r}", "MQTT-3.1.2-1")
    if pos >= len(body):
        raise _short("CONNECT", "protocol level")
    level = body[pos]
    if name != "MQTT" or level != 4:
        raise RemoteProtocolError(
            f"unsupported protocol {name!r} level {level} (only MQTT 3.1.1)",
            rule="MQTT-3.1.2-2",
            packet_type="CONNECT",
            connack_code=ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
        )
    if pos + 4 > len(body):
        raise _short("CONNECT", "connect flags / keepalive")
    return body[pos + 1], _u16(body, pos + 2, "keepalive", "CONNECT"), pos + 4


def _check_connect_flags(cflags: int) -> None:
    if cflags & 0x01:
        raise _error("CONNECT", "reserved connect flag is set", "MQTT-3.1.2-3")
    if not cflags & 0x04:
        if cflags & 0x18:
            raise _error("CONNECT", "will QoS without will flag", "MQTT-3.1.2-13")
        if cflags & 0x20:
            raise _error("CONNECT", "will retain without will flag", "MQTT-3.1.2-15")
    elif cflags & 0x18 == 0x18:
        raise _error("CONNECT", "will QoS 3", "MQTT-3.1.2-14")
    if cflags & 0x40 and not cflags & 0x80:
        raise _error("CONNECT", "password flag without user name flag", "MQTT-3.1.2-22")


def _decode_connect(flags: int, body: bytes) -> Packet:
    cflags, keepalive, pos = _protocol(body)
    _check_connect_flags(cflags)
    client_id, pos = _string(body, pos, "client identifier", "CONNECT")
    will = username = password = None
    if cflags & 0x04:
        topic, pos = _string(body, pos, "will topic", "CONNECT")
        message, pos = _binary(body, pos, "will message", "CONNECT")
        will = Will(topic=topic, payload=message, qos=(cflags >> 3) & 3, retain=bool(cflags & 0x20))
    if cflags & 0x80:
        username, pos = _string(body, pos, "user name", "CONNECT")
    if cflags & 0x40:
        password, pos = _binary(body, pos, "password", "CONNECT")
    _check_end(body, pos, "CONNECT")
    return Connect(
        client_id=client_id,
        clean_session=bool(cflags & 0x02),
        keepalive=keepalive,
        username=username,
        password=password,
        will=will,
    )


def _decode_connack(flags: int, body: bytes) -> Packet:
    if body[0] & 0xFE:
        raise _error("CONNACK", "reserved acknowledge flags are set", "§3.2.2.1")
    if body[1] > _MAX_RETURN_CODE:
        raise _error("CONNACK", f"reserved return code {body[1]}", "§3.2.2.3")
    return ConnAck(session_present=bool(body[0]), return_code=ConnectReturnCode(body[1]))


def _decode_publish(flags: int, body: bytes) -> Packet:
    n = len(body)
    if n < 2:
        raise _short("PUBLISH", "topic name")
    qos = (flags >> 1) & 3
    end = 2 + ((body[0] << 8) | body[1])
    if end + (2 if qos else 0) > n:
        raise _short("PUBLISH", "topic name or packet identifier")
    try:
        topic = body[2:end].decode("utf-8")
    except UnicodeDecodeError:
        raise _error("PUBLISH", "topic name is not well-formed UTF-8", "MQTT-1.5.3-1") from None
    packet_id = None
    if qos:
        packet_id = (body[end] << 8) | body[end + 1]
        end += 2
    return _build_publish(topic, body[end:], qos, flags & 1 == 1, flags & 8 == 8, packet_id)


def _decode_subscribe(flags: int, body: bytes) -> Packet:
    packet_id = _u16(body, 0, "packet identifier", "SUBSCRIBE")
    pos, topics = 2, []
    while pos < len(body):
        topic_filter, pos = _string(body, pos, "topic filter", "SUBSCRIBE")
        if pos >= len(body):
            raise _short("SUBSCRIBE", "requested QoS")
        if body[pos] > 2:  # reserved bits or QoS 3
            raise _error("SUBSCRIBE", f"requested QoS byte {body[pos]:#04x}", "MQTT-3-8.3-4")
        topics.append((topic_filter, body[pos]))
        pos += 1
    return Subscribe(packet_id=packet_id, topics=tuple(topics))


def _decode_suback(flags: int, body: bytes) -> Packet:
    packet_id = _u16(body, 0, "packet identifier", "SUBACK")
    return SubAck(packet_id=packet_id, return_codes=tuple(body[2:]))


def _decode_unsubscribe(flags: int, body: bytes) -> Packet:
    packet_id = _u16(body, 0, "packet identifier", "UNSUBSCRIBE")
    pos, topics = 2, []
    while pos < len(body):
        topic_filter, pos = _string(body, pos, "topic filter", "UNSUBSCRIBE")
        topics.append(topic_filter)
    return Unsubscribe(packet_id=packet_id, topics=tuple(topics))


def _id_only(cls: type[PubAck | PubRec | PubRel | PubComp | UnsubAck]) -> _BodyDecoder:
    def decode(flags: int, body: bytes) -> Packet:
        return cls(packet_id=(body[0] << 8) | body[1])

    return decode


def _empty(packet: Packet) -> _BodyDecoder:
    def decode(flags: int, body: bytes) -> Packet:
        return packet  # frozen, so one instance serves every decode

    return decode


DECODERS: dict[int, _BodyDecoder] = {
    PacketType.CONNECT: _decode_connect,
    PacketType.CONNACK: _decode_connack,
    PacketType.PUBLISH: _decode_publish,
    PacketType.PUBACK: _id_only(PubAck),
    PacketType.PUBREC: _id_only(PubRec),
    PacketType.PUBREL: _id_only(PubRel),
    PacketType.PUBCOMP: _id_only(PubComp),
    PacketType.SUBSCRIBE: _decode_subscribe,
    PacketType.SUBACK: _decode_suback,
    PacketType.UNSUBSCRIBE: _decode_unsubscribe,
    PacketType.UNSUBACK: _id_only(UnsubAck),
    PacketType.PINGREQ: _empty(PingReq()),
    PacketType.PINGRESP: _empty(PingResp()),
    PacketType.DISCONNECT: _empty(Disconnect()),
}


# --- encoding ---------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        if not n:
            out.append(digit)
            return bytes(out)
        out.append(digit | 0x80)


def _frame(first: int, body: bytes) -> bytes:
    n = len(body)
    if n < 128:
        return bytes((first, n)) + body
    if n > MAX_REMAINING_LENGTH:
        raise LocalProtocolError(
            f"body of {n} bytes exceeds the remaining-length limit",
            rule="§2.2.3",
            packet_type=TYPE_NAMES[first >> 4],
        )
    return bytes((first,)) + _varint(n) + body


def _str(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _U16(len(raw)) + raw


def _bin(value: bytes) -> bytes:
    return _U16(len(value)) + value


def _encode_connect(p: Connect) -> bytes:
    flags = (p.username is not None) << 7 | (p.password is not None) << 6 | p.clean_session << 1
    parts = [_str("MQTT"), bytes((4,)), b"", _U16(p.keepalive), _str(p.client_id)]
    if p.will is not None:
        flags |= p.will.retain << 5 | p.will.qos << 3 | 0x04
        parts += (_str(p.will.topic), _bin(p.will.payload))
    if p.username is not None:
        parts.append(_str(p.username))
    if p.password is not None:
        parts.append(_bin(p.password))
    parts[2] = bytes((flags,))
    return _frame(0x10, b"".join(parts))


def _encode_connack(p: ConnAck) -> bytes:
    return bytes((0x20, 2, p.session_present, p.return_code))


def _encode_publish(p: Publish) -> bytes:
    topic = p.topic.encode("utf-8")
    first = 0x30 | p.dup << 3 | p.qos << 1 | p.retain
    if p.packet_id is None:
        return _frame(first, b"".join((_U16(len(topic)), topic, p.payload)))
    return _frame(first, b"".join((_U16(len(topic)), topic, _U16(p.packet_id), p.payload)))


def _encode_id_only(p: PubAck | PubRec | PubRel | PubComp | UnsubAck) -> bytes:
    first = p.packet_type << 4 | (2 if p.packet_type == PacketType.PUBREL else 0)
    return bytes((first, 2)) + _U16(p.packet_id)


def _encode_subscribe(p: Subscribe) -> bytes:
    body = b"".join(_str(f) + bytes((q,)) for f, q in p.topics)
    return _frame(0x82, _U16(p.packet_id) + body)


def _encode_suback(p: SubAck) -> bytes:
    return _frame(0x90, _U16(p.packet_id) + bytes(p.return_codes))


def _encode_unsubscribe(p: Unsubscribe) -> bytes:
    return _frame(0xA2, _U16(p.packet_id) + b"".join(_str(f) for f in p.topics))


ENCODERS: dict[type[Packet], Callable[[Any], bytes]] = {
    Connect: _encode_connect,
    ConnAck: _encode_connack,
    Publish: _encode_publish,
    PubAck: _encode_id_only,
    PubRec: _encode_id_only,
    PubRel: _encode_id_only,
    PubComp: _encode_id_only,
    Subscribe: _encode_subscribe,
    SubAck: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    UnsubAck: _encode_id_only,
    PingReq: lambda p: b"\xc0\x00",
    PingResp: lambda p: b"\xd0\x00",
    Disconnect: lambda p: b"\xe0\x00",
}
