"""The ``certhub`` command line.

Commands that work on a data directory (``init``, ``serve``, ``policy``,
``enrollment``) take ``--data-dir`` (env ``CERTHUB_DATA_DIR``, default
``./certhub-data``) and optionally ``--database`` (env ``CERTHUB_DATABASE``) to use
PostgreSQL instead of the embedded SQLite file. Every listing command has ``--json``.
Invalid values exit with status 2 and a message naming the problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from certhub import __version__, cli_admin, cli_agent, cli_audit, cli_ops, cli_serve, cli_sim
from certhub.cli_common import (
    console,
    data_options,
    emit_json,
    json_option,
    warn_development,
)

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="certhub")
def cli() -> None:
    """certhub — the whole life of IoT device certificates, Azure IoT Hub compatible."""


# -- init -------------------------------------------------------------------------


def _print_init(result: Any) -> None:
    if result.development:
        warn_development()
    verb = "initialised" if result.created else "reusing"
    console.print(f"[bold]certhub[/] {verb} [cyan]{result.data_dir}[/] ({result.database_url})")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("[bold]Devices[/]", "")
    table.add_row("  hub host", f"{result.hub_host} (MQTT/TLS port {result.mqtt_port})")
    table.add_row("  DPS", f"{result.hub_host}:{result.mqtt_port}, ID scope {result.id_scope}")
    table.add_row("  enrollment group", result.enrollment_group)
    table.add_row("  group key", result.group_primary_key)
    table.add_row("  trust anchor", result.trust_anchor)
    table.add_row("[bold]Operators[/]", "")
    table.add_row("  connection string", result.service_connection_string)
    table.add_row("  HTTPS port", str(result.https_port))
    console.print(table)


@cli.command()
@data_options
@click.option("--host", "hosts", multiple=True, help="Host name the endpoints answer to (repeat).")
@click.option("--dev", is_flag=True, help="Enable the development profile (short validities).")
@click.option("--mqtt-port", type=click.IntRange(1, 65535), help="MQTT/TLS port devices use.")
@click.option("--https-port", type=click.IntRange(1, 65535), help="HTTPS port (service API, DPS).")
@json_option
def init(
    data_dir: Path,
    database: str | None,
    hosts: tuple[str, ...],
    dev: bool,
    mqtt_port: int | None,
    https_port: int | None,
    as_json: bool,
) -> None:
    """Create (or reuse) a data directory and print what devices and operators need.

    ``--mqtt-port`` / ``--https-port`` record the ports the server will listen on, so the
    printed connection string and DPS address are the ones to use; ``certhub serve`` takes
    its own ``--port`` / ``--https-port`` and should be given the same values.
    """
    from certhub.bootstrap import initialize

    result = initialize(
        data_dir,
        database_url=database,
        hosts=hosts,
        development=dev,
        mqtt_port=mqtt_port,
        https_port=https_port,
    )
    if as_json:
        emit_json(result.as_dict())
    else:
        _print_init(result)


cli_admin.register(cli)
cli_serve.register(cli)
cli_agent.register(cli)
cli_sim.register(cli)
cli_ops.register(cli)
cli_audit.register(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``certhub`` console script."""
    cli.main(args=argv, prog_name="certhub")


if __name__ == "__main__":  # pragma: no cover
    main()
