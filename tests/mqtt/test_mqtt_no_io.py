"""The MQTT core is sans-I/O and sits at the bottom of the layers: checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import certhub.mqtt

PACKAGE = Path(certhub.mqtt.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
FORBIDDEN = {"socket", "ssl", "asyncio", "selectors", "threading"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.add("__import__")
    return names


def test_modules_are_found() -> None:
    assert {p.name for p in MODULES} >= {"codec.py", "packets.py", "session.py", "topics.py"}


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_no_io_imports(path: Path) -> None:
    roots = {name.split(".")[0] for name in imported_modules(path)}
    assert not roots & (FORBIDDEN | {"importlib", "__import__"})


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_imports_nothing_from_the_layers_above(path: Path) -> None:
    ours = {name for name in imported_modules(path) if name.split(".")[0] == "certhub"}
    assert all(name.startswith("certhub.mqtt") for name in ours), ours


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio.streams\nfrom ssl import SSLContext\n")
    assert {n.split(".")[0] for n in imported_modules(bad)} == {"asyncio", "ssl"}
