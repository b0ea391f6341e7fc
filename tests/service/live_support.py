"""The service API over real HTTPS on a running certhub (hub included).

:func:`https_service` yields a :class:`ServiceEndpoint` for a :class:`RunningServer`
started with ``https_port=0``: the server's own HTTPS listener, as ``certhub serve``
wires it (:meth:`certhub.app.Server._start_https`).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from service_support import sas_token

from certhub.bootstrap import service_keys
from serverkit import RunningServer

__all__ = ["ServiceEndpoint", "https_service"]


@dataclass(frozen=True)
class ServiceEndpoint:
    """Where the service API listens and how to call it."""

    host: str
    port: int
    trust_anchor: Path
    keys: dict[str, dict[str, str]]

    def connection_string(self, policy: str = "iothubowner") -> str:
        key = self.keys[policy]["primaryKey"]
        return (
            f"HostName={self.host}:{self.port};SharedAccessKeyName={policy};SharedAccessKey={key}"
        )

    def client(self, policy: str = "iothubowner") -> httpx.Client:
        """An httpx client with a valid token for ``policy`` and the trust anchor."""
        token = sas_token(
            self.keys[policy]["primaryKey"], policy, resource=f"{self.host}:{self.port}"
        )
        return httpx.Client(
            base_url=f"https://{self.host}:{self.port}",
            headers={"Authorization": token},
            verify=ssl.create_default_context(cafile=str(self.trust_anchor)),
            timeout=30,
        )


@contextmanager
def https_service(running: RunningServer) -> Iterator[ServiceEndpoint]:
    """The service API of ``running`` over HTTPS on 127.0.0.1."""
    port = running.server.https_port
    assert port is not None, "start the server with https_port=0"
    yield ServiceEndpoint("localhost", port, running.trust_anchor, service_keys(running.store))
