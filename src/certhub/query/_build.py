"""Turn the lark tree into the AST and check what the grammar cannot.

Clauses are built one at a time so that a check knows where it is (an aggregate is an
error in WHERE but fine in SELECT) and can point at the offending text.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from lark import Token, Transformer, Tree, v_args
from lark.exceptions import VisitError

from certhub.query import ast
from certhub.query.errors import QueryError, QuerySyntaxError
from certhub.query.names import (
    AGGREGATES,
    COLLECTIONS,
    FUNCTION_ALIASES,
    FUNCTIONS,
    canonical_path,
)
from certhub.query.values import UNDEFINED

__all__ = ["build_query"]

_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r"}
_ESCAPES["t"] = "\t"
_INT = re.compile(r"\d+")


def _fail(message: str, reason: str, where: Token | Any) -> NoReturn:
    raise QueryError(
        message,
        reason=reason,
        line=getattr(where, "line", None),
        column=getattr(where, "column", None),
    )


def unescape(token: Token) -> str:
    """The value of a quoted string token (escapes \\' \\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)."""
    body = token.value[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
        elif esc == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2 : i + 6]):
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        else:
            line, column = token.line or 1, token.column or 1
            column = column + 1 + i if "\n" not in body[:i] else column
            raise QuerySyntaxError(f"bad escape {body[i : i + 2]!r} in string", line, column)
    return _join_surrogates("".join(out), token)


def _join_surrogates(text: str, token: Token) -> str:
    try:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        line, column = token.line or 1, token.column or 1
        raise QuerySyntaxError("unpaired \\u surrogate in string", line, column) from None


@v_args(inline=True)
class _Exprs(Transformer[Token, Any]):
    """Expressions; ``clause`` says where they stand ("select", "where", "group")."""

    def __init__(self, collection: str, clause: str) -> None:
        super().__init__()
        self.collection = collection
        self.clause = clause

    def number(self, tok: Token) -> ast.Const:
        if tok.type == "HEX":
            return ast.Const(value=int(tok.value, 16))
        return ast.Const(value=int(tok.value) if _INT.fullmatch(tok.value) else float(tok.value))

    def signed_number(self, *children: Any) -> ast.Const:
        const: ast.Const = children[-1]
        return ast.Const(value=-const.value) if len(children) == 2 else const

    def string(self, tok: Token) -> ast.Const:
        return ast.Const(value=unescape(tok))

    def true(self) -> ast.Const:
        return ast.Const(value=True)

    def false(self) -> ast.Const:
        return ast.Const(value=False)

    def null(self) -> ast.Const:
        return ast.Const(value=None)

    def undefined(self) -> ast.Const:
        return ast.Const(value=UNDEFINED)

    def path(self, *names: Token) -> ast.Path:
        return ast.Path(parts=canonical_path(self.collection, tuple(n.value for n in names)))

    def comp_op(self, tok: Token) -> str:
        return "!=" if tok.value == "<>" else tok.value

    def compare(self, left: ast.Expr, op: ast.CompareOp, right: ast.Expr) -> ast.Compare:
        return ast.Compare(op=op, left=left, right=right)

    def array(self, *items: ast.Const) -> tuple[ast.Const, ...]:
        return items

    def in_(self, operand: ast.Expr, values: tuple[ast.Const, ...]) -> ast.InList:
        return ast.InList(operand=operand, values=values)

    def nin(self, operand: ast.Expr, values: tuple[ast.Const, ...]) -> ast.InList:
        return ast.InList(operand=operand, values=values, negated=True)

    def and_(self, left: ast.Expr, right: ast.Expr) -> ast.And:
        return ast.And(left=left, right=right)

    def or_(self, left: ast.Expr, right: ast.Expr) -> ast.Or:
        return ast.Or(left=left, right=right)

    def not_(self, operand: ast.Expr) -> ast.Not:
        return ast.Not(operand=operand)

    def neg(self, operand: ast.Expr) -> ast.Expr:
        if isinstance(operand, ast.Const) and type(operand.value) in (int, float):
            return ast.Const(value=-operand.value)
        return ast.Neg(operand=operand)

    def add(self, left: ast.Expr, right: ast.Expr) -> ast.Arith:
        return ast.Arith(op="+", left=left, right=right)

    def sub(self, left: ast.Expr, right: ast.Expr) -> ast.Arith:
        return ast.Arith(op="-", left=left, right=right)

    def mul(self, left: ast.Expr, right: ast.Expr) -> ast.Arith:
        return ast.Arith(op="*", left=left, right=right)

    def div(self, left: ast.Expr, right: ast.Expr) -> ast.Arith:
        return ast.Arith(op="/", left=left, right=right)

    def mod(self, left: ast.Expr, right: ast.Expr) -> ast.Arith:
        return ast.Arith(op="%", left=left, right=right)

    def call(self, name: Token, *args: ast.Expr) -> ast.Call | ast.Aggregate:
        upper = name.value.upper()
        if upper in AGGREGATES:
            return self._aggregate(name, upper, args)
        canonical = FUNCTION_ALIASES.get(upper, upper)
        if canonical not in FUNCTIONS:
            _fail(f"unknown function {name.value!r}", "unknown-function", name)
        if len(args) != FUNCTIONS[canonical]:
            _fail(
                f"{canonical} takes {FUNCTIONS[canonical]} argument(s), got {len(args)}",
                "arity",
                name,
            )
        return ast.Call(name=canonical, args=args)

    def _aggregate(self, name: Token, upper: str, args: tuple[ast.Expr, ...]) -> ast.Aggregate:
        if self.clause != "select":
            _fail(f"aggregate {upper} is only allowed in SELECT", "aggregate-outside-select", name)
        if len(args) not in AGGREGATES[upper]:
            _fail(f"{upper} does not take {len(args)} argument(s)", "arity", name)
        arg = args[0] if args else None
        if arg is not None and any(isinstance(n, ast.Aggregate) for n in ast.walk(arg)):
            _fail("aggregates cannot be nested", "nested-aggregate", name)
        return ast.Aggregate(name=upper, arg=arg)  # type: ignore[arg-type]


