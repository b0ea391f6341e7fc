"""Renewal through the hub: table ``renewal_status``, index on ``certificates.operation_id``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

``renewal_status`` has one row per device: the renewal window assigned to its newest live
certificate and its renewal state (scheduled, due, overdue, expired) plus the last state
announced to the alert webhook. The index serves recovery after a crash, which looks up
the certificate an operation already issued. Self-contained (no imports from the live
schema); mirrors ``certhub.registry._renewal``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create ``renewal_status`` and its indexes."""
    op.create_table(
        "renewal_status",
        sa.Column(
            "device_id",
            sa.String(),
            sa.ForeignKey("devices.device_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("serial_hex", sa.String(), nullable=False),
        _ts("not_before"),
        _ts("not_after"),
        _ts("renew_after"),
        _ts("renew_before"),
        sa.Column("state", sa.String(), nullable=False),
        _ts("state_changed_at"),
        sa.Column("alerted_state", sa.String(), nullable=True),
        _ts("alerted_at", nullable=True),
        _ts("updated_at"),
        sa.CheckConstraint(
            "state IN ('scheduled', 'due', 'overdue', 'expired')", name="ck_renewal_status_state"
        ),
    )
    op.create_index("ix_renewal_status_state", "renewal_status", ["state"])
    op.create_index("ix_renewal_status_renew_after", "renewal_status", ["renew_after"])
    op.create_index("ix_certificates_operation_id", "certificates", ["operation_id"])


def downgrade() -> None:
    """Drop ``renewal_status`` and the index."""
    op.drop_index("ix_certificates_operation_id", table_name="certificates")
    op.drop_index("ix_renewal_status_renew_after", table_name="renewal_status")
    op.drop_index("ix_renewal_status_state", table_name="renewal_status")
    op.drop_table("renewal_status")
