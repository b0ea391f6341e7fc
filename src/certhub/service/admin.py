"""certhub's own admin API under ``/certhub/v1`` (not part of IoT Hub's API).

Reads need ``iothubowner`` or ``registryReadWrite`` (which can read enrollment keys, so
treat it as an administrator's policy); writes need ``iothubowner``. Lists are paged:
``?limit=`` (1..1000, default 100) and ``?cursor=`` from the previous page's ``next``;
the body is ``{"items": [...], "next": "<cursor>" | null}``.

* ``GET /namespaces[/{name}]``
* ``GET|POST /policies``, ``GET /policies/{name}``, ``DELETE /policies/{name}``
  ``{"reason"}`` (no new issuance; its certificates work until they expire),
  ``POST /policies/{name}/revoke-issuer`` ``{"reason"}`` (new issuing CA; the old one and
  its certificates revoked) and ``POST /policies/{name}/rotate-issuer`` ``{"reason"}``
  (planned: successor CA issues at once, the old one is trusted until it drains) — see
  :mod:`certhub.issuer_lifecycle`
* ``POST /namespaces/{name}/rotate-root`` ``{"reason"}`` — overlap rotation of the root
* ``GET /cas?expiringWithin=30d`` — trusted CAs (optionally only those expiring soon)
* enrollments: see :mod:`certhub.service.admin_enrollments`
* ``GET /certificates?deviceId=&state=&expiringBefore=`` — ``state`` is a stored state
  (issued, active, superseded, revoked, expired) or a lifecycle phase (healthy,
  renewal-due, overdue; ``expired`` also matches live certificates past notAfter);
  ``GET /certificates/{serial}`` (with the PEM)
* ``GET /devices?lifecycle=``, ``GET /devices/{id}`` — each device's lifecycle (healthy,
  renewal-due, overdue, expired, revoked, disabled, no-certificate; rules in
  :mod:`certhub.registry._service`)
* ``POST /devices/{id}/revoke`` ``{"reason", "disable"}`` — rotate the revocation id,
  revoke the device's certificates, audit; the hub closes the live session
* ``GET /audit?subjectType=&subjectId=&action=&since=`` — the audit log, newest first
  (read-only; ``action`` may be a prefix ending in ``*``)
"""

from __future__ import annotations

import datetime as dt
import ssl
from typing import Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from certhub import views
from certhub.issuer_lifecycle import IssuerChange, IssuerLifecycle
from certhub.pki import KeyType, LeafPolicy, PolicyError, parse_duration
from certhub.query import format_timestamp
from certhub.registry import errors as store_errors
from certhub.registry._service import (
    CERTIFICATE_PHASES,
    DEVICE_LIFECYCLES,
    CertificateListing,
    DeviceLifecycle,
)
from certhub.registry.records import (
    CERTIFICATE_STATES,
    AuditRecord,
    CaRecord,
    NamespaceRecord,
    PolicyRecord,
)
from certhub.service.admin_enrollments import enrollments_router
from certhub.service.auth import Permission
from certhub.service.context import ServiceContext, ServiceRoute, guard
from certhub.service.devices import DeviceIdPath
from certhub.service.errors import AlreadyExists, BadRequest, NotFound, NotImplementedYet

__all__ = [
    "ADMIN_PREFIX",
    "admin_router",
    "ca_json",
    "certificate_json",
    "issuer_change_json",
    "policy_json",
]

ADMIN_PREFIX = "/certhub/v1"
Limit = Query(100, ge=1, le=1000, description="Page size.")
Cursor = Query(None, max_length=256, description="`next` of the previous page.")


