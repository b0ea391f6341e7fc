"""Errors of the cluster package.

Exception tree::

    ClusterError                 base
    ├── WorkersRefused           ``--workers N`` cannot run here: ``reason``
    │                            ("sqlite-store", "bad-count")
    └── LeaseError               a lease operation was misused: ``name``, ``reason``
                                 ("empty-name", "bad-ttl")

Store errors (:mod:`certhub.registry.errors`) and database errors are not translated:
the coordinator logs them and retries at its next heartbeat.
"""

from __future__ import annotations

__all__ = ["ClusterError", "LeaseError", "WorkersRefused"]


class ClusterError(Exception):
    """Base of the errors this package raises on purpose."""


class WorkersRefused(ClusterError):
    """Several worker processes were asked for where they cannot work."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class LeaseError(ClusterError):
    """A lease was asked for with an invalid name or duration."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"lease {name!r}: {reason}")
        self.name = name
        self.reason = reason
