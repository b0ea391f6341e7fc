"""TLS over a plain TCP transport (pyOpenSSL on memory BIOs), handshakes on worker threads.

Why not the event loop's own TLS transport (``create_server(ssl=...)``, Python's ``ssl``):

* **Self-signed device certificates.** Python's ``ssl`` verifies every client
  certificate it requests against its trust store and aborts the handshake when that
  fails; it has no verify callback. IoT Hub's ``selfSigned`` devices present a
  certificate no CA issued, known to the hub only by its thumbprint. Here the
  verify callback accepts any client certificate: TLS still proves that the client holds
  the certificate's private key (its CertificateVerify signature is checked whatever the
  callback says), and the frontends decide who the certificate admits — the hub checks
  a ``certificateAuthority`` leaf's signature against this hub's issuing CAs
  (:mod:`certhub.hub.issuers`) and a ``selfSigned`` device's thumbprint, DPS its
  enrollment's certificate or CA (:mod:`certhub.dps.attestation`) — and answer a
  refusal with a CONNACK, in MQTT's terms, not a TLS alert.
* **Speed.** A mutual-TLS handshake is most of a connection's CPU. OpenSSL releases the
  GIL while it works, so this transport hands each handshake step (``do_handshake``)
  to a :class:`HandshakeWorkers` thread and the event loop goes on serving other
  connections: one broker process uses more than one core during a connection storm
  (a fleet coming back after an outage), where a single-threaded broker is capped at
  one. pyOpenSSL runs on the OpenSSL that ``cryptography`` ships (4.x), whose
  certificate decoding is much cheaper than the system's 3.0; and no chain is
  verified twice. After the handshake, records are read and written on the event-loop
  thread (a few microseconds each).

The SSL connection belongs to exactly one thread at a time: while a step runs on a
worker, bytes arriving from the client are kept in ``_pending`` and written to the
memory BIO only when the step is back on the event loop.

:class:`TlsConnection` is the TCP protocol and, towards the application protocol it
creates after the handshake, the transport (the subset of ``asyncio.Transport`` an MQTT
connection uses; :meth:`TlsConnection.peer_certificate_der` and
:meth:`TlsConnection.tls_version` tell what TLS learned). Memory per idle connection:
OpenSSL's state (with the client's certificate) and this object's slots; the memory
BIOs are empty once drained and record buffers are released
(``SSL_MODE_RELEASE_BUFFERS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto

__all__ = ["HandshakeWorkers", "TlsConnection", "build_listener_context"]

log = logging.getLogger("certhub.listener")

_READ_SIZE = 1 << 16
MAX_HANDSHAKE_BACKLOG = 1 << 18
"""Bytes a client may send while a handshake step runs before it is dropped (a client's
flights are a few KiB: its certificate chain is the largest part)."""

_DER = Encoding.DER
_WANT_READ = "want-read"
_DONE = "done"


def _accept_any(
    _conn: SSL.Connection, _cert: crypto.X509, _errno: int, _depth: int, _ok: int
) -> bool:
    return True  # the frontends authenticate the certificate (module docstring)


def build_listener_context(cert_file: Path, key_file: Path) -> SSL.Context:
    """The MQTT listener's server context: TLS 1.2 and 1.3, the endpoint certificate
    chain, a client certificate requested (optional: SAS devices have none) and accepted
    whoever issued it, no session tickets or session cache (nothing resumes sessions)."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.use_certificate_chain_file(str(cert_file))
    context.use_privatekey_file(str(key_file))
    context.check_privatekey()
    context.set_options(SSL.OP_NO_TICKET)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.set_verify(SSL.VERIFY_PEER, _accept_any)
    return context


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
        for thread in self._threads:
            thread.start()

    def submit(self, connection: TlsConnection) -> None:
        """Run ``connection``'s next handshake step on a worker."""
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
        "_loop",
        "_on_failure",
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
        context: SSL.Context,
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
        self._ssl: SSL.Connection | None = None
        self._app: asyncio.Protocol | None = None
        self._pending: list[bytes] | None = None
        self._pending_size = 0
        self._stepping = False
        self._closing = False
        self._result: object = None
        self._timer: asyncio.TimerHandle | None = loop.call_later(
            handshake_timeout, self._on_handshake_timeout
        )

    # -- what TLS learned --------------------------------------------------------------------

    def peer_certificate_der(self) -> bytes | None:
        """The client's certificate (DER), None when it sent none."""
        if self._ssl is None:
            return None
        cert = self._ssl.get_peer_certificate(as_cryptography=True)
        return None if cert is None else cert.public_bytes(_DER)

    def tls_version(self) -> str | None:
        """``TLSv1.2`` or ``TLSv1.3`` once the handshake is done."""
        if self._ssl is None or self._app is None:
            return None
        return self._ssl.get_protocol_version_name()

    # -- TCP side (asyncio.Protocol) ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = transport  # type: ignore[assignment]  # uvloop's is duck-typed
        connection = self._ssl = SSL.Connection(self._context, None)  # memory BIOs
        connection.set_accept_state()
        if self._handshaking is not None:
            self._handshaking.add(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        connection = self._ssl
        assert connection is not None
        if self._app is not None:
            connection.bio_write(data)
            self._read_records()
            return
        if self._stepping:  # a worker owns the SSL connection: keep the bytes until it is back
            self._pending_size += len(data)
            if self._pending_size > MAX_HANDSHAKE_BACKLOG:
                self._fail("handshake-failed", "too many bytes during the handshake")
            elif self._pending is None:
                self._pending = [data]
            else:
                self._pending.append(data)
            return
        connection.bio_write(data)
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
        connection = self._ssl
        assert connection is not None
        try:
            connection.do_handshake()
            result: object = _DONE
        except SSL.WantReadError:
            result = _WANT_READ
        except Exception as exc:  # handshake failures: wrong version, no shared cipher, ...
            result = exc
        self._result = result
        with contextlib.suppress(RuntimeError):  # RuntimeError: the loop is closed
            self._loop.call_soon_threadsafe(self._step_done)

    def _step_done(self) -> None:
        self._stepping = False
        result, self._result = self._result, None
        tcp, connection = self._tcp, self._ssl
        if tcp is None or connection is None or self._closing:
            return
        out = _drain(connection)
        if out:
            tcp.write(out)
        if result is _WANT_READ:
            pending, self._pending = self._pending, None
            self._pending_size = 0
            if pending:
                for data in pending:
                    connection.bio_write(data)
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
                connection.bio_write(data)
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
        connection = self._ssl
        assert connection is not None
        chunks: list[bytes] = []
        eof = False
        try:
            while True:
                chunks.append(connection.recv(_READ_SIZE))
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:  # the client sent close_notify
            eof = True
        except SSL.Error as exc:
            if chunks and self._app is not None:
                self._app.data_received(b"".join(chunks))
            self._fail("tls-error", str(exc))
            return
        out = _drain(connection)
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
        tcp, connection = self._tcp, self._ssl
        if tcp is None or connection is None or self._closing:
            return
        connection.sendall(bytes(data))
        tcp.write(_drain(connection))

    def close(self) -> None:
        """Send close_notify after what is queued, then close the TCP connection."""
        if self._closing:
            return
        self._closing = True
        tcp, connection = self._tcp, self._ssl
        if tcp is None:
            return
        if connection is not None and self._app is not None:
            with contextlib.suppress(SSL.Error):  # the peer's close_notify is not awaited
                connection.shutdown()
            out = _drain(connection)
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
        """As ``asyncio.Transport.get_extra_info``: the TCP transport's names, plus
        ``cipher`` (the negotiated cipher's name)."""
        if name == "cipher" and self._ssl is not None and self._app is not None:
            return self._ssl.get_cipher_name()
        if self._tcp is None:
            return default
        return self._tcp.get_extra_info(name, default)


def _drain(connection: SSL.Connection) -> bytes:
    """What OpenSSL wrote to the outgoing memory BIO."""
    chunks: list[bytes] = []
    while True:
        try:
            chunks.append(connection.bio_read(_READ_SIZE))
        except SSL.WantReadError:
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
