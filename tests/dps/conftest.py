"""Fixtures for the DPS tests: an initialised certhub with a provisioning service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dps_support import DpsEnv, make_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DpsEnv]:
    """SQLite store in a fresh data directory (development profile)."""
    e = make_env(tmp_path)
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def any_env(tmp_path: Path, db_url: str) -> Iterator[DpsEnv]:
    """The same, once per store kind (SQLite and PostgreSQL)."""
    e = make_env(tmp_path, db_url)
    try:
        yield e
    finally:
        e.close()
