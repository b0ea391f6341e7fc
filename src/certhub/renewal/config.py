"""Settings of renewal through the hub (all with working defaults)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from certhub.renewal.errors import RenewalSettingInvalid
from certhub.renewal.window import WindowPolicy, capacity_for

if TYPE_CHECKING:
    from certhub.registry import Store

__all__ = ["SETTING_KEYS", "RenewalConfig"]

_PREFIX = "renewal."


def _seconds(text: str) -> dt.timedelta:
    return dt.timedelta(seconds=_positive(text))


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("expected a positive number")
    return value


def _rate(text: str) -> float | None:
    """Per second; empty or 0 means unlimited."""
    if not text.strip() or float(text) == 0:
        return None
    return _positive(text)


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def _url(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    if not text.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return text


# setting key (after "renewal.") -> (RenewalConfig field, parser)
_CONFIG_SETTINGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "admission_rate": ("admission_rate", _rate),
    "admission_burst": ("admission_burst", _positive),
    "operation_ttl_seconds": ("operation_ttl", _seconds),
    "operation_retention_seconds": ("operation_retention", _seconds),
    "detection_interval_seconds": ("detection_interval", _positive),
    "rebalance_interval_seconds": ("rebalance_interval", _positive),
    "stuck_after_seconds": ("stuck_after", _seconds),
    "capacity_utilization": ("capacity_utilization", _positive),
    "alert_webhook_url": ("alert_webhook_url", _url),
    "alert_attempts": ("alert_attempts", _count),
    "alert_backoff_seconds": ("alert_backoff", _positive),
    "alert_backoff_cap_seconds": ("alert_backoff_cap", _positive),
    "alert_timeout_seconds": ("alert_timeout", _positive),
}
# setting key (after "renewal.window.") -> WindowPolicy field
_WINDOW_SETTINGS: dict[str, str] = {
    "start_fraction": "start_fraction",
    "end_fraction": "end_fraction",
    "spill_start_fraction": "spill_start_fraction",
    "spill_end_fraction": "spill_end_fraction",
    "width_fraction": "width_fraction",
    "bucket_seconds": "bucket_seconds",
}

SETTING_KEYS: tuple[str, ...] = (
    *(_PREFIX + key for key in _CONFIG_SETTINGS),
    *(f"{_PREFIX}window.{key}" for key in _WINDOW_SETTINGS),
)
"""Every key :meth:`RenewalConfig.from_store` reads from the ``settings`` table."""


@dataclass(frozen=True, kw_only=True)
class RenewalConfig:
    """How the renewal service behaves.

    * ``operation_ttl`` — how long a response waits for its device (``operationExpires``).
    * ``operation_retention`` — how long an operation is kept after it expired (its
      ``$rid`` answered again with the same response meanwhile); then it is deleted.
    * ``admission_rate`` — renewals per second admitted (token bucket, burst
      ``admission_burst``, default one second's worth); None: unlimited. In a cluster it
      is the total: each node admits ``admission_rate / live nodes`` (docs/scale-out.md).
    * ``windows`` — where renewal windows go; its ``capacity`` is derived from the
      admission rate (``rate · bucket_seconds · capacity_utilization``) unless set.
    * ``detection_interval`` — seconds between runs of the overdue/expiry detection
      (also: stuck operations, new certificates from DPS, gauges); ``rebalance_interval``
      — seconds between rebalancing passes over upcoming windows.
    * ``alert_webhook_url`` — where overdue/expired announcements are POSTed (None: off),
      with ``alert_attempts`` tries, exponential backoff from ``alert_backoff`` seconds
      capped at ``alert_backoff_cap``, each try timing out after ``alert_timeout``.
    """

    operation_ttl: dt.timedelta = dt.timedelta(minutes=5)
    operation_retention: dt.timedelta = dt.timedelta(days=7)
    admission_rate: float | None = None
    admission_burst: float | None = None
    windows: WindowPolicy = field(default_factory=WindowPolicy)
    capacity_utilization: float = 0.8
    detection_interval: float = 60.0
    rebalance_interval: float = 600.0
    stuck_after: dt.timedelta = dt.timedelta(seconds=30)
    alert_webhook_url: str | None = None
    alert_attempts: int = 5
    alert_backoff: float = 1.0
    alert_backoff_cap: float = 30.0
    alert_timeout: float = 10.0
    alert_batch: int = 200
    max_batch: int = 256
    origin: str = "certhub-renewal"
    """``origin`` of the ``twin.desired`` events this service writes."""

    @classmethod
    def from_store(cls, store: Store, **overrides: Any) -> RenewalConfig:
        """The configuration an operator set in the store's ``settings`` table.

        Keys (see :data:`SETTING_KEYS`; absent keys keep the defaults, ``overrides``
        win over both): ``renewal.admission_rate`` (renewals per second; empty or 0:
        unlimited), ``renewal.admission_burst``, ``renewal.operation_ttl_seconds``,
        ``renewal.operation_retention_seconds``,
        ``renewal.detection_interval_seconds``, ``renewal.rebalance_interval_seconds``,
        ``renewal.stuck_after_seconds``, ``renewal.capacity_utilization``,
        ``renewal.alert_webhook_url`` (empty: no alerts), ``renewal.alert_attempts``,
        ``renewal.alert_backoff_seconds``, ``renewal.alert_backoff_cap_seconds``,
        ``renewal.alert_timeout_seconds``, and the window band
        ``renewal.window.{start,end,spill_start,spill_end,width}_fraction`` and
        ``renewal.window.bucket_seconds``. Raises :class:`RenewalSettingInvalid` naming
        the first key whose value cannot be used.
        """
        values: dict[str, Any] = {}
        for key, (name, parse) in _CONFIG_SETTINGS.items():
            raw = store.get_setting(_PREFIX + key)
            if raw is not None:
                values[name] = _parsed(_PREFIX + key, raw, parse)
        window: dict[str, float] = {}
        for key, name in _WINDOW_SETTINGS.items():
            raw = store.get_setting(f"{_PREFIX}window.{key}")
            if raw is not None:
                window[name] = _parsed(f"{_PREFIX}window.{key}", raw, _positive)
        if window:
            try:
                values["windows"] = WindowPolicy(**window)  # type: ignore[arg-type]
            except ValueError as exc:
                raise RenewalSettingInvalid(
                    f"{_PREFIX}window.*", ", ".join(f"{k}={v}" for k, v in window.items()), str(exc)
                ) from exc
        return cls(**{**values, **overrides})

    def window_policy(self) -> WindowPolicy:
        """``windows`` with its capacity derived from the admission rate when unset."""
        if self.windows.capacity is not None or self.admission_rate is None:
            return self.windows
        capacity = capacity_for(
            self.admission_rate, self.windows.bucket_seconds, self.capacity_utilization
        )
        return dataclasses.replace(self.windows, capacity=capacity)


def _parsed(key: str, raw: str, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(raw)
    except ValueError as exc:
        raise RenewalSettingInvalid(key, raw, str(exc)) from exc
