"""Enrollments in the admin API (``/certhub/v1/enrollments``), in DPS's JSON shape.

* ``GET /enrollments?kind=group|individual``
* ``POST /enrollments`` — a body with ``enrollmentGroupId`` (group) or
  ``registrationId`` (individual); ``attestation`` ``{"type": "symmetricKey",
  "symmetricKey": {...}}`` (keys generated when omitted) or ``{"type": "x509",
  "x509": {"certificates": [PEM, ...]}}``; ``credentialPolicyName`` (an active policy,
  default ``default``), ``provisioningStatus``, ``initialTwin``, ``reprovisionPolicy``.
* ``GET|PUT|DELETE /enrollments/{kind}/{name}`` (``kind``: ``groups`` or
  ``individuals``); ``PUT`` replaces the mutable fields; ``PUT``/``DELETE`` honour
  ``If-Match`` (412 when stale).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any, Literal

from cryptography import x509
from fastapi import APIRouter, Body, Header, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from certhub import views
from certhub.pki import certificate_sha1
from certhub.query import format_timestamp
from certhub.registry import errors as store_errors
from certhub.registry.records import EnrollmentKind, EnrollmentRecord, NewEnrollment
from certhub.service.auth import Permission
from certhub.service.context import ServiceContext, ServiceRoute, guard, if_match
from certhub.service.errors import AlreadyExists, BadRequest, NotFound

__all__ = ["EnrollmentIn", "enrollment_json", "enrollments_router"]

_KINDS: dict[str, EnrollmentKind] = {"groups": "group", "individuals": "individual"}
KindPath = PathParam(pattern="^(groups|individuals)$", description="groups or individuals")


class SymmetricKeyIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    primaryKey: str | None = Field(default=None, max_length=128)
    secondaryKey: str | None = Field(default=None, max_length=128)


class X509In(BaseModel):
    model_config = ConfigDict(extra="ignore")
    certificates: list[str] = Field(default_factory=list, max_length=8)


class AttestationIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["symmetricKey", "x509"] = "symmetricKey"
    symmetricKey: SymmetricKeyIn | None = None
    x509: X509In | None = None


class ReprovisionIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    updateHubAssignment: bool = True
    migrateDeviceData: bool = True


class EnrollmentIn(BaseModel):
    """An enrollment group or individual enrollment (DPS's field names)."""

    model_config = ConfigDict(extra="ignore")
    enrollmentGroupId: str | None = Field(default=None, min_length=1, max_length=128)
    registrationId: str | None = Field(default=None, min_length=1, max_length=128)
    attestation: AttestationIn = Field(default_factory=AttestationIn)
    credentialPolicyName: str = Field(default="default", min_length=1, max_length=64)
    provisioningStatus: Literal["enabled", "disabled"] = "enabled"
    initialTwin: dict[str, Any] = Field(default_factory=dict)
    reprovisionPolicy: ReprovisionIn = Field(default_factory=ReprovisionIn)


def enrollment_json(e: EnrollmentRecord) -> dict[str, Any]:
    """An enrollment as the admin API shows it (:func:`certhub.views.enrollment_json`)."""
    return views.enrollment_json(e, stamp=format_timestamp)


def _key(value: str | None, name: str, ctx: ServiceContext) -> str:
    if value is None:
        return base64.b64encode(ctx.rng.token_bytes(32)).decode()
    try:
        if len(base64.b64decode(value, validate=True)) >= 16:
            return value
    except binascii.Error:
        pass
    raise BadRequest(f"attestation.symmetricKey.{name}: base64 of 16+ bytes", reason="bad-key")


def _thumbprints(pems: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not pems:
        raise BadRequest("x509 attestation needs x509.certificates", reason="x509")
    thumbs = []
    for i, pem in enumerate(pems):
        try:
            thumbs.append(certificate_sha1(x509.load_pem_x509_certificate(pem.encode())))
        except ValueError as exc:
            raise BadRequest(f"x509.certificates[{i}] is not a PEM", reason="x509") from exc
    return tuple(pems), tuple(thumbs)


def _initial_twin(twin: dict[str, Any]) -> dict[str, Any]:
    if set(twin) - {"tags", "properties"}:
        raise BadRequest("initialTwin takes 'tags' and 'properties'", reason="initial-twin")
    return twin


def _fields(body: EnrollmentIn, ctx: ServiceContext) -> dict[str, Any]:
    att = body.attestation
    out: dict[str, Any] = {
        "attestation_type": att.type,
        "primary_key": None,
        "secondary_key": None,
        "x509_certificates": (),
        "x509_thumbprints": (),
        "credential_policy_name": body.credentialPolicyName,
        "initial_twin": _initial_twin(body.initialTwin),
        "provisioning_status": body.provisioningStatus,
        "reprovision_policy": body.reprovisionPolicy.model_dump(),
    }
    if att.type == "symmetricKey":
        keys = att.symmetricKey or SymmetricKeyIn()
        out["primary_key"] = _key(keys.primaryKey, "primaryKey", ctx)
        out["secondary_key"] = _key(keys.secondaryKey, "secondaryKey", ctx)
    else:
        certs, thumbs = _thumbprints((att.x509 or X509In()).certificates)
        out.update(x509_certificates=certs, x509_thumbprints=thumbs)
    return out


def enrollments_router(ctx: ServiceContext) -> APIRouter:
    """Enrollment CRUD (included by the admin router)."""
    router = APIRouter(route_class=ServiceRoute)
    read = guard(ctx, Permission.CERTHUB_ADMIN, Permission.REGISTRY_WRITE)
    write = guard(ctx, Permission.CERTHUB_ADMIN)
    store = ctx.store

    async def namespace_id() -> int:
        ns = await ctx.call(store.get_namespace, ctx.namespace)
        assert ns is not None, "the namespace is initialised"
        return ns.id

    async def check_policy(ns_id: int, name: str) -> None:
        policy = await ctx.call(store.get_policy, ns_id, name)
        if policy is None or policy.state != "active":
            raise BadRequest(f"no active policy named {name!r}", reason="unknown-policy")

    async def existing(kind: str, name: str) -> EnrollmentRecord:
        record = await ctx.call(store.get_enrollment, await namespace_id(), _KINDS[kind], name)
        if record is None:
            raise NotFound(f"enrollment {name!r} not found", reason="not-found", code="NotFound")
        return record

    @router.get("/enrollments", dependencies=[read], summary="List enrollments")
    async def list_enrollments(
        kind: Literal["group", "individual"] | None = Query(None),
    ) -> JSONResponse:
        items = await ctx.call(store.list_enrollments, await namespace_id(), kind)
        return JSONResponse({"items": [enrollment_json(e) for e in items], "next": None})

    @router.post("/enrollments", dependencies=[write], status_code=201, summary="Create")
    async def create_enrollment(body: EnrollmentIn = Body(...)) -> JSONResponse:
        if (body.enrollmentGroupId is None) == (body.registrationId is None):
            raise BadRequest(
                "give exactly one of enrollmentGroupId or registrationId", reason="kind"
            )
        kind: EnrollmentKind = "group" if body.enrollmentGroupId else "individual"
        name = body.enrollmentGroupId or body.registrationId or ""
        ns_id = await namespace_id()
        await check_policy(ns_id, body.credentialPolicyName)
        new = NewEnrollment(namespace_id=ns_id, kind=kind, name=name, **_fields(body, ctx))
        try:
            record = await ctx.call(store.create_enrollment, new, ctx.clock.now())
        except store_errors.AlreadyExists as exc:
            raise AlreadyExists(
                f"{kind} enrollment {name!r} already exists", reason="exists", code="Conflict"
            ) from exc
        return JSONResponse(enrollment_json(record), status_code=201)

    @router.get("/enrollments/{kind}/{name}", dependencies=[read], summary="Get one")
    async def get_enrollment(kind: str = KindPath, name: str = PathParam()) -> JSONResponse:
        return JSONResponse(enrollment_json(await existing(kind, name)))

    @router.put("/enrollments/{kind}/{name}", dependencies=[write], summary="Replace one")
    async def put_enrollment(
        kind: str = KindPath,
        name: str = PathParam(),
        body: EnrollmentIn = Body(...),
        match: str | None = Header(None, alias="If-Match"),
    ) -> JSONResponse:
        current = await existing(kind, name)
        await check_policy(current.namespace_id, body.credentialPolicyName)
        changed = dataclasses.replace(current, **_fields(body, ctx))
        record = await ctx.call(
            lambda: store.update_enrollment(changed, if_match(match), now=ctx.clock.now())
        )
        return JSONResponse(enrollment_json(record))

    @router.delete(
        "/enrollments/{kind}/{name}", dependencies=[write], status_code=204, summary="Delete"
    )
    async def delete_enrollment(
        kind: str = KindPath,
        name: str = PathParam(),
        match: str | None = Header(None, alias="If-Match"),
    ) -> Response:
        current = await existing(kind, name)
        await ctx.call(
            store.delete_enrollment, current.namespace_id, current.kind, name, if_match(match)
        )
        return Response(status_code=204)

    return router
