"""``certhub demo``: a server, a fleet on short certificates, revocations and disables.

:func:`run_demo` initialises (or reuses) a data directory in the development profile,
creates a short development policy and an enrollment group, starts the server
in-process (:class:`~certhub.sim.target.EmbeddedServer`, with its HTTPS side), prints the
connection facts (including the dashboard's URL and token),
runs the fleet, and on the way revokes a few devices (they recover through DPS) and
disables a few (they stay out). It returns a :class:`DemoOutcome`; the summary says
whether every path was handled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from certhub.bootstrap import InitResult
from certhub.rand import SystemRandom
from certhub.sim.display import summary_table
from certhub.sim.fleet import Fleet, FleetSpec, Target
from certhub.sim.runner import RunResult, run_fleet, sigint_sets
from certhub.sim.stats import FleetStats
from certhub.sim.target import (
    EmbeddedServer,
    dashboard_login,
    disable_device,
    enable_device,
    prepare_target,
    revoke_device,
)

__all__ = ["DemoOptions", "DemoOutcome", "run_demo"]


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    """What ``certhub demo`` runs."""

    data_dir: Path
    database_url: str | None = None
    devices: int = 200
    duration: float = 300.0
    validity: float = 120.0
    backdate: float = 10.0
    port: int = 8883
    https_port: int = 8443
    """HTTPS side (service API, dashboard, ``/metrics``); 0 picks a free port."""
    revoke: int = 3
    disable: int = 3
    ramp: float = 50.0
    dps_share: float = 0.1
    keep_serving: bool = False
    live: bool = True


@dataclass
class DemoOutcome:
    """What happened: the fleet run and the devices revoked/disabled on the way."""

    result: RunResult
    revoked: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)

    def recovered(self) -> list[str]:
        """Revoked devices that got a new certificate through DPS afterwards."""
        devices = self.result.stats.devices
        return [d for d in self.revoked if devices[d].recoveries >= 1]

    def kept_out(self) -> list[str]:
        """Disabled devices that the server kept out (refused and not connected)."""
        devices = self.result.stats.devices
        return [
            d for d in self.disabled if devices[d].disabled_events >= 1 and not devices[d].connected
        ]

    @property
    def ok(self) -> bool:
        """No expiries, every revoked device recovered, every disabled one kept out."""
        figures = self.result.figures()
        return (
            figures["expiries"] == 0
            and len(self.recovered()) == len(self.revoked)
            and len(self.kept_out()) == len(self.disabled)
        )

    def summary_rows(self) -> dict[str, str]:
        """Extra rows for the summary table."""
        return {
            "revoked": f"{len(self.revoked)} devices, {len(self.recovered())} recovered via DPS",
            "disabled": f"{len(self.disabled)} devices, {len(self.kept_out())} kept out",
            "result": "[green]OK[/]" if self.ok else "[red]NOT OK[/]",
        }

    def report(self) -> dict[str, Any]:
        """The JSON report with the demo's revocations and disables."""
        return {
            **self.result.report(),
            "revoked": {"devices": self.revoked, "recovered": self.recovered()},
            "disabled": {"devices": self.disabled, "kept_out": self.kept_out()},
            "ok": self.ok,
        }


def _connection_string(init: InitResult, https_port: int | None) -> str:
    """The iothubowner connection string with the port the server really listens on."""
    if https_port is None:
        return init.service_connection_string
    return re.sub(
        r"^HostName=([^;:]+)(:\d+)?;",
        lambda m: f"HostName={m.group(1)}:{https_port};",
        init.service_connection_string,
    )


