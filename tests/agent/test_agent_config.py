"""Agent configuration: a full file, defaults, and every refusal naming its key."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from certhub.agent import ConfigError, SymmetricKeyOnboarding, X509Onboarding, load_config
from certhub.agent.config import parse_config
from certhub.pki import KeyType
from certhub.sas import derive_device_key

KEY = base64.b64encode(b"x" * 32).decode()

FULL = f"""
trust_anchor = "anchor.pem"
state_dir = "state"

[dps]
host = "dps.example.com"
port = 8884
id_scope = "0ne00ABCDEF"
registration_id = "dev-17"

[onboarding]
group_key = "{KEY}"

[hub]
port = 9883
address = "127.0.0.1"
keepalive = 30

[renewal]
fraction = 0.7
jitter = 0.1
method = "dps"
key_type = "p384"
retry_initial = "2s"
retry_max = "10m"
disabled_retry = 1800

[clock]
max_skew = "2m"
server_backdate = "5m"

[log]
format = "json"
level = "debug"
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "anchor.pem").write_text("anchor\n")
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_full_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.dps.host == "dps.example.com" and config.dps.port == 8884
    assert config.dps.api_version == "2025-07-01-preview"
    assert config.onboarding == SymmetricKeyOnboarding(
        device_key=derive_device_key(KEY, "dev-17"), derived=True
    )
    assert config.trust_anchor == tmp_path / "anchor.pem"
    assert config.state_dir == tmp_path / "state"
    assert (config.hub.port, config.hub.address, config.hub.keepalive) == (9883, "127.0.0.1", 30)
    r = config.renewal
    assert (r.fraction, r.jitter, r.method, r.key_type) == (0.7, 0.1, "dps", KeyType.P384)
    assert (r.retry_initial, r.retry_max, r.disabled_retry) == (2.0, 600.0, 1800.0)
    assert (config.clock.max_skew, config.clock.server_backdate) == (120.0, 300.0)
    assert (config.log.format, config.log.level) == ("json", "debug")


MINIMAL = """
trust_anchor = "anchor.pem"
state_dir = "/var/lib/certhub-agent"
[dps]
host = "localhost"
id_scope = "0ne1"
registration_id = "d1"
"""


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.onboarding is None
    assert config.dps.port == 8883 and config.hub.port == 8883
    assert config.hub.api_version == "2025-08-01-preview"
    r = config.renewal
    assert (r.fraction, r.method, r.key_type) == (0.8, "hub", KeyType.P256)
    assert config.state_dir == Path("/var/lib/certhub-agent")


def test_symmetric_and_x509_onboarding(tmp_path: Path) -> None:
    sym = load_config(write(tmp_path, MINIMAL + f'[onboarding]\nsymmetric_key = "{KEY}"\n'))
    assert sym.onboarding == SymmetricKeyOnboarding(device_key=KEY)
    x5 = load_config(
        write(tmp_path, MINIMAL + '[onboarding]\ncertificate = "o.pem"\nkey = "o.key"\n')
    )
    assert x5.onboarding == X509Onboarding(certificate=tmp_path / "o.pem", key=tmp_path / "o.key")


