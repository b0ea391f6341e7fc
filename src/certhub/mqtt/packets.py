"""MQTT 3.1.1 control packets as frozen, keyword-only, validated values.

A packet that exists is valid: every class checks its fields in ``__post_init__`` and raises
:class:`LocalProtocolError` naming the broken rule (the decoder turns that into a
:class:`RemoteProtocolError` when the bad value came off the wire). Rules the object cannot
even represent (reserved flag bits, the protocol level, will flags without a will) are
checked by the decoder in :mod:`certhub.mqtt.codec`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import ClassVar

from certhub.mqtt._checks import MAX_FIELD, check_binary, check_packet_id, check_qos, check_string
from certhub.mqtt.errors import LocalProtocolError
from certhub.mqtt.topics import validate_topic_filter, validate_topic_name

__all__ = [
    "ConnAck",
    "Connect",
    "ConnectReturnCode",
    "Disconnect",
    "Packet",
    "PacketType",
    "PingReq",
    "PingResp",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "SubAck",
    "SubAckReturnCode",
    "Subscribe",
    "UnsubAck",
    "Unsubscribe",
    "Will",
]


class PacketType(enum.IntEnum):
    """Control packet types (the high nibble of the first byte)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class ConnectReturnCode(enum.IntEnum):
    """CONNACK return codes (§3.2.2.3); 6..255 are reserved."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


class SubAckReturnCode(enum.IntEnum):
    """SUBACK return codes (§3.9.3); any other value is reserved (MQTT-3.9.3-2)."""

    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    FAILURE = 0x80


class Packet:
    """Base of every control packet class."""

    __slots__ = ()
    packet_type: ClassVar[PacketType]


def _fail(packet_type: PacketType, message: str, rule: str | None = None) -> LocalProtocolError:
    return LocalProtocolError(message, rule=rule, packet_type=packet_type.name)


@dataclass(frozen=True, kw_only=True, slots=True)
class Will:
    """The will message of a CONNECT (published if the connection ends without DISCONNECT)."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False

    def __post_init__(self) -> None:
        validate_topic_name(self.topic, "CONNECT")  # MQTT-3.1.3-10
        check_binary(self.payload, "will message", "CONNECT")
        check_qos(self.qos, "will QoS", "MQTT-3.1.2-14", "CONNECT")


@dataclass(frozen=True, kw_only=True, slots=True)
class Connect(Packet):
    """CONNECT, always protocol name "MQTT" level 4 (MQTT 3.1.1)."""

    packet_type: ClassVar[PacketType] = PacketType.CONNECT
    PROTOCOL_NAME: ClassVar[str] = "MQTT"
    PROTOCOL_LEVEL: ClassVar[int] = 4

    client_id: str
    clean_session: bool = True
    keepalive: int = 60
    username: str | None = None
    password: bytes | None = field(default=None, repr=False)
    will: Will | None = None

    def __post_init__(self) -> None:
        check_string(self.client_id, "client identifier", "CONNECT")  # MQTT-3.1.3-4
        if not self.client_id and not self.clean_session:  # MQTT-3.1.3-7
            raise LocalProtocolError(
                "empty client identifier requires clean session",
                rule="MQTT-3.1.3-8",
                packet_type="CONNECT",
                connack_code=ConnectReturnCode.IDENTIFIER_REJECTED,
            )
        if type(self.keepalive) is not int or not 0 <= self.keepalive <= 65535:
            raise _fail(PacketType.CONNECT, f"keepalive must be 0..65535, not {self.keepalive!r}")
        if self.username is not None:
            check_string(self.username, "user name", "CONNECT")  # MQTT-3.1.3-11
        if self.password is not None:
            if self.username is None:
                raise _fail(PacketType.CONNECT, "password without user name", "MQTT-3.1.2-22")
            check_binary(self.password, "password", "CONNECT")
        if self.will is not None and not isinstance(self.will, Will):
            raise _fail(PacketType.CONNECT, "will must be a Will")


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnAck(Packet):
    """CONNACK: the server's answer to CONNECT."""

    packet_type: ClassVar[PacketType] = PacketType.CONNACK

    session_present: bool = False
    return_code: ConnectReturnCode = ConnectReturnCode.ACCEPTED

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "return_code", ConnectReturnCode(self.return_code))
        except ValueError:
            raise _fail(
                PacketType.CONNACK, f"reserved return code {self.return_code!r}", "§3.2.2.3"
            ) from None
        if self.return_code and self.session_present:
            raise _fail(PacketType.CONNACK, "session present with a refusal", "MQTT-3.2.2-4")


