"""Agent configuration: a TOML file read with :mod:`tomllib`, checked key by key.

Every problem raises :class:`~certhub.agent.errors.ConfigError` whose ``key`` names the
setting (``renewal.fraction``); unknown keys are refused too, so a typo never silently
falls back to a default. Relative paths are taken relative to the file's directory.
Durations are seconds (a number) or strings such as ``"90s"``, ``"5m"``, ``"12h"``,
``"30d"``. See docs/agent.md for a complete example.
"""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from certhub.agent.errors import ConfigError
from certhub.pki import KeyType
from certhub.sas import derive_device_key

__all__ = [
    "AgentConfig",
    "ClockConfig",
    "DpsConfig",
    "HubConfig",
    "LogConfig",
    "Onboarding",
    "RenewalConfig",
    "SymmetricKeyOnboarding",
    "X509Onboarding",
    "load_config",
    "parse_config",
]

T = TypeVar("T")
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_HOST = re.compile(r"[A-Za-z0-9.\-:\[\]]{1,253}")
_REGISTRATION_ID = re.compile(r"[A-Za-z0-9\-._:]{1,128}")


@dataclass(frozen=True, kw_only=True)
class DpsConfig:
    """Where and as whom the device registers."""

    host: str
    port: int = 8883
    id_scope: str
    registration_id: str
    api_version: str = "2025-07-01-preview"


@dataclass(frozen=True, kw_only=True)
class SymmetricKeyOnboarding:
    """A device key (given, or derived from a group key): DPS SAS tokens."""

    device_key: str
    derived: bool = False


@dataclass(frozen=True, kw_only=True)
class X509Onboarding:
    """An onboarding certificate (chain PEM) and its key: DPS over mutual TLS."""

    certificate: Path
    key: Path


Onboarding = SymmetricKeyOnboarding | X509Onboarding


@dataclass(frozen=True, kw_only=True)
class HubConfig:
    """How to reach the hub DPS assigns (the host comes from ``assignedHub``)."""

    port: int = 8883
    address: str | None = None
    """Connect here instead of the assigned host (TLS still checks the assigned name)."""
    api_version: str = "2025-08-01-preview"
    keepalive: int = 60


@dataclass(frozen=True, kw_only=True)
class RenewalConfig:
    """When and how the certificate is renewed."""

    fraction: float = 0.8
    jitter: float = 0.05
    method: Literal["hub", "dps"] = "hub"
    key_type: KeyType = KeyType.P256
    retry_initial: float = 5.0
    retry_max: float = 900.0
    disabled_retry: float = 600.0
    request_timeout: float = 60.0


@dataclass(frozen=True, kw_only=True)
class ClockConfig:
    """Clock-skew handling."""

    max_skew: float = 60.0
    """Log a warning when the device clock is off the server's by more (seconds)."""
    server_backdate: float = 300.0
    """How far the server backdates ``notBefore`` (certhub's default policy: 5 minutes)."""


