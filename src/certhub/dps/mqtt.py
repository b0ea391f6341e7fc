"""DPS over MQTT: the :class:`~certhub.listener.api.Frontend` served on the shared listener.

CONNECT: username ``{idScope}/registrations/{registrationId}/api-version=…`` (no
``?``; extra ``&`` parameters allowed), client id = registration id, password a SAS
token, or no password and an onboarding client certificate. The credential is proved
at CONNECT; refusals (CONNACK codes, certhub's reading, see docs/dps.md):

====================================================  ==========================
case                                                  CONNACK
====================================================  ==========================
client id is not the registration id, or the id is    2 identifier rejected
invalid
bad SAS (wrong key, expired, wrong sr, wrong skn,     5 not authorized
malformed), wrong or missing certificate, unknown
ID scope or enrollment
store or authority failure                            3 server unavailable
====================================================  ==========================

After CONNECT: SUBSCRIBE ``$dps/registrations/res/#``; PUBLISH
``$dps/registrations/PUT/iotdps-register/?$rid=…`` and
``$dps/registrations/GET/iotdps-get-operationstatus/?$rid=…&operationId=…``; answers
on ``$dps/registrations/res/{status}/?$rid=…[&retry-after=…]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import TypeVar

from certhub.dps.attestation import Attestation, Credential, SasCredential, X509Credential
from certhub.dps.errors import BadRequest, DpsError, NotFound, Unauthorized
from certhub.dps.service import DpsResponse, ProvisioningService
from certhub.dps.wire import POLL_TOPIC, REGISTER_TOPIC, parse_username, response_topic
from certhub.listener.api import Link, Refusal, Session
from certhub.mqtt import Connect, ConnectReturnCode, Publish, RemoteProtocolError, split_query

__all__ = ["DpsFrontend", "DpsSession"]

log = logging.getLogger("certhub.dps")
_T = TypeVar("_T")
_RESPONSE_PREFIX = "$dps/registrations/res/"
_SUBACK_FAILURE = 0x80


def _refusal_code(err: DpsError) -> ConnectReturnCode:
    if isinstance(err, Unauthorized | NotFound):
        return ConnectReturnCode.NOT_AUTHORIZED
    if isinstance(err, BadRequest):
        return ConnectReturnCode.IDENTIFIER_REJECTED
    return ConnectReturnCode.SERVER_UNAVAILABLE


def _credential(connect: Connect, link: Link) -> Credential | Refusal:
    """The SAS token in the password, else the TLS client certificate."""
    if connect.password:
        try:
            return SasCredential(connect.password.decode("utf-8"))
        except UnicodeDecodeError:
            return Refusal(code=ConnectReturnCode.NOT_AUTHORIZED, reason="sas-malformed")
    if link.peer.client_cert_der is not None:
        return X509Credential(link.peer.client_cert_der)
    return Refusal(code=ConnectReturnCode.NOT_AUTHORIZED, reason="no-credential")


class DpsFrontend:
    """Accepts DPS CONNECTs and opens one :class:`DpsSession` per attested client."""

    name = "dps"

    def __init__(self, service: ProvisioningService, *, executor: Executor | None = None) -> None:
        self.service = service
        self._executor = executor

    async def run(self, fn: Callable[[], _T]) -> _T:
        """Run blocking service work on the executor."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def accepts(self, connect: Connect) -> bool:
        """True for ``{idScope}/registrations/{registrationId}/api-version=…`` usernames."""
        return parse_username(connect.username) is not None

    async def open_session(self, connect: Connect, link: Link) -> Session | Refusal:
        """Prove the CONNECT's credential; a session, or the refusal to answer with."""
        user = parse_username(connect.username)
        if user is None:  # pragma: no cover - the listener only calls after accepts()
            return Refusal(code=ConnectReturnCode.BAD_USERNAME_OR_PASSWORD, reason="not-dps")
        if connect.client_id != user.registration_id:
            return Refusal(code=ConnectReturnCode.IDENTIFIER_REJECTED, reason="client-id-mismatch")
        credential = _credential(connect, link)
        if isinstance(credential, Refusal):
            return credential
        attest = partial(self.service.attest, user.id_scope, user.registration_id, credential)
        try:
            att = await self.run(attest)
        except DpsError as err:
            return Refusal(code=_refusal_code(err), reason=err.reason)
        except Exception:  # the boundary: log, answer "server unavailable"
            log.exception("DPS attestation failed")
            return Refusal(code=ConnectReturnCode.SERVER_UNAVAILABLE, reason="internal-error")
        return DpsSession(self, att, user.api_version, link)


class DpsSession:
    """One attested registration connection."""

    def __init__(
        self, frontend: DpsFrontend, attestation: Attestation, api_version: str, link: Link
    ) -> None:
        self._frontend = frontend
        self._service = frontend.service
        self.attestation = attestation
        self.api_version = api_version
        self._link = link
        self._qos = 0

    def on_subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        """Grant ``$dps/registrations/res/…`` filters (QoS at most 1); refuse the rest."""
        codes = []
        for topic_filter, qos in filters:
            if topic_filter.startswith(_RESPONSE_PREFIX):
                granted = min(qos, 1)
                self._qos = max(self._qos, granted)
                codes.append(granted)
            else:
                codes.append(_SUBACK_FAILURE)
        return codes

    def on_unsubscribe(self, filters: Sequence[str]) -> None:
        """Nothing to undo: responses go to this connection only."""

    async def on_publish(self, packet: Publish) -> None:
        """Answer a register or a poll; any other topic closes the connection."""
        path, params = split_query(packet.topic)
        rid = params.get("$rid") or ""
        att = self.attestation
        service = self._service
        if path == REGISTER_TOPIC:
            response = await service.respond_async(
                service.register_async, att, packet.payload, self.api_version
            )
        elif path == POLL_TOPIC:
            operation_id = params.get("operationId")
            if not operation_id:
                self._answer(rid, self._missing_operation_id())
                return
            call = partial(service.respond, service.operation_status, att, operation_id)
            response = await self._frontend.run(call)
        else:
            raise RemoteProtocolError(
                f"DPS does not serve topic {packet.topic[:100]!r}", packet_type="PUBLISH"
            )
        self._answer(rid, response)

    def on_close(self, reason: str) -> None:
        """Nothing to release: registration state lives in the store."""

    def _missing_operation_id(self) -> DpsResponse:
        err = BadRequest("the poll names no operationId", reason="missing-operation-id")
        return self._service.error_response(err)

    def _answer(self, rid: str, response: DpsResponse) -> None:
        if self._link.closed:
            return
        topic = response_topic(response.status, rid, response.retry_after)
        self._link.publish(topic, json.dumps(response.body).encode(), qos=self._qos)
