"""Fixtures of the scale-out tests: several nodes on one PostgreSQL store."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
from cluster_support import FAST, wait_for

from serverkit import RunningServer, running_server

_ADMIN = os.environ.get("CERTHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def module_pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database shared by the tests of one module (dropped after)."""
    name = "certhub_cluster_" + secrets.token_hex(6)
    try:
        with psycopg.connect(_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL is not reachable at {_ADMIN}")
    base = _ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def nodes(
    module_pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[RunningServer]]:
    """Three in-process nodes (own loops and threads) on one PostgreSQL store, shared by
    the tests of a module (each test uses its own devices)."""
    pg_url = module_pg_url
    data_dir = tmp_path_factory.mktemp("cluster") / "data"
    with ExitStack() as stack:
        running = [
            stack.enter_context(
                running_server(data_dir, database_url=pg_url, node_name=f"n{i}", **FAST)
            )
            for i in range(3)
        ]
        assert wait_for(lambda: all(n.server.hub_frontend.clustered for n in running))
        assert wait_for(lambda: all(n.server.coordinator.live_nodes == 3 for n in running))
        yield running


@pytest.fixture
def pems_dir(tmp_path: Path) -> Path:
    return tmp_path / "pems"
