"""JSON access and scalar functions per SQL dialect (SQLite JSON1, PostgreSQL jsonb).

Everything a dialect renders goes through here, so the SQL text for a given document path
is produced in one place: :func:`certhub.query.sql.index_expression` and the compiler
both call :meth:`SqlDialect.json_value`, which is what lets an expression index match.
Paths are rendered as SQL literals (not bound parameters) for the same reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar, Final, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from certhub.query.values import UNDEFINED, Value

__all__ = ["DIALECTS", "PostgresDialect", "SqlDialect", "SqliteDialect", "ValueType"]

ValueType = Literal["string", "number", "bool", "null", "object", "array"]
Expr = sa.ColumnElement[Any]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT64 = 2**63 - 1
_UPPER_ASCII: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _check_parts(parts: Sequence[str]) -> None:
    for part in parts:
        if not _NAME.fullmatch(part):
            raise ValueError(f"not a property name: {part!r}")


class SqlDialect:
    """What the compiler needs from a dialect. Subclasses fill in the JSON parts."""

    name: ClassVar[str]
    #: json type names per value type, as the dialect's type function reports them.
    type_names: ClassVar[dict[ValueType, tuple[str, ...]]]
    #: True when numbers/bools in JSON can be compared as JSON (PostgreSQL jsonb).
    jsonb_compare: ClassVar[bool] = False

    def json_type(self, col: Expr, parts: Sequence[str]) -> Expr:
        """The JSON type name at ``parts``, ``'undefined'`` when missing (never NULL)."""
        return sa.func.coalesce(self.raw_json_type(col, parts), sa.literal_column("'undefined'"))

    def raw_json_type(self, col: Expr, parts: Sequence[str]) -> Expr:
        raise NotImplementedError

    def json_value(
        self, col: Expr, parts: Sequence[str], kind: ValueType, collation: str | None
    ) -> Expr:
        """The value at ``parts`` as a SQL string/number/bool (valid when the type is ``kind``)."""
        raise NotImplementedError

    def json_jsonb(self, col: Expr, parts: Sequence[str]) -> Expr:
        """The value at ``parts`` as jsonb (PostgreSQL only)."""
        raise NotImplementedError

    def fetch_json(self, col: Expr, parts: Sequence[str]) -> list[Expr]:
        """Columns to select to read the JSON value at ``parts``: (type, value)."""
        raise NotImplementedError

    def decode_json(self, tag: Any, value: Any) -> Value:
        """Turn the selected (type, value) back into a JSON value or UNDEFINED."""
        raise NotImplementedError

    def group_json(self, col: Expr, parts: Sequence[str]) -> list[Expr]:
        """(kind, value) to GROUP BY: kind is 'null'/'bool'/'number'/'string' or NULL."""
        kind = self.raw_json_type(col, parts)
        whens: list[tuple[Expr, Expr]] = [
            (kind.in_(names), sa.literal_column(f"'{t}'")) for t, names in self._prims()
        ]
        primitive = sa.or_(*(kind.in_(names) for _, names in self._prims()))
        value = sa.case((primitive, self.group_value(col, parts)))
        return [sa.case(*whens), value]

    def group_value(self, col: Expr, parts: Sequence[str]) -> Expr:
        raise NotImplementedError

    def _prims(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(t, self.type_names[t]) for t in ("null", "bool", "number", "string")]

    def decode_group(self, tag: Any, value: Any) -> Value:
        if tag is None:
            return UNDEFINED
        if tag == "null":
            return None
        if tag == "bool":
            return bool(value)
        return value

    def const(self, value: Value, kind: ValueType, jsonb: bool) -> Expr:
        """A bound literal for ``value`` in the representation of ``kind``."""
        if kind == "bool":
            return sa.literal(bool(value), sa.Boolean())
        if kind == "number" and isinstance(value, int) and abs(value) > _INT64:
            value = float(value)
        return sa.literal(value)

    def collate(self, expr: Expr, collation: str | None) -> Expr:
        return expr

    def timestamp_text(self, col: Expr) -> Expr:
        raise NotImplementedError

    def to_float(self, expr: Expr) -> Expr:
        return expr

    def divide(self, a: Expr, b: Expr) -> Expr:
        raise NotImplementedError

    def modulo(self, a: Expr, b: Expr) -> Expr:
        raise NotImplementedError

    def starts_with(self, s: Expr, prefix: Expr) -> Expr:
        raise NotImplementedError

    def ends_with(self, s: Expr, suffix: Expr) -> Expr:
        raise NotImplementedError

    def contains(self, s: Expr, part: Expr) -> Expr:
        raise NotImplementedError

    def lower(self, s: Expr) -> Expr:
        return sa.func.lower(s)

    def upper(self, s: Expr) -> Expr:
        return sa.func.upper(s)

    def length(self, s: Expr) -> Expr:
        return sa.func.length(s)


class SqliteDialect(SqlDialect):
    """SQLite JSON1: ``json_extract(col, '$.a.b')`` and ``json_type``."""

    name = "sqlite"
    type_names: ClassVar[dict[ValueType, tuple[str, ...]]] = {
        "string": ("text",),
        "number": ("integer", "real"),
        "bool": ("true", "false"),
        "null": ("null",),
        "object": ("object",),
        "array": ("array",),
    }

    @staticmethod
    def path(parts: Sequence[str]) -> Expr:
        _check_parts(parts)
        return sa.literal_column("'" + "".join(["$", *(f".{p}" for p in parts)]) + "'")

    def raw_json_type(self, col: Expr, parts: Sequence[str]) -> Expr:
        return sa.func.json_type(col, self.path(parts))

    def json_value(
        self, col: Expr, parts: Sequence[str], kind: ValueType, collation: str | None
    ) -> Expr:
        return sa.func.json_extract(col, self.path(parts))

    def fetch_json(self, col: Expr, parts: Sequence[str]) -> list[Expr]:
        return [self.raw_json_type(col, parts), sa.func.json_extract(col, self.path(parts))]

    def decode_json(self, tag: Any, value: Any) -> Value:
        if tag is None:
            return UNDEFINED
        if tag in ("object", "array"):
            return json.loads(value)
        if tag in ("true", "false"):
            return tag == "true"
        return value

    def group_value(self, col: Expr, parts: Sequence[str]) -> Expr:
        return sa.func.json_extract(col, self.path(parts))

    def const(self, value: Value, kind: ValueType, jsonb: bool) -> Expr:
        if kind == "bool":
            return sa.literal(1 if value else 0)
        return super().const(value, kind, jsonb)

    def timestamp_text(self, col: Expr) -> Expr:
        # SQLAlchemy stores "YYYY-MM-DD HH:MM:SS.ffffff" (UTC); make it ISO-8601 "Z".
        spaced = sa.func.replace(col, sa.literal_column("' '"), sa.literal_column("'T'"))
        return spaced.op("||")(sa.literal_column("'Z'"))

    def divide(self, a: Expr, b: Expr) -> Expr:
        return sa.cast(a, sa.REAL()) / b

    def modulo(self, a: Expr, b: Expr) -> Expr:
        return a - b * sa.cast(self.divide(a, b), sa.Integer())

    def starts_with(self, s: Expr, prefix: Expr) -> Expr:
        return sa.func.substr(s, 1, sa.func.length(prefix)) == prefix

    def ends_with(self, s: Expr, suffix: Expr) -> Expr:
        start = sa.func.length(s) - sa.func.length(suffix) + 1
        return sa.func.substr(s, start) == suffix

    def contains(self, s: Expr, part: Expr) -> Expr:
        return sa.func.instr(s, part) > 0


class PostgresDialect(SqlDialect):
    """PostgreSQL jsonb: ``col #> '{a,b}'``, ``col #>> '{a,b}'``, ``jsonb_typeof``."""

    name = "postgresql"
    jsonb_compare = True
    type_names: ClassVar[dict[ValueType, tuple[str, ...]]] = {
        "string": ("string",),
        "number": ("number",),
        "bool": ("boolean",),
        "null": ("null",),
        "object": ("object",),
        "array": ("array",),
    }

    @staticmethod
    def path(parts: Sequence[str]) -> Expr:
        _check_parts(parts)
        return sa.literal_column("'{" + ",".join(parts) + "}'")

    def json_jsonb(self, col: Expr, parts: Sequence[str]) -> Expr:
        if not parts:
            return col
        return col.op("#>", return_type=sa.types.NullType())(self.path(parts)).self_group()

    def _text(self, col: Expr, parts: Sequence[str]) -> Expr:
        return col.op("#>>", return_type=sa.Text())(self.path(parts)).self_group()

    def raw_json_type(self, col: Expr, parts: Sequence[str]) -> Expr:
        return sa.func.jsonb_typeof(self.json_jsonb(col, parts))

    def json_value(
        self, col: Expr, parts: Sequence[str], kind: ValueType, collation: str | None
    ) -> Expr:
        if kind == "string":
            return self.collate(self._text(col, parts), collation)
        if kind == "bool":
            return self._text(col, parts) == sa.literal_column("'true'")
        number = self.raw_json_type(col, parts) == sa.literal_column("'number'")
        return sa.case((number, sa.cast(self._text(col, parts), sa.Double())))

    def fetch_json(self, col: Expr, parts: Sequence[str]) -> list[Expr]:
        return [self.raw_json_type(col, parts), self.json_jsonb(col, parts)]

    def decode_json(self, tag: Any, value: Any) -> Value:
        if tag is None:
            return UNDEFINED
        if isinstance(value, str) and tag != "string":  # a driver that does not decode
            return json.loads(value)
        return value

    def group_value(self, col: Expr, parts: Sequence[str]) -> Expr:
        return self.json_jsonb(col, parts)

    def const(self, value: Value, kind: ValueType, jsonb: bool) -> Expr:
        if jsonb:  # JSON text cast to jsonb: renders as a literal too (EXPLAIN, logs)
            return sa.cast(sa.literal(json.dumps(value), sa.Text()), JSONB())
        if kind == "number":
            return sa.literal(float(value), sa.Double())
        return super().const(value, kind, jsonb)

    def collate(self, expr: Expr, collation: str | None) -> Expr:
        return expr if collation is None else sa.collate(expr.self_group(), collation)

    def timestamp_text(self, col: Expr) -> Expr:
        utc = sa.func.timezone(sa.literal_column("'UTC'"), col)
        return sa.func.to_char(utc, sa.literal_column('\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\''))

    def to_float(self, expr: Expr) -> Expr:
        return sa.cast(expr, sa.Double())

    def divide(self, a: Expr, b: Expr) -> Expr:
        return self.to_float(a) / sa.func.nullif(self.to_float(b), 0)

    def modulo(self, a: Expr, b: Expr) -> Expr:
        return self.to_float(a) - self.to_float(b) * sa.func.trunc(self.divide(a, b))

    def starts_with(self, s: Expr, prefix: Expr) -> Expr:
        return sa.func.left(s, sa.func.length(prefix)) == prefix

    def ends_with(self, s: Expr, suffix: Expr) -> Expr:
        return sa.func.right(s, sa.func.length(suffix)) == suffix

    def contains(self, s: Expr, part: Expr) -> Expr:
        return sa.func.strpos(s, part) > 0

    def lower(self, s: Expr) -> Expr:
        upper: Expr = sa.literal_column(f"'{_UPPER_ASCII}'")
        return sa.func.translate(s, upper, sa.literal_column(f"'{_UPPER_ASCII.lower()}'"))

    def upper(self, s: Expr) -> Expr:
        lower: Expr = sa.literal_column(f"'{_UPPER_ASCII.lower()}'")
        return sa.func.translate(s, lower, sa.literal_column(f"'{_UPPER_ASCII}'"))


DIALECTS: Final[dict[str, SqlDialect]] = {
    "sqlite": SqliteDialect(),
    "postgresql": PostgresDialect(),
}
