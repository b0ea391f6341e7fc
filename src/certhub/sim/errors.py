"""Errors of the fleet simulator.

::

    SimError
    └── SetupError      the target server cannot be prepared (``step`` names what failed)
"""

from __future__ import annotations

__all__ = ["SetupError", "SimError"]


class SimError(Exception):
    """Base of the simulator's errors."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SetupError(SimError):
    """Preparing the target (policy, enrollment group, server) failed at ``step``."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
