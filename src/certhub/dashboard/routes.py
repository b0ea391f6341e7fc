"""The dashboard's routes: the page (``/dashboard``) and the JSON it polls.

==========================================  ==============================================
``GET  /dashboard``                          the page (static HTML, JS, CSS; no build step)
``GET  /dashboard/static/{file}``            its script and style sheet
``GET  /dashboard/api/session``              ``{loginRequired, development, node}`` (open)
``GET  /dashboard/api/overview``             counts by lifecycle, timeline, CAs
``GET  /dashboard/api/devices?search=``      at-risk devices, soonest expiry first
``GET  /dashboard/api/devices/{id}``         one device: certificates, twin, audit
``POST /dashboard/api/devices/{id}/revoke``  ``{"reason"}``: revoke (as the admin API)
``POST /dashboard/api/devices/{id}/disable`` ``{"reason"}``: disable, audited
``POST /dashboard/api/query``                ``{"query"}``: the IoT Hub query language
                                             (first 100 results, as ``/devices/query``)
==========================================  ==============================================

Every ``/dashboard/api`` route except ``session`` needs the dashboard token
(:mod:`certhub.dashboard.auth`) unless the dashboard is open (development profile,
loopback bind, loopback client). Counts, timeline and the unfiltered at-risk list come
from the cached snapshot (:mod:`certhub.dashboard.fleet`); a search asks the store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from certhub.bootstrap import service_keys
from certhub.clock import Clock
from certhub.dashboard.auth import is_loopback, token_matches
from certhub.dashboard.fleet import AT_RISK_KEPT, AT_RISK_LIMIT, FleetSnapshot, SnapshotCache
from certhub.hub.errors import DeviceNotFound
from certhub.hub.storage import service_twin
from certhub.query import format_timestamp
from certhub.rand import Random
from certhub.registry import NotFound as StoreNotFound
from certhub.registry import Store
from certhub.registry._fleet import AtRiskDevice
from certhub.registry._service import LifecycleRule
from certhub.registry.records import AuditEvent
from certhub.service.admin import audit_json, certificate_json, lifecycle_json
from certhub.service.devices import DeviceIdPath
from certhub.service.errors import BadRequest
from certhub.service.query import compile_page

__all__ = ["DASHBOARD_PATH", "DashboardContext", "dashboard_router"]

DASHBOARD_PATH = "/dashboard"
_STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
_CA_WARN = dt.timedelta(days=30)
_CA_CRITICAL = dt.timedelta(days=7)
Runner = Callable[..., Awaitable[Any]]


@dataclass(kw_only=True)
class DashboardContext:
    """What the dashboard routes use; ``run`` runs a blocking call off the loop."""

    store: Store
    run: Runner
    clock: Clock
    rng: Random
    cache: SnapshotCache
    bind: str
    node: str
    namespace: str = "default"
    rule: LifecycleRule = dataclasses.field(default_factory=LifecycleRule)
    open_on_loopback: bool = True


class QueryText(BaseModel):
    """A query in the IoT Hub query language."""

    model_config = ConfigDict(extra="ignore")
    query: str = Field(min_length=1, max_length=8192)


QUERY_PAGE = 100


def _query(ctx: DashboardContext, text: str) -> dict[str, Any]:
    compiled, statement = compile_page(text, ctx.store.dialect_name, QUERY_PAGE, None)
    page = compiled.page(ctx.store.run_select(statement))
    return {"items": page.items, "itemType": compiled.item_type, "more": bool(page.continuation)}


class ActionIn(BaseModel):
    """Why the operator revoked or disabled the device."""

    model_config = ConfigDict(extra="ignore")
    reason: str = Field(default="by operator (dashboard)", min_length=1, max_length=512)


def _ts(value: dt.datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


def _static(name: str) -> Response:
    if name not in _STATIC:
        raise HTTPException(404, "no such file")
    body = resources.files("certhub.dashboard").joinpath("static", name).read_bytes()
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return Response(body, media_type=_STATIC[name], headers=headers)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _ca_json(snapshot: FleetSnapshot) -> list[dict[str, Any]]:
    out = []
    for ca in sorted(snapshot.cas, key=lambda c: c.not_after):
        left = ca.not_after - snapshot.taken_at
        level = "critical" if left < _CA_CRITICAL else "warning" if left < _CA_WARN else "ok"
        out.append(
            {
                "name": ca.name,
                "kind": ca.kind,
                "state": ca.state,
                "notAfter": _ts(ca.not_after),
                "secondsLeft": left.total_seconds(),
                "level": level if ca.state != "retired" else "ok",
            }
        )
    return out


def overview_json(snapshot: FleetSnapshot) -> dict[str, Any]:
    """``GET /dashboard/api/overview``."""
    return {
        "takenAt": _ts(snapshot.taken_at),
        "development": snapshot.development,
        "total": snapshot.total,
        "connected": snapshot.connected,
        "counts": snapshot.counts,
        "timeline": snapshot.timeline,
        "cas": _ca_json(snapshot),
    }


def _at_risk(ctx: DashboardContext, search: str, limit: int) -> list[AtRiskDevice]:
    """A search, or a longer page, of the at-risk list from the store (``… LIMIT``)."""
    now = ctx.clock.now()
    return ctx.store.list_at_risk(now=now, rule=ctx.rule, search=search, limit=limit)


def _device_detail(ctx: DashboardContext, device_id: str) -> dict[str, Any] | None:
    store, now = ctx.store, ctx.clock.now()
    found = store.list_device_lifecycles(now=now, rule=ctx.rule, device_id=device_id, limit=1)
    record = store.get_device(device_id)
    if not found or record is None:
        return None
    certs = store.list_certificate_inventory(now=now, rule=ctx.rule, device_id=device_id)
    certs.sort(key=lambda c: c.certificate.created_at, reverse=True)
    try:
        twin: dict[str, Any] | None = service_twin(store, device_id)
    except DeviceNotFound:
        twin = None
    return {
        **lifecycle_json(found[0]),
        "authType": record.auth_type,
        "policy": record.policy_name,
        "lastActivityAt": _ts(record.last_activity_at),
        "connectionStateUpdatedAt": _ts(record.connection_state_updated_at),
        "certificates": [certificate_json(c) for c in certs],
        "twin": twin,
        "audit": [audit_json(a) for a in store.list_audit("device", device_id, 50)],
    }


def _disable(ctx: DashboardContext, device_id: str, reason: str) -> dict[str, Any]:
    now = ctx.clock.now()
    with ctx.store.transaction() as conn:
        device = ctx.store.get_device(device_id, conn=conn)
        if device is None:
            raise StoreNotFound("device", device_id)
        if device.status != "disabled":
            changed = dataclasses.replace(device, status="disabled", status_reason=reason[:128])
            device = ctx.store.update_device(changed, None, now=now, conn=conn)
            event = AuditEvent(
                at=now,
                actor="dashboard",
                action="device.disable",
                subject_type="device",
                subject_id=device_id,
                reason=reason,
            )
            ctx.store.append_audit(event, conn=conn)
    return {"deviceId": device_id, "status": device.status}


def _revoke(ctx: DashboardContext, device_id: str, reason: str) -> dict[str, Any]:
    device, serials = ctx.store.revoke_device(
        device_id, ctx.rng.token_bytes(32), now=ctx.clock.now(), actor="dashboard", reason=reason
    )
    return {"deviceId": device_id, "status": device.status, "revokedSerials": serials}


class _Keys:
    """The service policies' keys, re-read at most every few seconds."""

    def __init__(self, ctx: DashboardContext, max_age: float = 5.0) -> None:
        self._ctx = ctx
        self._keys: Mapping[str, Mapping[str, str]] = {}
        self._at: float | None = None
        self._max_age = max_age

    async def get(self) -> Mapping[str, Mapping[str, str]]:
        now = self._ctx.clock.now().timestamp()
        if self._at is None or now - self._at > self._max_age:
            self._keys = await self._ctx.run(service_keys, self._ctx.store)
            self._at = now
        return self._keys


