"""Test hooks: make the agent kill itself (SIGKILL) at a named step.

``CERTHUB_AGENT_CRASH_AT=files-written`` (or ``files-written@2`` for the second time
the step is reached) makes :func:`crash_hook_from_env` return a checkpoint that sends
SIGKILL to the agent's own process there: no cleanup, no flush, as in a power cut. The
steps are :data:`certhub.agent.lifecycle.STEPS`. Meant for crash-safety tests only.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

from certhub.agent.errors import ConfigError
from certhub.agent.lifecycle import STEPS, Checkpoint

__all__ = ["CRASH_ENV", "crash_hook_from_env"]

CRASH_ENV = "CERTHUB_AGENT_CRASH_AT"


def crash_hook_from_env(environ: Mapping[str, str] = os.environ) -> Checkpoint | None:
    """The SIGKILL checkpoint asked for by ``CERTHUB_AGENT_CRASH_AT``, or None."""
    value = environ.get(CRASH_ENV, "").strip()
    if not value:
        return None
    step, _, count_text = value.partition("@")
    if step not in STEPS:
        raise ConfigError(CRASH_ENV, f"unknown step {step!r} (one of {', '.join(STEPS)})")
    if count_text and not count_text.isdigit():
        raise ConfigError(CRASH_ENV, f"count must be a number, not {count_text!r}")
    wanted = int(count_text or 1)
    seen = 0

    def checkpoint(name: str) -> None:
        nonlocal seen
        if name != step:
            return
        seen += 1
        if seen == wanted:
            os.kill(os.getpid(), signal.SIGKILL)

    return checkpoint