@dataclass(frozen=True, kw_only=True, slots=True)
class Publish(Packet):
    """PUBLISH: an application message."""

    packet_type: ClassVar[PacketType] = PacketType.PUBLISH

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None

    def __post_init__(self) -> None:
        topic, qos, packet_id = self.topic, self.qos, self.packet_id
        if (  # fast path: sufficient conditions for the common valid packet
            type(topic) is str
            and topic.isascii()
            and 0 < len(topic) <= MAX_FIELD
            and "+" not in topic
            and "#" not in topic
            and "\x00" not in topic
            and type(self.payload) is bytes
            and type(qos) is int
            and (
                (qos == 0 and packet_id is None and not self.dup)
                or (
                    (qos == 1 or qos == 2) and type(packet_id) is int and 0 < packet_id <= MAX_FIELD
                )
            )
        ):
            return
        self._validate()

    def _validate(self) -> None:
        validate_topic_name(self.topic, "PUBLISH")  # MQTT-3.3.2-1, MQTT-3.3.2-2
        if type(self.payload) is not bytes:
            raise _fail(PacketType.PUBLISH, "payload must be bytes")
        if self.qos == 0 and type(self.qos) is int:
            if self.packet_id is not None:
                raise _fail(PacketType.PUBLISH, "QoS 0 with a packet identifier", "MQTT-2.3.1-5")
            if self.dup:
                raise _fail(PacketType.PUBLISH, "DUP set on QoS 0", "MQTT-3.3.1-2")
            return
        check_qos(self.qos, "QoS", "MQTT-3.3.1-4", "PUBLISH")
        check_packet_id(self.packet_id, "PUBLISH")  # MQTT-2.3.1-1: None is rejected too


class _PublishDraft(Packet):
    """A :class:`Publish` under construction: the same slot layout, ordinary attributes."""

    __slots__ = tuple(f.name for f in fields(Publish))
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None


def _build_publish(
    topic: str, payload: bytes, qos: int, retain: bool, dup: bool, packet_id: int | None
) -> Publish:
    """``Publish(topic=…, …)`` for the decoder's hot path, validated the same way.

    The frozen dataclass ``__init__`` pays ``object.__setattr__`` per field, about half the
    cost of decoding a PUBLISH. A draft with the same slots takes plain stores and then
    becomes a Publish (``__class__`` assignment between identical layouts); the same
    ``__post_init__`` runs.
    """
    draft = object.__new__(_PublishDraft)
    draft.topic = topic
    draft.payload = payload
    draft.qos = qos
    draft.retain = retain
    draft.dup = dup
    draft.packet_id = packet_id
    draft.__class__ = Publish  # type: ignore[assignment]
    packet: Publish = draft  # type: ignore[assignment]
    packet.__post_init__()
    return packet


@dataclass(frozen=True, kw_only=True, slots=True)
class _IdOnly(Packet):
    """Base of the packets whose body is just a packet identifier."""

    packet_id: int

    def __post_init__(self) -> None:
        check_packet_id(self.packet_id, self.packet_type.name)


@dataclass(frozen=True, kw_only=True, slots=True)
class PubAck(_IdOnly):
    """PUBACK: acknowledges a QoS 1 PUBLISH."""

    packet_type: ClassVar[PacketType] = PacketType.PUBACK


@dataclass(frozen=True, kw_only=True, slots=True)
class PubRec(_IdOnly):
    """PUBREC (QoS 2 step 1) — decoded only so that QoS 2 use can be refused."""

    packet_type: ClassVar[PacketType] = PacketType.PUBREC


