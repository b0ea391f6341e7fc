"""The agent reaches the server only over the network: it never imports server packages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import certhub

SRC = Path(certhub.__file__).parent
FORBIDDEN = (
    "certhub.registry",
    "certhub.hub",
    "certhub.dps",
    "certhub.listener",
    "certhub.authority",
    "certhub.app",
    "certhub.service",
)
AGENT_FILES = [*sorted((SRC / "agent").rglob("*.py")), SRC / "cli_agent.py"]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[: -node.level])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.append(module)
            names.extend(f"{module}.{alias.name}" for alias in node.names)
    return names


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: p.name)
def test_agent_module_imports_no_server_package(path: Path) -> None:
    bad = [name for name in _imports(path) if _forbidden(name)]
    assert bad == [], f"{path.name} imports server modules: {bad}"


def test_agent_files_are_found() -> None:
    names = {p.name for p in AGENT_FILES}
    assert {"agent.py", "lifecycle.py", "hub.py", "dps.py", "cli_agent.py"} <= names


def test_importing_the_agent_loads_no_server_module() -> None:
    code = (
        "import sys, certhub.agent, certhub.cli_agent, certhub.agent.hooks\n"
        f"bad = [m for m in sys.modules if m.startswith({FORBIDDEN!r})]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_detector_flags_a_forbidden_import(tmp_path: Path) -> None:
    assert _forbidden("certhub.registry.store")
    assert _forbidden("certhub.app")
    assert not _forbidden("certhub.application")
    assert not _forbidden("certhub.mqtt")
