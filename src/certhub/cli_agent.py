"""``certhub agent``: the device agent as a command (daemon, or ``--once``).

Exit codes (docs/agent.md): 0 done / stopped, 1 unexpected error, 2 invalid
configuration, 3 the device must be re-onboarded, 4 the device is disabled (``--once``),
75 temporary failure, try again later (``--once``). SIGINT and SIGTERM stop the daemon
cleanly (the connection is closed; the state directory is always consistent).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click

from certhub.agent import (
    Agent,
    ConfigError,
    ExitCode,
    KeyStoreError,
    configure_logging,
    load_config,
)
from certhub.agent.hooks import crash_hook_from_env

__all__ = ["agent", "register"]


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Agent configuration (TOML).",
)
@click.option("--once", is_flag=True, help="Provision or renew if due, then exit.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log format (default: the configuration's [log] format).",
)
def agent(config_path: Path, once: bool, log_format: str | None) -> None:
    """Run the device agent: onboard through DPS, connect, keep the certificate fresh."""

    try:
        config = load_config(config_path)
        checkpoint = crash_hook_from_env()
    except ConfigError as exc:
        click.echo(f"error: invalid configuration: {exc.message}", err=True)
        sys.exit(ExitCode.CONFIG)
    configure_logging(log_format or config.log.format, config.log.level)
    try:
        code = asyncio.run(_run(Agent(config, checkpoint=checkpoint), once))
    except Exception as exc:  # the boundary: a bug, reported and mapped to exit 1
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(ExitCode.ERROR)
    if code == ExitCode.REONBOARD:
        click.echo(
            "error: the device has no usable certificate and no usable onboarding credential; "
            "it must be re-onboarded",
            err=True,
        )
    sys.exit(int(code))


async def _run(instance: Agent, once: bool) -> int:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, instance.stop)
    try:
        return int(await (instance.run_once() if once else instance.run()))
    except KeyStoreError as exc:
        click.echo(f"error: state directory: {exc.message}", err=True)
        return 1


def register(cli: click.Group) -> None:
    """Add the ``agent`` command to the ``certhub`` group."""
    cli.add_command(agent)
