"""The IoT Hub service REST API and certhub's admin API as a list of routers.

:func:`service_routers` returns every router of the service side (devices, twins and
methods, query, statistics, admin) plus ``GET /openapi.json``, the OpenAPI document of
whatever app they are mounted in. The wiring (:mod:`certhub.service_hub`) builds the
:class:`~certhub.service.context.ServiceContext` and adds the routers to the server's
HTTPS app. The ``api-version`` query parameter IoT Hub clients send is accepted and not
checked (certhub speaks ``2021-04-12``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from certhub.service.admin import admin_router
from certhub.service.context import ServiceContext
from certhub.service.devices import devices_router
from certhub.service.devices_bulk import bulk_router
from certhub.service.query import query_router
from certhub.service.stats import stats_router
from certhub.service.twins import twins_router

__all__ = ["OPENAPI_PATH", "openapi_router", "service_routers"]

OPENAPI_PATH = "/openapi.json"


def openapi_router() -> APIRouter:
    """``GET /openapi.json``: the OpenAPI document of the app (no authentication)."""
    router = APIRouter()

    @router.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        document: dict[str, Any] = request.app.openapi()
        return JSONResponse(document)

    return router


def service_routers(ctx: ServiceContext) -> list[APIRouter]:
    """Every service-side router, in mounting order (query before ``/devices/{id}``)."""
    return [
        query_router(ctx),
        devices_router(ctx),
        bulk_router(ctx),
        twins_router(ctx),
        stats_router(ctx),
        admin_router(ctx),
        openapi_router(),
    ]
