"""The official Azure IoT device SDK (azure-iot-device 2.14.0, from .venv-azure) against
certhub on 127.0.0.1:8883 with an X.509 certificate certhub issued."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certhub.hub.topics import Subscription
from serverkit import RunningServer, device_with_certificate, running_server

ROOT = Path(__file__).resolve().parents[2]
AZURE_PYTHON = ROOT / ".venv-azure" / "bin" / "python"
SCRIPT = Path(__file__).with_name("azure_device_script.py")
WANTED = Subscription.DESIRED | Subscription.METHODS | Subscription.C2D

pytestmark = [
    pytest.mark.azure_sdk,
    pytest.mark.skipif(
        not AZURE_PYTHON.exists(),
        reason=f"{AZURE_PYTHON} is missing: `make azure-venv` builds the Azure SDK virtualenv",
    ),
]


@pytest.fixture
def hub_on_8883(tmp_path: Path) -> Iterator[RunningServer]:
    """The SDK hard-codes port 8883."""
    with running_server(tmp_path / "data", port=8883) as running:
        yield running


def _wait_subscribed(running: RunningServer, device_id: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        session = running.server.hub_frontend.sessions.get(device_id)
        if session is not None and session.subscriptions & WANTED == WANTED:
            return
        time.sleep(0.05)
    raise AssertionError("the SDK did not subscribe to desired patches, methods and C2D")


def test_device_sdk_twin_methods_and_c2d(hub_on_8883: RunningServer, tmp_path: Path) -> None:
    running = hub_on_8883
    pems = device_with_certificate(running, "sdk-device", tmp_path / "pems")
    command = [str(AZURE_PYTHON), str(SCRIPT), "127.0.0.1", "sdk-device", str(pems.chain),
               str(pems.key), str(running.trust_anchor)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    steps: dict[str, dict[str, object]] = {}
    try:
        assert process.stdout is not None
        for line in process.stdout:
            step = json.loads(line)
            steps[step["step"]] = step
            if step["step"] == "ready":
                _wait_subscribed(running, "sdk-device")
                hub = running.server.hub
                running.call(hub.patch_desired("sdk-device", {"interval": 5}))
                assert running.call(hub.invoke_method("sdk-device", "reboot", {"in": 1}, 15)) == (
                    200,
                    {"done": True},
                )
                assert running.call(hub.send_c2d("sdk-device", b"hello", {"k": "v"}))
        assert process.wait(60) == 0
    finally:
        process.kill()
    twin = steps["twin"]["twin"]
    assert isinstance(twin, dict)
    assert twin["reported"] == {"$version": 1}
    assert "certificateRenewal" in twin["desired"]  # the renewal window, set at first connect
    patch = steps["desired"]["patch"]
    assert patch == {"interval": 5, "$version": twin["desired"]["$version"] + 1}
    assert steps["method"] == {"step": "method", "name": "reboot", "payload": {"in": 1}}
    assert steps["c2d"]["data"] == "hello"
    assert steps["c2d"]["properties"] == {"k": "v"}
    assert steps["done"]["ok"] is True
    twin = running.store.get_twin("sdk-device")
    assert twin.reported == {"sdk": {"ok": True, "n": 1}}
