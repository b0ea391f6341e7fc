"""``certhub serve`` and ``certhub demo``."""

from __future__ import annotations

from pathlib import Path

import click

from certhub.cli_common import console, data_options, warn_development

__all__ = ["register"]


@click.command()
@data_options
@click.option("--host", "hosts", multiple=True, help="Host name the endpoints answer to (repeat).")
@click.option("--dev", is_flag=True, help="Enable the development profile.")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--mqtt-port", type=int, default=8883, show_default=True)
def serve(
    data_dir: Path,
    database: str | None,
    hosts: tuple[str, ...],
    dev: bool,
    bind: str,
    mqtt_port: int,
) -> None:
    """Run the server (initialising the data directory when it is new)."""
    from certhub.app import ServerConfig, run_server
    from certhub.bootstrap import initialize

    result = initialize(data_dir, database_url=database, hosts=hosts, development=dev)
    if result.development:
        warn_development()
    config = ServerConfig(data_dir=data_dir, database_url=database, bind=bind, mqtt_port=mqtt_port)
    run_server(config)


@click.command()
@data_options
@click.pass_context
def demo(ctx: click.Context, data_dir: Path, database: str | None) -> None:
    """certhub's main job on the embedded store: initialise, then serve."""
    console.print("[bold]certhub demo[/]: initialising the data directory and starting the server")
    ctx.invoke(
        serve,
        data_dir=data_dir,
        database=database,
        hosts=(),
        dev=True,
        bind="127.0.0.1",
        mqtt_port=8883,
    )


def register(cli: click.Group) -> None:
    cli.add_command(serve)
    cli.add_command(demo)
