"""Helpers shared by the command-line modules: options, output, errors, store access."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

__all__ = [
    "Refused",
    "console",
    "data_options",
    "emit_json",
    "err_console",
    "json_option",
    "open_authority",
    "warn_development",
]

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
err_console = Console(stderr=True)


def data_options(fn: F) -> F:
    fn = click.option(
        "--database",
        envvar="CERTHUB_DATABASE",
        default=None,
        help="Store URL (postgresql://…); default: SQLite in the data directory.",
    )(fn)
    fn = click.option(
        "--data-dir",
        envvar="CERTHUB_DATA_DIR",
        default="./certhub-data",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Data directory (keys, TLS files, SQLite store).",
    )(fn)
    return fn


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


class Refused(click.ClickException):
    """A refused value: printed as ``error: …`` with exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        err_console.print(f"[bold red]error:[/] {self.message}", highlight=False)


def warn_development() -> None:
    err_console.print(
        "[bold yellow on red] DEVELOPMENT PROFILE [/] certificate validities down to 60 s "
        "are allowed. Never use this profile in production.",
        highlight=False,
    )


# -- admin context ----------------------------------------------------------------


@contextmanager
def open_authority(data_dir: Path, database: str | None) -> Iterator[Any]:
    """Open the store of an initialised data directory and its authority service."""
    from certhub.authority import CertificateAuthorityService
    from certhub.clock import SystemClock
    from certhub.datadir import DataDir
    from certhub.rand import SystemRandom
    from certhub.registry import Store

    dd = DataDir(data_dir)
    url = database or dd.database_url
    if database is None and not dd.database_path.exists():
        raise Refused(f"{data_dir} is not initialised; run `certhub init --data-dir {data_dir}`")
    rng = SystemRandom()
    with Store.open(url) as store:
        if store.get_namespace("default") is None:
            raise Refused("the store is not initialised; run `certhub init`")
        yield CertificateAuthorityService(
            store, clock=SystemClock(), rng=rng, passphrase=dd.passphrase(rng)
        )
