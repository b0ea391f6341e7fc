"""``GET /statistics/devices`` and ``GET /statistics/service`` (IoT Hub's shapes)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from certhub.service.auth import Permission
from certhub.service.context import ServiceContext, ServiceRoute, guard

__all__ = ["stats_router"]


def stats_router(ctx: ServiceContext) -> APIRouter:
    """The statistics routes (RegistryRead)."""
    router = APIRouter(route_class=ServiceRoute, tags=["statistics"])
    read = guard(ctx, Permission.REGISTRY_READ)

    @router.get("/statistics/devices", dependencies=[read], summary="Device registry counts")
    async def device_statistics() -> JSONResponse:
        stats = await ctx.call(ctx.store.device_statistics)
        return JSONResponse(
            {
                "totalDeviceCount": stats.total,
                "enabledDeviceCount": stats.enabled,
                "disabledDeviceCount": stats.disabled,
            }
        )

    @router.get("/statistics/service", dependencies=[read], summary="Connected devices")
    async def service_statistics() -> JSONResponse:
        stats = await ctx.call(ctx.store.device_statistics)
        return JSONResponse({"connectedDeviceCount": stats.connected})

    return router
