"""Process-level settings of `certhub serve` (checked in a child interpreter: they are
global to the process)."""

from __future__ import annotations

import subprocess
import sys

FREEZE = """
import gc, weakref
from certhub.app import freeze_startup_heap

class Node:
    pass

garbage = Node()
garbage.me = garbage  # a reference cycle: only the collector frees it
probe = weakref.ref(garbage)
del garbage
kept = [Node() for _ in range(1000)]
freeze_startup_heap()
print(probe() is None, gc.get_freeze_count() >= 1000)
"""


def test_the_startup_heap_is_collected_then_frozen() -> None:
    """Garbage made during start-up is freed first; what is alive leaves the scans."""
    out = subprocess.run([sys.executable, "-c", FREEZE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
