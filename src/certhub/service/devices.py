"""IoT Hub device identities: ``PUT/GET/DELETE /devices/{id}``, ``GET /devices``.

Device JSON follows the data-plane swagger (api-version ``2021-04-12``, wire doc §5).
Authentication types: ``certificateAuthority`` (nothing to store; the device gets its
operational certificate from a policy — ``default`` unless the body's certhub-only
``policyName`` says otherwise), ``selfSigned`` (the primary thumbprint is required, SHA-1
or SHA-256 hex), ``sas`` (keys generated when not given), ``none``.

``PUT`` without ``If-Match`` creates (409 if the id is taken); with ``If-Match: *`` or
the current etag it updates (404 if missing, 412 if the etag is stale). Disabling a
device closes its live session: the store's trigger emits ``device.status`` and the hub
reacts to it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from typing import Any, Literal

from fastapi import APIRouter, Body, Header, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from certhub.query import format_timestamp
from certhub.registry import errors as store_errors
from certhub.registry.records import DeviceRecord, NewDevice
from certhub.service.auth import Permission
from certhub.service.context import ServiceContext, ServiceRoute, guard, if_match
from certhub.service.errors import AlreadyExists, BadRequest, NotFound

__all__ = [
    "DEVICE_ID_PATTERN",
    "AuthenticationIn",
    "DeviceIn",
    "check_device_id",
    "create_device",
    "device_json",
    "devices_router",
    "require_device",
    "timestamp_or_epoch",
    "update_device",
]

#: IoT Hub device ids: up to 128 ASCII letters, digits and ``-.%_*?!(),:=@$'``.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}$"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
_THUMBPRINT = re.compile(r"^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")
_EPOCH = "0001-01-01T00:00:00Z"
DeviceIdPath = Path(pattern=DEVICE_ID_PATTERN, description="The device id.")


class SymmetricKeyIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    primaryKey: str | None = None
    secondaryKey: str | None = None


class ThumbprintIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    primaryThumbprint: str | None = None
    secondaryThumbprint: str | None = None


class AuthenticationIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["sas", "selfSigned", "certificateAuthority", "none"] = "sas"
    symmetricKey: SymmetricKeyIn | None = None
    x509Thumbprint: ThumbprintIn | None = None


class DeviceIn(BaseModel):
    """The device body of ``PUT /devices/{id}`` (fields IoT Hub computes are ignored)."""

    model_config = ConfigDict(extra="ignore")
    deviceId: str | None = None
    etag: str | None = None
    status: Literal["enabled", "disabled"] = "enabled"
    statusReason: str | None = Field(default=None, max_length=128)
    authentication: AuthenticationIn | None = None
    policyName: str | None = Field(default=None, description="certhub: the issuing policy.")


def timestamp_or_epoch(value: Any) -> str:
    """IoT Hub's rendering of an optional time: the instant, or ``0001-01-01T00:00:00Z``."""
    return _EPOCH if value is None else format_timestamp(value)


def device_json(d: DeviceRecord) -> dict[str, Any]:
    """A device as IoT Hub's service API shows it."""
    return {
        "deviceId": d.device_id,
        "moduleId": None,
        "generationId": d.generation_id,
        "etag": d.etag,
        "connectionState": d.connection_state,
        "status": d.status,
        "statusReason": d.status_reason,
        "connectionStateUpdatedTime": timestamp_or_epoch(d.connection_state_updated_at),
        "statusUpdatedTime": timestamp_or_epoch(d.status_updated_at),
        "lastActivityTime": timestamp_or_epoch(d.last_activity_at),
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "symmetricKey": {"primaryKey": d.primary_key, "secondaryKey": d.secondary_key},
            "x509Thumbprint": {
                "primaryThumbprint": d.primary_thumbprint,
                "secondaryThumbprint": d.secondary_thumbprint,
            },
            "type": d.auth_type,
        },
        "capabilities": {"iotEdge": False},
        "deviceScope": None,
        "parentScopes": [],
        "policyName": d.policy_name,
    }


def _key(value: str | None, name: str, ctx: ServiceContext) -> str:
    if value is None:
        return base64.b64encode(ctx.rng.token_bytes(32)).decode()
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise BadRequest(f"{name} is not base64", reason="invalid-key") from exc
    if not 16 <= len(raw) <= 64:
        raise BadRequest(f"{name} must hold 16 to 64 bytes", reason="invalid-key")
    return value


def _credentials(body: DeviceIn, ctx: ServiceContext) -> dict[str, Any]:
    auth = body.authentication or AuthenticationIn()
    out: dict[str, Any] = {
        "auth_type": auth.type,
        "primary_key": None,
        "secondary_key": None,
        "primary_thumbprint": None,
        "secondary_thumbprint": None,
    }
    if auth.type == "sas":
        keys = auth.symmetricKey or SymmetricKeyIn()
        out["primary_key"] = _key(keys.primaryKey, "primaryKey", ctx)
        out["secondary_key"] = _key(keys.secondaryKey, "secondaryKey", ctx)
    elif auth.type == "selfSigned":
        thumbs = auth.x509Thumbprint or ThumbprintIn()
        if not thumbs.primaryThumbprint:
            raise BadRequest("selfSigned needs x509Thumbprint.primaryThumbprint", reason="x509")
        for name, value in (
            ("primaryThumbprint", thumbs.primaryThumbprint),
            ("secondaryThumbprint", thumbs.secondaryThumbprint),
        ):
            if value and not _THUMBPRINT.match(value):
                raise BadRequest(f"{name} must be SHA-1 or SHA-256 hex", reason="thumbprint")
        out["primary_thumbprint"] = thumbs.primaryThumbprint.lower()
        secondary = thumbs.secondaryThumbprint
        out["secondary_thumbprint"] = secondary.lower() if secondary else None
    return out


