"""Fixtures of the service API tests: a harness per test, on SQLite and PostgreSQL.

Initialising a store (CA keys, TLS certificate, migrations) costs far more than a test,
so each store kind is initialised once per session as a template and copied per test:
the data directory and SQLite file with ``shutil``, the PostgreSQL database with
``CREATE DATABASE … TEMPLATE``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from service_support import Harness, harness_on, initialize_in_the_past

PG_ADMIN_DSN = os.environ.get("CERTHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)


def _pg_url(name: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sqlite-template")
    initialize_in_the_past(root / "data", f"sqlite:///{root / 'certhub.db'}")
    return root


@pytest.fixture(scope="session")
def pg_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    name = "certhub_tmpl_" + secrets.token_hex(6)
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}")
    root = tmp_path_factory.mktemp("pg-template")
    try:
        initialize_in_the_past(root / "data", _pg_url(name))
        yield root, name
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _sqlite_copy(template: Path, tmp_path: Path) -> str:
    shutil.copytree(template / "data", tmp_path / "data")
    shutil.copy(template / "certhub.db", tmp_path / "certhub.db")
    return f"sqlite:///{tmp_path / 'certhub.db'}"


@pytest.fixture
def sqlite_api(sqlite_template: Path, tmp_path: Path) -> Iterator[Harness]:
    """The service routers on a fresh SQLite store."""
    url = _sqlite_copy(sqlite_template, tmp_path)
    with harness_on(tmp_path / "data", url, initialized=True) as harness:
        yield harness


@pytest.fixture
def pg_api(pg_template: tuple[Path, str], tmp_path: Path) -> Iterator[Harness]:
    """The service routers on a fresh PostgreSQL database."""
    template, template_db = pg_template
    name = "certhub_test_" + secrets.token_hex(6)
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        shutil.copytree(template / "data", tmp_path / "data")
        with harness_on(tmp_path / "data", _pg_url(name), initialized=True) as harness:
            yield harness
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest) -> Harness:
    """The service routers on a fresh store, once per store kind."""
    fixture = "sqlite_api" if request.param == "sqlite" else "pg_api"
    harness: Harness = request.getfixturevalue(fixture)
    return harness
