"""``certhub audit``: filters, JSON and table output, refusals (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from certhub.bootstrap import initialize
from certhub.cli import cli
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import AuditEvent
from serverkit import create_device


@pytest.fixture
def data(db_url: str, tmp_path: Path) -> Iterator[tuple[list[str], Store]]:
    """An initialised store with a revoked device and an old entry; CLI args to reach it."""
    initialize(tmp_path / "data", database_url=db_url)
    store = Store.open(db_url)
    now = dt.datetime.now(dt.UTC)
    for device_id in ("dev-a", "dev-b"):
        create_device(store, device_id)
    store.revoke_device(
        "dev-a", SystemRandom().token_bytes(32), now=now, actor="ops", reason="keyCompromise"
    )
    old = AuditEvent(
        at=now - dt.timedelta(days=3),
        actor="ops",
        action="device.disable",
        subject_type="device",
        subject_id="dev-b",
        reason="old",
    )
    store.append_audit(old)
    yield ["--data-dir", str(tmp_path / "data"), "--database", db_url], store
    store.close()


def _run(args: list[str]) -> Any:
    result = CliRunner().invoke(cli, ["audit", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_filters(data: tuple[list[str], Store]) -> None:
    base, _ = data
    everything = _run([*base, "--json"])
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)
    assert {"namespace.create", "device.revoke", "device.disable"} <= {
        e["action"] for e in everything
    }
    [revoke] = _run([*base, "--json", "--device", "dev-a"])
    assert (revoke["action"], revoke["actor"], revoke["reason"]) == (
        "device.revoke",
        "ops",
        "keyCompromise",
    )
    assert revoke["subjectType"] == "device" and revoke["at"].endswith("Z")
    assert [e["subjectId"] for e in _run([*base, "--json", "--action", "device.*"])] == [
        "dev-b",
        "dev-a",
    ]
    assert _run([*base, "--json", "--action", "device"]) == []  # exact unless it ends in *
    recent = _run([*base, "--json", "--since", "1d"])
    assert "dev-b" not in {e["subjectId"] for e in recent}
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%S")
    assert "dev-b" in {e["subjectId"] for e in _run([*base, "--json", "--since", since])}
    assert len(_run([*base, "--json", "--limit", "1"])) == 1


def test_table_output(data: tuple[list[str], Store]) -> None:
    base, _ = data
    result = CliRunner().invoke(cli, ["audit", *base, "--device", "dev-a"])
    assert result.exit_code == 0
    assert "device.revoke" in result.output and "keyCompromise" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--since", "yesterday"], "neither a duration", id="reject/since"),
        pytest.param(["--limit", "0"], "0 is not in the range", id="reject/limit"),
    ],
)
def test_refusals(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["audit", "--data-dir", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_uninitialised_data_dir_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["audit", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "is not initialised" in " ".join(result.output.split())
