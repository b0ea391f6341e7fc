"""Property: SQL on SQLite and PostgreSQL returns exactly what the reference returns.

Random fleets (twins with missing, null, boolean, numeric, string, nested and array
values) and random queries over the grammar; results are read page by page with a random
page size, so keyset paging and continuation tokens are covered too. Set
CERTHUB_QUERY_EXAMPLES to run more examples (the default keeps the suite fast).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from query_fixtures import Device, Store
from query_strategies import fleets, queries

from certhub.query import evaluate, parse

PAGE_SIZES = st.none() | st.integers(1, 3)
SETTINGS = settings(
    max_examples=int(os.environ.get("CERTHUB_QUERY_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check(store: Store, fleet: list[Device], text: str, page_size: int | None) -> None:
    store.load(fleet)
    expected = evaluate(parse(text), [d.document() for d in fleet])
    assert store.query(text, page_size) == expected, text


@SETTINGS
@given(fleet=fleets(), text=queries(), page_size=PAGE_SIZES)
def test_sqlite_matches_reference(
    sqlite_store: Store, fleet: list[Device], text: str, page_size: int | None
) -> None:
    check(sqlite_store, fleet, text, page_size)


@SETTINGS
@given(fleet=fleets(), text=queries(), page_size=PAGE_SIZES)
def test_postgresql_matches_reference(
    pg_store: Store, fleet: list[Device], text: str, page_size: int | None
) -> None:
    check(pg_store, fleet, text, page_size)
