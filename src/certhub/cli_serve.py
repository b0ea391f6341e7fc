"""``certhub serve`` (``certhub demo`` lives in :mod:`certhub.cli_sim`)."""

from __future__ import annotations

from pathlib import Path

import click

from certhub.cli_common import data_options, warn_development

__all__ = ["register"]


@click.command()
@data_options
@click.option("--host", "hosts", multiple=True, help="Host name the endpoints answer to (repeat).")
@click.option("--dev", is_flag=True, help="Enable the development profile.")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--mqtt-port", type=int, default=8883, show_default=True)
@click.option("--https-port", type=int, default=8443, show_default=True)
def serve(
    data_dir: Path,
    database: str | None,
    hosts: tuple[str, ...],
    dev: bool,
    bind: str,
    mqtt_port: int,
    https_port: int,
) -> None:
    """Run the server (initialising the data directory when it is new)."""
    from certhub.app import ServerConfig, run_server
    from certhub.bootstrap import initialize

    result = initialize(data_dir, database_url=database, hosts=hosts, development=dev)
    if result.development:
        warn_development()
    config = ServerConfig(
        data_dir=data_dir,
        database_url=database,
        bind=bind,
        mqtt_port=mqtt_port,
        https_port=https_port,
    )
    run_server(config)


def register(cli: click.Group) -> None:
    cli.add_command(serve)
