"""Fixtures for the renewal tests: an initialized store per backend, and a harness.

``world`` is module-scoped (initialising a namespace costs most of a second), so tests
use fresh device ids; tests that look at the whole fleet use ``fresh_world``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from renewal_support import Harness, World, create_pg_database, drop_pg_database, open_world


def _pg_or_skip() -> str:
    try:
        return create_pg_database()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL is not reachable: {exc}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """An initialized namespace (policy ``default``) on SQLite and on PostgreSQL."""
    tmp = tmp_path_factory.mktemp("renewal")
    url = f"sqlite:///{tmp / 'certhub.db'}" if request.param == "sqlite" else _pg_or_skip()
    w = open_world(tmp, url)
    try:
        yield w
    finally:
        w.store.close()
        if request.param == "postgresql":
            drop_pg_database(url)


@pytest.fixture
def fresh_world(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A namespace of its own (for tests that look at every device)."""
    w = open_world(tmp_path_factory.mktemp("fresh"), db_url)
    try:
        yield w
    finally:
        w.store.close()


@pytest.fixture
def harness(world: World) -> Iterator[Harness]:
    h = Harness(world)
    try:
        yield h
    finally:
        h.close()
