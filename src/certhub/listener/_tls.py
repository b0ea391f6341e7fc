"""TLS over a plain TCP transport, with the handshake's cryptography on worker threads.

Why not the event loop's own TLS transport (``create_server(ssl=...)``): it runs every
handshake on the event-loop thread, and a mutual-TLS handshake is ~0.8 ms of OpenSSL
(key exchange, the server's signature, parsing and verifying the client's chain and its
CertificateVerify) against ~0.3 ms of Python for the whole connection. OpenSSL releases
the GIL while it works, so this transport hands each handshake step
(``SSLObject.do_handshake``) to a :class:`HandshakeWorkers` thread and the event loop
goes on serving other connections; a broker process then uses more than one core for
connection storms (a fleet coming back after an outage), where a single-threaded
broker is capped at one. After the handshake, records are read and written on the
event-loop thread (a few microseconds each).

The SSL object belongs to exactly one thread at a time: while a step runs on a worker,
bytes arriving from the client are kept in ``_pending`` and written to the memory BIO
only when the step is back on the event loop.

:class:`TlsConnection` is the TCP protocol and, towards the application protocol it
creates after the handshake, the transport (the subset of ``asyncio.Transport`` an
MQTT connection uses, plus ``get_extra_info("ssl_object" | "peercert" | "cipher" |
"sslcontext" | ...)``). Memory per idle connection: the two memory BIOs are empty once
drained and OpenSSL releases its record buffers (``SSL_MODE_RELEASE_BUFFERS``, set by
CPython), so this object adds a few hundred bytes to OpenSSL's own per-connection state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import ssl
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["HandshakeWorkers", "TlsConnection"]

log = logging.getLogger("certhub.listener")

_READ_SIZE = 1 << 16
MAX_HANDSHAKE_BACKLOG = 1 << 18
"""Bytes a client may send while a handshake step runs before it is dropped (a client's
flights are a few KiB: its certificate chain is the largest part)."""

_WANT_READ = "want-read"
_DONE = "done"


class HandshakeWorkers:
    """A few threads that run TLS handshake steps (``do_handshake`` releases the GIL)."""

    def __init__(self, threads: int = 1, *, name: str = "certhub-tls") -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self._queue: queue.SimpleQueue[TlsConnection | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i + 1}", daemon=True)
            for i in range(threads)
        ]
        self._started = False
        self._lock = threading.Lock()

    @property
    def threads(self) -> int:
        """How many worker threads run handshake steps."""
        return len(self._threads)

    def submit(self, connection: TlsConnection) -> None:
        """Run ``connection``'s next handshake step on a worker."""
        if not self._started:
            with self._lock:
                if not self._started:
                    for thread in self._threads:
                        thread.start()
                    self._started = True
        self._queue.put(connection)

    def stop(self) -> None:
        """Let the workers finish their current step and exit."""
        for _ in self._threads:
            self._queue.put(None)

    def _run(self) -> None:
        get = self._queue.get
        while True:
            connection = get()
            if connection is None:
                return
            connection._run_step()  # the worker half of TlsConnection


