"""Fixtures of the query tests: a store with the mirrored registry tables, per database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from query_fixtures import Store


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    store = Store(sqlite_url)
    yield store
    store.close()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = Store(pg_url)
    yield store
    store.close()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store per database kind (SQLite, PostgreSQL)."""
    s = Store(db_url)
    yield s
    s.close()
