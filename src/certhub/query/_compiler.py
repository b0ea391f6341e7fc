"""Compile AST expressions to typed SQL values (see :mod:`certhub.query._sqlvals`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from certhub.query import ast
from certhub.query._dialects import Expr, SqlDialect, ValueType
from certhub.query._sqlvals import (
    ArithVal,
    ConstVal,
    JsonVal,
    LengthVal,
    NegVal,
    ObjectVal,
    Pred,
    PredVal,
    ScalarVal,
    TextFnVal,
    Truth,
    Val,
    p_and,
    p_not,
    p_or,
)
from certhub.query.mapping import CollectionMapping, DocumentField, ScalarField
from certhub.query.reference import evaluate_expr
from certhub.query.values import UNDEFINED, type_of

__all__ = ["ExprCompiler"]

_OPS: dict[str, Callable[[Expr, Expr], Expr]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}
_COMPARABLE: tuple[ValueType, ...] = ("string", "number", "bool")
_INVERSE = {"=": "!=", "!=": "=", "<": ">=", ">": "<=", "<=": ">", ">=": "<"}
_TYPE_TESTS: dict[str, tuple[ValueType, ...]] = {
    "IS_STRING": ("string",),
    "IS_NUMBER": ("number",),
    "IS_BOOL": ("bool",),
    "IS_NULL": ("null",),
    "IS_OBJECT": ("object",),
    "IS_ARRAY": ("array",),
    "IS_PRIMITIVE": ("null", "bool", "number", "string"),
}


class ExprCompiler:
    """Compiles expressions of one collection for one dialect."""

    def __init__(
        self,
        mapping: CollectionMapping,
        dialect: SqlDialect,
        *,
        columns: Callable[[Expr], Expr] | None = None,
    ) -> None:
        self.mapping = mapping
        self.dialect = dialect
        self.collation = mapping.collation
        # ``columns`` swaps in other column objects (unqualified ones for index text).
        self._column: Callable[[Expr], Expr] = columns or (lambda col: col)

    # --- values -------------------------------------------------------------------

    def resolve(self, parts: tuple[str, ...]) -> Val:
        """The value at a document path: a column, a JSON path, an object, or undefined."""
        fields = self.mapping.fields
        for cut in range(len(parts), -1, -1):
            f = fields.get(parts[:cut])
            if isinstance(f, DocumentField):
                return JsonVal(self.dialect, self.collation, self._column(f.column), parts[cut:])
            if isinstance(f, ScalarField):
                if cut < len(parts):
                    break
                return ScalarVal(
                    self.dialect, self.collation, self._column(f.column), f.type, f.nullable
                )
        n = len(parts)
        members = dict.fromkeys(p[n] for p in fields if len(p) > n and p[:n] == parts)
        if members:
            subs = {name: self.resolve((*parts, name)) for name in members}
            return ObjectVal(self.dialect, self.collation, subs)
        return self.const(UNDEFINED)

    def const(self, value: Any) -> ConstVal:
        return ConstVal(self.dialect, self.collation, value)

    def value(self, expr: ast.Expr) -> Val:
        """Compile a scalar expression."""
        if not any(isinstance(n, ast.Path) for n in ast.walk(expr)):
            return self.const(evaluate_expr(expr, {}))
        if isinstance(expr, ast.Path):
            return self.resolve(expr.parts)
        if isinstance(expr, ast.Neg):
            return NegVal(self.dialect, self.collation, self.value(expr.operand))
        if isinstance(expr, ast.Arith):
            a, b = self.value(expr.left), self.value(expr.right)
            return ArithVal(self.dialect, self.collation, expr.op, a, b)
        if isinstance(expr, ast.Call) and expr.name in ("LOWER", "UPPER"):
            return TextFnVal(self.dialect, self.collation, expr.name, self.value(expr.args[0]))
        if isinstance(expr, ast.Call) and expr.name == "LENGTH":
            return LengthVal(self.dialect, self.collation, self.value(expr.args[0]))
        return PredVal(self.dialect, self.collation, self.truth(expr))

    # --- conditions ---------------------------------------------------------------

    def truth(self, expr: ast.Expr) -> Truth:
        """Compile a condition into its (is_true, is_false) predicates."""
        if isinstance(expr, ast.And):
            a, b = self.truth(expr.left), self.truth(expr.right)
            return Truth(p_and(a.is_true, b.is_true), p_or(a.is_false, b.is_false))
        if isinstance(expr, ast.Or):
            a, b = self.truth(expr.left), self.truth(expr.right)
            return Truth(p_or(a.is_true, b.is_true), p_and(a.is_false, b.is_false))
        if isinstance(expr, ast.Not):
            inner = self.truth(expr.operand)
            return Truth(inner.is_false, inner.is_true)
        if isinstance(expr, ast.Compare):
            return self.compare(expr.op, self.value(expr.left), self.value(expr.right))
        if isinstance(expr, ast.InList):
            return self.in_list(expr)
        if isinstance(expr, ast.Call) and expr.name not in ("LOWER", "UPPER", "LENGTH"):
            return self.call(expr)
        return self.value(expr).truth()

    def compare(self, op: str, a: Val, b: Val) -> Truth:
        trues: list[Pred] = []
        falses: list[Pred] = []
        for kind in _COMPARABLE:
            guard = p_and(a.guard(kind), b.guard(kind))
            if guard is False:
                continue
            jsonb = a.jsonb_ok and b.jsonb_ok and kind != "string"
            ra, rb = a.rep(kind, jsonb), b.rep(kind, jsonb)
            trues.append(p_and(guard, _OPS[op](ra, rb)))
            falses.append(p_and(guard, _OPS[_INVERSE[op]](ra, rb)))
        return Truth(p_or(*trues), p_or(*falses))

    def in_list(self, expr: ast.InList) -> Truth:
        x = self.value(expr.operand)
        inside: list[Pred] = []
        outside: list[Pred] = []
        for kind in _COMPARABLE:
            guard = x.guard(kind)
            consts = [c.value for c in expr.values if type_of(c.value) == kind]
            if guard is False:
                continue
            if not consts:
                outside.append(guard)
                continue
            jsonb = x.jsonb_ok
            rep = x.rep(kind, jsonb)
            values = [self.dialect.const(v, kind, jsonb) for v in consts]
            inside.append(p_and(guard, rep.in_(values)))
            outside.append(p_and(guard, p_not(rep.in_(values))))
        truth = Truth(p_or(*inside), p_or(*outside))
        return Truth(truth.is_false, truth.is_true) if expr.negated else truth

    def call(self, expr: ast.Call) -> Truth:
        args = [self.value(a) for a in expr.args]
        if expr.name == "IS_DEFINED":
            defined = args[0].defined()
            return Truth(defined, p_not(defined))
        if expr.name in _TYPE_TESTS:
            test = p_or(*(args[0].guard(t) for t in _TYPE_TESTS[expr.name]))
            return Truth(test, p_not(test))
        guard = p_and(args[0].guard("string"), args[1].guard("string"))
        if guard is False:
            return Truth(False, False)
        fn = {
            "STARTSWITH": self.dialect.starts_with,
            "ENDSWITH": self.dialect.ends_with,
            "CONTAINS": self.dialect.contains,
        }[expr.name]
        test_sql: Expr = fn(args[0].rep("string"), args[1].rep("string"))
        return Truth(p_and(guard, test_sql), p_and(guard, p_not(test_sql)))


def case_when(pred: Pred, value: Expr) -> Expr:
    """``CASE WHEN pred THEN value END`` with static folding."""
    if pred is True:
        return value
    if pred is False:
        return sa.null()
    return sa.case((pred, value))
