"""The node table: one row per running server process, kept fresh by its heartbeat.

A node is live while its ``heartbeat_at`` is younger than the liveness timeout; a node
that stops cleanly deletes its row, a killed one ages out. Cluster-wide rates are split
by the live count (:func:`per_node_rate`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from certhub.cluster._schema import cluster_nodes
from certhub.registry.engine import WRITE_OPTIONS

__all__ = ["NodeRecord", "NodeRegistry", "per_node_rate"]


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeRecord:
    """A server process as registered: ``info`` holds its addresses."""

    node_id: str
    name: str
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    info: Mapping[str, Any]


class NodeRegistry:
    """Register, refresh, list and remove nodes (blocking; call from an executor)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**WRITE_OPTIONS)
        """Write transactions take SQLite's write lock at BEGIN (queueing on the busy
        timeout) instead of failing when a read inside them meets a newer commit."""

    def heartbeat(
        self, node_id: str, name: str, now: dt.datetime, info: Mapping[str, Any] | None = None
    ) -> None:
        """Insert the node's row or refresh its ``heartbeat_at``."""
        nodes = cluster_nodes.c
        refresh = sa.update(cluster_nodes).where(nodes.node_id == node_id).values(heartbeat_at=now)
        with self._writer.begin() as conn:
            if conn.execute(refresh).rowcount == 0:
                conn.execute(
                    sa.insert(cluster_nodes).values(
                        node_id=node_id,
                        name=name,
                        started_at=now,
                        heartbeat_at=now,
                        info=dict(info or {}),
                    )
                )

    def live(self, now: dt.datetime, timeout: dt.timedelta) -> list[NodeRecord]:
        """Nodes whose last heartbeat is younger than ``timeout``, by name."""
        stmt = (
            sa.select(cluster_nodes)
            .where(cluster_nodes.c.heartbeat_at > now - timeout)
            .order_by(cluster_nodes.c.name, cluster_nodes.c.node_id)
        )
        with self._engine.connect() as conn:
            return [NodeRecord(**row._mapping) for row in conn.execute(stmt)]

    def remove(self, node_id: str) -> None:
        """Delete the node's row (clean shutdown)."""
        with self._writer.begin() as conn:
            conn.execute(sa.delete(cluster_nodes).where(cluster_nodes.c.node_id == node_id))

    def prune(self, before: dt.datetime) -> int:
        """Delete rows of nodes silent since ``before``; returns how many."""
        stmt = sa.delete(cluster_nodes).where(cluster_nodes.c.heartbeat_at < before)
        with self._writer.begin() as conn:
            return int(conn.execute(stmt).rowcount)


def per_node_rate(total: float | None, live_nodes: int) -> float | None:
    """This node's share of a cluster-wide rate (None: unlimited).

    Each of ``live_nodes`` (at least 1: this one) admits ``total / live_nodes``. While
    the count is stale — a node died and has not aged out, or just started — the cluster
    admits between ``total · (n-1)/n`` and ``total · (n+1)/n``; see ``docs/scale-out.md``.
    """
    if total is None:
        return None
    share = total / max(1, live_nodes)
    return share if math.isfinite(share) else total
