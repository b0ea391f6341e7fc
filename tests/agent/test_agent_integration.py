"""The agent against a real certhub on loopback, with 60-second certificates.

One server for the module; each scenario uses its own device, and the scenarios of
:func:`test_lifecycle_scenarios` run concurrently in one event loop (as a fleet would):
provisioning and two hub renewals, a DPS renewal, recovery after expiry, after
revocation, and the disabled case. :func:`test_sigkill_at_every_renewal_step` kills real
agent processes (SIGKILL) at each step of a renewal and restarts them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration_support import EventLog, agent_for, dev_server, finish, start_cli, write_config

from certhub.agent import STEPS, Agent, CertificateInfo, ExitCode, KeyStore
from certhub.rand import SystemRandom
from serverkit import RunningServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def certhub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with dev_server(tmp_path_factory.mktemp("certhub") / "data") as running:
        yield running


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def reported(running: RunningServer, device_id: str) -> Any:
    return running.store.get_twin(device_id).reported.get("certificate")


def issued_via(running: RunningServer, device_id: str) -> list[str]:
    certificates = sorted(
        running.store.list_certificates(device_id=device_id), key=lambda c: c.not_before
    )
    return [c.requested_via for c in certificates]


def disk_certificate(directory: Path) -> CertificateInfo:
    store = KeyStore(directory / "state")
    state = store.load()
    assert state.current is not None
    return CertificateInfo.of(store.load_chain(state.current.generation)[0])


async def wait_for(condition: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


class Scenario:
    """One device's agent in the shared loop, with its events."""

    def __init__(
        self, running: RunningServer, root: Path, log: EventLog, device_id: str, **renewal: Any
    ) -> None:
        self.running = running
        self.device_id = device_id
        self.directory = root / device_id
        self.config = write_config(running, self.directory, device_id, **renewal)
        self.log = log
        self.agent: Agent = agent_for(self.config)
        self.task: asyncio.Task[ExitCode] | None = None
        self.reports: list[tuple[str, Any]] = []  # (serial connected, twin at that moment)

    def start(self) -> None:
        self.task = asyncio.create_task(self.agent.run())

    async def stop(self) -> ExitCode:
        self.agent.stop()
        assert self.task is not None
        return await self.task

    def count(self, event: str) -> int:
        return self.log.count(self.device_id, event)

    async def until(self, event: str, n: int, timeout: float) -> None:
        await wait_for(lambda: self.count(event) >= n, timeout, f"{self.device_id}: {n} x {event}")

    async def check_report(self) -> None:
        """The twin shows exactly the certificate the agent holds (a report follows each
        promotion within milliseconds; the server may ask for the next renewal at once)."""

        def matches() -> bool:
            info = self.agent.certificate
            return info is not None and reported(self.running, self.device_id) == info.report()

        await wait_for(matches, 5, f"{self.device_id}: twin report of the current certificate")


async def hub_renewals(s: Scenario) -> None:
    s.start()
    await s.until("certificate-reported", 1, 30)
    await s.check_report()
    first = s.agent.certificate
    for n in (2, 3):  # two consecutive renewals through the hub
        await s.until("certificate-reported", n, 90)
        await s.check_report()
    assert await s.stop() == ExitCode.OK
    assert s.agent.certificate != first
    via = issued_via(s.running, s.device_id)
    assert via[:3] == ["dps", "hub", "hub"] and set(via[1:]) == {"hub"}
    assert s.count("dps-register") == 1 and s.count("renewal-fallback") == 0


async def dps_renewal(s: Scenario) -> None:
    s.start()
    await s.until("certificate-reported", 1, 30)
    await s.check_report()
    await s.until("certificate-reported", 2, 90)
    await s.check_report()
    assert await s.stop() == ExitCode.OK
    via = issued_via(s.running, s.device_id)
    assert len(via) >= 2 and set(via) == {"dps"}


async def past_expiry(s: Scenario) -> None:
    assert await s.agent.run_once() == ExitCode.OK
    old = disk_certificate(s.directory)
    await asyncio.sleep(max(0.0, (old.not_after - now()).total_seconds()) + 2)
    again = agent_for(s.config)
    assert await again.run_once() == ExitCode.OK
    new = disk_certificate(s.directory)
    assert new.serial_hex != old.serial_hex and new.not_after > now()
    names = s.log.names(s.device_id)
    assert "certificate-expired" in names and names.count("dps-register") == 2
    assert reported(s.running, s.device_id) == new.report()


