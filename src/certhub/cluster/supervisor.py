"""``certhub serve --workers N``: a small supervisor of N server processes on one machine.

The parent initialises the data directory and the store once, then starts N children
(``certhub serve … --node-name NAME-i``) that bind the same MQTT and HTTPS ports with
``SO_REUSEPORT``: the kernel spreads new connections between them. The parent only
watches: a child that exits unexpectedly is restarted (at most ``max_restarts`` times
in ``restart_window`` seconds, then the supervisor stops everything and exits 1);
SIGINT/SIGTERM are forwarded as SIGTERM, children get ``grace`` seconds to close their
sessions, then SIGKILL.

Several workers need PostgreSQL: SQLite allows one writer at a time and the nodes would
not see each other's sessions reliably (:func:`check_workers`).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from certhub.cluster.errors import WorkersRefused

__all__ = ["Supervisor", "check_workers", "child_command", "worker_name"]

log = logging.getLogger("certhub.cluster.supervisor")


def check_workers(workers: int, database_url: str | None) -> None:
    """Raise :class:`WorkersRefused` unless ``workers`` processes can share the store."""
    if workers < 1:
        raise WorkersRefused("bad-count", f"--workers must be at least 1, not {workers}")
    if workers > 1 and not (database_url or "").startswith("postgres"):
        raise WorkersRefused(
            "sqlite-store",
            "--workers > 1 needs a PostgreSQL store (--database postgresql://…); "
            "SQLite serves one process",
        )


def worker_name(base: str, index: int) -> str:
    """The node name of worker ``index`` (``base-1`` … ``base-N``)."""
    return f"{base}-{index + 1}"


@dataclass
class _Child:
    command: list[str]
    process: subprocess.Popen[bytes]
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    """Starts, watches, restarts and stops worker processes (see the module docstring)."""

    def __init__(
        self,
        commands: Sequence[list[str]],
        *,
        grace: float = 20.0,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        spawn: Callable[[list[str]], subprocess.Popen[bytes]] | None = None,
    ) -> None:
        self._commands = [list(c) for c in commands]
        self._grace = grace
        self._max_restarts = max_restarts
        self._window = restart_window
        self._spawn = spawn or (lambda command: subprocess.Popen(command))
        self._children: list[_Child] = []
        self._stopping = False
        self.exit_code = 0

    def run(self) -> int:
        """Run until a signal (exit 0) or a child crashing too often (exit 1)."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._children = [_Child(c, self._spawn(c)) for c in self._commands]
            log.info("supervisor started %d workers", len(self._children))
            while not self._stopping:
                time.sleep(0.2)
                self._check_children()
            self._stop_children()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.exit_code

    @property
    def pids(self) -> list[int]:
        """Process ids of the current children."""
        return [child.process.pid for child in self._children]

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def _check_children(self) -> None:
        now = time.monotonic()
        for child in self._children:
            code = child.process.poll()
            if code is None or self._stopping:
                continue
            child.restarts = [t for t in child.restarts if now - t < self._window]
            if len(child.restarts) >= self._max_restarts:
                log.error("worker exited %d too often; stopping all workers", code)
                self.exit_code = 1
                self._stopping = True
                return
            log.warning("worker %d exited with %d; restarting", child.process.pid, code)
            child.restarts.append(now)
            child.process = self._spawn(child.command)

    def _stop_children(self) -> None:
        live = [c.process for c in self._children if c.process.poll() is None]
        for process in live:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        for process in live:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def child_command(argv: Sequence[str], name: str) -> list[str]:
    """The command line of one worker: this interpreter running ``certhub`` with ``argv``."""
    return [sys.executable, "-m", "certhub.cli", *argv, "--node-name", name, "--worker"]
