"""The query AST: frozen, hashable dataclasses produced by :func:`certhub.query.parse`.

Paths are already canonical (``DeviceId`` -> ``deviceId``), ``<>`` is ``!=``,
``STARTS_WITH`` is ``STARTSWITH``, and negative number literals are folded into
:class:`Const`. Every node compares by value, so two spellings of one query give equal
ASTs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from certhub.query.values import Value

__all__ = [
    "Aggregate",
    "AggregateName",
    "And",
    "Arith",
    "ArithOp",
    "Call",
    "Compare",
    "CompareOp",
    "Const",
    "Expr",
    "InList",
    "Neg",
    "Not",
    "Or",
    "Path",
    "Projection",
    "Query",
    "walk",
]

CompareOp = Literal["=", "!=", "<", ">", "<=", ">="]
ArithOp = Literal["+", "-", "*", "/", "%"]
AggregateName = Literal["COUNT", "AVG", "SUM", "MIN", "MAX"]


@dataclass(frozen=True, kw_only=True)
class Const:
    """A literal: null, bool, number, string or UNDEFINED."""

    value: Value


@dataclass(frozen=True, kw_only=True)
class Path:
    """A property path such as ``properties.reported.certificate.validUntil``."""

    parts: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, kw_only=True)
class Neg:
    """Unary minus."""

    operand: Expr


@dataclass(frozen=True, kw_only=True)
class Arith:
    """``left op right`` for ``+ - * / %``."""

    op: ArithOp
    left: Expr
    right: Expr


@dataclass(frozen=True, kw_only=True)
class Compare:
    """``left op right`` for ``= != < > <= >=``."""

    op: CompareOp
    left: Expr
    right: Expr


@dataclass(frozen=True, kw_only=True)
class InList:
    """``operand IN [..]`` (or ``NIN`` when ``negated``); values are constants."""

    operand: Expr
    values: tuple[Const, ...]
    negated: bool = False


@dataclass(frozen=True, kw_only=True)
class And:
    left: Expr
    right: Expr


@dataclass(frozen=True, kw_only=True)
class Or:
    left: Expr
    right: Expr


@dataclass(frozen=True, kw_only=True)
class Not:
    operand: Expr


@dataclass(frozen=True, kw_only=True)
class Call:
    """A scalar function; ``name`` is canonical upper case (``STARTSWITH``)."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, kw_only=True)
class Aggregate:
    """``COUNT()``, ``COUNT(x)``, ``AVG(x)``, ``SUM(x)``, ``MIN(x)``, ``MAX(x)``."""

    name: AggregateName
    arg: Expr | None = None


Expr = Const | Path | Neg | Arith | Compare | InList | And | Or | Not | Call | Aggregate


@dataclass(frozen=True, kw_only=True)
class Projection:
    """One SELECT item: a path or an aggregate, and the key it gets in result rows."""

    expr: Path | Aggregate
    name: str


@dataclass(frozen=True, kw_only=True)
class Query:
    """A parsed query.

    ``projections`` is None for ``SELECT *``. ``collection`` is ``"devices"``,
    ``"devices.modules"`` or ``"certificates"``.
    """

    collection: str
    projections: tuple[Projection, ...] | None
    where: Expr | None = None
    group_by: tuple[Path, ...] = ()
    top: int | None = None

    @property
    def is_aggregate(self) -> bool:
        """True when rows are groups (GROUP BY or aggregates), not documents."""
        if self.group_by:
            return True
        return any(isinstance(p.expr, Aggregate) for p in self.projections or ())


def walk(expr: Expr) -> list[Expr]:
    """``expr`` and all its sub-expressions, parents first."""
    out: list[Expr] = []
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(_children(node)))
    return out


def _children(node: Expr) -> tuple[Expr, ...]:
    if isinstance(node, Neg | Not):
        return (node.operand,)
    if isinstance(node, Arith | Compare | And | Or):
        return (node.left, node.right)
    if isinstance(node, InList):
        return (node.operand, *node.values)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Aggregate):
        return () if node.arg is None else (node.arg,)
    return ()
