"""``certhub simulate`` (a fleet of simulated devices) and ``certhub demo``.

``simulate`` runs N real device agents in one process against a certhub whose data
directory it can reach (it creates a development policy and an enrollment group there);
``demo`` starts a server in-process on a data directory and runs a fleet on it, revoking
and disabling a few devices on the way. Both show live progress, print a summary, and
write an optional JSON report. Ctrl-C stops them cleanly and still prints the summary.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from certhub.cli_common import console, data_options

__all__ = ["Duration", "dashboard_token_command", "demo", "register", "simulate"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class Duration(click.ParamType[float]):
    """Seconds, or ``<n>s|m|h|d`` (``90``, ``120s``, ``10m``); must be positive."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            match = _DURATION.fullmatch(str(value))
            if match is None:
                self.fail(f"{value!r} is not a duration (e.g. 90, 120s, 10m)", param, ctx)
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if seconds <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        return seconds


DURATION = Duration()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    from certhub.app import new_event_loop

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)


def _write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        console.print(f"report written to [cyan]{path}[/]")


def report_options(fn: F) -> F:
    """``--json FILE`` (``json_path``) and ``--no-live`` (``no_live``) of simulate and demo."""
    fn = click.option("--no-live", is_flag=True, help="No live display (logs, CI).")(fn)
    return click.option(
        "--json",
        "json_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Write a JSON report here.",
    )(fn)


@click.command()
@data_options
@click.option("--devices", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option(
    "--validity",
    type=DURATION,
    default="120s",
    show_default=True,
    help="Certificate validity of the simulation policy.",
)
@click.option(
    "--backdate",
    type=DURATION,
    default="10s",
    show_default=True,
    help="How far the simulation policy backdates notBefore.",
)
@click.option("--duration", type=DURATION, default="10m", show_default=True)
@click.option(
    "--ramp",
    type=click.FloatRange(min=0.1),
    default=50.0,
    show_default=True,
    help="Devices started per second (at most).",
)
@click.option(
    "--max-provisioning",
    type=click.IntRange(min=0),
    default=40,
    show_default=True,
    help="Devices provisioning at once, at most: the start follows DPS's pace (0: no bound).",
)
@click.option(
    "--dps-share",
    type=click.FloatRange(0.0, 1.0),
    default=0.1,
    show_default=True,
    help="Share of devices that renew through DPS instead of the hub.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the server listens.")
@click.option("--port", type=int, default=None, help="MQTT/TLS port (default: the data dir's).")
@click.option("--prefix", default="sim", show_default=True, help="Device id prefix.")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the agents keep keys (default: a temporary directory).",
)
@report_options
def simulate(
    data_dir: Path,
    database: str | None,
    devices: int,
    validity: float,
    backdate: float,
    duration: float,
    ramp: float,
    max_provisioning: int,
    dps_share: float,
    host: str,
    port: int | None,
    prefix: str,
    state_dir: Path | None,
    json_path: Path | None,
    no_live: bool,
) -> None:
    """Run a fleet of simulated devices against a running certhub (its data directory)."""
    from certhub.sim import Fleet, FleetSpec, SimError, run_fleet
    from certhub.sim.display import summary_table
    from certhub.sim.target import prepare_target

    if backdate >= validity:
        raise click.BadParameter("must be shorter than --validity", param_hint="--backdate")
    target, _ = prepare_target(
        data_dir,
        database_url=database,
        validity=validity,
        backdate=backdate,
        host=host,
        port=port,
    )
    spec = FleetSpec(
        devices=devices,
        prefix=prefix,
        ramp=ramp,
        dps_share=dps_share,
        max_provisioning=max_provisioning or None,
    )
    parameters = {
        "devices": devices,
        "duration_seconds": duration,
        "validity_seconds": validity,
        "backdate_seconds": backdate,
        "dps_share": dps_share,
        "ramp_per_second": ramp,
        "max_provisioning": max_provisioning,
    }
    with tempfile.TemporaryDirectory(prefix="certhub-sim-") as tmp:
        fleet = Fleet(target, spec, state_root=state_dir or Path(tmp))
        console.print(
            f"[bold]certhub simulate[/]: {devices} devices on {target.host}:{target.port}, "
            f"{validity:g} s certificates, {duration:g} s"
        )
        try:
            result = _run(
                run_fleet(
                    fleet,
                    duration=duration,
                    console=console,
                    live=not no_live,
                    parameters=parameters,
                )
            )
        except KeyboardInterrupt:  # before the loop's own handler was installed
            sys.exit(130)
        except SimError as exc:
            raise click.ClickException(exc.message) from exc
    figures = result.figures()
    console.print(summary_table(figures, {"interrupted": str(result.interrupted).lower()}))
    _write_json(json_path, result.report())
    if figures["expiries"]:
        sys.exit(1)


