"""Field checks shared by the packet classes and the topic helpers.

Each check raises :class:`LocalProtocolError` naming the rule; the decoder re-raises it as a
:class:`RemoteProtocolError` when the bad value came off the wire.
"""

from __future__ import annotations

from certhub.mqtt.errors import LocalProtocolError

__all__ = ["MAX_FIELD", "check_binary", "check_packet_id", "check_qos", "check_string"]

MAX_FIELD = 65535  # two-byte length prefix of strings and binary fields (§1.5.3)


def check_string(value: str, what: str, packet_type: str | None = None) -> None:
    """An MQTT UTF-8 string: well-formed, no U+0000, at most 65535 bytes encoded."""
    if type(value) is not str:
        raise LocalProtocolError(f"{what} must be str", packet_type=packet_type)
    if "\x00" in value:
        raise LocalProtocolError(
            f"{what} contains U+0000", rule="MQTT-1.5.3-2", packet_type=packet_type
        )
    if value.isascii():
        size = len(value)
    else:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates are not well-formed UTF-8
            raise LocalProtocolError(
                f"{what} is not well-formed UTF-8", rule="MQTT-1.5.3-1", packet_type=packet_type
            ) from None
    if size > MAX_FIELD:
        raise LocalProtocolError(
            f"{what} is longer than 65535 bytes", rule="§1.5.3", packet_type=packet_type
        )


def check_binary(value: bytes, what: str, packet_type: str | None = None) -> None:
    """Binary data with a two-byte length prefix (will message, password)."""
    if type(value) is not bytes:
        raise LocalProtocolError(f"{what} must be bytes", packet_type=packet_type)
    if len(value) > MAX_FIELD:
        raise LocalProtocolError(
            f"{what} is longer than 65535 bytes", rule="§3.1.3", packet_type=packet_type
        )


def check_packet_id(value: object, packet_type: str) -> None:
    """A packet identifier: 1..65535."""
    if type(value) is not int or not 0 < value <= MAX_FIELD:
        raise LocalProtocolError(
            f"packet identifier must be 1..65535, not {value!r}",
            rule="MQTT-2.3.1-1",
            packet_type=packet_type,
        )


def check_qos(value: object, what: str, rule: str, packet_type: str) -> None:
    """A QoS level: 0, 1 or 2."""
    if type(value) is not int or value not in (0, 1, 2):
        raise LocalProtocolError(
            f"{what} must be 0, 1 or 2, not {value!r}", rule=rule, packet_type=packet_type
        )
