"""The IoT Hub query language: parse, evaluate over documents, compile to SQL.

``parse(text)`` gives a :class:`~certhub.query.ast.Query`; ``evaluate(query, docs)`` is
the reference semantics over plain twin dictionaries; ``compile_query(query, mapping,
dialect, limit, offset_key)`` gives a SQLAlchemy statement for SQLite or PostgreSQL
whose results equal the reference's. The semantics chosen where IoT Hub is silent are
listed in :mod:`certhub.query.reference`; how SQL keeps them, in
:mod:`certhub.query._sqlvals`.

This package imports nothing else from certhub: it is a protocol library.
"""

from __future__ import annotations

import functools

from certhub.query import ast
from certhub.query._build import build_query
from certhub.query.errors import ContinuationError, QueryError, QuerySyntaxError
from certhub.query.grammar import parse_tree
from certhub.query.mapping import (
    CollectionMapping,
    DocumentField,
    ScalarField,
    certificates_mapping,
    devices_mapping,
)
from certhub.query.reference import evaluate
from certhub.query.sql import (
    CompiledQuery,
    Page,
    compile_query,
    index_expression,
    index_guard_expression,
)
from certhub.query.values import UNDEFINED, format_timestamp

__all__ = [
    "UNDEFINED",
    "CollectionMapping",
    "CompiledQuery",
    "ContinuationError",
    "DocumentField",
    "Page",
    "QueryError",
    "QuerySyntaxError",
    "ScalarField",
    "ast",
    "certificates_mapping",
    "compile_query",
    "devices_mapping",
    "evaluate",
    "format_timestamp",
    "index_expression",
    "index_guard_expression",
    "parse",
]


@functools.lru_cache(maxsize=512)
def parse(text: str) -> ast.Query:
    """Parse and check a query; raise QuerySyntaxError or QueryError.

    Results are cached by text (queries are immutable), so repeated queries from the REST
    layer and continuation pages cost one dictionary lookup.
    """
    return build_query(parse_tree(text))