def _replace(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


REJECTIONS: list[Any] = [
    pytest.param(
        lambda t: _replace(t, 'host = "dps.example.com"\n', ""),
        "dps.host",
        id="reject/missing-dps-host",
    ),
    pytest.param(
        lambda t: _replace(t, "port = 8884", 'port = "x"'), "dps.port", id="reject/port-not-int"
    ),
    pytest.param(
        lambda t: _replace(t, "port = 8884", "port = 70000"), "dps.port", id="reject/port-range"
    ),
    pytest.param(
        lambda t: _replace(t, '"dev-17"', '"dev 17"'),
        "dps.registration_id",
        id="reject/bad-registration-id",
    ),
    pytest.param(
        lambda t: _replace(t, "[dps]", "[dps]\nscope = 1"), "dps.scope", id="reject/unknown-key"
    ),
    pytest.param(
        lambda t: _replace(t, 'trust_anchor = "anchor.pem"', 'trust_anchor = "nope.pem"'),
        "trust_anchor",
        id="reject/missing-anchor-file",
    ),
    pytest.param(
        lambda t: _replace(t, 'state_dir = "state"\n', ""),
        "state_dir",
        id="reject/missing-state-dir",
    ),
    pytest.param(
        lambda t: _replace(t, f'group_key = "{KEY}"', 'group_key = "not base64!"'),
        "onboarding.group_key",
        id="reject/group-key-not-base64",
    ),
    pytest.param(
        lambda t: _replace(t, f'group_key = "{KEY}"', 'group_key = "YWJj"'),
        "onboarding.group_key",
        id="reject/group-key-too-short",
    ),
    pytest.param(
        lambda t: _replace(
            t, f'group_key = "{KEY}"', f'group_key = "{KEY}"\nsymmetric_key = "{KEY}"'
        ),
        "onboarding.group_key",
        id="reject/two-onboarding-credentials",
    ),
    pytest.param(
        lambda t: _replace(t, f'group_key = "{KEY}"', 'key = "k.pem"'),
        "onboarding.key",
        id="reject/key-without-certificate",
    ),
    pytest.param(
        lambda t: _replace(t, "fraction = 0.7", "fraction = 1.5"),
        "renewal.fraction",
        id="reject/fraction-range",
    ),
    pytest.param(
        lambda t: _replace(t, "fraction = 0.7", "fraction = true"),
        "renewal.fraction",
        id="reject/fraction-bool",
    ),
    pytest.param(
        lambda t: _replace(t, "jitter = 0.1", "jitter = 0.4"),
        "renewal.jitter",
        id="reject/jitter-too-wide",
    ),
    pytest.param(
        lambda t: _replace(t, 'method = "dps"', 'method = "email"'),
        "renewal.method",
        id="reject/method",
    ),
    pytest.param(
        lambda t: _replace(t, 'key_type = "p384"', 'key_type = "ed25519"'),
        "renewal.key_type",
        id="reject/key-type",
    ),
    pytest.param(
        lambda t: _replace(t, 'retry_initial = "2s"', 'retry_initial = "soon"'),
        "renewal.retry_initial",
        id="reject/duration-text",
    ),
    pytest.param(
        lambda t: _replace(t, 'retry_max = "10m"', 'retry_max = "1s"'),
        "renewal.retry_max",
        id="reject/retry-max-below-initial",
    ),
    pytest.param(
        lambda t: _replace(t, 'server_backdate = "5m"', 'server_backdate = "2d"'),
        "clock.server_backdate",
        id="reject/backdate-range",
    ),
    pytest.param(
        lambda t: _replace(t, 'format = "json"', 'format = "xml"'),
        "log.format",
        id="reject/log-format",
    ),
    pytest.param(
        lambda t: _replace(t, "keepalive = 30", "keepalive = 5000"),
        "hub.keepalive",
        id="reject/keepalive-range",
    ),
    pytest.param(
        lambda t: (
            "hub = 3\n"
            + _replace(t, '[hub]\nport = 9883\naddress = "127.0.0.1"\nkeepalive = 30\n', "")
        ),
        "hub",
        id="reject/section-not-a-table",
    ),
    pytest.param(lambda t: t.replace("[dps]", "[dpsx]"), "dpsx", id="reject/unknown-section"),
]


@pytest.mark.parametrize(("edit", "key"), REJECTIONS)
def test_config_rejections_name_the_key(tmp_path: Path, edit: Any, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, edit(FULL)))
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_missing_dps_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"trust_anchor": "a", "state_dir": "s"}, base_dir=tmp_path)
    assert info.value.key in {"trust_anchor", "dps"}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param("this is = = not toml", "(file)", id="reject/not-toml"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key
    with pytest.raises(ConfigError) as missing:
        load_config(tmp_path / "absent.toml")
    assert missing.value.key == "(file)"


def test_cli_refuses_invalid_config_with_exit_2(tmp_path: Path) -> None:
    from certhub.cli_agent import agent

    path = write(tmp_path, FULL.replace("fraction = 0.7", "fraction = 2"))
    result = CliRunner().invoke(agent, ["--config", str(path)])
    assert result.exit_code == 2
    assert "renewal.fraction" in result.output


def test_cli_refuses_unknown_crash_step_with_exit_2(tmp_path: Path) -> None:
    from certhub.cli_agent import agent

    path = write(tmp_path, FULL)
    result = CliRunner().invoke(
        agent, ["--config", str(path)], env={"CERTHUB_AGENT_CRASH_AT": "lunch"}
    )
    assert result.exit_code == 2
    assert "CERTHUB_AGENT_CRASH_AT" in result.output
