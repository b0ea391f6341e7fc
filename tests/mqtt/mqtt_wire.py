"""Expected MQTT bytes built by hand with ``struct.pack`` — independent of certhub's encoder."""

from __future__ import annotations

import struct


def varint(n: int) -> bytes:
    """Remaining-length encoding, written out from §2.2.3's algorithm."""
    out = b""
    while True:
        digit, n = n % 128, n // 128
        out += struct.pack("!B", digit | (0x80 if n > 0 else 0))
        if n == 0:
            return out


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def blob(raw: bytes) -> bytes:
    return struct.pack("!H", len(raw)) + raw


def frame(first: int, body: bytes) -> bytes:
    return struct.pack("!B", first) + varint(len(body)) + body


def connect_body(
    client_id: str = "dev-1",
    *,
    flags: int = 0x02,
    keepalive: int = 60,
    name: bytes = b"MQTT",
    level: int = 4,
    rest: bytes = b"",
) -> bytes:
    """A CONNECT body; ``rest`` follows the client id (will, user name, password)."""
    return blob(name) + struct.pack("!BBH", level, flags, keepalive) + utf8(client_id) + rest


def connect(client_id: str = "dev-1", **kwargs: object) -> bytes:
    return frame(0x10, connect_body(client_id, **kwargs))  # type: ignore[arg-type]
