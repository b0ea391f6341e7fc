"""CPU time of a server process and its children (Linux ``/proc``), for the benchmarks.

certhub signs in child processes (``certhub.signing``): a server's CPU per operation
counts theirs too. Children are read while alive (a child's time reaches its parent's
``cutime`` only once it was waited for).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["children", "tree_cpu_seconds"]


def _own_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone (or not Linux)
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (any of its threads' children)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        return []
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children."""
    return sum(_own_cpu_seconds(p) for p in (pid, *children(pid)))
