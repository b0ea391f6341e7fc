"""Reference semantics: evaluate a query over plain twin dictionaries.

This evaluator is the specification the SQL compiler is tested against. Where IoT Hub
(Cosmos DB underneath) documents a rule we follow it; where it is silent, the choice is
written here:

* A missing property is ``undefined``. A row is selected only when WHERE is exactly
  ``true``; anything else (false, undefined, a number...) excludes it.
* ``= != < > <= >=`` compare string with string, number with number, bool with bool
  (false < true); any other pair, **including null with null**, gives undefined. Use
  ``IS_NULL(x)`` to find nulls (Cosmos would say ``null = null`` is true; certhub does not).
* AND/OR/NOT are three-valued (Kleene): ``false AND undefined`` is false, ``true OR
  undefined`` is true, ``NOT undefined`` is undefined; non-boolean operands count as
  undefined.
* ``x IN [..]`` is true when a list element has x's type and equals it, false when x is a
  string/number/bool that matches none, undefined when x is anything else; ``NIN`` is its
  negation. Null list elements never match.
* Arithmetic takes numbers only; ``/`` and ``%`` by zero give undefined; ``%`` truncates
  like C (``-5 % 3 = -2``). Floats are IEEE doubles (the SQL stores agree for integers and
  binary fractions; other decimals may differ in the last bit).
* STARTSWITH/ENDSWITH/CONTAINS are case-sensitive and need two strings; LOWER/UPPER map
  ASCII letters only (like SQLite's built-ins); LENGTH counts characters of a string.
* Aggregates: COUNT() counts rows, COUNT(x) rows where x is defined; SUM/AVG use numbers
  only; MIN/MAX use numbers and strings with numbers below strings (MIN prefers numbers,
  MAX strings); with nothing to aggregate the key is left out. Unaliased aggregates are
  named ``$1``, ``$2``...
* GROUP BY groups by primitive values (null, bool, number, string); objects, arrays and
  undefined fall into one group whose key is left out. Groups come back ordered by their
  keys (undefined < null < false < true < numbers < strings).
* Documents come back ordered by the collection key (deviceId; serialNumber), so results
  are deterministic; TOP keeps the first n.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from certhub.query import ast
from certhub.query.names import COLLECTION_KEYS
from certhub.query.values import (
    COMPARABLE_TYPES,
    UNDEFINED,
    Value,
    group_sort_key,
    is_number,
    type_of,
)

__all__ = [
    "aggregate_max",
    "aggregate_min",
    "ascii_lower",
    "ascii_upper",
    "evaluate",
    "evaluate_expr",
    "get_path",
]

Doc = Mapping[str, Any]
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def evaluate(query: ast.Query, docs: Iterable[Doc]) -> list[dict[str, Any]]:
    """Run ``query`` over ``docs`` (one collection) and return the result items."""
    key = COLLECTION_KEYS[query.collection]
    selected = [d for d in docs if query.where is None or evaluate_expr(query.where, d) is True]
    selected.sort(key=lambda d: tuple(str(get_path(d, (k,))) for k in key))
    if query.is_aggregate:
        items = _grouped(query, selected)
    elif query.projections is None:
        items = [copy.deepcopy(dict(d)) for d in selected]
    else:
        items = [_project(query.projections, d) for d in selected]
    return items if query.top is None else items[: query.top]


def get_path(doc: Any, parts: tuple[str, ...]) -> Value:
    """The value at ``parts`` in ``doc``, or UNDEFINED."""
    value: Any = doc
    for part in parts:
        if not isinstance(value, Mapping) or part not in value:
            return UNDEFINED
        value = value[part]
    return value


def _project(projections: tuple[ast.Projection, ...], doc: Doc) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in projections:
        assert isinstance(p.expr, ast.Path)
        value = get_path(doc, p.expr.parts)
        if value is not UNDEFINED:
            out[p.name] = copy.deepcopy(value)
    return out


# --- expressions ------------------------------------------------------------------


def evaluate_expr(expr: ast.Expr, doc: Doc) -> Value:
    """The value of a scalar expression (no aggregates) for one document."""
    return _EVAL[type(expr)](expr, doc)


def _const(expr: Any, doc: Doc) -> Value:
    return expr.value


def _path(expr: Any, doc: Doc) -> Value:
    return get_path(doc, expr.parts)


def _neg(expr: Any, doc: Doc) -> Value:
    value = evaluate_expr(expr.operand, doc)
    return -value if is_number(value) else UNDEFINED


def _arith(expr: Any, doc: Doc) -> Value:
    a, b = evaluate_expr(expr.left, doc), evaluate_expr(expr.right, doc)
    if not (is_number(a) and is_number(b)):
        return UNDEFINED
    if expr.op in "/%" and b == 0:
        return UNDEFINED
    ops: dict[str, Callable[[Any, Any], Any]] = {
        "+": lambda x, y: x + y,
        "-": lambda x, y: x - y,
        "*": lambda x, y: x * y,
        "/": lambda x, y: x / y,
        "%": math.fmod,
    }
    return ops[expr.op](a, b)


def compare(op: ast.CompareOp, a: Value, b: Value) -> Value:
    """``a op b`` under the same-primitive-type rule (else UNDEFINED)."""
    kind = type_of(a)
    if kind not in COMPARABLE_TYPES or type_of(b) != kind:
        return UNDEFINED
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda x, y: bool(x == y),
        "!=": lambda x, y: bool(x != y),
        "<": lambda x, y: bool(x < y),
        ">": lambda x, y: bool(x > y),
        "<=": lambda x, y: bool(x <= y),
        ">=": lambda x, y: bool(x >= y),
    }
    return ops[op](a, b)


def _compare(expr: Any, doc: Doc) -> Value:
    return compare(expr.op, evaluate_expr(expr.left, doc), evaluate_expr(expr.right, doc))


def _in(expr: Any, doc: Doc) -> Value:
    value = evaluate_expr(expr.operand, doc)
    kind = type_of(value)
    if kind not in COMPARABLE_TYPES:
        return UNDEFINED
    found = any(type_of(c.value) == kind and c.value == value for c in expr.values)
    return found != expr.negated


def _and(expr: Any, doc: Doc) -> Value:
    a, b = evaluate_expr(expr.left, doc), evaluate_expr(expr.right, doc)
    if a is False or b is False:
        return False
    return True if a is True and b is True else UNDEFINED


def _or(expr: Any, doc: Doc) -> Value:
    a, b = evaluate_expr(expr.left, doc), evaluate_expr(expr.right, doc)
    if a is True or b is True:
        return True
    return False if a is False and b is False else UNDEFINED


def _not(expr: Any, doc: Doc) -> Value:
    value = evaluate_expr(expr.operand, doc)
    return (not value) if isinstance(value, bool) else UNDEFINED


def ascii_lower(text: str) -> str:
    """LOWER(): ASCII letters only."""
    return text.translate(_LOWER)


def ascii_upper(text: str) -> str:
    """UPPER(): ASCII letters only."""
    return text.translate(_UPPER)


_TYPE_TESTS: dict[str, Callable[[Value], bool]] = {
    "IS_DEFINED": lambda v: v is not UNDEFINED,
    "IS_NULL": lambda v: v is None,
    "IS_STRING": lambda v: type_of(v) == "string",
    "IS_NUMBER": lambda v: type_of(v) == "number",
    "IS_BOOL": lambda v: type_of(v) == "bool",
    "IS_OBJECT": lambda v: type_of(v) == "object",
    "IS_ARRAY": lambda v: type_of(v) == "array",
    "IS_PRIMITIVE": lambda v: type_of(v) in ("null", "bool", "number", "string"),
}
_STRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    "STARTSWITH": str.startswith,
    "ENDSWITH": str.endswith,
    "CONTAINS": lambda s, sub: sub in s,
}
_STRING_FUNCS: dict[str, Callable[[str], Value]] = {
    "LOWER": ascii_lower,
    "UPPER": ascii_upper,
    "LENGTH": len,
}


def _call(expr: Any, doc: Doc) -> Value:
    args = [evaluate_expr(a, doc) for a in expr.args]
    if expr.name in _TYPE_TESTS:
        return _TYPE_TESTS[expr.name](args[0])
    if not all(isinstance(a, str) for a in args):
        return UNDEFINED
    if expr.name in _STRING_TESTS:
        return _STRING_TESTS[expr.name](args[0], args[1])
    return _STRING_FUNCS[expr.name](args[0])


def _aggregate_in_expr(expr: Any, doc: Doc) -> Value:
    raise AssertionError("aggregates are evaluated per group")  # pragma: no cover


_EVAL: dict[type, Callable[[Any, Doc], Value]] = {
    ast.Const: _const,
    ast.Path: _path,
    ast.Neg: _neg,
    ast.Arith: _arith,
    ast.Compare: _compare,
    ast.InList: _in,
    ast.And: _and,
    ast.Or: _or,
    ast.Not: _not,
    ast.Call: _call,
    ast.Aggregate: _aggregate_in_expr,
}


# --- grouping ---------------------------------------------------------------------


def group_key_value(value: Value) -> Value:
    """What a GROUP BY value groups as: primitives as themselves, the rest as UNDEFINED."""
    return value if type_of(value) in ("null", "bool", "number", "string") else UNDEFINED


def _grouped(query: ast.Query, docs: list[Doc]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], tuple[list[Value], list[Doc]]] = {}
    if not query.group_by:
        groups[()] = ([], docs)
    for doc in docs if query.group_by else ():
        values = [group_key_value(get_path(doc, p.parts)) for p in query.group_by]
        key = tuple((type_of(v), v if v is not UNDEFINED else None) for v in values)
        groups.setdefault(key, (values, []))[1].append(doc)
    ordered = sorted(groups.values(), key=lambda g: [group_sort_key(v) for v in g[0]])
    return [_group_row(query, values, members) for values, members in ordered]


def _group_row(query: ast.Query, values: list[Value], docs: list[Doc]) -> dict[str, Any]:
    assert query.projections is not None
    row: dict[str, Any] = {}
    for p in query.projections:
        if isinstance(p.expr, ast.Aggregate):
            value = _aggregate(p.expr, docs)
        else:
            value = values[query.group_by.index(p.expr)]
        if value is not UNDEFINED:
            row[p.name] = value
    return row


def _aggregate(agg: ast.Aggregate, docs: list[Doc]) -> Value:
    if agg.arg is None:
        return len(docs)
    values = [evaluate_expr(agg.arg, d) for d in docs]
    if agg.name == "COUNT":
        return sum(1 for v in values if v is not UNDEFINED)
    if agg.name == "MIN":
        return aggregate_min(values)
    if agg.name == "MAX":
        return aggregate_max(values)
    numbers = [v for v in values if is_number(v)]
    if not numbers:
        return UNDEFINED
    total = sum(numbers)
    return total if agg.name == "SUM" else total / len(numbers)


def aggregate_min(values: Iterable[Value]) -> Value:
    """MIN over numbers and strings (numbers first); UNDEFINED when there are none."""
    values = list(values)
    numbers = [v for v in values if is_number(v)]
    strings = [v for v in values if isinstance(v, str)]
    return min(numbers) if numbers else (min(strings) if strings else UNDEFINED)


def aggregate_max(values: Iterable[Value]) -> Value:
    """MAX over numbers and strings (strings last); UNDEFINED when there are none."""
    values = list(values)
    numbers = [v for v in values if is_number(v)]
    strings = [v for v in values if isinstance(v, str)]
    return max(strings) if strings else (max(numbers) if numbers else UNDEFINED)
