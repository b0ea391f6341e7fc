"""``certhub agent`` exit codes that need no server (the rest: test_agent_integration)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from certhub.agent import KeyStore
from certhub.cli_agent import agent
from certhub.clock import SystemClock
from certhub.pki import create_root_ca
from certhub.rand import SystemRandom

KEY = "eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg="


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp_path: Path, onboarding: bool = True) -> Path:
    root = create_root_ca(common_name="anchor", clock=SystemClock(), rng=SystemRandom())
    (tmp_path / "anchor.pem").write_bytes(root.certificate.public_bytes(serialization.Encoding.PEM))
    text = f"""
trust_anchor = "anchor.pem"
state_dir = "state"
[dps]
host = "127.0.0.1"
port = {closed_port()}
id_scope = "0ne1"
registration_id = "cli-dev"
[renewal]
request_timeout = "2s"
"""
    if onboarding:
        text += f'[onboarding]\nsymmetric_key = "{KEY}"\n'
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_once_without_any_credential_asks_for_reonboarding(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        agent, ["--config", str(config(tmp_path, onboarding=False)), "--once"]
    )
    assert result.exit_code == 3
    assert "must be re-onboarded" in result.output


def test_once_with_the_server_unreachable_is_a_temporary_failure(tmp_path: Path) -> None:
    result = CliRunner().invoke(agent, ["--config", str(config(tmp_path)), "--once"])
    assert result.exit_code == 75


def test_locked_state_directory_is_an_error(tmp_path: Path) -> None:
    path = config(tmp_path)
    holder = KeyStore(tmp_path / "state")
    holder.open()
    try:
        result = CliRunner().invoke(agent, ["--config", str(path), "--once"])
    finally:
        holder.close()
    assert result.exit_code == 1
    assert "another agent" in result.output


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_module_entry_point_and_log_formats(tmp_path: Path, fmt: str) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "certhub.agent",
            "--config",
            str(config(tmp_path, False)),
            "--once",
            "--log-format",
            fmt,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 3
    line = next(x for x in run.stderr.splitlines() if "reonboard-required" in x)
    if fmt == "json":
        import json

        record = json.loads(line)
        assert record["event"] == "reonboard-required" and record["device"] == "cli-dev"
        assert record["level"] == "critical"
    else:
        assert "[cli-dev] reonboard-required:" in line
