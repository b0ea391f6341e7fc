"""The operator CLI (``certhub device|twin|query|certs``) against a running certhub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner
from live_support import ServiceEndpoint, https_service

from certhub import cli_ops
from serverkit import running_server


@pytest.fixture(scope="module")
def ops() -> click.Group:
    group = click.Group("certhub")
    cli_ops.register(group)
    return group


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceEndpoint]:
    with (
        running_server(tmp_path_factory.mktemp("ops") / "data", https_port=0) as running,
        https_service(running) as service,
    ):
        yield service


@pytest.fixture
def run(ops: click.Group, endpoint: ServiceEndpoint) -> Any:
    env = {
        "CERTHUB_CONNECTION_STRING": endpoint.connection_string(),
        "CERTHUB_CA_FILE": str(endpoint.trust_anchor),
    }

    def invoke(*args: str, env_extra: dict[str, str] | None = None) -> tuple[int, str]:
        result = CliRunner().invoke(ops, list(args), env={**env, **(env_extra or {})})
        return result.exit_code, result.output

    return invoke


def _json(run: Any, *args: str) -> Any:
    code, out = run(*args, "--json")
    assert code == 0, out
    return json.loads(out)


def test_device_lifecycle_through_the_cli(run: Any) -> None:
    created = _json(run, "device", "create", "cli-1")
    assert created["authentication"]["type"] == "certificateAuthority"
    assert _json(run, "device", "show", "cli-1")["deviceId"] == "cli-1"
    assert "cli-1" in [d["deviceId"] for d in _json(run, "device", "list")]
    disabled = _json(run, "device", "disable", "cli-1", "--reason", "lost")
    assert (disabled["status"], disabled["statusReason"]) == ("disabled", "lost")
    assert _json(run, "device", "enable", "cli-1")["status"] == "enabled"
    updated = _json(run, "device", "update", "cli-1", "--status-reason", "ok")
    assert updated["statusReason"] == "ok"
    revoked = _json(run, "device", "revoke", "cli-1", "--reason", "test")
    assert revoked["revokedSerials"] == []
    assert _json(run, "device", "delete", "cli-1") == {"deleted": "cli-1"}
    code, out = run("device", "show", "cli-1")
    assert code == 2 and "DeviceNotFound" in out


def test_sas_and_self_signed_devices(run: Any) -> None:
    sas = _json(run, "device", "create", "cli-sas", "--auth", "sas")
    assert sas["authentication"]["symmetricKey"]["primaryKey"]
    thumb = "ab" * 20
    x = _json(
        run, "device", "create", "cli-x", "--auth", "self-signed", "--primary-thumbprint", thumb
    )
    assert x["authentication"]["x509Thumbprint"]["primaryThumbprint"] == thumb


def test_twin_show_and_update(run: Any) -> None:
    _json(run, "device", "create", "cli-t")
    twin = _json(run, "twin", "update", "cli-t", "--tags", '{"site": "a"}', "--desired", '{"x": 1}')
    assert twin["tags"] == {"site": "a"} and twin["properties"]["desired"]["x"] == 1
    code, out = run("twin", "update", "cli-t", "--tags", '{"site": "b"}', "--etag", "stale")
    assert code == 2 and "PreconditionFailed" in out
    assert _json(run, "twin", "show", "cli-t")["tags"] == {"site": "a"}
    code, out = run("twin", "show", "cli-t")
    assert code == 0 and "tags" in out


def test_query_follows_pages_and_reports_syntax_errors(run: Any) -> None:
    for i in range(3):
        _json(run, "device", "create", f"cli-q{i}")
    items = _json(
        run,
        "query",
        "SELECT deviceId FROM devices WHERE STARTSWITH(deviceId, 'cli-q')",
        "--page-size",
        "1",
    )
    assert items == [{"deviceId": f"cli-q{i}"} for i in range(3)]
    code, out = run("query", "SELECT deviceId FROM devices", "--top", "2")
    assert code == 0 and "2 item(s)" in out
    code, out = run("query", "SELECT * FROM devices WHERE")
    assert code == 2 and "ArgumentInvalid" in out and "line 1, column" in out


def test_certs_list_filters(run: Any, endpoint: ServiceEndpoint) -> None:
    _json(run, "device", "create", "cli-c")
    soon = _json(run, "certs", "list", "--expiring-within", "7d", "--state", "overdue")
    assert soon == []
    code, out = run("certs", "list")
    assert code == 0 and "serialNumber" in out


def test_device_health_pages_and_filters(run: Any) -> None:
    for i in range(3):
        _json(run, "device", "create", f"cli-h{i}")
    _json(run, "device", "disable", "cli-h1")
    every = _json(run, "device", "health")
    mine = {d["deviceId"]: d for d in every if d["deviceId"].startswith("cli-h")}
    assert {k: v["lifecycle"] for k, v in mine.items()} == {
        "cli-h0": "no-certificate",
        "cli-h1": "disabled",
        "cli-h2": "no-certificate",
    }
    assert mine["cli-h1"]["status"] == "disabled" and mine["cli-h0"]["certificate"] is None
    disabled = _json(run, "device", "health", "--lifecycle", "disabled")
    assert "cli-h1" in [d["deviceId"] for d in disabled]
    assert {d["lifecycle"] for d in disabled} == {"disabled"}
    two = _json(run, "device", "health", "--limit", "2")
    assert [d["deviceId"] for d in two] == [d["deviceId"] for d in every[:2]]
    code, out = run("device", "health", "--lifecycle", "disabled")
    assert code == 0 and "cli-h1" in out and "disabled" in out


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        pytest.param(
            ("device", "list"),
            {"CERTHUB_CONNECTION_STRING": "HostName=x"},
            "missing SharedAccessKey, SharedAccessKeyName",
            id="reject/connection-string",
        ),
        pytest.param(
            ("twin", "update", "x", "--tags", "{oops"),
            {},
            "--tags: not valid JSON",
            id="reject/tags-json",
        ),
        pytest.param(("twin", "update", "x"), {}, "nothing to change", id="reject/empty-update"),
        pytest.param(
            ("device", "health", "--lifecycle", "fine"),
            {},
            "Invalid value for '--lifecycle'",
            id="reject/lifecycle",
        ),
        pytest.param(
            ("certs", "list", "--expiring-within", "soon"),
            {},
            "--expiring-within",
            id="reject/duration",
        ),
        pytest.param(
            ("device", "create", "y", "--auth", "self-signed"),
            {},
            "--primary-thumbprint",
            id="reject/thumbprint",
        ),
        pytest.param(
            ("device", "create", "bad id"), {}, "ArgumentInvalid", id="reject/server-refusal"
        ),
    ],
)
def test_refusals_exit_2_with_the_message(
    run: Any, args: tuple[str, ...], env: dict[str, str], needle: str
) -> None:
    code, out = run(*args, env_extra=env)
    assert code == 2, out
    assert needle in out


def test_an_unreachable_server_exits_1(run: Any, endpoint: ServiceEndpoint) -> None:
    unreachable = endpoint.connection_string().replace(f":{endpoint.port}", ":1")
    code, out = run("device", "list", env_extra={"CERTHUB_CONNECTION_STRING": unreachable})
    assert code == 1 and "cannot reach" in out


def test_server_errors_exit_1_with_the_message() -> None:
    body = {"Message": "ErrorCode:ServerError;boom", "ExceptionMessage": "x"}
    transport = httpx.MockTransport(lambda request: httpx.Response(500, json=body))
    key = "a" * 44
    client = cli_ops.ServiceClient(
        f"HostName=h:1;SharedAccessKeyName=iothubowner;SharedAccessKey={key}", None, transport
    )
    with pytest.raises(cli_ops.ServerFailed) as info:
        client.request("GET", "/devices")
    assert info.value.exit_code == 1
    assert info.value.message == "server error 500: ServerError: boom"
