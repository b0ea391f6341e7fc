"""MQTT 3.1.1 connection state machines: :class:`ServerConnection`, :class:`ClientConnection`.

Why a table: the legal order of packets is the protocol, so it is written down once, as data,
in ``TRANSITIONS`` below — ``(state, sender, packet kind) -> next state`` — and both ends read
the same table (they see the same conversation; only the sender's role differs). The sender is
part of the key because PUBLISH and PUBACK flow both ways and a server may send nothing
before its CONNACK (MQTT-3.2.0-1) while a client may pipeline packets behind its CONNECT. A
key that is missing is a violation: :class:`RemoteProtocolError` when the peer sent it (the
state becomes ``ERROR`` and stays so), :class:`LocalProtocolError` when we tried to send it.

Two packet kinds are finer than the packet class: a CONNACK with a non-zero code (it closes
the conversation, MQTT-3.2.2-5) and a QoS 2 PUBLISH (IoT Hub supports QoS 0 and 1 and closes
the connection on QoS 2, so it has no entry; neither have PUBREC/PUBREL/PUBCOMP).

The session does no I/O and reads no clock: the adapter feeds bytes, writes
``data_to_send()``, and supplies times to :meth:`ServerConnection.keepalive_deadline`.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from certhub.mqtt.codec import DEFAULT_MAX_PACKET_SIZE, Decoder, encode
from certhub.mqtt.errors import LocalProtocolError, MqttError, RemoteProtocolError
from certhub.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)

__all__ = [
    "KEEPALIVE_TIMEOUT_CAP",
    "TRANSITIONS",
    "ClientConnection",
    "PacketKind",
    "Qos2Publish",
    "RefusedConnAck",
    "Role",
    "ServerConnection",
    "State",
    "packet_kind",
]

KEEPALIVE_TIMEOUT_CAP = 1767.0  # seconds; IoT Hub caps 1.5 x keepalive here


class State(enum.Enum):
    """Where the conversation is (the same for both ends)."""

    AWAIT_CONNECT = "AWAIT_CONNECT"  # nothing yet; the client must send CONNECT first
    AWAIT_CONNACK = "AWAIT_CONNACK"  # CONNECT seen; the server owes a CONNACK
    CONNECTED = "CONNECTED"  # the server accepted (CONNACK 0)
    CLOSED = "CLOSED"  # DISCONNECT or a refusing CONNACK; nothing more may flow
    ERROR = "ERROR"  # the peer broke the protocol; sticky


class Role(enum.Enum):
    """Which end sent a packet."""

    CLIENT = "CLIENT"
    SERVER = "SERVER"


class RefusedConnAck:
    """Packet kind of a CONNACK whose return code is not 0 (never instantiated)."""

    packet_type: ClassVar[PacketType] = PacketType.CONNACK


class Qos2Publish:
    """Packet kind of a QoS 2 PUBLISH (never instantiated; unsupported, as in IoT Hub)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBLISH


PacketKind = type[Packet] | type[RefusedConnAck] | type[Qos2Publish]

_AWAIT_CONNECT, _AWAIT_CONNACK = State.AWAIT_CONNECT, State.AWAIT_CONNACK
_CONNECTED, _CLOSED = State.CONNECTED, State.CLOSED
_C, _S = Role.CLIENT, Role.SERVER

TRANSITIONS: dict[tuple[State, Role, PacketKind], State] = {
    # MQTT-3.1.0-1: the first packet is the client's CONNECT; a second one is a
    # violation (MQTT-3.1.0-2) simply because no later state lists it.
    (_AWAIT_CONNECT, _C, Connect): _AWAIT_CONNACK,
    # The client may pipeline behind its CONNECT; the server sends CONNACK first.
    (_AWAIT_CONNACK, _C, Publish): _AWAIT_CONNACK,
    (_AWAIT_CONNACK, _C, Subscribe): _AWAIT_CONNACK,
    (_AWAIT_CONNACK, _C, Unsubscribe): _AWAIT_CONNACK,
    (_AWAIT_CONNACK, _C, PingReq): _AWAIT_CONNACK,
    (_AWAIT_CONNACK, _C, Disconnect): _CLOSED,
    (_AWAIT_CONNACK, _S, ConnAck): _CONNECTED,
    (_AWAIT_CONNACK, _S, RefusedConnAck): _CLOSED,  # MQTT-3.2.2-5
    # Connected: each side sends only its own kinds of packet.
    (_CONNECTED, _C, Publish): _CONNECTED,
    (_CONNECTED, _C, PubAck): _CONNECTED,
    (_CONNECTED, _C, Subscribe): _CONNECTED,
    (_CONNECTED, _C, Unsubscribe): _CONNECTED,
    (_CONNECTED, _C, PingReq): _CONNECTED,
    (_CONNECTED, _C, Disconnect): _CLOSED,
    (_CONNECTED, _S, Publish): _CONNECTED,
    (_CONNECTED, _S, PubAck): _CONNECTED,
    (_CONNECTED, _S, SubAck): _CONNECTED,
    (_CONNECTED, _S, UnsubAck): _CONNECTED,
    (_CONNECTED, _S, PingResp): _CONNECTED,
}


def packet_kind(packet: Packet) -> PacketKind:
    """The table key for ``packet``: its class, refined for refusals and QoS 2."""
    if isinstance(packet, Publish) and packet.qos == 2:
        return Qos2Publish
    if isinstance(packet, ConnAck) and packet.return_code:
        return RefusedConnAck
    return type(packet)


