"""Fixtures for the hub tests: one running server per module (devices differ per test)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from serverkit import RunningServer, running_server

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A certhub on 127.0.0.1 (ephemeral port) with an embedded SQLite store."""
    with running_server(tmp_path_factory.mktemp("hub") / "data") as running:
        yield running


@pytest.fixture
def device_id(request: pytest.FixtureRequest) -> str:
    """A device id unique within the module's server."""
    return f"dev-{next(_ids)}"


@pytest.fixture
def pems_dir(tmp_path: Path) -> Path:
    return tmp_path / "pems"
