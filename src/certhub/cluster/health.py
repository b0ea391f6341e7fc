"""``/healthz`` (the process answers) and ``/readyz`` (it can serve devices) per node.

A load balancer sends traffic to nodes whose ``/readyz`` answers 200: the listener is
bound, the store answers a query, and the cluster heartbeat has succeeded recently.
Both bodies name the node, so an operator can tell which one answered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

__all__ = ["ReadinessCheck", "health_router"]

ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool]]]
"""Returns named checks (``{"store": True, ...}``); ready when all are true."""


def health_router(node: str, ready: ReadinessCheck) -> APIRouter:
    """Routes ``GET /healthz`` and ``GET /readyz`` for node ``node``."""
    router = APIRouter()

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "node": node}

    @router.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        detail: str | None = None
        try:
            checks = dict(await ready())
        except Exception as exc:  # a failing check means "not ready", never a 500
            checks = {"error": False}
            detail = type(exc).__name__
        ok = all(checks.values())
        body: dict[str, Any] = {"status": "ready" if ok else "unready", "node": node}
        body["checks"] = checks
        if detail is not None:
            body["detail"] = detail
        return JSONResponse(body, status_code=200 if ok else 503)

    return router
