"""A fleet of simulated devices: many :class:`certhub.agent.Agent` on one event loop.

Each device is a real agent (its own key store under ``state_root/<device id>``) that
provisions through DPS with a CSR, connects, reports its certificate in the twin and
renews before expiry. All agents share one :class:`~certhub.agent.TlsTransport` and the
loop; no thread per device. Devices start gradually (``ramp`` per second) so the server
is not flooded; ``dps_share`` of them renew through DPS instead of the hub.

Why the start is also bounded by ``max_provisioning`` (devices started but not yet
provisioned): a renewal falls due a fixed share of a certificate's validity after its
issue, so the fleet renews the way it was provisioned. Started faster than DPS can
sign, devices queue, the backlog clears in a burst, and the whole fleet then falls due
together every period. Bounding what is in flight makes the start follow DPS's pace
(Little's law: rate = in flight / provisioning time), so issue times — and every later
renewal — stay spread out. The agents then renew at a uniformly random point of the
server's renewal window (or at 80 % ± 5 % of the validity without one), which keeps
them spread.

::

    target = Target(host="127.0.0.1", port=8883, hub_host="localhost", id_scope=…,
                    group_key=…, trust_anchor=Path(…), backdate=10.0)
    fleet = Fleet(target, FleetSpec(devices=20), state_root=tmp)
    with stats.installed():
        await fleet.run(duration=75.0, stop=stop_event)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certhub.agent import Agent, AgentConfig, ExitCode, TlsTransport, parse_config
from certhub.sim.errors import SetupError

__all__ = ["Fleet", "FleetSpec", "Target", "device_ids"]

_PACE_POLL = 0.05  # seconds between looks at the provisioning count while paced


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where the fleet connects and how it onboards (an enrollment group key)."""

    host: str
    port: int
    hub_host: str
    id_scope: str
    group_key: str
    trust_anchor: Path
    backdate: float
    """Seconds the target policy backdates notBefore (the agents schedule from it)."""


@dataclass(frozen=True, kw_only=True)
class FleetSpec:
    """The fleet's shape and the agents' pacing."""

    devices: int
    prefix: str = "sim"
    ramp: float = 50.0
    """Devices started per second (at most)."""
    max_provisioning: int | None = 40
    """Devices started but not yet provisioned, at most (None: no bound)."""
    stall_seconds: float = 30.0
    """Start the next device anyway after waiting this long for one to provision."""
    dps_share: float = 0.0
    """Share of the devices that renew through DPS (the rest through the hub)."""
    retry_initial: str = "1s"
    retry_max: str = "10s"
    disabled_retry: str = "10s"
    request_timeout: str = "30s"


def device_ids(spec: FleetSpec) -> list[str]:
    """The device (registration) ids of the fleet, in start order."""
    width = max(4, len(str(spec.devices)))
    return [f"{spec.prefix}-{i:0{width}d}" for i in range(spec.devices)]


def _uses_dps(index: int, spec: FleetSpec) -> bool:
    """Spread the DPS renewers evenly over the fleet (``dps_share`` of them)."""
    share = spec.dps_share
    return share > 0 and math.floor((index + 1) * share) > math.floor(index * share)


class Fleet:
    """Runs the agents of ``spec`` against ``target``; see the module docstring."""

    def __init__(self, target: Target, spec: FleetSpec, *, state_root: Path) -> None:
        self.target = target
        self.spec = spec
        self.state_root = state_root
        self.ids = device_ids(spec)
        self.transport = TlsTransport(target.trust_anchor)
        self.agents: dict[str, Agent] = {}
        self.tasks: dict[str, asyncio.Task[ExitCode]] = {}
        self.on_start: Callable[[str], None] = lambda _device: None
        self.provisioned: Callable[[], int] = lambda: len(self.agents)
        """How many devices have provisioned (set by the runner from its statistics)."""

    def config(self, index: int, device_id: str) -> AgentConfig:
        """The agent configuration of one device."""
        t, spec = self.target, self.spec
        data: dict[str, Any] = {
            # absolute: the agent resolves relative paths against its state directory
            "trust_anchor": str(t.trust_anchor.resolve()),
            "state_dir": str((self.state_root / device_id).resolve()),
            "dps": {
                "host": t.host,
                "port": t.port,
                "id_scope": t.id_scope,
                "registration_id": device_id,
            },
            "onboarding": {"group_key": t.group_key},
            "hub": {"port": t.port, "address": t.host},
            "renewal": {
                "method": "dps" if _uses_dps(index, spec) else "hub",
                "retry_initial": spec.retry_initial,
                "retry_max": spec.retry_max,
                "disabled_retry": spec.disabled_retry,
                "request_timeout": spec.request_timeout,
            },
            "clock": {"server_backdate": f"{t.backdate:g}s"},
        }
        return parse_config(data, base_dir=self.state_root)

    async def run(
        self,
        *,
        duration: float,
        stop: asyncio.Event,
        tick: Callable[[], Awaitable[None]] | None = None,
        tick_interval: float = 0.5,
    ) -> None:
        """Start the devices gradually, run until ``duration`` seconds passed (counted
        from the first start) or ``stop`` is set, then stop every agent cleanly.
        ``tick`` is awaited every ``tick_interval`` seconds (progress, scripted actions)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration
        starter = asyncio.create_task(self._start_all(stop))
        try:
            while not stop.is_set() and loop.time() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), min(tick_interval, max(deadline - loop.time(), 0.0))
                    )
                if tick is not None:
                    await tick()
                if starter.done() and not starter.cancelled() and starter.exception():
                    raise SetupError("start-devices", str(starter.exception()))
        finally:
            starter.cancel()
            await asyncio.gather(starter, return_exceptions=True)
            await self.stop_all()

    async def _start_all(self, stop: asyncio.Event) -> None:
        interval = 1.0 / self.spec.ramp if self.spec.ramp > 0 else 0.0
        loop = asyncio.get_running_loop()
        began = loop.time()
        for index, device_id in enumerate(self.ids):
            await self._room_to_start(index, stop)
            if stop.is_set():
                return
            self.state_root.joinpath(device_id).mkdir(parents=True, exist_ok=True)
            agent = Agent(self.config(index, device_id), transport=self.transport, lock_state=False)
            self.agents[device_id] = agent
            self.tasks[device_id] = asyncio.create_task(agent.run(), name=device_id)
            self.on_start(device_id)
            delay = began + (index + 1) * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _room_to_start(self, started: int, stop: asyncio.Event) -> None:
        """Wait until fewer than ``max_provisioning`` devices are provisioning (or the
        wait stalled for ``stall_seconds``, or ``stop`` is set)."""
        cap = self.spec.max_provisioning
        if cap is None:
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.spec.stall_seconds
        while started - self.provisioned() >= cap and loop.time() < give_up:
            if stop.is_set():
                return
            await asyncio.sleep(_PACE_POLL)

    async def stop_all(self, timeout: float = 30.0) -> dict[str, ExitCode | None]:
        """Stop every agent and wait for it (None: it did not end in time or failed)."""
        for agent in self.agents.values():
            agent.stop()
        if not self.tasks:
            return {}
        done, pending = await asyncio.wait(self.tasks.values(), timeout=timeout)
        for task in pending:
            task.cancel()
        results: dict[str, ExitCode | None] = {}
        for device_id, task in self.tasks.items():
            ok = task in done and not task.cancelled() and task.exception() is None
            results[device_id] = task.result() if ok else None
        return results
