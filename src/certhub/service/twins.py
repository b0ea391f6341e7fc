"""Twins, direct methods and cloud-to-device messages.

* ``GET /twins/{id}``, ``PATCH /twins/{id}`` (merge ``tags`` and
  ``properties.desired``; ``null`` deletes), ``PUT /twins/{id}`` (replace both), each
  with ``If-Match`` (412 when stale). Desired changes reach the device's live session
  through the hub (the ``twin.desired`` change event; on any node).
* ``POST /twins/{id}/methods`` — ``{"methodName", "payload", "responseTimeoutInSeconds"
  (5..300, default 30), "connectTimeoutInSeconds" (0..300, default 0)}`` →
  ``{"status", "payload"}``; 404 ``DeviceNotOnline`` when the device has no session
  (after waiting ``connectTimeoutInSeconds``), 504 ``GatewayTimeout`` when it does not
  answer in time.
* ``POST /devices/{id}/messages/deviceBound`` — certhub's cloud-to-device endpoint
  (IoT Hub itself uses AMQP for this): the body is the message (at most 64 KiB);
  ``iothub-app-<name>`` headers become application properties, ``iothub-messageid`` /
  ``iothub-correlationid`` / ``iothub-contenttype`` / ``iothub-contentencoding`` the
  system ones. Answers 202 ``{"delivered": bool}`` (false: queued for the next session).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from certhub.registry.records import DeviceRecord
from certhub.service.auth import Permission
from certhub.service.context import ServiceContext, ServiceRoute, guard, if_match
from certhub.service.devices import DeviceIdPath, require_device, timestamp_or_epoch
from certhub.service.errors import BadRequest, DeviceOffline
from certhub.service.gateway import TwinChange

__all__ = ["MAX_C2D_BYTES", "MethodIn", "TwinIn", "twin_json", "twins_router"]

MAX_C2D_BYTES = 64 * 1024
_SYSTEM_PROPERTIES = {
    "iothub-messageid": "$.mid",
    "iothub-correlationid": "$.cid",
    "iothub-contenttype": "$.ct",
    "iothub-contentencoding": "$.ce",
}
_APP_PREFIX = "iothub-app-"


class TwinPropertiesIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    desired: dict[str, Any] | None = None


class TwinIn(BaseModel):
    """A twin body: ``tags`` and ``properties.desired`` (other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
    tags: dict[str, Any] | None = None
    properties: TwinPropertiesIn | None = None


class MethodIn(BaseModel):
    """A direct method call (IoT Hub's ``CloudToDeviceMethod``)."""

    model_config = ConfigDict(extra="ignore")
    methodName: str = Field(min_length=1, max_length=100)
    payload: Any = None
    responseTimeoutInSeconds: int = Field(default=30, ge=5, le=300)
    connectTimeoutInSeconds: int = Field(default=0, ge=0, le=300)


def twin_json(device: DeviceRecord, twin: dict[str, Any]) -> dict[str, Any]:
    """The IoT Hub twin: device fields around the gateway's tags and properties."""
    return {
        "deviceId": device.device_id,
        "moduleId": None,
        "etag": twin["etag"],
        "deviceEtag": device.etag,
        "status": device.status,
        "statusReason": device.status_reason,
        "statusUpdateTime": timestamp_or_epoch(device.status_updated_at),
        "connectionState": device.connection_state,
        "lastActivityTime": timestamp_or_epoch(device.last_activity_at),
        "cloudToDeviceMessageCount": 0,
        "authenticationType": device.auth_type,
        "x509Thumbprint": {
            "primaryThumbprint": device.primary_thumbprint,
            "secondaryThumbprint": device.secondary_thumbprint,
        },
        "modelId": "",
        "version": twin["version"],
        "tags": twin["tags"],
        "properties": twin["properties"],
        "capabilities": {"iotEdge": False},
    }


async def _wait_connected(ctx: ServiceContext, device_id: str, seconds: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not ctx.hub.is_connected(device_id):
        if loop.time() >= deadline:
            raise DeviceOffline(
                f"device {device_id!r} is not online", reason="offline", code="DeviceNotOnline"
            )
        await asyncio.sleep(0.1)


def _c2d_properties(request: Request) -> dict[str, str]:
    props: dict[str, str] = {}
    for name, value in request.headers.items():
        lower = name.lower()
        if lower in _SYSTEM_PROPERTIES:
            props[_SYSTEM_PROPERTIES[lower]] = value
        elif lower.startswith(_APP_PREFIX) and len(lower) > len(_APP_PREFIX):
            props[name[len(_APP_PREFIX) :]] = value
    return props


def twins_router(ctx: ServiceContext) -> APIRouter:
    """Twin, method and cloud-to-device routes."""
    router = APIRouter(route_class=ServiceRoute, tags=["twins"])
    read = guard(ctx, Permission.REGISTRY_READ, Permission.SERVICE_CONNECT)
    connect = guard(ctx, Permission.SERVICE_CONNECT)

    async def respond(device_id: str, twin: dict[str, Any] | None = None) -> JSONResponse:
        device = await require_device(ctx, device_id)
        return JSONResponse(twin_json(device, twin or await ctx.hub.get_twin(device_id)))

    async def write(device_id: str, body: TwinIn, match: str | None, replace: bool) -> Any:
        await require_device(ctx, device_id)
        desired = body.properties.desired if body.properties else None
        tags = body.tags
        if replace:
            tags, desired = tags or {}, desired or {}
        change = TwinChange(
            tags=tags, desired=desired, replace=replace, expected_etag=if_match(match)
        )
        return await respond(device_id, await ctx.hub.update_twin(device_id, change))

    @router.get("/twins/{id}", dependencies=[read], summary="Get a device twin")
    async def get_twin(id: str = DeviceIdPath) -> JSONResponse:
        return await respond(id)

    @router.patch("/twins/{id}", dependencies=[connect], summary="Update tags/desired")
    async def patch_twin(
        id: str = DeviceIdPath,
        body: TwinIn = Body(...),
        match: str | None = Header(None, alias="If-Match"),
    ) -> JSONResponse:
        result: JSONResponse = await write(id, body, match, replace=False)
        return result

    @router.put("/twins/{id}", dependencies=[connect], summary="Replace tags/desired")
    async def put_twin(
        id: str = DeviceIdPath,
        body: TwinIn = Body(...),
        match: str | None = Header(None, alias="If-Match"),
    ) -> JSONResponse:
        result: JSONResponse = await write(id, body, match, replace=True)
        return result

    @router.post("/twins/{id}/methods", dependencies=[connect], summary="Invoke a method")
    async def invoke_method(id: str = DeviceIdPath, body: MethodIn = Body(...)) -> JSONResponse:
        await require_device(ctx, id)
        await _wait_connected(ctx, id, body.connectTimeoutInSeconds)
        result = await ctx.hub.invoke_method(
            id, body.methodName, body.payload, float(body.responseTimeoutInSeconds)
        )
        return JSONResponse({"status": result.status, "payload": result.payload})

    @router.post(
        "/devices/{id}/messages/deviceBound",
        dependencies=[connect],
        status_code=202,
        summary="Send a cloud-to-device message (certhub)",
        openapi_extra={
            "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
        },
    )
    async def send_c2d(request: Request, id: str = DeviceIdPath) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_C2D_BYTES:
            raise BadRequest(
                f"message of {len(body)} bytes exceeds {MAX_C2D_BYTES}",
                reason="too-large",
                code="MessageTooLarge",
            )
        await require_device(ctx, id)
        delivered = await ctx.hub.send_c2d(id, body, _c2d_properties(request))
        return JSONResponse({"delivered": delivered}, status_code=202)

    return router
