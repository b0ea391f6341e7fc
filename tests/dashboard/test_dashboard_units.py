"""The dashboard's pure parts: the token, loopback detection, ordering and the timeline."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest

from certhub.dashboard import dashboard_token, is_loopback, token_matches
from certhub.dashboard.fleet import BUCKETS, FleetSnapshot, SnapshotCache
from certhub.dashboard.reference import ReferenceFleet, at_risk, timeline
from certhub.registry._service import DeviceLifecycle

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()


def _device(device_id: str, lifecycle: str, expires_in: float | None) -> DeviceLifecycle:
    not_after = None if expires_in is None else NOW + dt.timedelta(seconds=expires_in)
    return DeviceLifecycle(
        device_id=device_id,
        status="disabled" if lifecycle == "disabled" else "enabled",
        status_reason=None,
        connection_state="Disconnected",
        lifecycle=lifecycle,
        serial_hex=None if not_after is None else "01",
        not_before=None if not_after is None else not_after - dt.timedelta(seconds=120),
        not_after=not_after,
        certificate_state=None,
    )


def test_token_is_stable_per_key_and_differs_between_keys() -> None:
    assert dashboard_token(KEY_A) == dashboard_token(KEY_A)
    assert dashboard_token(KEY_A) != dashboard_token(KEY_B)
    assert "=" not in dashboard_token(KEY_A)


@pytest.mark.parametrize(
    ("presented", "ok"),
    [
        pytest.param(dashboard_token(KEY_A), True, id="primary"),
        pytest.param(dashboard_token(KEY_B), True, id="secondary"),
        pytest.param(None, False, id="reject/missing"),
        pytest.param("", False, id="reject/empty"),
        pytest.param(
            dashboard_token(base64.b64encode(b"c" * 32).decode()), False, id="reject/other-key"
        ),
    ],
)
def test_token_matches_the_owner_keys(presented: str | None, ok: bool) -> None:
    keys = {
        "iothubowner": {"primaryKey": KEY_A, "secondaryKey": KEY_B},
        "service": {"primaryKey": KEY_B},
    }
    assert token_matches(presented, keys) is ok


def test_token_of_another_policy_is_refused() -> None:
    keys = {"service": {"primaryKey": KEY_A}}
    assert token_matches(dashboard_token(KEY_A), keys) is False


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("localhost", True),
        pytest.param("0.0.0.0", False, id="reject/any"),
        pytest.param("10.0.0.5", False, id="reject/lan"),
        pytest.param("::", False, id="reject/any6"),
        pytest.param("example.org", False, id="reject/name"),
        pytest.param(None, False, id="reject/none"),
    ],
)
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_at_risk_orders_by_urgency_then_expiry_and_hides_handled_devices() -> None:
    devices = [
        _device("h-late", "healthy", 100),
        _device("h-soon", "healthy", 50),
        _device("due", "renewal-due", 20),
        _device("over", "overdue", 5),
        _device("gone", "expired", -10),
        _device("rev", "revoked", 30),
        _device("off", "disabled", 30),
        _device("bare", "no-certificate", None),
    ]
    order = [d.device_id for d in at_risk(devices)]
    assert order == ["gone", "over", "due", "h-soon", "h-late", "bare"]
    assert [d.device_id for d in at_risk(devices, search="REV")] == ["rev"]
    assert len(at_risk(devices, limit=2)) == 2


def test_timeline_buckets_expiries_windows_and_recent_issuance() -> None:
    devices = [
        _device("a", "healthy", 10),
        _device("b", "healthy", 119),
        _device("c", "expired", -1),
    ]
    windows = {
        "a": (NOW + dt.timedelta(seconds=-1), NOW),
        "b": (NOW + dt.timedelta(seconds=60), NOW),
    }
    snapshot = ReferenceFleet(
        taken_at=NOW,
        devices=devices,
        windows=windows,
        issued_at=[NOW - dt.timedelta(seconds=2), NOW - dt.timedelta(seconds=500)],
        horizon_seconds=120.0,
    )
    t = timeline(snapshot)
    assert t["bucketSeconds"] == 5.0
    assert t["expiries"][2] == 1 and t["expiries"][23] == 1 and sum(t["expiries"]) == 2
    assert t["renewalWindows"][12] == 1 and sum(t["renewalWindows"]) == 1
    assert t["issued"][BUCKETS - 1] == 1 and sum(t["issued"]) == 1


def test_dashboard_token_command_prints_the_owner_token(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from certhub.bootstrap import initialize, service_keys
    from certhub.cli_sim import dashboard_token_command
    from certhub.registry import Store

    init = initialize(tmp_path / "data", development=True)
    with Store.open(init.database_url) as store:
        keys = service_keys(store)["iothubowner"]
    runner = CliRunner()
    primary = runner.invoke(dashboard_token_command, ["--data-dir", str(tmp_path / "data")])
    secondary = runner.invoke(
        dashboard_token_command, ["--data-dir", str(tmp_path / "data"), "--secondary"]
    )
    assert primary.output.strip() == dashboard_token(keys["primaryKey"])
    assert secondary.output.strip() == dashboard_token(keys["secondaryKey"])


def test_dashboard_token_command_refuses_a_missing_data_dir(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from certhub.cli_sim import dashboard_token_command

    result = CliRunner().invoke(dashboard_token_command, ["--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 2 and "is not a data directory" in result.output


def _empty_snapshot(horizon: float) -> FleetSnapshot:
    return FleetSnapshot(
        taken_at=NOW,
        development=True,
        total=0,
        connected=0,
        counts={},
        timeline={},
        at_risk=[],
        cas=[],
        horizon_seconds=horizon,
    )


def test_the_cache_hands_the_previous_horizon_to_the_next_snapshot() -> None:
    hints: list[float | None] = []

    def take(hint: float | None) -> FleetSnapshot:
        hints.append(hint)
        return _empty_snapshot(120.0 + len(hints))

    cache = SnapshotCache(take, max_age=3600)
    first = cache.get()
    assert cache.get() is first and hints == [None]
    cache.invalidate()
    assert cache.get().horizon_seconds == 122.0
    assert hints == [None, 121.0]


def test_snapshot_cache_age_limit_grows_with_the_snapshot_cost() -> None:
    now = [0.0]
    cost = [0.05]
    taken: list[float] = []

    def take(hint: float | None) -> FleetSnapshot:
        taken.append(now[0])
        now[0] += cost[0]  # the snapshot's own duration
        return _empty_snapshot(120.0)

    cache = SnapshotCache(take, max_age=2.0, cost_factor=10.0, monotonic=lambda: now[0])
    cache.get()
    assert cache.age_limit == 2.0  # a cheap snapshot: max_age
    now[0] += 2.5
    cost[0] = 0.5  # the fleet grew: the next one takes 0.5 s
    cache.get()
    assert len(taken) == 2 and cache.age_limit == pytest.approx(5.0)
    now[0] += 4.0
    cache.get()
    assert len(taken) == 2  # 4 s old, under 10 x 0.5 s: still cached
    now[0] += 1.5
    cache.get()
    assert len(taken) == 3
