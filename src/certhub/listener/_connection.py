"""One MQTT-over-TLS connection: the asyncio protocol around a sans-I/O ServerConnection.

Why it is shaped so: an idle device must cost tens of KiB, so the object has
``__slots__``, no task of its own and one timer handle (``loop.call_at``) that serves first
as the CONNECT timeout and then as the keep-alive deadline; the deadline is re-armed
lazily when it fires, not on every packet. Packets are handled synchronously inside
``data_received`` while the frontend's handlers return plain values (telemetry); the first
handler that returns an awaitable (a store call) moves the connection to a drain task
that holds the later packets in a deque, in order, and ends when the deque is empty.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from certhub.listener._tls import TlsConnection
from certhub.listener.api import CLIENT_DISCONNECT, PeerInfo, Refusal, Session
from certhub.mqtt import (
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    RemoteProtocolError,
    ServerConnection,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)

if TYPE_CHECKING:
    from certhub.listener.server import Listener

__all__ = ["MqttConnection"]

log = logging.getLogger("certhub.listener")

MAX_HELD_PACKETS = 256
"""Held packets beyond which reading pauses until the drain task catches up."""
MAX_WRITE_BUFFER = 1 << 20
"""Bytes queued for a client beyond which it is disconnected as too slow."""
MAX_INFLIGHT = 1000
"""Unacknowledged QoS 1 PUBLISHes to one client beyond which it is disconnected."""

# PUBACKs of PUBLISHes handled synchronously are written as bytes, not through
# ServerConnection.send: a server PUBACK is legal in CONNECTED (the only state in which
# PUBLISHes are handed over) and changes nothing in the session, so skipping the table
# lookup and the encoder (a third of the per-message cost) changes no behaviour.
# PUBACKs keep the order of their PUBLISHes (MQTT-4.6.0-2); a SUBACK or PINGRESP queued
# by the session in the same batch may precede them, which MQTT allows.
_PUBACK = bytes([0x40, 0x02])


class MqttConnection(asyncio.Protocol):
    """The server side of one client connection; also the frontend's :class:`Link`."""

    __slots__ = (
        "_closing",
        "_conn",
        "_held",
        "_inflight",
        "_last_rx",
        "_listener",
        "_next_pid",
        "_peer",
        "_reason",
        "_session",
        "_timer",
        "_transport",
    )

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._transport: asyncio.Transport | None = None
        self._conn = ServerConnection(max_packet_size=listener.max_packet_size)
        self._session: Session | None = None
        self._peer: PeerInfo | None = None
        self._held: deque[Packet] | None = None
        self._last_rx = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._reason: str | None = None
        self._next_pid = 0
        self._inflight: set[int] | None = None

    # -- Link ----------------------------------------------------------------------

    @property
    def peer(self) -> PeerInfo:
        """What TLS learned about the client."""
        assert self._peer is not None
        return self._peer

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        return self._closing

    def publish(self, topic: str, payload: bytes, *, qos: int = 0) -> None:
        """Send a PUBLISH now (QoS 0 or 1); nothing happens once closing."""
        if self._closing:
            return
        packet_id = self._new_packet_id() if qos else None
        if qos and packet_id is None:
            self.close("too-many-inflight")
            return
        self._conn.send(Publish(topic=topic, payload=payload, qos=qos, packet_id=packet_id))
        self._flush()
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.close("slow-consumer")

    def close(self, reason: str) -> None:
        """Flush what is queued, close the transport and end the session (once)."""
        if self._closing:
            return
        self._closing = True
        self._reason = reason
        self._held = None
        self._cancel_timer()
        if self._transport is not None:
            if reason == CLIENT_DISCONNECT:
                # The client ends the connection itself (MQTT-3.14.4-1): nothing is owed to it,
                # so skip the TLS close_notify exchange.
                self._transport.abort()
            else:
                self._flush()
                self._transport.close()
        self._end_session(reason)

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is duck-typed
        peername = transport.get_extra_info("peername") or ("", 0)
        if isinstance(transport, TlsConnection):  # the listener's own TLS
            der, version = transport.peer_certificate_der(), transport.tls_version()
        else:  # the event loop's TLS (handshake_threads=0)
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            version = ssl_object.version() if ssl_object is not None else None
        self._peer = PeerInfo(
            address=str(peername[0]),
            port=int(peername[1]),
            client_cert_der=der,
            tls_version=version,
        )
        listener = self._listener
        listener.connections.add(self)
        self._last_rx = listener.loop.time()
        self._timer = listener.loop.call_at(
            self._last_rx + listener.connect_timeout, self._on_connect_timeout
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener.connections.discard(self)
        if not self._closing:
            self._closing = True
            self._reason = "connection-lost"
            self._held = None
            self._cancel_timer()
            self._end_session("connection-lost")
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_rx = self._listener.loop.time()
        try:
            packets = self._conn.receive_data(data)
        except RemoteProtocolError as exc:
            self._protocol_error(exc)
            return
        held = self._held
        if held is not None:
            held.extend(packets)
            if len(held) > MAX_HELD_PACKETS and self._transport is not None:
                self._transport.pause_reading()
            return
        acks = bytearray()
        try:
            for index, packet in enumerate(packets):
                session = self._session
                if type(packet) is Publish and session is not None:  # the telemetry hot path
                    pending = session.on_publish(packet)
                    if pending is None:
                        if packet.qos:
                            acks += _PUBACK + packet.packet_id.to_bytes(2, "big")  # type: ignore[union-attr]
                        continue
                    pending = self._finish_publish(pending, packet)
                else:
                    pending = self._handle(packet)
                if pending is not None:
                    self._held = deque(packets[index + 1 :])
                    self._listener.spawn(self._drain(pending))
                    break
                if self._closing:
                    return
        except RemoteProtocolError as exc:
            self._protocol_error(exc)
            return
        except Exception:
            log.exception("handler failed on %s", self._describe())
            self.close("internal-error")
            return
        self._flush(acks)

    def eof_received(self) -> bool | None:
        return None

    # -- packets -------------------------------------------------------------------

    def _handle(self, packet: Packet) -> Awaitable[None] | None:
        """Handle one packet; an awaitable when the rest must wait for it."""
        kind = type(packet)
        session = self._session
        if kind is Publish:
            assert session is not None and isinstance(packet, Publish)
            result = session.on_publish(packet)
            if result is not None:
                return self._finish_publish(result, packet)
            if packet.qos:
                assert packet.packet_id is not None
                self._conn.send(PubAck(packet_id=packet.packet_id))
            return None
        if kind is PubAck:
            assert isinstance(packet, PubAck)
            if self._inflight is not None:
                self._inflight.discard(packet.packet_id)
            return None
        if kind is PingReq:
            self._conn.send(PingResp())
            return None
        if kind is Subscribe:
            assert session is not None and isinstance(packet, Subscribe)
            return self._subscribe(session, packet)
        if kind is Unsubscribe:
            assert session is not None and isinstance(packet, Unsubscribe)
            return self._unsubscribe(session, packet)
        if kind is Disconnect:
            self.close(CLIENT_DISCONNECT)
            return None
        if kind is Connect:
            assert isinstance(packet, Connect)
            return self._open(packet)
        raise RemoteProtocolError(f"unexpected {kind.__name__}")  # pragma: no cover

    async def _finish_publish(self, pending: Awaitable[None], packet: Publish) -> None:
        await pending
        if packet.qos and not self._closing:
            assert packet.packet_id is not None
            self._conn.send(PubAck(packet_id=packet.packet_id))

    def _subscribe(self, session: Session, packet: Subscribe) -> Awaitable[None] | None:
        result = session.on_subscribe(packet.topics)
        if isinstance(result, list):
            self._conn.send(SubAck(packet_id=packet.packet_id, return_codes=tuple(result)))
            return None
        return self._finish_subscribe(result, packet.packet_id)

    async def _finish_subscribe(self, pending: Awaitable[list[int]], packet_id: int) -> None:
        codes = await pending
        if not self._closing:
            self._conn.send(SubAck(packet_id=packet_id, return_codes=tuple(codes)))

    def _unsubscribe(self, session: Session, packet: Unsubscribe) -> Awaitable[None] | None:
        result = session.on_unsubscribe(packet.topics)
        if result is None:
            self._conn.send(UnsubAck(packet_id=packet.packet_id))
            return None
        return self._finish_unsubscribe(result, packet.packet_id)

    async def _finish_unsubscribe(self, pending: Awaitable[None], packet_id: int) -> None:
        await pending
        if not self._closing:
            self._conn.send(UnsubAck(packet_id=packet_id))

    def _open(self, connect: Connect) -> Awaitable[None] | None:
        """Route and authenticate the CONNECT; answer now, or once the frontend has."""
        result = self._listener.open_session(connect, self)
        if isinstance(result, Awaitable):
            return self._open_later(result)
        self._answer(result)
        return None

    async def _open_later(self, pending: Awaitable[Session | Refusal]) -> None:
        self._answer(await pending)

    def _answer(self, result: Session | Refusal) -> None:
        """CONNACK the frontend's answer (or undo the session if the client is gone)."""
        if self._closing:
            if not isinstance(result, Refusal):
                _call_on_close(self._listener, result, self._reason or "connection-lost")
            return
        if isinstance(result, Refusal):
            self._held = None
            self._conn.send(ConnAck(return_code=result.code))
            self.close(f"refused:{result.reason}")
            return
        self._session = result
        self._conn.send(ConnAck(session_present=False))
        self._cancel_timer()
        self._arm_keepalive()

    async def _drain(self, pending: Awaitable[None]) -> None:
        """Await ``pending``, then handle the held packets in order until none is left."""
        try:
            await pending
            self._flush()
            held = self._held
            while held and not self._closing:
                next_pending = self._handle(held.popleft())
                if next_pending is not None:
                    await next_pending
                self._flush()
                held = self._held
            if not self._closing:
                self._held = None
                if self._transport is not None:
                    self._transport.resume_reading()
        except RemoteProtocolError as exc:
            self._protocol_error(exc)
        except Exception:
            log.exception("handler failed on %s", self._describe())
            self.close("internal-error")

    # -- timers ----------------------------------------------------------------------

    def _on_connect_timeout(self) -> None:
        self._timer = None
        if self._session is None and not self._closing:
            self.close("connect-timeout")

    def _arm_keepalive(self) -> None:
        deadline = self._conn.keepalive_deadline(self._last_rx)
        if deadline is not None:
            self._timer = self._listener.loop.call_at(deadline, self._on_keepalive)

    def _on_keepalive(self) -> None:
        self._timer = None
        if self._closing:
            return
        deadline = self._conn.keepalive_deadline(self._last_rx)
        assert deadline is not None
        if self._listener.loop.time() >= deadline:
            self.close("keepalive-timeout")
        else:
            self._timer = self._listener.loop.call_at(deadline, self._on_keepalive)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- helpers ---------------------------------------------------------------------

    def _flush(self, acks: bytes | bytearray = b"") -> None:
        """Write what the session queued, then ``acks`` (PUBACKs of the hot path)."""
        data = self._conn.data_to_send()
        if acks:
            data += acks
        transport = self._transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def _protocol_error(self, exc: RemoteProtocolError) -> None:
        log.info("closing %s: %s", self._describe(), exc)
        self._listener.protocol_errors += 1
        self.close("protocol-error" if exc.connack_code is None else "refused:malformed-connect")

    def _end_session(self, reason: str) -> None:
        session, self._session = self._session, None
        if session is not None:
            _call_on_close(self._listener, session, reason)

    def _new_packet_id(self) -> int | None:
        inflight = self._inflight
        if inflight is None:
            inflight = self._inflight = set()
        if len(inflight) >= MAX_INFLIGHT:
            return None
        pid = self._next_pid
        while True:
            pid = pid % 65535 + 1
            if pid not in inflight:
                break
        self._next_pid = pid
        inflight.add(pid)
        return pid

    def _describe(self) -> str:
        peer = self._peer
        connect = self._conn.connect
        who = connect.client_id if connect is not None else "?"
        where = f"{peer.address}:{peer.port}" if peer is not None else "?"
        return f"client {who!r} at {where}"


def _call_on_close(listener: Listener, session: Session, reason: str) -> None:
    try:
        result = session.on_close(reason)
    except Exception:
        log.exception("on_close failed")
        return
    if result is not None:
        listener.spawn(_awaiting(result))


async def _awaiting(pending: Awaitable[None]) -> None:
    await pending