def dashboard_router(ctx: DashboardContext) -> APIRouter:
    """The dashboard's page and JSON routes (see the module docstring)."""
    router = APIRouter(prefix=DASHBOARD_PATH, include_in_schema=False)
    keys = _Keys(ctx)

    async def is_open(request: Request) -> bool:
        if not (ctx.open_on_loopback and is_loopback(ctx.bind)):
            return False
        client = request.client.host if request.client else None
        development = await ctx.run(ctx.store.get_setting, "development") == "1"
        return development and is_loopback(client)

    async def allowed(request: Request) -> None:
        if await is_open(request) or token_matches(_bearer(request), await keys.get()):
            return
        raise HTTPException(401, "dashboard token required", {"WWW-Authenticate": "Bearer"})

    need = [Depends(allowed)]

    async def snapshot() -> FleetSnapshot:
        result: FleetSnapshot = await ctx.run(ctx.cache.get)
        return result

    @router.get("")
    async def page_redirect() -> RedirectResponse:
        return RedirectResponse(f"{DASHBOARD_PATH}/", status_code=307)

    @router.get("/")
    async def page() -> Response:
        return _static("index.html")

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        return _static(name)

    @router.get("/api/session")
    async def session(request: Request) -> JSONResponse:
        development = await ctx.run(ctx.store.get_setting, "development") == "1"
        return JSONResponse(
            {
                "loginRequired": not await is_open(request),
                "development": development,
                "node": ctx.node,
            }
        )

    @router.get("/api/overview", dependencies=need)
    async def overview() -> JSONResponse:
        return JSONResponse(overview_json(await snapshot()))

    @router.get("/api/devices", dependencies=need)
    async def devices(
        search: str = Query("", max_length=128), limit: int = Query(50, ge=1, le=AT_RISK_LIMIT)
    ) -> JSONResponse:
        snap = await snapshot()
        if search.strip() or limit > AT_RISK_KEPT:
            rows: list[AtRiskDevice] = await ctx.run(_at_risk, ctx, search, limit)
        else:
            rows = snap.at_risk[:limit]
        items = [{**lifecycle_json(r.device), "renewAfter": _ts(r.renew_after)} for r in rows]
        return JSONResponse({"items": items, "takenAt": _ts(snap.taken_at)})

    @router.get("/api/devices/{id}", dependencies=need)
    async def device(id: str = DeviceIdPath) -> JSONResponse:
        detail = await ctx.run(_device_detail, ctx, id)
        if detail is None:
            raise HTTPException(404, f"device {id!r} not found")
        return JSONResponse(detail)

    async def act(fn: Callable[..., dict[str, Any]], device_id: str, reason: str) -> JSONResponse:
        try:
            result = await ctx.run(fn, ctx, device_id, reason)
        except StoreNotFound as exc:
            raise HTTPException(404, f"device {device_id!r} not found") from exc
        ctx.cache.invalidate()
        return JSONResponse(result)

    @router.post("/api/devices/{id}/revoke", dependencies=need)
    async def revoke(id: str = DeviceIdPath, body: ActionIn = Body(...)) -> JSONResponse:
        return await act(_revoke, id, body.reason)

    @router.post("/api/devices/{id}/disable", dependencies=need)
    async def disable(id: str = DeviceIdPath, body: ActionIn = Body(...)) -> JSONResponse:
        return await act(_disable, id, body.reason)

    @router.post("/api/query", dependencies=need)
    async def query(body: QueryText = Body(...)) -> JSONResponse:
        try:
            result = await ctx.run(_query, ctx, body.query)
        except BadRequest as exc:
            return JSONResponse({"detail": str(exc), "reason": exc.reason}, status_code=400)
        return JSONResponse(result)

    return router
