"""Typed SQL values: how one query expression looks in SQL.

IoT Hub values are dynamically typed and may be undefined; SQL columns are not. Each
compiled expression is a :class:`Val` that answers, per JSON type, "does the value have
this type?" (:meth:`Val.guard`, a predicate that is never SQL NULL) and "what is it, as a
SQL string/number/bool?" (:meth:`Val.rep`, meaningful only under the guard). A
comparison is then ``guard AND a < b`` for each type both sides can have.

Conditions compile to two predicates, ``is_true`` and ``is_false`` (a :class:`Truth`);
neither is ever NULL, so NOT is a swap and three-valued logic needs no CASE. The WHERE
clause is ``is_true``, which keeps ``json_extract(col, '$.p') < ?`` a bare term that an
expression index can serve.

Predicates are folded: Python ``True``/``False`` stand for static truth values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from certhub.query._dialects import Expr, SqlDialect, ValueType
from certhub.query.values import UNDEFINED, Value, format_timestamp, type_of

__all__ = [
    "ALL_TYPES",
    "ArithVal",
    "ConstVal",
    "Fetch",
    "JsonVal",
    "LengthVal",
    "NegVal",
    "ObjectVal",
    "Pred",
    "PredVal",
    "ScalarVal",
    "TextFnVal",
    "Truth",
    "Val",
    "p_and",
    "p_not",
    "p_or",
    "to_sql",
]

Pred = bool | Expr
ALL_TYPES: tuple[ValueType, ...] = ("string", "number", "bool", "null", "object", "array")


def p_and(*preds: Pred) -> Pred:
    """AND with static folding."""
    if any(p is False for p in preds):
        return False
    rest = [p for p in preds if p is not True]
    if not rest:
        return True
    return rest[0] if len(rest) == 1 else sa.and_(*rest)  # type: ignore[arg-type]


def p_or(*preds: Pred) -> Pred:
    """OR with static folding."""
    if any(p is True for p in preds):
        return True
    rest = [p for p in preds if p is not False]
    if not rest:
        return False
    return rest[0] if len(rest) == 1 else sa.or_(*rest)  # type: ignore[arg-type]


def p_not(pred: Pred) -> Pred:
    """NOT of a predicate that is never NULL."""
    return (not pred) if isinstance(pred, bool) else sa.not_(pred)


def to_sql(pred: Pred) -> Expr:
    """A predicate as a SQL expression."""
    if isinstance(pred, bool):
        return sa.true() if pred else sa.false()
    return pred


@dataclass(frozen=True)
class Truth:
    """When a condition is true and when it is false (else it is undefined)."""

    is_true: Pred
    is_false: Pred


@dataclass(frozen=True)
class Fetch:
    """Columns to select and how to turn their values back into one JSON value."""

    columns: list[Expr]
    decode: Callable[[Sequence[Any]], Value]


class Val:
    """A compiled expression. The base answers 'undefined' to everything."""

    #: both sides of a comparison must have it to compare as jsonb (PostgreSQL).
    jsonb_ok = False

    def __init__(self, dialect: SqlDialect, collation: str | None) -> None:
        self.dialect = dialect
        self.collation = collation

    def guard(self, kind: ValueType) -> Pred:
        """The value has JSON type ``kind`` (never NULL)."""
        return False

    def defined(self) -> Pred:
        return p_or(*(self.guard(t) for t in ALL_TYPES))

    def rep(self, kind: ValueType, jsonb: bool = False) -> Expr:
        """The value as SQL, for ``kind`` in string/number/bool; valid under the guard."""
        raise AssertionError(f"{type(self).__name__} has no {kind} representation")

    def truth(self) -> Truth:
        """As a condition: true when it is the boolean true, false when false."""
        guard = self.guard("bool")
        if guard is False:
            return Truth(False, False)
        rep = self.rep("bool")
        return Truth(p_and(guard, rep), p_and(guard, p_not(rep)))

    def fetch(self) -> Fetch:
        """How to read the value in a projection."""
        raise AssertionError(f"{type(self).__name__} cannot be projected")

    def group(self) -> Fetch:
        """How to group by the value (primitives only; anything else groups as undefined)."""
        return Fetch([], lambda _: UNDEFINED)


class ConstVal(Val):
    """A literal (including UNDEFINED, the value of unmapped paths)."""

    jsonb_ok = True

    def __init__(self, dialect: SqlDialect, collation: str | None, value: Value) -> None:
        super().__init__(dialect, collation)
        self.value = value

    def guard(self, kind: ValueType) -> Pred:
        return type_of(self.value) == kind

    def rep(self, kind: ValueType, jsonb: bool = False) -> Expr:
        return self.dialect.const(self.value, kind, jsonb)

    def truth(self) -> Truth:
        return Truth(self.value is True, self.value is False)

    def fetch(self) -> Fetch:
        return Fetch([], lambda _: self.value)


class ScalarVal(Val):
    """A document field held in one SQL column; NULL is JSON null."""

    def __init__(
        self,
        dialect: SqlDialect,
        collation: str | None,
        column: Expr,
        field_type: str,
        nullable: bool,
    ) -> None:
        super().__init__(dialect, collation)
        self.column = column
        self.field_type = field_type
        self.kind: ValueType = "string" if field_type == "timestamp" else field_type  # type: ignore[assignment]
        self.nullable = nullable

    def guard(self, kind: ValueType) -> Pred:
        if kind == "null":
            return self.column.is_(None) if self.nullable else False
        if kind != self.kind:
            return False
        return self.column.is_not(None) if self.nullable else True

    def rep(self, kind: ValueType, jsonb: bool = False) -> Expr:
        if self.field_type == "timestamp":
            return self.dialect.collate(self.dialect.timestamp_text(self.column), self.collation)
        if kind == "string":
            return self.dialect.collate(self.column, self.collation)
        return self.column

    def _decode(self, row: Sequence[Any]) -> Value:
        value = row[0]
        if value is None or self.field_type != "timestamp":
            return value
        return format_timestamp(value)

    def fetch(self) -> Fetch:
        return Fetch([self.column], self._decode)

    def group(self) -> Fetch:
        return self.fetch()


class JsonVal(Val):
    """The value at a path inside a JSON column."""

    def __init__(
        self, dialect: SqlDialect, collation: str | None, column: Expr, parts: tuple[str, ...]
    ) -> None:
        super().__init__(dialect, collation)
        self.column = column
        self.parts = parts
        self.jsonb_ok = dialect.jsonb_compare
        self._type = dialect.json_type(column, parts)

    def guard(self, kind: ValueType) -> Pred:
        names = self.dialect.type_names[kind]
        if len(names) == 1:
            return self._type == sa.literal_column(f"'{names[0]}'")
        return self._type.in_([sa.literal_column(f"'{n}'") for n in names])

    def defined(self) -> Pred:
        return self._type != sa.literal_column("'undefined'")

    def rep(self, kind: ValueType, jsonb: bool = False) -> Expr:
        if jsonb:
            return self.dialect.json_jsonb(self.column, self.parts)
        return self.dialect.json_value(self.column, self.parts, kind, self.collation)

    def fetch(self) -> Fetch:
        columns = self.dialect.fetch_json(self.column, self.parts)
        return Fetch(columns, lambda row: self.dialect.decode_json(row[0], row[1]))

    def group(self) -> Fetch:
        columns = self.dialect.group_json(self.column, self.parts)
        return Fetch(columns, lambda row: self.dialect.decode_group(row[0], row[1]))


class ObjectVal(Val):
    """An object made of mapped fields (``properties``, or the whole document)."""

    def __init__(self, dialect: SqlDialect, collation: str | None, members: dict[str, Val]):
        super().__init__(dialect, collation)
        self.members = members

    def guard(self, kind: ValueType) -> Pred:
        return kind == "object"

    def fetch(self) -> Fetch:
        parts = [(name, val.fetch()) for name, val in self.members.items()]
        columns = [c for _, f in parts for c in f.columns]

        def decode(row: Sequence[Any]) -> Value:
            out: dict[str, Any] = {}
            at = 0
            for name, f in parts:
                value = f.decode(row[at : at + len(f.columns)])
                at += len(f.columns)
                if value is not UNDEFINED:
                    out[name] = value
            return out

        return Fetch(columns, decode)


class PredVal(Val):
    """A condition used as a value: a boolean, or undefined."""

    def __init__(self, dialect: SqlDialect, collation: str | None, truth: Truth) -> None:
        super().__init__(dialect, collation)
        self._truth = truth

    def guard(self, kind: ValueType) -> Pred:
        return p_or(self._truth.is_true, self._truth.is_false) if kind == "bool" else False

    def rep(self, kind: ValueType, jsonb: bool = False) -> Expr:
        return to_sql(self._truth.is_true)

    def truth(self) -> Truth:
        return self._truth


class ArithVal(Val):
    """``a op b`` over numbers; division and modulo by zero are undefined."""

    def __init__(self, dialect: SqlDialect, collation: str | None, op: str, a: Val, b: Val):
        super().__init__(dialect, collation)
        self.op, self.a, self.b = op, a, b

    def guard(self, kind: ValueType) -> Pred:
        if kind != "number":
            return False
        guard = p_and(self.a.guard("number"), self.b.guard("number"))
        if self.op in ("/", "%") and guard is not False:
            guard = p_and(guard, self.b.rep("number") != 0)
        return guard

    def rep(self, kind: ValueType, jsonb: bool = False) -> Expr:
        d = self.dialect
        a, b = self.a.rep("number"), self.b.rep("number")
        ops: dict[str, Callable[[Expr, Expr], Expr]] = {
            "+": lambda x, y: d.to_float(x) + d.to_float(y),
            "-": lambda x, y: d.to_float(x) - d.to_float(y),
            "*": lambda x, y: d.to_float(x) * d.to_float(y),
            "/": d.divide,
            "%": d.modulo,
        }
        return ops[self.op](a, b)


class NegVal(Val):
    """Unary minus of a number."""

    def __init__(self, dialect: SqlDialect, collation: str | None, a: Val) -> None:
        super().__init__(dialect, collation)
        self.a = a

    def guard(self, kind: ValueType) -> Pred:
        return self.a.guard("number") if kind == "number" else False

    def rep(self, kind: ValueType, jsonb: bool = False) -> Expr:
        return -self.a.rep("number")


class TextFnVal(Val):
    """LOWER/UPPER of a string."""

    def __init__(self, dialect: SqlDialect, collation: str | None, name: str, a: Val) -> None:
        super().__init__(dialect, collation)
        self.name, self.a = name, a

    def guard(self, kind: ValueType) -> Pred:
        return self.a.guard("string") if kind == "string" else False

    def rep(self, kind: ValueType, jsonb: bool = False) -> Expr:
        fn = self.dialect.lower if self.name == "LOWER" else self.dialect.upper
        return self.dialect.collate(fn(self.a.rep("string")), self.collation)


class LengthVal(Val):
    """LENGTH of a string, in characters."""

    def __init__(self, dialect: SqlDialect, collation: str | None, a: Val) -> None:
        super().__init__(dialect, collation)
        self.a = a

    def guard(self, kind: ValueType) -> Pred:
        return self.a.guard("string") if kind == "number" else False

    def rep(self, kind: ValueType, jsonb: bool = False) -> Expr:
        return self.dialect.length(self.a.rep("string"))