class _Connection:
    """What both ends share: decoding, the table, the outgoing buffer."""

    _our_role: Role
    _their_role: Role

    def __init__(self, *, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        self._decoder = Decoder(max_packet_size)
        self._state = State.AWAIT_CONNECT
        self._outgoing = bytearray()
        self._connect: Connect | None = None
        self._error: RemoteProtocolError | None = None

    @property
    def state(self) -> State:
        """The current :class:`State`."""
        return self._state

    @property
    def connect(self) -> Connect | None:
        """The CONNECT of this connection, once sent or received."""
        return self._connect

    @property
    def keepalive(self) -> int | None:
        """Keep-alive seconds from the CONNECT (0: off), None before the CONNECT."""
        return None if self._connect is None else self._connect.keepalive

    def receive_data(self, data: bytes) -> list[Packet]:
        """Decode ``data`` and apply each packet to the state machine; return the packets.

        Raises :class:`RemoteProtocolError` (and moves to ``ERROR``, for good) when the peer
        sent malformed bytes or a packet not allowed in the current state. Packets that
        precede the violation in the same ``data`` are applied (so :attr:`connect` is set)
        but not returned: the connection is over.
        """
        if self._error is not None:
            raise RemoteProtocolError(
                f"connection already failed: {self._error.message}",
                rule=self._error.rule,
                packet_type=self._error.packet_type,
                state=State.ERROR.name,
            )
        packets, decode_error = self._decoder.feed_partial(data)
        try:
            for packet in packets:
                self._apply(self._their_role, packet)
            if decode_error is not None:
                raise decode_error
        except RemoteProtocolError as exc:
            final = self._fail(exc)
            if final is exc:
                raise
            raise final from exc
        return packets

    def send(self, packet: Packet) -> None:
        """Queue ``packet`` for sending; :class:`LocalProtocolError` if illegal now."""
        if not isinstance(packet, Packet):
            raise LocalProtocolError(f"not an MQTT packet: {type(packet).__name__}")
        new_state = self._next_state(self._our_role, packet, LocalProtocolError)
        data = encode(packet)
        self._commit(packet, new_state)
        self._outgoing += data

    def data_to_send(self) -> bytes:
        """Drain and return the bytes queued by :meth:`send`."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def _apply(self, role: Role, packet: Packet) -> None:
        self._commit(packet, self._next_state(role, packet, RemoteProtocolError))

    def _next_state(self, role: Role, packet: Packet, error: type[MqttError]) -> State:
        kind = packet_kind(packet)
        new_state = TRANSITIONS.get((self._state, role, kind))
        if new_state is None:
            name = kind.packet_type.name
            detail = " with QoS 2 (unsupported)" if kind is Qos2Publish else ""
            raise error(
                f"{name}{detail} from the {role.value.lower()} is not allowed",
                packet_type=name,
                state=self._state.name,
                rule=_rule_for(self._state, role, kind),
            )
        return new_state

    def _commit(self, packet: Packet, new_state: State) -> None:
        if type(packet) is Connect:
            self._connect = packet
        self._state = new_state

    def _fail(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        """Enter ERROR; return ``exc`` completed with the state it happened in.

        A ``connack_code`` is kept only when a server refuses the first CONNECT: a CONNACK
        is the answer only from a server, and only before one was sent.
        """
        refusing = self._our_role is Role.SERVER and self._state is State.AWAIT_CONNECT
        connack = exc.connack_code if refusing else None
        if exc.state is None or connack != exc.connack_code:
            exc = RemoteProtocolError(
                exc.message,
                rule=exc.rule,
                packet_type=exc.packet_type,
                state=exc.state or self._state.name,
                connack_code=connack,
            )
        self._error = exc
        self._state = State.ERROR
        return exc


def _rule_for(state: State, role: Role, kind: PacketKind) -> str | None:
    if kind is Connect and state is not State.AWAIT_CONNECT:
        return "MQTT-3.1.0-2"
    if state is State.AWAIT_CONNECT:
        return "MQTT-3.1.0-1"
    if state is State.AWAIT_CONNACK and role is Role.SERVER:
        return "MQTT-3.2.0-1"
    return None


class ServerConnection(_Connection):
    """The server end of one MQTT connection.

    After a :class:`RemoteProtocolError` whose ``connack_code`` is set, the refusing CONNACK
    is already queued: the adapter writes ``data_to_send()`` and closes, as for any error.
    A client may pipeline packets behind CONNECT; they are returned in ``AWAIT_CONNACK`` and
    the adapter must hold them until it accepts (and drop them if it refuses, MQTT-3.1.4-5).
    """

    _our_role = Role.SERVER
    _their_role = Role.CLIENT

    def keepalive_deadline(self, last_activity: float) -> float | None:
        """When to drop a silent client (MQTT-3.1.2-24): ``last_activity`` + 1.5 x keepalive.

        Capped at :data:`KEEPALIVE_TIMEOUT_CAP` seconds as IoT Hub does; None when the
        keepalive is 0. Times are the adapter's (any monotonic float clock).
        """
        if self._connect is None:
            raise LocalProtocolError("no CONNECT received yet", state=self._state.name)
        if not self._connect.keepalive:
            return None
        return last_activity + min(1.5 * self._connect.keepalive, KEEPALIVE_TIMEOUT_CAP)

    def _fail(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        final = super()._fail(exc)
        if final.connack_code is not None:  # MQTT-3.1.2-2, MQTT-3.1.3-8
            self._outgoing += encode(ConnAck(return_code=final.connack_code))
        return final


class ClientConnection(_Connection):
    """The client end of one MQTT connection (used by the device agent).

    The first :meth:`send` must be a :class:`Connect`; the server's CONNACK moves the state to
    ``CONNECTED`` (code 0) or ``CLOSED`` (a refusal, visible in the returned ConnAck).
    """

    _our_role = Role.CLIENT
    _their_role = Role.SERVER
