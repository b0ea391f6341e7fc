"""The simulator's pieces without a server: statistics, fleet shape, CLI options."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from certhub.cli_sim import DURATION, demo, simulate
from certhub.sim import FleetSpec, FleetStats, SetupError, Target, device_ids, percentile
from certhub.sim.fleet import Fleet


class Tick:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_percentile() -> None:
    assert percentile([], 50) is None
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0


def test_stats_provision_renew_recover_expire() -> None:
    tick = Tick()
    stats = FleetStats(clock=tick)
    stats.observe("d1", "dps-register", {"reason": "first-start"})
    stats.observe("d1", "hub-connected", {})
    stats.observe("d1", "certificate-activated", {})
    tick.now = 10.0
    stats.observe("d1", "renewal-request", {})
    assert stats.snapshot()["renewals_in_flight"] == 1
    tick.now = 10.5
    stats.observe("d1", "certificate-activated", {})
    stats.observe("d1", "hub-refused", {"code": 5})
    stats.observe("d1", "dps-register", {"reason": "refused"})
    stats.observe("d1", "certificate-activated", {})
    stats.observe("d2", "dps-register", {"reason": "first-start"})
    stats.observe("d2", "certificate-activated", {})
    stats.observe("d2", "dps-register", {"reason": "renewal"})
    stats.observe("d2", "certificate-activated", {})
    stats.observe("d2", "certificate-expired", {})
    stats.observe("d2", "retry", {"reason": "connection-refused"})
    figures = stats.snapshot()
    assert figures["provisioned"] == 2
    assert figures["renewals"] == 2 and figures["renewals_via_dps"] == 1
    assert figures["recoveries"] == 1
    assert figures["expiries"] == 1
    assert figures["renewals_in_flight"] == 0
    assert figures["renewal_latency_seconds"]["p50"] == 0.0
    assert figures["renewal_latency_seconds"]["max"] == 0.5
    assert figures["failures"] == {"hub-refused": 1, "retry:connection-refused": 1}
    assert figures["renewals_per_device"] == {"min": 1, "avg": 1.0, "max": 1}
    assert stats.snapshot(frozenset({"d2"}))["renewals_per_device"]["avg"] == 1.0


def test_stats_listen_to_agent_logger() -> None:
    import logging

    stats = FleetStats()
    with stats.installed():
        logging.getLogger("certhub.agent").info(
            "x", extra={"event": "certificate-activated", "device": "d9", "fields": {}}
        )
    logging.getLogger("certhub.agent").info(
        "y", extra={"event": "certificate-activated", "device": "d8", "fields": {}}
    )
    assert set(stats.devices) == {"d9"} and stats.devices["d9"].provisioned


def test_fleet_ids_and_dps_share(tmp_path: Path) -> None:
    anchor = tmp_path / "anchor.pem"
    anchor.write_text("")
    target = _target(anchor)
    spec = FleetSpec(devices=20, prefix="t", dps_share=0.1)
    assert device_ids(spec)[:2] == ["t-0000", "t-0001"] and len(device_ids(spec)) == 20
    fleet = Fleet.__new__(Fleet)
    fleet.target, fleet.spec, fleet.state_root = target, spec, tmp_path
    configs = [fleet.config(i, device_id) for i, device_id in enumerate(device_ids(spec))]
    assert sum(c.renewal.method == "dps" for c in configs) == 2
    assert configs[0].hub.address == "127.0.0.1" and configs[0].clock.server_backdate == 10.0
    assert configs[3].state_dir == tmp_path / "t-0003"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("120s", 120.0), ("10m", 600.0), ("1.5h", 5400.0)]
)
def test_duration_accepts(text: str, seconds: float) -> None:
    assert DURATION.convert(text, None, None) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("ten", "is not a duration", id="reject/not-a-duration"),
        pytest.param("0s", "must be positive", id="reject/zero"),
        pytest.param("5w", "is not a duration", id="reject/unit"),
    ],
)
def test_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(click.BadParameter, match=message):
        DURATION.convert(text, None, None)


def test_demo_options_parse() -> None:
    ctx = demo.make_context(
        "demo",
        ["--devices", "7", "--duration", "90s", "--validity", "1m", "--keep-serving"],
    )
    assert ctx.params["devices"] == 7
    assert ctx.params["duration"] == 90.0 and ctx.params["validity"] == 60.0
    assert ctx.params["keep_serving"] is True
    defaults = demo.make_context("demo", []).params
    assert defaults["devices"] == 200 and defaults["duration"] == 300.0
    assert defaults["validity"] == 120.0 and defaults["keep_serving"] is False


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        pytest.param(demo, ["--devices", "0"], "--devices", id="reject/demo-devices"),
        pytest.param(demo, ["--duration", "soon"], "is not a duration", id="reject/demo-duration"),
        pytest.param(
            demo,
            ["--validity", "60s", "--backdate", "60s"],
            "must be shorter than --validity",
            id="reject/demo-backdate",
        ),
        pytest.param(
            simulate,
            ["--validity", "30s", "--backdate", "1m"],
            "must be shorter than --validity",
            id="reject/simulate-backdate",
        ),
        pytest.param(simulate, ["--dps-share", "2"], "--dps-share", id="reject/dps-share"),
    ],
)
def test_options_rejected(
    command: click.Command, args: list[str], message: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(command, ["--data-dir", str(tmp_path / "d"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "d").exists()


def test_live_panel_and_summary_render() -> None:
    from rich.console import Console

    from certhub.sim.display import live_panel, summary_table

    stats = FleetStats()
    stats.started = 2
    stats.observe("d1", "certificate-activated", {})
    stats.observe("d1", "device-disabled", {"source": "dps"})
    console = Console(width=120, record=True)
    console.print(live_panel(stats.snapshot(), 12.0, 60.0))
    console.print(summary_table(stats.snapshot(), {"revoked": "1 devices"}))
    text = console.export_text()
    assert "1 / 2 started" in text and "device-disabled 1" in text
    assert "Fleet summary" in text and "revoked" in text


def test_excluded_devices_do_not_count_as_expiries() -> None:
    stats = FleetStats()
    stats.observe("kept-out", "certificate-activated", {})
    stats.observe("kept-out", "certificate-expired", {})
    assert stats.snapshot()["expiries"] == 1
    figures = stats.snapshot(frozenset({"kept-out"}))
    assert figures["expiries"] == figures["expired_devices"] == 0


def _paced_fleet(tmp_path: Path, spec: FleetSpec, provisioned: list[int]) -> Fleet:
    fleet = Fleet.__new__(Fleet)
    fleet.spec, fleet.state_root = spec, tmp_path
    fleet.provisioned = lambda: provisioned[0]
    return fleet


def test_the_start_waits_while_max_provisioning_devices_are_in_flight(tmp_path: Path) -> None:
    import asyncio

    provisioned = [0]
    fleet = _paced_fleet(tmp_path, FleetSpec(devices=5, max_provisioning=2), provisioned)

    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        began = loop.time()
        await fleet._room_to_start(1, stop)  # one in flight: room for another
        free = loop.time() - began
        loop.call_later(0.2, provisioned.__setitem__, 0, 1)
        await fleet._room_to_start(2, stop)  # two in flight: waits for one to provision
        return free, loop.time() - began

    free, paced = asyncio.run(scenario())
    assert free < 0.05 and paced >= 0.2


@pytest.mark.parametrize(
    ("spec", "stop"),
    [
        pytest.param(FleetSpec(devices=5, max_provisioning=None), False, id="unbounded"),
        pytest.param(
            FleetSpec(devices=5, max_provisioning=1, stall_seconds=0.1), False, id="stall"
        ),
        pytest.param(FleetSpec(devices=5, max_provisioning=1), True, id="stopped"),
    ],
)
def test_the_paced_start_never_waits_forever(tmp_path: Path, spec: FleetSpec, stop: bool) -> None:
    import asyncio

    fleet = _paced_fleet(tmp_path, spec, [0])

    async def scenario() -> float:
        event = asyncio.Event()
        if stop:
            event.set()
        began = asyncio.get_running_loop().time()
        await asyncio.wait_for(fleet._room_to_start(3, event), 5)
        return asyncio.get_running_loop().time() - began

    assert asyncio.run(scenario()) < 1.0


def test_stats_count_provisioned_devices_once() -> None:
    stats = FleetStats()
    for event in ("certificate-activated", "renewal-request", "certificate-activated"):
        stats.observe("d1", event, {})
    stats.observe("d2", "certificate-activated", {})
    assert stats.provisioned == 2


def _target(trust_anchor: Path) -> Target:
    return Target(
        host="127.0.0.1",
        port=1,
        hub_host="localhost",
        id_scope="0ne00000001",
        group_key="a2V5LWtleS1rZXkta2V5LWtleS1rZXkta2V5LWtleS0=",
        trust_anchor=trust_anchor,
        backdate=10.0,
    )


def test_agent_paths_are_absolute_for_a_relative_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make demo`` passes ``--data-dir ./certhub-data``: the agents resolve relative paths
    against their own state directory, so the fleet hands them absolute ones."""
    monkeypatch.chdir(tmp_path)
    Path("certhub-data/tls").mkdir(parents=True)
    Path("certhub-data/tls/server-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    relative = Path("certhub-data/tls/server-ca.pem")
    fleet = Fleet(_target(relative), FleetSpec(devices=1), state_root=Path("state"))
    config = fleet.config(0, "sim-0000")
    assert config.trust_anchor == tmp_path / "certhub-data/tls/server-ca.pem"
    assert config.state_dir == tmp_path / "state" / "sim-0000"


def test_a_fleet_that_cannot_start_its_devices_fails_at_once(tmp_path: Path) -> None:
    anchor = tmp_path / "ca.pem"
    anchor.write_text("-----BEGIN CERTIFICATE-----\n")
    not_a_directory = tmp_path / "state"
    not_a_directory.write_text("")
    fleet = Fleet(_target(anchor), FleetSpec(devices=3), state_root=not_a_directory)

    async def run() -> float:
        started = asyncio.get_running_loop().time()
        with pytest.raises(SetupError) as caught:
            await fleet.run(duration=60.0, stop=asyncio.Event())
        assert caught.value.step == "start-devices"
        return asyncio.get_running_loop().time() - started

    assert asyncio.run(run()) < 5.0  # not after the 60 s run
