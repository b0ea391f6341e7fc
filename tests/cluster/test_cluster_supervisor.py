"""The worker supervisor on its own: restarts, giving up, and the command it builds."""

from __future__ import annotations

import subprocess
import sys

from certhub.cluster import Supervisor, child_command


def test_a_worker_that_keeps_crashing_is_restarted_then_given_up() -> None:
    spawned: list[list[str]] = []

    def spawn(command: list[str]) -> subprocess.Popen[bytes]:
        spawned.append(command)
        return subprocess.Popen(command)

    crash = [sys.executable, "-c", "raise SystemExit(3)"]
    supervisor = Supervisor([crash], max_restarts=2, restart_window=60, spawn=spawn)
    assert supervisor.run() == 1
    assert len(spawned) == 3  # the first start and two restarts


def test_the_supervisor_stops_its_workers_when_it_stops() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    crash = [sys.executable, "-c", "raise SystemExit(3)"]
    supervisor = Supervisor([sleeper, crash], max_restarts=0, grace=5)
    assert supervisor.run() == 1  # the crashing worker ends the run ...
    assert supervisor.pids  # ... and the sleeping one was terminated with it
    for child in supervisor._children:
        assert child.process.poll() is not None


def test_a_worker_command_runs_this_interpreter_with_its_node_name() -> None:
    command = child_command(["serve", "--mqtt-port", "8883"], "hub-2")
    assert command[:3] == [sys.executable, "-m", "certhub.cli"]
    assert command[3:] == ["serve", "--mqtt-port", "8883", "--node-name", "hub-2", "--worker"]