def _ts(value: dt.datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


def _page(items: list[dict[str, Any]], limit: int, key: str) -> JSONResponse:
    more = len(items) > limit
    items = items[:limit]
    return JSONResponse({"items": items, "next": str(items[-1][key]) if more else None})


def namespace_json(n: NamespaceRecord) -> dict[str, Any]:
    return {"name": n.name, "idScope": n.id_scope, "createdAt": _ts(n.created_at)}


def policy_json(p: PolicyRecord) -> dict[str, Any]:
    """A policy as the admin API shows it (:func:`certhub.views.policy_json`)."""
    return views.policy_json(p, stamp=format_timestamp)


def certificate_json(item: CertificateListing, pem: bool = False) -> dict[str, Any]:
    """A certificate of the inventory (``pem`` adds the certificate itself)."""
    c = item.certificate
    out: dict[str, Any] = {
        "serialNumber": c.serial_hex,
        "deviceId": c.device_id,
        "policy": item.policy_name,
        "notBefore": _ts(c.not_before),
        "notAfter": _ts(c.not_after),
        "state": c.state,
        "lifecycle": item.lifecycle,
        "issuedVia": c.requested_via,
        "thumbprint": c.sha256,
        "sha1": c.sha1,
        "keyType": c.key_type,
        "revokedAt": _ts(c.revoked_at),
        "revocationReason": c.revocation_reason,
        "firstUsedAt": _ts(c.first_used_at),
        "createdAt": _ts(c.created_at),
    }
    if pem:
        out["pem"] = ssl.DER_cert_to_PEM_cert(c.cert_der)
    return out


def lifecycle_json(d: DeviceLifecycle) -> dict[str, Any]:
    cert = None
    if d.serial_hex is not None:
        cert = {
            "serialNumber": d.serial_hex,
            "notBefore": _ts(d.not_before),
            "notAfter": _ts(d.not_after),
            "state": d.certificate_state,
        }
    return {
        "deviceId": d.device_id,
        "status": d.status,
        "statusReason": d.status_reason,
        "connectionState": d.connection_state,
        "lifecycle": d.lifecycle,
        "certificate": cert,
    }


def audit_json(a: AuditRecord) -> dict[str, Any]:
    return {
        "id": a.id,
        "at": _ts(a.at),
        "actor": a.actor,
        "action": a.action,
        "subjectType": a.subject_type,
        "subjectId": a.subject_id,
        "reason": a.reason,
        "details": dict(a.details),
    }


class PolicyIn(BaseModel):
    """A new policy: validity and backdate as durations (``30d``, ``12h``, ``90s``)."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=64)
    validity: str = Field(default="30d", max_length=16)
    keyTypes: list[str] = Field(default_factory=lambda: ["p256", "p384"], max_length=8)
    backdate: str = Field(default="5m", max_length=16)
    caKeyType: str = Field(default="p256", max_length=16)


class ReasonIn(BaseModel):
    """An operator action on a policy: the reason is recorded in the audit log."""

    model_config = ConfigDict(extra="ignore")
    reason: str | None = Field(default=None, min_length=1, max_length=512)


def ca_json(c: CaRecord) -> dict[str, Any]:
    """A CA as the admin API and the CLI show it."""
    return {
        "id": c.id,
        "kind": c.kind,
        "subject": c.subject,
        "serialNumber": c.serial_hex,
        "sha256": c.sha256,
        "policyId": c.policy_id,
        "state": c.state,
        "notBefore": _ts(c.not_before),
        "notAfter": _ts(c.not_after),
        "retiredAt": _ts(c.retired_at),
        "revokedAt": _ts(c.revoked_at),
        "revocationReason": c.revocation_reason,
    }


def issuer_change_json(change: IssuerChange) -> dict[str, Any]:
    """What revoke-issuer / rotate-issuer did."""
    return {
        "policy": change.policy.name,
        "issuingCa": ca_json(change.new_ca),
        "previousCas": [ca_json(c) for c in change.previous],
        "revokedCertificates": len(change.revoked_serials),
    }


class RevokeIn(BaseModel):
    """Revoke a device: the reason is recorded; ``disable`` also disables it."""

    model_config = ConfigDict(extra="ignore")
    reason: str = Field(default="revoked by operator", min_length=1, max_length=512)
    disable: bool = False


def _state_filter(state: str | None) -> tuple[list[str], str | None]:
    if state is None:
        return [], None
    if state in CERTIFICATE_PHASES:
        return [], state
    if state in CERTIFICATE_STATES:
        return [state], None
    choices = sorted({*CERTIFICATE_STATES, *CERTIFICATE_PHASES})
    raise BadRequest(f"state must be one of {choices}", reason="invalid-state")


def _aware(value: dt.datetime | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise BadRequest(f"{name} needs a time zone (e.g. ...Z)", reason="naive-time")
    return value


def admin_router(ctx: ServiceContext) -> APIRouter:
    """The admin API routes (mounted under :data:`ADMIN_PREFIX`)."""
    router = APIRouter(prefix=ADMIN_PREFIX, route_class=ServiceRoute, tags=["certhub admin"])
    read = guard(ctx, Permission.CERTHUB_ADMIN, Permission.REGISTRY_WRITE)
    write = guard(ctx, Permission.CERTHUB_ADMIN)
    store = ctx.store

    @router.get("/namespaces", dependencies=[read], summary="List namespaces")
    async def list_namespaces() -> JSONResponse:
        items = await ctx.call(store.list_namespaces)
        return JSONResponse({"items": [namespace_json(n) for n in items], "next": None})

    @router.get("/namespaces/{name}", dependencies=[read], summary="Get a namespace")
    async def get_namespace(name: str) -> JSONResponse:
        ns = await ctx.call(store.get_namespace, name)
        if ns is None:
            raise NotFound(f"namespace {name!r} not found", reason="not-found", code="NotFound")
        return JSONResponse(namespace_json(ns))

    async def namespace_id() -> int:
        ns = await ctx.call(store.get_namespace, ctx.namespace)
        assert ns is not None, "the namespace is initialised"
        return ns.id

    @router.get("/policies", dependencies=[read], summary="List policies")
    async def list_policies() -> JSONResponse:
        items = await ctx.call(store.list_policies, await namespace_id())
        return JSONResponse({"items": [policy_json(p) for p in items], "next": None})

    @router.get("/policies/{name}", dependencies=[read], summary="Get a policy")
    async def get_policy(name: str) -> JSONResponse:
        policy = await ctx.call(store.get_policy, await namespace_id(), name)
        if policy is None:
            raise NotFound(f"policy {name!r} not found", reason="not-found", code="NotFound")
        return JSONResponse(policy_json(policy))

    @router.post("/policies", dependencies=[write], status_code=201, summary="Create a policy")
    async def create_policy(body: PolicyIn = Body(...)) -> JSONResponse:
        if ctx.authority is None:
            raise NotImplementedYet("this server has no authority", reason="no-authority")
        development = await ctx.call(store.get_setting, "development") == "1"
        try:
            validity = parse_duration(body.validity)
            leaf = LeafPolicy.create(
                body.name,
                validity,
                body.keyTypes,
                body.backdate,
                development=development and validity.days < 7,
            )
            ca_key = KeyType(body.caKeyType)
        except (PolicyError, ValueError) as exc:
            raise BadRequest(str(exc), reason=getattr(exc, "reason", "invalid-policy")) from exc
        try:
            record = await ctx.call(
                lambda: ctx.authority.create_policy(leaf, actor="admin-api", ca_key_type=ca_key)
            )
        except store_errors.AlreadyExists as exc:
            raise AlreadyExists(
                f"policy {body.name!r} already exists", reason="already-exists", code="Conflict"
            ) from exc
        return JSONResponse(policy_json(record), status_code=201)

    def lifecycle() -> IssuerLifecycle:
        if ctx.authority is None:
            raise NotImplementedYet("this server has no authority", reason="no-authority")
        return IssuerLifecycle(ctx.authority)

    async def policy_action(name: str, action: Any) -> Any:
        try:
            return await ctx.call(action)
        except store_errors.NotFound as exc:
            raise NotFound(
                f"no active policy named {name!r}", reason="not-found", code="NotFound"
            ) from exc

    @router.post(
        "/policies/{name}/revoke-issuer", dependencies=[write], summary="Revoke a policy's issuer"
    )
    async def revoke_issuer(name: str, body: ReasonIn | None = Body(None)) -> JSONResponse:
        lc, reason = lifecycle(), (body.reason if body else None)
        kwargs = {"reason": reason} if reason else {}
        change = await policy_action(
            name, lambda: lc.revoke_issuer(name, actor="admin-api", **kwargs)
        )
        return JSONResponse(issuer_change_json(change))

    @router.post(
        "/policies/{name}/rotate-issuer", dependencies=[write], summary="Rotate a policy's issuer"
    )
    async def rotate_issuer(name: str, body: ReasonIn | None = Body(None)) -> JSONResponse:
        lc, reason = lifecycle(), (body.reason if body else None)
        change = await policy_action(
            name, lambda: lc.rotate_issuer(name, actor="admin-api", reason=reason)
        )
        return JSONResponse(issuer_change_json(change))

    @router.delete("/policies/{name}", dependencies=[write], summary="Delete a policy")
    async def delete_policy(name: str, body: ReasonIn | None = Body(None)) -> JSONResponse:
        lc, reason = lifecycle(), (body.reason if body else None)
        record = await policy_action(
            name, lambda: lc.delete_policy(name, actor="admin-api", reason=reason)
        )
        return JSONResponse(policy_json(record))

    @router.post(
        "/namespaces/{name}/rotate-root", dependencies=[write], summary="Rotate the root CA"
    )
    async def rotate_root(name: str, body: ReasonIn | None = Body(None)) -> JSONResponse:
        if name != ctx.namespace:
            raise NotFound(f"namespace {name!r} not found", reason="not-found", code="NotFound")
        lc, reason = lifecycle(), (body.reason if body else None)
        rotation = await ctx.call(lambda: lc.rotate_root(actor="admin-api", reason=reason))
        return JSONResponse(
            {
                "root": ca_json(rotation.new_root),
                "previousRoots": [ca_json(c) for c in rotation.previous],
                "issuingCas": [ca_json(c) for c in rotation.issuers],
            }
        )

    @router.get("/cas", dependencies=[read], summary="CAs (optionally: expiring soon)")
    async def list_cas(
        expiringWithin: str | None = Query(None, max_length=16, description="e.g. 30d"),
    ) -> JSONResponse:
        ns_id = await namespace_id()
        if expiringWithin is None:
            items = await ctx.call(store.list_cas, ns_id)
        else:
            try:
                within = parse_duration(expiringWithin)
            except (PolicyError, ValueError) as exc:
                raise BadRequest(f"expiringWithin: {exc}", reason="invalid-duration") from exc
            items = await ctx.call(lambda: store.list_expiring_cas(ns_id, ctx.clock.now(), within))
        return JSONResponse({"items": [ca_json(c) for c in items], "next": None})

    @router.get("/certificates", dependencies=[read], summary="Certificate inventory")
    async def list_certificates(
        deviceId: str | None = Query(None, max_length=128),
        state: str | None = Query(None, max_length=32),
        expiringBefore: dt.datetime | None = Query(None),
        limit: int = Limit,
        cursor: str | None = Cursor,
    ) -> JSONResponse:
        states, phase = _state_filter(state)
        items = await ctx.call(
            lambda: store.list_certificate_inventory(
                now=ctx.clock.now(),
                rule=ctx.lifecycle_rule,
                device_id=deviceId,
                states=states,
                lifecycle=phase,
                expiring_before=_aware(expiringBefore, "expiringBefore"),
                limit=limit + 1,
                after_serial=cursor,
            )
        )
        return _page([certificate_json(i) for i in items], limit, "serialNumber")

    @router.get("/certificates/{serial}", dependencies=[read], summary="One certificate")
    async def get_certificate(serial: str) -> JSONResponse:
        items = await ctx.call(
            lambda: store.list_certificate_inventory(
                now=ctx.clock.now(), rule=ctx.lifecycle_rule, limit=1, serial_hex=serial
            )
        )
        if not items:
            raise NotFound(f"certificate {serial!r} not found", reason="not-found", code="NotFound")
        return JSONResponse(certificate_json(items[0], pem=True))

    @router.get("/devices", dependencies=[read], summary="Device lifecycles")
    async def list_lifecycles(
        lifecycle: str | None = Query(None, max_length=32),
        limit: int = Limit,
        cursor: str | None = Cursor,
    ) -> JSONResponse:
        if lifecycle is not None and lifecycle not in DEVICE_LIFECYCLES:
            raise BadRequest(
                f"lifecycle must be one of {list(DEVICE_LIFECYCLES)}", reason="invalid-lifecycle"
            )
        items = await ctx.call(
            lambda: store.list_device_lifecycles(
                now=ctx.clock.now(),
                rule=ctx.lifecycle_rule,
                lifecycle=lifecycle,
                limit=limit + 1,
                after_device_id=cursor,
            )
        )
        return _page([lifecycle_json(d) for d in items], limit, "deviceId")

    @router.get("/devices/{id}", dependencies=[read], summary="One device's lifecycle")
    async def get_lifecycle(id: str) -> JSONResponse:
        items = await ctx.call(
            lambda: store.list_device_lifecycles(
                now=ctx.clock.now(), rule=ctx.lifecycle_rule, device_id=id, limit=1
            )
        )
        if not items:
            raise NotFound(f"device {id!r} not found", reason="not-found")
        return JSONResponse(lifecycle_json(items[0]))

    @router.post("/devices/{id}/revoke", dependencies=[write], summary="Revoke a device")
    async def revoke_device(id: str = DeviceIdPath, body: RevokeIn = Body(...)) -> JSONResponse:
        device, serials = await ctx.call(
            lambda: store.revoke_device(
                id,
                ctx.rng.token_bytes(32),
                now=ctx.clock.now(),
                actor="admin-api",
                reason=body.reason,
                disable=body.disable,
            )
        )
        return JSONResponse({"deviceId": id, "status": device.status, "revokedSerials": serials})

    @router.get("/audit", dependencies=[read], summary="The audit log (newest first)")
    async def list_audit(
        subjectType: str | None = Query(None, max_length=64),
        subjectId: str | None = Query(None, max_length=256),
        limit: int = Limit,
        cursor: int | None = Query(
            None, ge=1, le=2**63 - 1, description="`next` of the previous page."
        ),
        action: str | None = Query(
            None, max_length=128, description="An action, or a prefix ending in `*`."
        ),
        since: dt.datetime | None = Query(None, description="Entries at or after this time."),
    ) -> JSONResponse:
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        items = await ctx.call(
            lambda: store.list_audit(
                subjectType, subjectId, limit + 1, cursor, action=action, since=since
            )
        )
        return _page([audit_json(a) for a in items], limit, "id")

    router.include_router(enrollments_router(ctx))
    return router
