"""The cluster tables (created by migration ``0008_cluster``), on their own metadata."""

from __future__ import annotations

import sqlalchemy as sa

from certhub.registry._types import UTCDateTime

__all__ = ["cluster_leases", "cluster_nodes"]

_metadata = sa.MetaData()

cluster_leases = sa.Table(
    "cluster_leases",
    _metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("holder", sa.String(), nullable=False),
    sa.Column("acquired_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

cluster_nodes = sa.Table(
    "cluster_nodes",
    _metadata,
    sa.Column("node_id", sa.String(), primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
    sa.Column("info", sa.JSON(), nullable=False),
    sa.Index("ix_cluster_nodes_heartbeat_at", "heartbeat_at"),
)
