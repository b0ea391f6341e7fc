"""RenewalConfig.from_store: the operator's settings in the store's ``settings`` table."""

from __future__ import annotations

import datetime as dt

import pytest
from renewal_support import World

from certhub.renewal import RenewalConfig, RenewalSettingInvalid, WindowPolicy
from certhub.renewal.config import SETTING_KEYS


def test_no_settings_gives_the_defaults(fresh_world: World) -> None:
    assert RenewalConfig.from_store(fresh_world.store) == RenewalConfig()


def test_every_setting_is_read(fresh_world: World) -> None:
    values = {
        "renewal.admission_rate": "25",
        "renewal.admission_burst": "50",
        "renewal.operation_ttl_seconds": "120",
        "renewal.operation_retention_seconds": "86400",
        "renewal.detection_interval_seconds": "15",
        "renewal.rebalance_interval_seconds": "300",
        "renewal.stuck_after_seconds": "45",
        "renewal.capacity_utilization": "0.5",
        "renewal.alert_webhook_url": "https://ops.example/hooks/certhub",
        "renewal.alert_attempts": "3",
        "renewal.alert_backoff_seconds": "2",
        "renewal.alert_backoff_cap_seconds": "60",
        "renewal.alert_timeout_seconds": "5",
        "renewal.window.start_fraction": "0.7",
        "renewal.window.end_fraction": "0.8",
        "renewal.window.spill_start_fraction": "0.6",
        "renewal.window.spill_end_fraction": "0.9",
        "renewal.window.width_fraction": "0.05",
        "renewal.window.bucket_seconds": "30",
    }
    assert set(values) == set(SETTING_KEYS)
    for key, value in values.items():
        fresh_world.store.set_setting(key, value)
    config = RenewalConfig.from_store(fresh_world.store)
    assert config == RenewalConfig(
        admission_rate=25.0,
        admission_burst=50.0,
        operation_ttl=dt.timedelta(seconds=120),
        operation_retention=dt.timedelta(days=1),
        detection_interval=15.0,
        rebalance_interval=300.0,
        stuck_after=dt.timedelta(seconds=45),
        capacity_utilization=0.5,
        alert_webhook_url="https://ops.example/hooks/certhub",
        alert_attempts=3,
        alert_backoff=2.0,
        alert_backoff_cap=60.0,
        alert_timeout=5.0,
        windows=WindowPolicy(
            start_fraction=0.7,
            end_fraction=0.8,
            spill_start_fraction=0.6,
            spill_end_fraction=0.9,
            width_fraction=0.05,
            bucket_seconds=30.0,
        ),
    )
    # the capacity per bucket follows the admission rate: 25/s * 30 s * 0.5
    assert config.window_policy().capacity == 375


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("", None, id="empty-is-unlimited"),
        pytest.param("0", None, id="zero-is-unlimited"),
        pytest.param("12.5", 12.5, id="fractional-rate"),
    ],
)
def test_admission_rate_unlimited_spellings(
    fresh_world: World, value: str, expected: float | None
) -> None:
    fresh_world.store.set_setting("renewal.admission_rate", value)
    assert RenewalConfig.from_store(fresh_world.store).admission_rate == expected


def test_empty_webhook_url_turns_alerts_off(fresh_world: World) -> None:
    fresh_world.store.set_setting("renewal.alert_webhook_url", "  ")
    assert RenewalConfig.from_store(fresh_world.store).alert_webhook_url is None


def test_overrides_win_over_the_store(fresh_world: World) -> None:
    fresh_world.store.set_setting("renewal.admission_rate", "25")
    config = RenewalConfig.from_store(fresh_world.store, admission_rate=None, max_batch=8)
    assert config.admission_rate is None and config.max_batch == 8


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        pytest.param("renewal.admission_rate", "fast", "could not convert", id="reject/rate-text"),
        pytest.param("renewal.admission_rate", "-1", "positive", id="reject/rate-negative"),
        pytest.param("renewal.alert_attempts", "0", "at least 1", id="reject/attempts-zero"),
        pytest.param("renewal.alert_attempts", "2.5", "invalid literal", id="reject/attempts-frac"),
        pytest.param("renewal.operation_ttl_seconds", "nan", "positive", id="reject/ttl-nan"),
        pytest.param("renewal.alert_webhook_url", "ops.example", "URL", id="reject/url-scheme"),
        pytest.param("renewal.window.width_fraction", "0", "positive", id="reject/width-zero"),
    ],
)
def test_reject_invalid_setting(fresh_world: World, key: str, value: str, reason: str) -> None:
    fresh_world.store.set_setting(key, value)
    with pytest.raises(RenewalSettingInvalid, match=reason) as info:
        RenewalConfig.from_store(fresh_world.store)
    assert (info.value.key, info.value.value) == (key, value)


def test_reject_inconsistent_window_band(fresh_world: World) -> None:
    fresh_world.store.set_setting("renewal.window.start_fraction", "0.9")
    fresh_world.store.set_setting("renewal.window.end_fraction", "0.8")
    with pytest.raises(RenewalSettingInvalid, match="spill_start") as info:
        RenewalConfig.from_store(fresh_world.store)
    assert info.value.key == "renewal.window.*"
