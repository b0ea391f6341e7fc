"""Run a fleet with a live display, Ctrl-C handling and a final report.

:func:`run_fleet` drives :meth:`Fleet.run` with a :class:`FleetStats` attached to the
agents' logger, redraws the live panel, calls the scripted ``actions`` (the demo's
revocations) on every tick, and returns a :class:`RunResult` whose :meth:`report` is the
JSON report.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live

from certhub.sim.display import live_panel
from certhub.sim.fleet import Fleet
from certhub.sim.stats import FleetStats

__all__ = ["RunResult", "run_fleet", "sigint_sets", "status_line"]

Action = Callable[[float], Awaitable[None]]
_LINE_EVERY = 10.0  # seconds between status lines without the live display


@dataclass
class RunResult:
    """The outcome of a fleet run."""

    stats: FleetStats
    elapsed: float
    interrupted: bool
    parameters: dict[str, Any] = field(default_factory=dict)
    exclude: frozenset[str] = frozenset()

    def figures(self) -> dict[str, Any]:
        """Fleet-wide figures (see :meth:`FleetStats.snapshot`)."""
        return self.stats.snapshot(self.exclude)

    def report(self) -> dict[str, Any]:
        """The JSON report: parameters, figures and per-device counts."""
        return {
            "format": 1,
            "parameters": self.parameters,
            "elapsed_seconds": round(self.elapsed, 1),
            "interrupted": self.interrupted,
            "figures": self.figures(),
            "devices": {
                device_id: {
                    "provisioned": dev.provisioned,
                    "renewals": dev.renewals,
                    "recoveries": dev.recoveries,
                    "expiries": dev.expiries,
                }
                for device_id, dev in sorted(self.stats.devices.items())
            },
        }


def status_line(figures: dict[str, Any], elapsed: float) -> str:
    """One line of progress (for logs, when there is no live display)."""
    lat = figures["renewal_latency_seconds"]
    p99 = "-" if lat["p99"] is None else f"{lat['p99']:.2f}s"
    return (
        f"{elapsed:6.0f}s provisioned {figures['provisioned']}/{figures['devices']} "
        f"connected {figures['connected']} renewals {figures['renewals']} "
        f"(in flight {figures['renewals_in_flight']}) recoveries {figures['recoveries']} "
        f"expiries {figures['expiries']} failures {sum(figures['failures'].values())} "
        f"p99 {p99}"
    )


@contextlib.contextmanager
def sigint_sets(event: asyncio.Event) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``event`` instead of raising (main thread
    of a running loop only; elsewhere this does nothing)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, event.set)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_fleet(
    fleet: Fleet,
    *,
    duration: float,
    console: Console,
    live: bool = True,
    actions: Action | None = None,
    stop: asyncio.Event | None = None,
    exclude: Callable[[], frozenset[str]] = frozenset,
    parameters: dict[str, Any] | None = None,
    stats: FleetStats | None = None,
) -> RunResult:
    """Run ``fleet`` for ``duration`` seconds (or until Ctrl-C / ``stop``)."""
    stop = stop or asyncio.Event()
    stats = stats or FleetStats()
    fleet.on_start = lambda _device: setattr(stats, "started", stats.started + 1)
    fleet.provisioned = lambda: stats.provisioned
    began = time.monotonic()

    def elapsed() -> float:
        return time.monotonic() - began

    with contextlib.ExitStack() as stack:
        stack.enter_context(stats.installed())
        stack.enter_context(sigint_sets(stop))
        view: Live | None = None
        if live:
            view = stack.enter_context(Live(console=console, refresh_per_second=2))

        last_line = [0.0]

        def redraw() -> None:
            if view is not None:
                view.update(live_panel(stats.snapshot(exclude()), elapsed(), duration))
            elif elapsed() - last_line[0] >= _LINE_EVERY:
                last_line[0] = elapsed()
                console.print(status_line(stats.snapshot(exclude()), elapsed()), soft_wrap=True)

        async def tick() -> None:
            if actions is not None:
                await actions(elapsed())
            redraw()

        await fleet.run(duration=duration, stop=stop, tick=tick)
        redraw()
    return RunResult(
        stats=stats,
        elapsed=elapsed(),
        interrupted=stop.is_set(),
        parameters=parameters or {},
        exclude=exclude(),
    )
