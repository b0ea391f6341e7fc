"""Support for the agent's integration tests against a real certhub on loopback.

* :func:`dev_server` — a running certhub (tests/serverkit.py) whose default enrollment
  group issues 60-second certificates (a development policy ``dev60``).
* :func:`write_config` — an agent TOML for one device, pointing at that server.
* :class:`EventLog` — captures the agents' structured log events per device.
* :func:`run_cli` — ``python -m certhub.agent`` in a subprocess (JSON logs parsed).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certhub.agent import Agent, load_config
from certhub.pki import LeafPolicy
from serverkit import RunningServer, open_authority, running_server

POLICY = "dev60"
BACKDATE = 10
"""Seconds the test policy backdates notBefore (certhub's default is 5 minutes, which
is longer than the whole life of a 60-second certificate)."""


@contextmanager
def dev_server(data_dir: Path) -> Iterator[RunningServer]:
    """certhub with the ``default`` enrollment group issuing 60-second leaves (policy
    ``dev60``, development profile, notBefore backdated :data:`BACKDATE` seconds)."""
    with running_server(data_dir) as running:
        authority = open_authority(running.data_dir, running.store)
        policy = LeafPolicy.create(POLICY, "60s", backdate=f"{BACKDATE}s", development=True)
        authority.create_policy(policy, actor="tests")
        store = running.store
        namespace = store.get_namespace("default")
        assert namespace is not None
        group = next(
            e
            for e in store.list_enrollments(namespace.id)
            if e.name == running.init.enrollment_group
        )
        store.update_enrollment(
            dataclasses.replace(group, credential_policy_name=POLICY),
            None,
            now=dt.datetime.now(dt.UTC),
        )
        running.refresh_trust()
        yield running


def write_config(running: RunningServer, directory: Path, device_id: str, **renewal: Any) -> Path:
    """An agent configuration for ``device_id`` (group key onboarding)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        f'trust_anchor = "{running.trust_anchor}"',
        f'state_dir = "{directory / "state"}"',
        "[dps]",
        'host = "localhost"',
        f"port = {running.port}",
        f'id_scope = "{running.init.id_scope}"',
        f'registration_id = "{device_id}"',
        "[onboarding]",
        f'group_key = "{running.init.group_primary_key}"',
        "[hub]",
        f"port = {running.port}",
        "[clock]",
        f'server_backdate = "{BACKDATE}s"',
        "[renewal]",
        'retry_initial = "1s"',
        'retry_max = "5s"',
        'request_timeout = "10s"',
        *(f"{k} = {json.dumps(v)}" for k, v in renewal.items()),
        "[log]",
        'format = "json"',
    ]
    path = directory / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def agent_for(path: Path) -> Agent:
    return Agent(load_config(path))


class EventLog(logging.Handler):
    """Collects the agent's events: ``log[device]`` is a list of (event, record)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: dict[str, list[tuple[str, logging.LogRecord]]] = defaultdict(list)

    def emit(self, record: logging.LogRecord) -> None:
        device, event = getattr(record, "device", None), getattr(record, "event", None)
        if device is not None and event is not None:
            self.events[device].append((event, record))

    def names(self, device: str) -> list[str]:
        return [name for name, _ in self.events[device]]

    def count(self, device: str, event: str) -> int:
        return self.names(device).count(event)

    @contextmanager
    def installed(self) -> Iterator[EventLog]:
        logger = logging.getLogger("certhub.agent")
        old_level = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(old_level)


@dataclass
class CliRun:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    def names(self) -> list[str]:
        return [e.get("event", "") for e in self.events]


def start_cli(config: Path, *args: str, crash_at: str | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("CERTHUB_AGENT_CRASH_AT", None)
    if crash_at:
        env["CERTHUB_AGENT_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, "-m", "certhub.agent", "--config", str(config), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float) -> CliRun:
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        raise AssertionError(f"agent did not finish in {timeout} s:\n{stderr[-3000:]}") from None
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            with suppress(ValueError):
                events.append(json.loads(line))
    return CliRun(process.returncode, events, stderr)
