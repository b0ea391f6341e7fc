"""``certhub serve --workers N``: N processes share the ports; /healthz and /readyz name
the node that answered; a crashed worker is restarted; SIGTERM stops them all."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
from pathlib import Path

import httpx
from click.testing import CliRunner
from cluster_support import free_port, serve_command, stop, wait_for, wait_listening

from certhub.bootstrap import initialize
from certhub.cli import cli
from certhub.cluster import NodeRegistry
from certhub.registry import Store


def test_workers_on_sqlite_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path), "--workers", "2"])
    assert result.exit_code == 2
    assert "--workers > 1 needs a PostgreSQL store" in result.output
    assert not (tmp_path / "certhub.db").exists()  # refused before initialising anything


def _names(url: str, tries: int = 40) -> set[str]:
    names = set()
    for _ in range(tries):
        with httpx.Client(verify=False, timeout=5) as client:  # a fresh connection each time
            names.add(client.get(url).json()["node"])
    return names


def _live(store: Store) -> dict[str, int]:
    now = dt.datetime.now(dt.UTC)
    return {n.name: int(n.info["pid"]) for n in NodeRegistry(store.engine).live(now, _TTL)}


_TTL = dt.timedelta(seconds=2)


def test_workers_share_the_ports_restart_and_stop_cleanly(pg_url: str, tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    initialize(data_dir, database_url=pg_url, development=True)
    port, https = free_port(), free_port()
    command = serve_command(data_dir, pg_url, "--workers", "2", "--node-name", "w")
    command += ["--mqtt-port", str(port), "--https-port", str(https)]
    with log.open("ab") as out:
        supervisor = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, supervisor, log)
        with Store.open(pg_url) as store:
            assert wait_for(lambda: sorted(_live(store)) == ["w-1", "w-2"], 30), log.read_text()
            assert _names(f"https://127.0.0.1:{https}/healthz") == {"w-1", "w-2"}
            ready = httpx.get(f"https://127.0.0.1:{https}/readyz", verify=False, timeout=5)
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"listener": True, "store": True, "cluster": True}
            before = _live(store)
            os.kill(before["w-1"], signal.SIGKILL)  # the supervisor starts a new w-1
            assert wait_for(lambda: _live(store).get("w-1") not in (None, before["w-1"]), 30)
            pids = set(_live(store).values())
        assert stop(supervisor) == 0
        for pid in pids:
            assert wait_for(lambda pid=pid: not _alive(pid), 5)  # type: ignore[misc]
    finally:
        stop(supervisor)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"
