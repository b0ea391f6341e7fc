"""Registry changes made by another process reach live sessions within a second (through
the ``events`` table), on SQLite and on PostgreSQL; CA changes rebuild the TLS trust."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from serverkit import (
    DeviceClient,
    RunningServer,
    device_with_certificate,
    running_server,
)

SCRIPT = Path(__file__).with_name("store_change.py")


@pytest.fixture
def node(db_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    """A server on a fresh store, once per store kind (SQLite, PostgreSQL)."""
    url = None if db_url.startswith("sqlite") else db_url
    with running_server(tmp_path / "data", database_url=url) as running:
        yield running


def change(running: RunningServer, action: str, arg: str) -> None:
    """Run the change in a separate process (its own connection to the store)."""
    subprocess.run(
        [sys.executable, str(SCRIPT), running.database_url, str(running.data_dir), action, arg],
        check=True,
        timeout=60,
    )


def _closed(reason: str) -> float:
    value = REGISTRY.get_sample_value("certhub_hub_sessions_closed_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        pytest.param("disable", "device-disabled", id="disable"),
        pytest.param("delete", "device-deleted", id="delete"),
        pytest.param("rotate", "revocation-id-rotated", id="revoke-identifier"),
        pytest.param("revoke-serial", "certificate-revoked", id="revoke-serial"),
    ],
)
def test_a_change_from_another_process_closes_the_session_within_a_second(
    node: RunningServer, device_id: str, pems_dir: Path, action: str, reason: str
) -> None:
    pems = device_with_certificate(node, device_id, pems_dir)
    assert pems.leaf is not None
    before = _closed(reason)
    with DeviceClient(node, device_id, pems) as client:
        assert client.connect() == 0
        change(node, action, pems.leaf.serial_hex if action == "revoke-serial" else device_id)
        changed = time.monotonic()
        assert client.wait_disconnected(3.0)
        assert time.monotonic() - changed < 1.0
    assert _closed(reason) == before + 1
    with DeviceClient(node, device_id, pems) as again:
        assert again.connect() == 5


def test_a_policy_created_elsewhere_is_trusted_by_new_handshakes(
    node: RunningServer, device_id: str, pems_dir: Path
) -> None:
    policy = f"p-{device_id}"
    change(node, "create-policy", policy)
    changed = time.monotonic()
    pems = device_with_certificate(node, device_id, pems_dir, policy=policy)
    code = None
    while time.monotonic() - changed < 1.0 and code != 0:
        with DeviceClient(node, device_id, pems) as client:
            code = client.connect()
    assert code == 0


def test_a_revoked_issuer_ends_its_sessions_and_handshakes(
    node: RunningServer, device_id: str, pems_dir: Path
) -> None:
    policy = f"r-{device_id}"
    change(node, "create-policy", policy)
    node.refresh_trust()
    pems = device_with_certificate(node, device_id, pems_dir, policy=policy)
    with DeviceClient(node, device_id, pems) as client:
        assert client.connect() == 0
        change(node, "revoke-issuer", policy)
        changed = time.monotonic()
        assert client.wait_disconnected(3.0)
        assert time.monotonic() - changed < 1.0
    refused = REGISTRY.get_sample_value(
        "certhub_hub_refusals_total", {"reason": "issuer-not-a-policy-ca"}
    )
    with DeviceClient(node, device_id, pems) as again:
        assert again.connect() == 5  # the chain still verifies at TLS through the root
    assert (
        REGISTRY.get_sample_value(
            "certhub_hub_refusals_total", {"reason": "issuer-not-a-policy-ca"}
        )
        == (refused or 0) + 1
    )


def test_desired_patch_on_one_node_reaches_a_session_on_another(
    node: RunningServer, device_id: str, pems_dir: Path, tmp_path: Path
) -> None:
    if node.database_url.startswith("sqlite"):
        pytest.skip("several nodes share a PostgreSQL store")
    pems = device_with_certificate(node, device_id, pems_dir)
    with (
        running_server(node.data_dir, database_url=node.database_url) as other,
        DeviceClient(other, device_id, pems) as client,
    ):
        assert client.connect() == 0
        client.subscribe("$iothub/twin/PATCH/properties/desired/#")
        version = node.call(node.server.hub.patch_desired(device_id, {"mode": "eco"}))
        topic = f"$iothub/twin/PATCH/properties/desired/?$version={version}"
        message = client.expect(topic, timeout=2)  # skips the renewal window's own patch
        assert json.loads(message.payload) == {"mode": "eco", "$version": version}
