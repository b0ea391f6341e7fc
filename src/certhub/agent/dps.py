"""DPS registration over MQTT with a CSR (wire doc §1.1, §1.3, §2.1).

One call, :meth:`DpsClient.register`, runs the whole exchange on a fresh connection::

    CONNECT   client id {registrationId}
              username  {idScope}/registrations/{registrationId}/api-version=2025-07-01-preview
                        &ClientVersion=…  (one string, no "?" before api-version)
              password  SAS token (sr={idScope}/registrations/{registrationId}, skn=registration)
                        or none, with the onboarding certificate presented in TLS
    SUBSCRIBE $dps/registrations/res/#
    PUBLISH   $dps/registrations/PUT/iotdps-register/?$rid=1
              {"registrationId": "…", "csr": "<base64 DER>"}
    ← $dps/registrations/res/202/?$rid=1&retry-after=3   {"operationId": "…", "status": "assigning"}
    PUBLISH   $dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=…   (empty)
    ← $dps/registrations/res/200/?$rid=2   {"status": "assigned", "registrationState": {…,
              "assignedHub": "…", "deviceId": "…", "issuedCertificateChain": [leaf, ICA, root]}}

``status: disabled`` raises :class:`DeviceDisabled`; 429 and 5xx raise a transient
:class:`ProvisioningError` carrying ``retry_after``; other errors are final.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cryptography import x509

from certhub.agent.certs import chain_from_wire, csr_base64
from certhub.agent.config import DpsConfig, Onboarding, SymmetricKeyOnboarding
from certhub.agent.errors import (
    ConnectionRefused,
    DeviceDisabled,
    ProtocolError,
    ProvisioningError,
)
from certhub.agent.mqttclient import MqttClient
from certhub.agent.schedule import parse_timestamp
from certhub.agent.transport import ClientCertificate, Endpoint, Transport
from certhub.clock import Clock
from certhub.mqtt import Connect, Publish, split_query
from certhub.sas import generate_sas_token

__all__ = ["DpsClient", "Registration", "dps_username"]

RESPONSE_FILTER = "$dps/registrations/res/#"
REGISTER_TOPIC = "$dps/registrations/PUT/iotdps-register/?$rid={rid}"
POLL_TOPIC = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}"
_RESPONSE_PREFIX = "$dps/registrations/res/"
_DEFAULT_RETRY_AFTER = 3.0
_MAX_RETRY_AFTER = 60.0
_MAX_ROUNDS = 40
_SAS_LIFETIME = dt.timedelta(hours=1)
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class Registration:
    """A finished, assigned registration."""

    device_id: str
    assigned_hub: str
    chain: list[x509.Certificate]
    substatus: str | None
    server_time: dt.datetime | None
    """``lastUpdatedDateTimeUtc`` of the registration (the server's clock), if sent."""
    sent_at: dt.datetime
    answered_at: dt.datetime
    """Device clock when the register was sent and when DPS first answered it (the
    server stamps the registration in between)."""


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    rid: str
    retry_after: float | None
    body: dict[str, Any]


def dps_username(config: DpsConfig, client_version: str) -> str:
    """``{idScope}/registrations/{registrationId}/api-version={v}&ClientVersion={ua}``."""
    return (
        f"{config.id_scope}/registrations/{config.registration_id}/"
        f"api-version={config.api_version}&ClientVersion={quote(client_version, safe='')}"
    )


class DpsClient:
    """Registers one device with DPS, presenting a CSR."""

    def __init__(
        self,
        transport: Transport,
        config: DpsConfig,
        onboarding: Onboarding,
        *,
        clock: Clock,
        sleep: Sleep,
        timeout: float = 60.0,
        client_version: str = "certhub-agent",
    ) -> None:
        self.transport = transport
        self.config = config
        self.onboarding = onboarding
        self.clock = clock
        self.sleep = sleep
        self.timeout = timeout
        self.client_version = client_version

    async def register(
        self, csr_der: bytes, *, server_now: dt.datetime, on_sent: Callable[[], None] | None = None
    ) -> Registration:
        """Register with ``csr_der``; ``server_now`` dates the SAS token. ``on_sent`` is
        called once the register request is out (the agent's crash-test hook)."""
        responses: asyncio.Queue[Publish] = asyncio.Queue()
        client = await self._connect(responses.put_nowait, server_now)
        try:
            return await self._exchange(client, responses, csr_der, on_sent)
        finally:
            await client.disconnect()

    async def _connect(
        self, on_message: Callable[[Publish], None], server_now: dt.datetime
    ) -> MqttClient:
        cfg = self.config
        password: bytes | None = None
        client_cert: ClientCertificate | None = None
        if isinstance(self.onboarding, SymmetricKeyOnboarding):
            expiry = int((server_now + _SAS_LIFETIME).timestamp())
            resource = f"{cfg.id_scope}/registrations/{cfg.registration_id}"
            token = generate_sas_token(resource, self.onboarding.device_key, expiry, "registration")
            password = token.encode()
        else:
            client_cert = ClientCertificate(self.onboarding.certificate, self.onboarding.key)
        stream = await self.transport.open(Endpoint(cfg.host, cfg.port), client_cert)
        client = MqttClient(stream, service="dps", timeout=self.timeout, on_message=on_message)
        connect = Connect(
            client_id=cfg.registration_id,
            clean_session=True,
            keepalive=0,
            username=dps_username(cfg, self.client_version),
            password=password,
        )
        try:
            await client.connect(connect)
            await client.subscribe([(RESPONSE_FILTER, 1)])
        except ConnectionRefused as exc:
            if exc.transient:
                raise ProvisioningError(
                    "dps-unavailable", str(exc), transient=True, retry_after=None
                ) from exc
            raise ProvisioningError(
                "onboarding-refused",
                f"DPS refused the onboarding credential (CONNACK {exc.code})",
                status=401,
            ) from exc
        except BaseException:
            client.abort("connect-failed")
            raise
        return client

    async def _exchange(
        self,
        client: MqttClient,
        responses: asyncio.Queue[Publish],
        csr_der: bytes,
        on_sent: Callable[[], None] | None,
    ) -> Registration:
        body = json.dumps(
            {"registrationId": self.config.registration_id, "csr": csr_base64(csr_der)}
        ).encode()
        sent_at = self.clock.now()
        rid = 1
        operation_id = ""
        await client.publish(REGISTER_TOPIC.format(rid=rid), body)
        if on_sent is not None:
            on_sent()
        answered_at: dt.datetime | None = None
        for _ in range(_MAX_ROUNDS):
            response = await self._response(client, responses, str(rid))
            answered_at = answered_at or self.clock.now()
            if response.status == 200 and response.body.get("status") != "assigning":
                return self._result(response.body, sent_at, answered_at)
            if response.status not in (200, 202):
                raise _error(response)
            operation_id = str(response.body.get("operationId") or operation_id)
            if not operation_id:
                raise ProtocolError("no-operation-id", "DPS sent no operationId")
            await self.sleep(_retry_after(response))
            rid += 1
            await client.publish(POLL_TOPIC.format(rid=rid, op=quote(operation_id, safe="")))
        raise ProvisioningError(
            "still-assigning", "DPS did not finish the registration", transient=True
        )

    async def _response(
        self, client: MqttClient, responses: asyncio.Queue[Publish], rid: str
    ) -> _Response:
        while True:
            getter: asyncio.Future[Any] = asyncio.ensure_future(responses.get())
            closed: asyncio.Future[Any] = client.closed
            done, _ = await asyncio.wait(
                {getter, closed}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter
                reason = "connection closed" if client.is_closed else "timeout"
                raise ProvisioningError(
                    "no-response", f"DPS did not answer ({reason})", transient=True
                )
            response = _parse(getter.result())
            if response is not None and response.rid == rid:
                return response

    def _result(
        self, body: dict[str, Any], sent_at: dt.datetime, answered_at: dt.datetime
    ) -> Registration:
        state = body.get("registrationState")
        state = state if isinstance(state, dict) else {}
        status = body.get("status") or state.get("status")
        if status == "disabled":
            raise DeviceDisabled(
                f"DPS says the device is disabled: {state.get('errorMessage', 'disabled')}",
                source="dps",
                error_code=_int(state.get("errorCode")),
            )
        if status != "assigned":
            raise ProvisioningError(
                "registration-failed",
                f"DPS registration {status}: {state.get('errorMessage', '')}".strip(),
                error_code=_int(state.get("errorCode")),
            )
        hub, device_id = state.get("assignedHub"), state.get("deviceId")
        if not isinstance(hub, str) or not hub or not isinstance(device_id, str) or not device_id:
            raise ProtocolError("no-assignment", "DPS sent no assignedHub/deviceId")
        chain_items = state.get("issuedCertificateChain")
        if chain_items is None and isinstance(state.get("payload"), dict):
            chain_items = state["payload"].get("issuedCertificateChain")
        stamp = state.get("lastUpdatedDateTimeUtc") or state.get("createdDateTimeUtc")
        return Registration(
            device_id=device_id,
            assigned_hub=hub,
            chain=chain_from_wire(chain_items, field="issuedCertificateChain"),
            substatus=state.get("substatus"),
            server_time=parse_timestamp(stamp) if isinstance(stamp, str) else None,
            sent_at=sent_at,
            answered_at=answered_at,
        )


def _parse(message: Publish) -> _Response | None:
    if not message.topic.startswith(_RESPONSE_PREFIX):
        return None
    path, params = split_query(message.topic)
    status_text = path[len(_RESPONSE_PREFIX) :].strip("/")
    if not status_text.isdigit():
        return None
    try:
        body = json.loads(message.payload) if message.payload.strip() else {}
    except (ValueError, UnicodeDecodeError):
        body = {}
    retry = params.get("retry-after")
    return _Response(
        status=int(status_text),
        rid=params.get("$rid") or "",
        retry_after=float(retry) if retry and _is_number(retry) else None,
        body=body if isinstance(body, dict) else {},
    )


def _retry_after(response: _Response) -> float:
    value = response.retry_after
    if value is None:
        value = _number(response.body.get("retryAfter")) or _DEFAULT_RETRY_AFTER
    return min(max(value, 0.0), _MAX_RETRY_AFTER)


def _error(response: _Response) -> ProvisioningError:
    body = response.body
    code = _int(body.get("errorCode"))
    message = str(body.get("message") or f"DPS answered {response.status}")
    transient = response.status == 429 or response.status >= 500
    return ProvisioningError(
        "dps-throttled" if response.status == 429 else "dps-error",
        f"DPS refused the registration ({response.status}, {code}): {message}",
        status=response.status,
        error_code=code,
        retry_after=_retry_after(response) if transient else None,
        transient=transient,
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
