"""DPS over HTTPS: the FastAPI router (add it with :func:`certhub.service.create_http_app`).

* ``PUT /{idScope}/registrations/{registrationId}/register?api-version=…`` → 202
  ``{"operationId", "status": "assigning"}`` with ``Retry-After`` and ``Location``
* ``GET /{idScope}/registrations/{registrationId}/operations/{operationId}?api-version=…``
  → 200 ``RegistrationOperationStatus`` (202 while assigning)
* ``POST /{idScope}/registrations/{registrationId}?api-version=…`` → 200
  ``DeviceRegistrationResult`` (never with ``issuedCertificateChain``)

Credential: ``Authorization: SharedAccessSignature …`` or the TLS client certificate,
read from the ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``,
which :mod:`certhub.service` fills in); when both are present the SAS token is used.
Errors carry the DPS error body and an ``x-ms-error-code`` header.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from functools import partial

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from certhub.dps.attestation import Attestation, Credential, SasCredential, X509Credential
from certhub.dps.errors import Unauthorized
from certhub.dps.service import DpsResponse, ProvisioningService

__all__ = ["dps_router"]

_Handler = Callable[[Attestation], Awaitable[DpsResponse]]


def _client_cert_der(request: Request) -> bytes | None:
    tls = request.scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    return ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None


def _credential(request: Request) -> Credential:
    token = request.headers.get("authorization")
    if token:
        return SasCredential(token)
    der = _client_cert_der(request)
    if der is not None:
        return X509Credential(der)
    raise Unauthorized(
        "no SAS token and no client certificate", reason="no-credential", error_code=401001
    )


def _to_http(response: DpsResponse, location: str | None = None) -> Response:
    headers: dict[str, str] = {}
    if response.retry_after is not None:
        headers["Retry-After"] = str(response.retry_after)
    error_code = response.body.get("errorCode") if response.status >= 400 else None
    if error_code is not None:
        headers["x-ms-error-code"] = str(error_code)
    if location is not None and response.status == 202:
        headers["Location"] = location
    return JSONResponse(response.body, status_code=response.status, headers=headers)


def dps_router(service: ProvisioningService, *, executor: Executor | None = None) -> APIRouter:
    """The DPS runtime routes over ``service``; blocking work runs on ``executor``."""
    router = APIRouter()

    async def blocking(fn: Callable[[], DpsResponse]) -> DpsResponse:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    async def serve(
        request: Request, id_scope: str, registration_id: str, handler: _Handler
    ) -> DpsResponse:
        async def work() -> DpsResponse:
            credential = _credential(request)
            attest = partial(service.attest, id_scope, registration_id, credential)
            att = await asyncio.get_running_loop().run_in_executor(executor, attest)
            return await handler(att)

        return await service.respond_async(work)

    @router.put("/{id_scope}/registrations/{registration_id}/register")
    async def register(id_scope: str, registration_id: str, request: Request) -> Response:
        body = await request.body()
        api_version = request.query_params.get("api-version")

        async def handler(att: Attestation) -> DpsResponse:
            return await service.register_async(att, body, api_version)

        response = await serve(request, id_scope, registration_id, handler)
        op = response.body.get("operationId")
        location = f"/{id_scope}/registrations/{registration_id}/operations/{op}"
        return _to_http(response, location if op else None)

    @router.get("/{id_scope}/registrations/{registration_id}/operations/{operation_id}")
    async def operation_status(
        id_scope: str, registration_id: str, operation_id: str, request: Request
    ) -> Response:
        async def handler(att: Attestation) -> DpsResponse:
            return await blocking(partial(service.operation_status, att, operation_id))

        return _to_http(await serve(request, id_scope, registration_id, handler))

    @router.post("/{id_scope}/registrations/{registration_id}")
    async def registration_status(
        id_scope: str, registration_id: str, request: Request
    ) -> Response:
        body = await request.body()

        async def handler(att: Attestation) -> DpsResponse:
            return await blocking(partial(service.registration_status, att, body))

        return _to_http(await serve(request, id_scope, registration_id, handler))

    return router
