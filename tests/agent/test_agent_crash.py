"""Crash safety: the agent dies at every step of a renewal (and of its first
registration) and the restarted agent still connects with a valid certificate, without
an extra trip through DPS.

In process, the checkpoint hook raises :class:`SimulatedCrash` (a BaseException the
agent never catches) — the files on disk are then exactly what a SIGKILL at that point
leaves, since every write is complete before the hook runs. The real-SIGKILL version
against a running certhub is in tests/agent/test_agent_integration.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_support import DEVICE, SimulatedCrash, Steps, run, run_until
from fakeserver import FakeServer, FakeTime

from certhub.agent import STEPS, Agent, CertificateInfo, KeyStore

Factory = Callable[..., tuple[Agent, Steps]]


def crash(server: FakeServer, agent: Agent) -> None:
    with pytest.raises(SimulatedCrash):
        run(server, agent.run())


def settled(agent: Agent, server: FakeServer) -> Callable[[], bool]:
    """Connected, nothing pending, and the twin shows the current certificate."""

    def check() -> bool:
        info = agent.certificate
        reported = server.devices.get(DEVICE)
        return (
            agent.connection is not None
            and agent.state.pending is None
            and info is not None
            and reported is not None
            and reported.reported.get("certificate") == info.report()
        )

    return check


def hub_outcomes(server: FakeServer, since: int) -> list[str]:
    return [e[3] for e in server.events[since:] if e[0] == "hub-connect"]


def assert_valid_now(tmp_path: Path, server: FakeServer) -> None:
    store = KeyStore(tmp_path / "state")
    state = store.load()
    assert state.current is not None and state.pending is None
    info = CertificateInfo.of(store.load_chain(state.current.generation)[0])
    assert info.not_before <= server.clock.now() < info.not_after
    names = sorted(p.name for p in (tmp_path / "state").iterdir() if p.suffix == ".pem")
    gen = f"{state.current.generation:06d}"
    assert names == [f"chain-{gen}.pem", f"key-{gen}.pem"]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("method", ["hub", "dps"])
def test_crash_at_every_renewal_step(
    tmp_path: Path,
    time: FakeTime,
    server: FakeServer,
    agent_factory: Factory,
    step: str,
    method: str,
) -> None:
    first, steps = agent_factory(renewal={"method": method})
    steps.stop_when = lambda seen: seen.count("promoted") >= 1
    run(server, run_until(first, lambda: False))
    assert server.count("dps-issued") == 1

    doomed, steps = agent_factory(renewal={"method": method})
    steps.crash_at = (step, 1)  # the renewal's own occurrence of the step
    crash(server, doomed)
    assert steps.seen[-1] == step

    mark = len(server.events)
    survivor, _ = agent_factory(renewal={"method": method})
    time.hold()  # once settled, the survivor waits for its next renewal
    run(server, run_until(survivor, settled(survivor, server)))
    outcomes = hub_outcomes(server, mark)
    assert outcomes and outcomes[0] == "ok", outcomes  # first connect after restart works
    assert set(outcomes) == {"ok"}
    if method == "hub":
        assert server.count("dps-register") == 1  # never fell back to DPS
    else:
        assert server.count("dps-issued") == 2  # the renewal's own, not a recovery
    assert_valid_now(tmp_path, server)


@pytest.mark.parametrize("step", STEPS)
def test_crash_during_first_registration(
    tmp_path: Path, time: FakeTime, server: FakeServer, agent_factory: Factory, step: str
) -> None:
    doomed, steps = agent_factory()
    steps.crash_at = (step, 1)
    crash(server, doomed)

    survivor, _ = agent_factory()
    time.hold()
    run(server, run_until(survivor, settled(survivor, server)))
    assert set(hub_outcomes(server, 0)) == {"ok"}
    assert server.count("dps-issued") == 1  # a resubmitted CSR gets the same operation
    assert_valid_now(tmp_path, server)


def test_crash_leaves_the_previous_certificate_usable(
    tmp_path: Path, server: FakeServer, agent_factory: Factory
) -> None:
    first, steps = agent_factory()
    steps.stop_when = lambda seen: seen.count("promoted") >= 1
    run(server, run_until(first, lambda: False))
    store = KeyStore(tmp_path / "state")
    before = store.load()
    assert before.current is not None
    doomed, steps = agent_factory()
    steps.crash_at = ("files-written", 1)
    crash(server, doomed)
    after = store.load()
    assert after.current == before.current  # still current, files still there
    assert store.has_chain(before.current.generation)
    assert after.pending is not None and after.pending.issued is not None
    saved = json.loads((tmp_path / "state" / "state.json").read_text())
    assert saved["pending"]["generation"] == after.pending.generation
