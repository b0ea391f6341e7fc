"""The FastAPI app factory and uvicorn serving it over TLS with optional client certificates.

uvicorn does not pass the TLS client certificate to ASGI apps (field notes), so
:class:`ClientCertH11Protocol` — selected with ``Config(http=…)`` — reads
``ssl_object.getpeercert(binary_form=True)`` when a connection is made and puts it in
every request scope of that connection: ``scope["certhub.client_cert_der"]`` and the
ASGI TLS extension ``scope["extensions"]["tls"]["client_cert_chain"]`` (PEM).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Generator, Iterable
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "CLIENT_CERT_SCOPE_KEY",
    "ClientCertH11Protocol",
    "HttpsServer",
    "client_certificate_der",
    "create_http_app",
]

CLIENT_CERT_SCOPE_KEY = "certhub.client_cert_der"


def create_http_app(*, routers: Iterable[APIRouter] = (), title: str = "certhub") -> FastAPI:
    """A FastAPI app with ``routers`` included (callers may include more later)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    for router in routers:
        app.include_router(router)
    return app


def client_certificate_der(request: Request) -> bytes | None:
    """DER of the client's verified TLS certificate, or None."""
    der = request.scope.get(CLIENT_CERT_SCOPE_KEY)
    return der if isinstance(der, bytes) else None


class _WithClientCert:
    """ASGI wrapper adding one connection's client certificate to each scope."""

    def __init__(self, app: ASGIApp, der: bytes | None) -> None:
        self._app = app
        self._der = der
        self._tls: dict[str, Any] = {
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[CLIENT_CERT_SCOPE_KEY] = self._der
            scope.setdefault("extensions", {})["tls"] = self._tls
        await self._app(scope, receive, send)


class ClientCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the TLS client certificate in the request scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self.app = _WithClientCert(self.app, der or None)


class _Server(uvicorn.Server):
    """uvicorn.Server that leaves signal handling to the application."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpsServer:
    """Serve an ASGI app over TLS in the running event loop (start/stop)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        log_level: str = "warning",
        reuse_port: bool = False,
    ) -> None:
        self._sock = socket.create_server((host, port), reuse_port=reuse_port)
        self._sock.setblocking(False)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            http=ClientCertH11Protocol,
            ssl_context_factory=lambda _config, _default: ssl_context,
            log_level=log_level,
            access_log=False,
            lifespan="on",
            ws="none",
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start serving; returns once the socket accepts connections."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the startup error
                raise RuntimeError("the HTTPS server stopped during startup")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests, close."""
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._sock.close()
