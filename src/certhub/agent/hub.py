"""The hub connection (wire doc §3, §2.2): twin, telemetry, methods, C2D and the
credentials API, over one MQTT connection authenticated by the device certificate.

::

    CONNECT    client id {deviceId}
               username {hub}/{deviceId}/?api-version=2025-08-01-preview&DeviceClientType=…
               no password; the certificate chain is presented in TLS
    SUBSCRIBE  $iothub/twin/res/#, $iothub/twin/PATCH/properties/desired/#,
               $iothub/credentials/res/#, $iothub/methods/POST/# (+ C2D when asked)
    twin       PUB $iothub/twin/GET/?$rid={rid}                      → res/200/?$rid={rid}
               PUB $iothub/twin/PATCH/properties/reported/?$rid={rid}
                                                   → res/204/?$rid={rid}&$version={v}
    renewal    PUB $iothub/credentials/POST/issueCertificate/?$rid={rid}
                   {"id": "{deviceId}", "csr": "<base64 DER>", "replace": null}
               → res/202/?$rid={rid} {"correlationId", "operationExpires"}
               → res/200/?$rid={rid} {"correlationId", "certificates": [leaf, ICA, root]}

Applications use the same connection (:meth:`send_telemetry`, :meth:`report`,
:meth:`get_twin`, and the handlers in :class:`Handlers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from cryptography import x509

from certhub.agent.certs import chain_from_wire
from certhub.agent.errors import ProtocolError, RenewalError, TransportError
from certhub.agent.mqttclient import MqttClient
from certhub.agent.schedule import parse_timestamp
from certhub.agent.transport import ClientCertificate, Endpoint, Transport
from certhub.mqtt import Connect, Publish, format_property_bag, parse_property_bag, split_query

__all__ = [
    "CredentialsAccepted",
    "Handlers",
    "HubConnection",
    "hub_username",
    "is_transient_credentials_error",
]

log = logging.getLogger("certhub.agent.hub")

TWIN_RESPONSES = "$iothub/twin/res/#"
DESIRED = "$iothub/twin/PATCH/properties/desired/#"
CREDENTIALS_RESPONSES = "$iothub/credentials/res/#"
METHODS = "$iothub/methods/POST/#"
_TWIN_RES = "$iothub/twin/res/"
_DESIRED = "$iothub/twin/PATCH/properties/desired/"
_CREDENTIALS_RES = "$iothub/credentials/res/"
_CREDENTIAL_RES = "$iothub/credential/res/"  # the Learn page's spelling; accepted
_METHODS = "$iothub/methods/POST/"
_SUBACK_FAILURE = 0x80
# Transient credentials errors (wire doc §2.2): throttling, server and availability.
_TRANSIENT_CODES = frozenset({429002, 429003, 500001, 503001, 503102, 409004})

MethodHandler = Callable[[str, Any], Awaitable[tuple[int, Any]]]
"""``async handler(method_name, request_json) -> (status, response_json)``."""
DesiredHandler = Callable[[dict[str, Any]], None]
"""``handler(patch)`` for each desired-properties patch (``$version`` included)."""
C2dHandler = Callable[[bytes, dict[str, str | None]], None]
"""``handler(body, properties)`` for each cloud-to-device message."""


@dataclass
class Handlers:
    """Application callbacks, re-attached to every new connection."""

    desired: list[DesiredHandler] = field(default_factory=list)
    method: MethodHandler | None = None
    c2d: C2dHandler | None = None


@dataclass(frozen=True, kw_only=True)
class CredentialsAccepted:
    """The 202 of an ``issueCertificate`` request."""

    correlation_id: str | None
    operation_expires: dt.datetime | None


def hub_username(host: str, device_id: str, api_version: str, client_type: str) -> str:
    """``{host}/{deviceId}/?api-version={v}&DeviceClientType={ua}``."""
    ua = quote(client_type, safe="")
    return f"{host}/{device_id}/?api-version={api_version}&DeviceClientType={ua}"


def is_transient_credentials_error(error_code: int | None, status: int | None) -> bool:
    """True for errors worth retrying through the hub (throttling, 5xx, pending)."""
    if error_code in _TRANSIENT_CODES:
        return True
    return status is not None and (status == 429 or status >= 500)


class HubConnection:
    """One live device connection to the hub."""

    def __init__(self, device_id: str, host: str, handlers: Handlers, timeout: float) -> None:
        self.device_id = device_id
        self.host = host
        self.handlers = handlers
        self.timeout = timeout
        self.credentials_available = True
        self._client: MqttClient | None = None
        self._twin: dict[str, asyncio.Future[tuple[int, dict[str, str | None], bytes]]] = {}
        self._credentials: dict[str, asyncio.Queue[tuple[int, bytes]]] = {}
        self._next_rid = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(
        cls,
        transport: Transport,
        endpoint: Endpoint,
        *,
        device_id: str,
        api_version: str,
        client_cert: ClientCertificate,
        handlers: Handlers,
        keepalive: int = 60,
        timeout: float = 30.0,
        client_type: str = "certhub-agent",
    ) -> HubConnection:
        """Connect with ``client_cert`` and subscribe; :class:`ConnectionRefused` on a
        refusing CONNACK, :class:`TransportError` when the hub is unreachable."""
        host = endpoint.server_name or endpoint.host
        conn = cls(device_id, host, handlers, timeout)
        stream = await transport.open(endpoint, client_cert)
        client = MqttClient(stream, service="hub", timeout=timeout, on_message=conn._on_message)
        conn._client = client
        connect = Connect(
            client_id=device_id,
            clean_session=True,
            keepalive=keepalive,
            username=hub_username(host, device_id, api_version, client_type),
        )
        try:
            await client.connect(connect)
            await conn._subscribe()
        except BaseException:
            client.abort("connect-failed")
            raise
        return conn

    async def _subscribe(self) -> None:
        filters = [(TWIN_RESPONSES, 1), (DESIRED, 1), (CREDENTIALS_RESPONSES, 1), (METHODS, 1)]
        if self.handlers.c2d is not None:
            filters.append((f"devices/{self.device_id}/messages/devicebound/#", 1))
        codes = await self.client.subscribe(filters)
        if len(codes) > 2 and codes[2] == _SUBACK_FAILURE:
            self.credentials_available = False

    @property
    def client(self) -> MqttClient:
        """The live MQTT client (for applications that need raw publishes)."""
        assert self._client is not None
        return self._client

    @property
    def closed(self) -> asyncio.Future[str]:
        """Resolves with the reason once the connection is over."""
        return self.client.closed

    async def close(self) -> None:
        """Disconnect cleanly."""
        for task in list(self._tasks):
            task.cancel()
        await self.client.disconnect()

    # -- twin ----------------------------------------------------------------------------

    async def get_twin(self) -> dict[str, Any]:
        """The device's twin: ``{"desired": {…}, "reported": {…}}``."""
        status, _, body = await self._twin_request("$iothub/twin/GET/?$rid={rid}", b"")
        if status != 200:
            raise ProtocolError("twin-get-failed", f"twin GET answered {status}")
        document = _json(body)
        if not isinstance(document, dict):
            raise ProtocolError("twin-get-failed", "twin GET answered no JSON object")
        return document

    async def report(self, patch: Mapping[str, Any]) -> int | None:
        """Patch reported properties; the new reported ``$version`` if the hub says it."""
        topic = "$iothub/twin/PATCH/properties/reported/?$rid={rid}"
        status, params, _ = await self._twin_request(topic, json.dumps(patch).encode())
        if status not in (200, 204):
            raise ProtocolError("twin-patch-failed", f"reported patch answered {status}")
        version = params.get("$version")
        return int(version) if version and version.isdigit() else None

    async def _twin_request(
        self, topic: str, body: bytes
    ) -> tuple[int, dict[str, str | None], bytes]:
        rid = self._rid()
        future = asyncio.get_running_loop().create_future()
        self._twin[rid] = future
        try:
            await self.client.publish(topic.format(rid=rid), body)
            result: tuple[int, dict[str, str | None], bytes] = await self._await(
                future, "twin response"
            )
            return result
        finally:
            self._twin.pop(rid, None)

    # -- telemetry ------------------------------------------------------------------------

    async def send_telemetry(
        self, payload: bytes, properties: Mapping[str, str | None] | None = None, qos: int = 1
    ) -> None:
        """Send a device-to-cloud message with an optional property bag."""
        bag = format_property_bag(dict(properties)) if properties else ""
        await self.client.publish(f"devices/{self.device_id}/messages/events/{bag}", payload, qos)

    # -- credentials ----------------------------------------------------------------------

    async def issue_certificate(
        self,
        csr_b64: str,
        rid: str,
        *,
        replace: str | None = None,
        timeout: float | None = None,
        on_sent: Callable[[], None] | None = None,
        on_accepted: Callable[[CredentialsAccepted], None] | None = None,
    ) -> list[x509.Certificate]:
        """Ask for a certificate; the issued chain (leaf first) or :class:`RenewalError`."""
        queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self._credentials[rid] = queue
        body = json.dumps({"id": self.device_id, "csr": csr_b64, "replace": replace}).encode()
        try:
            await self.client.publish(
                f"$iothub/credentials/POST/issueCertificate/?$rid={rid}", body
            )
            if on_sent is not None:
                on_sent()
            while True:
                status, payload = await self._await(
                    asyncio.ensure_future(queue.get()), "credentials response", timeout
                )
                if status == 202:
                    if on_accepted is not None:
                        on_accepted(_accepted(payload))
                    continue
                if status == 200:
                    return chain_from_wire(_json(payload).get("certificates"), field="certificates")
                raise _renewal_error(status, payload)
        finally:
            self._credentials.pop(rid, None)

    # -- plumbing -------------------------------------------------------------------------

    def _rid(self) -> str:
        self._next_rid += 1
        return format(self._next_rid, "x")

    async def _await(
        self, future: asyncio.Future[Any], what: str, timeout: float | None = None
    ) -> Any:
        closed = self.client.closed
        done, _ = await asyncio.wait(
            {future, closed}, timeout=timeout or self.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if future in done:
            return future.result()
        future.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await future
        if closed.done():
            raise TransportError("connection-lost", f"hub connection closed: {closed.result()}")
        raise TransportError("timeout", f"no {what} from the hub")

    def _on_message(self, message: Publish) -> None:
        topic = message.topic
        if topic.startswith(_TWIN_RES):
            self._twin_response(topic, message.payload)
        elif topic.startswith(_CREDENTIALS_RES) or topic.startswith(_CREDENTIAL_RES):
            self._credentials_response(topic, message.payload)
        elif topic.startswith(_DESIRED):
            self._desired(message.payload)
        elif topic.startswith(_METHODS):
            self._method(topic, message.payload)
        elif topic.startswith(f"devices/{self.device_id}/messages/devicebound/"):
            self._c2d(topic, message.payload)

    def _twin_response(self, topic: str, payload: bytes) -> None:
        status, params = _status_and_params(topic, _TWIN_RES)
        future = self._twin.get(params.get("$rid") or "")
        if status is not None and future is not None and not future.done():
            future.set_result((status, params, payload))

    def _credentials_response(self, topic: str, payload: bytes) -> None:
        prefix = _CREDENTIALS_RES if topic.startswith(_CREDENTIALS_RES) else _CREDENTIAL_RES
        status, params = _status_and_params(topic, prefix)
        queue = self._credentials.get(params.get("$rid") or "")
        if status is not None and queue is not None:
            queue.put_nowait((status, payload))

    def _desired(self, payload: bytes) -> None:
        patch = _json(payload)
        for handler in list(self.handlers.desired):
            try:
                handler(patch)
            except Exception:
                log.exception("desired-properties handler failed")

    def _method(self, topic: str, payload: bytes) -> None:
        path, params = split_query(topic)
        name = path[len(_METHODS) :].strip("/")
        rid = params.get("$rid") or ""
        task = asyncio.create_task(self._answer_method(name, rid, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_method(self, name: str, rid: str, payload: bytes) -> None:
        handler = self.handlers.method
        status, result = 404, {"message": f"no handler for method {name!r}"}
        if handler is not None:
            try:
                status, result = await handler(name, _json(payload, default=None))
            except Exception as exc:
                log.exception("method handler %r failed", name)
                status, result = 500, {"message": str(exc)}
        with contextlib.suppress(TransportError):
            body = json.dumps(result).encode()
            await self.client.publish(f"$iothub/methods/res/{status}/?$rid={rid}", body)

    def _c2d(self, topic: str, payload: bytes) -> None:
        bag = topic[len(f"devices/{self.device_id}/messages/devicebound/") :]
        if self.handlers.c2d is not None:
            self.handlers.c2d(payload, parse_property_bag(bag))


def _status_and_params(topic: str, prefix: str) -> tuple[int | None, dict[str, str | None]]:
    path, params = split_query(topic)
    text = path[len(prefix) :].strip("/")
    return (int(text) if text.isdigit() else None), params


def _json(payload: bytes, default: Any = None) -> Any:
    if default is None and not payload.strip():
        return {}
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return {} if default is None else default


def _accepted(payload: bytes) -> CredentialsAccepted:
    body = _json(payload)
    body = body if isinstance(body, dict) else {}
    expires = body.get("operationExpires")
    return CredentialsAccepted(
        correlation_id=body.get("correlationId"),
        operation_expires=parse_timestamp(expires) if isinstance(expires, str) else None,
    )


def _renewal_error(status: int, payload: bytes) -> RenewalError:
    body = _json(payload)
    body = body if isinstance(body, dict) else {}
    code = body.get("errorCode")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    retry = body.get("retryAfter")
    retry_after = float(retry) if isinstance(retry, int | float) and retry >= 0 else None
    info = body.get("info") if isinstance(body.get("info"), dict) else {}
    message = str(body.get("message") or f"credentials request answered {status}")
    return RenewalError(
        f"credentials-{code or status}",
        f"hub refused the certificate request ({status}, {code}): {message}",
        status=status,
        error_code=code,
        retry_after=retry_after,
        transient=is_transient_credentials_error(code, status),
        info=info,
    )
