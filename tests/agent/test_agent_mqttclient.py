"""The asyncio MQTT client against a scripted peer (certhub's ServerConnection) on a
socketpair: CONNACK handling, acknowledgements, keep-alive, and failures."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from certhub.agent import ConnectionRefused, TransportError
from certhub.agent.mqttclient import MqttClient
from certhub.agent.transport import AsyncioStream
from certhub.mqtt import (
    ConnAck,
    Connect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    ServerConnection,
    SubAck,
    Subscribe,
)

Peer = Callable[[asyncio.StreamReader, asyncio.StreamWriter, ServerConnection], Awaitable[None]]


async def pair(peer: Peer) -> tuple[AsyncioStream, asyncio.Task[None]]:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    s_reader, s_writer = await asyncio.open_connection(sock=theirs)
    task = asyncio.create_task(peer(s_reader, s_writer, ServerConnection()))
    return AsyncioStream(reader, writer), task


async def next_packets(reader: asyncio.StreamReader, conn: ServerConnection) -> list[Packet]:
    while True:
        data = await reader.read(65536)
        if not data:
            return []
        packets = conn.receive_data(data)
        if packets:
            return packets


def flush(writer: asyncio.StreamWriter, conn: ServerConnection) -> None:
    writer.write(conn.data_to_send())


def answer_connect(code: int = 0) -> Peer:
    async def peer(r: asyncio.StreamReader, w: asyncio.StreamWriter, c: ServerConnection) -> None:
        packets = await next_packets(r, c)
        assert isinstance(packets[0], Connect)
        c.send(ConnAck(return_code=code))
        flush(w, c)
        if code:
            w.close()
            return
        while packets := await next_packets(r, c):
            for packet in packets:
                if isinstance(packet, Subscribe):
                    c.send(SubAck(packet_id=packet.packet_id, return_codes=(1, 0x80)))
                elif isinstance(packet, Publish) and packet.qos == 1:
                    assert packet.packet_id is not None
                    c.send(PubAck(packet_id=packet.packet_id))
                    c.send(
                        Publish(
                            topic="echo/" + packet.topic, payload=packet.payload, qos=1, packet_id=9
                        )
                    )
                elif isinstance(packet, PingReq):
                    c.send(PingResp())
            flush(w, c)
        w.close()

    return peer


def scenario(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(body(), 10))


def test_connect_subscribe_publish_and_receive() -> None:
    async def body() -> None:
        stream, peer = await pair(answer_connect())
        received: list[Publish] = []
        client = MqttClient(stream, service="hub", timeout=2, on_message=received.append)
        await client.connect(Connect(client_id="d", keepalive=0))
        assert await client.subscribe([("a/#", 1), ("b/#", 1)]) == (1, 0x80)
        await client.publish("t", b"hello")
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.01)
        assert received[0].topic == "echo/t" and received[0].payload == b"hello"
        await client.disconnect()
        assert client.closed.result() == "client-disconnect"
        await peer

    scenario(body)


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5])
def test_refused_connack_raises_with_code(code: int) -> None:
    async def body() -> None:
        stream, peer = await pair(answer_connect(code))
        client = MqttClient(stream, service="hub", timeout=2)
        with pytest.raises(ConnectionRefused) as info:
            await client.connect(Connect(client_id="d"))
        assert info.value.code == code and info.value.service == "hub"
        assert info.value.transient is (code == 3)
        assert client.is_closed
        await peer

    scenario(body)


def test_no_connack_times_out() -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter, c: ServerConnection) -> None:
        await asyncio.sleep(5)

    async def body() -> None:
        stream, peer = await pair(silent)
        client = MqttClient(stream, service="dps", timeout=0.2)
        with pytest.raises(TransportError) as info:
            await client.connect(Connect(client_id="d"))
        assert info.value.reason == "timeout"
        peer.cancel()

    scenario(body)


def test_peer_closing_fails_waiters() -> None:
    async def closes(r: asyncio.StreamReader, w: asyncio.StreamWriter, c: ServerConnection) -> None:
        await next_packets(r, c)
        c.send(ConnAck())
        flush(w, c)
        await next_packets(r, c)  # the PUBLISH: hang up instead of acknowledging
        w.close()

    async def body() -> None:
        stream, peer = await pair(closes)
        client = MqttClient(stream, service="hub", timeout=2)
        await client.connect(Connect(client_id="d", keepalive=0))
        with pytest.raises(TransportError) as info:
            await client.publish("t", b"x")
        assert info.value.reason == "connection-lost"
        assert await client.closed == "connection-lost"
        with pytest.raises(TransportError):
            await client.publish("t", b"again")
        await peer

    scenario(body)


def test_protocol_violation_by_peer_closes() -> None:
    async def rude(r: asyncio.StreamReader, w: asyncio.StreamWriter, c: ServerConnection) -> None:
        await next_packets(r, c)
        w.write(b"\x20\x02\x00\x00")  # CONNACK
        await asyncio.sleep(0.1)
        w.write(b"\xf0\x00")  # a reserved packet type
        await asyncio.sleep(0.5)

    async def body() -> None:
        stream, peer = await pair(rude)
        client = MqttClient(stream, service="hub", timeout=2)
        await client.connect(Connect(client_id="d", keepalive=0))
        assert await client.closed == "protocol-error"
        peer.cancel()

    scenario(body)


def test_keepalive_pings_and_gives_up_when_unanswered() -> None:
    pings: list[int] = []

    async def deaf(r: asyncio.StreamReader, w: asyncio.StreamWriter, c: ServerConnection) -> None:
        await next_packets(r, c)
        c.send(ConnAck())
        flush(w, c)
        while packets := await next_packets(r, c):
            pings.extend(1 for p in packets if isinstance(p, PingReq))

    async def body() -> None:
        stream, peer = await pair(deaf)
        client = MqttClient(stream, service="hub", timeout=2)
        await client.connect(Connect(client_id="d", keepalive=1))
        assert await asyncio.wait_for(client.closed, 5) == "keepalive-timeout"
        assert pings == [1]
        await peer

    scenario(body)


def test_keepalive_answered_stays_up() -> None:
    async def body() -> None:
        stream, peer = await pair(answer_connect())
        client = MqttClient(stream, service="hub", timeout=2)
        await client.connect(Connect(client_id="d", keepalive=1))
        await asyncio.sleep(2.5)
        assert not client.is_closed
        await client.disconnect()
        await peer

    scenario(body)


def test_failing_handler_does_not_kill_the_link() -> None:
    async def body() -> None:
        stream, peer = await pair(answer_connect())
        calls: list[str] = []

        def handler(message: Publish) -> None:
            calls.append(message.topic)
            raise RuntimeError("application bug")

        client = MqttClient(stream, service="hub", timeout=2, on_message=handler)
        await client.connect(Connect(client_id="d", keepalive=0))
        await client.publish("one", b"1")
        await client.publish("two", b"2")
        await asyncio.sleep(0.05)
        assert calls == ["echo/one", "echo/two"] and not client.is_closed
        await client.disconnect()
        await peer

    scenario(body)
