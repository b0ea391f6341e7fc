"""certhub's fleet dashboard (``/dashboard``) and ``/metrics``, served by the HTTPS side.

* :mod:`.fleet` — :func:`take_snapshot` (the fleet aggregated by the store, the admin
  API's lifecycle rules) and :class:`SnapshotCache` shared by the page and the metrics.
* :mod:`.reference` — the same figures computed in Python from every device's row:
  the specification the store's aggregates are tested against (not served).
* :mod:`.auth` — the dashboard token derived from the ``iothubowner`` key; open
  without login only on loopback in the development profile.
* :mod:`.routes` — the page (static HTML/JS/CSS in ``static/``, no build step, no CDN)
  and its JSON routes, including revoke and disable.
* :func:`http_routers` — what :class:`certhub.app.Server` mounts.
"""

from certhub.dashboard.auth import dashboard_token, is_loopback, token_matches
from certhub.dashboard.fleet import FleetSnapshot, SnapshotCache, take_snapshot
from certhub.dashboard.routes import DASHBOARD_PATH, DashboardContext, dashboard_router
from certhub.dashboard.wiring import http_routers

__all__ = [
    "DASHBOARD_PATH",
    "DashboardContext",
    "FleetSnapshot",
    "SnapshotCache",
    "dashboard_router",
    "dashboard_token",
    "http_routers",
    "is_loopback",
    "take_snapshot",
    "token_matches",
]
