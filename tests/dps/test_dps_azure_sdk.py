"""The official Azure IoT device SDK (azure-iot-device 2.14.0, from .venv-azure):
ProvisioningDeviceClient registers with certhub on 127.0.0.1:8883 (symmetric key, and
an X.509 onboarding certificate), gets a chain for the CSR it carried in
``provisioning_payload``, and IoTHubDeviceClient then connects with that certificate."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from dps_support import DpsEnv, csr_b64, make_env, onboarding_ca, p256

from serverkit import RunningServer, running_server

ROOT = Path(__file__).resolve().parents[2]
AZURE_PYTHON = ROOT / ".venv-azure" / "bin" / "python"
SCRIPT = Path(__file__).with_name("azure_dps_script.py")

pytestmark = [
    pytest.mark.azure_sdk,
    pytest.mark.skipif(
        not AZURE_PYTHON.exists(),
        reason=f"{AZURE_PYTHON} is missing: `make azure-venv` builds the Azure SDK virtualenv",
    ),
]


@pytest.fixture
def on_8883(tmp_path: Path) -> Iterator[tuple[RunningServer, DpsEnv]]:
    """The SDK hard-codes port 8883 for DPS and the hub alike."""
    env = make_env(tmp_path)
    try:
        with running_server(env.data_dir, port=8883, https_port=0) as running:
            yield running, env
    finally:
        env.close()


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _register(
    running: RunningServer, env: DpsEnv, tmp_path: Path, registration_id: str, *credential: str
) -> dict[str, dict[str, object]]:
    key = p256()
    key_file = _write(
        tmp_path / f"{registration_id}.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    command = [
        str(AZURE_PYTHON),
        str(SCRIPT),
        env.id_scope,
        registration_id,
        str(running.trust_anchor),
        str(tmp_path),
        csr_b64(registration_id, key),
        key_file,
        *credential,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    steps = {}
    for line in done.stdout.splitlines():
        step = json.loads(line)
        steps[step["step"]] = step
    assert done.returncode == 0, (steps, done.stderr[-3000:])
    return steps


def _check(steps: dict[str, dict[str, object]], running: RunningServer, device_id: str) -> None:
    registered = steps["registered"]
    assert registered["status"] == "assigned"
    assert registered["device_id"] == device_id
    assert registered["assigned_hub"] == running.hub_host
    assert registered["payload_keys"] == ["issuedCertificateChain"]
    assert steps["chain"]["length"] == 3
    assert {"connected", "sent", "done"} <= steps.keys()
    device = running.store.get_device(device_id)
    assert device is not None and device.auth_type == "certificateAuthority"
    assert len(running.store.list_certificates(device_id=device_id)) == 1


def test_sdk_symmetric_key_registration_then_hub(
    on_8883: tuple[RunningServer, DpsEnv], tmp_path: Path
) -> None:
    running, env = on_8883
    steps = _register(
        running, env, tmp_path, "sdk-sas-1", "--symmetric-key", env.device_key("sdk-sas-1")
    )
    _check(steps, running, "sdk-sas-1")


def test_sdk_x509_onboarding_registration_then_hub(
    on_8883: tuple[RunningServer, DpsEnv], tmp_path: Path
) -> None:
    running, env = on_8883
    ca = onboarding_ca("sdk-vendor-ca")
    env.enroll_x509_group("sdk-vendor", ca)
    running.refresh_trust()
    key, cert = ca.issue("sdk-x509-1")
    cert_file = _write(tmp_path / "onboarding.pem", cert.public_bytes(serialization.Encoding.PEM))
    key_file = _write(
        tmp_path / "onboarding.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    steps = _register(running, env, tmp_path, "sdk-x509-1", "--cert", cert_file, "--key", key_file)
    _check(steps, running, "sdk-x509-1")
