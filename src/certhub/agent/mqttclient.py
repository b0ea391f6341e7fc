"""An asyncio MQTT 3.1.1 client: certhub's sans-I/O :class:`ClientConnection` on a stream.

One reader task per connection decodes packets and resolves waiters (CONNACK, SUBACK,
PUBACK by packet id); incoming PUBLISHes are acknowledged (QoS 1) and handed to the
``on_message`` callback synchronously, so a callback must not block (it puts into a
queue, sets a future or starts a task). A keep-alive task pings every ``keepalive``
seconds and drops the link if the previous ping went unanswered. Per connection the
client holds two tasks and a dict of waiters: light enough for thousands in one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from certhub.agent.errors import ConnectionRefused, TransportError
from certhub.agent.transport import Stream
from certhub.mqtt import (
    ClientConnection,
    ConnAck,
    Connect,
    Disconnect,
    MqttError,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
)

__all__ = ["MessageHandler", "MqttClient"]

log = logging.getLogger("certhub.agent.mqtt")
MessageHandler = Callable[[Publish], None]


class MqttClient:
    """The client end of one MQTT connection over ``stream``."""

    def __init__(
        self,
        stream: Stream,
        *,
        service: str,
        timeout: float = 30.0,
        on_message: MessageHandler | None = None,
    ) -> None:
        self.service = service
        self.timeout = timeout
        self.on_message = on_message
        self._stream = stream
        self._conn = ClientConnection()
        self._connack: asyncio.Future[Packet] | None = None
        self._waiters: dict[int, asyncio.Future[Packet]] = {}
        self._next_id = 0
        self._reader: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._ping_outstanding = False
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        """Resolves with the reason once the connection is over."""

    @property
    def is_closed(self) -> bool:
        return self.closed.done()

    async def connect(self, connect: Connect) -> None:
        """Send CONNECT and wait for CONNACK; :class:`ConnectionRefused` on a refusal."""
        self._connack = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_loop(), name=f"mqtt-read-{self.service}")
        self._send(connect)
        connack = await self._wait(self._connack, "CONNACK")
        assert isinstance(connack, ConnAck)
        if connack.return_code:
            self.abort("refused")
            raise ConnectionRefused(int(connack.return_code), service=self.service)
        if connect.keepalive:
            self._pinger = asyncio.create_task(
                self._ping_loop(connect.keepalive), name=f"mqtt-ping-{self.service}"
            )

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> tuple[int, ...]:
        """Subscribe and return the granted return codes (0x80 = refused)."""
        packet_id = self._packet_id()
        future = self._expect(packet_id)
        self._send(Subscribe(packet_id=packet_id, topics=tuple(filters)))
        suback = await self._wait(future, "SUBACK")
        assert isinstance(suback, SubAck)
        return suback.return_codes

    async def publish(self, topic: str, payload: bytes = b"", qos: int = 1) -> None:
        """Publish; at QoS 1 wait for the PUBACK."""
        if qos == 0:
            self._send(Publish(topic=topic, payload=payload))
            await self._drain()
            return
        packet_id = self._packet_id()
        future = self._expect(packet_id)
        self._send(Publish(topic=topic, payload=payload, qos=1, packet_id=packet_id))
        await self._wait(future, "PUBACK")

    async def disconnect(self) -> None:
        """Send DISCONNECT (if still connected) and close."""
        if not self.is_closed:
            with contextlib.suppress(TransportError):
                self._send(Disconnect())
                await asyncio.wait_for(self._drain(), 2.0)
        self.abort("client-disconnect")
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await self._reader

    def abort(self, reason: str) -> None:
        """Close now; every waiter fails with :class:`TransportError`."""
        if self.closed.done():
            return
        self.closed.set_result(reason)
        self._stream.close()
        error = TransportError("connection-lost", f"{self.service} connection closed: {reason}")
        for future in [self._connack, *self._waiters.values()]:
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # mark retrieved: nobody may be waiting any more
        self._waiters.clear()
        current = asyncio.current_task()
        for task in (self._pinger, self._reader):
            if task is not None and task is not current:
                task.cancel()

    # -- internals --------------------------------------------------------------------

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._waiters:
                return self._next_id
        raise TransportError("busy", "no free MQTT packet identifier")

    def _expect(self, packet_id: int) -> asyncio.Future[Packet]:
        future: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self._waiters[packet_id] = future
        return future

    async def _wait(self, future: asyncio.Future[Packet], what: str) -> Packet:
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            self.abort(f"no {what}")
            raise TransportError(
                "timeout", f"{self.service}: no {what} in {self.timeout:g} s"
            ) from None

    def _send(self, packet: Packet) -> None:
        if self.is_closed:
            raise TransportError("connection-lost", f"{self.service} connection is closed")
        try:
            self._conn.send(packet)
        except MqttError as exc:
            self.abort("local-protocol-error")
            raise TransportError("protocol", f"cannot send: {exc}") from exc
        self._stream.write(self._conn.data_to_send())

    async def _drain(self) -> None:
        await self._stream.drain()

    async def _read_loop(self) -> None:
        reason = "connection-lost"
        try:
            while True:
                data = await self._stream.read()
                if not data:
                    break
                for packet in self._conn.receive_data(data):
                    self._dispatch(packet)
        except MqttError as exc:
            log.warning("%s: protocol error from the server: %s", self.service, exc)
            reason = "protocol-error"
        except asyncio.CancelledError:
            return
        self.abort(reason)

    def _dispatch(self, packet: Packet) -> None:
        if isinstance(packet, Publish):
            if packet.qos == 1 and packet.packet_id is not None:
                self._send(PubAck(packet_id=packet.packet_id))
            if self.on_message is not None:
                try:
                    self.on_message(packet)
                except Exception:  # an application callback must not kill the link
                    log.exception("%s: message handler failed", self.service)
        elif isinstance(packet, ConnAck):
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(packet)
        elif isinstance(packet, PingResp):
            self._ping_outstanding = False
        elif isinstance(packet, SubAck | PubAck):
            future = self._waiters.pop(packet.packet_id, None)
            if future is not None and not future.done():
                future.set_result(packet)

    async def _ping_loop(self, keepalive: int) -> None:
        while not self.is_closed:
            await asyncio.sleep(keepalive)
            if self._ping_outstanding:
                self.abort("keepalive-timeout")
                return
            self._ping_outstanding = True
            try:
                self._send(PingReq())
            except TransportError:
                return
