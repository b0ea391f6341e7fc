"""``certhub enrollment update|disable|delete`` (and create's --reprovision-policy)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dps_support import onboarding_ca

from certhub.cli import cli

KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    out = CliRunner().invoke(cli, ["init", "--data-dir", str(tmp_path / "d"), "--json"])
    assert out.exit_code == 0, out.output
    return str(tmp_path / "d")


def run(data_dir: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["enrollment", *args, "--data-dir", data_dir])
    return result.exit_code, result.output


def run_json(data_dir: str, *args: str) -> dict[str, Any]:
    code, out = run(data_dir, *args, "--json")
    assert code == 0, out
    value: dict[str, Any] = json.loads(out)
    return value


def test_update_changes_keys_status_policy_twin_and_reprovision(data_dir: str) -> None:
    created = run_json(data_dir, "create", "--individual", "dev-1", "--reprovision-policy", "never")
    assert created["reprovisionPolicy"] == {"updateHubAssignment": False, "migrateDeviceData": True}
    updated = run_json(
        data_dir,
        "update",
        "--individual",
        "dev-1",
        "--primary-key",
        KEY,
        "--status",
        "disabled",
        "--initial-twin",
        '{"tags": {"site": "b"}}',
        "--reprovision-policy",
        "reset",
        "--etag",
        created["etag"],
    )
    assert updated["attestation"]["symmetricKey"]["primaryKey"] == KEY
    assert updated["provisioningStatus"] == "disabled"
    assert updated["initialTwin"] == {"tags": {"site": "b"}}
    assert updated["reprovisionPolicy"] == {"updateHubAssignment": True, "migrateDeviceData": False}
    assert updated["etag"] != created["etag"]


def test_disable_and_delete(data_dir: str) -> None:
    assert run_json(data_dir, "disable", "default")["provisioningStatus"] == "disabled"
    assert run_json(data_dir, "delete", "default") == {
        "deleted": {"kind": "group", "name": "default"}
    }
    code, out = run(data_dir, "show", "default")
    assert code == 2 and "no group enrollment named 'default'" in out


def test_x509_group_certificates_are_replaced_by_upload(data_dir: str, tmp_path: Path) -> None:
    first, second = onboarding_ca("cli-ca-1"), onboarding_ca("cli-ca-2")
    paths = []
    for ca in (first, second):
        path = tmp_path / f"{ca.name}.pem"
        path.write_text(ca.pem)
        paths.append(str(path))
    created = run_json(
        data_dir, "create", "--group", "vendor", "--attestation", "x509", "--certificate", paths[0]
    )
    assert created["attestation"]["x509"]["certificates"] == [first.pem]
    updated = run_json(
        data_dir, "update", "vendor", "--certificate", paths[0], "--certificate", paths[1]
    )
    assert updated["attestation"]["x509"]["certificates"] == [first.pem, second.pem]
    assert len(updated["attestation"]["x509"]["thumbprints"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("update", "default"), "nothing to change", id="reject/nothing"),
        pytest.param(
            ("update", "nope", "--status", "enabled"), "no group enrollment", id="reject/unknown"
        ),
        pytest.param(
            ("update", "default", "--status", "disabled", "--etag", "stale"),
            "the enrollment changed",
            id="reject/etag",
        ),
        pytest.param(
            ("update", "default", "--primary-key", "%%"), "not valid base64", id="reject/key"
        ),
        pytest.param(
            ("update", "default", "--policy", "nope"), "no active policy", id="reject/policy"
        ),
        pytest.param(
            ("update", "default", "--initial-twin", "[1]"), "expected an object", id="reject/twin"
        ),
        pytest.param(
            ("disable", "--individual", "ghost"), "no individual enrollment", id="reject/disable"
        ),
        pytest.param(("delete", "ghost"), "no group enrollment", id="reject/delete"),
        pytest.param(
            ("delete", "default", "--etag", "stale"),
            "the enrollment changed",
            id="reject/delete-etag",
        ),
    ],
)
def test_refusals_exit_2(data_dir: str, args: tuple[str, ...], message: str) -> None:
    code, out = run(data_dir, *args)
    assert code == 2
    assert message in out


def test_certificate_option_is_refused_for_symmetric_keys(data_dir: str, tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    path.write_text(onboarding_ca("cli-ca-3").pem)
    code, out = run(data_dir, "update", "default", "--certificate", str(path))
    assert code == 2 and "only for x509" in out
