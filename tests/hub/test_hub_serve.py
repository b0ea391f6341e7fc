"""``certhub serve``: one log line per listener with its address; SIGTERM/SIGINT stop it
cleanly (connections closed, store closed)."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from certhub.bootstrap import initialize
from certhub.mqtt import ClientConnection, ConnAck, Connect, ConnectReturnCode, encode
from serverkit import API_VERSION, running_server

LISTENING = re.compile(r"MQTT/TLS listener on ([0-9.]+):(\d+) \(dps, hub\)")
HTTPS_LISTENING = re.compile(r"HTTPS listener on [0-9.]+:(\d+) ")


def _raw_connect(port: int, anchor: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(anchor))
    sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), 5), server_hostname="127.0.0.1"
    )
    conn = ClientConnection()
    conn.send(Connect(client_id="nobody", username=f"localhost/nobody/?api-version={API_VERSION}"))
    sock.sendall(conn.data_to_send())
    data = sock.recv(100)
    sock.close()
    return data


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_serve_logs_its_listener_and_stops_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    data_dir = tmp_path / "data"
    init = initialize(data_dir, development=True)
    command = [sys.executable, "-m", "certhub.cli", "serve", "--data-dir", str(data_dir),
               "--mqtt-port", "0", "--https-port", "0"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            match = LISTENING.search(line)
            if match:
                break
        assert match is not None, "".join(lines)
        answer = _raw_connect(int(match.group(2)), Path(init.trust_anchor))
        assert answer == encode(ConnAck(return_code=ConnectReturnCode.NOT_AUTHORIZED))
        process.send_signal(sig)
        _, rest = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, "".join(lines) + rest
    assert "certhub stopped" in rest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_listens_on_the_ports_init_recorded(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    mqtt_port, https_port = _free_port(), _free_port()
    init = initialize(data_dir, development=True, mqtt_port=mqtt_port, https_port=https_port)
    assert f":{https_port};SharedAccessKeyName=" in init.service_connection_string
    command = [sys.executable, "-m", "certhub.cli", "serve", "--data-dir", str(data_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    lines: list[str] = []
    ports: dict[str, int] = {}
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if match := LISTENING.search(line):
                ports["mqtt"] = int(match.group(2))
            if match := HTTPS_LISTENING.search(line):
                ports["https"] = int(match.group(1))
            if len(ports) == 2:
                break
        assert ports == {"mqtt": mqtt_port, "https": https_port}, "".join(lines)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0


def test_stopping_the_listener_drops_connections_still_in_their_handshake(
    tmp_path: Path,
) -> None:
    """The listener's own TLS transport knows them (with ``handshake_threads=0`` the event
    loop's transport keeps them until its handshake timeout)."""
    with running_server(tmp_path / "data") as running:
        port = running.server.mqtt_address[1]
        sock = socket.create_connection(("127.0.0.1", port), 5)  # no ClientHello yet
        sock.settimeout(5)
        time.sleep(0.2)  # accepted
        running.call(running.server.listener.stop())  # the event loop goes on
        try:
            assert sock.recv(1) == b""  # at the stop, not at the 30 s handshake timeout
        except ConnectionResetError:
            pass
        finally:
            sock.close()
