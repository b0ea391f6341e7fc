"""Bulk registry operations: ``POST /devices`` with a list of ``ExportImportDevice``.

IoT Hub's ``bulk_create_or_update_devices`` (azure-iot-hub ``IoTHubRegistryManager``):
up to 100 entries, each naming a device once, each with an ``importMode``:

====================== =================================================================
``create``             register the device; ``DeviceAlreadyExists`` if the id is taken
``update``             overwrite an existing device regardless of etag (``DeviceNotFound``
                       if there is none — certhub does not create on ``update``)
``updateIfMatchETag``  the same, only when ``eTag`` is the device's current etag
``delete``             remove the device regardless of etag
``deleteIfMatchETag``  remove it only when ``eTag`` is current
``updateTwin``         merge ``tags`` and ``properties.desired`` into the twin
``updateTwinIfMatchETag`` the same, only when ``twinETag`` is the twin's current etag
====================== =================================================================

``create`` and ``update`` also apply the entry's ``tags`` / ``properties.desired``.
A list that cannot be used as a whole (not a list, empty, more than 100 entries, an id
twice) is refused with 400 ``ArgumentInvalid`` before anything changes. Otherwise every
entry is applied on its own, in order; the answer is ``BulkRegistryOperationResult``
(``isSuccessful``, ``errors`` with ``deviceId``, ``errorCode``, ``errorStatus``,
``moduleId``, ``operation``, and ``warnings``) with status 200 when every entry
succeeded and 400 when any failed — the entries that succeeded stay applied, as in
IoT Hub. Modules are not supported: an entry with ``moduleId`` fails with
``ArgumentInvalid``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from certhub.registry import errors as store_errors
from certhub.service.auth import Permission
from certhub.service.context import (
    ServiceContext,
    ServiceRoute,
    guard,
    if_match,
    translate_store_error,
)
from certhub.service.devices import (
    AuthenticationIn,
    DeviceIn,
    check_device_id,
    create_device,
    require_device,
    update_device,
)
from certhub.service.errors import BadRequest, ServiceError
from certhub.service.gateway import TwinChange

__all__ = ["MAX_BULK_DEVICES", "ExportImportDevice", "bulk_router"]

#: IoT Hub's limit on entries per bulk call.
MAX_BULK_DEVICES = 100

ImportMode = Literal[
    "create",
    "update",
    "updateIfMatchETag",
    "delete",
    "deleteIfMatchETag",
    "updateTwin",
    "updateTwinIfMatchETag",
]


class _Properties(BaseModel):
    model_config = ConfigDict(extra="ignore")
    desired: dict[str, Any] | None = None


class ExportImportDevice(BaseModel):
    """One entry of a bulk registry call (fields IoT Hub computes are ignored)."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    moduleId: str | None = None
    eTag: str | None = None
    importMode: ImportMode = "create"
    status: Literal["enabled", "disabled"] = "enabled"
    statusReason: str | None = Field(default=None, max_length=128)
    authentication: AuthenticationIn | None = None
    twinETag: str | None = None
    tags: dict[str, Any] | None = None
    properties: _Properties | None = None
    policyName: str | None = Field(default=None, description="certhub: the issuing policy.")

    def device_body(self) -> DeviceIn:
        """The ``PUT /devices/{id}`` body this entry stands for."""
        return DeviceIn(
            deviceId=self.id,
            status=self.status,
            statusReason=self.statusReason,
            authentication=self.authentication,
            policyName=self.policyName,
        )

    def twin_change(self, *, expected_etag: str | None = None) -> TwinChange | None:
        """The twin merge this entry asks for, or ``None`` when it names none."""
        desired = self.properties.desired if self.properties else None
        if self.tags is None and desired is None and expected_etag is None:
            return None
        return TwinChange(
            tags=self.tags, desired=desired, replace=False, expected_etag=expected_etag
        )


def _check_list(entries: list[ExportImportDevice]) -> None:
    if not entries:
        raise BadRequest("the device list is empty", reason="bulk-empty")
    if len(entries) > MAX_BULK_DEVICES:
        raise BadRequest(
            f"at most {MAX_BULK_DEVICES} devices per bulk call, got {len(entries)}",
            reason="bulk-too-many",
        )
    seen: set[str] = set()
    for entry in entries:
        if entry.id in seen:
            raise BadRequest(f"device {entry.id!r} appears more than once", reason="bulk-duplicate")
        seen.add(entry.id)


def _needs_etag(entry: ExportImportDevice, value: str | None, field: str) -> str:
    etag = if_match(value)
    if etag is None:
        raise BadRequest(f"{entry.importMode} needs {field}", reason="etag-required")
    return etag


async def _apply(ctx: ServiceContext, entry: ExportImportDevice) -> None:
    if entry.moduleId:
        raise BadRequest("modules are not supported", reason="modules-unsupported")
    body = entry.device_body()
    check_device_id(entry.id, body)
    mode = entry.importMode
    if mode == "create":
        await create_device(ctx, entry.id, body)
    elif mode in ("update", "updateIfMatchETag"):
        current = await require_device(ctx, entry.id)
        etag = "*" if mode == "update" else _needs_etag(entry, entry.eTag, "eTag")
        await update_device(ctx, current, body, etag)
    elif mode in ("delete", "deleteIfMatchETag"):
        await require_device(ctx, entry.id)
        etag = "*" if mode == "delete" else _needs_etag(entry, entry.eTag, "eTag")
        await ctx.call(ctx.store.delete_device, entry.id, etag)
        return
    else:
        await require_device(ctx, entry.id)
        expected = None
        if mode == "updateTwinIfMatchETag":
            expected = _needs_etag(entry, entry.twinETag, "twinETag")
        change = entry.twin_change(expected_etag=expected)
        if change is not None:
            await ctx.hub.update_twin(entry.id, change)
        return
    change = entry.twin_change()
    if change is not None:
        await ctx.hub.update_twin(entry.id, change)


def _error(entry: ExportImportDevice, error: ServiceError) -> dict[str, Any]:
    return {
        "deviceId": entry.id,
        "errorCode": error.code,
        "errorStatus": error.message,
        "moduleId": entry.moduleId,
        "operation": entry.importMode,
    }


def bulk_router(ctx: ServiceContext) -> APIRouter:
    """``POST /devices``: bulk create, update and delete (see the module docstring)."""
    router = APIRouter(route_class=ServiceRoute, tags=["devices"])
    write = guard(ctx, Permission.REGISTRY_WRITE)

    @router.post("/devices", dependencies=[write], summary="Bulk create, update or delete")
    async def bulk(entries: list[ExportImportDevice] = Body(...)) -> JSONResponse:
        _check_list(entries)
        errors: list[dict[str, Any]] = []
        for entry in entries:
            try:
                await _apply(ctx, entry)
            except ServiceError as exc:
                errors.append(_error(entry, exc))
            except store_errors.StoreError as exc:
                errors.append(_error(entry, translate_store_error(exc)))
        result = {"isSuccessful": not errors, "errors": errors, "warnings": []}
        return JSONResponse(result, status_code=400 if errors else 200)

    return router