def _first_token(tree: Tree[Token] | Token) -> Token:
    while isinstance(tree, Tree):
        tree = tree.children[0]
    return tree


def _check_projections(select: Tree[Token]) -> None:
    """Projections are paths or aggregates; checked on the raw tree, which has positions."""
    for node in select.iter_subtrees():
        if node.data != "projection":
            continue
        expr = node.children[0]
        assert isinstance(expr, Tree)
        first = _first_token(expr)
        aggregate = expr.data == "call" and first.value.upper() in AGGREGATES
        if expr.data != "path" and not aggregate:
            _fail("a projection must be a property path or an aggregate", "bad-projection", first)


@v_args(inline=True)
class _Select(_Exprs):
    def __init__(self, collection: str) -> None:
        super().__init__(collection, "select")

    def top(self, const: ast.Const) -> tuple[str, ast.Const]:
        return ("top", const)

    def projection(self, expr: ast.Expr, alias: Token | None = None) -> Any:
        return (expr, alias.value if alias is not None else None)

    def star(self) -> None:
        return None

    def projections(self, *items: Any) -> list[Any]:
        return list(items)

    def select_clause(self, *children: Any) -> Any:
        return children


def _top(select: Tree[Token], const: ast.Const | None) -> int | None:
    if const is None:
        return None
    value = const.value
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        top = next(t for t in select.children if isinstance(t, Tree) and t.data == "top")
        _fail(f"TOP must be a positive integer, got {value!r}", "bad-top", _first_token(top))
    return value


def _projections(items: list[Any] | None) -> tuple[ast.Projection, ...] | None:
    if items is None:
        return None
    out: list[ast.Projection] = []
    unnamed = 0
    for expr, alias in items:
        if alias is None and isinstance(expr, ast.Path):
            alias = expr.parts[-1]
        elif alias is None:
            unnamed += 1
            alias = f"${unnamed}"
        if any(p.name == alias for p in out):
            _fail(f"two projections are named {alias!r}; use AS", "duplicate-name", None)
        out.append(ast.Projection(expr=expr, name=alias))
    return tuple(out)


def _collection(clause: Tree[Token]) -> str:
    tokens = [t for t in clause.children if isinstance(t, Token)]
    name = ".".join(t.value.lower() for t in tokens)
    if name == "devices.jobs":
        _fail("devices.jobs queries are not supported", "unsupported-collection", tokens[0])
    if name not in COLLECTIONS:
        _fail(f"unknown collection {name!r}", "unknown-collection", tokens[0])
    return name


def _check_grouping(query: ast.Query) -> None:
    projections = query.projections
    if projections is None:
        if query.group_by:
            _fail("SELECT * cannot be used with GROUP BY", "star-with-group-by", None)
        return
    if not query.is_aggregate:
        return
    for p in projections:
        if isinstance(p.expr, ast.Path) and p.expr not in query.group_by:
            _fail(
                f"{p.expr} is neither grouped nor aggregated",
                "ungrouped-projection",
                None,
            )


def build_query(tree: Tree[Token]) -> ast.Query:
    """Build and check the AST of a parsed query."""
    select, from_clause, *rest = tree.children
    assert isinstance(select, Tree) and isinstance(from_clause, Tree)
    collection = _collection(from_clause)
    _check_projections(select)
    where: ast.Expr | None = None
    group: tuple[ast.Path, ...] = ()
    try:
        top, items = _split_select(_Select(collection).transform(select))
        for clause in rest:
            assert isinstance(clause, Tree)
            kind = "where" if clause.data == "where_clause" else "group"
            builder = _Exprs(collection, kind)
            built = [builder.transform(c) for c in clause.children if isinstance(c, Tree)]
            if kind == "where":
                where = built[0]
            else:
                group = tuple(built)
    except VisitError as exc:
        raise exc.orig_exc from None
    query = ast.Query(
        collection=collection,
        projections=_projections(items),
        where=where,
        group_by=group,
        top=_top(select, top),
    )
    _check_grouping(query)
    return query


def _split_select(children: Any) -> tuple[ast.Const | None, list[Any] | None]:
    """(TOP constant or None, projections or None for ``*``)."""
    if len(children) == 2:
        return children[0][1], children[1]
    return None, children[0]
