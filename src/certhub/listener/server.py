"""The listening socket: accepts TLS connections and routes each CONNECT to a frontend.

Run it on a uvloop event loop (``certhub.app`` does). TLS is the listener's own
transport by default (:mod:`._tls`: pyOpenSSL, the handshakes' OpenSSL work on
``handshake_threads`` worker threads, any client certificate accepted at TLS and
authenticated by the frontends, so ``selfSigned`` devices work); with
``handshake_threads=0`` it is the event loop's TLS transport (uvloop's, Python's ``ssl``:
handshakes on the event-loop thread, client certificates verified against the trusted
CAs at TLS, so a certificate no trusted CA issued fails the handshake).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from prometheus_client import Counter

from certhub.listener._connection import MqttConnection
from certhub.listener._tls import HandshakeWorkers, TlsConnection
from certhub.listener.api import Frontend, Link, Refusal, Session
from certhub.listener.tls import ServerTls
from certhub.mqtt import DEFAULT_MAX_PACKET_SIZE, Connect, ConnectReturnCode

__all__ = ["TLS_FAILURES", "UNROUTED_REFUSALS", "Listener"]

log = logging.getLogger("certhub.listener")

UNROUTED_REFUSALS = Counter(
    "certhub_listener_unrouted_total",
    "CONNECTs refused because no frontend recognised the username",
)
TLS_FAILURES = Counter(
    "certhub_listener_tls_failures_total",
    "Connections closed by TLS: a failed handshake (e.g. an untrusted client certificate), "
    "no handshake in time, or a bad record afterwards",
    ["reason"],
)


class Listener:
    """One MQTT-over-TLS listening socket shared by the frontends (hub, DPS)."""

    def __init__(
        self,
        frontends: Sequence[Frontend],
        tls: ServerTls,
        *,
        host: str = "127.0.0.1",
        port: int = 8883,
        connect_timeout: float = 30.0,
        handshake_timeout: float = 30.0,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        backlog: int = 4096,
        reuse_port: bool = False,
        handshake_threads: int = 1,
    ) -> None:
        self.frontends = tuple(frontends)
        self.tls = tls
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.max_packet_size = max_packet_size
        self.backlog = backlog
        self.reuse_port = reuse_port
        """Bind with ``SO_REUSEPORT``: several processes share the port, the kernel spreads
        new connections between them (``certhub serve --workers N``)."""
        self.handshake_threads = handshake_threads
        """Threads that run TLS handshakes (:mod:`._tls`); 0 runs them on the event loop
        with its own TLS transport."""
        self.connections: set[MqttConnection] = set()
        self.protocol_errors = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: HandshakeWorkers | None = None
        self._handshaking: set[TlsConnection] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the listener runs on (set by :meth:`start`)."""
        assert self._loop is not None, "listener not started"
        return self._loop

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port when started with port 0."""
        assert self._server is not None, "listener not started"
        sockets: Sequence[socket.socket] = getattr(self._server, "sockets", [])
        sockname = sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def start(self) -> None:
        """Bind and start accepting connections."""
        loop = self._loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol]
        tls_options: dict[str, Any] = {}
        if self.handshake_threads > 0:  # the listener's own TLS transport (:mod:`._tls`)
            workers = self._workers = HandshakeWorkers(self.handshake_threads)
            factory = functools.partial(
                TlsConnection,
                self.tls.listener_context,
                self._new_connection,
                workers,
                loop,
                self.handshake_timeout,
                self._failed,
                self._handshaking,
            )
        else:  # the event loop's TLS transport
            factory = self._new_connection
            tls_options = {"ssl": self.tls.context, "ssl_handshake_timeout": self.handshake_timeout}
        self._server = await loop.create_server(
            factory,
            self.host,
            self.port,
            backlog=self.backlog,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            **tls_options,
        )

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection (``server-shutdown``) and wait for them."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close("server-shutdown")
        for tls_connection in list(self._handshaking):  # no session yet: nothing to say
            tls_connection.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._workers is not None:
            self._workers.stop()
            self._workers = None

    def _new_connection(self) -> MqttConnection:
        return MqttConnection(self)

    def _failed(self, reason: str) -> None:
        TLS_FAILURES.labels(reason).inc()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task the listener waits for at :meth:`stop`."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def open_session(
        self, connect: Connect, link: Link
    ) -> Session | Refusal | Awaitable[Session | Refusal]:
        """Hand the CONNECT to the first frontend that accepts it."""
        for frontend in self.frontends:
            if frontend.accepts(connect):
                try:
                    result = frontend.open_session(connect, link)
                except Exception:
                    log.exception("frontend %s failed to open a session", frontend.name)
                    return _INTERNAL_ERROR
                if isinstance(result, Awaitable):
                    return _guarded(frontend.name, result)
                return result
        peer = link.peer
        log.info(
            "refused client %r at %s:%s: no frontend for username %r",
            connect.client_id,
            peer.address,
            peer.port,
            connect.username,
        )
        UNROUTED_REFUSALS.inc()
        return Refusal(code=ConnectReturnCode.BAD_USERNAME_OR_PASSWORD, reason="unrouted-username")


_INTERNAL_ERROR = Refusal(code=ConnectReturnCode.SERVER_UNAVAILABLE, reason="internal-error")


async def _guarded(name: str, pending: Awaitable[Session | Refusal]) -> Session | Refusal:
    try:
        return await pending
    except Exception:
        log.exception("frontend %s failed to open a session", name)
        return _INTERNAL_ERROR
