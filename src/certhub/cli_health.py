"""``certhub device health``: which devices need renewal, are overdue or expired.

Reads the admin API's device lifecycles (``GET /certhub/v1/devices?lifecycle=…``, paged
by device id) of a running server, as the other operator commands do
(:mod:`certhub.cli_ops`: connection string, ``--ca-file``, ``--json``). The lifecycle of a
device is the server's own (healthy, renewal-due, overdue, expired, revoked, disabled,
no-certificate), the same the dashboard and the query language's inventory use.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import click

from certhub.cli_common import console
from certhub.cli_ops import client_for, service_options, show
from certhub.registry._service import DEVICE_LIFECYCLES

__all__ = ["health"]

_PAGE = 500
COLUMNS = ["deviceId", "lifecycle", "status", "connectionState", "serialNumber", "notAfter"]


@click.command("health")
@service_options
@click.option(
    "--lifecycle",
    type=click.Choice(DEVICE_LIFECYCLES),
    help="Only devices in this lifecycle state.",
)
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
def health(
    connection_string: str, ca_file: Path | None, as_json: bool, lifecycle: str | None, limit: int
) -> None:
    """List devices with their certificate lifecycle (all pages up to --limit)."""
    client = client_for(connection_string, ca_file)
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(items) < limit:
        params: dict[str, Any] = {"limit": min(_PAGE, limit - len(items))}
        if lifecycle:
            params["lifecycle"] = lifecycle
        if cursor:
            params["cursor"] = cursor
        page = client.request("GET", "/certhub/v1/devices", params=params).json()
        items += page["items"]
        cursor = page.get("next")
        if not cursor:
            break
    if as_json:
        show(items, True)
        return
    show([_row(d) for d in items], False, COLUMNS)
    counts = Counter(d["lifecycle"] for d in items)
    console.print(", ".join(f"{name} {counts[name]}" for name in DEVICE_LIFECYCLES if counts[name]))


def _row(d: dict[str, Any]) -> dict[str, Any]:
    cert = d.get("certificate") or {}
    return {**d, "serialNumber": cert.get("serialNumber"), "notAfter": cert.get("notAfter")}
