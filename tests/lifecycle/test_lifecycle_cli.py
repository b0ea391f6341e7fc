"""The lifecycle commands: ``certhub policy revoke-issuer|rotate-issuer|delete|retire-drained``,
``certhub ca list`` (on the data directory) and ``certhub device revoke`` (over HTTPS)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from lifecycle_support import add_group, closes_within, dps_register

from certhub.bootstrap import service_keys
from certhub.cli import cli
from serverkit import DeviceClient, RunningServer

_names = itertools.count(1)


def run(hub: RunningServer, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--data-dir", str(hub.data_dir)])


def run_json(hub: RunningServer, *args: str) -> Any:
    result = run(hub, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def new_policy(hub: RunningServer) -> str:
    name = f"cli-{next(_names)}"
    run_json(hub, "policy", "create", name, "--validity", "1h")
    hub.refresh_trust()  # rather than waiting for the change feed (~200 ms)
    return name


@pytest.mark.parametrize(
    "command",
    [
        pytest.param("revoke-issuer", id="reject/revoke-issuer-unknown-policy"),
        pytest.param("rotate-issuer", id="reject/rotate-issuer-unknown-policy"),
        pytest.param("delete", id="reject/delete-unknown-policy"),
    ],
)
def test_an_unknown_policy_exits_2(hub: RunningServer, command: str) -> None:
    result = run(hub, "policy", command, "no-such-policy")
    assert result.exit_code == 2
    assert "no active policy named 'no-such-policy'" in result.output


def test_rotate_issuer_json(hub: RunningServer) -> None:
    name = new_policy(hub)
    out = run_json(hub, "policy", "rotate-issuer", name, "--reason", "yearly")
    assert out["policy"] == name
    assert out["issuingCa"]["state"] == "active"
    assert [c["state"] for c in out["previousCas"]] == ["active"]
    assert out["revokedCertificates"] == 0
    shown = run_json(hub, "policy", "show", name)
    assert shown["issuingCa"]["serial"] == out["issuingCa"]["serialNumber"]
    entry = hub.store.list_audit("policy", name)[0]
    assert (entry.action, entry.actor, entry.reason) == ("policy.rotate-issuer", "cli", "yearly")


def test_revoke_issuer_closes_sessions_and_prints_a_summary(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    registration = dps_register(hub, device_id, pems_dir)
    assert registration.pems is not None
    name = "default"
    with DeviceClient(hub, device_id, registration.pems) as client:
        assert client.connect() == 0
        result = run(hub, "policy", "revoke-issuer", name, "--reason", "drill")
        closes_within(client, 1.0)
    assert result.exit_code == 0, result.output
    assert "issuer revoked" in result.output
    assert "certificates revoked" in result.output
    again = dps_register(hub, device_id, pems_dir / "2")
    assert again.pems is not None
    with DeviceClient(hub, device_id, again.pems) as client:
        assert client.connect() == 0


def test_delete_json_then_delete_again_exits_2(hub: RunningServer) -> None:
    name = new_policy(hub)
    assert run_json(hub, "policy", "delete", name, "--reason", "unused")["state"] == "deleted"
    assert run(hub, "policy", "delete", name).exit_code == 2
    assert run(hub, "policy", "revoke-issuer", name).exit_code == 2
    retired = run_json(hub, "policy", "retire-drained")
    assert any(c["policyId"] is not None and c["state"] == "retired" for c in retired)


def test_ca_list_and_expiring(hub: RunningServer) -> None:
    every = run_json(hub, "ca", "list")
    assert {"root", "issuing", "server"} <= {c["kind"] for c in every}
    assert run_json(hub, "ca", "list", "--expiring-within", "1d") == []
    soon = run_json(hub, "ca", "list", "--expiring-within", "366d")
    assert soon and {c["kind"] for c in soon} == {"issuing"}
    bad = run(hub, "ca", "list", "--expiring-within", "soon")
    assert bad.exit_code == 2
    assert "--expiring-within" in bad.output


def _connection(hub: RunningServer) -> list[str]:
    key = service_keys(hub.store)["iothubowner"]["primaryKey"]
    port = hub.server.https_port
    conn = f"HostName=localhost:{port};SharedAccessKeyName=iothubowner;SharedAccessKey={key}"
    return ["--connection-string", conn, "--ca-file", str(hub.trust_anchor)]


def test_device_revoke_over_https(hub: RunningServer, device_id: str, pems_dir: Path) -> None:
    registration = dps_register(hub, device_id, pems_dir)
    assert registration.pems is not None
    args = ["device", "revoke", device_id, "--reason", "sold", "--disable", "--json"]
    result = CliRunner().invoke(cli, [*args, *_connection(hub)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["deviceId"], out["status"], len(out["revokedSerials"])) == (
        device_id,
        "disabled",
        1,
    )
    with DeviceClient(hub, device_id, registration.pems) as client:
        assert client.connect() == 5


def test_device_revoke_of_an_unknown_device_exits_2(hub: RunningServer) -> None:
    result = CliRunner().invoke(cli, ["device", "revoke", "nobody", *_connection(hub)])
    assert result.exit_code == 2
    assert "404" in result.output


def test_revoke_issuer_from_another_process_closes_the_session_within_a_second(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    name = new_policy(hub)
    key = add_group(hub, f"grp-{name}", name)
    registration = dps_register(hub, device_id, pems_dir, key)
    assert registration.pems is not None
    command = [sys.executable, "-m", "certhub.cli", "policy", "revoke-issuer", name]
    with DeviceClient(hub, device_id, registration.pems) as client:
        assert client.connect() == 0
        done = subprocess.run(
            [*command, "--data-dir", str(hub.data_dir)], capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        closes_within(client, 1.0)
    with DeviceClient(hub, device_id, registration.pems) as client:
        assert client.connect() == 5
    unknown = subprocess.run(
        [*command[:-1], "nope", "--data-dir", str(hub.data_dir)], capture_output=True, timeout=60
    )
    assert unknown.returncode == 2
