"""Errors of the IoT Hub query language.

Exception tree::

    QueryError                   base; fields: reason, line, column
    ├── QuerySyntaxError         the text does not parse (reason "syntax"); line and column
    │                            always set; ``expected`` names the tokens that would fit
    └── ContinuationError        a continuation token that is malformed or belongs to
                                 another query (reason "bad-continuation")

``reason`` is a short machine-readable code (``"unknown-function"``, ``"bad-top"``,
``"query-too-long"`` ...); ``line`` and ``column`` (1-based) point at the offending text
when the error has a place, else they are None. The REST layer maps every QueryError to
HTTP 400.
"""

from __future__ import annotations

__all__ = ["ContinuationError", "QueryError", "QuerySyntaxError"]


class QueryError(Exception):
    """A query that cannot be run: bad semantics, unsupported feature, bad paging."""

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.reason = reason
        self.line = line
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        if self.line is None:
            return self.message
        return f"{self.message} (line {self.line}, column {self.column})"


class QuerySyntaxError(QueryError):
    """The query text does not parse; ``line``/``column`` locate the first bad token."""

    line: int
    column: int

    def __init__(
        self, message: str, line: int, column: int, expected: tuple[str, ...] = ()
    ) -> None:
        self.expected = expected
        super().__init__(message, reason="syntax", line=line, column=column)


class ContinuationError(QueryError):
    """A continuation token that is malformed or was issued for another query."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="bad-continuation")
