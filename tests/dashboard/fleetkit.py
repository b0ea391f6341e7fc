"""A server on loopback with a small fleet in every lifecycle state, and HTTPS helpers.

:func:`fleet_server` runs :func:`serverkit.running_server` with the HTTPS side and creates
17 devices under a 2-hour development policy: certificates issued now (healthy), or
with a clock far enough in the past to be renewal-due, overdue or expired, plus revoked,
disabled and certificate-less devices. Two-hour certificates keep every state stable
for minutes, so the page and the admin API can be compared at leisure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from certhub.bootstrap import service_keys
from certhub.dashboard import dashboard_token
from certhub.rand import SystemRandom
from certhub.sas import generate_sas_token
from serverkit import (
    RunningServer,
    create_device,
    create_policy,
    device_with_certificate,
    past_clock,
    running_server,
)

__all__ = ["EXPECTED", "Fleet", "admin_counts", "fleet_server"]

#: (device count, seconds in the past the certificate was issued) per intended state.
_ISSUED = {
    "healthy": (6, 0.0),
    "renewal-due": (3, 5800.0),
    "overdue": (2, 6700.0),
    "expired": (2, 7400.0),
}
EXPECTED = {
    "healthy": 6,
    "renewal-due": 3,
    "overdue": 2,
    "expired": 2,
    "revoked": 2,
    "disabled": 1,
    "no-certificate": 1,
}


@dataclass
class Fleet:
    """A running server with the fleet, and clients for its HTTPS side."""

    running: RunningServer
    base_url: str
    owner_key: str

    @property
    def token(self) -> str:
        """The dashboard token of the owner policy's primary key."""
        return dashboard_token(self.owner_key)

    def client(self, **headers: str) -> httpx.Client:
        """An HTTPS client of the server (the test trusts its self-signed certificate)."""
        return httpx.Client(base_url=self.base_url, verify=False, headers=headers, timeout=10)

    def admin(self) -> httpx.Client:
        """A client carrying an ``iothubowner`` SAS token for the service and admin API."""
        port = self.running.server.https_port
        resource = f"{self.running.hub_host}:{port}"
        token = generate_sas_token(resource, self.owner_key, int(time.time()) + 3600, "iothubowner")
        return self.client(Authorization=token)


def _populate(running: RunningServer, directory: Path) -> None:
    create_policy(running, "short", "2h")
    index = 0
    for state, (count, past) in _ISSUED.items():
        for _ in range(count):
            clock = past_clock(past) if past else None
            device_with_certificate(
                running, f"dev-{index:02d}-{state}", directory, policy="short", clock=clock
            )
            index += 1
    store, now = running.store, past_clock(0).now()
    for name in ("revoked-a", "revoked-b"):
        device_with_certificate(running, name, directory, policy="short")
        store.revoke_device(
            name, SystemRandom().token_bytes(32), now=now, actor="tests", reason="test"
        )
    device_with_certificate(running, "off-01", directory, policy="short")
    import dataclasses

    device = store.get_device("off-01")
    assert device is not None
    store.update_device(dataclasses.replace(device, status="disabled"), None, now=now)
    create_device(store, "bare-01", policy_name="short")


@contextmanager
def fleet_server(root: Path, *, development: bool = True, populate: bool = True) -> Iterator[Fleet]:
    """A server (HTTPS on a free port) with the fleet described in the module docstring."""
    with running_server(root / "data", development=development, https_port=0) as running:
        if populate:
            _populate(running, root / "pems")
        key = service_keys(running.store)["iothubowner"]["primaryKey"]
        yield Fleet(running, f"https://127.0.0.1:{running.server.https_port}", key)


def admin_counts(fleet: Fleet) -> dict[str, int]:
    """Devices per lifecycle as ``GET /certhub/v1/devices`` pages them."""
    counts: dict[str, int] = {}
    with fleet.admin() as client:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/certhub/v1/devices", params=params)
            page.raise_for_status()
            body = page.json()
            for item in body["items"]:
                counts[item["lifecycle"]] = counts.get(item["lifecycle"], 0) + 1
            cursor = body["next"]
            if not cursor:
                return counts
