"""Continuation tokens for paged query results (``x-ms-continuation``).

A token records the key of the last document returned (keyset paging: the next page is
``WHERE key > last ORDER BY key``), how many items were returned so far (for TOP, and as
the offset into aggregate results, which are sorted in Python), and a fingerprint of the
query, so a token cannot be replayed against another query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from certhub.query import ast
from certhub.query.errors import ContinuationError

__all__ = ["Continuation", "fingerprint"]


def fingerprint(query: ast.Query) -> str:
    """A short digest of the query (its canonical AST)."""
    return hashlib.sha256(repr(query).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Continuation:
    """Where the next page starts."""

    query: str
    returned: int
    after: tuple[str | int, ...] | None = None

    def encode(self) -> str:
        body = {"q": self.query, "n": self.returned, "k": self.after}
        raw = json.dumps(body, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, query: ast.Query, key_length: int) -> Continuation:
        """Parse ``token`` issued for ``query``; raise ContinuationError otherwise."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            body: Any = json.loads(raw)
        except (binascii.Error, ValueError) as exc:
            raise ContinuationError("malformed continuation token") from exc
        if not isinstance(body, dict) or body.get("q") != fingerprint(query):
            raise ContinuationError("continuation token does not belong to this query")
        returned, after = body.get("n"), body.get("k")
        if not isinstance(returned, int) or isinstance(returned, bool) or returned < 0:
            raise ContinuationError("malformed continuation token")
        if after is not None and not _valid_key(after, key_length):
            raise ContinuationError("malformed continuation token")
        return cls(query=body["q"], returned=returned, after=tuple(after) if after else None)


def _valid_key(after: Any, key_length: int) -> bool:
    return (
        isinstance(after, list)
        and len(after) == key_length
        and all(isinstance(k, str | int) and not isinstance(k, bool) for k in after)
    )
