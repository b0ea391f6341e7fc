"""Bytes <-> packets for MQTT 3.1.1: :func:`encode` and the incremental :class:`Decoder`.

The decoder is sans-I/O: ``feed(data)`` returns the packets completed by ``data`` and keeps
the rest. It rejects a packet as soon as the bytes seen prove it bad: the first byte (type and
reserved flags), the remaining length (at most 4 bytes, §2.2.3; fixed for the short packets;
the whole packet at most ``max_packet_size``) — all before buffering the body — then the body
(:mod:`certhub.mqtt._bodies`). After an error the decoder stays failed: every later ``feed``
raises again.
"""

from __future__ import annotations

from certhub.mqtt._bodies import DECODERS, ENCODERS, MAX_REMAINING_LENGTH, TYPE_NAMES
from certhub.mqtt.errors import LocalProtocolError, RemoteProtocolError
from certhub.mqtt.packets import Packet, PacketType

__all__ = ["DEFAULT_MAX_PACKET_SIZE", "MAX_REMAINING_LENGTH", "Decoder", "encode"]

DEFAULT_MAX_PACKET_SIZE = 256 * 1024

# Required low nibble of the first byte per packet type (MQTT-2.2.2-1/2); None: PUBLISH,
# whose nibble is DUP/QoS/RETAIN. The rule ID cited when the nibble is wrong.
_FLAGS: dict[int, tuple[int | None, str]] = {
    PacketType.CONNECT: (0, "MQTT-2.2.2-2"),
    PacketType.CONNACK: (0, "MQTT-2.2.2-2"),
    PacketType.PUBLISH: (None, "MQTT-3.3.1-4"),
    PacketType.PUBACK: (0, "MQTT-2.2.2-2"),
    PacketType.PUBREC: (0, "MQTT-2.2.2-2"),
    PacketType.PUBREL: (2, "MQTT-3.6.1-1"),
    PacketType.PUBCOMP: (0, "MQTT-2.2.2-2"),
    PacketType.SUBSCRIBE: (2, "MQTT-3.8.1-1"),
    PacketType.SUBACK: (0, "MQTT-2.2.2-2"),
    PacketType.UNSUBSCRIBE: (2, "MQTT-3.10.1-1"),
    PacketType.UNSUBACK: (0, "MQTT-2.2.2-2"),
    PacketType.PINGREQ: (0, "MQTT-2.2.2-2"),
    PacketType.PINGRESP: (0, "MQTT-2.2.2-2"),
    PacketType.DISCONNECT: (0, "MQTT-2.2.2-2"),
}

# Packets whose remaining length is fixed; anything else is a short or trailing body.
_FIXED_LENGTH: dict[int, int] = {
    PacketType.CONNACK: 2,
    PacketType.PUBACK: 2,
    PacketType.PUBREC: 2,
    PacketType.PUBREL: 2,
    PacketType.PUBCOMP: 2,
    PacketType.UNSUBACK: 2,
    PacketType.PINGREQ: 0,
    PacketType.PINGRESP: 0,
    PacketType.DISCONNECT: 0,
}


def _error(ptype: str, message: str, rule: str | None = None) -> RemoteProtocolError:
    return RemoteProtocolError(message, rule=rule, packet_type=ptype)


def _first_byte_problem(first: int) -> tuple[str | None, str, str] | None:
    """(packet type name, message, rule) when ``first`` cannot start a packet, else None."""
    ptype, flags = first >> 4, first & 0x0F
    if ptype not in _FLAGS:
        return None, f"reserved packet type {ptype}", "§2.2.1"
    expected, rule = _FLAGS[ptype]
    if expected is None:
        return ("PUBLISH", "QoS 3", rule) if flags & 0x06 == 0x06 else None
    if flags != expected:
        return TYPE_NAMES[ptype], f"reserved flags {flags:04b}, not {expected:04b}", rule
    return None


# Worked out once for every first byte, so the decoding loop does a single index.
_FIRST_BYTE_PROBLEMS = tuple(_first_byte_problem(first) for first in range(256))
_FIXED = tuple(_FIXED_LENGTH.get(ptype, -1) for ptype in range(16))


