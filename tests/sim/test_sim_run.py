"""The simulator and the demo against a real certhub on loopback (about 2 minutes).

``simulate``: 20 devices on 60-second certificates (10 s backdate) for 75 s — every
device provisions and renews at least once, none lets its certificate expire, and the
JSON report has its documented shape. ``demo``: a short run with one revoked device
(recovers through DPS) and one disabled device (stays out) exits 0.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from certhub.cli_sim import demo, simulate
from serverkit import running_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FIGURES = {
    "devices",
    "provisioned",
    "connected",
    "renewals",
    "renewals_via_dps",
    "renewals_in_flight",
    "recoveries",
    "renewals_per_device",
    "expiries",
    "expired_devices",
    "failures",
    "renewal_latency_seconds",
    "oldest_in_flight_seconds",
}


def test_simulate_short_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    report_path = tmp_path / "report.json"
    with running_server(data) as running:
        result = CliRunner().invoke(
            simulate,
            [
                "--data-dir", str(data),
                "--port", str(running.port),
                "--devices", "20",
                "--validity", "60s",
                "--backdate", "10s",
                "--duration", "75s",
                "--dps-share", "0.1",
                "--no-live",
                "--json", str(report_path),
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        via = {c.requested_via for c in running.store.list_certificates(device_id="sim-0009")}
    assert "Fleet summary" in result.output
    report = json.loads(report_path.read_text())
    assert set(report) == {
        "format",
        "parameters",
        "elapsed_seconds",
        "interrupted",
        "figures",
        "devices",
    }
    assert report["format"] == 1 and report["interrupted"] is False
    assert report["parameters"]["devices"] == 20
    assert report["parameters"]["validity_seconds"] == 60.0
    figures = report["figures"]
    assert set(figures) == FIGURES
    assert figures["devices"] == figures["provisioned"] == 20
    assert figures["expiries"] == figures["expired_devices"] == 0
    assert figures["renewals_per_device"]["min"] >= 1
    assert figures["renewals_via_dps"] >= 2
    latency = figures["renewal_latency_seconds"]
    assert latency["count"] >= 20 and 0 <= latency["p50"] <= latency["p99"]
    assert len(report["devices"]) == 20
    for device in report["devices"].values():
        assert device["provisioned"] is True
        assert device["renewals"] >= 1 and device["expiries"] == 0
    assert via == {"dps"}  # sim-0009 is one of the DPS renewers (share 0.1)


def test_demo_short_run(tmp_path: Path) -> None:
    report_path = tmp_path / "demo.json"
    result = CliRunner().invoke(
        demo,
        [
            "--data-dir", str(tmp_path / "data"),
            "--mqtt-port", "0",
            "--https-port", "0",
            "--devices", "6",
            "--validity", "60s",
            "--duration", "40s",
            "--revoke", "1",
            "--disable", "1",
            "--no-live",
            "--json", str(report_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "connection facts" in result.output and "Fleet summary" in result.output
    assert re.search(r"https://127\.0\.0\.1:\d+/dashboard/", result.output)
    assert "dashboard login" in result.output and "/metrics" in result.output
    assert "1 recovered via DPS" in result.output and "1 kept out" in result.output
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    assert report["revoked"] == {"devices": ["demo-0000"], "recovered": ["demo-0000"]}
    assert report["disabled"] == {"devices": ["demo-0001"], "kept_out": ["demo-0001"]}
    assert report["figures"]["provisioned"] == 6 and report["figures"]["expiries"] == 0


def test_demo_prints_the_connection_string_with_the_port_it_serves() -> None:
    from certhub.bootstrap import InitResult
    from certhub.sim.demo import _connection_string

    init = InitResult(
        data_dir="d",
        database_url="sqlite://",
        namespace="default",
        id_scope="0ne1",
        hub_host="localhost",
        mqtt_port=8883,
        https_port=8443,
        enrollment_group="default",
        group_primary_key="k",
        trust_anchor="t.pem",
        service_connection_string="HostName=localhost:8443;SharedAccessKeyName=iothubowner;"
        "SharedAccessKey=abc=",
        development=True,
        created=True,
    )
    assert _connection_string(init, 40123) == (
        "HostName=localhost:40123;SharedAccessKeyName=iothubowner;SharedAccessKey=abc="
    )
    assert _connection_string(init, None) == init.service_connection_string
