"""The official Azure IoT service SDK (azure-iot-hub 2.7.0, from .venv-azure) against a
running certhub over HTTPS, with a real device connected to the hub over MQTT/TLS."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from live_support import ServiceEndpoint, https_service

from serverkit import (
    DeviceClient,
    RunningServer,
    create_device,
    issue_certificate,
    make_key_and_csr,
    open_authority,
    running_server,
    write_pems,
)

ROOT = Path(__file__).resolve().parents[2]
AZURE_PYTHON = ROOT / ".venv-azure" / "bin" / "python"
SCRIPT = Path(__file__).with_name("azure_service_script.py")

pytestmark = [
    pytest.mark.azure_sdk,
    pytest.mark.skipif(
        not AZURE_PYTHON.exists(),
        reason=f"{AZURE_PYTHON} is missing: `make azure-venv` builds the Azure SDK virtualenv",
    ),
]


def _sdk(endpoint: ServiceEndpoint, phase: str, device_id: str) -> dict[str, Any]:
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(endpoint.trust_anchor)}
    command = [str(AZURE_PYTHON), str(SCRIPT), phase, endpoint.connection_string(), device_id]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _connect(running: RunningServer, device_id: str, directory: Path) -> DeviceClient:
    key, csr = make_key_and_csr(device_id)
    leaf = issue_certificate(open_authority(running.data_dir, running.store), device_id, csr)
    client = DeviceClient(running, device_id, write_pems(directory, device_id, key, leaf))
    assert client.connect() == 0
    assert client.subscribe("$iothub/twin/PATCH/properties/desired/#") == [1]
    return client


def test_service_sdk_devices_twins_query_and_statistics(tmp_path: Path) -> None:
    with (
        running_server(tmp_path / "data", https_port=0) as running,
        https_service(running) as endpoint,
    ):
        for i in range(4):
            create_device(running.store, f"other-{i}")
        created = _sdk(endpoint, "create", "sdk-dev")
        assert created["auth"] == "certificateAuthority"
        assert created["status"] == "enabled" and created["desired_version"] == 1

        device = _connect(running, "sdk-dev", tmp_path / "pems")
        with device:
            twin = _sdk(endpoint, "twin", "sdk-dev")
            assert twin["tags"] == {"site": "lab"} and twin["desired"] == 7
            version = twin["version"]
            assert version == twin["version_before"] + 1 and twin["same_etag"] is True
            assert twin["stale"]["status"] == 412
            assert twin["stale"]["code"] == "PreconditionFailed"
            topic = f"$iothub/twin/PATCH/properties/desired/?$version={version}"
            patch = device.expect(topic, timeout=3)
            assert json.loads(patch.payload) == {"interval": 7, "$version": version}

            finish = _sdk(endpoint, "finish", "sdk-dev")
            assert device.wait_disconnected(3), "disabling did not drop the connected device"
        assert (finish["status"], finish["reason"]) == ("disabled", "sdk test")
        assert finish["ids"] == ["other-0", "other-1", "other-2", "other-3", "sdk-dev"]
        assert finish["pages"] == 3 and finish["item_type"] == "twin"
        assert (finish["total"], finish["disabled_count"]) == (5, 1)
        assert finish["bad_query"]["status"] == 400
        assert "line 1, column" in finish["bad_query"]["body"]
        assert finish["missing"] == {
            "status": 404,
            "body": finish["missing"]["body"],
            "code": "DeviceNotFound",
        }


def test_service_sdk_bulk_registry_operations(tmp_path: Path) -> None:
    with (
        running_server(tmp_path / "data", https_port=0) as running,
        https_service(running) as endpoint,
    ):
        result = _sdk(endpoint, "bulk", "bulk")
    assert (result["created"], result["created_errors"]) == (True, 0)
    assert result["mixed"] is False
    assert result["errors"] == [["bulk-0", "DeviceAlreadyExists", "create"]]
    assert result["remaining"] == ["bulk-0", "bulk-2"]
    assert result["auth"] == "certificateAuthority"