@dataclass(frozen=True, kw_only=True, slots=True)
class PubRel(_IdOnly):
    """PUBREL (QoS 2 step 2) — decoded only so that QoS 2 use can be refused."""

    packet_type: ClassVar[PacketType] = PacketType.PUBREL


@dataclass(frozen=True, kw_only=True, slots=True)
class PubComp(_IdOnly):
    """PUBCOMP (QoS 2 step 3) — decoded only so that QoS 2 use can be refused."""

    packet_type: ClassVar[PacketType] = PacketType.PUBCOMP


@dataclass(frozen=True, kw_only=True, slots=True)
class UnsubAck(_IdOnly):
    """UNSUBACK: acknowledges an UNSUBSCRIBE."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBACK


@dataclass(frozen=True, kw_only=True, slots=True)
class Subscribe(Packet):
    """SUBSCRIBE: ``topics`` is a tuple of ``(topic filter, requested QoS)``."""

    packet_type: ClassVar[PacketType] = PacketType.SUBSCRIBE

    packet_id: int
    topics: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        check_packet_id(self.packet_id, "SUBSCRIBE")
        try:
            object.__setattr__(self, "topics", tuple((f, q) for f, q in self.topics))
        except (TypeError, ValueError):
            raise _fail(PacketType.SUBSCRIBE, "topics must be (filter, QoS) pairs") from None
        if not self.topics:
            raise _fail(PacketType.SUBSCRIBE, "no topic filter", "MQTT-3.8.3-3")
        for topic_filter, qos in self.topics:
            validate_topic_filter(topic_filter, "SUBSCRIBE")  # MQTT-3.8.3-1, MQTT-4.7.1-2/3
            check_qos(qos, "requested QoS", "MQTT-3-8.3-4", "SUBSCRIBE")


@dataclass(frozen=True, kw_only=True, slots=True)
class SubAck(Packet):
    """SUBACK: one return code per requested filter, in order."""

    packet_type: ClassVar[PacketType] = PacketType.SUBACK

    packet_id: int
    return_codes: tuple[int, ...]

    def __post_init__(self) -> None:
        check_packet_id(self.packet_id, "SUBACK")
        object.__setattr__(self, "return_codes", tuple(self.return_codes))
        if not self.return_codes:
            raise _fail(PacketType.SUBACK, "no return code", "§3.9.3")
        for code in self.return_codes:
            if not isinstance(code, int) or isinstance(code, bool) or code not in _SUBACK_CODES:
                raise _fail(PacketType.SUBACK, f"reserved return code {code!r}", "MQTT-3.9.3-2")


_SUBACK_CODES = frozenset(int(code) for code in SubAckReturnCode)


@dataclass(frozen=True, kw_only=True, slots=True)
class Unsubscribe(Packet):
    """UNSUBSCRIBE: ``topics`` is a tuple of topic filters."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBSCRIBE

    packet_id: int
    topics: tuple[str, ...]

    def __post_init__(self) -> None:
        check_packet_id(self.packet_id, "UNSUBSCRIBE")
        object.__setattr__(self, "topics", tuple(self.topics))
        if not self.topics:
            raise _fail(PacketType.UNSUBSCRIBE, "no topic filter", "MQTT-3.10.3-2")
        for topic_filter in self.topics:
            validate_topic_filter(topic_filter, "UNSUBSCRIBE")  # MQTT-3.10.3-1


@dataclass(frozen=True, kw_only=True, slots=True)
class PingReq(Packet):
    """PINGREQ: keep-alive probe from the client."""

    packet_type: ClassVar[PacketType] = PacketType.PINGREQ


@dataclass(frozen=True, kw_only=True, slots=True)
class PingResp(Packet):
    """PINGRESP: the server's answer to PINGREQ."""

    packet_type: ClassVar[PacketType] = PacketType.PINGRESP


@dataclass(frozen=True, kw_only=True, slots=True)
class Disconnect(Packet):
    """DISCONNECT: the client closes cleanly (the will is discarded)."""

    packet_type: ClassVar[PacketType] = PacketType.DISCONNECT
