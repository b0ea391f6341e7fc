"""Errors raised by the registry store.

::

    StoreError                 base; ``kind`` (entity, e.g. "device") and ``key``
     ├── NotFound              the addressed row does not exist
     ├── AlreadyExists         a primary key or unique value is taken (``constraint``)
     ├── EtagMismatch          optimistic concurrency check failed (``expected``, ``actual``)
     └── Conflict              the write breaks a rule of the data (``reason``):
                               "missing-reference" (a foreign key points nowhere),
                               "constraint" (a CHECK or NOT NULL rule),
                               "invalid-transition" (a state change that is not allowed)

Database driver exceptions (``sqlalchemy.exc.IntegrityError``) are translated to
these at the store boundary (``raise ... from exc``); connection failures and
other operational errors propagate unchanged as ``sqlalchemy.exc.DBAPIError``.
"""

from __future__ import annotations

__all__ = ["AlreadyExists", "Conflict", "EtagMismatch", "NotFound", "StoreError"]


class StoreError(Exception):
    """Base of every error the store raises on purpose."""

    def __init__(self, kind: str, key: str, message: str | None = None) -> None:
        self.kind = kind
        self.key = key
        super().__init__(message or f"{kind} {key!r}")


class NotFound(StoreError):
    """The addressed row does not exist."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(kind, key, f"{kind} {key!r} not found")


class AlreadyExists(StoreError):
    """A primary key or a unique value is already taken."""

    def __init__(self, kind: str, key: str, constraint: str | None = None) -> None:
        self.constraint = constraint
        detail = f" ({constraint})" if constraint else ""
        super().__init__(kind, key, f"{kind} {key!r} already exists{detail}")


class EtagMismatch(StoreError):
    """The caller's etag is not the row's current etag."""

    def __init__(self, kind: str, key: str, expected: str, actual: str | None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(kind, key, f"{kind} {key!r}: etag {expected!r} is not current")


class Conflict(StoreError):
    """The write breaks a rule of the data; ``reason`` says which kind of rule."""

    def __init__(self, kind: str, key: str, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        suffix = f": {detail}" if detail else ""
        super().__init__(kind, key, f"{kind} {key!r}: {reason}{suffix}")
