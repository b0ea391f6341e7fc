"""The agent's whole lifecycle against the scripted peer, in virtual time.

A 30-day certificate goes through provisioning, renewals and recoveries in
milliseconds: the fake server issues real certificates on the same virtual clock the
agent sleeps on (:class:`FakeTime`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_support import DEVICE, Steps, make_config, run, run_until
from fakeserver import START, FakeServer, FakeTime, FakeTransport, HubSession, leaf_of

from certhub.agent import Agent, CertificateInfo, ExitCode, X509Onboarding
from certhub.agent.keystore import KeyStore
from certhub.rand import SeededRandom

Factory = Callable[..., tuple[Agent, Steps]]
DAY = dt.timedelta(days=1)


def ok_connects(server: FakeServer) -> list[str]:
    """Serials of accepted hub connections, in order."""
    return [e[2] for e in server.events if e[0] == "hub-connect" and e[3] == "ok"]


def reports(server: FakeServer) -> list[dict[str, Any]]:
    return [json.loads(e[2]) for e in server.events if e[0] == "reported"]


def current_leaf(tmp_path: Path) -> CertificateInfo:
    store = KeyStore(tmp_path / "state")
    state = store.load()
    assert state.current is not None
    return CertificateInfo.of(store.load_chain(state.current.generation)[0])


def retry_waits(caplog: pytest.LogCaptureFixture, event: str = "renewal-retry") -> list[float]:
    return [
        r.fields["retry_in"]  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "event", "") == event
    ]


def promoted(n: int) -> Callable[[list[str]], bool]:
    return lambda seen: seen.count("promoted") >= n


def test_first_start_provisions_connects_and_reports(
    tmp_path: Path, time: FakeTime, server: FakeServer, agent_factory: Factory
) -> None:
    agent, steps = agent_factory()
    time.hold()  # once connected, the agent waits for its renewal: keep it there
    code = run(server, run_until(agent, lambda: len(reports(server)) >= 1))
    assert code == ExitCode.OK
    assert server.count("dps-register") == 1
    info = current_leaf(tmp_path)
    assert ok_connects(server) == [info.serial_hex]
    assert reports(server) == [info.report()]
    assert set(info.report()) == {"validFrom", "validUntil", "serialNumber", "thumbprint"}
    state = KeyStore(tmp_path / "state").load()
    assert state.current is not None and state.current.source == "dps"
    assert state.current.assigned_hub == "hub.test" and state.pending is None
    key = tmp_path / "state" / "key-000001.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert steps.seen[:4] == ["key-generated", "csr-sent", "response-received", "files-written"]


def test_consecutive_hub_renewals_report_each_certificate(
    tmp_path: Path, server: FakeServer, agent_factory: Factory
) -> None:
    agent, steps = agent_factory()
    steps.stop_when = promoted(3)  # provisioning + two renewals
    assert run(server, run_until(agent, lambda: False)) == ExitCode.OK
    serials = ok_connects(server)
    assert len(serials) == 3 and len(set(serials)) == 3
    assert server.count("hub-issued") == 2 and server.count("dps-register") == 1
    assert [r["serialNumber"] for r in reports(server)][:2] == serials[:2]
    # a new key pair every time, and the old files are gone
    names = sorted(p.name for p in (tmp_path / "state").iterdir() if p.suffix == ".pem")
    assert names == ["chain-000003.pem", "key-000003.pem"]
    assert len(server.devices[DEVICE].keys_seen) == 3


def test_renewal_waits_for_eighty_percent(
    tmp_path: Path, time: FakeTime, server: FakeServer, agent_factory: Factory
) -> None:
    agent, steps = agent_factory()
    steps.stop_when = promoted(2)
    run(server, run_until(agent, lambda: False))
    second = current_leaf(tmp_path)
    # issued 24 days (80 % of 30) after the first, backdated 5 minutes
    assert second.not_before == dt.datetime(2026, 3, 25, 11, 55, tzinfo=dt.UTC)


def test_renewal_through_dps_when_configured(server: FakeServer, agent_factory: Factory) -> None:
    agent, steps = agent_factory(renewal={"method": "dps"})
    steps.stop_when = promoted(2)
    run(server, run_until(agent, lambda: False))
    assert server.count("dps-issued") == 2
    assert server.count("credentials") == 0
    assert len(set(ok_connects(server))) == 2


@pytest.mark.parametrize(
    ("status", "error"),
    [
        pytest.param(
            403, {"errorCode": 403010, "message": "tier"}, id="reject/403010-not-available"
        ),
        pytest.param(
            400, {"errorCode": 400040, "message": "bad csr"}, id="reject/400040-csr-refused"
        ),
        pytest.param(412, {"errorCode": 412005, "message": "no policy"}, id="reject/412005"),
    ],
)
def test_non_transient_hub_error_falls_back_to_dps(
    server: FakeServer, agent_factory: Factory, status: int, error: dict[str, Any]
) -> None:
    server.credentials_script.append((status, error))
    agent, steps = agent_factory()
    steps.stop_when = promoted(2)
    run(server, run_until(agent, lambda: False))
    assert server.count("credentials") == 1
    assert server.count("dps-issued") == 2
    assert len(set(ok_connects(server))) == 2


def test_operation_active_409005_resubmits_with_replace(
    server: FakeServer, agent_factory: Factory
) -> None:
    server.active_request[DEVICE] = "someone-elses-rid"
    agent, steps = agent_factory()
    steps.stop_when = promoted(2)
    run(server, run_until(agent, lambda: False))
    calls = [e for e in server.events if e[0] == "credentials"]
    assert [c[3] for c in calls] == ["None", "someone-elses-rid"]
    assert calls[0][2] == calls[1][2]  # the same rid, resubmitted
    assert server.count("hub-issued") == 1 and server.count("dps-issued") == 1


@pytest.mark.parametrize(
    ("status", "error", "floor"),
    [
        pytest.param(429, {"errorCode": 429002, "retryAfter": 42}, 42.0, id="429002-retry-after"),
        pytest.param(429, {"errorCode": 429003}, 0.5, id="429003"),
        pytest.param(503, {"errorCode": 503001}, 0.5, id="503001"),
        pytest.param(500, {"errorCode": 500001}, 0.5, id="500001"),
    ],
)
def test_transient_hub_errors_retry_through_the_hub(
    time: FakeTime,
    server: FakeServer,
    agent_factory: Factory,
    caplog: pytest.LogCaptureFixture,
    status: int,
    error: dict[str, Any],
    floor: float,
) -> None:
    server.credentials_script.append((status, error))
    agent, steps = agent_factory()
    steps.stop_when = promoted(2)
    with caplog.at_level(logging.INFO, logger="certhub.agent"):
        run(server, run_until(agent, lambda: False))
    assert server.count("credentials") == 2
    assert server.count("dps-register") == 1  # never fell back
    waits = retry_waits(caplog)
    assert len(waits) == 1 and waits[0] >= floor
    assert waits[0] in time.slept


def test_retries_back_off_exponentially(
    server: FakeServer, agent_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    server.credentials_script.extend([(503, {"errorCode": 503001})] * 5)
    agent, steps = agent_factory()
    steps.stop_when = promoted(2)
    with caplog.at_level(logging.INFO, logger="certhub.agent"):
        run(server, run_until(agent, lambda: False))
    waits = retry_waits(caplog)
    assert len(waits) == 5
    for attempt, wait in enumerate(waits):  # initial 1 s, equal jitter, cap 60 s
        assert 2**attempt / 2 <= wait <= 2**attempt


def test_stopped_past_expiry_recovers_through_dps(
    tmp_path: Path, time: FakeTime, server: FakeServer, agent_factory: Factory
) -> None:
    first, _ = agent_factory()
    assert run(server, first.run_once()) == ExitCode.OK
    old = current_leaf(tmp_path)
    time.advance(31 * DAY)
    second, steps = agent_factory()
    steps.stop_when = promoted(1)
    code = run(server, run_until(second, lambda: False))
    assert code == ExitCode.OK
    assert server.count("dps-issued") == 2
    new = current_leaf(tmp_path)
    assert new.serial_hex != old.serial_hex and new.not_after > time.now()
    # the expired certificate was never even offered to the hub
    assert [e[3] for e in server.events if e[0] == "hub-connect"] == ["ok", "ok"]


def test_revoked_device_recovers_through_dps(
    tmp_path: Path, server: FakeServer, agent_factory: Factory
) -> None:
    agent, steps = agent_factory()

    def revoke_once(seen: list[str]) -> bool:
        if seen.count("promoted") == 1 and not any(e[0] == "revoked" for e in server.events):
            server.events.append(("revoked",))
            server.revoke(DEVICE)
        return seen.count("promoted") >= 2

    steps.stop_when = revoke_once
    run(server, run_until(agent, lambda: False))
    outcomes = [e[3] for e in server.events if e[0] == "hub-connect"]
    assert "revoked" in outcomes
    assert outcomes[-1] == "ok"
    assert server.count("dps-issued") == 2


def test_revoked_after_connect_recovers(
    tmp_path: Path, time: FakeTime, server: FakeServer, agent_factory: Factory
) -> None:
    agent, _ = agent_factory()

    time.hold()

    async def scenario() -> int:
        import asyncio

        task = asyncio.create_task(agent.run())
        await agent.wait_connected()
        server.revoke(DEVICE)  # rotates the id and closes the live session
        while server.count("dps-issued") < 2 or not agent.connection:
            await asyncio.sleep(0.005)
        agent.stop()
        return int(await task)

    assert run(server, scenario()) == ExitCode.OK
    assert [e[3] for e in server.events if e[0] == "hub-connect"][-2:] == ["revoked", "ok"]


def test_disabled_device_backs_off_slowly_and_resumes(
    time: FakeTime, server: FakeServer, agent_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    agent, _ = agent_factory(renewal={"disabled_retry": 600.0})

    time.hold()

    async def scenario() -> int:
        import asyncio

        task = asyncio.create_task(agent.run())
        await agent.wait_connected()
        server.disable(DEVICE)
        while sum(1 for r in caplog.records if getattr(r, "event", "") == "device-disabled") < 3:
            await asyncio.sleep(0.002)
        server.disable(DEVICE, False)
        while not agent.connection:
            await asyncio.sleep(0.002)
        agent.stop()
        return int(await task)

    with caplog.at_level(logging.INFO, logger="certhub.agent"):
        assert run(server, scenario()) == ExitCode.OK
    disabled = [r for r in caplog.records if getattr(r, "event", "") == "device-disabled"]
    assert all(r.levelno == logging.ERROR for r in disabled)
    assert all(600.0 <= r.fields["retry_in"] <= 1200.0 for r in disabled)  # type: ignore[attr-defined]
    assert "disabled" in disabled[0].getMessage()
    assert [e[3] for e in server.events if e[0] == "hub-connect"][-1] == "ok"


def test_once_reports_disabled_with_exit_4(server: FakeServer, agent_factory: Factory) -> None:
    first, _ = agent_factory()
    assert run(server, first.run_once()) == ExitCode.OK
    server.disable(DEVICE)
    second, _ = agent_factory()
    assert run(server, second.run_once()) == ExitCode.DISABLED


def test_no_onboarding_and_expired_certificate_needs_reonboarding(
    tmp_path: Path,
    time: FakeTime,
    server: FakeServer,
    agent_factory: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, _ = agent_factory()
    assert run(server, first.run_once()) == ExitCode.OK
    time.advance(40 * DAY)
    second, _ = agent_factory(onboarding=None)
    with caplog.at_level(logging.INFO, logger="certhub.agent"):
        assert run(server, second.run()) == ExitCode.REONBOARD
    assert any("must be re-onboarded" in r.getMessage() for r in caplog.records)
    assert server.count("dps-register") == 1


def test_first_start_without_onboarding_needs_reonboarding(
    server: FakeServer, agent_factory: Factory
) -> None:
    agent, _ = agent_factory(onboarding=None)
    assert run(server, agent.run_once()) == ExitCode.REONBOARD
    assert server.events == []


def test_refused_valid_certificate_without_onboarding_is_treated_as_disabled(
    time: FakeTime, server: FakeServer, agent_factory: Factory
) -> None:
    first, _ = agent_factory()
    assert run(server, first.run_once()) == ExitCode.OK
    server.disable(DEVICE)
    second, _ = agent_factory(onboarding=None)
    assert run(server, second.run_once()) == ExitCode.DISABLED
    time.advance(40 * DAY)  # and once it has expired there is nothing left to try
    third, _ = agent_factory(onboarding=None)
    assert run(server, third.run_once()) == ExitCode.REONBOARD


def test_clock_skew_is_estimated_scheduled_by_and_logged(
    tmp_path: Path,
    time: FakeTime,
    server: FakeServer,
    agent_factory: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.clock.skew = dt.timedelta(minutes=10)  # the device clock is 10 minutes late
    agent, steps = agent_factory()
    steps.stop_when = promoted(2)
    with caplog.at_level(logging.INFO, logger="certhub.agent"):
        run(server, run_until(agent, lambda: False))
    skew = [r for r in caplog.records if getattr(r, "event", "") == "clock-skew"]
    assert skew and skew[0].levelno == logging.WARNING
    offset = KeyStore(tmp_path / "state").load().clock_offset_seconds
    assert 599 <= offset <= 601
    # renewed at 80 % in server time: 24 days after the server's issue time
    assert current_leaf(tmp_path).not_before == dt.datetime(2026, 3, 25, 12, 5, tzinfo=dt.UTC)


def test_small_skew_is_not_logged(
    server: FakeServer, agent_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    server.clock.skew = dt.timedelta(seconds=20)
    agent, _ = agent_factory()
    with caplog.at_level(logging.INFO, logger="certhub.agent"):
        run(server, agent.run_once())
    assert not [r for r in caplog.records if getattr(r, "event", "") == "clock-skew"]


def test_server_window_is_honoured(
    tmp_path: Path, server: FakeServer, agent_factory: Factory
) -> None:
    server.devices[DEVICE] = dataclasses.replace(server.devices.get(DEVICE) or _device())
    server.devices[DEVICE].desired["certificateRenewal"] = {
        "renewAfter": "2026-03-10T00:00:00Z",
        "renewBefore": "2026-03-11T00:00:00Z",
    }
    agent, steps = agent_factory()
    steps.stop_when = promoted(2)
    run(server, run_until(agent, lambda: False))
    issued = current_leaf(tmp_path).not_before + dt.timedelta(minutes=5)
    assert (
        dt.datetime(2026, 3, 10, tzinfo=dt.UTC) <= issued <= dt.datetime(2026, 3, 11, tzinfo=dt.UTC)
    )


def test_desired_patch_reschedules_the_renewal(
    tmp_path: Path, time: FakeTime, server: FakeServer, agent_factory: Factory
) -> None:
    agent, steps = agent_factory()

    async def scenario() -> None:
        import asyncio

        blocker = asyncio.Event()
        real_sleep = time.sleep

        async def slow_sleep(seconds: float) -> None:  # hold the clock until the patch
            if seconds > 1000 and not blocker.is_set():
                await blocker.wait()
            await real_sleep(seconds)

        agent.sleeper = type("S", (), {"sleep": staticmethod(slow_sleep)})()
        task = asyncio.create_task(agent.run())
        await agent.wait_connected()
        server.push_desired(
            DEVICE,
            {
                "certificateRenewal": {
                    "renewAfter": "2026-03-02T00:00:00Z",
                    "renewBefore": "2026-03-02T01:00:00Z",
                }
            },
        )
        await asyncio.sleep(0.05)
        blocker.set()
        while steps.seen.count("promoted") < 2:
            await asyncio.sleep(0.002)
        agent.stop()
        await task

    run(server, scenario())
    issued = current_leaf(tmp_path).not_before + dt.timedelta(minutes=5)
    assert (
        dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
        <= issued
        <= dt.datetime(2026, 3, 2, 1, tzinfo=dt.UTC)
    )


def test_once_provisions_then_renews_only_when_due(
    tmp_path: Path, time: FakeTime, server: FakeServer, agent_factory: Factory
) -> None:
    for _ in range(2):
        agent, _ = agent_factory()
        assert run(server, agent.run_once()) == ExitCode.OK
    assert server.count("dps-register") == 1 and server.count("credentials") == 0
    assert len(reports(server)) == 1  # the second pass had nothing new to report
    time.advance(25 * DAY)
    agent, _ = agent_factory()
    assert run(server, agent.run_once()) == ExitCode.OK
    assert server.count("hub-issued") == 1
    assert reports(server)[-1] == current_leaf(tmp_path).report()


def test_unreachable_server(time: FakeTime, server: FakeServer, agent_factory: Factory) -> None:
    server.unreachable = True
    once, _ = agent_factory()
    assert run(server, once.run_once()) == ExitCode.TEMPORARY
    daemon, _ = agent_factory()
    run(server, run_until(daemon, lambda: len(time.slept) >= 8))
    assert time.slept[:6] == sorted(time.slept[:6])  # growing waits
    assert max(time.slept) <= 60.0  # capped at retry_max


def test_dps_throttling_is_retried(
    time: FakeTime, server: FakeServer, agent_factory: Factory
) -> None:
    server.dps_script.append((429, {"errorCode": 429001, "message": "slow down", "retryAfter": 5}))
    agent, steps = agent_factory()
    steps.stop_when = promoted(1)
    run(server, run_until(agent, lambda: False))
    assert server.count("dps-register") == 2
    assert any(s >= 5 for s in time.slept)


def test_x509_onboarding(
    tmp_path: Path, time: FakeTime, server: FakeServer, agent_factory: Factory
) -> None:
    cert, key = server.onboarding_certificate(DEVICE, days=10)
    (tmp_path / "onboard.pem").write_bytes(cert)
    (tmp_path / "onboard.key").write_bytes(key)
    onboarding = X509Onboarding(certificate=tmp_path / "onboard.pem", key=tmp_path / "onboard.key")
    agent, _ = agent_factory(onboarding=onboarding)
    assert run(server, agent.run_once()) == ExitCode.OK
    assert server.events[0] == ("dps-connect", DEVICE, "ok")
    time.advance(40 * DAY)  # both the operational and the onboarding certificate expired
    later, _ = agent_factory(onboarding=onboarding)
    assert run(server, later.run_once()) == ExitCode.REONBOARD


def test_connection_lost_mid_renewal_resumes_with_the_same_rid(
    server: FakeServer, agent_factory: Factory
) -> None:
    dropped: list[str] = []

    def drop_first(session: HubSession, rid: str, body: dict[str, Any]) -> bool:
        if not dropped:
            dropped.append(rid)
            session.close()
            return False
        return True

    server.credentials_hook = drop_first
    agent, steps = agent_factory()
    steps.stop_when = promoted(2)
    run(server, run_until(agent, lambda: False))
    assert server.served_rids[DEVICE] == [dropped[0], dropped[0]]
    assert server.count("dps-register") == 1


def test_lost_response_for_an_issued_key_starts_over_with_a_new_key(
    server: FakeServer, agent_factory: Factory
) -> None:
    def issue_then_drop(session: HubSession, rid: str, body: dict[str, Any]) -> bool:
        if server.count("credentials") == 1:
            import base64

            server.issue(DEVICE, base64.b64decode(body["csr"]))  # issued, answer lost
            session.close()
            return False
        return True

    server.credentials_hook = issue_then_drop
    agent, steps = agent_factory()
    steps.stop_when = promoted(2)
    run(server, run_until(agent, lambda: False))
    rids = server.served_rids[DEVICE]
    assert len(rids) == 3 and rids[0] == rids[1] != rids[2]  # resumed, refused, fresh
    assert server.count("dps-register") == 1


def test_application_shares_the_connection(
    time: FakeTime, server: FakeServer, agent_factory: Factory
) -> None:
    agent, _ = agent_factory()
    patches: list[dict[str, Any]] = []
    agent.on_desired(patches.append)

    async def method(name: str, payload: Any) -> tuple[int, Any]:
        return 200, {"echo": payload, "name": name}

    agent.on_method(method)

    time.hold()

    async def scenario() -> None:
        import asyncio

        task = asyncio.create_task(agent.run())
        conn = await agent.wait_connected()
        await conn.send_telemetry(b'{"t": 21.5}', {"$.ct": "application/json"})
        server.push_desired(DEVICE, {"fan": "on"})
        session = server.sessions[DEVICE]
        session.publish("$iothub/methods/POST/reboot/?$rid=7", b'{"delay": 3}')
        for _ in range(500):
            if patches and server.count("method-response"):
                break
            await asyncio.sleep(0.002)
        agent.stop()
        await task

    run(server, scenario())
    assert ("telemetry", DEVICE, '{"t": 21.5}') in server.events
    assert patches and patches[0]["fan"] == "on"
    response = next(e for e in server.events if e[0] == "method-response")
    assert response[1] == "200"
    assert json.loads(response[2]) == {"echo": {"delay": 3}, "name": "reboot"}


def test_stale_window_from_an_older_certificate_does_not_loop(
    tmp_path: Path, server: FakeServer, agent_factory: Factory
) -> None:
    server.devices[DEVICE] = _device()
    server.devices[DEVICE].desired["certificateRenewal"] = {
        "renewAfter": "2026-01-01T00:00:00Z",
        "renewBefore": "2026-01-02T00:00:00Z",
    }
    agent, steps = agent_factory()
    steps.stop_when = promoted(2)
    run(server, run_until(agent, lambda: False))
    assert current_leaf(tmp_path).not_before == dt.datetime(2026, 3, 25, 11, 55, tzinfo=dt.UTC)


def _device() -> Any:
    from fakeserver import Device

    return Device()


def test_leaf_helper_reads_chain(tmp_path: Path) -> None:
    # tiny check of the support code the other tests lean on
    path = tmp_path / "c.pem"
    fake = FakeServer(FakeTime())
    cert, _ = fake.onboarding_certificate("x")
    path.write_bytes(cert)
    assert leaf_of(path).subject.rfc4514_string() == "CN=x"
    assert make_config(tmp_path).dps.registration_id == DEVICE


def test_hub_without_credentials_api_renews_through_dps(
    server: FakeServer, agent_factory: Factory
) -> None:
    server.credentials_refused_subscribe = True
    agent, steps = agent_factory()
    steps.stop_when = promoted(2)
    run(server, run_until(agent, lambda: False))
    assert server.count("credentials") == 0
    assert server.count("dps-issued") == 2


@pytest.mark.parametrize(
    ("server_backdate", "configured"),
    [
        pytest.param("5m", 300.0, id="backdate-known"),
        pytest.param("0s", 0.0, id="no-backdate"),
        pytest.param("0s", 300.0, id="backdate-setting-wrong-falls-back-to-notBefore"),
    ],
)
def test_sixty_second_certificates_renew_at_eighty_percent_of_their_life(
    tmp_path: Path, time: FakeTime, server_backdate: str, configured: float
) -> None:
    server = FakeServer(time, validity="60s", backdate=server_backdate)
    config = make_config(tmp_path)
    clock = dataclasses.replace(config.clock, server_backdate=configured)
    steps = Steps()
    agent = Agent(
        dataclasses.replace(config, clock=clock),
        transport=FakeTransport(server),
        clock=time,
        rng=SeededRandom(1),
        sleeper=time,
        checkpoint=steps,
    )
    steps.agent = agent
    steps.stop_when = promoted(2)
    run(server, run_until(agent, lambda: False))
    backdate = dt.timedelta(minutes=5 if server_backdate == "5m" else 0)
    second_issued = current_leaf(tmp_path).not_before + backdate
    assert second_issued == START + dt.timedelta(seconds=48)  # 80 % of 60 s