class TlsConnection(asyncio.Protocol):
    """Server-side TLS on a TCP transport; the transport of the protocol it carries."""

    __slots__ = (
        "_app",
        "_app_factory",
        "_closing",
        "_context",
        "_handshaking",
        "_in",
        "_loop",
        "_on_failure",
        "_out",
        "_pending",
        "_pending_size",
        "_result",
        "_ssl",
        "_stepping",
        "_tcp",
        "_timer",
        "_workers",
    )

    def __init__(
        self,
        context: ssl.SSLContext,
        app_factory: Callable[[], asyncio.Protocol],
        workers: HandshakeWorkers,
        loop: asyncio.AbstractEventLoop,
        handshake_timeout: float,
        on_failure: Callable[[str], None] | None = None,
        handshaking: set[TlsConnection] | None = None,
    ) -> None:
        """``on_failure(reason)`` is told of each connection that ends before or because
        of TLS: ``handshake-failed``, ``handshake-timeout`` or ``tls-error``. The
        connection is in ``handshaking`` from its TCP accept until its handshake ends
        (so that a stopping server can drop the ones that have no application yet)."""
        self._context = context
        self._app_factory = app_factory
        self._workers = workers
        self._loop = loop
        self._on_failure = on_failure
        self._handshaking = handshaking
        self._tcp: asyncio.Transport | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl: ssl.SSLObject | None = None
        self._app: asyncio.Protocol | None = None
        self._pending: list[bytes] | None = None
        self._pending_size = 0
        self._stepping = False
        self._closing = False
        self._result: object = None
        self._timer: asyncio.TimerHandle | None = loop.call_later(
            handshake_timeout, self._on_handshake_timeout
        )

    # -- TCP side (asyncio.Protocol) ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = transport  # type: ignore[assignment]  # uvloop's is duck-typed
        self._ssl = self._context.wrap_bio(self._in, self._out, server_side=True)
        if self._handshaking is not None:
            self._handshaking.add(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._app is not None:
            self._in.write(data)
            self._read_records()
            return
        if self._stepping:  # a worker owns the SSL object: keep the bytes until it is back
            self._pending_size += len(data)
            if self._pending_size > MAX_HANDSHAKE_BACKLOG:
                self._fail("handshake-failed", "too many bytes during the handshake")
            elif self._pending is None:
                self._pending = [data]
            else:
                self._pending.append(data)
            return
        self._in.write(data)
        self._stepping = True
        self._workers.submit(self)

    def eof_received(self) -> bool | None:
        if self._app is not None:
            return self._app.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._cancel_timer()
        if self._handshaking is not None:
            self._handshaking.discard(self)
        app, self._app = self._app, None
        self._tcp = None
        self._pending = None
        if app is not None:
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    # -- the handshake ---------------------------------------------------------------------

    def _run_step(self) -> None:
        """On a worker thread: advance the handshake, then hand back to the event loop."""
        sslobj = self._ssl
        assert sslobj is not None
        try:
            sslobj.do_handshake()
            result: object = _DONE
        except ssl.SSLWantReadError:
            result = _WANT_READ
        except Exception as exc:  # handshake failures: bad certificate, wrong version, ...
            result = exc
        self._result = result
        with contextlib.suppress(RuntimeError):  # RuntimeError: the loop is closed
            self._loop.call_soon_threadsafe(self._step_done)

    def _step_done(self) -> None:
        self._stepping = False
        result, self._result = self._result, None
        tcp = self._tcp
        if tcp is None or self._closing:
            return
        out = self._out.read()
        if out:
            tcp.write(out)
        if result is _WANT_READ:
            pending, self._pending = self._pending, None
            self._pending_size = 0
            if pending:
                for data in pending:
                    self._in.write(data)
                self._stepping = True
                self._workers.submit(self)
            return
        if result is not _DONE:
            self._fail("handshake-failed", str(result))
            return
        self._cancel_timer()
        if self._handshaking is not None:
            self._handshaking.discard(self)
        app = self._app = self._app_factory()
        app.connection_made(self)  # type: ignore[arg-type]  # duck-typed transport
        pending, self._pending = self._pending, None
        if pending:
            for data in pending:
                self._in.write(data)
        if self._app is not None:  # records that came with the client's last flight
            self._read_records()

    def _on_handshake_timeout(self) -> None:
        self._timer = None
        if self._app is None and not self._closing:
            self._fail("handshake-timeout", "no handshake in time")

    def _fail(self, reason: str, detail: str) -> None:
        log.debug("TLS connection from %s closed (%s): %s", self._peername(), reason, detail)
        if self._on_failure is not None:
            self._on_failure(reason)
        self._closing = True
        self._cancel_timer()
        if self._tcp is not None:
            self._tcp.abort()

    def _peername(self) -> object:
        return self._tcp.get_extra_info("peername") if self._tcp is not None else None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- records after the handshake -------------------------------------------------------

    def _read_records(self) -> None:
        sslobj = self._ssl
        assert sslobj is not None
        chunks: list[bytes] = []
        eof = False
        try:
            while True:
                chunk = sslobj.read(_READ_SIZE)
                if not chunk:
                    eof = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:  # the client sent close_notify
            eof = True
        except ssl.SSLError as exc:
            if chunks and self._app is not None:
                self._app.data_received(b"".join(chunks))
            self._fail("tls-error", str(exc))
            return
        out = self._out.read()
        if out and self._tcp is not None:
            self._tcp.write(out)
        if chunks and self._app is not None:
            self._app.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof and self._tcp is not None and not self._closing:
            if self._app is not None and self._app.eof_received():
                return
            self.close()

    # -- the application's transport -----------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and queue it on the TCP transport."""
        tcp = self._tcp
        if tcp is None or self._closing or self._ssl is None:
            return
        self._ssl.write(data)
        tcp.write(self._out.read())

    def close(self) -> None:
        """Send close_notify after what is queued, then close the TCP connection."""
        if self._closing:
            return
        self._closing = True
        tcp = self._tcp
        if tcp is None:
            return
        if self._ssl is not None and self._app is not None:
            with contextlib.suppress(ssl.SSLError):  # WantRead: the peer's is not awaited
                self._ssl.unwrap()
            out = self._out.read()
            if out:
                tcp.write(out)
        tcp.close()

    def abort(self) -> None:
        """Drop the TCP connection now (nothing more is sent)."""
        self._closing = True
        if self._tcp is not None:
            self._tcp.abort()

    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called or the peer went away."""
        return self._closing or self._tcp is None or self._tcp.is_closing()

    def get_write_buffer_size(self) -> int:
        """Encrypted bytes queued on the TCP transport."""
        return self._tcp.get_write_buffer_size() if self._tcp is not None else 0

    def pause_reading(self) -> None:
        """Stop reading from the client until :meth:`resume_reading`."""
        if self._tcp is not None:
            self._tcp.pause_reading()

    def resume_reading(self) -> None:
        """Read from the client again."""
        if self._tcp is not None:
            self._tcp.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """As ``asyncio.Transport.get_extra_info``, with the TLS names of asyncio's."""
        sslobj = self._ssl
        if name == "ssl_object":
            return sslobj
        if name == "sslcontext":
            return self._context
        if sslobj is not None and self._app is not None:
            if name == "peercert":
                return sslobj.getpeercert()
            if name == "cipher":
                return sslobj.cipher()
            if name == "compression":
                return sslobj.compression()
        if self._tcp is None:
            return default
        return self._tcp.get_extra_info(name, default)