def _long_header(src: bytes | bytearray, pos: int, n: int) -> tuple[int, int] | None:
    """(remaining length, body start) of a multi-byte remaining length; None if incomplete."""
    length, shift, i = 0, 0, pos + 1
    while i < n:
        byte = src[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length, i
        shift += 7
        if shift == 28:  # a fourth byte with the continuation bit (§2.2.3)
            raise RemoteProtocolError("remaining length longer than 4 bytes", rule="§2.2.3")
    return None


def _length_error(ptype: int, length: int, total: int, limit: int) -> RemoteProtocolError:
    name = TYPE_NAMES[ptype]
    fixed = _FIXED[ptype]
    if fixed >= 0 and length != fixed:
        return _error(name, f"remaining length {length}, must be {fixed}", "§2.2.3")
    return _error(name, f"packet of {total} bytes exceeds the {limit}-byte maximum")


class Decoder:
    """Incremental MQTT 3.1.1 decoder: bytes in, packets out.

    ``max_packet_size`` bounds a whole packet (fixed header included); a larger declared
    size is rejected as soon as its remaining length is read, before any body is buffered.
    """

    def __init__(self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        if not 2 <= max_packet_size <= MAX_REMAINING_LENGTH + 5:
            raise LocalProtocolError(f"max_packet_size {max_packet_size} out of range")
        self._max = max_packet_size
        self._buf = bytearray()
        self._error: RemoteProtocolError | None = None

    @property
    def max_packet_size(self) -> int:
        """Largest accepted packet, fixed header included."""
        return self._max

    @property
    def buffered(self) -> int:
        """Bytes held back as the start of an incomplete packet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        """Add ``data``; return the packets it completes, in order.

        Raises :class:`RemoteProtocolError` on malformed input, and again on every later
        call (the stream cannot be resynchronised).
        """
        packets: list[Packet] = []
        error = self._feed(data, packets)
        if error is not None:
            raise error
        return packets

    def feed_partial(self, data: bytes) -> tuple[list[Packet], RemoteProtocolError | None]:
        """Like :meth:`feed`, but return the error with the packets decoded before it.

        Lets a session apply, in order, the good packets that precede a malformed one.
        """
        packets: list[Packet] = []
        return packets, self._feed(data, packets)

    def _feed(self, data: bytes, packets: list[Packet]) -> RemoteProtocolError | None:
        if self._error is not None:
            raise RemoteProtocolError(
                f"decoder already failed: {self._error.message}",
                rule=self._error.rule,
                packet_type=self._error.packet_type,
            )
        buf = self._buf
        src: bytes | bytearray = data
        if buf:
            buf += data
            src = buf
        try:
            used = self._decode_all(src, packets)
        except RemoteProtocolError as exc:
            self._error, self._buf = exc, bytearray()
            return exc
        if src is buf:
            del buf[:used]
        elif used < len(data):
            self._buf = bytearray(data[used:])
        return None

    def _decode_all(self, src: bytes | bytearray, packets: list[Packet]) -> int:
        """Append the complete packets in ``src`` to ``packets``; return bytes consumed."""
        pos, n, limit = 0, len(src), self._max
        while pos < n:
            first = src[pos]
            problem = _FIRST_BYTE_PROBLEMS[first]
            if problem is not None:
                raise RemoteProtocolError(problem[1], rule=problem[2], packet_type=problem[0])
            if pos + 1 == n:
                break
            length, start = src[pos + 1], pos + 2
            if length > 0x7F:
                header = _long_header(src, pos, n)
                if header is None:
                    break
                length, start = header
            end = start + length
            fixed = _FIXED[first >> 4]
            if (fixed >= 0 and length != fixed) or end - pos > limit:
                raise _length_error(first >> 4, length, end - pos, limit)
            if end > n:
                break
            try:
                packets.append(DECODERS[first >> 4](first & 0x0F, bytes(src[start:end])))
            except LocalProtocolError as exc:  # a packet's own validation, fed by the peer
                raise RemoteProtocolError.from_error(exc) from exc
            pos = end
        return pos


def encode(packet: Packet) -> bytes:
    """The wire bytes of ``packet`` (any of the 14 MQTT 3.1.1 packet types)."""
    encoder = ENCODERS.get(type(packet))
    if encoder is None:
        raise LocalProtocolError(f"not an MQTT packet: {type(packet).__name__}")
    return encoder(packet)
