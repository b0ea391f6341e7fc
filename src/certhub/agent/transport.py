"""Byte streams to the server: the injectable seam between the agent and the network.

The agent speaks MQTT over a :class:`Stream` it gets from a :class:`Transport`. The real
one, :class:`TlsTransport`, opens TCP + TLS with asyncio (the server verified against
the configured trust anchor, the client certificate presented when there is one). Tests
pass their own transport (for example one that hands out one end of a socketpair with
a scripted MQTT peer on the other), so no test needs a socket to a real server or a
mock of the agent's own parts.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from certhub.agent.errors import TransportError

__all__ = [
    "AsyncioStream",
    "ClientCertificate",
    "Endpoint",
    "Stream",
    "TlsTransport",
    "Transport",
]

_READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: ``host:port``; TLS checks ``server_name`` (default: ``host``)."""

    host: str
    port: int
    server_name: str | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A TLS client identity on disk: chain PEM (leaf first) and private key PEM."""

    chain_file: Path
    key_file: Path

    def files(self) -> tuple[Path, Path]:
        return self.chain_file, self.key_file


class Stream(Protocol):
    """A connected byte stream (the subset of asyncio's reader/writer the agent uses)."""

    async def read(self) -> bytes:
        """The next bytes; ``b""`` once the peer closed."""
        ...

    def write(self, data: bytes) -> None:
        """Queue bytes for sending."""
        ...

    async def drain(self) -> None:
        """Wait until the queue is small enough (flow control)."""
        ...

    def close(self) -> None:
        """Close the stream (idempotent)."""
        ...


class Transport(Protocol):
    """Opens streams; raises :class:`TransportError` when it cannot."""

    async def open(self, endpoint: Endpoint, client_cert: ClientCertificate | None) -> Stream:
        """A stream to ``endpoint``, presenting ``client_cert`` when given."""
        ...


class AsyncioStream:
    """:class:`Stream` over an asyncio reader/writer pair."""

    __slots__ = ("_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(_READ_SIZE)
        except (OSError, ssl.SSLError):
            return b""

    def write(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except (OSError, ssl.SSLError) as exc:
            raise TransportError("connection-lost", f"write failed: {exc}") from exc

    def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()


class TlsTransport:
    """TCP + TLS (1.2 or later) with asyncio; the server must chain to ``trust_anchor``."""

    def __init__(self, trust_anchor: Path, *, timeout: float = 30.0) -> None:
        self._cadata = trust_anchor.read_text()
        self._timeout = timeout

    def context(self, client_cert: ClientCertificate | None) -> ssl.SSLContext:
        """The client context: verifies the server, presents ``client_cert``."""
        try:
            context = ssl.create_default_context(cadata=self._cadata)
        except (ValueError, ssl.SSLError) as exc:
            raise TransportError("bad-trust-anchor", f"cannot use the trust anchor: {exc}") from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if client_cert is not None:
            try:
                context.load_cert_chain(client_cert.chain_file, client_cert.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise TransportError(
                    "bad-client-certificate", f"cannot load the client certificate: {exc}"
                ) from exc
        return context

    async def open(self, endpoint: Endpoint, client_cert: ClientCertificate | None) -> Stream:
        context = self.context(client_cert)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    endpoint.host,
                    endpoint.port,
                    ssl=context,
                    server_hostname=endpoint.server_name or endpoint.host,
                ),
                self._timeout,
            )
        except TimeoutError as exc:
            raise TransportError(
                "timeout", f"no connection to {endpoint}", endpoint=str(endpoint)
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(
                "unreachable", f"cannot connect to {endpoint}: {exc}", endpoint=str(endpoint)
            ) from exc
        return AsyncioStream(reader, writer)