@dataclass(frozen=True, kw_only=True)
class LogConfig:
    """Log output."""

    format: Literal["text", "json"] = "text"
    level: str = "info"


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """The whole agent configuration."""

    dps: DpsConfig
    onboarding: Onboarding | None
    trust_anchor: Path
    state_dir: Path
    hub: HubConfig = field(default_factory=HubConfig)
    renewal: RenewalConfig = field(default_factory=RenewalConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    log: LogConfig = field(default_factory=LogConfig)


def load_config(path: Path) -> AgentConfig:
    """Read and check the TOML file at ``path``."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError("(file)", f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("(file)", f"{path} is not valid TOML: {exc}") from exc
    return parse_config(data, base_dir=path.parent)


def parse_config(data: Mapping[str, Any], *, base_dir: Path) -> AgentConfig:
    """Check a parsed TOML document; relative paths are resolved under ``base_dir``."""
    top = _Section(data, "", base_dir)
    top.allow({"dps", "onboarding", "trust_anchor", "state_dir", "hub", "renewal", "clock", "log"})
    trust_anchor = top.path("trust_anchor", must_exist=True)
    state_dir = top.path("state_dir")
    dps = _dps(top.section("dps", required=True))
    return AgentConfig(
        dps=dps,
        onboarding=_onboarding(top.section("onboarding"), dps.registration_id),
        trust_anchor=trust_anchor,
        state_dir=state_dir,
        hub=_hub(top.section("hub")),
        renewal=_renewal(top.section("renewal")),
        clock=_clock(top.section("clock")),
        log=_log(top.section("log")),
    )


# -- sections ------------------------------------------------------------------------


def _dps(s: _Section) -> DpsConfig:
    s.allow({"host", "port", "id_scope", "registration_id", "api_version"})
    registration_id = s.text("registration_id")
    if not _REGISTRATION_ID.fullmatch(registration_id):
        raise ConfigError(s.key("registration_id"), "use 1-128 of A-Z a-z 0-9 - . _ :")
    return DpsConfig(
        host=s.host("host"),
        port=s.port("port", 8883),
        id_scope=s.text("id_scope"),
        registration_id=registration_id,
        api_version=s.text("api_version", "2025-07-01-preview"),
    )


def _onboarding(s: _Section, registration_id: str) -> Onboarding | None:
    s.allow({"symmetric_key", "group_key", "certificate", "key"})
    given = [k for k in ("symmetric_key", "group_key", "certificate") if k in s.data]
    if len(given) > 1:
        raise ConfigError(s.key(given[1]), f"give only one of {', '.join(given)}")
    if "key" in s.data and "certificate" not in s.data:
        raise ConfigError(s.key("key"), "a key needs a certificate")
    if "symmetric_key" in s.data:
        return SymmetricKeyOnboarding(device_key=s.base64_key("symmetric_key"))
    if "group_key" in s.data:
        group_key = s.base64_key("group_key")
        return SymmetricKeyOnboarding(
            device_key=derive_device_key(group_key, registration_id), derived=True
        )
    if "certificate" in s.data:
        return X509Onboarding(certificate=s.path("certificate"), key=s.path("key"))
    return None


def _hub(s: _Section) -> HubConfig:
    s.allow({"port", "address", "api_version", "keepalive"})
    address = s.host("address") if "address" in s.data else None
    return HubConfig(
        port=s.port("port", 8883),
        address=address,
        api_version=s.text("api_version", "2025-08-01-preview"),
        keepalive=int(s.number("keepalive", 60, low=0, high=1177)),
    )


def _renewal(s: _Section) -> RenewalConfig:
    s.allow(
        {
            "fraction",
            "jitter",
            "method",
            "key_type",
            "retry_initial",
            "retry_max",
            "disabled_retry",
            "request_timeout",
        }
    )
    fraction = s.number("fraction", 0.8, low=0.05, high=0.95)
    jitter = s.number("jitter", 0.05, low=0.0, high=0.5)
    if fraction - jitter < 0.0 or fraction + jitter > 0.99:
        raise ConfigError(s.key("jitter"), f"fraction ± jitter must stay in 0..0.99 ({fraction})")
    retry_initial = s.duration("retry_initial", 5.0, low=0.01)
    return RenewalConfig(
        fraction=fraction,
        jitter=jitter,
        method=s.choice("method", ("hub", "dps"), "hub"),  # type: ignore[arg-type]
        key_type=KeyType(s.choice("key_type", tuple(k.value for k in KeyType), "p256")),
        retry_initial=retry_initial,
        retry_max=s.duration("retry_max", 900.0, low=retry_initial),
        disabled_retry=s.duration("disabled_retry", 600.0, low=0.01),
        request_timeout=s.duration("request_timeout", 60.0, low=0.1),
    )


def _clock(s: _Section) -> ClockConfig:
    s.allow({"max_skew", "server_backdate"})
    return ClockConfig(
        max_skew=s.duration("max_skew", 60.0),
        server_backdate=s.duration("server_backdate", 300.0, high=86400.0),
    )


def _log(s: _Section) -> LogConfig:
    s.allow({"format", "level"})
    level = s.choice("level", ("debug", "info", "warning", "error"), "info")
    return LogConfig(
        format=s.choice("format", ("text", "json"), "text"),  # type: ignore[arg-type]
        level=level,
    )


# -- typed access with key names ------------------------------------------------------


class _Section:
    """One TOML table and its dotted name, with typed getters that name the key."""

    def __init__(self, data: Mapping[str, Any], prefix: str, base_dir: Path) -> None:
        self.data = data
        self.prefix = prefix
        self.base_dir = base_dir

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def allow(self, names: set[str]) -> None:
        for name in self.data:
            if name not in names:
                raise ConfigError(self.key(name), "unknown setting")

    def section(self, name: str, *, required: bool = False) -> _Section:
        value = self.data.get(name)
        if value is None:
            if required:
                raise ConfigError(self.key(name), "missing")
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(self.key(name), "must be a table ([" + self.key(name) + "])")
        return _Section(value, f"{self.key(name)}.", self.base_dir)

    def _get(self, name: str, default: T | None, check: Callable[[Any], bool], what: str) -> Any:
        if name not in self.data:
            if default is None:
                raise ConfigError(self.key(name), "missing")
            return default
        value = self.data[name]
        if not check(value):
            raise ConfigError(self.key(name), f"must be {what}, not {value!r}")
        return value

    def text(self, name: str, default: str | None = None) -> str:
        value: str = self._get(name, default, lambda v: isinstance(v, str) and bool(v), "a string")
        return value

    def host(self, name: str) -> str:
        value = self.text(name)
        if not _HOST.fullmatch(value):
            raise ConfigError(self.key(name), f"not a host name: {value!r}")
        return value

    def port(self, name: str, default: int) -> int:
        value: int = self._get(name, default, _is_int, "an integer")
        if not 1 <= value <= 65535:
            raise ConfigError(self.key(name), f"must be 1..65535, not {value}")
        return value

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        value = float(self._get(name, default, _is_number, "a number"))
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"must be {low}..{high}, not {value}")
        return value

    def duration(
        self, name: str, default: float, *, low: float = 0.0, high: float = 365 * 86400.0
    ) -> float:
        raw = self._get(name, default, lambda v: _is_number(v) or isinstance(v, str), "a duration")
        seconds = _seconds(raw)
        if seconds is None:
            raise ConfigError(self.key(name), f"not a duration: {raw!r} (use e.g. 30s, 5m, 1h)")
        if not low <= seconds <= high:
            raise ConfigError(self.key(name), f"must be {low:g}..{high:g} seconds, not {seconds:g}")
        return seconds

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise ConfigError(self.key(name), f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def path(self, name: str, *, must_exist: bool = False) -> Path:
        path = self.base_dir / Path(self.text(name)).expanduser()
        if must_exist and not path.is_file():
            raise ConfigError(self.key(name), f"no such file: {path}")
        return path

    def base64_key(self, name: str) -> str:
        value = self.text(name)
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(self.key(name), "must be a base64 key") from None
        if len(decoded) < 16:
            raise ConfigError(self.key(name), "is too short for a key (16 bytes at least)")
        return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seconds(value: Any) -> float | None:
    if _is_number(value):
        return float(value)
    match = _DURATION.fullmatch(value)
    if match is None:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
