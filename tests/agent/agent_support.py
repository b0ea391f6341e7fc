"""Helpers shared by the agent's unit tests: configs, a checkpoint recorder, runners."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from fakeserver import GROUP_KEY, ID_SCOPE, FakeServer

from certhub.agent import (
    Agent,
    AgentConfig,
    DpsConfig,
    HubConfig,
    RenewalConfig,
    SymmetricKeyOnboarding,
)
from certhub.agent.config import ClockConfig, Onboarding
from certhub.sas import derive_device_key

DEVICE = "dev-1"
T = TypeVar("T")


def run(server: FakeServer, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` in a fresh event loop; close the fake server's tasks afterwards."""

    async def main() -> T:
        try:
            return await coro
        finally:
            await server.close()

    return asyncio.run(main())


def make_config(tmp_path: Path, **changes: Any) -> AgentConfig:
    """A config for ``dev-1`` with the fake server's group-derived key."""
    anchor = tmp_path / "anchor.pem"
    anchor.write_text("unused by the fake transport\n")
    onboarding: Onboarding | None = SymmetricKeyOnboarding(
        device_key=derive_device_key(GROUP_KEY, DEVICE), derived=True
    )
    config = AgentConfig(
        dps=DpsConfig(host="dps.test", id_scope=ID_SCOPE, registration_id=DEVICE),
        onboarding=onboarding,
        trust_anchor=anchor,
        state_dir=tmp_path / "state",
        hub=HubConfig(keepalive=0),
        renewal=RenewalConfig(jitter=0.0, retry_initial=1.0, retry_max=60.0, request_timeout=5.0),
        clock=ClockConfig(),
    )
    renewal = changes.pop("renewal", None)
    if renewal is not None:
        config = dataclasses.replace(config, renewal=dataclasses.replace(config.renewal, **renewal))
    return dataclasses.replace(config, **changes)


class SimulatedCrash(BaseException):
    """Raised at a checkpoint: the agent dies there, with no cleanup of its own."""


class Steps:
    """A checkpoint hook that records steps and can stop the agent or crash it."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.agent: Agent | None = None
        self.stop_when: Callable[[list[str]], bool] | None = None
        self.crash_at: tuple[str, int] | None = None

    def __call__(self, step: str) -> None:
        self.seen.append(step)
        if self.crash_at == (step, self.seen.count(step)):
            raise SimulatedCrash(step)
        if self.stop_when is not None and self.agent is not None and self.stop_when(self.seen):
            self.agent.stop()


async def run_until(agent: Agent, done: Callable[[], bool], timeout: float = 20.0) -> int:
    """Run the daemon until ``done()`` (polled) or it returns; stop it; its exit code."""
    task = asyncio.create_task(agent.run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done() and not done():
        if loop.time() > deadline:
            agent.stop()
            await task
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)
    agent.stop()
    return int(await asyncio.wait_for(task, timeout))
