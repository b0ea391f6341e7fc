"""Plumbing shared by the service routers: their context, error rendering, auth, etags.

* :class:`ServiceContext` — what every router needs (store, executor, clock, randomness,
  auth, hub gateway, authority), built once by the wiring and closed over by the routers.
* :class:`ServiceRoute` — an ``APIRoute`` that renders :class:`ServiceError`, request
  validation errors and store errors as IoT Hub error responses (per router, so other
  routers of the same app, e.g. DPS, keep their own error shapes).
* :func:`guard` — the FastAPI dependency that authenticates the SAS token and checks
  the route's permissions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader

from certhub.clock import Clock
from certhub.rand import Random
from certhub.registry import Store
from certhub.registry import errors as store_errors
from certhub.registry._service import LifecycleRule
from certhub.service.auth import Caller, Permission, ServiceAuth
from certhub.service.errors import (
    AlreadyExists,
    BadRequest,
    NotFound,
    PreconditionFailed,
    ServiceError,
    error_body,
)
from certhub.service.gateway import HubGateway

__all__ = [
    "API_VERSION",
    "Runner",
    "ServiceContext",
    "ServiceRoute",
    "guard",
    "if_match",
    "translate_store_error",
]

log = logging.getLogger("certhub.service")
T = TypeVar("T")
API_VERSION = "2021-04-12"
Runner = Callable[..., Awaitable[Any]]

_sas_header = APIKeyHeader(
    name="Authorization",
    scheme_name="SharedAccessSignature",
    description="`SharedAccessSignature sr=…&sig=…&se=…&skn=<policy>`",
    auto_error=False,
)


@dataclass(kw_only=True)
class ServiceContext:
    """Everything the service routers use. ``run`` runs a blocking call off the loop."""

    store: Store
    run: Runner
    clock: Clock
    rng: Random
    auth: ServiceAuth
    hub: HubGateway
    authority: Any = None  # certhub.authority.CertificateAuthorityService (admin policies)
    namespace: str = "default"
    default_policy: str = "default"
    lifecycle_rule: LifecycleRule = field(default_factory=LifecycleRule)

    async def call(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Run a blocking (store) call in the executor and return its result."""
        result: T = await self.run(fn, *args)
        return result


def translate_store_error(exc: store_errors.StoreError) -> ServiceError:
    """The service error for a store error (the ``kind`` picks the IoT Hub code)."""
    if isinstance(exc, store_errors.NotFound):
        code = "DeviceNotFound" if exc.kind in ("device", "twin") else "NotFound"
        return NotFound(str(exc), reason="not-found", code=code)
    if isinstance(exc, store_errors.EtagMismatch):
        return PreconditionFailed(
            f"{exc.kind} {exc.key!r}: the If-Match etag is not the current one",
            reason="etag-mismatch",
        )
    if isinstance(exc, store_errors.AlreadyExists):
        code = "DeviceAlreadyExists" if exc.kind == "device" else "Conflict"
        return AlreadyExists(str(exc), reason="already-exists", code=code)
    return BadRequest(str(exc), reason=getattr(exc, "reason", "conflict"))


def _validation_error(exc: RequestValidationError) -> BadRequest:
    errors: Sequence[Any] = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "invalid JSON")
        return BadRequest(f"malformed JSON body: {detail}", reason="malformed-json")
    where = ".".join(str(p) for p in first.get("loc", ()))
    return BadRequest(f"{where}: {first.get('msg', 'invalid value')}", reason="invalid-field")


def error_response(error: ServiceError) -> JSONResponse:
    """The HTTP response for a service error."""
    return JSONResponse(error_body(error), status_code=error.status, headers=error.headers())


class ServiceRoute(APIRoute):
    """Renders errors as IoT Hub does (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return error_response(exc)
            except RequestValidationError as exc:
                return error_response(_validation_error(exc))
            except store_errors.StoreError as exc:
                return error_response(translate_store_error(exc))
            except (sa.exc.DataError, OverflowError) as exc:
                # A value the database cannot hold: NUL in PostgreSQL text, a huge integer.
                log.info("refused a value the store cannot hold: %s", exc.__class__.__name__)
                return error_response(
                    BadRequest("a value in the request cannot be stored", reason="invalid-value")
                )

        return route


def guard(ctx: ServiceContext, *any_of: Permission) -> Any:
    """A dependency: authenticate the SAS token, require one of ``any_of``; the Caller."""

    async def dependency(
        request: Request, authorization: str | None = Depends(_sas_header)
    ) -> Caller:
        auth = ctx.auth
        if auth.stale():
            await ctx.run(auth.refresh)
        caller = auth.authenticate(authorization, request.url.path)
        auth.authorize(caller, any_of, f"{request.method} {request.url.path}")
        return caller

    return Depends(dependency)


def if_match(value: str | None) -> str | None:
    """The etag of an ``If-Match`` header without quotes or ``W/`` (``*`` stays ``*``)."""
    if value is None:
        return None
    etag = value.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    if len(etag) >= 2 and etag[0] == etag[-1] == '"':
        etag = etag[1:-1]
    return etag or None
