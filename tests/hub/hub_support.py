"""A raw MQTT-over-TLS client built on certhub's own codec, for exact wire checks.

paho hides some things the hub tests need to see: the order of answers to pipelined
packets, the moment the server closes, a CONNECT with no client-side keep-alive traffic.
Also :class:`RecordingLink`, a listener link that records instead of sending, for the
socket-free unit tests of the hub's parts.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

from certhub.listener import PeerInfo
from certhub.mqtt import ClientConnection, Connect, Packet
from serverkit import API_VERSION, DevicePems, RunningServer


class RawClient:
    """A blocking TLS socket speaking MQTT 3.1.1 through ``ClientConnection``."""

    def __init__(
        self,
        running: RunningServer,
        pems: DevicePems | None = None,
        *,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> None:
        context = ssl.create_default_context(cafile=str(running.trust_anchor))
        cert_file = cert_file or (pems.chain if pems else None)
        key_file = key_file or (pems.key if pems else None)
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
        raw = socket.create_connection((running.host, running.port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname=running.host)
        self.conn = ClientConnection()
        self.running = running
        self.eof = False

    def connect_packet(self, device_id: str, keepalive: int = 60, **kwargs: object) -> Connect:
        username = f"{self.running.hub_host}/{device_id}/?api-version={API_VERSION}"
        return Connect(client_id=device_id, username=username, keepalive=keepalive, **kwargs)  # type: ignore[arg-type]

    def send(self, *packets: Packet) -> None:
        for packet in packets:
            self.conn.send(packet)
        self.sock.sendall(self.conn.data_to_send())

    def receive(self, count: int = 1, timeout: float = 5.0) -> list[Packet]:
        """At least ``count`` packets, or fewer if the server closes first (sets ``eof``)."""
        packets: list[Packet] = []
        deadline = time.monotonic() + timeout
        while len(packets) < count and not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except (ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                self.eof = True
                break
            packets.extend(self.conn.receive_data(data))
        return packets

    def wait_closed(self, timeout: float) -> float | None:
        """Seconds until the server closed the connection, or None if it did not."""
        start = time.monotonic()
        while not self.eof and time.monotonic() - start < timeout:
            self.receive(count=1_000_000, timeout=timeout - (time.monotonic() - start))
        return time.monotonic() - start if self.eof else None

    def close(self) -> None:
        self.sock.close()


class RecordingLink:
    """A Link that keeps what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []
        self.closed_with: str | None = None

    @property
    def peer(self) -> PeerInfo:
        return PeerInfo(address="127.0.0.1", port=1, client_cert_der=None)

    def publish(self, topic: str, payload: bytes, *, qos: int = 0) -> None:
        self.sent.append((topic, payload, qos))

    def close(self, reason: str) -> None:
        self.closed_with = reason

    @property
    def closed(self) -> bool:
        return self.closed_with is not None
