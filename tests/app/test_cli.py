"""The admin CLI on a data directory: output, --json, and refusals with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from certhub.cli import cli


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    runner = CliRunner()
    out = runner.invoke(cli, ["init", "--data-dir", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    return str(tmp_path)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_init_json_prints_device_and_operator_facts(data_dir: str) -> None:
    code, out = run("init", "--data-dir", data_dir, "--json")
    facts = json.loads(out)
    assert code == 0
    assert facts["created"] is False
    assert facts["mqtt_port"] == 8883
    for key in ("id_scope", "group_primary_key", "trust_anchor", "service_connection_string"):
        assert facts[key]


def test_init_records_the_ports_it_is_given(data_dir: str) -> None:
    code, out = run(
        "init", "--data-dir", data_dir, "--https-port", "9443", "--mqtt-port", "9883", "--json"
    )
    assert code == 0, out
    facts = json.loads(out)
    assert (facts["https_port"], facts["mqtt_port"]) == (9443, 9883)
    assert ":9443;SharedAccessKeyName=iothubowner" in facts["service_connection_string"]
    # a later init without the options keeps them
    facts = json.loads(run("init", "--data-dir", data_dir, "--json")[1])
    assert (facts["https_port"], facts["mqtt_port"]) == (9443, 9883)


def test_init_refuses_a_port_out_of_range(data_dir: str) -> None:
    code, out = run("init", "--data-dir", data_dir, "--https-port", "70000")
    assert code == 2
    assert "--https-port" in out and "70000" in out


def test_policy_create_list_show(data_dir: str) -> None:
    code, out = run(
        "policy",
        "create",
        "sensors",
        "--data-dir",
        data_dir,
        "--validity",
        "14d",
        "--key-types",
        "p256,rsa2048",
        "--json",
    )
    assert code == 0, out
    created = json.loads(out)
    assert created["validitySeconds"] == 14 * 86400
    assert created["keyTypes"] == ["p256", "rsa2048"]
    assert created["issuingCa"]["subject"].startswith("CN=certhub default sensors")
    code, out = run("policy", "list", "--data-dir", data_dir, "--json")
    assert [p["name"] for p in json.loads(out)] == ["default", "sensors"]
    code, out = run("policy", "show", "sensors", "--data-dir", data_dir, "--json")
    assert json.loads(out)["name"] == "sensors"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["x1y", "--validity", "120s"], "development profile", id="reject/short-validity"
        ),
        pytest.param(["x1y", "--validity", "91d"], "validity", id="reject/long-validity"),
        pytest.param(["x1y", "--validity", "soon"], "duration", id="reject/bad-duration"),
        pytest.param(["x1y", "--key-types", "p521"], "unknown key type", id="reject/key-type"),
        pytest.param(["default"], "already exists", id="reject/duplicate"),
        pytest.param(["bad_name!"], "policy name", id="reject/name"),
    ],
)
def test_policy_create_refusals(data_dir: str, args: list[str], message: str) -> None:
    code, out = run("policy", "create", *args, "--data-dir", data_dir)
    assert code == 2
    assert message in out


def test_development_profile_allows_minutes(tmp_path: Path) -> None:
    code, out = run("init", "--data-dir", str(tmp_path), "--dev", "--json")
    assert code == 0 and json.loads(out)["development"] is True
    code, out = run(
        "policy", "create", "fast", "--validity", "120s", "--data-dir", str(tmp_path), "--json"
    )
    assert code == 0, out
    assert json.loads(out)["validitySeconds"] == 120
    code, out = run(
        "policy", "create", "too-fast", "--validity", "59s", "--data-dir", str(tmp_path)
    )
    assert code == 2


def test_enrollment_create_list_show(data_dir: str) -> None:
    code, out = run(
        "enrollment",
        "create",
        "--group",
        "line-3",
        "--data-dir",
        data_dir,
        "--json",
        "--initial-twin",
        '{"tags": {"line": 3}}',
    )
    assert code == 0, out
    group = json.loads(out)
    assert group["enrollmentGroupId"] == "line-3"
    assert group["attestation"]["type"] == "symmetricKey"
    assert group["credentialPolicyName"] == "default"
    assert group["initialTwin"] == {"tags": {"line": 3}}
    code, out = run(
        "enrollment",
        "create",
        "--individual",
        "dev-9",
        "--data-dir",
        data_dir,
        "--primary-key",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        "--json",
    )
    assert code == 0, out
    assert json.loads(out)["attestation"]["symmetricKey"]["primaryKey"].startswith("MDEy")
    code, out = run("enrollment", "list", "--data-dir", data_dir, "--json")
    names = sorted(e.get("enrollmentGroupId") or e.get("registrationId") for e in json.loads(out))
    assert names == ["default", "dev-9", "line-3"]
    code, out = run("enrollment", "show", "line-3", "--data-dir", data_dir, "--json")
    assert code == 0 and json.loads(out)["enrollmentGroupId"] == "line-3"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--group", "default"], "already exists", id="reject/duplicate"),
        pytest.param(["--group", "g1", "--policy", "nope"], "no active policy", id="reject/policy"),
        pytest.param(["--group", "g1", "--primary-key", "not base64!"], "base64", id="reject/key"),
        pytest.param(
            ["--group", "g1", "--primary-key", "c2hvcnQ="], "16 bytes", id="reject/short-key"
        ),
        pytest.param(["--group", "g1", "--individual", "d"], "exactly one", id="reject/both-kinds"),
        pytest.param(
            ["--group", "g1", "--initial-twin", "{"], "not valid JSON", id="reject/twin-json"
        ),
        pytest.param(
            ["--group", "g1", "--initial-twin", '{"x": 1}'], "tags", id="reject/twin-shape"
        ),
        pytest.param(
            ["--group", "g1", "--attestation", "x509"], "--certificate", id="reject/x509-no-cert"
        ),
    ],
)
def test_enrollment_create_refusals(data_dir: str, args: list[str], message: str) -> None:
    code, out = run("enrollment", "create", *args, "--data-dir", data_dir)
    assert code == 2, out
    assert message in out


def test_commands_refuse_uninitialised_directory(tmp_path: Path) -> None:
    code, out = run("policy", "list", "--data-dir", str(tmp_path / "nothing"))
    assert code == 2
    assert "not initialised" in out
