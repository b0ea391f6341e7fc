"""Fixtures for the lifecycle tests: one running server (with HTTPS) per module."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from serverkit import RunningServer, running_server

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A certhub on 127.0.0.1 (ephemeral MQTT and HTTPS ports), embedded SQLite store."""
    with running_server(tmp_path_factory.mktemp("lifecycle") / "data", https_port=0) as running:
        yield running


@pytest.fixture
def device_id() -> str:
    """A device id unique within the session."""
    return f"lc-{next(_ids)}"


@pytest.fixture
def pems_dir(tmp_path: Path) -> Path:
    return tmp_path / "pems"
