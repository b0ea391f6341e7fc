"""Fixtures for the agent's unit tests: virtual time, the fake server, agents."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_support import Steps, make_config
from fakeserver import FakeServer, FakeTime, FakeTransport

from certhub.agent import Agent, AgentConfig
from certhub.rand import SeededRandom


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def server(time: FakeTime) -> FakeServer:
    return FakeServer(time)


@pytest.fixture
def agent_factory(
    tmp_path: Path, time: FakeTime, server: FakeServer
) -> Callable[..., tuple[Agent, Steps]]:
    """Agents for ``dev-1`` on the fake server, in virtual time, with a step recorder."""

    def factory(
        config: AgentConfig | None = None, seed: int = 1, **changes: Any
    ) -> tuple[Agent, Steps]:
        steps = Steps()
        agent = Agent(
            config or make_config(tmp_path, **changes),
            transport=FakeTransport(server),
            clock=time,
            rng=SeededRandom(seed),
            sleeper=time,
            checkpoint=steps,
            logger=logging.getLogger("certhub.agent.test"),
        )
        steps.agent = agent
        return agent, steps

    return factory
