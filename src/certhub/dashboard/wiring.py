"""Joins the dashboard and ``/metrics`` to a running :class:`certhub.app.Server`."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from fastapi import APIRouter

from certhub.dashboard.fleet import FleetSnapshot, SnapshotCache, take_snapshot
from certhub.dashboard.routes import DashboardContext, dashboard_router
from certhub.metrics import FleetCollector, metrics_router, node_name
from certhub.registry._service import LifecycleRule

if TYPE_CHECKING:
    from certhub.app import Server

__all__ = ["http_routers"]


def http_routers(server: Server, *, rule: LifecycleRule | None = None) -> list[APIRouter]:
    """The dashboard's router and ``GET /metrics``, sharing one fleet snapshot cache."""
    rule = rule or LifecycleRule()
    config = server.config
    store, clock = server.store, server.clock

    cache = SnapshotCache(functools.partial(_take, server, rule))
    node = node_name(getattr(config, "node_name", None))
    context = DashboardContext(
        store=store,
        run=server.run,
        clock=clock,
        rng=server.rng,
        cache=cache,
        bind=config.bind,
        node=node,
        namespace=config.namespace,
        rule=rule,
    )
    collector = FleetCollector(lambda: cache.get().figures(), node)
    return [dashboard_router(context), metrics_router(collector, server.run)]


def _take(server: Server, rule: LifecycleRule, horizon_hint: float | None) -> FleetSnapshot:
    return take_snapshot(
        server.store,
        server.clock.now(),
        namespace=server.config.namespace,
        rule=rule,
        horizon_hint=horizon_hint,
    )