def _facts(
    init: InitResult,
    target: Target,
    policy: str,
    dashboard: tuple[str, str] | None = None,
    https_port: int | None = None,
) -> Table:
    table = Table(title="certhub demo — connection facts", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # wrap long values (keys, URLs), never cut them
    table.add_row("data directory", f"{init.data_dir} ({init.database_url})")
    table.add_row("MQTT/TLS (hub + DPS)", f"{target.host}:{target.port}, hub host {init.hub_host}")
    table.add_row("ID scope", init.id_scope)
    table.add_row("enrollment group", f"{policy}-group (key {target.group_key})")
    table.add_row("trust anchor", str(target.trust_anchor))
    table.add_row("service connection string", _connection_string(init, https_port))
    if dashboard is not None:
        url, token = dashboard
        table.add_row("dashboard", f"[bold cyan]{url}[/] (self-signed TLS: trust anchor above)")
        table.add_row(
            "dashboard login",
            f"none needed on this machine (development profile on loopback); token: {token}",
        )
        table.add_row("metrics", url.replace("/dashboard/", "/metrics"))
    return table


class _Script:
    """Revokes and disables chosen devices once they are provisioned."""

    def __init__(
        self, server: EmbeddedServer, fleet: Fleet, outcome_lists: DemoOutcome, o: DemoOptions
    ) -> None:
        self.server = server
        self.fleet = fleet
        self.out = outcome_lists
        self.stats = outcome_lists.result.stats
        k_revoke, k_disable = min(o.revoke, o.devices), min(o.disable, max(o.devices - o.revoke, 0))
        self.to_revoke = fleet.ids[:k_revoke]
        self.to_disable = fleet.ids[k_revoke : k_revoke + k_disable]
        self.revoke_at = 0.35 * o.duration
        self.disable_at = 0.5 * o.duration

    def _ready(self, ids: list[str]) -> bool:
        devices = self.stats.devices
        return all(d in devices and devices[d].provisioned for d in ids)

    async def __call__(self, elapsed: float) -> None:
        now = dt.datetime.now(dt.UTC)
        store = self.server.store
        if not self.out.revoked and elapsed >= self.revoke_at and self._ready(self.to_revoke):
            for device_id in self.to_revoke:
                await asyncio.to_thread(revoke_device, store, device_id, SystemRandom(), now)
            self.out.revoked = list(self.to_revoke)
        if not self.out.disabled and elapsed >= self.disable_at and self._ready(self.to_disable):
            for device_id in self.to_disable:
                await asyncio.to_thread(disable_device, store, device_id, now)
            self.out.disabled = list(self.to_disable)


async def run_demo(options: DemoOptions, console: Console) -> DemoOutcome:
    """Run the demo (see the module docstring); the server stops before this returns."""
    target, init = await asyncio.to_thread(
        prepare_target,
        options.data_dir,
        database_url=options.database_url,
        validity=options.validity,
        backdate=options.backdate,
    )
    server = EmbeddedServer(
        options.data_dir,
        database_url=options.database_url,
        port=options.port,
        https_port=options.https_port,
    )
    await asyncio.to_thread(server.start)
    try:
        target = dataclasses.replace(target, host="127.0.0.1", port=server.address[1])
        policy = f"sim-{options.validity:g}s-bd{options.backdate:g}s"
        https = server.https_address
        login = None if https is None else dashboard_login(server.store, "127.0.0.1", https[1])
        console.print(_facts(init, target, policy, login, None if https is None else https[1]))
        with tempfile.TemporaryDirectory(prefix="certhub-demo-") as tmp:
            outcome = await _run(server, target, options, console, Path(tmp))
        console.print(summary_table(outcome.result.figures(), outcome.summary_rows()))
        if options.keep_serving and not outcome.result.interrupted:
            console.print("[bold]serving[/] until Ctrl-C")
            stop = asyncio.Event()
            with sigint_sets(stop):
                await stop.wait()
        return outcome
    finally:
        await asyncio.to_thread(server.stop)


async def _run(
    server: EmbeddedServer, target: Target, o: DemoOptions, console: Console, root: Path
) -> DemoOutcome:
    spec = FleetSpec(devices=o.devices, prefix="demo", ramp=o.ramp, dps_share=o.dps_share)
    fleet = Fleet(target, spec, state_root=root)
    parameters = {
        "devices": o.devices,
        "duration_seconds": o.duration,
        "validity_seconds": o.validity,
        "backdate_seconds": o.backdate,
        "dps_share": o.dps_share,
    }
    placeholder = RunResult(stats=FleetStats(), elapsed=0.0, interrupted=False)
    outcome = DemoOutcome(result=placeholder)
    script = _Script(server, fleet, outcome, o)
    now = dt.datetime.now(dt.UTC)
    for device_id in script.to_disable:  # disabled by an earlier demo on this data dir
        await asyncio.to_thread(enable_device, server.store, device_id, now)
    result = await run_fleet(
        fleet,
        duration=o.duration,
        console=console,
        live=o.live,
        actions=script,
        exclude=lambda: frozenset(outcome.disabled),
        parameters=parameters,
        stats=outcome.result.stats,
    )
    outcome.result = result
    return outcome
