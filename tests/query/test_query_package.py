"""Package boundaries and small shared helpers."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest

import certhub.query
from certhub.query import format_timestamp

PACKAGE = Path(certhub.query.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_imports_only_itself_from_certhub(path: Path) -> None:
    """A protocol library: nothing from the server, store or other packages."""
    foreign = {
        name
        for name in _imports(path)
        if name.startswith("certhub") and not name.startswith(("certhub.query", "certhub.clock"))
    }
    assert foreign == set()


def test_public_names_exist() -> None:
    for name in certhub.query.__all__:
        assert hasattr(certhub.query, name), name


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2026-01-02T03:04:05.000000Z"),
        (
            dt.datetime(2026, 1, 2, 5, 4, 5, 7, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2026-01-02T03:04:05.000007Z",
        ),
        (dt.datetime(2026, 1, 2, 3, 4, 5, 999999), "2026-01-02T03:04:05.999999Z"),
        (dt.datetime(1, 1, 1, tzinfo=dt.UTC), "0001-01-01T00:00:00.000000Z"),
    ],
)
def test_format_timestamp(value: dt.datetime, text: str) -> None:
    assert format_timestamp(value) == text
