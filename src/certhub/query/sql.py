"""Compile a query to a SQLAlchemy Core ``Select`` for SQLite or PostgreSQL.

The statement's rows go back through :meth:`CompiledQuery.page`, which turns them into
result items equal to :func:`certhub.query.reference.evaluate`'s and cuts pages:

* document queries are ordered by the collection key and paged by keyset
  (``WHERE key > last``), fetching one row more than the page to know if more follow;
* aggregate queries return every group from SQL; groups are sorted, cut to TOP and
  paged in Python (their number is small: one per distinct value).

A filter on a JSON path emits exactly :func:`index_expression`'s text for that path
(with the table name in front), so an expression index built from it is used.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from certhub.query import ast
from certhub.query._compiler import ExprCompiler, case_when
from certhub.query._dialects import DIALECTS, Expr, SqlDialect, ValueType
from certhub.query._paging import Continuation, fingerprint
from certhub.query._sqlvals import Fetch, JsonVal, ScalarVal, p_and, to_sql
from certhub.query.errors import QueryError
from certhub.query.mapping import CollectionMapping
from certhub.query.names import canonical_path
from certhub.query.reference import aggregate_max, aggregate_min
from certhub.query.values import UNDEFINED, Value, group_sort_key

__all__ = ["CompiledQuery", "Page", "compile_query", "index_expression", "index_guard_expression"]


@dataclass(frozen=True)
class Page:
    """One page of results and the token for the next one (None on the last page)."""

    items: list[dict[str, Any]]
    continuation: str | None


@dataclass(frozen=True)
class _Item:
    """One output value: its columns start at ``start`` in the select list."""

    name: str
    fetch: Fetch
    start: int = 0

    def read(self, row: Sequence[Any]) -> Value:
        return self.fetch.decode(row[self.start : self.start + len(self.fetch.columns)])


class CompiledQuery:
    """A compiled query: run :attr:`statement`, pass its rows to :meth:`page`.

    ``item_type`` is the ``x-ms-item-type`` of the results: ``"twin"`` for
    ``SELECT * FROM devices``, ``"raw"`` for projections and aggregates.
    """

    def __init__(
        self,
        *,
        statement: sa.Select[Any],
        item_type: str,
        to_item: Callable[[Sequence[Any]], tuple[Any, dict[str, Any]]],
        paging: _Paging,
        aggregate: bool,
    ) -> None:
        self.statement = statement
        self.item_type = item_type
        self._to_item = to_item
        self._paging = paging
        self._aggregate = aggregate

    def page(self, rows: Sequence[Sequence[Any]]) -> Page:
        """The result items in ``rows`` (the statement's result) and the continuation."""
        if self._aggregate:
            return self._aggregate_page(rows)
        paging = self._paging
        take = paging.take
        items = [self._to_item(r)[1] for r in (rows if take is None else rows[:take])]
        if take is None or len(rows) <= take:
            return Page(items, None)
        after = self._to_item(rows[take - 1])[0]
        return Page(items, paging.next_token(take, after))

    def _aggregate_page(self, rows: Sequence[Sequence[Any]]) -> Page:
        # Grouping only by undefined paths leaves no SQL GROUP BY: drop the empty group.
        keyed = [self._to_item(r) for r in rows if r[0] > 0 or not self._paging.grouped]
        keyed.sort(key=lambda pair: [group_sort_key(v) for v in pair[0]])
        items = [item for _, item in keyed]
        paging = self._paging
        if paging.top is not None:
            items = items[: paging.top]
        start = paging.returned
        if paging.take is None:
            return Page(items[start:], None)
        end = start + paging.take
        token = paging.next_token(paging.take, None) if end < len(items) else None
        return Page(items[start:end], token)


@dataclass(frozen=True)
class _Paging:
    fingerprint: str
    top: int | None
    grouped: bool
    returned: int
    take: int | None

    def next_token(self, count: int, after: tuple[Any, ...] | None) -> str:
        return Continuation(self.fingerprint, self.returned + count, after).encode()


def _dialect(dialect: str | Any) -> SqlDialect:
    name = dialect if isinstance(dialect, str) else dialect.name
    if name not in DIALECTS:
        raise QueryError(f"unsupported SQL dialect {name!r}", reason="unsupported-dialect")
    return DIALECTS[name]


def compile_query(
    query: ast.Query,
    mapping: CollectionMapping,
    dialect: str | Any,
    limit: int | None = None,
    offset_key: str | None = None,
) -> CompiledQuery:
    """Compile ``query`` against ``mapping`` for ``dialect`` ("sqlite"/"postgresql").

    ``limit`` is the page size (``x-ms-max-item-count``), ``offset_key`` the continuation
    token from the previous page (``x-ms-continuation``). Raises QueryError when the
    mapping is for another collection and ContinuationError for a bad token.
    """
    if mapping.collection != query.collection:
        raise QueryError(
            f"query reads {query.collection!r}, mapping is for {mapping.collection!r}",
            reason="collection-mismatch",
        )
    if limit is not None and limit <= 0:
        raise QueryError("page size must be positive", reason="bad-page-size")
    sql_dialect = _dialect(dialect)
    cont = (
        Continuation.decode(offset_key, query, len(mapping.key)) if offset_key is not None else None
    )
    tables = _Tables(mapping, narrow=query.is_aggregate)
    compiler = ExprCompiler(mapping, sql_dialect, columns=tables.column)
    where = compiler.truth(query.where).is_true if query.where is not None else True
    if query.is_aggregate:
        return _compile_aggregate(query, tables, compiler, where, cont, limit)
    return _compile_documents(query, tables, compiler, where, cont, limit)


class _Tables:
    """Which tables a query reads, so that it selects from no more than those.

    Every column the compiler resolves passes through :meth:`column`, which swaps a join
    key for its equal in the mapping's ``narrow_to`` table and notes the table; the
    statement is then built on :meth:`from_clause` (``twins`` alone for a ``devices``
    query that reads only twin paths, else the mapping's join).

    Only aggregates (``COUNT()``, ``GROUP BY``) are narrowed: document queries page in
    key order, which the key's indexes on the full table serve (PostgreSQL's
    ``ix_devices_device_id_c``); ordering by the twin's copy of the key would not.
    """

    def __init__(self, mapping: CollectionMapping, *, narrow: bool) -> None:
        self.mapping = mapping
        self.narrow = narrow
        self.names: set[str] = set()

    def column(self, col: Expr) -> Expr:
        if not self.narrow:
            return col
        col = self.mapping.same_column(col)
        self.names.add(getattr(getattr(col, "table", None), "name", ""))
        return col

    def key_columns(self) -> list[Expr]:
        return [self.column(c) for c in self.mapping.key_columns()]

    def from_clause(self) -> sa.FromClause:
        if not self.narrow:
            return self.mapping.from_clause
        return self.mapping.narrowed(self.names)


def _paging(query: ast.Query, cont: Continuation | None, limit: int | None) -> _Paging:
    returned = cont.returned if cont is not None else 0
    take = limit
    if query.top is not None and not query.is_aggregate:
        remaining = max(query.top - returned, 0)
        take = remaining if take is None else min(take, remaining)
    return _Paging(fingerprint(query), query.top, bool(query.group_by), returned, take)


def _compile_documents(
    query: ast.Query,
    tables: _Tables,
    compiler: ExprCompiler,
    where: Any,
    cont: Continuation | None,
    limit: int | None,
) -> CompiledQuery:
    mapping = tables.mapping
    order = [_key_order(compiler, path) for path in mapping.key]
    if cont is not None and cont.after is not None:
        after = [sa.literal(v) for v in cont.after]
        where = p_and(
            where, sa.tuple_(*order) > sa.tuple_(*after) if len(order) > 1 else order[0] > after[0]
        )
    if query.projections is None:
        items = [_Item("*", compiler.resolve(()).fetch())]
    else:
        items = []
        for p in query.projections:
            assert isinstance(p.expr, ast.Path)
            items.append(_Item(p.name, compiler.resolve(p.expr.parts).fetch()))
    columns, items = _layout(tables.key_columns(), items)
    paging = _paging(query, cont, limit)
    stmt = sa.select(*columns).select_from(tables.from_clause()).order_by(*order)
    if where is not True:
        stmt = stmt.where(to_sql(where))
    if paging.take is not None:
        more = query.top is None or paging.returned + paging.take < query.top
        stmt = stmt.limit(paging.take + 1 if more else paging.take)
    nkeys = len(mapping.key)
    star = query.projections is None

    def to_item(row: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
        values = {i.name: i.read(row) for i in items}
        item = values["*"] if star else {k: v for k, v in values.items() if v is not UNDEFINED}
        return tuple(row[:nkeys]), item

    item_type = mapping.star_item_type if star else "raw"
    return CompiledQuery(
        statement=stmt, item_type=item_type, to_item=to_item, paging=paging, aggregate=False
    )


def _key_order(compiler: ExprCompiler, path: tuple[str, ...]) -> Expr:
    key = compiler.resolve(path)
    assert isinstance(key, ScalarVal), "mapping keys are scalar fields"
    return key.rep(key.kind)


def _layout(prefix: list[Expr], items: list[_Item]) -> tuple[list[Expr], list[_Item]]:
    """Label the select list and record where each item's columns start."""
    columns: list[Expr] = [c.label(f"k{i}") for i, c in enumerate(prefix)]
    placed: list[_Item] = []
    for item in items:
        placed.append(_Item(item.name, item.fetch, len(columns)))
        columns.extend(c.label(f"c{len(columns)}") for c in item.fetch.columns)
    return columns, placed


def _compile_aggregate(
    query: ast.Query,
    tables: _Tables,
    compiler: ExprCompiler,
    where: Any,
    cont: Continuation | None,
    limit: int | None,
) -> CompiledQuery:
    assert query.projections is not None
    groups = [_Item(str(p), compiler.resolve(p.parts).group()) for p in query.group_by]
    aggs = [
        _Item(p.name, _aggregate(compiler, p.expr))
        for p in query.projections
        if isinstance(p.expr, ast.Aggregate)
    ]
    columns, placed = _layout([sa.func.count()], groups + aggs)
    group_cols = [c for g in groups for c in g.fetch.columns]
    stmt = sa.select(*columns).select_from(tables.from_clause())
    if where is not True:
        stmt = stmt.where(to_sql(where))
    if group_cols:
        stmt = stmt.group_by(*group_cols)
    placed_groups, placed_aggs = placed[: len(groups)], {i.name: i for i in placed[len(groups) :]}

    def to_item(row: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
        keys = [g.read(row) for g in placed_groups]
        item: dict[str, Any] = {}
        for p in query.projections or ():
            if isinstance(p.expr, ast.Aggregate):
                value = placed_aggs[p.name].read(row)
            else:
                value = keys[query.group_by.index(p.expr)]
            if value is not UNDEFINED:
                item[p.name] = value
        return keys, item

    paging = _paging(query, cont, limit)
    return CompiledQuery(
        statement=stmt, item_type="raw", to_item=to_item, paging=paging, aggregate=True
    )


def _number(value: Any) -> Value:
    if value is None:
        return UNDEFINED
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


_AGGREGATE_FUNCS: dict[str, Callable[[Expr], Expr]] = {
    "SUM": sa.func.sum,
    "AVG": sa.func.avg,
    "MIN": sa.func.min,
    "MAX": sa.func.max,
}


def _aggregate(compiler: ExprCompiler, agg: ast.Aggregate) -> Fetch:
    if agg.arg is None:
        return Fetch([sa.func.count()], lambda row: row[0])
    val = compiler.value(agg.arg)
    if agg.name == "COUNT":
        defined = case_when(val.defined(), sa.literal_column("1"))
        return Fetch([sa.func.count(defined)], lambda row: row[0])
    wanted: tuple[ValueType, ...] = (
        ("number",) if agg.name in ("SUM", "AVG") else ("number", "string")
    )
    kinds = [k for k in wanted if val.guard(k) is not False]
    fn = _AGGREGATE_FUNCS[agg.name]
    # String reps carry the mapping's collation, which MIN/MAX then order by.
    columns = [fn(case_when(val.guard(k), val.rep(k))) for k in kinds]
    picks: dict[str, Callable[[list[Value]], Value]] = {
        "MIN": aggregate_min,
        "MAX": aggregate_max,
    }
    pick = picks.get(agg.name)

    def decode(row: Sequence[Any]) -> Value:
        values = [_number(v) for v in row if v is not None]
        if pick is not None:
            return pick(values)
        return values[0] if values else UNDEFINED

    return Fetch(columns, decode)


_SA_DIALECTS: dict[str, Any] = {
    "sqlite": sqlite.dialect(),
    "postgresql": postgresql.psycopg.dialect(),  # type: ignore[no-untyped-call]
}


def index_expression(
    mapping: CollectionMapping,
    path: str | Sequence[str],
    dialect: str | Any,
    *,
    value_type: ValueType = "string",
) -> str:
    """SQL text of the expression a filter on ``path`` compares, for an expression index.

    Use it as ``CREATE INDEX ix ON twins(<expr>)`` on SQLite and
    ``CREATE INDEX ix ON twins((<expr>))`` on PostgreSQL. The compiler emits the same text
    with the table name in front (SQLite forbids it inside index expressions and matches
    expressions structurally, so the two match). On PostgreSQL strings are compared as
    ``col #>> '{..}'`` (with the mapping's collation) and numbers/booleans as jsonb
    ``col #> '{..}'``, so ``value_type`` picks which of the two to index; SQLite has one.
    """
    sql_dialect = _dialect(dialect)
    parts = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
    parts = canonical_path(mapping.collection, parts)
    compiler = ExprCompiler(mapping, sql_dialect, columns=lambda col: sa.column(col.name))
    val = compiler.resolve(parts)
    if isinstance(val, JsonVal):
        expr = val.rep(value_type, jsonb=sql_dialect.jsonb_compare and value_type != "string")
    elif isinstance(val, ScalarVal):
        expr = val.rep(val.kind)
    else:
        raise QueryError(f"{'.'.join(parts)} is not stored in one column", reason="not-indexable")
    compiled = expr.compile(
        dialect=_SA_DIALECTS[sql_dialect.name], compile_kwargs={"literal_binds": True}
    )
    return str(compiled)


def index_guard_expression(
    mapping: CollectionMapping, path: str | Sequence[str], dialect: str | Any
) -> str:
    """SQL text of the type guard the compiler puts beside a string comparison on ``path``
    (IoT Hub compares only values of the same type), for the second column of an index.

    With ``(index_expression(...), index_guard_expression(...))`` as a two-column index,
    ``path < 'X'`` is answered from the index alone: the guard is an index condition
    instead of a JSON parse of every matching row. Same conventions as
    :func:`index_expression`; raises ``QueryError("not-indexable")`` for a path that is
    not inside a JSON column (a column needs no type guard).
    """
    sql_dialect = _dialect(dialect)
    parts = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
    parts = canonical_path(mapping.collection, parts)
    compiler = ExprCompiler(mapping, sql_dialect, columns=lambda col: sa.column(col.name))
    val = compiler.resolve(parts)
    if not isinstance(val, JsonVal):
        raise QueryError(f"{'.'.join(parts)} has no JSON type guard", reason="not-indexable")
    guard = val.guard("string")
    assert isinstance(guard, sa.BinaryExpression)
    # The guard is ``<type expression> = '<name>'``: the index holds its left side.
    compiled = guard.left.compile(
        dialect=_SA_DIALECTS[sql_dialect.name], compile_kwargs={"literal_binds": True}
    )
    return str(compiled)
