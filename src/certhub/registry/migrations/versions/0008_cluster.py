"""Scale-out coordination: tables ``cluster_leases`` and ``cluster_nodes``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27

``cluster_leases`` holds one row per named lease (who holds it, until when): scheduled
work such as overdue detection runs on the node holding its lease. ``cluster_nodes`` has
one row per running server process, refreshed by its heartbeat; the live count divides
cluster-wide rates between nodes. Self-contained; mirrors ``certhub.cluster._schema``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def _ts(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    """Create ``cluster_leases`` and ``cluster_nodes``."""
    op.create_table(
        "cluster_leases",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("holder", sa.String(), nullable=False),
        _ts("acquired_at"),
        _ts("expires_at"),
    )
    op.create_table(
        "cluster_nodes",
        sa.Column("node_id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        _ts("started_at"),
        _ts("heartbeat_at"),
        sa.Column("info", sa.JSON(), nullable=False),
    )
    op.create_index("ix_cluster_nodes_heartbeat_at", "cluster_nodes", ["heartbeat_at"])


def downgrade() -> None:
    """Drop the cluster tables."""
    op.drop_index("ix_cluster_nodes_heartbeat_at", table_name="cluster_nodes")
    op.drop_table("cluster_nodes")
    op.drop_table("cluster_leases")
