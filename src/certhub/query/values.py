"""The JSON value model shared by the reference evaluator and the SQL compiler.

A query value is a JSON value (``None`` for null, bool, int/float, str, list, dict) or
:data:`UNDEFINED`, the value of a missing property. Python's ``True == 1`` would mix
booleans and numbers, so everything that compares or groups values goes through
:func:`type_of` first.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final, Literal

__all__ = [
    "COMPARABLE_TYPES",
    "UNDEFINED",
    "JsonType",
    "Undefined",
    "Value",
    "format_timestamp",
    "group_sort_key",
    "is_number",
    "type_of",
]

JsonType = Literal["undefined", "null", "bool", "number", "string", "array", "object"]

#: The types between which ``= != < > <= >=`` are defined (each only with itself).
COMPARABLE_TYPES: Final[tuple[JsonType, ...]] = ("string", "number", "bool")


class Undefined:
    """The value of a missing property (a singleton: use :data:`UNDEFINED`)."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()

#: A JSON value or UNDEFINED.
Value = Any


def is_number(value: Value) -> bool:
    """True for int and float, False for bool (which Python counts as int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def type_of(value: Value) -> JsonType:
    """The JSON type of ``value``."""
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


_RANK: Final[dict[JsonType, int]] = {"undefined": 0, "null": 1, "bool": 2, "number": 3, "string": 4}


def group_sort_key(value: Value) -> tuple[int, Any]:
    """Order of GROUP BY values: undefined < null < false < true < numbers < strings."""
    kind = type_of(value)
    if kind in ("undefined", "null"):
        return (_RANK[kind], 0)
    return (_RANK[kind], value)


def format_timestamp(value: dt.datetime) -> str:
    """Render a timestamp as queries see it: ``2026-01-02T03:04:05.000000Z``.

    Always six fractional digits, so that string comparison is time order; naive values
    are taken as UTC. The SQL compiler renders timestamp columns the same way.
    """
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}Z"
    )