async def revoked(s: Scenario) -> None:
    s.start()
    await s.until("certificate-reported", 1, 30)
    old = s.agent.certificate
    await asyncio.to_thread(
        s.running.store.rotate_revocation_id, s.device_id, SystemRandom().token_bytes(32), now()
    )
    await s.until("certificate-reported", 2, 60)
    assert await s.stop() == ExitCode.OK
    assert s.agent.certificate != old
    assert s.count("hub-refused") >= 1 and s.count("dps-register") == 2
    await s.check_report()


async def disabled(s: Scenario) -> None:
    s.start()
    await s.until("certificate-reported", 1, 30)
    store = s.running.store
    device = store.get_device(s.device_id)
    assert device is not None
    await asyncio.to_thread(
        store.update_device, dataclasses.replace(device, status="disabled"), None, now=now()
    )
    await s.until("device-disabled", 2, 60)
    records = [r for name, r in s.log.events[s.device_id] if name == "device-disabled"]
    assert all(r.levelname == "ERROR" and "disabled" in r.getMessage() for r in records)
    device = store.get_device(s.device_id)
    assert device is not None
    await asyncio.to_thread(
        store.update_device, dataclasses.replace(device, status="enabled"), None, now=now()
    )
    connected = s.count("hub-connected")
    await wait_for(lambda: s.count("hub-connected") > connected, 60, "reconnect after enable")
    assert await s.stop() == ExitCode.OK


def test_lifecycle_scenarios(certhub: RunningServer, tmp_path: Path) -> None:
    log = EventLog()

    async def main() -> None:
        scenarios = [
            hub_renewals(Scenario(certhub, tmp_path, log, "int-hub")),
            dps_renewal(Scenario(certhub, tmp_path, log, "int-dps", method="dps")),
            past_expiry(Scenario(certhub, tmp_path, log, "int-expiry")),
            revoked(Scenario(certhub, tmp_path, log, "int-revoked")),
            disabled(Scenario(certhub, tmp_path, log, "int-disabled", disabled_retry="2s")),
        ]
        await asyncio.gather(*scenarios)

    with log.installed():
        asyncio.run(main())


def test_sigkill_at_every_renewal_step(certhub: RunningServer, tmp_path: Path) -> None:
    configs = {
        step: write_config(certhub, tmp_path / f"kill-{step}", f"kill-{step}") for step in STEPS
    }
    provision = {step: start_cli(path, "--once") for step, path in configs.items()}
    for step, process in provision.items():
        assert finish(process, 60).returncode == 0, step
    doomed = {step: start_cli(path, crash_at=step) for step, path in configs.items()}
    for step, process in doomed.items():
        run = finish(process, 180)
        assert run.returncode == -signal.SIGKILL, (step, run.stderr[-2000:])
    restarted = {step: start_cli(path, "--once") for step, path in configs.items()}
    for step, process in restarted.items():
        run = finish(process, 120)
        device = f"kill-{step}"
        assert run.returncode == 0, (step, run.stderr[-2000:])
        names = run.names()
        # connects at once with a certificate the hub accepts, and never needs DPS
        assert "dps-register" not in names, (step, names)
        assert "hub-refused" not in names, (step, names)
        assert names.count("hub-connected") >= 1
        info = disk_certificate(configs[step].parent)
        assert info.not_before <= now() < info.not_after
        assert reported(certhub, device) == info.report()
        assert issued_via(certhub, device)[0] == "dps"
        assert set(issued_via(certhub, device)[1:]) <= {"hub"}


def test_daemon_stops_cleanly_on_sigterm(certhub: RunningServer, tmp_path: Path) -> None:
    import time

    config = write_config(certhub, tmp_path / "term", "int-sigterm")
    process = start_cli(config)
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        if '"event":"certificate-reported"' in line:
            break
    else:
        raise AssertionError("".join(seen)[-2000:])
    process.send_signal(signal.SIGTERM)
    run = finish(process, 30)
    assert run.returncode == 0
    assert run.names()[-1:] == ["stopped"]
    assert reported(certhub, "int-sigterm") == disk_certificate(config.parent).report()
