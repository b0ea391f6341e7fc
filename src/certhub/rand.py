"""Injected randomness.

Security-relevant random values (serial numbers, revocation identifiers, keys,
tokens) come from a :class:`Random`; production uses :class:`SystemRandom`
(``secrets``), tests may pass :class:`SeededRandom` for reproducible output.
"""

from __future__ import annotations

import random
import secrets
from typing import Protocol

__all__ = ["Random", "SeededRandom", "SystemRandom"]


class Random(Protocol):
    """Source of random bytes."""

    def token_bytes(self, n: int) -> bytes:
        """Return ``n`` random bytes."""
        ...


class SystemRandom:
    """Cryptographically secure randomness from the operating system."""

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)


class SeededRandom:
    """Deterministic randomness for tests. Never use for real keys."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def token_bytes(self, n: int) -> bytes:
        return self._rng.randbytes(n)