@click.command()
@data_options
@click.option("--devices", type=click.IntRange(1, 100_000), default=200, show_default=True)
@click.option("--duration", type=DURATION, default="5m", show_default=True)
@click.option("--validity", type=DURATION, default="2m", show_default=True)
@click.option("--backdate", type=DURATION, default="10s", show_default=True)
@click.option(
    "--mqtt-port",
    type=click.IntRange(0, 65535),
    default=8883,
    show_default=True,
    help="0 picks a free port.",
)
@click.option(
    "--https-port",
    type=click.IntRange(0, 65535),
    default=8443,
    show_default=True,
    help="HTTPS side: service API, dashboard, /metrics (0 picks a free port).",
)
@click.option(
    "--revoke",
    type=click.IntRange(0),
    default=3,
    show_default=True,
    help="Devices to revoke on the way (they recover through DPS).",
)
@click.option(
    "--disable",
    type=click.IntRange(0),
    default=3,
    show_default=True,
    help="Devices to disable on the way (they stay out).",
)
@click.option("--keep-serving", is_flag=True, help="Keep the server running afterwards.")
@report_options
def demo(
    data_dir: Path,
    database: str | None,
    devices: int,
    duration: float,
    validity: float,
    backdate: float,
    mqtt_port: int,
    https_port: int,
    revoke: int,
    disable: int,
    keep_serving: bool,
    json_path: Path | None,
    no_live: bool,
) -> None:
    """certhub's main job: a server and a fleet renewing short certificates.

    Starts certhub on the data directory (development profile), runs DEVICES simulated
    devices on a VALIDITY policy for DURATION, revokes and disables a few of them on
    the way, prints the summary and exits (status 1 if something was not handled).
    """
    from certhub.cli_common import warn_development
    from certhub.sim import SimError
    from certhub.sim.demo import DemoOptions, run_demo

    if backdate >= validity:
        raise click.BadParameter("must be shorter than --validity", param_hint="--backdate")
    warn_development()
    options = DemoOptions(
        data_dir=data_dir,
        database_url=database,
        devices=devices,
        duration=duration,
        validity=validity,
        backdate=backdate,
        port=mqtt_port,
        https_port=https_port,
        revoke=revoke,
        disable=disable,
        keep_serving=keep_serving,
        live=not no_live,
    )
    try:
        outcome = _run(run_demo(options, console))
    except KeyboardInterrupt:  # before the loop's own handler was installed
        sys.exit(130)
    except SimError as exc:
        raise click.ClickException(exc.message) from exc
    _write_json(json_path, outcome.report())
    if not outcome.ok and not outcome.result.interrupted:
        sys.exit(1)


@click.command("dashboard-token")
@data_options
@click.option("--secondary", is_flag=True, help="Derive from the secondary owner key.")
def dashboard_token_command(data_dir: Path, database: str | None, secondary: bool) -> None:
    """Print the dashboard's login token (derived from the iothubowner key).

    Rotating that key invalidates the token. From loopback, a development-profile
    server bound to loopback needs no token.
    """
    from certhub.bootstrap import service_keys
    from certhub.dashboard import dashboard_token
    from certhub.datadir import DataDir
    from certhub.registry import Store

    if database is None and not DataDir(data_dir).database_path.exists():
        raise click.BadParameter(f"{data_dir} is not a data directory", param_hint="--data-dir")
    with Store.open(database or DataDir(data_dir).database_url) as store:
        owner = service_keys(store).get("iothubowner", {})
    key = owner.get("secondaryKey" if secondary else "primaryKey")
    if not key:
        raise click.ClickException("the store has no iothubowner key (run certhub init)")
    click.echo(dashboard_token(key))


def register(cli: click.Group) -> None:
    """Add ``simulate``, ``demo`` and ``dashboard-token`` to the ``certhub`` group."""
    cli.add_command(simulate)
    cli.add_command(demo)
    cli.add_command(dashboard_token_command)
