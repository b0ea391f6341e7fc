"""The cluster-wide admission rate is split between the live nodes, and re-split when a
node leaves (see docs/scale-out.md for the tolerance while the live count is stale)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from cluster_support import FAST, wait_for

from certhub.renewal import RenewalConfig
from serverkit import RunningServer, running_server


def _bucket(node: RunningServer) -> tuple[float, float]:
    bucket = node.server._renewal._bucket  # type: ignore[union-attr]
    assert bucket is not None
    return float(bucket.rate), float(bucket.burst)


def test_each_node_admits_its_share_of_the_cluster_rate(module_pg_url: str, tmp_path: Path) -> None:
    config = RenewalConfig(admission_rate=30.0, admission_burst=60.0)
    stacks = [ExitStack() for _ in range(3)]
    with stacks[0], stacks[1], stacks[2]:
        nodes = [
            stack.enter_context(
                running_server(
                    tmp_path / "data",
                    database_url=module_pg_url,
                    node_name=f"r{i}",
                    renewal=config,
                    **FAST,
                )
            )
            for i, stack in enumerate(stacks)
        ]
        assert wait_for(lambda: [_bucket(n) for n in nodes] == [(10.0, 20.0)] * 3)
        stacks[2].close()  # a node stops cleanly: the other two take its share
        assert wait_for(lambda: [_bucket(n) for n in nodes[:2]] == [(15.0, 30.0)] * 2)