def check_device_id(device_id: str, body: DeviceIn) -> None:
    """400 when ``device_id`` is not a valid IoT Hub id or differs from the body's."""
    if not _DEVICE_ID.match(device_id):
        raise BadRequest(f"invalid device id {device_id!r}", reason="invalid-device-id")
    if body.deviceId is not None and body.deviceId != device_id:
        raise BadRequest("deviceId in the body differs from the path", reason="id-mismatch")


async def require_device(ctx: ServiceContext, device_id: str) -> DeviceRecord:
    """The device, or 404 DeviceNotFound."""
    device = await ctx.call(ctx.store.get_device, device_id)
    if device is None:
        raise NotFound(f"device {device_id!r} not found", reason="not-found")
    return device


async def _check_policy(ctx: ServiceContext, namespace_id: int, name: str | None) -> None:
    if name is None:
        return
    policy = await ctx.call(ctx.store.get_policy, namespace_id, name)
    if policy is None or policy.state != "active":
        raise BadRequest(f"policyName: no active policy named {name!r}", reason="unknown-policy")


async def create_device(ctx: ServiceContext, device_id: str, body: DeviceIn) -> DeviceRecord:
    """Create the device ``body`` describes; 409 when the id is taken."""
    ns = await ctx.call(ctx.store.get_namespace, ctx.namespace)
    assert ns is not None, "the namespace is initialised"
    creds = _credentials(body, ctx)
    policy = body.policyName
    if policy is None and creds["auth_type"] == "certificateAuthority":
        policy = ctx.default_policy
    await _check_policy(ctx, ns.id, body.policyName)
    new = NewDevice(
        device_id=device_id,
        namespace_id=ns.id,
        revocation_id=ctx.rng.token_bytes(32),
        status=body.status,
        status_reason=body.statusReason,
        policy_name=policy,
        **creds,
    )
    try:
        return await ctx.call(ctx.store.create_device, new, ctx.clock.now())
    except store_errors.AlreadyExists as exc:
        raise AlreadyExists(
            f"A device with ID '{device_id}' is already registered.", reason="already-exists"
        ) from exc


async def update_device(
    ctx: ServiceContext, current: DeviceRecord, body: DeviceIn, etag: str
) -> DeviceRecord:
    """Replace ``current``'s settings with ``body``'s; 412 when ``etag`` is stale."""
    await _check_policy(ctx, current.namespace_id, body.policyName)
    changed = dataclasses.replace(
        current,
        status=body.status,
        status_reason=body.statusReason,
        policy_name=body.policyName or current.policy_name,
        **_credentials(body, ctx),
    )
    return await ctx.call(
        lambda: ctx.store.update_device_audited(
            changed, etag, now=ctx.clock.now(), actor="service-api"
        ),
    )


def devices_router(ctx: ServiceContext) -> APIRouter:
    """The device identity routes."""
    router = APIRouter(route_class=ServiceRoute, tags=["devices"])
    read = guard(ctx, Permission.REGISTRY_READ)
    write = guard(ctx, Permission.REGISTRY_WRITE)

    @router.get("/devices", dependencies=[read], summary="List devices")
    async def list_devices(top: int = Query(1000, ge=1, le=1000)) -> JSONResponse:
        items = await ctx.call(ctx.store.list_devices, top)
        return JSONResponse([device_json(d) for d in items])

    @router.get("/devices/{id}", dependencies=[read], summary="Get a device")
    async def get_device(id: str = DeviceIdPath) -> JSONResponse:
        return JSONResponse(device_json(await require_device(ctx, id)))

    @router.put("/devices/{id}", dependencies=[write], summary="Create or update a device")
    async def put_device(
        id: str = DeviceIdPath,
        body: DeviceIn = Body(...),
        match: str | None = Header(None, alias="If-Match"),
    ) -> JSONResponse:
        check_device_id(id, body)
        etag = if_match(match)
        if etag is None:
            device = await create_device(ctx, id, body)
        else:
            device = await update_device(ctx, await require_device(ctx, id), body, etag)
        return JSONResponse(device_json(device))

    @router.delete(
        "/devices/{id}", dependencies=[write], status_code=204, summary="Delete a device"
    )
    async def delete_device(
        id: str = DeviceIdPath, match: str | None = Header(None, alias="If-Match")
    ) -> Response:
        await require_device(ctx, id)
        await ctx.call(
            lambda: ctx.store.delete_device_audited(
                id, if_match(match), now=ctx.clock.now(), actor="service-api"
            )
        )
        return Response(status_code=204)

    return router
